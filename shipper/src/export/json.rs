//! JSON lines: one object per metric point and per log record, to stdout or a file.

use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use crate::convert::ResourceDefaults;
use crate::convert::cache::ResourceCache;
use crate::convert::json::{Json, write_record_cached};
use crate::journal::Journal;
use crate::stats::Stats;

use super::{JSON, MAX_READ_BYTES};

pub struct JsonExporter {
    out: BufWriter<Box<dyn Write>>,
    /// One record's lines, rendered then written (memory stays bounded by the largest record,
    /// not by the batch).
    lines: Vec<u8>,
    defaults: ResourceDefaults,
    /// Process records' resources rendered earlier.
    resources: ResourceCache<Json>,
    retry_at: Option<Instant>,
    failing: bool,
}

impl JsonExporter {
    /// `stdout` or a file path (appended to).
    pub fn open(target: &str, defaults: ResourceDefaults) -> io::Result<Self> {
        let w: Box<dyn Write> = if target == "stdout" || target == "-" {
            widen_pipe(io::stdout().as_fd());
            Box::new(io::stdout())
        } else {
            Box::new(OpenOptions::new().create(true).append(true).open(target)?)
        };
        Ok(Self::from_writer(w, defaults))
    }

    pub fn from_writer(w: Box<dyn Write>, defaults: ResourceDefaults) -> Self {
        JsonExporter {
            out: BufWriter::with_capacity(64 * 1024, w),
            lines: Vec::new(),
            defaults,
            resources: ResourceCache::new(Json),
            retry_at: None,
            failing: false,
        }
    }

    /// Write everything the journal holds past our position. Returns when to try again after
    /// a write error.
    pub fn step(&mut self, j: &mut Journal, stats: &mut Stats, now: Instant) -> Option<Instant> {
        if let Some(t) = self.retry_at {
            if now < t {
                return Some(t);
            }
            self.retry_at = None;
        }
        // A bounded amount per call, so a large backlog (replay after restart) does not keep
        // the run loop from the collector: called again at once while behind.
        for _ in 0..8 {
            let from = j.acked(JSON)?;
            if from >= j.next_seq() {
                return None;
            }
            let batch = match j.read(from, 1024, MAX_READ_BYTES) {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!("json exporter: journal read: {e}");
                    return self.fail(stats, now);
                }
            };
            let mut result = Ok(());
            for (_, r) in batch.decode() {
                self.lines.clear();
                write_record_cached(
                    r.borrowed(),
                    &self.defaults,
                    &mut self.resources,
                    &mut self.lines,
                );
                result = self.out.write_all(&self.lines);
                if result.is_err() {
                    break;
                }
            }
            if let Err(e) = result.and_then(|_| self.out.flush()) {
                if !self.failing {
                    tracing::warn!("json exporter: write failed: {e}");
                }
                return self.fail(stats, now);
            }
            self.failing = false;
            stats.add_shipped(JSON, batch.len() as u64);
            j.ack(JSON, batch.next);
        }
        Some(now)
    }

    fn fail(&mut self, stats: &mut Stats, now: Instant) -> Option<Instant> {
        self.failing = true;
        stats.retries += 1;
        let t = now + Duration::from_secs(1);
        self.retry_at = Some(t);
        Some(t)
    }

    pub fn flush(&mut self) {
        let _ = self.out.flush();
    }
}

/// The pipe a reader takes the lines from, if stdout is one, grown from 64 KiB to 1 MiB (the
/// unprivileged maximum by default): at thousands of processes a cycle is tens of megabytes of
/// lines, and with 64 KiB the shipper sleeps and wakes for every 64 KiB the reader takes.
/// Anything else (a file, a socket, a refusal) is left as it is.
fn widen_pipe(fd: BorrowedFd<'_>) {
    let is_pipe =
        nix::sys::stat::fstat(fd).is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFIFO);
    if is_pipe {
        let _ = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETPIPE_SZ(1 << 20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::fcntl::{FcntlArg, fcntl};

    #[test]
    fn a_pipe_on_stdout_is_widened_and_a_file_left_alone() {
        let (r, w) = nix::unistd::pipe().unwrap();
        assert_eq!(fcntl(&w, FcntlArg::F_GETPIPE_SZ).unwrap(), 64 * 1024);
        widen_pipe(w.as_fd());
        assert_eq!(fcntl(&w, FcntlArg::F_GETPIPE_SZ).unwrap(), 1 << 20);
        assert_eq!(fcntl(&r, FcntlArg::F_GETPIPE_SZ).unwrap(), 1 << 20);
        let f = tempfile::tempfile().unwrap();
        widen_pipe(f.as_fd());
        assert!(fcntl(&f, FcntlArg::F_GETPIPE_SZ).is_err());
    }
}
