//! Every parser on real files copied from this machine (tests/fixtures/), and on truncated,
//! garbage and huge variants of them: errors, never panics.

use vigil_collector::{cgroups, host, mountinfo, netdev, procs, users};

fn fx(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// Truncations at every length, flipped bytes, garbage, a huge line: none may panic.
fn hostile_variants(good: &[u8]) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = (0..good.len().min(400))
        .map(|n| good[..n].to_vec())
        .collect();
    let mut flipped = good.to_vec();
    for (i, b) in flipped.iter_mut().enumerate() {
        if i % 7 == 0 {
            *b ^= 0xa5;
        }
    }
    v.push(flipped);
    v.push(
        (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect(),
    );
    v.push(vec![b'9'; 2 << 20]);
    v.push(b"\xff\xfe\x00\n\n:::: -- ) (".to_vec());
    v
}

#[test]
fn proc_stat_of_a_real_process() {
    let b = fx("proc_self_stat");
    let s = procs::parse_stat(&b).unwrap();
    assert!(s.pid > 0 && s.ppid > 0);
    assert_eq!(s.comm, b"cp");
    assert!(s.vsize > 0 && s.rss > 0 && s.num_threads >= 1);
    let mut errors = 0;
    for h in hostile_variants(&b) {
        if procs::parse_stat(&h).is_err() {
            errors += 1;
        }
    }
    // Every cut before the 24th field (rss) is an error.
    let rss_field = b
        .iter()
        .enumerate()
        .filter(|(_, c)| **c == b' ')
        .nth(22)
        .map(|(i, _)| i)
        .unwrap();
    assert!(errors >= rss_field, "{errors} < {rss_field}");
}

#[test]
fn host_files() {
    let s = host::parse_proc_stat(&fx("proc_stat")).unwrap();
    assert!(s.cpus[0].user > 0 && s.cpus[0].idle > 0 && s.btime > 1_600_000_000);
    assert_eq!(s.processes, 245_719);
    let m = host::parse_meminfo(&fx("meminfo")).unwrap();
    assert!(m.total > m.free && m.available.is_some_and(|a| a > 0));
    let l = host::parse_loadavg(&fx("loadavg")).unwrap();
    assert!(l.iter().all(|x| *x >= 0.0));
    assert!(host::parse_uptime(&fx("uptime")).unwrap() > 0.0);
    for f in ["proc_stat", "meminfo", "loadavg", "uptime"] {
        for h in hostile_variants(&fx(f)) {
            let _ = host::parse_proc_stat(&h);
            let _ = host::parse_meminfo(&h);
            let _ = host::parse_loadavg(&h);
            let _ = host::parse_uptime(&h);
        }
    }
    assert!(host::parse_proc_stat(&fx("proc_stat")[..10]).is_err());
}

#[test]
fn net_dev_and_mountinfo() {
    let (ifs, bad) = netdev::parse_net_dev(&fx("net_dev"));
    assert_eq!(bad, 0);
    assert!(ifs.iter().any(|i| i.name == "lo"));
    let (mounts, bad) = mountinfo::parse(&fx("mountinfo"));
    assert_eq!(bad, 0);
    assert!(mounts.iter().any(|m| m.mount_point == "/"));
    let h = cgroups::Hierarchies::from_mounts(&mounts);
    assert_eq!(
        h.v2.as_deref(),
        Some(std::path::Path::new("/sys/fs/cgroup/unified"))
    );
    assert_eq!(
        h.memory.as_deref(),
        Some(std::path::Path::new("/sys/fs/cgroup/memory"))
    );
    assert_eq!(
        h.cpuacct.as_deref(),
        Some(std::path::Path::new("/sys/fs/cgroup/cpuacct"))
    );
    let real = vigil_collector::disks::real_filesystems(&mounts);
    assert!(
        real.iter()
            .all(|m| m.fstype != "proc" && m.fstype != "cgroup")
    );
    for f in ["net_dev", "mountinfo"] {
        for h in hostile_variants(&fx(f)) {
            let _ = netdev::parse_net_dev(&h);
            let _ = mountinfo::parse(&h);
        }
    }
    // A pure v2 layout.
    let (m2, _) = mountinfo::parse(
        b"30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n",
    );
    let h2 = cgroups::Hierarchies::from_mounts(&m2);
    assert_eq!(
        h2.v2.as_deref(),
        Some(std::path::Path::new("/sys/fs/cgroup"))
    );
    assert!(h2.memory.is_none());
}

#[test]
fn cgroup_files() {
    let mut s = cgroups::CgStats::default();
    cgroups::parse_v2_cpu_stat(&fx("v2_cpu.stat"), &mut s).unwrap();
    assert_eq!(s.cpu_usage_ns, Some(0));
    cgroups::parse_v1_cpu_stat(&fx("v1_cpu.stat"), &mut s).unwrap();
    assert_eq!(s.nr_throttled, Some(0));
    cgroups::parse_cpuacct_stat(&fx("v1_cpuacct.stat"), &mut s).unwrap();
    assert_eq!(s.cpu_user_ns, Some(0));
    assert_eq!(cgroups::parse_single(&fx("v1_cpuacct.usage")), Ok(0));
    assert_eq!(
        cgroups::parse_limit(&fx("v1_memory.limit_in_bytes")),
        Ok(None)
    );
    assert_eq!(cgroups::parse_limit(&fx("v1_pids.max")), Ok(None));
    assert_eq!(
        cgroups::parse_blkio(&fx("v1_blkio.throttle.io_service_bytes")),
        Ok((0, 0))
    );
    cgroups::parse_io_stat(&fx("v2_io.stat_handmade"), &mut s).unwrap();
    assert_eq!(
        (
            s.io_read_bytes,
            s.io_write_bytes,
            s.io_read_ops,
            s.io_write_ops
        ),
        (Some(1048586), Some(4116), Some(13), Some(3))
    );
    for f in [
        "v2_cpu.stat",
        "v1_cpu.stat",
        "v1_cpuacct.stat",
        "v2_io.stat_handmade",
        "v1_blkio.throttle.io_serviced",
    ] {
        for h in hostile_variants(&fx(f)) {
            let mut s = cgroups::CgStats::default();
            let _ = cgroups::parse_v2_cpu_stat(&h, &mut s);
            let _ = cgroups::parse_v1_cpu_stat(&h, &mut s);
            let _ = cgroups::parse_cpuacct_stat(&h, &mut s);
            let _ = cgroups::parse_io_stat(&h, &mut s);
            let _ = cgroups::parse_blkio(&h);
            let _ = cgroups::parse_limit(&h);
        }
    }
    assert!(cgroups::parse_v2_cpu_stat(b"usage_usec \xff", &mut s).is_err());
}

#[test]
fn passwd_and_group() {
    let (u, bad) = users::parse_id_file(&fx("passwd"));
    assert_eq!(bad, 0);
    assert_eq!(u.get(&0).map(String::as_str), Some("root"));
    assert_eq!(u.get(&65534).map(String::as_str), Some("nobody"));
    let (g, _) = users::parse_id_file(&fx("group"));
    assert_eq!(g.get(&0).map(String::as_str), Some("root"));
    for h in hostile_variants(&fx("passwd")) {
        let _ = users::parse_id_file(&h);
    }
}
