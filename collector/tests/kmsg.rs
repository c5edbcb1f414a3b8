//! kmsg parser and event classifier: hand-made lines in the kernel's formats, hostile input,
//! proptest.

use proptest::prelude::*;
use vigil_collector::kmsg::{KmsgParser, parse_record};
use vigil_ipc_proto::{AttrValue, Record};

fn attr<'a>(r: &'a Record, k: &str) -> Option<&'a AttrValue> {
    match r {
        Record::Log { log, .. } => log.attributes.iter().find(|a| a.key == k).map(|a| &a.value),
        _ => None,
    }
}

fn event(r: &Record) -> &str {
    match r {
        Record::Log { log, .. } => &log.event_name,
        _ => "",
    }
}

fn feed_all(p: &mut KmsgParser, lines: &[&str]) -> Vec<Record> {
    let mut out = Vec::new();
    for l in lines {
        p.feed(l.as_bytes(), &mut out);
    }
    out
}

const POD: &str = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1b2c3d4e_0000_1111_2222_333344445555.slice/cri-containerd-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.scope";

#[test]
fn record_format() {
    let r = parse_record(b"6,339,5140900,-,more;NET: Registered PF_INET6 protocol family\n SUBSYSTEM=net\n DEVICE=+net:lo\n").unwrap();
    assert_eq!(
        (r.level, r.facility, r.seq, r.ts_usec),
        (6, 0, 339, 5140900)
    );
    assert_eq!(r.message, b"NET: Registered PF_INET6 protocol family");
    assert_eq!(
        r.dict,
        vec![
            (&b"SUBSYSTEM"[..], &b"net"[..]),
            (&b"DEVICE"[..], &b"+net:lo"[..])
        ]
    );
    assert!(parse_record(b"6,339,5140900;x").is_err());
    assert!(parse_record(b"no header").is_err());
    assert!(parse_record(b"a,b,c,d;x").is_err());
}

#[test]
fn oom_in_a_pod() {
    let mut p = KmsgParser::new(Vec::new(), 1_000_000_000, None);
    let memcg = format!(
        "3,900,7000000,-;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=x,mems_allowed=0,oom_memcg={POD},task_memcg={POD},task=stress,pid=4321,uid=0"
    );
    let out = feed_all(
        &mut p,
        &[
            &memcg,
            "3,901,7000100,-;Memory cgroup out of memory: Killed process 4321 (stress) total-vm:107920kB, anon-rss:98388kB, file-rss:1280kB, shmem-rss:0kB, UID:0 pgtables:244kB oom_score_adj:0",
        ],
    );
    assert_eq!(out.len(), 2);
    assert_eq!(event(&out[0]), "PodOOMKilling");
    assert_eq!(
        attr(&out[0], "k8s.pod.uid"),
        Some(&AttrValue::Str(
            "1b2c3d4e-0000-1111-2222-333344445555".into()
        ))
    );
    assert_eq!(
        attr(&out[0], "container.id"),
        Some(&AttrValue::Str(
            "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef".into()
        ))
    );
    assert_eq!(event(&out[1]), "OOMKilling");
    assert_eq!(attr(&out[1], "process.pid"), Some(&AttrValue::I64(4321)));
    assert_eq!(
        attr(&out[1], "process.executable.name"),
        Some(&AttrValue::Str("stress".into()))
    );
    assert_eq!(
        attr(&out[1], "linux.oom.anon_rss_kb"),
        Some(&AttrValue::I64(98388))
    );
    assert_eq!(attr(&out[1], "linux.kmsg.seq"), Some(&AttrValue::I64(901)));
    assert!(attr(&out[1], "k8s.pod.uid").is_some());
    match &out[1] {
        Record::Log { log, .. } => {
            assert_eq!(log.time_unix_nano, 1_000_000_000 + 7_000_100_000);
            assert_eq!(log.severity_text, "ERROR");
        }
        _ => panic!(),
    }
}

#[test]
fn host_oom_is_not_a_pod_oom() {
    let mut p = KmsgParser::new(Vec::new(), 0, None);
    let out = feed_all(
        &mut p,
        &[
            "6,10,1,-;oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,global_oom,task_memcg=/user.slice,task=a.out,pid=77,uid=1000",
            "3,11,2,-;Out of memory: Killed process 77 (a.out) total-vm:1kB, anon-rss:2kB, file-rss:0kB, shmem-rss:0kB, UID:1000 pgtables:4kB oom_score_adj:0",
        ],
    );
    assert_eq!(out.len(), 1);
    assert_eq!(event(&out[0]), "OOMKilling");
    assert!(attr(&out[0], "k8s.pod.uid").is_none());
}

#[test]
fn task_hung_with_stack() {
    let mut p = KmsgParser::new(Vec::new(), 0, None);
    let mut out = feed_all(
        &mut p,
        &[
            "3,20,100,-;INFO: task kworker/0:1:123 blocked for more than 120 seconds.",
            "3,21,101,-;      Not tainted 6.18.0 #1",
            "3,22,102,-;\"echo 0 > /proc/sys/kernel/hung_task_timeout_secs\" disables this message.",
            "6,23,103,-;task:kworker/0:1     state:D stack:0     pid:123   tgid:123   ppid:2      flags:0x00004000",
            "4,24,104,-;Call Trace:",
            "4,25,105,-; <TASK>",
            "4,26,106,-; __schedule+0x3c4/0xa80",
            "4,27,107,-; schedule+0x27/0xf0",
            "4,28,108,-; </TASK>",
            "6,29,109,-;eth0: link up",
        ],
    );
    assert_eq!(out.len(), 1);
    p.flush_expired(
        std::time::Instant::now() + std::time::Duration::from_secs(5),
        &mut out,
    );
    assert_eq!(out.len(), 1);
    assert_eq!(event(&out[0]), "TaskHung");
    assert_eq!(attr(&out[0], "process.pid"), Some(&AttrValue::I64(123)));
    assert_eq!(
        attr(&out[0], "process.executable.name"),
        Some(&AttrValue::Str("kworker/0:1".into()))
    );
    let Some(AttrValue::Str(st)) = attr(&out[0], "exception.stacktrace") else {
        panic!("no stack")
    };
    assert_eq!(
        st,
        "<TASK>\n__schedule+0x3c4/0xa80\nschedule+0x27/0xf0\n</TASK>"
    );
}

#[test]
fn pending_event_flushes_after_window() {
    let mut p = KmsgParser::new(Vec::new(), 0, None);
    let mut out = feed_all(
        &mut p,
        &["0,5,1,-;Kernel panic - not syncing: Fatal exception"],
    );
    assert!(out.is_empty());
    p.flush_expired(
        std::time::Instant::now() + std::time::Duration::from_secs(1),
        &mut out,
    );
    assert_eq!(event(&out[0]), "KernelPanic");
}

#[test]
fn readonly_segfault_bug_oops() {
    let mut p = KmsgParser::new(Vec::new(), 0, None);
    let mut out = feed_all(
        &mut p,
        &[
            "2,30,1,-;EXT4-fs (sdb1): Remounting filesystem read-only",
            "2,31,1,-;BTRFS info (device vdc): forced readonly",
            "2,32,1,-;XFS (dm-3): Remounting filesystem read-only",
            "6,33,1,-;crash[999]: segfault at 0 ip 000055d5c0a8d139 sp 00007ffd1b0a3f40 error 6 in crash[1139,55d5c0a8d000+1000] likely on CPU 1 (core 1, socket 0)",
            "4,34,1,-;BUG: kernel NULL pointer dereference, address: 0000000000000000",
            "4,35,1,-;Oops: 0002 [#1] PREEMPT SMP NOPTI",
        ],
    );
    p.flush_expired(
        std::time::Instant::now() + std::time::Duration::from_secs(1),
        &mut out,
    );
    let names: Vec<&str> = out.iter().map(event).collect();
    assert_eq!(
        names,
        [
            "ReadonlyFilesystem",
            "ReadonlyFilesystem",
            "ReadonlyFilesystem",
            "Segfault",
            "KernelBug",
            "KernelOops"
        ]
    );
    assert_eq!(
        attr(&out[0], "system.device"),
        Some(&AttrValue::Str("sdb1".into()))
    );
    assert_eq!(
        attr(&out[1], "system.device"),
        Some(&AttrValue::Str("vdc".into()))
    );
    assert_eq!(attr(&out[3], "process.pid"), Some(&AttrValue::I64(999)));
}

#[test]
fn resume_skips_already_shipped() {
    let mut p = KmsgParser::new(Vec::new(), 0, Some(31));
    let out = feed_all(
        &mut p,
        &[
            "2,30,1,-;EXT4-fs (a): Remounting filesystem read-only",
            "2,31,1,-;EXT4-fs (b): Remounting filesystem read-only",
            "2,32,1,-;EXT4-fs (c): Remounting filesystem read-only",
        ],
    );
    assert_eq!(out.len(), 1);
    assert_eq!(attr(&out[0], "linux.kmsg.seq"), Some(&AttrValue::I64(32)));
    assert_eq!(p.stats.skipped_resumed, 2);
}

#[test]
fn hostile_records_are_counted() {
    let mut p = KmsgParser::new(Vec::new(), 0, None);
    let huge = format!("3,1,1,-;BUG: {}", "A".repeat(1 << 20));
    let mut out = Vec::new();
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
    ] {
        p.feed(raw, &mut out);
    }
    assert_eq!(p.stats.parse_errors, 4);
    p.flush_expired(
        std::time::Instant::now() + std::time::Duration::from_secs(1),
        &mut out,
    );
    match &out[0] {
        Record::Log { log, .. } => assert!(log.body.len() <= 2048 + 16),
        _ => panic!(),
    }
}

proptest! {
    #[test]
    fn never_panics_on_bytes(raw in proptest::collection::vec(any::<u8>(), 0..600)) {
        let mut p = KmsgParser::new(Vec::new(), 0, None);
        let mut out = Vec::new();
        p.feed(&raw, &mut out);
    }

    #[test]
    fn never_panics_on_event_shaped_lines(prefix in prop::sample::select(vec!["oom-kill:", "Out of memory: Killed process ", "INFO: task ", "EXT4-fs (", "BTRFS (device ", "BUG: ", " x+0x1/0x2", "Call Trace:"]), body in "[ -~\\(\\)\\[\\]:=,]{0,80}", seq in 0u64..5) {
        let mut p = KmsgParser::new(Vec::new(), 0, None);
        let mut out = Vec::new();
        let raw = format!("3,{seq},1,-;{prefix}{body}");
        p.feed(raw.as_bytes(), &mut out);
        p.feed(b"4,9,1,-;Call Trace:", &mut out);
        p.feed(format!("4,10,1,-; {body}+0x1/0x2").as_bytes(), &mut out);
        p.flush_expired(std::time::Instant::now() + std::time::Duration::from_secs(1), &mut out);
        prop_assert!(p.stats.records == 3);
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
        .filter(|r| attr(r, "system.device") == Some(&AttrValue::Str(dev.clone())))
        .collect();
    assert_eq!(ev.len(), 1, "{out:?}");
    assert_eq!(event(ev[0]), "ReadonlyFilesystem");
    assert!(matches!(attr(ev[0], "linux.kmsg.seq"), Some(AttrValue::I64(s)) if *s > 0));
    assert!(
        src.counters()
            .iter()
            .any(|(k, v)| k == "kmsg_records" && *v >= 1)
    );
}
