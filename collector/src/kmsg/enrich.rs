//! vigil's richer parses of the lines NPD only names: the OOM kill's numbers and memory cgroup
//! (→ container id and pod UID), the hung or locked-up task, the device of a filesystem error,
//! the interface a netdevice waits for, the CPU of a machine check. Keyed by event name, so a
//! user's rule with the same reason gets the same attributes. Nothing here can fail: a field
//! that does not parse is left out.

use vigil_ipc_proto::KeyValue;

use crate::cgroups::identify;

fn between<'a>(s: &'a str, start: &str, end: char) -> Option<&'a str> {
    let i = s.find(start)? + start.len();
    let rest = &s[i..];
    Some(&rest[..rest.find(end)?])
}

fn num(s: &str) -> Option<i64> {
    s.trim().parse().ok()
}

fn pid_name(pid: Option<i64>, name: Option<&str>, out: &mut Vec<KeyValue>) {
    if let Some(p) = pid {
        out.push(KeyValue::i64("process.pid", p));
    }
    if let Some(n) = name.filter(|n| !n.is_empty()) {
        out.push(KeyValue::str("process.executable.name", n));
    }
}

/// Attributes of an event named `reason` parsed from its (trimmed) line.
pub fn enrich(reason: &str, msg: &str, out: &mut Vec<KeyValue>) {
    match reason {
        "OOMKilling" => oom_kill(msg, out),
        "PodOOMKilling" => {
            if let Some(m) = OomContext::parse(msg) {
                m.attributes(out);
            }
        }
        "TaskHung" | "DockerHung" => task_hung(msg, out),
        "FilesystemIsReadOnly" => readonly(msg, out),
        "Ext4Error" | "Ext4Warning" => {
            device(between(msg, "(device ", ')'), out);
            out.push(KeyValue::str("system.filesystem.type", "ext4"));
        }
        "XfsHasShutdown" => {
            device(between(msg, "XFS (", ')'), out);
            out.push(KeyValue::str("system.filesystem.type", "xfs"));
        }
        "IOError" => {
            let dev = between(msg, "error on dev ", ',').or(between(msg, "error on device ", ','));
            device(dev, out);
            if let Some(b) = between(msg, "logical block ", ',')
                .or_else(|| msg.split("logical block ").nth(1))
                .and_then(num)
            {
                out.push(KeyValue::i64("linux.block.logical", b));
            }
        }
        "UnregisterNetDevice" => {
            if let Some(i) = between(msg, "waiting for ", ' ') {
                out.push(KeyValue::str("network.interface.name", i));
            }
            if let Some(n) = msg.rsplit("Usage count = ").next().and_then(num) {
                out.push(KeyValue::i64("linux.netdevice.refcount", n));
            }
        }
        "Segfault" => segfault(msg, out),
        "SoftLockup" => {
            cpu(between(msg, "CPU#", ' '), out);
            if let Some(s) = between(msg, "stuck for ", 's').and_then(num) {
                out.push(KeyValue::i64("linux.lockup.seconds", s));
            }
            let task = msg.rsplit('[').next().and_then(|t| t.strip_suffix(']'));
            if let Some((name, pid)) = task.and_then(|t| t.rsplit_once(':')) {
                pid_name(num(pid), Some(name), out);
            }
        }
        "HardLockup" => cpu(msg.rsplit(' ').next(), out),
        "MachineCheck" => {
            cpu(between(msg, "CPU ", ':'), out);
            if let Some(b) = between(msg, "Bank ", ':').and_then(num) {
                out.push(KeyValue::i64("linux.mce.bank", b));
            }
        }
        _ => {}
    }
}

fn device(dev: Option<&str>, out: &mut Vec<KeyValue>) {
    if let Some(d) = dev.filter(|d| !d.is_empty()) {
        out.push(KeyValue::str("system.device", d));
    }
}

fn cpu(n: Option<&str>, out: &mut Vec<KeyValue>) {
    if let Some(c) = n.and_then(num) {
        out.push(KeyValue::i64("cpu.logical_number", c));
    }
}

/// "Out of memory: Killed process 123 (name) total-vm:1kB, anon-rss:2kB, file-rss:0kB,
/// shmem-rss:0kB, UID:0 pgtables:4kB oom_score_adj:0" (older kernels stop after file-rss or
/// shmem-rss).
fn oom_kill(msg: &str, out: &mut Vec<KeyValue>) {
    let Some(pos) = msg.find("Killed process ") else {
        return;
    };
    let rest = &msg[pos + "Killed process ".len()..];
    let pid = rest.split(' ').next().and_then(num);
    let (Some(open), Some(close)) = (rest.find('('), rest.find(") ")) else {
        pid_name(pid, None, out);
        return;
    };
    pid_name(pid, rest.get(open + 1..close), out);
    for part in rest[close + 1..]
        .split([',', ' '])
        .filter(|p| !p.is_empty())
    {
        let Some((k, v)) = part.split_once(':') else {
            continue;
        };
        let Some(n) = num(v.trim_end_matches("kB")) else {
            continue;
        };
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
        out.push(KeyValue::i64(key, n));
    }
}

/// The pid the OOM line names (to find its memory cgroup from the summary line before it).
pub fn oom_pid(msg: &str) -> Option<i64> {
    let i = msg.find("Killed process ")? + "Killed process ".len();
    msg[i..].split(' ').next().and_then(num)
}

/// The one-line summary before an OOM kill (Linux >= 4.19): "oom-kill:constraint=...,
/// oom_memcg=/a,task_memcg=/a/b,task=name,pid=123,uid=0".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OomContext {
    pub pid: i64,
    pub name: String,
    pub task_memcg: String,
    pub oom_memcg: String,
}

impl OomContext {
    pub fn parse(msg: &str) -> Option<OomContext> {
        let rest = msg.strip_prefix("oom-kill:")?;
        let mut c = OomContext {
            pid: 0,
            name: String::new(),
            task_memcg: String::new(),
            oom_memcg: String::new(),
        };
        let mut pid = None;
        for kv in rest.split(',') {
            match kv.split_once('=') {
                Some(("task_memcg", v)) => c.task_memcg = v.to_string(),
                Some(("oom_memcg", v)) => c.oom_memcg = v.to_string(),
                Some(("task", v)) => c.name = v.to_string(),
                Some(("pid", v)) => pid = num(v),
                _ => {}
            }
        }
        c.pid = pid?;
        Some(c)
    }

    /// The process, its memory cgroups, and the container and pod they belong to.
    pub fn attributes(&self, out: &mut Vec<KeyValue>) {
        pid_name(Some(self.pid), Some(&self.name), out);
        self.cgroup_attributes(out);
        if !self.oom_memcg.is_empty() {
            out.push(KeyValue::str(
                "linux.oom.oom_memcg",
                self.oom_memcg.as_str(),
            ));
        }
    }

    /// The task's memory cgroup and what it identifies (for the OOMKilling event).
    pub fn cgroup_attributes(&self, out: &mut Vec<KeyValue>) {
        if self.task_memcg.is_empty() {
            return;
        }
        out.push(KeyValue::str(
            "linux.oom.task_memcg",
            self.task_memcg.as_str(),
        ));
        let id = identify(&self.task_memcg);
        if let Some(c) = id.container_id {
            out.push(KeyValue::str("container.id", c));
        }
        if let Some(p) = id.pod_uid {
            out.push(KeyValue::str("k8s.pod.uid", p));
        }
    }
}

/// "INFO: task kworker/0:1:123 blocked for more than 120 seconds." (the name may hold ':'
/// and spaces).
fn task_hung(msg: &str, out: &mut Vec<KeyValue>) {
    let Some(i) = msg.find(" blocked for more than ") else {
        return;
    };
    // "task " before that phrase only: a later one (another "task " further in the line)
    // would make the range run backwards.
    let head = &msg[..i];
    let task = &head[head.find("task ").map_or(0, |t| t + 5)..];
    if let Some((name, pid)) = task.rsplit_once(':') {
        pid_name(num(pid), Some(name), out);
    }
    let secs = msg[i + " blocked for more than ".len()..].split(' ').next();
    if let Some(s) = secs.and_then(num) {
        out.push(KeyValue::i64("linux.task.blocked_seconds", s));
    }
}

/// "EXT4-fs (sdb1): Remounting filesystem read-only", "BTRFS info (device vdc): forced
/// readonly".
fn readonly(msg: &str, out: &mut Vec<KeyValue>) {
    let dev = between(msg, "(device ", ')').or_else(|| between(msg, "(", ')'));
    device(dev.map(|d| d.split(' ').next().unwrap_or(d)), out);
    let fs = msg.split([' ', '(']).next().unwrap_or_default();
    let fs = fs.trim_end_matches("-fs").to_ascii_lowercase();
    if !fs.is_empty() {
        out.push(KeyValue::str("system.filesystem.type", fs));
    }
}

/// "name[123]: segfault at 0 ip ... sp ... error 6 in name[...]", "traps: name[123] general
/// protection fault ip:... sp:... error:0".
fn segfault(msg: &str, out: &mut Vec<KeyValue>) {
    let head = match msg.find("]: segfault at ") {
        Some(i) => &msg[..i],
        None => match msg.find("] general protection fault") {
            Some(i) => msg[..i].strip_prefix("traps: ").unwrap_or(&msg[..i]),
            None => return,
        },
    };
    if let Some((name, pid)) = head.rsplit_once('[') {
        pid_name(num(pid), Some(name), out);
    }
    if let Some(a) = between(msg, "segfault at ", ' ') {
        out.push(KeyValue::str("linux.fault.address", a));
    }
}

/// The task an oops, warning or lockup happened in, from its "CPU: 1 UID: 0 PID: 42 Comm:
/// bash Not tainted ..." line (Linux < 6.12 without "UID:").
pub fn cpu_line(msg: &str, out: &mut Vec<KeyValue>) -> bool {
    let Some(rest) = msg.strip_prefix("CPU: ") else {
        return false;
    };
    let pid = between(rest, "PID: ", ' ').and_then(num);
    let comm = rest
        .find(" Comm: ")
        .map(|i| &rest[i + 7..])
        .map(|c| c.split(" Not tainted").next().unwrap_or(c))
        .map(|c| c.split(" Tainted:").next().unwrap_or(c).trim());
    if pid.is_none() {
        return false;
    }
    cpu(rest.split(' ').next(), out);
    pid_name(pid, comm, out);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_ipc_proto::AttrValue;

    fn attrs(reason: &str, msg: &str) -> Vec<(String, AttrValue)> {
        let mut v = Vec::new();
        enrich(reason, msg, &mut v);
        v.into_iter().map(|kv| (kv.key, kv.value)).collect()
    }

    fn get<'a>(a: &'a [(String, AttrValue)], k: &str) -> Option<&'a AttrValue> {
        a.iter().find(|(x, _)| x == k).map(|(_, v)| v)
    }

    #[test]
    fn oom_every_kernel_generation() {
        for line in [
            "Killed process 1012 (heapster) total-vm:327128kB, anon-rss:306328kB, file-rss:11132kB",
            "Killed process 1012 (heapster) total-vm:327128kB, anon-rss:306328kB, file-rss:11132kB, shmem-rss:12345kB",
            "Memory cgroup out of memory: Killed process 1012 (heapster) total-vm:327128kB, anon-rss:306328kB, file-rss:11132kB, shmem-rss:0kB, UID:0 pgtables:244kB oom_score_adj:-997",
        ] {
            let a = attrs("OOMKilling", line);
            assert_eq!(get(&a, "process.pid"), Some(&AttrValue::I64(1012)));
            assert_eq!(
                get(&a, "process.executable.name"),
                Some(&AttrValue::Str("heapster".into()))
            );
            assert_eq!(
                get(&a, "linux.oom.anon_rss_kb"),
                Some(&AttrValue::I64(306328))
            );
        }
        let a = attrs(
            "OOMKilling",
            "Out of memory: Killed process 7 (a b) total-vm:1kB, anon-rss:2kB, file-rss:0kB, shmem-rss:0kB, UID:1000 pgtables:4kB oom_score_adj:-997",
        );
        assert_eq!(
            get(&a, "process.executable.name"),
            Some(&AttrValue::Str("a b".into()))
        );
        assert_eq!(get(&a, "linux.oom.score_adj"), Some(&AttrValue::I64(-997)));
        assert_eq!(get(&a, "process.user.id"), Some(&AttrValue::I64(1000)));
    }

    /// Found by the `kmsg` fuzz target (fuzz/regressions/kmsg/): a "task " only after
    /// " blocked for more than " sliced the line backwards, a panic of the collector.
    #[test]
    fn task_hung_with_task_after_the_phrase() {
        let a = attrs(
            "TaskHung",
            "INFO: x blocked for more than 120 seconds; task kworker/0:1:42",
        );
        assert_eq!(get(&a, "process.pid"), None);
        assert_eq!(
            get(&a, "linux.task.blocked_seconds"),
            Some(&AttrValue::I64(120))
        );
        let a = attrs(
            "TaskHung",
            "a blocked for more than 1 task b:7 blocked for more than 120 seconds.",
        );
        assert_eq!(
            get(&a, "linux.task.blocked_seconds"),
            Some(&AttrValue::I64(1))
        );
    }

    #[test]
    fn tasks_devices_cpus() {
        let a = attrs(
            "TaskHung",
            "INFO: task kworker/0:1:123 blocked for more than 120 seconds.",
        );
        assert_eq!(get(&a, "process.pid"), Some(&AttrValue::I64(123)));
        assert_eq!(
            get(&a, "process.executable.name"),
            Some(&AttrValue::Str("kworker/0:1".into()))
        );
        let a = attrs(
            "Ext4Error",
            "EXT4-fs error (device sda1): ext4_journal_check_start:83: comm rm: Detected aborted journal",
        );
        assert_eq!(
            get(&a, "system.device"),
            Some(&AttrValue::Str("sda1".into()))
        );
        let a = attrs(
            "IOError",
            "Buffer I/O error on dev dm-0, logical block 1234, lost async page write",
        );
        assert_eq!(
            get(&a, "system.device"),
            Some(&AttrValue::Str("dm-0".into()))
        );
        assert_eq!(get(&a, "linux.block.logical"), Some(&AttrValue::I64(1234)));
        let a = attrs("IOError", "Buffer I/O error on device sdb, logical block 7");
        assert_eq!(
            get(&a, "system.device"),
            Some(&AttrValue::Str("sdb".into()))
        );
        assert_eq!(get(&a, "linux.block.logical"), Some(&AttrValue::I64(7)));
        let a = attrs(
            "SoftLockup",
            "watchdog: BUG: soft lockup - CPU#3 stuck for 23s! [stress-ng:4242]",
        );
        assert_eq!(get(&a, "cpu.logical_number"), Some(&AttrValue::I64(3)));
        assert_eq!(get(&a, "process.pid"), Some(&AttrValue::I64(4242)));
        assert_eq!(get(&a, "linux.lockup.seconds"), Some(&AttrValue::I64(23)));
        let a = attrs(
            "UnregisterNetDevice",
            "unregister_netdevice: waiting for eth0 to become free. Usage count = 2",
        );
        assert_eq!(
            get(&a, "network.interface.name"),
            Some(&AttrValue::Str("eth0".into()))
        );
        let a = attrs(
            "FilesystemIsReadOnly",
            "BTRFS info (device vdc state EA): forced readonly",
        );
        assert_eq!(
            get(&a, "system.device"),
            Some(&AttrValue::Str("vdc".into()))
        );
        assert_eq!(
            get(&a, "system.filesystem.type"),
            Some(&AttrValue::Str("btrfs".into()))
        );
        let a = attrs(
            "Segfault",
            "traps: a.out[77] general protection fault ip:4005d6 sp:7ffc2b0e9a10 error:0 in a.out[400000+1000]",
        );
        assert_eq!(get(&a, "process.pid"), Some(&AttrValue::I64(77)));
        let mut v = Vec::new();
        assert!(cpu_line(
            "CPU: 1 UID: 0 PID: 1234 Comm: bash Not tainted 6.18.0 #1 PREEMPT(voluntary)",
            &mut v
        ));
        assert!(
            v.iter().any(|kv| kv.key == "process.executable.name"
                && kv.value == AttrValue::Str("bash".into()))
        );
        v.clear();
        assert!(cpu_line(
            "CPU: 11 PID: 63 Comm: ksoftirqd/11 Tainted: G         C    3.16.0-4-amd64 #1",
            &mut v
        ));
        assert!(v.iter().any(|kv| kv.key == "process.executable.name"
            && kv.value == AttrValue::Str("ksoftirqd/11".into())));
    }
}
