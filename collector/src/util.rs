//! Small helpers shared by the parsers: reusable-buffer file reads, number parsing, metric
//! builders.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use vigil_ipc_proto::{KeyValue, Metric, MetricKind, MetricValue};

/// Largest file any parser reads (bounds memory on hostile or odd files).
pub const MAX_FILE: usize = 4 * 1024 * 1024;

/// Read `path` into `buf` (cleared first), at most [`MAX_FILE`] bytes. Reuses the buffer's
/// allocation across calls.
pub fn read_into(path: &Path, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    buf.clear();
    let f = File::open(path)?;
    f.take(MAX_FILE as u64).read_to_end(buf)
}

/// Parse an unsigned decimal number (ASCII digits only).
pub fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 20 {
        return None;
    }
    let mut v: u64 = 0;
    for &c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    Some(v)
}

pub fn parse_i64(s: &[u8]) -> Option<i64> {
    match s.split_first() {
        Some((b'-', rest)) => parse_u64(rest)
            .and_then(|v| i64::try_from(v).ok())
            .map(|v| -v),
        _ => parse_u64(s).and_then(|v| i64::try_from(v).ok()),
    }
}

/// Parse a decimal like `123.45` (as in /proc/uptime, /proc/loadavg).
pub fn parse_f64(s: &[u8]) -> Option<f64> {
    std::str::from_utf8(s).ok()?.parse().ok()
}

pub fn now_unix_nano() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Clock ticks per second (USER_HZ); 100 on every Linux ABI we run on.
pub const USER_HZ: u64 = 100;

/// Timestamps shared by every metric of one cycle.
#[derive(Debug, Clone, Copy)]
pub struct Stamp {
    pub start: u64,
    pub now: u64,
}

/// One data point of `kind` at the cycle's stamp.
fn point(
    name: &str,
    unit: &str,
    kind: MetricKind,
    st: Stamp,
    value: MetricValue,
    attributes: Vec<KeyValue>,
) -> Metric {
    Metric {
        name: name.into(),
        unit: unit.into(),
        kind,
        start_time_unix_nano: st.start,
        time_unix_nano: st.now,
        value,
        attributes,
    }
}

pub fn gauge_i64(name: &str, unit: &str, st: Stamp, v: i64, attributes: Vec<KeyValue>) -> Metric {
    point(
        name,
        unit,
        MetricKind::Gauge,
        st,
        MetricValue::I64(v),
        attributes,
    )
}

pub fn gauge_f64(name: &str, unit: &str, st: Stamp, v: f64, attributes: Vec<KeyValue>) -> Metric {
    point(
        name,
        unit,
        MetricKind::Gauge,
        st,
        MetricValue::F64(v),
        attributes,
    )
}

/// A Counter of the conventions: a cumulative, monotonic sum.
pub fn sum_f64(name: &str, unit: &str, st: Stamp, v: f64, attributes: Vec<KeyValue>) -> Metric {
    let kind = MetricKind::Sum { monotonic: true };
    point(name, unit, kind, st, MetricValue::F64(v), attributes)
}

pub fn sum_i64(name: &str, unit: &str, st: Stamp, v: i64, attributes: Vec<KeyValue>) -> Metric {
    let kind = MetricKind::Sum { monotonic: true };
    point(name, unit, kind, st, MetricValue::I64(v), attributes)
}

/// An UpDownCounter of the conventions: a cumulative, non-monotonic sum.
pub fn updown_i64(name: &str, unit: &str, st: Stamp, v: i64, attributes: Vec<KeyValue>) -> Metric {
    let kind = MetricKind::Sum { monotonic: false };
    point(name, unit, kind, st, MetricValue::I64(v), attributes)
}

/// Every non-blank line `f` parses (at most `max`), and the count of the ones it refused.
pub fn parse_lines<T>(buf: &[u8], max: usize, f: impl Fn(&[u8]) -> Option<T>) -> (Vec<T>, u64) {
    let mut v = Vec::new();
    let mut bad = 0;
    for line in buf.split(|&c| c == b'\n') {
        if line.trim_ascii().is_empty() {
            continue;
        }
        match f(line) {
            Some(x) if v.len() < max => v.push(x),
            Some(_) => {}
            None => bad += 1,
        }
    }
    (v, bad)
}

/// `Some(s)` unless empty.
pub fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// Saturating u64 → i64 for metric values.
pub fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Key/value lines (`key value` or `key: value kB`), as in meminfo, cpu.stat, memory.stat.
pub fn kv_lines(buf: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    buf.split(|&c| c == b'\n').filter_map(|line| {
        let mut it = line
            .split(|&c| c == b' ' || c == b':' || c == b'\t')
            .filter(|s| !s.is_empty());
        Some((it.next()?, it.next()?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(parse_u64(b"123"), Some(123));
        assert_eq!(parse_u64(b""), None);
        assert_eq!(parse_u64(b"99999999999999999999999"), None);
        assert_eq!(parse_u64(b"18446744073709551616"), None);
        assert_eq!(parse_u64(b"1a"), None);
        assert_eq!(parse_i64(b"-5"), Some(-5));
        assert_eq!(parse_f64(b"0.25"), Some(0.25));
    }
}
