//! One kernel incident is one event. An oops, a BUG, a warning, a hung task, a lockup, an RCU
//! stall or an OOM kill prints a head line and then tens of lines of detail: `#PF:` lines, the
//! `Oops:` die header, `CPU: ... Comm:`, registers, `Call Trace:` and its frames, `---[ end
//! trace ]---`, the registers again. While an incident is open those lines are absorbed into
//! it (frames become `exception.stacktrace`, the `CPU:` line the process), instead of each
//! becoming a plain log line or, for the die header, a second event.
//!
//! An incident stays open while detail lines keep coming: at most [`WINDOW_US`] of kernel time
//! after its head, [`MAX_LINES`] lines, and [`IDLE`] of wall time without a line.

use std::time::{Duration, Instant};

use regex::{Regex, RegexSet};
use vigil_ipc_proto::{AttrValue, KeyValue, Record};

use super::enrich::cpu_line;
use super::rules::go_classes;

/// Frames kept per event.
pub const MAX_STACK_LINES: usize = 64;
/// Lines an incident absorbs at most.
pub const MAX_LINES: u32 = 512;
/// Kernel time after the head within which detail lines belong to it.
pub const WINDOW_US: u64 = 5_000_000;
/// Wall time without a line after which the incident is shipped.
pub const IDLE: Duration = Duration::from_millis(500);

/// Events that open an incident.
pub const INCIDENT_EVENTS: &[&str] = &[
    "KernelOops",
    "KernelBug",
    "KernelWarning",
    "KernelPanic",
    "TaskHung",
    "SoftLockup",
    "HardLockup",
    "RcuStall",
    "MachineCheck",
];

/// Does this line open an OOM report, before its "Killed process" line: "python3 invoked
/// oom-killer: gfp_mask=...", or (before Linux 5.0 without it) "Memory cgroup out of memory:
/// Kill process 1012 (heapster) score 1035 or sacrifice child"?
pub fn is_oom_report(msg: &str) -> bool {
    msg.contains(" invoked oom-killer: ")
        || (msg.contains(": Kill process ") && msg.ends_with(" or sacrifice child"))
}

/// Lines an incident absorbs: frames and the detail the kernel prints around them.
const DETAIL: &[&str] = &[
    // Indented: frames, "      Not tainted ...", hung-task and RCU continuation lines.
    r"^\s",
    r"^(?:Call [Tt]race|Stack|Code|Modules linked in|Hardware name|Workqueue|Tainted|task|IP|Mem abort info|Data abort info|Internal error|Kernel Offset|irq event stamp|Showing all locks held in the system|Unloaded tainted modules)\s*:",
    r"^(?:#PF|PGD|P4D|PUD|PMD|PTE|CPU|RIP|RSP|FS|GS|CS|DS|ES|CR[0-4]|DR[0-7]|PKRU|R[A-Z0-9]{1,2}|ESR|EC|FAR|pc|lr|sp|x\d{1,2}|pstate)\s*[: \[<]",
    r"^(?:\? )?[\w.$]+\+0x[0-9a-f]+/0x[0-9a-f]+",
    r"^</?(?:TASK|IRQ|NMI|SOFTIRQ|EOI)>",
    r"^\[<[0-9a-f]+>\]",
    r"^---\[ end ",
    r"^-+\[ cut here \]-+$",
    r#"^"echo 0 > /proc/sys/kernel/hung_task_timeout_secs""#,
    r"^(?:INFO: task .* is blocked on |INFO: lockdep is turned off|Sending NMI from CPU|NMI backtrace for cpu|Future hung task reports|note: |softirqs last|hardirqs last|Oops: |rcu: |\(detected by )",
    r"\[Hardware Error\]: ",
    // The OOM report: memory state and the task table.
    r"^(?:Mem-Info|Tasks state|Memory cgroup|memory:|memory\+swap:|swap:|kmem:|oom-kill:|Out of memory|Node \d|lowmem_reserve|Free swap|Total swap|\d+ (?:total pagecache pages|pages)|\[ *(?:pid|\d+) *\]|active_anon:|(?:DMA|Normal|DMA32|Movable)(?:32)?\s|oom_reaper:|Kill process \d+ )",
    r"^[a-z_]+ \d+$",
];

/// A die header (`Oops: 0002 [#1]`, `Oops: divide error: 0000 [#1] SMP`, `general protection
/// fault, ...: 0000 [#1]`, `invalid opcode: 0000 [#1]`): part of the oops or BUG before it.
const DIE_HEADER: &str = r"^(?:Internal error: )?(?:Oops: )?[\w ,.()-]*?: [0-9a-f]{4,16} \[#\d+\]";

/// Compiled once per parser.
pub struct Detail {
    lines: RegexSet,
    die: Regex,
}

impl Detail {
    pub fn new() -> Detail {
        Detail {
            // ASCII classes, as the rules' patterns (smaller automata).
            lines: RegexSet::new(DETAIL.iter().map(|p| go_classes(p)))
                .expect("detail patterns are constants"),
            die: Regex::new(&go_classes(DIE_HEADER)).expect("die header pattern is a constant"),
        }
    }

    pub fn is_detail(&self, msg: &str) -> bool {
        self.lines.is_match(msg)
    }

    pub fn is_die_header(&self, msg: &str) -> bool {
        self.die.is_match(msg)
    }

    /// `------------[ cut here ]------------`: says nothing by itself (a WARN or BUG follows).
    pub fn is_cut_here(&self, msg: &str) -> bool {
        msg.starts_with("---") && msg.contains("[ cut here ]")
    }
}

impl Default for Detail {
    fn default() -> Self {
        Detail::new()
    }
}

/// An open incident: its event (none yet for an OOM report before its "Killed process" line),
/// what it absorbed so far.
pub struct Incident {
    pub event: Option<Record>,
    head_ts: u64,
    last: Instant,
    lines: u32,
    in_trace: bool,
    /// Past its `---[ end trace ... ]---`: a die header now is another oops.
    ended: bool,
    stack: Vec<String>,
    task: Vec<KeyValue>,
}

impl Incident {
    pub fn new(event: Option<Record>, head_ts: u64, now: Instant) -> Incident {
        Incident {
            event,
            head_ts,
            last: now,
            lines: 0,
            in_trace: false,
            ended: false,
            stack: Vec::new(),
            task: Vec::new(),
        }
    }

    pub fn is_oom_report(&self) -> bool {
        self.event.is_none()
    }

    /// Does a die header belong to this incident: an oops or BUG not yet at its end?
    pub fn takes_die_header(&self) -> bool {
        !self.ended && matches!(self.name(), "KernelOops" | "KernelBug")
    }

    /// The event's name ("" for an OOM report).
    pub fn name(&self) -> &str {
        match &self.event {
            Some(Record::Log { log, .. }) => &log.event_name,
            _ => "",
        }
    }

    pub fn deadline(&self) -> Instant {
        self.last + IDLE
    }

    /// Still open for a line at kernel time `ts`?
    pub fn open_at(&self, ts: u64, now: Instant) -> bool {
        self.lines < MAX_LINES
            && ts.saturating_sub(self.head_ts) <= WINDOW_US
            && now < self.deadline()
    }

    /// Take one detail line (raw message, untrimmed).
    pub fn absorb(&mut self, msg: &str, now: Instant) {
        self.lines += 1;
        self.last = now;
        let t = msg.trim();
        if t.eq_ignore_ascii_case("call trace:") {
            self.in_trace = true;
            return;
        }
        if self.task.is_empty() && cpu_line(t, &mut self.task) {
            return;
        }
        if t.starts_with("---[ end trace") || t.starts_with("Modules linked in:") {
            self.in_trace = false;
            self.ended |= t.starts_with("---[ end trace");
        } else if self.in_trace && is_stack_line(t) && self.stack.len() < MAX_STACK_LINES {
            self.stack.push(t.to_string());
        }
    }

    /// The frames absorbed so far, handed to the OOM kill that ends a report.
    pub fn take_stack(&mut self) -> Vec<String> {
        std::mem::take(&mut self.stack)
    }

    /// The event with its stack and, when the head did not name it, its task.
    pub fn finish(self) -> Option<Record> {
        let mut rec = self.event?;
        if let Record::Log { log, .. } = &mut rec {
            attach(&mut log.attributes, self.stack);
            for kv in self.task {
                if !log.attributes.iter().any(|a| a.key == kv.key) {
                    log.attributes.push(kv);
                }
            }
            log.attributes
                .push(KeyValue::i64("linux.kmsg.lines", i64::from(self.lines) + 1));
        }
        Some(rec)
    }
}

/// `exception.stacktrace`: the frames, one per line.
pub fn attach(attrs: &mut Vec<KeyValue>, stack: Vec<String>) {
    if !stack.is_empty() {
        attrs.push(KeyValue {
            key: "exception.stacktrace".into(),
            value: AttrValue::Str(stack.join("\n")),
        });
    }
}

/// Is this line a frame of a call trace (`func+0x1/0x2 [mod]`, `? func+...`, `<TASK>`,
/// `[<ffffffff81512d45>] ? func+0x1d5/0x320`)? Register lines (`RIP: 0010:func+0x16/0x20`)
/// are not.
pub fn is_stack_line(msg: &str) -> bool {
    let t = msg.trim();
    if matches!(
        t,
        "<TASK>" | "</TASK>" | "<IRQ>" | "</IRQ>" | "<NMI>" | "</NMI>" | "<SOFTIRQ>" | "</SOFTIRQ>"
    ) {
        return true;
    }
    let t = t.strip_prefix("? ").unwrap_or(t);
    let t = match t.strip_prefix("[<") {
        Some(r) => r.split_once(">] ").map_or("", |(_, r)| r),
        None => t,
    };
    let t = t.strip_prefix("? ").unwrap_or(t);
    let sym = t.split(' ').next().unwrap_or_default();
    sym.contains("+0x") && sym.contains('/') && !sym.contains(':')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detail_lines() {
        let d = Detail::new();
        for l in [
            "#PF: supervisor write access in kernel mode",
            "PGD 0 P4D 0 ",
            "CPU: 1 UID: 0 PID: 1 Comm: bash Not tainted 6.18.0 #1",
            "RIP: 0010:sysrq_handle_crash+0x16/0x20",
            "RAX: 0000000000000000 RBX: ffff888100000000 RCX: 0000000000000000",
            "R10: 0000000000000000 R11: 0000000000000000 R12: 0000000000000000",
            "CS:  0010 DS: 0000 ES: 0000 CR0: 0000000080050033",
            "Call Trace:",
            " <TASK>",
            " ? __die+0x23/0x70",
            " [<ffffffff81512d45>] ? rwsem_down_write_failed+0x1d5/0x320",
            "Modules linked in: xt_conntrack nft_chain_nat",
            "---[ end trace 0000000000000000 ]---",
            "------------[ cut here ]------------",
            "      Tainted: G         C    3.16.0-4-amd64 #1",
            "\"echo 0 > /proc/sys/kernel/hung_task_timeout_secs\" disables this message.",
            "task:kworker/0:1     state:D stack:0     pid:123   tgid:123   ppid:2      flags:0x00004000",
            "Mem-Info:",
            "[  pid  ]   uid  tgid total_vm      rss pgtables_bytes swapents oom_score_adj name",
            "rcu: \\x093-...!: (0 ticks this GP) idle=d64c/1/0x4000000000000000",
            "mce: [Hardware Error]: TSC 0 ADDR 1234 MISC 0",
        ] {
            assert!(d.is_detail(l), "{l}");
        }
        for l in [
            "eth0: link up",
            "EXT4-fs (sda1): mounted filesystem",
            "usb 1-1: new device",
        ] {
            assert!(!d.is_detail(l), "{l}");
        }
        for l in [
            "Oops: 0002 [#1] PREEMPT SMP NOPTI",
            "Oops: Oops: 0002 [#1] SMP NOPTI",
            "Oops: divide error: 0000 [#1] PREEMPT SMP NOPTI",
            "divide error: 0000 [#1] SMP",
            "invalid opcode: 0000 [#1] SMP",
            "Oops: general protection fault, probably for non-canonical address 0xdffffc0000000000: 0000 [#1] SMP KASAN NOPTI",
            "Internal error: Oops: 0000000096000005 [#1] PREEMPT SMP",
        ] {
            assert!(d.is_die_header(l), "{l}");
        }
    }
}
