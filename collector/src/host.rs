//! Host metrics: /proc/stat (CPU time per mode, boot time), /proc/meminfo, /proc/loadavg,
//! /proc/uptime. Names as the OpenTelemetry hostmetrics receiver emits them.

use std::path::{Path, PathBuf};

use vigil_ipc_proto::{KeyValue, Metric, Record};

use crate::util::{
    Stamp, gauge_f64, gauge_i64, i, kv_lines, parse_f64, parse_u64, read_into, sum_f64,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("{0}: malformed")]
    Malformed(&'static str),
}

pub const CPU_MODES: [&str; 8] = [
    "user",
    "nice",
    "system",
    "idle",
    "wait",
    "interrupt",
    "softirq",
    "steal",
];

/// The aggregate `cpu` line of /proc/stat in ticks, in [`CPU_MODES`] order, and `btime`.
pub fn parse_proc_stat(buf: &[u8]) -> Result<([u64; 8], u64), HostError> {
    let mut cpu = None;
    let mut btime = None;
    for line in buf.split(|&c| c == b'\n') {
        let mut it = line.split(|&c| c == b' ').filter(|f| !f.is_empty());
        match it.next() {
            Some(b"cpu") => {
                let mut v = [0u64; 8];
                for slot in &mut v {
                    *slot = it
                        .next()
                        .and_then(parse_u64)
                        .ok_or(HostError::Malformed("/proc/stat cpu"))?;
                }
                cpu = Some(v);
            }
            Some(b"btime") => btime = it.next().and_then(parse_u64),
            _ => {}
        }
    }
    Ok((
        cpu.ok_or(HostError::Malformed("/proc/stat cpu"))?,
        btime.ok_or(HostError::Malformed("/proc/stat btime"))?,
    ))
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MemInfo {
    pub total: u64,
    pub free: u64,
    pub available: u64,
    pub buffers: u64,
    pub cached: u64,
    pub slab_reclaimable: u64,
    pub slab_unreclaimable: u64,
}

/// /proc/meminfo in bytes.
pub fn parse_meminfo(buf: &[u8]) -> Result<MemInfo, HostError> {
    let mut m = MemInfo::default();
    let mut seen = 0;
    for (k, v) in kv_lines(buf) {
        let slot = match k {
            b"MemTotal" => &mut m.total,
            b"MemFree" => &mut m.free,
            b"MemAvailable" => &mut m.available,
            b"Buffers" => &mut m.buffers,
            b"Cached" => &mut m.cached,
            b"SReclaimable" => &mut m.slab_reclaimable,
            b"SUnreclaim" => &mut m.slab_unreclaimable,
            _ => continue,
        };
        *slot = parse_u64(v)
            .ok_or(HostError::Malformed("/proc/meminfo"))?
            .saturating_mul(1024);
        seen += 1;
    }
    if m.total == 0 || seen < 2 {
        return Err(HostError::Malformed("/proc/meminfo"));
    }
    Ok(m)
}

pub fn parse_loadavg(buf: &[u8]) -> Result<[f64; 3], HostError> {
    let mut it = buf.split(|&c| c == b' ');
    let mut v = [0f64; 3];
    for slot in &mut v {
        *slot = it
            .next()
            .and_then(parse_f64)
            .ok_or(HostError::Malformed("/proc/loadavg"))?;
    }
    Ok(v)
}

pub fn parse_uptime(buf: &[u8]) -> Result<f64, HostError> {
    buf.split(|&c| c == b' ')
        .next()
        .and_then(|s| parse_f64(s.trim_ascii()))
        .ok_or(HostError::Malformed("/proc/uptime"))
}

pub struct HostCollector {
    proc_root: PathBuf,
    buf: Vec<u8>,
    /// Wall clock of boot in ns (from btime), updated every cycle.
    pub boot_time_ns: u64,
}

impl HostCollector {
    pub fn new(proc_root: &Path) -> Self {
        let mut h = HostCollector {
            proc_root: proc_root.to_path_buf(),
            buf: Vec::with_capacity(8192),
            boot_time_ns: 0,
        };
        if read_into(&h.proc_root.join("stat"), &mut h.buf).is_ok()
            && let Ok((_, bt)) = parse_proc_stat(&h.buf)
        {
            h.boot_time_ns = bt.saturating_mul(1_000_000_000);
        }
        h
    }

    /// Append the host's record; returns the number of parse errors.
    pub fn collect(&mut self, st: Stamp, resource: &[KeyValue], out: &mut Vec<Record>) -> u64 {
        let mut errors = 0;
        let mut metrics: Vec<Metric> = Vec::with_capacity(24);
        let hz = crate::util::USER_HZ as f64;
        match read_into(&self.proc_root.join("stat"), &mut self.buf)
            .map_err(|_| HostError::Malformed("/proc/stat"))
            .and_then(|_| parse_proc_stat(&self.buf))
        {
            Ok((cpu, btime)) => {
                self.boot_time_ns = btime.saturating_mul(1_000_000_000);
                let cst = Stamp {
                    start: self.boot_time_ns,
                    now: st.now,
                };
                for (mode, ticks) in CPU_MODES.iter().zip(cpu) {
                    metrics.push(sum_f64(
                        "system.cpu.time",
                        "s",
                        cst,
                        ticks as f64 / hz,
                        vec![KeyValue::str("cpu.mode", *mode)],
                    ));
                }
            }
            Err(_) => errors += 1,
        }
        match read_into(&self.proc_root.join("meminfo"), &mut self.buf)
            .map_err(|_| HostError::Malformed("/proc/meminfo"))
            .and_then(|_| parse_meminfo(&self.buf))
        {
            Ok(m) => {
                let cached = m.cached;
                let used = m
                    .total
                    .saturating_sub(m.free)
                    .saturating_sub(m.buffers)
                    .saturating_sub(cached)
                    .saturating_sub(m.slab_reclaimable);
                for (state, v) in [
                    ("used", used),
                    ("free", m.free),
                    ("buffered", m.buffers),
                    ("cached", cached),
                    ("slab_reclaimable", m.slab_reclaimable),
                    ("slab_unreclaimable", m.slab_unreclaimable),
                ] {
                    metrics.push(gauge_i64(
                        "system.memory.usage",
                        "By",
                        st,
                        i(v),
                        vec![KeyValue::str("system.memory.state", state)],
                    ));
                }
                metrics.push(gauge_i64(
                    "system.memory.limit",
                    "By",
                    st,
                    i(m.total),
                    Vec::new(),
                ));
                metrics.push(gauge_i64(
                    "system.linux.memory.available",
                    "By",
                    st,
                    i(m.available),
                    Vec::new(),
                ));
            }
            Err(_) => errors += 1,
        }
        match read_into(&self.proc_root.join("loadavg"), &mut self.buf)
            .map_err(|_| HostError::Malformed("/proc/loadavg"))
            .and_then(|_| parse_loadavg(&self.buf))
        {
            Ok([a, b, c]) => {
                metrics.push(gauge_f64(
                    "system.cpu.load_average.1m",
                    "{thread}",
                    st,
                    a,
                    Vec::new(),
                ));
                metrics.push(gauge_f64(
                    "system.cpu.load_average.5m",
                    "{thread}",
                    st,
                    b,
                    Vec::new(),
                ));
                metrics.push(gauge_f64(
                    "system.cpu.load_average.15m",
                    "{thread}",
                    st,
                    c,
                    Vec::new(),
                ));
            }
            Err(_) => errors += 1,
        }
        match read_into(&self.proc_root.join("uptime"), &mut self.buf)
            .map_err(|_| HostError::Malformed("/proc/uptime"))
            .and_then(|_| parse_uptime(&self.buf))
        {
            Ok(u) => metrics.push(gauge_f64("system.uptime", "s", st, u, Vec::new())),
            Err(_) => errors += 1,
        }
        if self.boot_time_ns != 0 {
            metrics.push(gauge_i64(
                "system.boot_time",
                "s",
                st,
                i(self.boot_time_ns / 1_000_000_000),
                Vec::new(),
            ));
        }
        out.push(Record::Metrics {
            resource: resource.to_vec(),
            metrics,
        });
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile() {
        assert!(parse_proc_stat(b"cpu 1 2 3").is_err());
        assert!(parse_proc_stat(b"\xff\xff").is_err());
        assert!(parse_meminfo(b"MemTotal: x kB").is_err());
        assert!(parse_meminfo(b"").is_err());
        assert!(parse_loadavg(b"0.1 0.2").is_err());
        assert!(parse_uptime(b"abc").is_err());
        assert_eq!(
            parse_loadavg(b"0.10 0.20 0.30 1/100 5\n"),
            Ok([0.1, 0.2, 0.3])
        );
    }
}
