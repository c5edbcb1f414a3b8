//! One journal record on disk:
//!
//! ```text
//! [u32 LE payload length][u32 LE CRC32C of (seq bytes ++ payload)][u64 LE sequence][payload]
//! ```
//!
//! The payload is the postcard encoding of one [`vigil_ipc_proto::Record`]. The sequence number
//! is global to the journal and strictly increasing, so a gap tells exactly how many records a
//! corrupt region swallowed.

/// Bytes before the payload.
pub const FRAME_HEADER: usize = 16;
/// Sequence numbers above this are not ours (2^62: 146 000 years at a million records a
/// second); a record claiming one is corrupt, so arithmetic on sequences never overflows.
pub const MAX_SEQ: u64 = 1 << 62;
/// Largest payload accepted (a collector frame is at most 64 KiB, so this is generous).
pub const MAX_PAYLOAD: usize = 1024 * 1024;

/// Append one framed record to `out`.
pub fn encode(seq: u64, payload: &[u8], out: &mut Vec<u8>) {
    let seq_bytes = seq.to_le_bytes();
    let crc = crc32c::crc32c_append(crc32c::crc32c(&seq_bytes), payload);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&seq_bytes);
    out.extend_from_slice(payload);
}

/// What the bytes at some offset hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// A complete record whose checksum matches: `total` bytes long, payload at
    /// `FRAME_HEADER..total`.
    Valid { seq: u64, total: usize },
    /// Fewer bytes than the header or than the length announces: a torn write (or a corrupt
    /// length field).
    Short,
    /// Length out of range or checksum mismatch.
    Corrupt,
}

/// Parse the record at the start of `buf`. Never panics, whatever the bytes.
pub fn parse(buf: &[u8]) -> Parsed {
    parse_if(buf, |_| true)
}

/// As [`parse`], but a record whose sequence number `plausible` refuses is `Corrupt` before any
/// checksum is computed (keeps resynchronisation over garbage cheap).
pub fn parse_if(buf: &[u8], plausible: impl Fn(u64) -> bool) -> Parsed {
    let Some(hdr) = buf.get(..FRAME_HEADER) else {
        return Parsed::Short;
    };
    let len = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) as usize;
    let crc = u32::from_le_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]);
    if len > MAX_PAYLOAD {
        return Parsed::Corrupt;
    }
    let total = FRAME_HEADER + len;
    let seq_bytes = &hdr[8..16];
    let mut s = [0u8; 8];
    s.copy_from_slice(seq_bytes);
    let seq = u64::from_le_bytes(s);
    let Some(payload) = buf.get(FRAME_HEADER..total) else {
        return Parsed::Short;
    };
    if seq > MAX_SEQ || !plausible(seq) {
        return Parsed::Corrupt;
    }
    let actual = crc32c::crc32c_append(crc32c::crc32c(seq_bytes), payload);
    if actual != crc {
        return Parsed::Corrupt;
    }
    Parsed::Valid { seq, total }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_detection() {
        let mut buf = Vec::new();
        encode(42, b"hello", &mut buf);
        assert_eq!(
            parse(&buf),
            Parsed::Valid {
                seq: 42,
                total: FRAME_HEADER + 5
            }
        );
        assert_eq!(parse(&buf[..buf.len() - 1]), Parsed::Short);
        assert_eq!(parse(&buf[..3]), Parsed::Short);
        let mut bad = buf.clone();
        bad[FRAME_HEADER + 1] ^= 0x40;
        assert_eq!(parse(&bad), Parsed::Corrupt);
        let mut bad_seq = buf.clone();
        bad_seq[9] ^= 1;
        assert_eq!(parse(&bad_seq), Parsed::Corrupt);
        let mut huge = buf;
        huge[3] = 0xff;
        assert_eq!(parse(&huge), Parsed::Corrupt);
    }
}
