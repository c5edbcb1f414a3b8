//! Chunking records into `Batch` frames that fit in `MAX_FRAME`, and the bounded queue of
//! batches toward the shipper: at most `max_unacked` sent and not acknowledged; data that could
//! not be sent when the next cycle's metrics arrive is dropped and counted, oldest first (the
//! collector never blocks on the shipper). Batches holding log records (kernel events, which
//! are not produced again) are kept longer (up to `16 × max_unacked` batches).

use std::collections::VecDeque;

use vigil_ipc_proto::frame::{HEADER_LEN, MAX_FRAME, encoded_len};
use vigil_ipc_proto::{Batch, Channel, CollectorToShipper, Record, ShipperToCollector};

/// Bytes of a `CollectorToShipper::Batch` frame besides its records: header, variant tag, seq
/// varint (≤ 10), record count varint (≤ 5), with margin.
pub const BATCH_OVERHEAD: usize = HEADER_LEN + 1 + 10 + 5 + 4;

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
    unsent: VecDeque<CollectorToShipper>,
    unacked: VecDeque<u64>,
    pub stats: BatchStats,
}

impl Batcher {
    pub fn new(max_records: usize, max_unacked: usize) -> Self {
        Batcher {
            next_seq: 1,
            max_records: max_records.max(1),
            max_unacked: max_unacked.max(1),
            unsent: VecDeque::new(),
            unacked: VecDeque::new(),
            stats: BatchStats::default(),
        }
    }

    pub fn unsent(&self) -> usize {
        self.unsent.len()
    }

    pub fn unacked(&self) -> usize {
        self.unacked.len()
    }

    /// Split `records` into frames that fit and queue them.
    pub fn push(&mut self, records: Vec<Record>) {
        if records.iter().any(|r| matches!(r, Record::Metrics { .. })) {
            self.supersede();
        }
        let mut cur: Vec<Record> = Vec::new();
        let mut cur_bytes = BATCH_OVERHEAD;
        for r in records {
            let len = match encoded_len(&r) {
                Ok(l) => l.saturating_sub(HEADER_LEN),
                Err(_) => {
                    self.stats.oversized_records += 1;
                    continue;
                }
            };
            if len + BATCH_OVERHEAD > MAX_FRAME {
                self.stats.oversized_records += 1;
                continue;
            }
            if !cur.is_empty() && (cur_bytes + len > MAX_FRAME || cur.len() >= self.max_records) {
                self.enqueue(std::mem::take(&mut cur));
                cur_bytes = BATCH_OVERHEAD;
            }
            cur_bytes += len;
            cur.push(r);
        }
        if !cur.is_empty() {
            self.enqueue(cur);
        }
    }

    fn enqueue(&mut self, records: Vec<Record>) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.unsent
            .push_back(CollectorToShipper::Batch(Batch { seq, records }));
        let log_cap = self.max_unacked.saturating_mul(16);
        while self.unsent.len() > log_cap.max(MAX_UNSENT) {
            self.drop_at(0);
        }
    }

    fn drop_at(&mut self, idx: usize) {
        if let Some(CollectorToShipper::Batch(b)) = self.unsent.remove(idx) {
            self.stats.dropped_batches += 1;
            self.stats.dropped_records += b.records.len() as u64;
        }
    }

    /// Before fresh metrics are queued: metric-only batches still unsent (the shipper is
    /// behind) are superseded and dropped, oldest data first; batches holding log records
    /// (kernel events, never produced again) stay, bounded by `16 × max_unacked`.
    fn supersede(&mut self) {
        let mut i = 0;
        while i < self.unsent.len() {
            let has_logs = match &self.unsent[i] {
                CollectorToShipper::Batch(b) => {
                    b.records.iter().any(|r| matches!(r, Record::Log { .. }))
                }
            };
            if has_logs {
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
            let Some(msg) = self.unsent.front() else {
                break;
            };
            match ch.send(msg) {
                Ok(()) => {}
                Err(e) if e.is_would_block() => break,
                Err(e) => return Err(e),
            }
            if let Some(CollectorToShipper::Batch(b)) = self.unsent.pop_front() {
                self.stats.batches_sent += 1;
                self.stats.records_sent += b.records.len() as u64;
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

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_ipc_proto::KeyValue;

    fn rec(n: usize) -> Record {
        Record::Metrics {
            resource: vec![KeyValue::str("k", "x".repeat(n))],
            metrics: Vec::new(),
        }
    }

    #[test]
    fn chunks_fit_and_overflow_drops_oldest() {
        let mut b = Batcher::new(1000, 3);
        b.push((0..100).map(|_| rec(3000)).collect());
        // 100 × ~3 KB in 64 KiB frames: 5 batches.
        assert_eq!(b.unsent(), 5);
        b.push(vec![rec(MAX_FRAME)]);
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
        b.push(vec![log]);
        b.push((0..100).map(|_| rec(3000)).collect());
        b.push(vec![rec(1)]);
        assert_eq!(
            b.unsent(),
            2,
            "the log batch stays, the metrics are superseded"
        );
        for m in &b.unsent {
            assert!(encoded_len(m).unwrap() <= MAX_FRAME);
        }
        let mut c = Batcher::new(7, 100);
        c.push((0..20).map(|_| rec(1)).collect());
        assert_eq!(c.unsent(), 3);
    }
}
