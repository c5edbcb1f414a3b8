//! Kernel events from /dev/kmsg (descriptor opened by the privhelper): the record format
//! `prio,seq,ts_usec,flags[,...];message\n[ KEY=value\n]...`, and the events users expect:
//! OOMKilling, PodOOMKilling, TaskHung, ReadonlyFilesystem, KernelOops, KernelBug, KernelPanic,
//! Segfault (with the call stack that follows, bounded).

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use vigil_ipc_proto::{ATTR_KMSG_SEQ, AttrValue, KeyValue, LogRecord, Record};

use crate::cgroups::identify;
use crate::util::parse_u64;

/// Stack lines kept per event.
pub const MAX_STACK_LINES: usize = 64;
/// Lines between an event and its "Call Trace:" that may be skipped (registers, code bytes).
pub const MAX_PRELUDE_LINES: usize = 48;
/// How long an event waits for its stack.
pub const STACK_WINDOW: Duration = Duration::from_millis(500);
/// Longest message kept (bytes).
pub const MAX_MESSAGE: usize = 2048;
/// Records read per wake-up at most (one busy kernel cannot starve the loop).
pub const READ_BUDGET: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KmsgError {
    #[error("no ';' ending the header")]
    NoHeader,
    #[error("bad header field {0}")]
    Field(&'static str),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsgRecord<'a> {
    pub level: u8,
    pub facility: u32,
    pub seq: u64,
    pub ts_usec: u64,
    pub continuation: bool,
    pub message: &'a [u8],
    /// ` KEY=value` continuation lines (SUBSYSTEM=, DEVICE=).
    pub dict: Vec<(&'a [u8], &'a [u8])>,
}

pub fn parse_record(buf: &[u8]) -> Result<KmsgRecord<'_>, KmsgError> {
    let semi = buf
        .iter()
        .position(|&c| c == b';')
        .ok_or(KmsgError::NoHeader)?;
    let mut h = buf[..semi].split(|&c| c == b',');
    let prio = h
        .next()
        .and_then(parse_u64)
        .ok_or(KmsgError::Field("prio"))?;
    let seq = h
        .next()
        .and_then(parse_u64)
        .ok_or(KmsgError::Field("seq"))?;
    let ts_usec = h.next().and_then(parse_u64).ok_or(KmsgError::Field("ts"))?;
    let flags = h.next().ok_or(KmsgError::Field("flags"))?;
    let rest = &buf[semi + 1..];
    let mut lines = rest.split(|&c| c == b'\n');
    let message = lines.next().unwrap_or(b"");
    let mut dict = Vec::new();
    for l in lines {
        if let Some(kv) = l.strip_prefix(b" ")
            && let Some(eq) = kv.iter().position(|&c| c == b'=')
            && dict.len() < 16
        {
            dict.push((&kv[..eq], &kv[eq + 1..]));
        }
    }
    Ok(KmsgRecord {
        level: (prio & 7) as u8,
        facility: u32::try_from(prio >> 3).map_err(|_| KmsgError::Field("prio"))?,
        seq,
        ts_usec,
        continuation: flags.contains(&b'c'),
        message: &message[..message.len().min(MAX_MESSAGE)],
        dict,
    })
}

/// OpenTelemetry severity number and text of a syslog level.
pub fn severity(level: u8) -> (u8, &'static str) {
    match level {
        0 => (21, "FATAL"),
        1 => (19, "ERROR3"),
        2 => (18, "ERROR2"),
        3 => (17, "ERROR"),
        4 => (13, "WARN"),
        5 => (10, "INFO2"),
        6 => (9, "INFO"),
        _ => (5, "DEBUG"),
    }
}

/// What a message is.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    OomKill {
        pid: i64,
        name: String,
        attrs: Vec<KeyValue>,
    },
    OomMemcg {
        pid: i64,
        name: String,
        task_memcg: String,
        oom_memcg: String,
    },
    TaskHung {
        pid: i64,
        name: String,
        seconds: i64,
    },
    ReadonlyFs {
        device: String,
        fs: String,
    },
    Segfault {
        pid: i64,
        name: String,
    },
    Oops,
    Bug,
    Panic,
}

fn between<'a>(s: &'a str, start: &str, end: char) -> Option<&'a str> {
    let i = s.find(start)? + start.len();
    let rest = &s[i..];
    Some(&rest[..rest.find(end).unwrap_or(rest.len())])
}

fn num(s: &str) -> Option<i64> {
    s.trim().parse().ok()
}

/// Classify one message line.
pub fn classify(msg: &str) -> Option<Event> {
    if let Some(pos) = msg.find("Killed process ") {
        // "Out of memory: Killed process 123 (name) total-vm:1kB, anon-rss:2kB, ..."
        let rest = &msg[pos + "Killed process ".len()..];
        let pid = num(rest.split(' ').next()?)?;
        let open = rest.find('(')?;
        let close = rest[open..].find(')')? + open;
        let name = rest[open + 1..close].to_string();
        let mut attrs = Vec::new();
        for part in rest[close + 1..]
            .split([',', ' '])
            .filter(|p| !p.is_empty())
        {
            let Some((k, v)) = part.split_once(':') else {
                continue;
            };
            let v = v.trim_end_matches("kB");
            let Some(n) = num(v) else { continue };
            let key = match k {
                "total-vm" => "linux.oom.total_vm_kb",
                "anon-rss" => "linux.oom.anon_rss_kb",
                "file-rss" => "linux.oom.file_rss_kb",
                "shmem-rss" => "linux.oom.shmem_rss_kb",
                "UID" => "process.user.id",
                "pgtables" => "linux.oom.pgtables_kb",
                "oom_score_adj" => "linux.oom.score_adj",
                _ => continue,
            };
            attrs.push(KeyValue::i64(key, n));
        }
        return Some(Event::OomKill { pid, name, attrs });
    }
    if let Some(rest) = msg.strip_prefix("oom-kill:") {
        let mut task_memcg = String::new();
        let mut oom_memcg = String::new();
        let mut name = String::new();
        let mut pid = None;
        for kv in rest.split(',') {
            match kv.split_once('=') {
                Some(("task_memcg", v)) => task_memcg = v.to_string(),
                Some(("oom_memcg", v)) => oom_memcg = v.to_string(),
                Some(("task", v)) => name = v.to_string(),
                Some(("pid", v)) => pid = num(v),
                _ => {}
            }
        }
        return Some(Event::OomMemcg {
            pid: pid?,
            name,
            task_memcg,
            oom_memcg,
        });
    }
    if let Some(rest) = msg.strip_prefix("INFO: task ")
        && let Some(i) = rest.find(" blocked for more than ")
    {
        let (task, tail) = (&rest[..i], &rest[i + " blocked for more than ".len()..]);
        let (name, pid) = task.rsplit_once(':')?;
        return Some(Event::TaskHung {
            pid: num(pid)?,
            name: name.to_string(),
            seconds: num(tail.split(' ').next()?).unwrap_or(0),
        });
    }
    let lower_ro = msg.contains("read-only") || msg.contains("readonly");
    if lower_ro {
        for fs in ["EXT4-fs", "EXT3-fs", "EXT2-fs", "XFS", "BTRFS", "F2FS-fs"] {
            if msg.starts_with(fs) {
                let device = between(msg, "(device ", ')')
                    .or_else(|| between(msg, "(", ')'))
                    .unwrap_or("")
                    .to_string();
                return Some(Event::ReadonlyFs {
                    device,
                    fs: fs.trim_end_matches("-fs").to_ascii_lowercase(),
                });
            }
        }
    }
    if let Some(i) = msg.find("]: segfault at ") {
        let head = &msg[..i];
        let (name, pid) = head.rsplit_once('[')?;
        return Some(Event::Segfault {
            pid: num(pid)?,
            name: name.to_string(),
        });
    }
    if msg.starts_with("Kernel panic - not syncing") {
        return Some(Event::Panic);
    }
    if msg.starts_with("BUG: ") || msg.starts_with("kernel BUG at ") {
        return Some(Event::Bug);
    }
    if msg.starts_with("Oops: ") || msg.contains("general protection fault") {
        return Some(Event::Oops);
    }
    None
}

/// Is this line part of a call stack?
pub fn is_stack_line(msg: &str) -> bool {
    let t = msg.trim();
    t == "<TASK>"
        || t == "</TASK>"
        || t == "<IRQ>"
        || t == "</IRQ>"
        || (msg.starts_with(' ') && t.contains("+0x") && t.contains('/'))
}

struct Pending {
    rec: Record,
    since: Instant,
    in_trace: bool,
    prelude: usize,
    stack: Vec<String>,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct KmsgStats {
    pub records: u64,
    pub events: u64,
    pub parse_errors: u64,
    /// Records overwritten before they were read (EPIPE).
    pub overwritten: u64,
    pub skipped_resumed: u64,
}

/// Turns kmsg records into event log records.
pub struct KmsgParser {
    pub boot_time_ns: u64,
    pub resume_after: Option<u64>,
    pub resource: Vec<KeyValue>,
    pending: Option<Pending>,
    /// pid → (container id, pod uid) from the oom-kill line, for the Killed process line.
    memcg: HashMap<i64, (Option<String>, Option<String>, String)>,
    pub stats: KmsgStats,
}

impl KmsgParser {
    pub fn new(resource: Vec<KeyValue>, boot_time_ns: u64, resume_after: Option<u64>) -> Self {
        KmsgParser {
            boot_time_ns,
            resume_after,
            resource,
            pending: None,
            memcg: HashMap::new(),
            stats: KmsgStats::default(),
        }
    }

    fn log(&self, r: &KmsgRecord<'_>, event: &str, msg: &str, mut attrs: Vec<KeyValue>) -> Record {
        let (sev, text) = severity(r.level);
        attrs.push(KeyValue::i64(ATTR_KMSG_SEQ, crate::util::i(r.seq)));
        attrs.push(KeyValue::i64("linux.kmsg.facility", i64::from(r.facility)));
        Record::Log {
            resource: self.resource.clone(),
            log: LogRecord {
                time_unix_nano: self
                    .boot_time_ns
                    .saturating_add(r.ts_usec.saturating_mul(1000)),
                observed_time_unix_nano: crate::util::now_unix_nano(),
                severity_number: sev,
                severity_text: text.into(),
                event_name: event.into(),
                body: msg.to_string(),
                attributes: attrs,
            },
        }
    }

    fn flush(&mut self, out: &mut Vec<Record>) {
        if let Some(mut p) = self.pending.take() {
            if !p.stack.is_empty()
                && let Record::Log { log, .. } = &mut p.rec
            {
                log.attributes.push(KeyValue {
                    key: "exception.stacktrace".into(),
                    value: AttrValue::Str(p.stack.join("\n")),
                });
            }
            self.stats.events += 1;
            out.push(p.rec);
        }
    }

    /// Emit an event still waiting for its stack once its window has passed.
    pub fn flush_expired(&mut self, now: Instant, out: &mut Vec<Record>) {
        if self
            .pending
            .as_ref()
            .is_some_and(|p| now.duration_since(p.since) >= STACK_WINDOW)
        {
            self.flush(out);
        }
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.pending.as_ref().map(|p| p.since + STACK_WINDOW)
    }

    /// One raw record as read from /dev/kmsg.
    pub fn feed(&mut self, raw: &[u8], out: &mut Vec<Record>) {
        let r = match parse_record(raw) {
            Ok(r) => r,
            Err(_) => {
                self.stats.parse_errors += 1;
                return;
            }
        };
        self.stats.records += 1;
        if self.resume_after.is_some_and(|s| r.seq <= s) {
            self.stats.skipped_resumed += 1;
            return;
        }
        let msg = String::from_utf8_lossy(r.message);
        let msg = msg.as_ref();
        // Stack lines of the pending event.
        if let Some(p) = &mut self.pending {
            if msg.trim() == "Call Trace:" {
                p.in_trace = true;
                return;
            }
            if p.in_trace && is_stack_line(msg) {
                if p.stack.len() < MAX_STACK_LINES {
                    p.stack.push(msg.trim().to_string());
                }
                return;
            }
            if !p.in_trace && p.prelude < MAX_PRELUDE_LINES && classify(msg).is_none() {
                p.prelude += 1;
                return;
            }
            self.flush(out);
        }
        let Some(ev) = classify(msg) else { return };
        let (rec, wants_stack) = match ev {
            Event::OomKill {
                pid,
                name,
                mut attrs,
            } => {
                attrs.push(KeyValue::i64("process.pid", pid));
                attrs.push(KeyValue::str("process.executable.name", name));
                if let Some((cid, pod, memcg)) = self.memcg.remove(&pid) {
                    attrs.push(KeyValue::str("linux.oom.task_memcg", memcg));
                    if let Some(c) = cid {
                        attrs.push(KeyValue::str("container.id", c));
                    }
                    if let Some(p) = pod {
                        attrs.push(KeyValue::str("k8s.pod.uid", p));
                    }
                }
                (self.log(&r, "OOMKilling", msg, attrs), false)
            }
            Event::OomMemcg {
                pid,
                name,
                task_memcg,
                oom_memcg,
            } => {
                let id = identify(&task_memcg);
                if self.memcg.len() > 1024 {
                    self.memcg.clear();
                }
                self.memcg.insert(
                    pid,
                    (
                        id.container_id.clone(),
                        id.pod_uid.clone(),
                        task_memcg.clone(),
                    ),
                );
                let Some(pod) = id.pod_uid else { return };
                let mut attrs = vec![
                    KeyValue::i64("process.pid", pid),
                    KeyValue::str("process.executable.name", name),
                    KeyValue::str("k8s.pod.uid", pod),
                    KeyValue::str("linux.oom.task_memcg", task_memcg),
                    KeyValue::str("linux.oom.oom_memcg", oom_memcg),
                ];
                if let Some(c) = id.container_id {
                    attrs.push(KeyValue::str("container.id", c));
                }
                (self.log(&r, "PodOOMKilling", msg, attrs), false)
            }
            Event::TaskHung { pid, name, seconds } => {
                let a = vec![
                    KeyValue::i64("process.pid", pid),
                    KeyValue::str("process.executable.name", name),
                    KeyValue::i64("linux.task.blocked_seconds", seconds),
                ];
                (self.log(&r, "TaskHung", msg, a), true)
            }
            Event::ReadonlyFs { device, fs } => {
                let a = vec![
                    KeyValue::str("system.device", device),
                    KeyValue::str("system.filesystem.type", fs),
                ];
                (self.log(&r, "ReadonlyFilesystem", msg, a), false)
            }
            Event::Segfault { pid, name } => {
                let a = vec![
                    KeyValue::i64("process.pid", pid),
                    KeyValue::str("process.executable.name", name),
                ];
                (self.log(&r, "Segfault", msg, a), false)
            }
            Event::Oops => (self.log(&r, "KernelOops", msg, Vec::new()), true),
            Event::Bug => (self.log(&r, "KernelBug", msg, Vec::new()), true),
            Event::Panic => (self.log(&r, "KernelPanic", msg, Vec::new()), true),
        };
        if wants_stack {
            self.pending = Some(Pending {
                rec,
                since: Instant::now(),
                in_trace: false,
                prelude: 0,
                stack: Vec::new(),
            });
        } else {
            self.stats.events += 1;
            out.push(rec);
        }
    }
}

/// The /dev/kmsg descriptor in the event loop.
pub struct KmsgSource {
    fd: OwnedFd,
    buf: Vec<u8>,
    pub parser: KmsgParser,
}

impl KmsgSource {
    pub fn new(fd: OwnedFd, parser: KmsgParser) -> Self {
        KmsgSource {
            fd,
            buf: vec![0; 16 * 1024],
            parser,
        }
    }
}

impl crate::event_loop::Source for KmsgSource {
    fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn on_readable(&mut self, out: &mut Vec<Record>) {
        for _ in 0..READ_BUDGET {
            match nix::unistd::read(&self.fd, &mut self.buf) {
                Ok(0) => break,
                Ok(n) => {
                    let rec = self.buf[..n].to_vec();
                    self.parser.feed(&rec, out);
                }
                Err(nix::errno::Errno::EPIPE) => self.parser.stats.overwritten += 1,
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => break,
            }
        }
    }

    fn on_tick(&mut self, now: Instant, out: &mut Vec<Record>) {
        self.parser.flush_expired(now, out);
    }

    fn deadline(&self) -> Option<Instant> {
        self.parser.deadline()
    }

    fn counters(&self) -> Vec<(String, u64)> {
        let s = self.parser.stats;
        vec![
            ("kmsg_records".into(), s.records),
            ("kmsg_events".into(), s.events),
            ("kmsg_parse_errors".into(), s.parse_errors),
            ("kmsg_overwritten".into(), s.overwritten),
            ("kmsg_skipped_resumed".into(), s.skipped_resumed),
        ]
    }
}
