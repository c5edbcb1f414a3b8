//! The kernel-line pipeline on the kernel's own output: records in the /dev/kmsg format as the
//! kernel writes them (formats read from the kernel sources, old and new, and from
//! node-problem-detector's test data), hostile input, proptest; and one real /dev/kmsg read.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use vigil_collector::kmsg::{KmsgOptions, KmsgParser, RuleSet, monotonic_us, parse_record};
use vigil_collector::util::Stamp;
use vigil_ipc_proto::{AttrValue, MetricValue, Record};

fn attr<'a>(r: &'a Record, k: &str) -> Option<&'a AttrValue> {
    match r {
        Record::Log { log, .. } => log.attributes.iter().find(|a| a.key == k).map(|a| &a.value),
        _ => None,
    }
}

fn s(v: &str) -> Option<AttrValue> {
    Some(AttrValue::Str(v.into()))
}

fn event(r: &Record) -> &str {
    match r {
        Record::Log { log, .. } => &log.event_name,
        _ => "",
    }
}

fn body(r: &Record) -> &str {
    match r {
        Record::Log { log, .. } => &log.body,
        _ => "",
    }
}

/// Feeds `<level>message` lines (the form one writes to /dev/kmsg) as kmsg records with
/// increasing sequence numbers and timestamps of now, then lets every incident close.
struct Feed {
    p: KmsgParser,
    seq: u64,
    ts: u64,
    out: Vec<Record>,
}

impl Feed {
    fn new() -> Feed {
        Feed::with(KmsgParser::new(Vec::new(), 1_000_000_000, None))
    }

    fn with(p: KmsgParser) -> Feed {
        Feed {
            p,
            seq: 100,
            ts: monotonic_us(),
            out: Vec::new(),
        }
    }

    fn raw(&mut self, flag: char, line: &str) {
        let (level, msg) = match line.strip_prefix('<').and_then(|l| l.split_once('>')) {
            Some((l, m)) => (l.parse::<u8>().unwrap(), m),
            None => (4, line),
        };
        self.seq += 1;
        self.ts += 100;
        let rec = format!("{level},{},{},{flag};{msg}", self.seq, self.ts);
        self.p.feed(rec.as_bytes(), &mut self.out);
    }

    fn lines(&mut self, lines: &[&str]) -> &mut Self {
        for l in lines {
            self.raw('-', l);
        }
        self
    }

    /// Everything out, incidents closed.
    fn done(&mut self) -> Vec<Record> {
        self.p
            .flush_expired(Instant::now() + Duration::from_secs(5), &mut self.out);
        std::mem::take(&mut self.out)
    }

    fn metric(&mut self, name: &str, attrs: &[(&str, &str)]) -> Option<i64> {
        let mut out = Vec::new();
        self.p.on_cycle(Stamp { start: 1, now: 2 }, &mut out);
        out.iter().find_map(|r| match r {
            Record::Metrics { metrics, .. } => metrics
                .iter()
                .find(|m| {
                    m.name == name
                        && attrs.iter().all(|(k, v)| {
                            m.attributes
                                .iter()
                                .any(|a| a.key == *k && a.value == AttrValue::Str((*v).into()))
                        })
                })
                .map(|m| match m.value {
                    MetricValue::I64(v) => v,
                    MetricValue::F64(v) => v as i64,
                }),
            _ => None,
        })
    }

    fn problems(&mut self, reason: &str) -> i64 {
        self.metric("vigil.kernel.problems", &[("reason", reason)])
            .unwrap_or(-1)
    }

    fn condition(&mut self, kind: &str, reason: &str) -> i64 {
        self.metric(
            "vigil.kernel.condition",
            &[("type", kind), ("reason", reason)],
        )
        .unwrap_or(-1)
    }
}

fn names(out: &[Record]) -> Vec<&str> {
    out.iter().map(event).collect()
}

const POD: &str = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1b2c3d4e_0000_1111_2222_333344445555.slice/cri-containerd-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.scope";

#[test]
fn record_format() {
    let r = parse_record(b"6,339,5140900,-,more;NET: Registered PF_INET6 protocol family\n SUBSYSTEM=net\n DEVICE=+net:lo\n").unwrap();
    assert_eq!(
        (r.level, r.facility, r.seq, r.ts_usec, r.flag),
        (6, 0, 339, 5140900, b'-')
    );
    assert_eq!(r.message, b"NET: Registered PF_INET6 protocol family");
    assert_eq!(r.dict_value(b"DEVICE"), Some(&b"+net:lo"[..]));
    assert!(parse_record(b"6,339,5140900;x").is_err());
    assert!(parse_record(b"no header").is_err());
    assert!(parse_record(b"a,b,c,d;x").is_err());
}

/// A memory cgroup OOM report of Linux 6.x inside a pod: the report (allocating task's stack,
/// memory state, task table) is absorbed, the summary line is a PodOOMKilling, the kill an
/// OOMKilling carrying the stack and the pod; nothing else ships.
#[test]
fn oom_report_in_a_pod_is_two_events_and_no_noise() {
    let mut f = Feed::new();
    let summary = format!(
        "<6>oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg={POD},task_memcg={POD},task=stress,pid=4321,uid=0"
    );
    let out = f
        .lines(&[
            "<4>stress invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=939",
            "<4>CPU: 0 UID: 0 PID: 4321 Comm: stress Not tainted 6.18.0 #1 PREEMPT(voluntary) ",
            "<4>Hardware name: QEMU Standard PC (i440FX + PIIX, 1996), BIOS 1.16.3 04/01/2014",
            "<4>Call Trace:",
            "<4> <TASK>",
            "<4> dump_stack_lvl+0x4b/0x70",
            "<4> dump_header+0x43/0x1b0",
            "<4> oom_kill_process+0x10c/0x180",
            "<4> </TASK>",
            "<6>memory: usage 32768kB, limit 32768kB, failcnt 57",
            "<6>Tasks state (memory values in pages):",
            "<6>[  pid  ]   uid  tgid total_vm      rss pgtables_bytes swapents oom_score_adj name",
            "<6>[   4321]     0  4321    26980     8200    98304        0           939 stress",
            &summary,
            "<3>Memory cgroup out of memory: Killed process 4321 (stress) total-vm:107920kB, anon-rss:98388kB, file-rss:1280kB, shmem-rss:0kB, UID:0 pgtables:244kB oom_score_adj:939",
        ])
        .done();
    assert_eq!(names(&out), ["PodOOMKilling", "OOMKilling"]);
    let uid = s("1b2c3d4e-0000-1111-2222-333344445555");
    let cid = s("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
    for r in &out {
        assert_eq!(attr(r, "k8s.pod.uid"), uid.as_ref());
        assert_eq!(attr(r, "container.id"), cid.as_ref());
        assert_eq!(attr(r, "process.pid"), Some(&AttrValue::I64(4321)));
    }
    assert_eq!(
        attr(&out[1], "linux.oom.anon_rss_kb"),
        Some(&AttrValue::I64(98388))
    );
    assert_eq!(
        attr(&out[1], "exception.stacktrace"),
        s("<TASK>\ndump_stack_lvl+0x4b/0x70\ndump_header+0x43/0x1b0\noom_kill_process+0x10c/0x180\n</TASK>").as_ref()
    );
    assert_eq!(
        attr(&out[1], "vigil.kernel.source"),
        s("kernel-monitor").as_ref()
    );
    match &out[1] {
        Record::Log { log, .. } => {
            assert_eq!(log.severity_text, "ERROR");
            assert_eq!(log.severity_number, 17);
        }
        _ => panic!(),
    }
    assert_eq!(f.problems("OOMKilling"), 1);
    assert_eq!(f.problems("PodOOMKilling"), 1);
}

/// NPD's test data (Linux 3.x: "Kill process ... or sacrifice child" then the kill) and the
/// 4.x form with shmem-rss; a host OOM is no PodOOMKilling.
#[test]
fn oom_older_kernels_and_host() {
    let out = Feed::new()
        .lines(&[
            "<3>Memory cgroup out of memory: Kill process 1012 (heapster) score 1035 or sacrifice child",
            "<3>Killed process 1012 (heapster) total-vm:327128kB, anon-rss:306328kB, file-rss:11132kB, shmem-rss:12345kB",
            "<6>oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,global_oom,task_memcg=/user.slice,task=a.out,pid=77,uid=1000",
            "<3>Out of memory: Killed process 77 (a.out) total-vm:1kB, anon-rss:2kB, file-rss:0kB, shmem-rss:0kB, UID:1000 pgtables:4kB oom_score_adj:0",
        ])
        .done();
    assert_eq!(names(&out), ["OOMKilling", "OOMKilling"]);
    assert_eq!(
        attr(&out[0], "process.executable.name"),
        s("heapster").as_ref()
    );
    assert_eq!(
        attr(&out[1], "linux.oom.task_memcg"),
        s("/user.slice").as_ref()
    );
    assert!(attr(&out[1], "k8s.pod.uid").is_none());
}

/// Linux 6.18's x86 NULL pointer oops as printed, through its executive summary: one
/// KernelOops (the `Oops:` die header is part of it), its stack, its task; no plain lines.
#[test]
fn null_pointer_oops_is_one_event() {
    let mut f = Feed::new();
    let out = f
        .lines(&[
            "<1>BUG: kernel NULL pointer dereference, address: 0000000000000000",
            "<1>#PF: supervisor write access in kernel mode",
            "<1>#PF: error_code(0x0002) - not-present page",
            "<6>PGD 0 P4D 0 ",
            "<4>Oops: Oops: 0002 [#1] SMP NOPTI",
            "<4>CPU: 1 UID: 0 PID: 4242 Comm: bash Not tainted 6.18.0 #1 PREEMPT(voluntary) ",
            "<4>Hardware name: QEMU Standard PC (i440FX + PIIX, 1996), BIOS 1.16.3 04/01/2014",
            "<4>RIP: 0010:sysrq_handle_crash+0x16/0x20",
            "<4>Code: 90 90 90 f3 0f 1e fa 0f 1f 44 00 00 c7 05 a1 e9 c9 01 01 00 00 00 0f ae f8 <c6> 04 25 00",
            "<4>RSP: 0018:ffffc90000a4fe08 EFLAGS: 00010246",
            "<4>RAX: 0000000000000000 RBX: 0000000000000063 RCX: 0000000000000000",
            "<4>R13: 0000000000000000 R14: 0000000000000000 R15: 0000000000000000",
            "<4>FS:  00007f4b1d61d740(0000) GS:ffff88813bd00000(0000) knlGS:0000000000000000",
            "<4>CS:  0010 DS: 0000 ES: 0000 CR0: 0000000080050033",
            "<4>CR2: 0000000000000000 CR3: 0000000104f2c000 CR4: 00000000000006f0",
            "<4>Call Trace:",
            "<4> <TASK>",
            "<4> __handle_sysrq+0x9b/0x190",
            "<4> write_sysrq_trigger+0x61/0x70",
            "<4> ? ksys_write+0x6f/0xf0",
            "<4> do_syscall_64+0x5c/0xf0",
            "<4>RIP: 0033:0x7f4b1d714887",
            "<4>RSP: 002b:00007ffd5ad4a3f8 EFLAGS: 00000246 ORIG_RAX: 0000000000000001",
            "<4> </TASK>",
            "<4>Modules linked in: xt_conntrack nft_chain_nat",
            "<4>CR2: 0000000000000000",
            "<4>---[ end trace 0000000000000000 ]---",
            "<4>RIP: 0010:sysrq_handle_crash+0x16/0x20",
            "<4>note: bash[4242] exited with irqs disabled",
        ])
        .done();
    assert_eq!(names(&out), ["KernelOops"], "{out:#?}");
    let o = &out[0];
    assert_eq!(
        body(o),
        "BUG: kernel NULL pointer dereference, address: 0000000000000000"
    );
    assert_eq!(attr(o, "process.pid"), Some(&AttrValue::I64(4242)));
    assert_eq!(attr(o, "process.executable.name"), s("bash").as_ref());
    assert_eq!(attr(o, "cpu.logical_number"), Some(&AttrValue::I64(1)));
    assert_eq!(
        attr(o, "exception.stacktrace"),
        s("<TASK>\n__handle_sysrq+0x9b/0x190\nwrite_sysrq_trigger+0x61/0x70\n? ksys_write+0x6f/0xf0\ndo_syscall_64+0x5c/0xf0\n</TASK>").as_ref()
    );
    assert_eq!(attr(o, "linux.kmsg.lines"), Some(&AttrValue::I64(29)));
    assert_eq!(f.problems("KernelOops"), 1);
    assert_eq!(f.p.stats.logs, 0);
}

/// NPD's own test data: a Linux 3.16 NULL pointer oops and divide error, and Linux 6.x die
/// headers NPD's patterns miss.
#[test]
fn oops_variants() {
    let out = Feed::new()
        .lines(&[
            "<1>BUG: unable to handle kernel NULL pointer dereference at 0000000000000078",
            "<1>IP: [<ffffffff810a2c38>] pick_next_task_fair+0x6b8/0x820",
            "<4>PGD 0 ",
            "<4>Oops: 0000 [#1] SMP ",
            "<4>Modules linked in: binfmt_misc ipt_REJECT xt_nat",
            "<4>CPU: 11 PID: 63 Comm: ksoftirqd/11 Tainted: G         C    3.16.0-4-amd64 #1 Debian 3.16.7-ckt20-1+deb8u3",
            "<4>task: ffff881fe1d0cb60 ti: ffff881fe1d18000 task.ti: ffff881fe1d18000",
            "<4>RIP: 0010:[<ffffffff810a2c38>]  [<ffffffff810a2c38>] pick_next_task_fair+0x6b8/0x820",
            "<4>Stack:",
            "<4> ffff881d1fab2290 000000018109ef94 ffff881fe1d0cb60 0000000000012f00",
            "<4>Call Trace:",
            "<4> [<ffffffff8101b975>] ? sched_clock+0x5/0x10",
            "<4> [<ffffffff8150fed6>] ? __schedule+0x106/0x700",
            "<4>Code: 49 8b 7c 24 78 48 39 fd 74 2f 44 8b 73 68 45 8b 6c 24 68 45 39 ee 0f 8e c7 00",
            "<1>RIP  [<ffffffff810a2c38>] pick_next_task_fair+0x6b8/0x820",
            "<4> RSP <ffff881fe1d1bde0>",
            "<4>CR2: 0000000000000078",
            "<4>---[ end trace 61f6991dc9ee5be0 ]---",
        ])
        .done();
    assert_eq!(names(&out), ["KernelOops"], "{out:#?}");
    assert_eq!(
        attr(&out[0], "process.executable.name"),
        s("ksoftirqd/11").as_ref()
    );
    assert_eq!(
        attr(&out[0], "exception.stacktrace"),
        s("[<ffffffff8101b975>] ? sched_clock+0x5/0x10\n[<ffffffff8150fed6>] ? __schedule+0x106/0x700").as_ref()
    );
    for head in [
        "<4>divide error: 0000 [#1] SMP ",
        "<4>Oops: divide error: 0000 [#1] PREEMPT SMP NOPTI",
        "<4>Oops: general protection fault, probably for non-canonical address 0xdffffc0000000000: 0000 [#1] SMP KASAN NOPTI",
        "<1>BUG: unable to handle page fault for address: ffffffffc0a8f000",
        "<1>Unable to handle kernel NULL pointer dereference at virtual address 0000000000000000",
    ] {
        let out = Feed::new()
            .lines(&[head, "<4>Modules linked in: dm_thin_pool", "<4>Call Trace:"])
            .done();
        assert_eq!(names(&out), ["KernelOops"], "{head}");
    }
}

#[test]
fn bug_warning_panic_lockups_stalls_mce() {
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "<4>------------[ cut here ]------------",
                "<0>kernel BUG at mm/slub.c:432!",
                "<4>Oops: invalid opcode: 0000 [#1] PREEMPT SMP NOPTI",
                "<4>CPU: 0 UID: 0 PID: 77 Comm: kworker/0:2 Not tainted 6.12.0 #1",
                "<4>Call Trace:",
                "<4> kfree+0x1a5/0x2d0",
                "<4>---[ end trace 0000000000000000 ]---",
            ],
            "KernelBug",
        ),
        (
            &["<3>BUG: scheduling while atomic: swapper/0/0/0x00000002"],
            "KernelBug",
        ),
        (
            &[
                "<4>------------[ cut here ]------------",
                "<4>WARNING: CPU: 1 PID: 1 at kernel/fork.c:1234 copy_process+0x1/0x2",
                "<4>Modules linked in:",
                "<4>CPU: 1 UID: 0 PID: 1 Comm: systemd Not tainted 6.18.0 #1",
                "<4>Call Trace:",
                "<4> kernel_clone+0x9d/0x3e0",
                "<4>---[ end trace 0000000000000000 ]---",
            ],
            "KernelWarning",
        ),
        (
            &["<4>WARNING: kernel/fork.c:1234 at copy_process+0x1/0x2, CPU#1: systemd/1"],
            "KernelWarning",
        ),
        (
            &["<4>WARNING: CPU: 0 PID: 1 at drivers/soc/mediatek/mtk-scpsys.c:457 0xc04a4130"],
            "KernelWarning",
        ),
        (
            &[
                "<0>Kernel panic - not syncing: Fatal exception",
                "<0>Kernel Offset: disabled",
                "<0>---[ end Kernel panic - not syncing: Fatal exception ]---",
            ],
            "KernelPanic",
        ),
        (
            &["<0>watchdog: BUG: soft lockup - CPU#3 stuck for 23s! [stress-ng:4242]"],
            "SoftLockup",
        ),
        (
            &["<0>BUG: soft lockup - CPU#0 stuck for 22s! [kworker/0:1:123]"],
            "SoftLockup",
        ),
        (
            &["<0>NMI watchdog: Watchdog detected hard LOCKUP on cpu 1"],
            "HardLockup",
        ),
        (
            &["<0>watchdog: CPU3: Watchdog detected hard LOCKUP on cpu 3"],
            "HardLockup",
        ),
        (
            &[
                "<3>rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:",
                "<3>rcu: \\x093-...!: (0 ticks this GP) idle=d64c/1/0x4000000000000000 softirq=613/613 fqs=0",
                "<3>rcu: \\x09(detected by 2, t=21016 jiffies, g=7753, q=296 ncpus=4)",
            ],
            "RcuStall",
        ),
        (
            &[
                "<3>INFO: rcu_sched detected stalls on CPUs/tasks: { 1} (detected by 0, t=5252 jiffies, g=3245, c=3244, q=13)",
            ],
            "RcuStall",
        ),
        (
            &["<3>INFO: rcu_sched self-detected stall on CPU"],
            "RcuStall",
        ),
        (
            &[
                "<0>mce: [Hardware Error]: CPU 0: Machine Check Exception: 5 Bank 4: b200000000070f0f",
                "<0>mce: [Hardware Error]: TSC 0 ADDR fef1a140 ",
                "<0>mce: [Hardware Error]: Run the above through 'mcelog --ascii'",
            ],
            "MachineCheck",
        ),
        (
            &[
                "<6>crash[999]: segfault at 0 ip 000055d5c0a8d139 sp 00007ffd1b0a3f40 error 6 in crash[1139,55d5c0a8d000+1000] likely on CPU 1 (core 1, socket 0)",
            ],
            "Segfault",
        ),
        (
            &[
                "<6>traps: a.out[77] general protection fault ip:4005d6 sp:7ffc2b0e9a10 error:0 in a.out[400000+1000]",
            ],
            "Segfault",
        ),
    ];
    for (lines, want) in cases {
        let mut f = Feed::new();
        let out = f.lines(lines).done();
        assert_eq!(names(&out), [*want], "{lines:?}: {out:#?}");
        assert_eq!(f.p.stats.logs, 0, "{lines:?}: no plain lines");
        assert_eq!(f.problems(want), 1, "{lines:?}");
    }
}

/// NPD's kernel-monitor rules one by one, with its conditions.
#[test]
fn npd_kernel_monitor_rules() {
    let cases: &[(&str, &str, Option<&str>)] = &[
        (
            "<3>EXT4-fs error (device sda1): ext4_journal_check_start:83: comm rm: Detected aborted journal",
            "Ext4Error",
            None,
        ),
        (
            "<4>EXT4-fs warning (device sda1): ext4_dx_add_entry:2466: Directory (ino: 2) index full, reach max htree level :2",
            "Ext4Warning",
            None,
        ),
        (
            "<3>Buffer I/O error on dev sdb1, logical block 0, async page read",
            "IOError",
            None,
        ),
        (
            "<3>Buffer I/O error on device sdb1, logical block 0",
            "IOError",
            None,
        ),
        (
            "<1>XFS (sdc1): Corruption of in-memory data (0x8) detected at xfs_trans_cancel+0x12e/0x150 (fs/xfs/xfs_trans.c:1098).  Shutting down filesystem.",
            "XfsHasShutdown",
            Some("XfsShutdown"),
        ),
        (
            "<1>XFS (dm-0): Log I/O Error Detected.  Shutting down filesystem",
            "XfsHasShutdown",
            Some("XfsShutdown"),
        ),
        (
            "<4>EDAC MC0: 1 CE memory read error on CPU_SrcID#0_Ha#0_Chan#0_DIMM#0 (channel:0 slot:0 page:0x4d7d6b offset:0x0 grain:32 syndrome:0x0 - area:DRAM err_code:0001:0090 socket:0 ha:0 channel_mask:1 rank:0)",
            "MemoryReadError",
            None,
        ),
        (
            "<4>{1}[Hardware Error]: event severity: corrected",
            "CperHardwareErrorCorrected",
            None,
        ),
        (
            "<3>{1}[Hardware Error]: event severity: recoverable",
            "CperHardwareErrorRecoverable",
            None,
        ),
        (
            "<0>{2}[Hardware Error]: event severity: fatal",
            "CperHardwareErrorFatal",
            Some("CperHardwareErrorFatal"),
        ),
        (
            "<0>unregister_netdevice: waiting for lo to become free. Usage count = 1",
            "UnregisterNetDevice",
            None,
        ),
        (
            "<2>EXT4-fs (sda1): Remounting filesystem read-only",
            "FilesystemIsReadOnly",
            Some("ReadonlyFilesystem"),
        ),
        (
            "<2>BTRFS info (device vdc state EA): forced readonly",
            "FilesystemIsReadOnly",
            Some("ReadonlyFilesystem"),
        ),
    ];
    for (line, want, cond) in cases {
        let mut f = Feed::new();
        let out = f.lines(&[line]).done();
        assert_eq!(names(&out), [*want], "{line}");
        assert_eq!(f.problems(want), 1, "{line}");
        if let Some(c) = cond {
            assert_eq!(attr(&out[0], "vigil.kernel.condition.type"), s(c).as_ref());
            assert_eq!(
                attr(&out[0], "vigil.kernel.condition.status"),
                s("True").as_ref()
            );
            assert_eq!(
                attr(&out[0], "vigil.kernel.condition.changed"),
                Some(&AttrValue::Bool(true))
            );
            assert_eq!(
                attr(&out[0], "vigil.kernel.rule.type"),
                s("permanent").as_ref()
            );
            assert_eq!(f.condition(c, want), 1, "{line}");
        } else {
            assert_eq!(
                attr(&out[0], "vigil.kernel.rule.type"),
                s("temporary").as_ref()
            );
        }
    }
}

/// NPD's hung-task test data (Linux 3.16) and Linux 6.x's: one TaskHung with the stack; a
/// docker task is also DockerHung, which sets KernelDeadlock.
#[test]
fn hung_tasks_and_docker_deadlock() {
    let mut f = Feed::new();
    assert_eq!(f.condition("KernelDeadlock", "DockerHung"), 0);
    let out = f
        .lines(&[
            "<3>INFO: task docker:20744 blocked for more than 120 seconds.",
            "<3>      Tainted: G         C    3.16.0-4-amd64 #1",
            "<3>\"echo 0 > /proc/sys/kernel/hung_task_timeout_secs\" disables this message.",
            "<6>docker          D ffff8801a8f2b078     0 20744      1 0x00000000",
            "<4> ffff8801a8f2ac20 0000000000000082 0000000000012f00 ffff880057a17fd8",
            "<4>Call Trace:",
            "<4> [<ffffffff81510915>] ? schedule_preempt_disabled+0x25/0x70",
            "<4> [<ffffffff815123c3>] ? __mutex_lock_slowpath+0xd3/0x1c0",
        ])
        .done();
    assert_eq!(names(&out), ["DockerHung", "TaskHung"], "{out:#?}");
    assert_eq!(
        attr(&out[0], "vigil.kernel.condition.type"),
        s("KernelDeadlock").as_ref()
    );
    assert_eq!(attr(&out[1], "process.pid"), Some(&AttrValue::I64(20744)));
    assert_eq!(
        attr(&out[1], "linux.task.blocked_seconds"),
        Some(&AttrValue::I64(120))
    );
    assert_eq!(
        attr(&out[1], "exception.stacktrace"),
        s("[<ffffffff81510915>] ? schedule_preempt_disabled+0x25/0x70\n[<ffffffff815123c3>] ? __mutex_lock_slowpath+0xd3/0x1c0").as_ref()
    );
    assert_eq!(f.condition("KernelDeadlock", "DockerHung"), 1);

    let out = Feed::new()
        .lines(&[
            "<3>INFO: task kworker/0:1:123 blocked for more than 122 seconds.",
            "<3>      Not tainted 6.18.0 #1",
            "<3>\"echo 0 > /proc/sys/kernel/hung_task_timeout_secs\" disables this message.",
            "<6>task:kworker/0:1     state:D stack:0     pid:123   tgid:123   ppid:2      task_flags:0x4208060 flags:0x00004000",
            "<6>Call Trace:",
            "<6> <TASK>",
            "<6> __schedule+0x3c4/0xa80",
            "<6> schedule+0x27/0xf0",
            "<6> </TASK>",
            "<3>INFO: task kworker/0:1:123 is blocked on a mutex likely owned by task modprobe:99.",
            "<6>eth0: link up",
        ])
        .done();
    assert_eq!(names(&out), ["TaskHung"]);
    assert_eq!(
        attr(&out[0], "process.executable.name"),
        s("kworker/0:1").as_ref()
    );
    assert_eq!(
        attr(&out[0], "exception.stacktrace"),
        s("<TASK>\n__schedule+0x3c4/0xa80\nschedule+0x27/0xf0\n</TASK>").as_ref()
    );
}

/// NPD's counter rule: three unregister_netdevice waits within 20 minutes set
/// FrequentUnregisterNetDevice; each wait is also an UnregisterNetDevice event.
#[test]
fn frequent_unregister_netdevice() {
    let mut f = Feed::new();
    let line = "<0>unregister_netdevice: waiting for veth1 to become free. Usage count = 2";
    let out = f.lines(&[line, line]).done();
    assert_eq!(names(&out), ["UnregisterNetDevice"; 2]);
    assert!(attr(&out[1], "vigil.kernel.condition.type").is_none());
    assert_eq!(
        f.condition("FrequentUnregisterNetDevice", "UnregisterNetDevice"),
        0
    );
    let out = f.lines(&[line]).done();
    assert_eq!(
        attr(&out[0], "vigil.kernel.condition.type"),
        s("FrequentUnregisterNetDevice").as_ref()
    );
    assert_eq!(attr(&out[0], "network.interface.name"), s("veth1").as_ref());
    assert_eq!(
        f.condition("FrequentUnregisterNetDevice", "UnregisterNetDevice"),
        1
    );
    assert_eq!(f.problems("UnregisterNetDevice"), 3);
}

/// A user's file in NPD's format: a multi-line pattern (matched against the joined buffer as
/// NPD does), a permanent rule with its condition, a message suffix, a counter rule with a
/// revert pattern.
#[test]
fn user_rule_file() {
    let text = r#"{
      "plugin": "kmsg", "source": "my-monitor", "bufferSize": 5,
      "conditions": [{"type": "DiskTrouble", "reason": "DiskFine", "message": "disk fine"}],
      "rules": [
        {"type": "temporary", "reason": "OldOOM",
         "pattern": "Kill process \\d+ (.+) score \\d+ or sacrifice child\\nKilled process \\d+ (.+) total-vm:\\d+kB, anon-rss:\\d+kB, file-rss:\\d+kB.*"},
        {"type": "permanent", "condition": "DiskTrouble", "reason": "DiskGone",
         "pattern": "sd \\d+:\\d+:\\d+:\\d+: \\[sd\\w+\\] Synchronize Cache.* failed.*",
         "patternGeneratedMessageSuffix": "see runbook 12"}
      ]}"#;
    let counter = r#"{"plugin": "custom", "source": "my-counter",
      "conditions": [{"type": "Flapping", "reason": "NotFlapping", "message": "ok"}],
      "rules": [{"type": "permanent", "condition": "Flapping", "reason": "LinkFlaps",
        "path": "/usr/bin/log-counter",
        "args": ["--journald-source=kernel", "--lookback=10m", "--count=2",
                 "--pattern=\\w+: Link is Down", "--revert-pattern=\\w+: Link is Up"]}]}"#;
    let rules = RuleSet::load(
        false,
        &[
            ("/etc/mine.json".into(), text.into()),
            ("/etc/counter.json".into(), counter.into()),
        ],
    )
    .unwrap();
    let p = KmsgParser::with_rules(Vec::new(), 0, None, rules, KmsgOptions::default()).unwrap();
    let mut f = Feed::with(p);
    let out = f
        .lines(&[
            "<3>Memory cgroup out of memory: Kill process 1012 (heapster) score 1035 or sacrifice child",
            "<3>Killed process 1012 (heapster) total-vm:327128kB, anon-rss:306328kB, file-rss:11132kB",
            "<3>sd 2:0:0:0: [sdb] Synchronize Cache(10) failed: Result: hostbyte=DID_BAD_TARGET",
            "<6>eth0: Link is Down",
            "<6>eth0: Link is Up",
            "<6>eth0: Link is Down",
        ])
        .done();
    assert_eq!(
        names(&out),
        ["OldOOM", "DiskGone", "LinkFlaps", "LinkFlaps"]
    );
    assert!(body(&out[1]).ends_with("; see runbook 12"));
    assert_eq!(
        attr(&out[1], "vigil.kernel.source"),
        s("my-monitor").as_ref()
    );
    assert_eq!(f.condition("DiskTrouble", "DiskGone"), 1);
    // Down, Up, Down: 1 in the window, the revert pattern took one back.
    assert_eq!(f.condition("Flapping", "LinkFlaps"), 0);
    f.lines(&["<6>eth0: Link is Down"]).done();
    assert_eq!(f.condition("Flapping", "LinkFlaps"), 1);
    assert_eq!(f.problems("LinkFlaps"), 3);
}

/// Plain lines: at or above the threshold, severity mapped, facility and sequence kept,
/// SUBSYSTEM/DEVICE as attributes, limited per source with the count of what was dropped.
#[test]
fn plain_lines() {
    let mut f = Feed::new();
    f.p.feed(b"4,7,100,-;e1000e 0000:00:19.0 eth0: Reset adapter unexpectedly\n SUBSYSTEM=pci\n DEVICE=+pci:0000:00:19.0\n", &mut f.out);
    f.p.feed(
        b"6,8,101,-;e1000e 0000:00:19.0 eth0: NIC Link is Up",
        &mut f.out,
    );
    f.p.feed(b"11,9,102,-;from userspace at err", &mut f.out);
    let out = f.done();
    assert_eq!(out.len(), 2);
    let Record::Log { log, .. } = &out[0] else {
        panic!()
    };
    assert_eq!(
        (log.severity_number, log.severity_text.as_str()),
        (13, "WARN")
    );
    assert_eq!(log.event_name, "");
    assert_eq!(
        log.body,
        "e1000e 0000:00:19.0 eth0: Reset adapter unexpectedly"
    );
    assert_eq!(attr(&out[0], "linux.kmsg.seq"), Some(&AttrValue::I64(7)));
    assert_eq!(
        attr(&out[0], "linux.kmsg.facility"),
        Some(&AttrValue::I64(0))
    );
    assert_eq!(attr(&out[0], "linux.kmsg.subsystem"), s("pci").as_ref());
    assert_eq!(
        attr(&out[0], "linux.kmsg.device"),
        s("+pci:0000:00:19.0").as_ref()
    );
    assert_eq!(
        attr(&out[1], "linux.kmsg.facility"),
        Some(&AttrValue::I64(1))
    );
    assert_eq!(f.p.stats.logs_below_level, 1);

    // 150 lines of one source at once: the burst (100) passes, 50 are counted as dropped;
    // another source is not held back; a second later the first tells how many it lost.
    let mut f = Feed::new();
    for k in 0..150 {
        f.raw('-', &format!("<4>noisy: line {k}"));
    }
    f.raw('-', "<4>quiet: one line");
    let out = f.done();
    assert_eq!(out.len(), 101);
    assert_eq!(f.p.stats.logs_dropped, 50);
    f.ts += 2_000_000;
    let out = f.lines(&["<4>noisy: again"]).done();
    assert_eq!(
        attr(&out[0], "linux.kmsg.dropped"),
        Some(&AttrValue::I64(50))
    );

    let opts = KmsgOptions {
        log_level: None,
        ..KmsgOptions::default()
    };
    let p = KmsgParser::with_rules(Vec::new(), 0, None, RuleSet::load(true, &[]).unwrap(), opts)
        .unwrap();
    assert!(
        Feed::with(p)
            .lines(&["<0>anything: at all"])
            .done()
            .is_empty()
    );
}

/// Fragments of one line (kernels before 5.10 flag the first `c`, the rest `+`) are one line.
#[test]
fn continuation_lines_are_joined() {
    let mut f = Feed::new();
    f.raw('c', "<4>usb 1-1: new high-speed USB device number 2");
    f.raw('+', "<4> using xhci_hcd");
    f.raw('-', "<4>usb 1-1: next line");
    let out = f.done();
    assert_eq!(out.len(), 2);
    assert_eq!(
        body(&out[0]),
        "usb 1-1: new high-speed USB device number 2 using xhci_hcd"
    );
    assert_eq!(f.p.stats.joined, 1);
    // A fragment alone (Linux >= 5.10 when another CPU printed in between) waits briefly.
    f.raw('c', "<4>lonely: fragment");
    assert!(f.out.is_empty());
    assert!(f.p.deadline().is_some());
    assert_eq!(f.done().len(), 1);
}

/// After a restart: already-shipped lines are not shipped again but bring their conditions
/// back; a first start ships only the lookback.
#[test]
fn resume_replay_and_lookback() {
    let mut f = Feed::with(KmsgParser::new(Vec::new(), 0, Some(102)));
    let out = f
        .lines(&[
            "<2>EXT4-fs (a): Remounting filesystem read-only",
            "<2>XFS (b): Log I/O Error Detected.  Shutting down filesystem",
            "<2>EXT4-fs (c): Remounting filesystem read-only",
        ])
        .done();
    assert_eq!(names(&out), ["FilesystemIsReadOnly"]);
    assert_eq!(attr(&out[0], "linux.kmsg.seq"), Some(&AttrValue::I64(103)));
    assert_eq!(f.p.stats.skipped_resumed, 2);
    assert_eq!(f.p.stats.replayed, 2);
    assert_eq!(f.condition("XfsShutdown", "XfsHasShutdown"), 1);
    assert_eq!(
        f.problems("XfsHasShutdown"),
        0,
        "replayed lines are not counted again"
    );

    let opts = KmsgOptions {
        lookback: Some(Duration::from_secs(5)),
        ..KmsgOptions::default()
    };
    let rules = RuleSet::load(true, &[]).unwrap();
    let p = KmsgParser::with_rules(Vec::new(), 0, None, rules, opts).unwrap();
    let mut f = Feed::with(p);
    let now = monotonic_us();
    assert!(now > 60_000_000, "booted a minute ago at least");
    f.ts = now - 30_000_000;
    f.lines(&["<2>EXT4-fs (old): Remounting filesystem read-only"]);
    f.ts = now;
    let out = f
        .lines(&["<2>EXT4-fs (new): Remounting filesystem read-only"])
        .done();
    assert_eq!(out.len(), 1);
    assert_eq!(attr(&out[0], "system.device"), s("new").as_ref());
    assert_eq!(f.p.stats.skipped_lookback, 1);
}

#[test]
fn events_are_limited_but_counted() {
    let mut f = Feed::new();
    let n = vigil_collector::kmsg::EVENT_BURST as usize + 100;
    for k in 0..n {
        f.ts -= 100; // all at the same kernel time
        f.raw(
            '-',
            &format!("<3>Buffer I/O error on dev sdz, logical block {k}"),
        );
    }
    let out = f.done();
    assert_eq!(out.len(), n - 100);
    assert_eq!(f.p.stats.events_dropped, 100);
    assert_eq!(f.problems("IOError"), n as i64);
}

#[test]
fn sequence_gaps_are_lost_lines() {
    let mut f = Feed::new();
    f.p.feed(b"6,10,1,-;a", &mut f.out);
    f.p.feed(b"6,11,1,-;b", &mut f.out);
    f.p.feed(b"6,50,1,-;c", &mut f.out);
    assert_eq!(f.p.stats.lost, 38);
}

#[test]
fn hostile_records_are_counted() {
    let mut f = Feed::new();
    let huge = format!("3,1,1,-;BUG: {}", "A".repeat(1 << 20));
    for raw in [
        &b"\xff\xfe\xfd"[..],
        b"",
        b";;;",
        b"99999999999999999999999,1,1,-;x",
        huge.as_bytes(),
        b"3,2,1,-;\xff\xfeoom-kill:pid=\xff",
        b"3,3,1,-;INFO: task :x blocked for more than  seconds",
        b"3,4,1,-;Killed process (",
        b"3,5,1,-;x[: segfault at ",
        b"3,6,1,-;CPU: PID: Comm:",
    ] {
        f.p.feed(raw, &mut f.out);
    }
    assert_eq!(f.p.stats.parse_errors, 4);
    let out = f.done();
    let bug = out.iter().find(|r| event(r) == "KernelBug").unwrap();
    assert!(body(bug).len() <= 2048);
}

proptest! {
    // Each case compiles the built-in rules: fewer cases than the default 256.
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn never_panics_on_bytes(raw in proptest::collection::vec(any::<u8>(), 0..600)) {
        let mut p = KmsgParser::new(Vec::new(), 0, None);
        let mut out = Vec::new();
        p.feed(&raw, &mut out);
    }

    #[test]
    fn never_panics_on_event_shaped_lines(prefix in prop::sample::select(vec!["oom-kill:", "Out of memory: Killed process ", "INFO: task ", "EXT4-fs (", "BTRFS info (device ", "BUG: ", " x+0x1/0x2", "Call Trace:", "CPU: ", "watchdog: BUG: soft lockup - CPU#", "Buffer I/O error on dev ", "unregister_netdevice: waiting for ", "mce: [Hardware Error]: CPU ", " invoked oom-killer: "]), body in "[ -~\\(\\)\\[\\]:=,#]{0,80}", seq in 0u64..5, flag in prop::sample::select(vec!['-', 'c', '+'])) {
        let mut p = KmsgParser::new(Vec::new(), 0, None);
        let mut out = Vec::new();
        let raw = format!("3,{seq},1,{flag};{prefix}{body}");
        p.feed(raw.as_bytes(), &mut out);
        p.feed(b"4,9,1,-;Call Trace:", &mut out);
        p.feed(format!("4,10,1,-; {body}+0x1/0x2").as_bytes(), &mut out);
        p.flush_expired(Instant::now() + Duration::from_secs(1), &mut out);
        prop_assert!(p.stats.records == 3);
        p.on_cycle(Stamp { start: 0, now: 1 }, &mut out);
    }
}

/// Root: the real /dev/kmsg, read through the same source the event loop uses.
#[test]
fn real_dev_kmsg_line_becomes_an_event() {
    use std::io::{Seek, SeekFrom, Write};
    use std::os::unix::fs::OpenOptionsExt;
    use vigil_collector::event_loop::Source;
    assert_eq!(nix::unistd::geteuid().as_raw(), 0, "root test");
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")
        .unwrap();
    f.seek(SeekFrom::End(0)).unwrap();
    let dev = format!("vigiltest{}", std::process::id());
    f.write_all(format!("<2>EXT4-fs ({dev}): Remounting filesystem read-only\n").as_bytes())
        .unwrap();
    let mut src =
        vigil_collector::kmsg::KmsgSource::new(f.into(), KmsgParser::new(Vec::new(), 0, None));
    let mut out = Vec::new();
    src.on_readable(&mut out);
    let ev: Vec<_> = out
        .iter()
        .filter(|r| attr(r, "system.device") == s(&dev).as_ref())
        .collect();
    assert_eq!(ev.len(), 1, "{out:?}");
    assert_eq!(event(ev[0]), "FilesystemIsReadOnly");
    assert!(matches!(attr(ev[0], "linux.kmsg.seq"), Some(AttrValue::I64(s)) if *s > 0));
    // Written from userspace: facility 1 (LOG_USER), as the kernel forces for /dev/kmsg writes.
    assert_eq!(attr(ev[0], "linux.kmsg.facility"), Some(&AttrValue::I64(1)));
    assert!(
        src.counters()
            .iter()
            .any(|(k, v)| k == "kmsg_records" && *v >= 1)
    );
}

/// `kmsg_builtin_rules = false` and no file of one's own: no events, no kernel metrics, the
/// plain lines still.
#[test]
fn no_rules_at_all() {
    let p = KmsgParser::with_rules(
        Vec::new(),
        0,
        None,
        RuleSet::load(false, &[]).unwrap(),
        KmsgOptions::default(),
    )
    .unwrap();
    let mut f = Feed::with(p);
    let out = f
        .lines(&["<2>EXT4-fs (sda1): Remounting filesystem read-only"])
        .done();
    assert_eq!(names(&out), [""]);
    let mut cycle = Vec::new();
    f.p.on_cycle(Stamp { start: 1, now: 2 }, &mut cycle);
    assert!(cycle.is_empty());
}
