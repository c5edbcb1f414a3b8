//! Records into `Batch` frames that fit in `MAX_FRAME`, each record encoded once as it is
//! produced, and the bounded queue of frames toward the shipper: at most `max_unacked` sent
//! and not acknowledged; data that could not be sent when the next cycle's metrics arrive is
//! dropped and counted, oldest first (the collector never blocks on the shipper). Batches
//! holding log records (kernel events, which are not produced again) are kept longer (up to
//! `16 × max_unacked` batches), and kept while unacknowledged: one the shipper refuses because
//! the journal's file system is full is sent again, in sequence order, after
//! [`RETRY_NOSPACE`] (the journal's at-least-once contract starts when the collector reads a
//! kernel line, not when the disk has room).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use vigil_ipc_proto::batch::{BatchFrame, EncodedBatch, PushError};
use vigil_ipc_proto::{
    Channel, EncodesAsRecord, ProcessRecord, Record, RecordRef, ShipperToCollector,
};

use crate::sink::Sink;

/// Hard cap on queued batches (one huge cycle cannot grow the queue without bound).
pub const MAX_UNSENT: usize = 4096;

/// A batch with log records refused for want of space is sent again this much later (the
/// shipper would refuse it again at once; nothing is sent before then).
pub const RETRY_NOSPACE: Duration = Duration::from_millis(500);

#[derive(Debug, Default, Clone, Copy)]
pub struct BatchStats {
    pub batches_sent: u64,
    pub records_sent: u64,
    pub acked: u64,
    pub nacked: u64,
    /// Log batches refused for want of journal space and queued to be sent again.
    pub requeued: u64,
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
    /// Sent, not answered: the sequence, and the batch itself when it holds log records.
    unacked: VecDeque<(u64, Option<EncodedBatch>)>,
    /// Nothing is sent before this (a refused batch waits for the journal to have room).
    hold_until: Option<Instant>,
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
            hold_until: None,
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

    /// Whether [`flush`](Self::flush) would send something now (the poll asks for POLLOUT).
    pub fn wants_to_send(&self, now: Instant) -> bool {
        !self.unsent.is_empty()
            && self.unacked.len() < self.max_unacked
            && self.hold_until.is_none_or(|t| now >= t)
    }

    /// When a held batch may be sent again.
    pub fn deadline(&self) -> Option<Instant> {
        self.hold_until.filter(|_| !self.unsent.is_empty())
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

    /// Records of batches holding log records (kernel lines, exec and exit events) that the
    /// shipper has not acknowledged: what this collector alone holds (a batch refused because
    /// the journal's disk is full waits here for space), lost if it exits now.
    pub fn unacknowledged_event_records(&self) -> u64 {
        let held = self.unacked.iter().filter_map(|(_, b)| b.as_ref());
        let unsent = self.unsent.iter().filter(|b| b.has_logs);
        held.chain(unsent).map(|b| u64::from(b.records)).sum()
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
        if let Some(t) = self.hold_until {
            if Instant::now() < t {
                return Ok(());
            }
            self.hold_until = None;
        }
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
                let seq = b.seq;
                self.unacked.push_back((seq, b.has_logs.then_some(b)));
            }
        }
        Ok(())
    }

    /// An answer of the shipper.
    pub fn on_answer(&mut self, m: &ShipperToCollector) {
        match m {
            ShipperToCollector::Ack { seq } => {
                if let Some(pos) = self.unacked.iter().position(|(s, _)| s == seq) {
                    self.unacked.remove(pos);
                    self.stats.acked += 1;
                }
            }
            ShipperToCollector::Nack { seq, reason } => {
                let Some(pos) = self.unacked.iter().position(|(s, _)| s == seq) else {
                    return;
                };
                let (_, kept) = self.unacked.remove(pos).expect("position in range");
                self.stats.nacked += 1;
                match kept {
                    Some(b) if reason.starts_with(NOSPACE_REASON) => {
                        // Back in sequence order: the unsent ones were all sealed after it,
                        // other refused ones may be back already.
                        let at = self.unsent.partition_point(|u| u.seq < b.seq);
                        self.unsent.insert(at, b);
                        self.stats.requeued += 1;
                        self.hold_until = Some(Instant::now() + RETRY_NOSPACE);
                    }
                    Some(b) => {
                        self.stats.dropped_batches += 1;
                        self.stats.dropped_records += u64::from(b.records);
                    }
                    None => {}
                }
            }
            ShipperToCollector::Resume { .. } => {}
        }
    }
}

/// How the shipper's `Nack` reason starts when the journal's file system is full.
const NOSPACE_REASON: &str = "not journaled: no space";

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

    fn log_record() -> Record {
        Record::Log {
            resource: Vec::new(),
            log: vigil_ipc_proto::LogRecord {
                time_unix_nano: 0,
                observed_time_unix_nano: 0,
                severity_number: 13,
                severity_text: "WARN".into(),
                event_name: String::new(),
                body: "kernel line".into(),
                attributes: Vec::new(),
            },
        }
    }

    #[test]
    fn log_batches_refused_for_space_are_sent_again_in_order() {
        let (a, mut peer) = Channel::pair().unwrap();
        let mut b = Batcher::new(1, 8);
        push_all(&mut b, &[log_record(), rec(1), log_record()]);
        b.flush(&a).unwrap();
        let seqs: Vec<u64> = (0..3)
            .map(|_| {
                vigil_ipc_proto::batch::split_batch(peer.recv_bytes().unwrap())
                    .unwrap()
                    .seq
            })
            .collect();
        let nospace = |seq| ShipperToCollector::Nack {
            seq,
            reason: "not journaled: no space left on the journal's filesystem (/j)".into(),
        };
        // Refused out of order; the metrics batch is not kept.
        b.on_answer(&nospace(seqs[2]));
        b.on_answer(&nospace(seqs[1]));
        b.on_answer(&nospace(seqs[0]));
        assert_eq!((b.unacked(), b.unsent(), b.stats.requeued), (0, 2, 2));
        // What an exit now would lose: the two event records, not the metrics.
        assert_eq!(b.unacknowledged_event_records(), 2);
        // Held: nothing goes out before the journal may have room.
        assert!(!b.wants_to_send(Instant::now()));
        b.flush(&a).unwrap();
        assert_eq!(b.unsent(), 2);
        let due = b.deadline().expect("a retry deadline");
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        assert!(b.wants_to_send(Instant::now()));
        b.flush(&a).unwrap();
        let again: Vec<u64> = (0..2)
            .map(|_| {
                vigil_ipc_proto::batch::split_batch(peer.recv_bytes().unwrap())
                    .unwrap()
                    .seq
            })
            .collect();
        assert_eq!(again, vec![seqs[0], seqs[2]], "the log batches, in order");
        assert_eq!(
            b.unacknowledged_event_records(),
            2,
            "sent, not acknowledged"
        );
        b.on_answer(&ShipperToCollector::Ack { seq: seqs[0] });
        b.on_answer(&ShipperToCollector::Ack { seq: seqs[2] });
        assert_eq!(b.unacknowledged_event_records(), 0);
        assert_eq!(
            (b.unacked(), b.unsent(), b.stats.dropped_batches),
            (0, 0, 0)
        );
        // Any other refusal drops a log batch, counted.
        push_all(&mut b, &[log_record()]);
        b.flush(&a).unwrap();
        let s = vigil_ipc_proto::batch::split_batch(peer.recv_bytes().unwrap())
            .unwrap()
            .seq;
        b.on_answer(&ShipperToCollector::Nack {
            seq: s,
            reason: "malformed".into(),
        });
        assert_eq!((b.unsent(), b.stats.dropped_batches), (0, 1));
    }
}
