//! Batches on the data path, encoded and taken apart record by record.
//!
//! A batch travels as the frame of `CollectorToShipper::Batch(Batch { seq, records })`:
//! `[u32 LE payload length][varint 0: the variant][varint seq][varint n][n records]`.
//! [`BatchFrame`] builds that frame from records encoded one at a time, each exactly once and
//! straight from the collector's buffers; [`split_batch`] takes a received frame apart into
//! each record's decoded value and its bytes, so the shipper journals the bytes it validated
//! without encoding them again. Either side interoperates with the plain serde encoding of
//! [`crate::CollectorToShipper`] (tests below and `tests/decode_proptest.rs`).

use crate::error::ProtoError;
use crate::frame::{HEADER_LEN, MAX_FRAME, payload};
use crate::records::{Decoded, EncodesAsRecord};

/// Variant index of `CollectorToShipper::Batch`.
const BATCH_TAG: u8 = 0;
/// Longest varint of a u64 (seq) and of a u32 (record count).
const SEQ_MAX: usize = 10;
const COUNT_MAX: usize = 5;
/// Most record bytes one frame can carry, whatever its seq and count.
pub const BODY_MAX: usize = MAX_FRAME - 1 - SEQ_MAX - COUNT_MAX;

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The record does not fit beside the ones already in: send this batch, start another.
    #[error("batch full")]
    Full,
    /// The record alone is larger than any frame can carry.
    #[error("record of {0} bytes exceeds the frame limit")]
    TooLarge(usize),
    #[error("cannot encode record: {0}")]
    Encode(postcard::Error),
}

/// A batch being filled. Reused: [`BatchFrame::take`] leaves it empty with its buffer.
#[derive(Debug, Default)]
pub struct BatchFrame {
    body: Vec<u8>,
    records: u32,
    logs: bool,
}

/// A finished batch frame, ready for `Channel::send_raw`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedBatch {
    pub seq: u64,
    pub records: u32,
    /// Holds a log record (kernel event, never produced again).
    pub has_logs: bool,
    pub frame: Vec<u8>,
}

/// Lets postcard append to a borrowed `Vec` (its `to_extend` takes the writer by value).
struct Append<'a>(&'a mut Vec<u8>);

impl Extend<u8> for Append<'_> {
    fn extend<I: IntoIterator<Item = u8>>(&mut self, iter: I) {
        self.0.extend(iter)
    }
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

impl BatchFrame {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.records as usize
    }

    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Encoded bytes of the records so far.
    pub fn body_len(&self) -> usize {
        self.body.len()
    }

    /// Append one record's encoding. On any error the batch is as it was before the call.
    pub fn push<R: EncodesAsRecord>(&mut self, r: &R) -> Result<(), PushError> {
        let mark = self.body.len();
        if let Err(e) = postcard::to_extend(r, Append(&mut self.body)) {
            self.body.truncate(mark);
            return Err(PushError::Encode(e));
        }
        if self.body.len() > BODY_MAX {
            let len = self.body.len() - mark;
            self.body.truncate(mark);
            return Err(if mark == 0 {
                PushError::TooLarge(len)
            } else {
                PushError::Full
            });
        }
        self.records += 1;
        self.logs |= r.is_log();
        Ok(())
    }

    /// The frame of this batch under sequence number `seq`; the builder is empty afterwards
    /// and keeps its buffer for the next batch.
    pub fn take(&mut self, seq: u64) -> EncodedBatch {
        let mut frame = Vec::with_capacity(HEADER_LEN + 1 + SEQ_MAX + COUNT_MAX + self.body.len());
        frame.extend_from_slice(&[0; HEADER_LEN]);
        frame.push(BATCH_TAG);
        varint(seq, &mut frame);
        varint(u64::from(self.records), &mut frame);
        frame.extend_from_slice(&self.body);
        let len = (frame.len() - HEADER_LEN) as u32;
        frame[..HEADER_LEN].copy_from_slice(&len.to_le_bytes());
        let b = EncodedBatch {
            seq,
            records: self.records,
            has_logs: self.logs,
            frame,
        };
        self.body.clear();
        self.records = 0;
        self.logs = false;
        b
    }
}

/// A received batch: every record decoded (so it is known to be well-formed) beside the exact
/// bytes it was decoded from.
#[derive(Debug)]
pub struct SplitBatch<'a> {
    pub seq: u64,
    /// Each record decoded (process records borrow their strings from the frame) and its bytes.
    pub records: Vec<(Decoded<'a>, &'a [u8])>,
}

fn take<'a, T: serde::Deserialize<'a>>(b: &'a [u8]) -> Result<(T, &'a [u8]), ProtoError> {
    postcard::take_from_bytes(b).map_err(ProtoError::Decode)
}

/// Take a `CollectorToShipper::Batch` frame apart. Never panics; the record count claimed by
/// the peer bounds nothing but the loop (the records themselves must be in the frame).
pub fn split_batch(frame: &[u8]) -> Result<SplitBatch<'_>, ProtoError> {
    let p = payload(frame)?;
    let (tag, rest): (u32, _) = take(p)?;
    if tag != u32::from(BATCH_TAG) {
        return Err(ProtoError::Decode(postcard::Error::DeserializeBadEnum));
    }
    let (seq, rest): (u64, _) = take(rest)?;
    let (n, mut rest): (u64, _) = take(rest)?;
    // Every record takes at least one byte: a larger claim is a lie, refused before any work.
    if n > rest.len() as u64 {
        return Err(ProtoError::Decode(
            postcard::Error::DeserializeUnexpectedEnd,
        ));
    }
    let mut records = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let (r, after) = Decoded::take(rest).map_err(ProtoError::Decode)?;
        records.push((r, &rest[..rest.len() - after.len()]));
        rest = after;
    }
    if !rest.is_empty() {
        return Err(ProtoError::TrailingBytes(rest.len()));
    }
    Ok(SplitBatch { seq, records })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::decode;
    use crate::messages::CollectorToShipper;
    use crate::records::{Batch, KeyValue, Record, RecordRef};

    fn rec(n: usize) -> Record {
        Record::Metrics {
            resource: vec![KeyValue::str("k", "x".repeat(n))],
            metrics: Vec::new(),
        }
    }

    #[test]
    fn frame_is_the_serde_encoding_and_splits_back() {
        let records = vec![rec(1), rec(300), rec(0)];
        let mut b = BatchFrame::new();
        for r in &records {
            b.push(r).unwrap();
        }
        let resource = vec![KeyValue::str("host.name", "h")];
        b.push(&RecordRef::Metrics {
            resource: &resource,
            metrics: &[],
        })
        .unwrap();
        let e = b.take(1 << 40);
        assert!(b.is_empty() && b.body_len() == 0);
        let mut all = records.clone();
        all.push(Record::Metrics {
            resource,
            metrics: Vec::new(),
        });
        let want = CollectorToShipper::Batch(Batch {
            seq: 1 << 40,
            records: all.clone(),
        });
        assert_eq!(e.frame, crate::frame::encode(&want).unwrap());
        assert_eq!(decode::<CollectorToShipper>(&e.frame).unwrap(), want);
        let s = split_batch(&e.frame).unwrap();
        assert_eq!(s.seq, 1 << 40);
        assert_eq!(s.records.len(), 4);
        for ((r, bytes), w) in s.records.iter().zip(&all) {
            assert_eq!(&r.clone().into_owned(), w);
            assert_eq!(*bytes, &postcard::to_allocvec(w).unwrap()[..]);
        }
        assert!(!e.has_logs && e.records == 4);
    }

    #[test]
    fn full_and_too_large_leave_the_batch_intact() {
        let mut b = BatchFrame::new();
        let mut n = 0;
        loop {
            match b.push(&rec(1000)) {
                Ok(()) => n += 1,
                Err(PushError::Full) => break,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(b.len(), n);
        let before = b.body_len();
        assert!(matches!(b.push(&rec(MAX_FRAME)), Err(PushError::Full)));
        assert_eq!(b.body_len(), before);
        let e = b.take(7);
        assert!(e.frame.len() <= HEADER_LEN + MAX_FRAME);
        assert_eq!(split_batch(&e.frame).unwrap().records.len(), n);
        assert!(matches!(
            b.push(&rec(MAX_FRAME)),
            Err(PushError::TooLarge(_))
        ));
        assert!(b.is_empty());
    }

    #[test]
    fn lies_are_refused() {
        let mut b = BatchFrame::new();
        b.push(&rec(3)).unwrap();
        let f = b.take(1).frame;
        // Count claims more records than there are bytes.
        let mut g = f.clone();
        g[HEADER_LEN + 2] = 0x7f;
        assert!(split_batch(&g).is_err());
        // A record cut short, trailing garbage, another variant.
        assert!(split_batch(&f[..f.len() - 1]).is_err());
        let mut h = f.clone();
        h.push(0);
        let len = (h.len() - HEADER_LEN) as u32;
        h[..HEADER_LEN].copy_from_slice(&len.to_le_bytes());
        assert!(matches!(split_batch(&h), Err(ProtoError::TrailingBytes(1))));
        let mut v = f.clone();
        v[HEADER_LEN] = 1;
        assert!(split_batch(&v).is_err());
    }
}
