//! Errors of the protocol layer. Every way a peer's bytes can be wrong has its own variant, so
//! a refusal can be logged and counted precisely.

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    FrameTooLarge { len: usize, max: usize },
    #[error("frame truncated: got {got} bytes, need at least {want}")]
    Truncated { got: usize, want: usize },
    #[error("frame header says {header} bytes but the datagram carries {actual}")]
    LengthMismatch { header: usize, actual: usize },
    #[error("{0} trailing bytes after the message")]
    TrailingBytes(usize),
    #[error("cannot decode message: {0}")]
    Decode(postcard::Error),
    #[error("cannot encode message: {0}")]
    Encode(postcard::Error),
    #[error("peer speaks protocol version {peer}, this side speaks {ours}")]
    VersionMismatch { peer: u16, ours: u16 },
    #[error("peer did not start with the vigil hello")]
    BadHello,
    #[error("peer is {got:?}, expected {want:?}")]
    UnexpectedPeer { got: crate::Role, want: crate::Role },
    #[error("peer sent {got} file descriptors, at most {max} allowed here")]
    TooManyFds { got: usize, max: usize },
    #[error("datagram was truncated by the kernel (larger than the receive buffer)")]
    KernelTruncated,
    #[error("peer closed the channel")]
    Closed,
    #[error("socket I/O: {0}")]
    Io(#[from] io::Error),
}

impl ProtoError {
    /// True when the error is only "nothing to read yet" on a non-blocking channel.
    pub fn is_would_block(&self) -> bool {
        matches!(self, ProtoError::Io(e) if e.kind() == io::ErrorKind::WouldBlock)
    }
}
