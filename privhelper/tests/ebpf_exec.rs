//! The exec/exit program (run as root): real processes' exec and exit events through the
//! collector's mmap consumer, a second request sharing the map, attribution to a container's
//! cgroup.

mod common;

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::Command;
use std::time::{Duration, Instant};

use vigil_collector::ebpf::{BpfRecord, EbpfSource, ProcEventKind};
use vigil_ipc_proto::{BpfProgram, PrivResponse};
use vigil_privhelper::bpf::BpfManager;

use common::*;

fn fdinfo_field(fd: &OwnedFd, name: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn exec_and_exit_of_20_processes() {
    let mut mgr = BpfManager::new();
    let cfg = init(&ALL, &[]);
    let att = mgr.attach(BpfProgram::ExecExit, &cfg).expect("attach exec");
    assert_eq!(att.ring_size(), Some(256 * 1024));
    assert_eq!(
        att.response,
        PrivResponse::BpfRingbuf {
            program: BpfProgram::ExecExit,
            ring_size: 256 * 1024
        }
    );
    // A second request: a new descriptor for the same map, no second load.
    let again = mgr.attach(BpfProgram::ExecExit, &cfg).expect("re-attach");
    assert_ne!(again.fds[0].as_raw_fd(), att.fds[0].as_raw_fd());
    assert_eq!(
        fdinfo_field(&again.fds[0], "map_id:"),
        fdinfo_field(&att.fds[0], "map_id:")
    );
    assert_eq!(again.prog_ids, att.prog_ids);
    assert_eq!(mgr.prog_ids().len(), 2);
    drop(again);

    let mut src = EbpfSource::from_response(&att.response, att.fds).expect("mmap");
    let mut pids = HashSet::new();
    for _ in 0..20 {
        let st = Command::new("/bin/true").spawn().expect("spawn /bin/true");
        pids.insert(st.id());
        let mut st = st;
        assert!(st.wait().unwrap().success());
    }
    let mut three = Command::new("/bin/sh")
        .args(["-c", "exit 3"])
        .spawn()
        .unwrap();
    let three_pid = three.id();
    assert_eq!(three.wait().unwrap().code(), Some(3));
    let mut killed = Command::new("/bin/sh")
        .args(["-c", "kill -9 $$"])
        .spawn()
        .unwrap();
    let killed_pid = killed.id();
    killed.wait().unwrap();

    // The ring buffer descriptor is pollable: readable now that records are pending.
    let mut pfd = libc::pollfd {
        fd: src.ring_fd().unwrap(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll on one live pollfd.
    let r = unsafe { libc::poll(&mut pfd, 1, 5000) };
    assert_eq!((r, pfd.revents & libc::POLLIN), (1, libc::POLLIN));
    assert!(src.pending_bytes() > 0);

    let mut execs: HashMap<u32, String> = HashMap::new();
    let mut exits: HashMap<u32, Option<i32>> = HashMap::new();
    let mut ppids: HashMap<u32, u32> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let me = std::process::id();
    loop {
        src.drain_raw(usize::MAX, |r| {
            if let BpfRecord::Proc(e) = r {
                match e.kind {
                    ProcEventKind::Exec => {
                        ppids.insert(e.pid, e.ppid);
                        execs.insert(e.pid, e.comm);
                    }
                    ProcEventKind::Exit => {
                        exits.insert(e.pid, e.exit_code());
                    }
                }
            }
        })
        .unwrap();
        let done = pids
            .iter()
            .chain([&three_pid, &killed_pid])
            .all(|p| execs.contains_key(p) && exits.contains_key(p));
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "missing events: execs {execs:?} exits {exits:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    for p in &pids {
        assert_eq!(execs[p], "true", "comm of {p}");
        assert_eq!(exits[p], Some(0), "exit code of {p}");
        assert_eq!(ppids[p], me, "parent of {p}");
    }
    assert_eq!(execs[&three_pid], "sh");
    assert_eq!(exits[&three_pid], Some(3));
    assert_eq!(exits[&killed_pid], None, "killed by a signal: no exit code");
    assert_eq!(mgr.drops(BpfProgram::ExecExit), Some(0));
    assert_eq!(src.stats.malformed, 0);

    // The records become log records.
    let mut out = Vec::new();
    Command::new("/bin/true").status().unwrap();
    std::thread::sleep(Duration::from_millis(50));
    src.drain(&mut out, &[]).unwrap();
    assert!(out.iter().any(|r| matches!(r,
        vigil_ipc_proto::Record::Log { log, .. } if log.event_name == "process.exit"
            && log.attributes.iter().any(|kv| kv.key == "process.exit.code"))));

    let ids = mgr.prog_ids();
    for id in &ids {
        assert!(prog_exists(*id));
    }
    drop(src);
    drop(mgr);
    assert_detached(&ids);
}

/// A cgroup v2 directory made for a test, removed on drop.
struct TestCgroup {
    outer: std::path::PathBuf,
    dir: std::path::PathBuf,
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // The exited members leave asynchronously: retry a little.
        for _ in 0..50 {
            let _ = std::fs::remove_dir(&self.dir);
            if std::fs::remove_dir(&self.outer).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn exec_in_a_container_cgroup_is_attributed() {
    use std::os::unix::fs::MetadataExt;
    use vigil_collector::ebpf::CgroupResolver;
    const CID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let outer = std::path::PathBuf::from(format!(
        "{}/vigil-ebpf-test-{}",
        cgroup2_mount(),
        std::process::id()
    ));
    let dir = outer.join(format!("docker-{CID}.scope"));
    std::fs::create_dir_all(&dir).expect("mkdir in the cgroup v2 hierarchy");
    let cg = TestCgroup { outer, dir };
    let ino = std::fs::metadata(&cg.dir).unwrap().ino();

    let mut mgr = BpfManager::new();
    let att = mgr.attach(BpfProgram::ExecExit, &init(&ALL, &[])).unwrap();
    let mut src = EbpfSource::from_response(&att.response, att.fds).unwrap();
    src.set_cgroup_resolver(CgroupResolver::discover().expect("cgroup2 mount"));
    let script = format!(
        "echo $$ > {}/cgroup.procs && exec /bin/true",
        cg.dir.display()
    );
    let mut c = Command::new("/bin/sh")
        .args(["-c", &script])
        .spawn()
        .unwrap();
    let pid = i64::from(c.id());
    assert!(c.wait().unwrap().success());

    let deadline = Instant::now() + Duration::from_secs(10);
    let mut out = Vec::new();
    let attrs = loop {
        src.drain(&mut out, &[]).unwrap();
        // The second exec of that pid (sh -> true) happened inside the cgroup.
        let found = out.iter().find_map(|r| match r {
            vigil_ipc_proto::Record::Log { log, .. }
                if log.event_name == "process.exec"
                    && log.body.starts_with("exec true")
                    && log.attributes.iter().any(|kv| {
                        kv.key == "process.pid" && kv.value == vigil_ipc_proto::AttrValue::I64(pid)
                    }) =>
            {
                Some(log.attributes.clone())
            }
            _ => None,
        });
        if let Some(a) = found {
            break a;
        }
        assert!(Instant::now() < deadline, "no exec of true for {pid}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let get = |k: &str| {
        attrs
            .iter()
            .find(|kv| kv.key == k)
            .map(|kv| kv.value.clone())
    };
    assert_eq!(
        get("container.id"),
        Some(vigil_ipc_proto::AttrValue::Str(CID.into()))
    );
    let cg_path = format!(
        "0::/vigil-ebpf-test-{}/docker-{CID}.scope",
        std::process::id()
    );
    assert_eq!(
        get("process.linux.cgroup"),
        Some(vigil_ipc_proto::AttrValue::Str(cg_path))
    );
    // And the raw id is the directory's inode.
    let mut r = CgroupResolver::discover().unwrap();
    assert!(
        r.path(ino)
            .unwrap()
            .ends_with(&format!("docker-{CID}.scope"))
    );
    drop(src);
    drop(mgr);
    drop(cg);
}
