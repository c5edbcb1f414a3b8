//! One full cycle against this machine's real /proc and cgroups (root: creates cgroups in the
//! v1 hierarchies and in cgroup2, starts a child as user nobody).

mod common;

use std::os::unix::process::CommandExt;
use std::path::Path;
use vigil_ipc_proto::Feature;

use common::*;
use vigil_ipc_proto::{CollectorConfig, MetricValue};

const ID: &str = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";

struct Cleanup(Vec<String>, std::process::Child);
impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = self.1.kill();
        let _ = self.1.wait();
        for d in self.0.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

#[test]
fn full_cycle_sees_a_nobody_process_and_its_cgroups() {
    assert_eq!(
        nix::unistd::geteuid().as_raw(),
        0,
        "this test runs as root (CI is root)"
    );
    let top = format!("vigil-ctest-{}", std::process::id());
    let rel = format!("{top}/docker-{ID}.scope");
    let mut dirs = Vec::new();
    let mut v1 = Vec::new();
    for c in ["memory", "cpu", "cpuacct", "pids", "blkio", "unified"] {
        let base = format!("/sys/fs/cgroup/{c}");
        if !Path::new(&base).exists() {
            continue;
        }
        std::fs::create_dir_all(format!("{base}/{rel}")).unwrap();
        dirs.push(format!("{base}/{top}"));
        dirs.push(format!("{base}/{rel}"));
        if c != "unified" {
            v1.push(c);
        }
    }
    std::fs::write(
        format!("/sys/fs/cgroup/memory/{rel}/memory.limit_in_bytes"),
        "67108864",
    )
    .unwrap();
    std::fs::write(format!("/sys/fs/cgroup/pids/{rel}/pids.max"), "50").unwrap();
    let child = std::process::Command::new("sleep")
        .arg("30")
        .uid(65534)
        .gid(65534)
        .spawn()
        .unwrap();
    let pid = child.id();
    let _c = Cleanup(dirs, child);
    for c in ["memory", "pids", "cpu", "cpuacct"] {
        std::fs::write(
            format!("/sys/fs/cgroup/{c}/{rel}/cgroup.procs"),
            pid.to_string(),
        )
        .unwrap();
    }
    // Give exec a moment so comm/cmdline are sleep's.
    std::thread::sleep(std::time::Duration::from_millis(100));

    let (cy, out) = common::one_cycle(
        &[Feature::ProcessFds],
        CollectorConfig {
            netns: false,
            ..Default::default()
        },
    );
    assert_eq!(cy.stats.cycles, 1);
    assert!(cy.stats.processes > 3);

    // The process, another user's, with its fd count read by stat (no privilege).
    let p = common::process(&out, pid).expect("child sampled");
    assert_eq!(p.user_name, "nobody");
    assert_eq!((p.uid, p.gid), (65534, 65534));
    let (groups, _) = vigil_collector::users::parse_id_file(&std::fs::read("/etc/group").unwrap());
    let g = groups
        .get(&65534)
        .cloned()
        .unwrap_or_else(|| "65534".into());
    assert_eq!(p.group_name, g);
    assert_eq!(p.executable_name, "sleep");
    assert_eq!(p.command_args, "sleep\x0030\x00");
    assert_eq!(p.ppid, std::process::id());
    assert_eq!(p.state, b'S');
    assert!(p.memory_rss_bytes > 0 && p.memory_virtual_bytes >= p.memory_rss_bytes);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count() as u32;
    assert_eq!(p.open_fds, Some(fds));
    assert_eq!(
        p.sockets, None,
        "socket counts are the privhelper's (opt-in)"
    );
    let boot = cy.host.boot_time_ns;
    assert!(p.start_time_unix_nano > boot && p.start_time_unix_nano <= p.time_unix_nano);

    // fd counts off: absent.
    let (_, out2) = common::one_cycle(
        &[],
        CollectorConfig {
            process_fds: false,
            netns: false,
            ..Default::default()
        },
    );
    assert_eq!(common::process(&out2, pid).unwrap().open_fds, None);

    // The v1 container with its limit, and the v2 one.
    let by_version = |v: &str| {
        out.iter().find(|r| {
            res(r, "container.id") == Some(&s(ID)) && res(r, "linux.cgroup.version") == Some(&s(v))
        })
    };
    let c1 = by_version("v1").expect("v1 container");
    assert_eq!(
        metric(c1, "container.memory.usage.limit").map(|m| m.value),
        Some(MetricValue::I64(67_108_864))
    );
    assert_eq!(
        metric(c1, "container.pids.count").map(|m| m.value),
        Some(MetricValue::I64(1))
    );
    assert_eq!(
        metric(c1, "container.pids.limit").map(|m| m.value),
        Some(MetricValue::I64(50))
    );
    assert!(metric(c1, "container.cpu.time").is_some());
    assert!(metric(c1, "container.cpu.throttling_data.throttled_periods").is_some());
    let c2 = by_version("v2").expect("v2 container");
    assert!(metric(c2, "container.cpu.time").is_some());

    // Host, disks, network.
    let h = out
        .iter()
        .find(|r| metric(r, "system.cpu.time").is_some())
        .expect("host record");
    assert!(
        metric(h, "system.memory.usage").is_some()
            && metric(h, "system.cpu.load_average.15m").is_some()
    );
    assert!(
        out.iter()
            .any(|r| metric(r, "system.filesystem.usage").is_some_and(|m| m
                .attributes
                .iter()
                .any(|a| a.key == "system.filesystem.mountpoint" && a.value == s("/"))))
    );
    assert!(out.iter().any(|r| {
        metric(r, "system.network.io")
            .is_some_and(|m| m.attributes.iter().any(|a| a.value == s("lo")))
    }));
}
