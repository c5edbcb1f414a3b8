//! gzip (RFC 1952) request bodies from one deflate stream kept for the exporter's life.
//!
//! A deflate stream's state is ≈ 300 KiB that must be zeroed when it is made: made afresh for
//! every request (what `flate2::write::GzEncoder` does), that cost as much CPU as compressing
//! the body (`cargo bench -p vigil-shipper --bench shipper`, BENCHMARKS.md). Here the stream is
//! made on the first gzip request and reset between requests; the body is fed in pieces as it
//! is encoded ([`crate::convert::pb::metrics_request_chunked`]).

use crc32fast::Hasher;
use flate2::{Compress, CompressError, Compression, FlushCompress, Status};

/// ID1 ID2, CM deflate, no flags, no modification time, XFL 4 (fastest), OS unknown.
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 4, 255];

/// Output room asked for whenever the stream runs out of it.
const GROW: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
#[error("gzip: {0}")]
pub struct GzipError(#[from] CompressError);

pub struct Gzip {
    deflate: Compress,
    /// crc32fast (PCLMULQDQ when the CPU has it): flate2's `Crc` over zlib-rs took the
    /// portable path here, 11 % of the shipper's CPU.
    crc: Hasher,
    /// Bytes of input in this body (gzip's ISIZE is this modulo 2^32).
    len: u64,
    out: Vec<u8>,
}

impl Default for Gzip {
    fn default() -> Self {
        Gzip {
            deflate: Compress::new(Compression::fast(), false),
            crc: Hasher::new(),
            len: 0,
            out: Vec::new(),
        }
    }
}

impl Gzip {
    /// Start a body; `capacity` is a guess of its compressed size.
    pub fn begin(&mut self, capacity: usize) {
        self.deflate.reset();
        self.crc = Hasher::new();
        self.len = 0;
        self.out = Vec::with_capacity(capacity.max(HEADER.len() + GROW));
        self.out.extend_from_slice(&HEADER);
    }

    /// Compress the next piece of the body.
    pub fn write(&mut self, mut data: &[u8]) -> Result<(), GzipError> {
        self.crc.update(data);
        self.len += data.len() as u64;
        while !data.is_empty() {
            if self.out.capacity() == self.out.len() {
                self.out.reserve(GROW);
            }
            let before = self.deflate.total_in();
            self.deflate
                .compress_vec(data, &mut self.out, FlushCompress::None)?;
            let used = (self.deflate.total_in() - before) as usize;
            data = data.get(used..).unwrap_or_default();
        }
        Ok(())
    }

    /// The whole body: header, compressed data, CRC-32 and size of the input.
    pub fn finish(&mut self) -> Result<Vec<u8>, GzipError> {
        loop {
            if self.out.capacity() == self.out.len() {
                self.out.reserve(GROW);
            }
            if self
                .deflate
                .compress_vec(&[], &mut self.out, FlushCompress::Finish)?
                == Status::StreamEnd
            {
                break;
            }
        }
        let crc = std::mem::take(&mut self.crc).finalize();
        self.out.extend_from_slice(&crc.to_le_bytes());
        self.out.extend_from_slice(&(self.len as u32).to_le_bytes());
        Ok(std::mem::take(&mut self.out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn gunzip(b: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(b)
            .read_to_end(&mut out)
            .expect("valid gzip");
        out
    }

    /// Bodies of every size, one stream reused: each decodes (header, CRC and size checked by
    /// the decoder) to exactly its input.
    #[test]
    fn bodies_round_trip_through_one_stream() {
        let mut gz = Gzip::default();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for len in [0usize, 1, 100, 65_535, 65_536, 300_000, 1 << 21] {
            let body: Vec<u8> = (0..len)
                .map(|i| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    // Half compressible, half noise.
                    if i % 2 == 0 { b'a' } else { seed as u8 }
                })
                .collect();
            gz.begin(16);
            for piece in body.chunks(7_000) {
                gz.write(piece).unwrap();
            }
            let z = gz.finish().unwrap();
            assert_eq!(&z[..2], &[0x1f, 0x8b]);
            assert_eq!(gunzip(&z), body, "length {len}");
        }
    }
}
