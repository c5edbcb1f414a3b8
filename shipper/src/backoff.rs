//! Exponential backoff with full jitter: the n-th consecutive failure waits a uniformly random
//! time in `[0, min(max, initial * 2^n)]`.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
    rng: u64,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration, seed: u64) -> Self {
        Backoff {
            initial: initial.max(Duration::from_millis(1)),
            max: max.max(initial),
            attempt: 0,
            rng: seed | 1,
        }
    }

    /// Delay before the next attempt; advances the exponent.
    pub fn next_delay(&mut self) -> Duration {
        let cap = self
            .initial
            .saturating_mul(1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let cap_ms = cap.as_millis().max(1) as u64;
        Duration::from_millis(self.random() % (cap_ms + 1))
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// xorshift64*: no syscall (the seccomp policy need not allow getrandom for this).
    fn random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// A seed from the clock and the pid.
pub fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ (u64::from(std::process::id()) << 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_jitter_within_exponential_cap() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2), 7);
        let mut max_seen = Duration::ZERO;
        for n in 0..40u32 {
            let d = b.next_delay();
            let cap = Duration::from_millis(100 * 2u64.pow(n.min(20))).min(Duration::from_secs(2));
            assert!(d <= cap, "attempt {n}: {d:?} > {cap:?}");
            max_seen = max_seen.max(d);
        }
        assert!(max_seen > Duration::from_millis(500));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
