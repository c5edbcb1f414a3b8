//! Kernel lines are journaled in the order the collector read them. The collector resumes
//! reading /dev/kmsg after the highest sequence the journal holds (`Resume{last_kmsg_seq}`),
//! so a batch of kernel lines refused for want of space must not be overtaken by a later one:
//! once journaled, the later batch would move that resume point past lines that are not, and
//! a restart in between would lose them. While a refused batch of kernel lines is waiting to
//! be sent again, every later batch is refused the same way (the collector sends them again
//! in sequence order after it).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::journal::JournalError;

/// How long a refused batch of kernel lines holds later ones back. The collector sends it
/// again after half a second; one that never comes back (the collector dropped it, or
/// restarted) must not stop the journal for good.
pub const HOLD_MAX: Duration = Duration::from_secs(10);

/// The oldest batch of kernel lines refused for want of space and not journaled since.
#[derive(Debug, Default)]
pub struct KmsgOrder {
    waiting: Option<Waiting>,
}

#[derive(Debug)]
struct Waiting {
    seq: u64,
    since: Instant,
    path: PathBuf,
}

impl KmsgOrder {
    /// May batch `seq` be journaled now? `Err`: refuse it as the journal's file system being
    /// full (the collector keeps it and sends it again).
    pub fn admit(&mut self, seq: u64, now: Instant) -> Result<(), JournalError> {
        let Some(w) = &self.waiting else {
            return Ok(());
        };
        if seq <= w.seq {
            return Ok(());
        }
        if now.duration_since(w.since) > HOLD_MAX {
            tracing::warn!(
                "shipper: batch {} of kernel lines was not sent again within {HOLD_MAX:?}; \
                 journaling later batches",
                w.seq
            );
            self.waiting = None;
            return Ok(());
        }
        Err(JournalError::NoSpace {
            path: w.path.clone(),
        })
    }

    /// Batch `seq` was refused with `e`; `kernel_lines`: it holds log records.
    pub fn refused(&mut self, seq: u64, kernel_lines: bool, e: &JournalError, now: Instant) {
        let JournalError::NoSpace { path } = e else {
            return;
        };
        if !kernel_lines || self.waiting.as_ref().is_some_and(|w| w.seq < seq) {
            return;
        }
        self.waiting = Some(Waiting {
            seq,
            since: now,
            path: path.clone(),
        });
    }

    /// Batch `seq` is in the journal.
    pub fn journaled(&mut self, seq: u64) {
        if self.waiting.as_ref().is_some_and(|w| w.seq == seq) {
            self.waiting = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nospace() -> JournalError {
        JournalError::NoSpace {
            path: PathBuf::from("/j/seg"),
        }
    }

    #[test]
    fn later_batches_wait_for_a_refused_batch_of_kernel_lines() {
        let t0 = Instant::now();
        let mut o = KmsgOrder::default();
        assert!(o.admit(70, t0).is_ok());
        o.refused(71, true, &nospace(), t0);
        // Sent before the refusal reached the collector: refused too, as full.
        for seq in [72, 73] {
            assert!(matches!(
                o.admit(seq, t0),
                Err(JournalError::NoSpace { .. })
            ));
        }
        // Metrics refused meanwhile do not move the floor.
        o.refused(72, false, &nospace(), t0);
        o.refused(73, true, &nospace(), t0);
        // 71 again, then the rest in order.
        assert!(o.admit(71, t0).is_ok());
        o.journaled(71);
        assert!(o.admit(72, t0).is_ok());
        assert!(o.admit(73, t0).is_ok());
    }

    #[test]
    fn only_space_refusals_of_kernel_lines_hold_back_and_never_for_good() {
        let t0 = Instant::now();
        let mut o = KmsgOrder::default();
        o.refused(5, false, &nospace(), t0);
        assert!(o.admit(6, t0).is_ok(), "metrics only");
        o.refused(7, true, &JournalError::RecordTooLarge(1 << 30), t0);
        assert!(
            o.admit(8, t0).is_ok(),
            "dropped by the collector, not sent again"
        );
        o.refused(9, true, &nospace(), t0);
        assert!(o.admit(10, t0 + HOLD_MAX / 2).is_err());
        assert!(o.admit(10, t0 + HOLD_MAX * 2).is_ok(), "9 never came back");
        assert!(o.admit(11, t0 + HOLD_MAX * 2).is_ok());
    }
}
