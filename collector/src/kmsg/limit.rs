//! Token buckets keyed by source, refilled by the lines' own kernel timestamps (so a backlog
//! read at once is limited as it happened, and a burst is a burst whenever it is read). The
//! number of keys is bounded: past [`MAX_KEYS`] sources, new ones share one bucket.

use std::collections::HashMap;

/// Sources with a bucket of their own.
pub const MAX_KEYS: usize = 512;
const SHARED: &str = "(other sources)";

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last_us: u64,
    /// Dropped since the last admitted line.
    dropped: u64,
}

#[derive(Debug)]
pub struct Limiter {
    rate: f64,
    burst: f64,
    buckets: HashMap<Box<str>, Bucket>,
}

impl Limiter {
    /// `rate` lines per second after a burst of `burst`; rate 0 means no limit.
    pub fn new(rate: u32, burst: u32) -> Limiter {
        Limiter {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            buckets: HashMap::new(),
        }
    }

    /// May a line of `key` at kernel time `ts_us` pass? `Some(n)`: yes, `n` lines of this key
    /// were dropped since the last one that passed; `None`: no (counted).
    pub fn admit(&mut self, key: &str, ts_us: u64) -> Option<u64> {
        if self.rate == 0.0 {
            return Some(0);
        }
        let key = if self.buckets.contains_key(key) || self.buckets.len() < MAX_KEYS {
            key
        } else {
            SHARED
        };
        let burst = self.burst;
        let b = self.buckets.entry(key.into()).or_insert(Bucket {
            tokens: burst,
            last_us: ts_us,
            dropped: 0,
        });
        let elapsed = ts_us.saturating_sub(b.last_us) as f64 / 1e6;
        b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
        b.last_us = b.last_us.max(ts_us);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Some(std::mem::take(&mut b.dropped))
        } else {
            b.dropped += 1;
            None
        }
    }
}

/// Where a kernel line comes from, for the plain-line limit: the prefix the kernel's
/// `pr_fmt`/`dev_printk` put before `": "` (`"usb 1-1"`, `"EXT4-fs (sda1)"`, `"audit"`,
/// `"systemd[1]"`), else the first word; at most 64 bytes.
pub fn source_key(msg: &str) -> &str {
    let head = &msg[..floor_char_boundary(msg, 64)];
    match head.find(": ") {
        Some(i) if i > 0 => &head[..i],
        _ => head.split(' ').next().unwrap_or(head),
    }
}

fn floor_char_boundary(s: &str, max: usize) -> usize {
    let mut i = max.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate_by_kernel_time() {
        let mut l = Limiter::new(10, 5);
        let mut passed = 0;
        // 100 lines within 10 ms: the burst passes.
        for k in 0..100u64 {
            if l.admit("a", 1_000_000 + k * 100).is_some() {
                passed += 1;
            }
        }
        assert_eq!(passed, 5);
        // Another source has its own bucket.
        assert_eq!(l.admit("b", 1_000_000), Some(0));
        // A second later, 10 more tokens (capped at the burst); the first says what was lost.
        assert_eq!(l.admit("a", 2_100_000), Some(95));
        assert_eq!(Limiter::new(0, 0).admit("x", 0), Some(0));
    }

    #[test]
    fn bounded_keys() {
        let mut l = Limiter::new(1, 1);
        for k in 0..(MAX_KEYS as u64 + 100) {
            let _ = l.admit(&format!("src{k}"), 0);
        }
        assert!(l.buckets.len() <= MAX_KEYS + 1);
    }

    #[test]
    fn sources() {
        assert_eq!(source_key("usb 1-1: new high-speed USB device"), "usb 1-1");
        assert_eq!(
            source_key("EXT4-fs (sda1): mounted filesystem"),
            "EXT4-fs (sda1)"
        );
        assert_eq!(source_key("hello world"), "hello");
        assert_eq!(source_key(&"é".repeat(100)).len(), 64);
    }
}
