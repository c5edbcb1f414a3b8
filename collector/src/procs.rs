//! Processes from /proc: a hand-written `/proc/PID/stat` parser over a reusable buffer (the hot
//! path), command lines cached per (pid, start time), owner from the /proc/PID inode.

use std::collections::HashMap;
use std::path::PathBuf;

use vigil_ipc_proto::{KeyValue, ProcFdStat, Record};

use crate::users::Users;
use crate::util::{
    Stamp, gauge_f64, gauge_i64, i, parse_i64, parse_u64, read_into, read_into_owner, sum_f64,
};

/// Longest command line kept (bytes); longer ones are cut.
pub const MAX_CMDLINE: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StatError {
    #[error("no ') ' after the command name")]
    NoComm,
    #[error("field {0} missing or not a number")]
    Field(usize),
}

/// The fields of /proc/PID/stat the collector reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProcStat<'a> {
    pub pid: u32,
    pub comm: &'a [u8],
    pub state: u8,
    pub ppid: u32,
    /// Clock ticks.
    pub utime: u64,
    pub stime: u64,
    pub num_threads: i64,
    /// Clock ticks after boot.
    pub starttime: u64,
    /// Bytes.
    pub vsize: u64,
    /// Pages.
    pub rss: i64,
}

/// Parse one /proc/PID/stat line. The command name may hold spaces and parentheses: it ends at
/// the last ')'.
pub fn parse_stat(buf: &[u8]) -> Result<ProcStat<'_>, StatError> {
    let open = buf
        .iter()
        .position(|&c| c == b'(')
        .ok_or(StatError::NoComm)?;
    let close = buf
        .iter()
        .rposition(|&c| c == b')')
        .ok_or(StatError::NoComm)?;
    if close < open {
        return Err(StatError::NoComm);
    }
    let pid = parse_u64(buf[..open].trim_ascii())
        .and_then(|v| u32::try_from(v).ok())
        .ok_or(StatError::Field(1))?;
    let comm = &buf[open + 1..close];
    let rest = buf.get(close + 1..).ok_or(StatError::NoComm)?;
    let mut s = ProcStat {
        pid,
        comm,
        ..Default::default()
    };
    // Field numbers as in proc(5): 3 = state.
    let mut n = 3usize;
    for f in rest.split(|&c| c == b' ').filter(|f| !f.is_empty()) {
        let f = f.trim_ascii_end();
        match n {
            3 => s.state = *f.first().ok_or(StatError::Field(3))?,
            4 => {
                s.ppid = parse_u64(f)
                    .and_then(|v| u32::try_from(v).ok())
                    .ok_or(StatError::Field(4))?
            }
            14 => s.utime = parse_u64(f).ok_or(StatError::Field(14))?,
            15 => s.stime = parse_u64(f).ok_or(StatError::Field(15))?,
            20 => s.num_threads = parse_i64(f).ok_or(StatError::Field(20))?,
            22 => s.starttime = parse_u64(f).ok_or(StatError::Field(22))?,
            23 => s.vsize = parse_u64(f).ok_or(StatError::Field(23))?,
            24 => {
                s.rss = parse_i64(f).ok_or(StatError::Field(24))?;
                return Ok(s);
            }
            _ => {}
        }
        n += 1;
    }
    Err(StatError::Field(n))
}

/// `cmdline` NUL-separated arguments → one space-separated string (lossy UTF-8, bounded).
pub fn cmdline_to_string(buf: &[u8]) -> String {
    let b = &buf[..buf.len().min(MAX_CMDLINE)];
    let b = b.strip_suffix(b"\0").unwrap_or(b);
    let s = String::from_utf8_lossy(b);
    s.replace('\0', " ")
}

/// One process as sampled in a cycle.
#[derive(Debug, Clone, Default)]
pub struct ProcSample {
    pub pid: u32,
    pub ppid: u32,
    pub comm: String,
    pub state: u8,
    pub utime: u64,
    pub stime: u64,
    pub threads: i64,
    pub starttime: u64,
    pub vsize: u64,
    pub rss_bytes: u64,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct ScanStats {
    pub processes: u64,
    /// Processes that exited between the directory listing and the read (normal).
    pub vanished: u64,
    pub parse_errors: u64,
}

/// Scans /proc; keeps its buffers and caches between cycles.
pub struct ProcScanner {
    proc_root: PathBuf,
    buf: Vec<u8>,
    path: PathBuf,
    /// pid → (start time, command line).
    cmdlines: HashMap<u32, (u64, String)>,
    pub samples: Vec<ProcSample>,
    page_size: u64,
    seen_gen: HashMap<u32, u32>,
    generation: u32,
}

impl ProcScanner {
    pub fn new(proc_root: impl Into<PathBuf>) -> Self {
        ProcScanner {
            proc_root: proc_root.into(),
            buf: Vec::with_capacity(4096),
            path: PathBuf::with_capacity(64),
            cmdlines: HashMap::new(),
            samples: Vec::new(),
            page_size: crate::util::page_size(),
            seen_gen: HashMap::new(),
            generation: 0,
        }
    }

    fn set_path(&mut self, pid: &str, file: &str) {
        self.path.clear();
        self.path.push(&self.proc_root);
        self.path.push(pid);
        if !file.is_empty() {
            self.path.push(file);
        }
    }

    /// Sample every process into `self.samples`.
    pub fn scan(&mut self) -> std::io::Result<ScanStats> {
        let mut stats = ScanStats::default();
        self.samples.clear();
        self.generation = self.generation.wrapping_add(1);
        let dir = std::fs::read_dir(&self.proc_root)?;
        for ent in dir.flatten() {
            let name = ent.file_name();
            let Some(name) = name.to_str() else { continue };
            if !name.bytes().all(|c| c.is_ascii_digit()) {
                continue;
            }
            self.set_path(name, "stat");
            let Ok((uid, gid)) = read_into_owner(&self.path, &mut self.buf) else {
                stats.vanished += 1;
                continue;
            };
            let st = match parse_stat(&self.buf) {
                Ok(s) => s,
                Err(_) => {
                    stats.parse_errors += 1;
                    continue;
                }
            };
            let sample = ProcSample {
                pid: st.pid,
                ppid: st.ppid,
                comm: String::from_utf8_lossy(st.comm).into_owned(),
                state: st.state,
                utime: st.utime,
                stime: st.stime,
                threads: st.num_threads,
                starttime: st.starttime,
                vsize: st.vsize,
                rss_bytes: (st.rss.max(0) as u64).saturating_mul(self.page_size),
                uid,
                gid,
            };
            let cached =
                matches!(self.cmdlines.get(&sample.pid), Some((t, _)) if *t == sample.starttime);
            if !cached {
                self.set_path(name, "cmdline");
                let cmd = match read_into(&self.path, &mut self.buf) {
                    Ok(_) => cmdline_to_string(&self.buf),
                    Err(_) => String::new(),
                };
                self.cmdlines.insert(sample.pid, (sample.starttime, cmd));
            }
            self.seen_gen.insert(sample.pid, self.generation);
            self.samples.push(sample);
            stats.processes += 1;
        }
        // Forget the caches of processes that are gone.
        let g = self.generation;
        self.seen_gen.retain(|_, v| *v == g);
        let seen = &self.seen_gen;
        self.cmdlines.retain(|pid, _| seen.contains_key(pid));
        Ok(stats)
    }

    pub fn cmdline(&self, pid: u32) -> &str {
        self.cmdlines
            .get(&pid)
            .map(|(_, c)| c.as_str())
            .unwrap_or("")
    }

    /// Records of the last scan. `boot_time_ns`: wall clock of boot; `fds`: per-pid fd stats
    /// when the privhelper gave them.
    pub fn records(
        &self,
        st: Stamp,
        host_name: &str,
        boot_time_ns: u64,
        users: &Users,
        fds: Option<&HashMap<u32, ProcFdStat>>,
        out: &mut Vec<Record>,
    ) {
        for p in &self.samples {
            let user = users.user_name(p.uid);
            let group = users.group_name(p.gid);
            let mut resource = vec![
                KeyValue::str("host.name", host_name),
                KeyValue::i64("process.pid", i64::from(p.pid)),
                KeyValue::i64("process.parent_pid", i64::from(p.ppid)),
                KeyValue::str("process.executable.name", p.comm.as_str()),
                KeyValue::str("process.command_line", self.cmdline(p.pid)),
                KeyValue::str("process.owner", user.clone()),
                KeyValue::str("process.user.name", user),
                KeyValue::i64("process.user.id", i64::from(p.uid)),
                KeyValue::str("process.group.name", group),
                KeyValue::i64("process.group.id", i64::from(p.gid)),
                KeyValue::str("process.linux.state", (p.state as char).to_string()),
            ];
            let start_ns = boot_time_ns.saturating_add(
                p.starttime
                    .saturating_mul(1_000_000_000 / crate::util::USER_HZ),
            );
            resource.push(KeyValue::i64("process.start_time_unix_nano", i(start_ns)));
            let pst = Stamp {
                start: start_ns,
                now: st.now,
            };
            let hz = crate::util::USER_HZ as f64;
            let mut metrics = vec![
                sum_f64(
                    "process.cpu.time",
                    "s",
                    pst,
                    p.utime as f64 / hz,
                    vec![KeyValue::str("cpu.mode", "user")],
                ),
                sum_f64(
                    "process.cpu.time",
                    "s",
                    pst,
                    p.stime as f64 / hz,
                    vec![KeyValue::str("cpu.mode", "system")],
                ),
                gauge_i64("process.memory.usage", "By", st, i(p.rss_bytes), Vec::new()),
                gauge_i64("process.memory.virtual", "By", st, i(p.vsize), Vec::new()),
                gauge_i64(
                    "process.thread.count",
                    "{thread}",
                    st,
                    p.threads,
                    Vec::new(),
                ),
                gauge_f64(
                    "process.uptime",
                    "s",
                    st,
                    st.now.saturating_sub(start_ns) as f64 / 1e9,
                    Vec::new(),
                ),
            ];
            if let Some(f) = fds.and_then(|m| m.get(&p.pid)) {
                if let Some(n) = f.fds {
                    metrics.push(gauge_i64(
                        "process.open_file_descriptor.count",
                        "{file_descriptor}",
                        st,
                        i64::from(n),
                        Vec::new(),
                    ));
                }
                if let Some(n) = f.sockets {
                    metrics.push(gauge_i64(
                        "process.linux.socket.count",
                        "{socket}",
                        st,
                        i64::from(n),
                        Vec::new(),
                    ));
                }
            }
            out.push(Record::Metrics { resource, metrics });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_of_a_name_with_spaces_and_parens() {
        let line = b"4242 (we ird) (x)) S 1 4242 4242 0 -1 4194560 100 0 0 0 17 5 0 0 20 0 3 0 12345 1048576 250 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n";
        let s = parse_stat(line).unwrap();
        assert_eq!(s.pid, 4242);
        assert_eq!(s.comm, b"we ird) (x)");
        assert_eq!(s.state, b'S');
        assert_eq!(s.ppid, 1);
        assert_eq!((s.utime, s.stime), (17, 5));
        assert_eq!(s.num_threads, 3);
        assert_eq!(s.starttime, 12345);
        assert_eq!(s.vsize, 1048576);
        assert_eq!(s.rss, 250);
    }

    #[test]
    fn hostile_stat_lines_are_errors() {
        for bad in [
            &b""[..],
            b"12 (x",
            b"12 x) S",
            b")( 1 2",
            b"12 (x) S 1 2 3",
            b"12 (x) S zz 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1",
            b"\xff\xfe (\x00) \xff",
            b"99999999999 (x) S 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1",
        ] {
            assert!(parse_stat(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cmdline() {
        assert_eq!(cmdline_to_string(b"sleep\x00100\x00"), "sleep 100");
        assert_eq!(cmdline_to_string(b""), "");
        assert_eq!(cmdline_to_string(b"\xff\x00a").len(), 5);
        assert!(cmdline_to_string(&vec![b'a'; 100_000]).len() <= MAX_CMDLINE);
    }
}
