//! A segment file: a fixed header followed by framed records ([`super::record`]).
//!
//! ```text
//! header (24 bytes): "VJNL" | u16 LE version | u16 LE 0 | u64 LE base sequence
//!                    | u32 LE CRC32C of the previous 16 bytes | u32 LE 0
//! ```
//!
//! [`scan`] validates a whole segment image: it keeps every record whose checksum matches and
//! whose sequence number is larger than the previous one, skips corrupt regions by searching
//! for the next valid record (resync), and reports where the valid data ends so a torn tail can
//! be cut off.

use super::record::{self, FRAME_HEADER, Parsed};

pub const MAGIC: [u8; 4] = *b"VJNL";
pub const VERSION: u16 = 1;
pub const HEADER_LEN: usize = 24;

pub fn header(base_seq: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(&MAGIC);
    h[4..6].copy_from_slice(&VERSION.to_le_bytes());
    h[8..16].copy_from_slice(&base_seq.to_le_bytes());
    let crc = crc32c::crc32c(&h[..16]);
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Base sequence of a valid header, `None` when the header is missing, of another version or
/// corrupt.
pub fn parse_header(buf: &[u8]) -> Option<u64> {
    let h = buf.get(..HEADER_LEN)?;
    if h[..4] != MAGIC || u16::from_le_bytes([h[4], h[5]]) != VERSION {
        return None;
    }
    let crc = u32::from_le_bytes([h[16], h[17], h[18], h[19]]);
    if crc32c::crc32c(&h[..16]) != crc {
        return None;
    }
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[8..16]);
    Some(u64::from_le_bytes(b))
}

/// File name of the segment starting at `base_seq`.
pub fn file_name(base_seq: u64) -> String {
    format!("seg-{base_seq:020}.vjl")
}

/// Base sequence from a segment file name.
pub fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("seg-")?.strip_suffix(".vjl")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Where one valid record lives in its segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    pub seq: u64,
    pub offset: u32,
    pub len: u32,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Scan {
    /// Base sequence from the header, `None` when the header is bad.
    pub header_base: Option<u64>,
    pub index: Vec<IndexEntry>,
    /// Offset just past the last valid record (where appending may continue).
    pub valid_end: usize,
    /// Corrupt regions skipped in the middle (each followed by a valid record).
    pub corrupt_regions: u64,
    /// Records known lost in those regions (sequence gaps; at least one per region).
    pub lost_records: u64,
    /// Bytes after the last valid record that do not form a valid record.
    pub torn_tail_bytes: usize,
}

/// Validate a segment image. Never panics, whatever the bytes.
pub fn scan(buf: &[u8]) -> Scan {
    let mut out = Scan {
        header_base: parse_header(buf),
        valid_end: HEADER_LEN.min(buf.len()),
        ..Scan::default()
    };
    if buf.len() < HEADER_LEN {
        out.torn_tail_bytes = buf.len();
        out.valid_end = 0;
        return out;
    }
    // Records must not exceed u32 offsets (segments are far smaller; refuse beyond).
    let limit = buf.len().min(u32::MAX as usize);
    let buf = &buf[..limit];
    let mut off = HEADER_LEN;
    let mut last_seq: Option<u64> = out.header_base.and_then(|b| b.checked_sub(1));
    // Sequence numbers in a segment are consecutive from its base (every record takes at least
    // FRAME_HEADER bytes), so anything else is garbage: refused before checksumming.
    let range = out
        .header_base
        .map(|b| (b, b.saturating_add((buf.len() / FRAME_HEADER) as u64)));
    let valid_at = |buf: &[u8], off: usize, last: Option<u64>| valid_at(buf, off, last, range);
    let resync = |buf: &[u8], from: usize, last: Option<u64>| {
        let end = buf.len().checked_sub(FRAME_HEADER)?;
        (from..=end).find(|&o| valid_at(buf, o, last).is_some())
    };
    while off < buf.len() {
        match valid_at(buf, off, last_seq) {
            Some((seq, total)) => {
                push(&mut out, seq, off, total);
                last_seq = Some(seq);
                off += total;
            }
            None => {
                // Search for the next valid record after the damage.
                match resync(buf, off + 1, last_seq) {
                    Some(next) => {
                        out.corrupt_regions += 1;
                        let (seq, _) = valid_at(buf, next, last_seq).unwrap_or((0, 0));
                        let gap = match last_seq {
                            Some(l) => seq.saturating_sub(l).saturating_sub(1),
                            None => 0,
                        };
                        out.lost_records += gap.max(1);
                        off = next;
                    }
                    None => {
                        out.torn_tail_bytes = buf.len() - off;
                        break;
                    }
                }
            }
        }
    }
    if out.torn_tail_bytes == 0 {
        out.valid_end = off.min(buf.len());
    } else {
        out.valid_end = buf.len() - out.torn_tail_bytes;
    }
    out
}

fn push(out: &mut Scan, seq: u64, off: usize, total: usize) {
    out.index.push(IndexEntry {
        seq,
        offset: off as u32,
        len: total as u32,
    });
}

fn valid_at(
    buf: &[u8],
    off: usize,
    last_seq: Option<u64>,
    range: Option<(u64, u64)>,
) -> Option<(u64, usize)> {
    let plausible = |seq: u64| {
        last_seq.is_none_or(|l| seq > l) && range.is_none_or(|(lo, hi)| seq >= lo && seq <= hi)
    };
    match record::parse_if(buf.get(off..)?, plausible) {
        Parsed::Valid { seq, total } => Some((seq, total)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(seqs: &[u64]) -> Vec<u8> {
        let mut v = header(seqs.first().copied().unwrap_or(0)).to_vec();
        for &s in seqs {
            record::encode(s, format!("payload {s}").as_bytes(), &mut v);
        }
        v
    }

    #[test]
    fn clean_segment() {
        let img = image(&[5, 6, 7]);
        let s = scan(&img);
        assert_eq!(s.header_base, Some(5));
        assert_eq!(s.index.len(), 3);
        assert_eq!(s.valid_end, img.len());
        assert_eq!((s.corrupt_regions, s.torn_tail_bytes), (0, 0));
    }

    #[test]
    fn torn_tail_is_reported() {
        let img = image(&[1, 2, 3]);
        let cut = &img[..img.len() - 4];
        let s = scan(cut);
        assert_eq!(s.index.len(), 2);
        assert_eq!(
            s.valid_end,
            s.index[1].offset as usize + s.index[1].len as usize
        );
        assert_eq!(s.torn_tail_bytes, cut.len() - s.valid_end);
        assert_eq!(s.corrupt_regions, 0);
    }

    #[test]
    fn corrupt_middle_resyncs() {
        let mut img = image(&[1, 2, 3, 4]);
        let s0 = scan(&img);
        let second = s0.index[1];
        img[second.offset as usize + FRAME_HEADER + 2] ^= 0xff;
        let s = scan(&img);
        assert_eq!(
            s.index.iter().map(|e| e.seq).collect::<Vec<_>>(),
            vec![1, 3, 4]
        );
        assert_eq!(s.corrupt_regions, 1);
        assert_eq!(s.lost_records, 1);
        assert_eq!(s.valid_end, img.len());
    }

    #[test]
    fn resync_over_adversarial_garbage_stays_cheap() {
        // Every offset announces a plausible 64 KiB record: without the sequence range check
        // each would be checksummed (quadratic).
        let mut img = header(1).to_vec();
        for _ in 0..(2 << 20) / 4 {
            img.extend_from_slice(&[0, 0, 1, 0]);
        }
        let s = scan(&img);
        assert!(s.index.is_empty());
        assert_eq!(s.valid_end, HEADER_LEN);
    }

    #[test]
    fn names() {
        assert_eq!(parse_file_name(&file_name(77)), Some(77));
        assert_eq!(parse_file_name("seg-12.vjl"), None);
        assert_eq!(parse_file_name("checkpoint.json"), None);
    }
}
