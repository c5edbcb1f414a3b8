//! Host metrics: /proc/stat (CPU time per logical CPU and mode, boot time, processes created),
//! /proc/meminfo, /proc/loadavg, /proc/uptime, and the paging group (/proc/vmstat,
//! /proc/swaps). Names, instruments, units and attribute values as the OpenTelemetry semantic
//! conventions define them (conventions/semconv-table.json); the load averages keep the
//! hostmetrics receiver's names (the conventions have none).

use std::path::{Path, PathBuf};

use vigil_ipc_proto::{KeyValue, Metric, Record};

use crate::util::{
    Stamp, gauge_f64, i, kv_lines, parse_f64, parse_u64, read_into, sum_f64, sum_i64, updown_i64,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("{0}: malformed")]
    Malformed(&'static str),
}

/// `cpu.mode` values in the order [`CpuTicks::modes`] gives them. /proc/stat's `irq` and
/// `softirq` columns are both `interrupt`: the conventions' enum has no `softirq` (the
/// hostmetrics receiver's `state` had one), and time spent servicing software interrupts is
/// interrupt time, so the modes still add up to the CPU's whole time. `guest` and `guest_nice`
/// are already counted in `user` and `nice` and are not reported again.
pub const CPU_MODES: [&str; 7] = [
    "user",
    "nice",
    "system",
    "idle",
    "iowait",
    "interrupt",
    "steal",
];

/// One `cpuN` line of /proc/stat, in ticks.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CpuTicks {
    pub cpu: u32,
    pub user: u64,
    pub nice: u64,
    pub system: u64,
    pub idle: u64,
    pub iowait: u64,
    pub irq: u64,
    pub softirq: u64,
    pub steal: u64,
}

impl CpuTicks {
    /// Ticks per [`CPU_MODES`] entry.
    pub fn modes(&self) -> [u64; 7] {
        [
            self.user,
            self.nice,
            self.system,
            self.idle,
            self.iowait,
            self.irq.saturating_add(self.softirq),
            self.steal,
        ]
    }
}

/// What the collector reads from /proc/stat.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ProcStat {
    /// Per logical CPU (the `cpuN` lines; the aggregate `cpu` line is their sum).
    pub cpus: Vec<CpuTicks>,
    /// Boot time, seconds since the epoch.
    pub btime: u64,
    /// Processes and threads created since boot.
    pub processes: u64,
}

fn parse_cpu_line<'a>(
    n: &[u8],
    it: &mut impl Iterator<Item = &'a [u8]>,
) -> Result<CpuTicks, HostError> {
    const E: HostError = HostError::Malformed("/proc/stat cpu");
    let cpu = parse_u64(n).and_then(|v| u32::try_from(v).ok()).ok_or(E)?;
    let mut v = [0u64; 8];
    for slot in &mut v {
        *slot = it.next().and_then(parse_u64).ok_or(E)?;
    }
    Ok(CpuTicks {
        cpu,
        user: v[0],
        nice: v[1],
        system: v[2],
        idle: v[3],
        iowait: v[4],
        irq: v[5],
        softirq: v[6],
        steal: v[7],
    })
}

/// /proc/stat: the per-CPU lines, `btime` and `processes`.
pub fn parse_proc_stat(buf: &[u8]) -> Result<ProcStat, HostError> {
    let mut s = ProcStat::default();
    let (mut btime, mut processes) = (None, None);
    for line in buf.split(|&c| c == b'\n') {
        let mut it = line.split(|&c| c == b' ').filter(|f| !f.is_empty());
        match it.next() {
            Some(b"btime") => btime = it.next().and_then(parse_u64),
            Some(b"processes") => processes = it.next().and_then(parse_u64),
            Some(k) if k.len() > 3 && k.starts_with(b"cpu") => {
                if s.cpus.len() >= 65_536 {
                    return Err(HostError::Malformed("/proc/stat cpu"));
                }
                s.cpus.push(parse_cpu_line(&k[3..], &mut it)?);
            }
            _ => {}
        }
    }
    if s.cpus.is_empty() {
        return Err(HostError::Malformed("/proc/stat cpu"));
    }
    s.btime = btime.ok_or(HostError::Malformed("/proc/stat btime"))?;
    s.processes = processes.ok_or(HostError::Malformed("/proc/stat processes"))?;
    Ok(s)
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MemInfo {
    pub total: u64,
    pub free: u64,
    /// `None` on kernels before 3.14.
    pub available: Option<u64>,
    pub buffers: u64,
    pub cached: u64,
    pub shared: u64,
    pub slab_reclaimable: u64,
    pub slab_unreclaimable: u64,
}

impl MemInfo {
    /// `used` as the conventions define it: MemTotal − MemAvailable, or (before 3.14) the older
    /// total − free − buffers − cached − reclaimable slab.
    pub fn used(&self) -> u64 {
        match self.available {
            Some(a) => self.total.saturating_sub(a),
            None => self
                .total
                .saturating_sub(self.free)
                .saturating_sub(self.buffers)
                .saturating_sub(self.cached)
                .saturating_sub(self.slab_reclaimable),
        }
    }
}

/// /proc/meminfo in bytes.
pub fn parse_meminfo(buf: &[u8]) -> Result<MemInfo, HostError> {
    let mut m = MemInfo::default();
    let mut seen = 0;
    let mut available = 0;
    for (k, v) in kv_lines(buf) {
        let slot = match k {
            b"MemTotal" => &mut m.total,
            b"MemFree" => &mut m.free,
            b"MemAvailable" => &mut available,
            b"Buffers" => &mut m.buffers,
            b"Cached" => &mut m.cached,
            b"Shmem" => &mut m.shared,
            b"SReclaimable" => &mut m.slab_reclaimable,
            b"SUnreclaim" => &mut m.slab_unreclaimable,
            _ => continue,
        };
        *slot = parse_u64(v)
            .ok_or(HostError::Malformed("/proc/meminfo"))?
            .saturating_mul(1024);
        if k == b"MemAvailable" {
            m.available = Some(available);
        }
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

/// The /proc/vmstat counters of the paging group.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct VmStat {
    pub pgfault: u64,
    pub pgmajfault: u64,
    pub pgpgin: u64,
    pub pgpgout: u64,
    pub pswpin: u64,
    pub pswpout: u64,
}

pub fn parse_vmstat(buf: &[u8]) -> Result<VmStat, HostError> {
    let mut v = VmStat::default();
    let mut seen = 0;
    for (k, val) in kv_lines(buf) {
        let slot = match k {
            b"pgfault" => &mut v.pgfault,
            b"pgmajfault" => &mut v.pgmajfault,
            b"pgpgin" => &mut v.pgpgin,
            b"pgpgout" => &mut v.pgpgout,
            b"pswpin" => &mut v.pswpin,
            b"pswpout" => &mut v.pswpout,
            _ => continue,
        };
        *slot = parse_u64(val).ok_or(HostError::Malformed("/proc/vmstat"))?;
        seen += 1;
    }
    if seen < 6 {
        return Err(HostError::Malformed("/proc/vmstat"));
    }
    Ok(v)
}

/// One swap area of /proc/swaps: its path and sizes in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Swap {
    pub device: String,
    pub size: u64,
    pub used: u64,
}

/// /proc/swaps (header line, then `Filename Type Size Used Priority`, sizes in KiB). Paths with
/// spaces are escaped by the kernel (`\040`).
pub fn parse_swaps(buf: &[u8]) -> Result<Vec<Swap>, HostError> {
    const E: HostError = HostError::Malformed("/proc/swaps");
    let mut v = Vec::new();
    for line in buf.split(|&c| c == b'\n').skip(1) {
        let f: Vec<&[u8]> = line
            .split(|&c| c == b' ' || c == b'\t')
            .filter(|x| !x.is_empty())
            .collect();
        if f.is_empty() {
            continue;
        }
        if f.len() < 4 || v.len() >= 1024 {
            return Err(E);
        }
        let kib = |x: &[u8]| parse_u64(x).map(|n| n.saturating_mul(1024)).ok_or(E);
        v.push(Swap {
            device: crate::mountinfo::unescape(f[0]),
            size: kib(f[2])?,
            used: kib(f[3])?,
        });
    }
    Ok(v)
}

pub struct HostCollector {
    proc_root: PathBuf,
    buf: Vec<u8>,
    /// Wall clock of boot in ns (from btime), updated every cycle.
    pub boot_time_ns: u64,
    /// Swap, faults and paging operations too.
    pub paging: bool,
    /// `processes` of /proc/stat at the last [`HostCollector::collect`].
    processes_created: Option<u64>,
}

fn str_attr(k: &str, v: &str) -> Vec<KeyValue> {
    vec![KeyValue::str(k, v)]
}

impl HostCollector {
    pub fn new(proc_root: &Path) -> Self {
        let mut h = HostCollector {
            proc_root: proc_root.to_path_buf(),
            buf: Vec::with_capacity(8192),
            boot_time_ns: 0,
            paging: true,
            processes_created: None,
        };
        if read_into(&h.proc_root.join("stat"), &mut h.buf).is_ok()
            && let Ok(s) = parse_proc_stat(&h.buf)
        {
            h.boot_time_ns = s.btime.saturating_mul(1_000_000_000);
        }
        h
    }

    fn read(&mut self, file: &str) -> Result<&[u8], HostError> {
        match read_into(&self.proc_root.join(file), &mut self.buf) {
            Ok(_) => Ok(&self.buf),
            Err(_) => Err(HostError::Malformed("read")),
        }
    }

    /// Append the host's record; returns the number of parse errors.
    pub fn collect(&mut self, st: Stamp, resource: &[KeyValue], out: &mut Vec<Record>) -> u64 {
        let mut errors = 0;
        let mut m: Vec<Metric> = Vec::with_capacity(64);
        match self.read("stat").and_then(parse_proc_stat) {
            Ok(s) => {
                self.boot_time_ns = s.btime.saturating_mul(1_000_000_000);
                self.processes_created = Some(s.processes);
                cpu_metrics(
                    &s,
                    Stamp {
                        start: self.boot_time_ns,
                        now: st.now,
                    },
                    &mut m,
                );
            }
            Err(_) => errors += 1,
        }
        match self.read("meminfo").and_then(parse_meminfo) {
            Ok(mi) => memory_metrics(&mi, st, &mut m),
            Err(_) => errors += 1,
        }
        match self.read("loadavg").and_then(parse_loadavg) {
            Ok(l) => {
                for (name, v) in ["1m", "5m", "15m"].iter().zip(l) {
                    let n = format!("system.cpu.load_average.{name}");
                    m.push(gauge_f64(&n, "{thread}", st, v, Vec::new()));
                }
            }
            Err(_) => errors += 1,
        }
        match self.read("uptime").and_then(parse_uptime) {
            Ok(u) => m.push(gauge_f64("system.uptime", "s", st, u, Vec::new())),
            Err(_) => errors += 1,
        }
        if self.paging {
            errors += self.paging_metrics(st, &mut m);
        }
        out.push(Record::Metrics {
            resource: resource.to_vec(),
            metrics: m,
        });
        errors
    }

    /// `system.paging.*`: swap areas, faults, paging operations. Returns parse errors.
    fn paging_metrics(&mut self, st: Stamp, m: &mut Vec<Metric>) -> u64 {
        let mut errors = 0;
        let cst = Stamp {
            start: self.boot_time_ns,
            now: st.now,
        };
        match self.read("vmstat").and_then(parse_vmstat) {
            Ok(v) => {
                let ft = "system.paging.fault.type";
                let minor = v.pgfault.saturating_sub(v.pgmajfault);
                m.push(sum_i64(
                    "system.paging.faults",
                    "{fault}",
                    cst,
                    i(minor),
                    str_attr(ft, "minor"),
                ));
                m.push(sum_i64(
                    "system.paging.faults",
                    "{fault}",
                    cst,
                    i(v.pgmajfault),
                    str_attr(ft, "major"),
                ));
                // As the hostmetrics receiver: swap-ins/outs are major, page-ins/outs minor.
                for (ty, dir, n) in [
                    ("major", "in", v.pswpin),
                    ("major", "out", v.pswpout),
                    ("minor", "in", v.pgpgin),
                    ("minor", "out", v.pgpgout),
                ] {
                    let a = vec![
                        KeyValue::str(ft, ty),
                        KeyValue::str("system.paging.direction", dir),
                    ];
                    m.push(sum_i64(
                        "system.paging.operations",
                        "{operation}",
                        cst,
                        i(n),
                        a,
                    ));
                }
            }
            Err(_) => errors += 1,
        }
        match self.read("swaps").and_then(parse_swaps) {
            Ok(swaps) => {
                for s in swaps {
                    for (state, v) in [("used", s.used), ("free", s.size.saturating_sub(s.used))] {
                        let a = vec![
                            KeyValue::str("system.device", s.device.as_str()),
                            KeyValue::str("system.paging.state", state),
                        ];
                        m.push(updown_i64("system.paging.usage", "By", st, i(v), a));
                    }
                }
            }
            Err(_) => errors += 1,
        }
        errors
    }

    /// `system.process.created` (/proc/stat as [`HostCollector::collect`] read it this cycle)
    /// and `system.process.count` by state, from the process scan's states.
    pub fn process_counts(
        &mut self,
        st: Stamp,
        states: &[(u8, u64)],
        resource: &[KeyValue],
        out: &mut Vec<Record>,
    ) {
        let mut m = Vec::with_capacity(5);
        let mut counts = [0u64; 4];
        for &(s, n) in states {
            counts[process_state_index(s)] += n;
        }
        for (state, n) in PROCESS_STATES.iter().zip(counts) {
            let a = str_attr("process.state", state);
            m.push(updown_i64("system.process.count", "{process}", st, i(n), a));
        }
        if let Some(n) = self.processes_created.take() {
            let cst = Stamp {
                start: self.boot_time_ns,
                now: st.now,
            };
            let name = "system.process.created";
            m.push(sum_i64(name, "{process}", cst, i(n), Vec::new()));
        }
        out.push(Record::Metrics {
            resource: resource.to_vec(),
            metrics: m,
        });
    }
}

/// The conventions' `process.state` values.
pub const PROCESS_STATES: [&str; 4] = ["running", "sleeping", "stopped", "defunct"];

/// The [`PROCESS_STATES`] entry of a /proc/PID/stat state letter: `R` running; `S`, `D`
/// (uninterruptible sleep), `I` (idle kernel thread) and the rest sleeping; `T`, `t` stopped;
/// `Z`, `X` defunct.
pub fn process_state_index(letter: u8) -> usize {
    match letter {
        b'R' => 0,
        b'T' | b't' => 2,
        b'Z' | b'X' | b'x' => 3,
        _ => 1,
    }
}

/// `process.state` of a state letter.
pub fn process_state(letter: u8) -> &'static str {
    PROCESS_STATES[process_state_index(letter)]
}

fn cpu_metrics(s: &ProcStat, cst: Stamp, m: &mut Vec<Metric>) {
    let hz = crate::util::USER_HZ as f64;
    for c in &s.cpus {
        for (mode, ticks) in CPU_MODES.iter().zip(c.modes()) {
            let a = vec![
                KeyValue::str("cpu.mode", *mode),
                KeyValue::i64("cpu.logical_number", i64::from(c.cpu)),
            ];
            m.push(sum_f64("system.cpu.time", "s", cst, ticks as f64 / hz, a));
        }
    }
    let n = s.cpus.len() as i64;
    m.push(updown_i64(
        "system.cpu.logical.count",
        "{cpu}",
        cst,
        n,
        Vec::new(),
    ));
}

fn memory_metrics(mi: &MemInfo, st: Stamp, m: &mut Vec<Metric>) {
    for (state, v) in [
        ("used", mi.used()),
        ("free", mi.free),
        ("buffers", mi.buffers),
        ("cached", mi.cached),
    ] {
        let a = str_attr("system.memory.state", state);
        m.push(updown_i64("system.memory.usage", "By", st, i(v), a));
    }
    for (state, v) in [
        ("reclaimable", mi.slab_reclaimable),
        ("unreclaimable", mi.slab_unreclaimable),
    ] {
        let a = str_attr("system.memory.linux.slab.state", state);
        m.push(updown_i64(
            "system.memory.linux.slab.usage",
            "By",
            st,
            i(v),
            a,
        ));
    }
    m.push(updown_i64(
        "system.memory.limit",
        "By",
        st,
        i(mi.total),
        Vec::new(),
    ));
    m.push(updown_i64(
        "system.memory.linux.shared",
        "By",
        st,
        i(mi.shared),
        Vec::new(),
    ));
    if let Some(a) = mi.available {
        m.push(updown_i64(
            "system.memory.linux.available",
            "By",
            st,
            i(a),
            Vec::new(),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile() {
        assert!(parse_proc_stat(b"cpu0 1 2 3").is_err());
        assert!(parse_proc_stat(b"\xff\xff").is_err());
        assert!(parse_proc_stat(b"cpu0 1 2 3 4 5 6 7 8\nbtime 5\n").is_err());
        assert!(parse_meminfo(b"MemTotal: x kB").is_err());
        assert!(parse_meminfo(b"").is_err());
        assert!(parse_loadavg(b"0.1 0.2").is_err());
        assert!(parse_uptime(b"abc").is_err());
        assert!(parse_vmstat(b"pgfault 1\npgmajfault x\n").is_err());
        assert!(parse_swaps(b"Filename Type Size Used Priority\n/swap file 12\n").is_err());
        assert_eq!(
            parse_loadavg(b"0.10 0.20 0.30 1/100 5\n"),
            Ok([0.1, 0.2, 0.3])
        );
    }

    #[test]
    fn proc_stat_per_cpu_and_modes() {
        let s = parse_proc_stat(
            b"cpu  20 2 30 400 5 6 7 8 9 10\ncpu0 10 1 15 200 2 3 4 5 9 10\ncpu1 10 1 15 200 3 3 3 3 0 0\nintr 1 2\nbtime 1700000000\nprocesses 4242\n",
        )
        .unwrap();
        assert_eq!(s.cpus.len(), 2);
        assert_eq!(s.btime, 1_700_000_000);
        assert_eq!(s.processes, 4242);
        // irq + softirq are interrupt time; guest columns are not added again.
        assert_eq!(s.cpus[0].modes(), [10, 1, 15, 200, 2, 7, 5]);
        assert_eq!(s.cpus[1].cpu, 1);
    }

    #[test]
    fn memory_used_is_total_minus_available() {
        let m = parse_meminfo(
            b"MemTotal: 1000 kB\nMemFree: 100 kB\nMemAvailable: 600 kB\nBuffers: 50 kB\nCached: 300 kB\nShmem: 10 kB\nSReclaimable: 40 kB\nSUnreclaim: 20 kB\n",
        )
        .unwrap();
        assert_eq!(m.used(), 400 * 1024);
        assert_eq!(m.shared, 10 * 1024);
        let old = parse_meminfo(b"MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 50 kB\nCached: 300 kB\nSReclaimable: 40 kB\n").unwrap();
        assert_eq!(old.available, None);
        assert_eq!(old.used(), 510 * 1024);
    }

    #[test]
    fn swaps_and_states() {
        let s = parse_swaps(
            b"Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n/dev/loop7 partition\t8188\t12\t-2\n/swap\\040file file 100 0 -3\n",
        )
        .unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].size, s[0].used), (8188 * 1024, 12 * 1024));
        assert_eq!(s[1].device, "/swap file");
        assert_eq!(
            parse_swaps(b"Filename Type Size Used Priority\n").unwrap(),
            vec![]
        );
        for (l, want) in [
            (b'R', "running"),
            (b'D', "sleeping"),
            (b'I', "sleeping"),
            (b't', "stopped"),
            (b'Z', "defunct"),
            (b'?', "sleeping"),
        ] {
            assert_eq!(process_state(l), want);
        }
    }
}
