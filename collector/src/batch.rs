//! Records into `Batch` frames that fit in `MAX_FRAME`, each record encoded once as it is
//! produced, and the bounded queue of frames toward the shipper: at most `max_unacked` sent
//! and not acknowledged; data that could not be sent when the next cycle's metrics arrive is
//! dropped and counted, oldest first (the collector never blocks on the shipper). Batches
//! holding log records (kernel events, which are not produced again) are kept longer (up to
//! `16 × max_unacked` batches).

use std::collections::VecDeque;

use vigil_ipc_proto::batch::{BatchFrame, EncodedBatch, PushError};
use vigil_ipc_proto::{
    Channel, EncodesAsRecord, ProcessRecord, Record, RecordRef, ShipperToCollector,
};

use crate::sink::Sink;

/// Hard cap on queued batches (one huge cycle cannot grow the queue without bound).
pub const MAX_UNSENT: usize = 4096;

#[derive(Debug, Default, Clone, Copy)]
pub struct BatchStats {
    pub batches_sent: u64,
    pub records_sent: u64,
    pub acked: u64,
    pub nacked: u64,
    pub dropped_batches: u64,
    pub dropped_records: u64,
    /// Single records too large for any frame.
    pub oversized_records: u64,
}

pub struct Batcher {
    next_seq: u64,
    max_records: usize,
    max_unacked: usize,
    current: BatchFrame,
    unsent: VecDeque<EncodedBatch>,
    unacked: VecDeque<u64>,
    pub stats: BatchStats,
}

impl Batcher {
    pub fn new(max_records: usize, max_unacked: usize) -> Self {
        Batcher {
            next_seq: 1,
            max_records: max_records.max(1),
            max_unacked: max_unacked.max(1),
            current: BatchFrame::new(),
            unsent: VecDeque::new(),
            unacked: VecDeque::new(),
            stats: BatchStats::default(),
        }
    }

    /// Sealed batches waiting to be sent.
    pub fn unsent(&self) -> usize {
        self.unsent.len()
    }

    pub fn unacked(&self) -> usize {
        self.unacked.len()
    }

    /// Encode one record into the batch being filled (sealing it first when it is full).
    pub fn push<R: EncodesAsRecord>(&mut self, r: &R) {
        if self.current.len() >= self.max_records {
            self.seal();
        }
        let res = match self.current.push(r) {
            Err(PushError::Full) => {
                self.seal();
                self.current.push(r)
            }
            other => other,
        };
        if res.is_err() {
            self.stats.oversized_records += 1;
        }
    }

    /// Queue the batch being filled (end of a loop turn): it gets its sequence number now.
    pub fn seal(&mut self) {
        if self.current.is_empty() {
            return;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.unsent.push_back(self.current.take(seq));
        let log_cap = self.max_unacked.saturating_mul(16);
        while self.unsent.len() > log_cap.max(MAX_UNSENT) {
            self.drop_at(0);
        }
    }

    fn drop_at(&mut self, idx: usize) {
        if let Some(b) = self.unsent.remove(idx) {
            self.stats.dropped_batches += 1;
            self.stats.dropped_records += u64::from(b.records);
        }
    }

    /// Before fresh metrics are produced: metric-only batches still unsent (the shipper is
    /// behind) are superseded and dropped, oldest data first; batches holding log records
    /// (kernel events, never produced again) stay, bounded by `16 × max_unacked`.
    pub fn supersede(&mut self) {
        let mut i = 0;
        while i < self.unsent.len() {
            if self.unsent[i].has_logs {
                i += 1;
            } else {
                self.drop_at(i);
            }
        }
        let log_cap = self.max_unacked.saturating_mul(16);
        while self.unsent.len() > log_cap {
            self.drop_at(0);
        }
    }

    /// Send what the window allows; stops at the first would-block.
    pub fn flush(&mut self, ch: &Channel) -> Result<(), vigil_ipc_proto::ProtoError> {
        while self.unacked.len() < self.max_unacked {
            let Some(b) = self.unsent.front() else {
                break;
            };
            match ch.send_raw(&b.frame) {
                Ok(()) => {}
                Err(e) if e.is_would_block() => break,
                Err(e) => return Err(e),
            }
            if let Some(b) = self.unsent.pop_front() {
                self.stats.batches_sent += 1;
                self.stats.records_sent += u64::from(b.records);
                self.unacked.push_back(b.seq);
            }
        }
        Ok(())
    }

    /// An answer of the shipper.
    pub fn on_answer(&mut self, m: &ShipperToCollector) {
        match m {
            ShipperToCollector::Ack { seq } => {
                if let Some(pos) = self.unacked.iter().position(|s| s == seq) {
                    self.unacked.remove(pos);
                    self.stats.acked += 1;
                }
            }
            ShipperToCollector::Nack { seq, .. } => {
                if let Some(pos) = self.unacked.iter().position(|s| s == seq) {
                    self.unacked.remove(pos);
                    self.stats.nacked += 1;
                }
            }
            ShipperToCollector::Resume { .. } => {}
        }
    }
}

impl Sink for Batcher {
    fn record(&mut self, r: Record) {
        self.push(&r);
    }

    fn process(&mut self, p: &ProcessRecord<&str>) {
        self.push(&RecordRef::Process(p));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_ipc_proto::KeyValue;
    use vigil_ipc_proto::frame::{HEADER_LEN, MAX_FRAME};

    fn rec(n: usize) -> Record {
        Record::Metrics {
            resource: vec![KeyValue::str("k", "x".repeat(n))],
            metrics: Vec::new(),
        }
    }

    fn push_all(b: &mut Batcher, records: &[Record]) {
        for r in records {
            b.push(r);
        }
        b.seal();
    }

    #[test]
    fn chunks_fit_and_overflow_drops_oldest() {
        let mut b = Batcher::new(1000, 3);
        push_all(&mut b, &(0..100).map(|_| rec(3000)).collect::<Vec<_>>());
        // 100 × ~3 KB in 64 KiB frames: 5 batches.
        assert_eq!(b.unsent(), 5);
        for f in &b.unsent {
            assert!(f.frame.len() <= HEADER_LEN + MAX_FRAME);
        }
        b.supersede();
        push_all(&mut b, &[rec(MAX_FRAME)]);
        assert_eq!(b.stats.oversized_records, 1);
        // Fresh metrics supersede the unsent ones.
        assert_eq!(b.stats.dropped_batches, 5);
        assert_eq!(b.unsent(), 0);
        let log = Record::Log {
            resource: Vec::new(),
            log: vigil_ipc_proto::LogRecord {
                time_unix_nano: 0,
                observed_time_unix_nano: 0,
                severity_number: 9,
                severity_text: "INFO".into(),
                event_name: "x".into(),
                body: String::new(),
                attributes: Vec::new(),
            },
        };
        push_all(&mut b, &[log]);
        b.supersede();
        push_all(&mut b, &(0..100).map(|_| rec(3000)).collect::<Vec<_>>());
        b.supersede();
        push_all(&mut b, &[rec(1)]);
        assert_eq!(
            b.unsent(),
            2,
            "the log batch stays, the metrics are superseded"
        );
        assert!(b.unsent[0].has_logs);
        let mut c = Batcher::new(7, 100);
        push_all(&mut c, &(0..20).map(|_| rec(1)).collect::<Vec<_>>());
        assert_eq!(c.unsent(), 3);
        // Sequence numbers follow the order of sealing.
        let seqs: Vec<u64> = c.unsent.iter().map(|b| b.seq).collect();
        assert_eq!(seqs, vec![1, 2, 3]);
    }

    #[test]
    fn window_and_acks() {
        let (a, mut peer) = Channel::pair().unwrap();
        let mut b = Batcher::new(1, 2);
        push_all(&mut b, &[rec(1), rec(2), rec(3)]);
        b.flush(&a).unwrap();
        assert_eq!((b.unacked(), b.unsent()), (2, 1), "window of two");
        let s = vigil_ipc_proto::batch::split_batch(peer.recv_bytes().unwrap())
            .unwrap()
            .seq;
        b.on_answer(&ShipperToCollector::Ack { seq: s });
        b.flush(&a).unwrap();
        assert_eq!((b.unacked(), b.unsent()), (2, 0));
        assert_eq!(b.stats.records_sent, 3);
    }
}
