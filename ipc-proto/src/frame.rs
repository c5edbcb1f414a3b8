//! Length framing and postcard encoding of one message.
//!
//! A frame is `[u32 little-endian payload length][payload]`, where the payload is the postcard
//! encoding of one message. Every channel is a `SOCK_SEQPACKET` socket, so one frame is exactly
//! one datagram; the length prefix is still checked against the datagram size, so a frame that
//! was cut short or padded is rejected rather than half-decoded.

use serde::{Serialize, de::DeserializeOwned};

use crate::error::ProtoError;

/// Hard upper bound of a payload, for every channel. Chosen to fit in the default
/// `net.core.wmem_default` (212992) of a `SOCK_SEQPACKET` Unix socket with room to spare, so a
/// sender never needs a privileged `SO_SNDBUFFORCE`. Data batches are chunked to stay under it.
pub const MAX_FRAME: usize = 64 * 1024;

/// Size of the length prefix.
pub const HEADER_LEN: usize = 4;

/// Encode `msg` into a complete frame (header + payload).
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, ProtoError> {
    let mut buf = vec![0u8; HEADER_LEN];
    buf = postcard::to_extend(msg, buf).map_err(ProtoError::Encode)?;
    let len = buf.len() - HEADER_LEN;
    if len > MAX_FRAME {
        return Err(ProtoError::FrameTooLarge {
            len,
            max: MAX_FRAME,
        });
    }
    buf[..HEADER_LEN].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(buf)
}

/// Size a message would have once framed, without keeping the bytes.
pub fn encoded_len<T: Serialize>(msg: &T) -> Result<usize, ProtoError> {
    postcard::experimental::serialized_size(msg)
        .map(|n| n + HEADER_LEN)
        .map_err(ProtoError::Encode)
}

/// The payload of one complete frame, its header checked: never panics, whatever the bytes.
pub fn payload(frame: &[u8]) -> Result<&[u8], ProtoError> {
    if frame.len() < HEADER_LEN {
        return Err(ProtoError::Truncated {
            got: frame.len(),
            want: HEADER_LEN,
        });
    }
    let mut hdr = [0u8; HEADER_LEN];
    hdr.copy_from_slice(&frame[..HEADER_LEN]);
    let len = u32::from_le_bytes(hdr) as usize;
    if len > MAX_FRAME {
        return Err(ProtoError::FrameTooLarge {
            len,
            max: MAX_FRAME,
        });
    }
    let payload = &frame[HEADER_LEN..];
    if payload.len() != len {
        return Err(ProtoError::LengthMismatch {
            header: len,
            actual: payload.len(),
        });
    }
    Ok(payload)
}

/// Decode one complete frame. Never panics and never allocates more than the frame holds
/// (plus serde's own capped pre-allocation), whatever the bytes are.
pub fn decode<T: DeserializeOwned>(frame: &[u8]) -> Result<T, ProtoError> {
    let (msg, rest) = postcard::take_from_bytes(payload(frame)?).map_err(ProtoError::Decode)?;
    if !rest.is_empty() {
        return Err(ProtoError::TrailingBytes(rest.len()));
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::*;

    #[test]
    fn roundtrip() {
        let m = PrivRequest::ProcFdStats {
            pids: vec![1, 2, 3],
        };
        let f = encode(&m).unwrap();
        assert_eq!(decode::<PrivRequest>(&f).unwrap(), m);
    }

    #[test]
    fn rejects_bad_lengths() {
        let f = encode(&PrivRequest::OpenKmsg).unwrap();
        assert!(matches!(
            decode::<PrivRequest>(&f[..2]),
            Err(ProtoError::Truncated { .. })
        ));
        let mut padded = f.clone();
        padded.push(0);
        assert!(matches!(
            decode::<PrivRequest>(&padded),
            Err(ProtoError::LengthMismatch { .. })
        ));
        let mut huge = f.clone();
        huge[..4].copy_from_slice(&(u32::MAX).to_le_bytes());
        assert!(matches!(
            decode::<PrivRequest>(&huge),
            Err(ProtoError::FrameTooLarge { .. })
        ));
    }

    #[test]
    fn rejects_unknown_variant() {
        let mut f = encode(&PrivRequest::OpenKmsg).unwrap();
        f[HEADER_LEN] = 0x7f; // variant index far past the last one
        assert!(matches!(
            decode::<PrivRequest>(&f),
            Err(ProtoError::Decode(_))
        ));
    }

    #[test]
    fn refuses_to_encode_oversized() {
        let m = PrivRequest::ProcFdStats {
            pids: vec![u32::MAX; MAX_FRAME],
        };
        assert!(matches!(encode(&m), Err(ProtoError::FrameTooLarge { .. })));
    }
}
