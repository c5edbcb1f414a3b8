//! The `collector.kmsg_*` settings, parsed once: Go durations as NPD writes them (`"5m"`,
//! `"20m"`, `"1h30m"`), syslog severity names, the plain-line rate limit.

use std::time::Duration;

use vigil_ipc_proto::CollectorConfig;

/// Plain lines a source may send at once, then [`KmsgOptions::log_rate`] per second.
pub const DEFAULT_LOG_BURST: u32 = 100;
pub const DEFAULT_LOG_RATE: u32 = 10;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("collector.{key}: {reason}")]
pub struct OptionError {
    pub key: &'static str,
    pub reason: String,
}

/// How kernel lines are turned into records besides the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsgOptions {
    /// On a first start (nothing journaled yet), lines older than this are not shipped
    /// (NPD's `lookback`); `None`: every line in the ring.
    pub lookback: Option<Duration>,
    /// Plain lines at or above this syslog severity (0 emerg .. 7 debug) are shipped; `None`:
    /// no plain lines.
    pub log_level: Option<u8>,
    /// Plain lines per second per source (token bucket refilled by the lines' own timestamps).
    pub log_rate: u32,
    /// Plain lines a source may send at once.
    pub log_burst: u32,
}

impl Default for KmsgOptions {
    /// What tests and benches use: every line, warning and above shipped, default limits.
    fn default() -> Self {
        KmsgOptions {
            lookback: None,
            log_level: Some(4),
            log_rate: DEFAULT_LOG_RATE,
            log_burst: DEFAULT_LOG_BURST,
        }
    }
}

impl KmsgOptions {
    pub fn from_config(c: &CollectorConfig) -> Result<Self, OptionError> {
        let lookback = parse_duration(&c.kmsg_lookback).map_err(|reason| OptionError {
            key: "kmsg_lookback",
            reason,
        })?;
        let log_level = parse_level(&c.kmsg_log_level).map_err(|reason| OptionError {
            key: "kmsg_log_level",
            reason,
        })?;
        if c.kmsg_log_burst == 0 && c.kmsg_log_rate > 0 {
            return Err(OptionError {
                key: "kmsg_log_burst",
                reason: "must be at least 1 when kmsg_log_rate is not 0".into(),
            });
        }
        Ok(KmsgOptions {
            lookback: Some(lookback),
            log_level,
            log_rate: c.kmsg_log_rate,
            log_burst: c.kmsg_log_burst,
        })
    }
}

/// A syslog severity: a name (`emerg` .. `debug`, `err`/`error`, `warn`/`warning`) or a
/// number 0..=7; `off` / `none` for no plain lines at all.
pub fn parse_level(s: &str) -> Result<Option<u8>, String> {
    let l = s.trim().to_ascii_lowercase();
    Ok(Some(match l.as_str() {
        "off" | "none" => return Ok(None),
        "emerg" | "emergency" => 0,
        "alert" => 1,
        "crit" | "critical" => 2,
        "err" | "error" => 3,
        "warn" | "warning" => 4,
        "notice" => 5,
        "info" => 6,
        "debug" => 7,
        n => match n.parse::<u8>() {
            Ok(v) if v <= 7 => v,
            _ => {
                return Err(format!(
                    "{s:?} is not a syslog severity (emerg alert crit err warning notice info \
                     debug, 0-7, or off)"
                ));
            }
        },
    }))
}

/// A Go duration as NPD's files write them: `"0"`, `"300ms"`, `"5m"`, `"1h30m"`, `"1.5h"`
/// (units ns, us, µs, ms, s, m, h; no sign).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration like \"5m\", \"90s\" or \"1h30m\"");
    let t = s.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    if t.is_empty() {
        return Err(bad());
    }
    let mut rest = t;
    let mut total = 0f64;
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let value: f64 = rest[..n].parse().map_err(|_| bad())?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let secs = match &rest[..u] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += value * secs;
        rest = &rest[u..];
    }
    // Ten years is "everything" for a kernel ring; keeps the conversion finite.
    if !total.is_finite() || total > 315_360_000.0 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        let d = |s: &str| parse_duration(s).unwrap();
        assert_eq!(d("0"), Duration::ZERO);
        assert_eq!(d("5m"), Duration::from_secs(300));
        assert_eq!(d("20m"), Duration::from_secs(1200));
        assert_eq!(d("1h30m"), Duration::from_secs(5400));
        assert_eq!(d("1.5h"), Duration::from_secs(5400));
        assert_eq!(d("300ms"), Duration::from_millis(300));
        assert_eq!(d("2s500ms"), Duration::from_millis(2500));
        for bad in ["", "5", "m", "5x", "-5m", "5m3", "1e9h", "99999999999h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn severities() {
        assert_eq!(parse_level("warning"), Ok(Some(4)));
        assert_eq!(parse_level("ERR"), Ok(Some(3)));
        assert_eq!(parse_level("7"), Ok(Some(7)));
        assert_eq!(parse_level("off"), Ok(None));
        assert!(parse_level("8").is_err());
        assert!(parse_level("loud").is_err());
    }
}
