//! Kernel lines for the kmsg benches: what a busy node's ring holds (drivers, network,
//! filesystems, audit, containers coming and going), with one line in a hundred matching a
//! rule and an oops now and then; as /dev/kmsg records with increasing sequence numbers.

use std::time::Duration;

/// (level, message) of ordinary lines.
const ORDINARY: &[(u8, &str)] = &[
    (6, "eth0: renamed from veth3f2a1c9"),
    (
        6,
        "IPv6: ADDRCONF(NETDEV_CHANGE): veth3f2a1c9: link becomes ready",
    ),
    (6, "cni0: port 3(veth3f2a1c9) entered blocking state"),
    (6, "cni0: port 3(veth3f2a1c9) entered disabled state"),
    (6, "device veth3f2a1c9 entered promiscuous mode"),
    (6, "cni0: port 3(veth3f2a1c9) entered forwarding state"),
    (
        5,
        "audit: type=1400 audit(1700000000.123:456): apparmor=\"STATUS\" operation=\"profile_load\" profile=\"unconfined\" name=\"cri-containerd.apparmor.d\" pid=4242 comm=\"apparmor_parser\"",
    ),
    (
        6,
        "EXT4-fs (sdb1): mounted filesystem 0b6b9c2e-5f0a-4d2b-9a6e-3c1d2e4f5a6b r/w with ordered data mode. Quota mode: none.",
    ),
    (6, "overlayfs: idmapped layers are currently not supported"),
    (
        4,
        "overlayfs: fs on '/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots/123/fs' does not support file handles, falling back to xino=off.",
    ),
    (
        6,
        "xfs filesystem being mounted at /data supports timestamps until 2038-01-19 (0x7fffffff)",
    ),
    (
        6,
        "usb 1-1: new high-speed USB device number 2 using xhci_hcd",
    ),
    (
        6,
        "usb 1-1: New USB device found, idVendor=0627, idProduct=0001, bcdDevice= 0.00",
    ),
    (
        4,
        "TCP: request_sock_TCP: Possible SYN flooding on port 8080. Sending cookies.  Check SNMP counters.",
    ),
    (
        6,
        "nf_conntrack: default automatic helper assignment has been turned off for security reasons",
    ),
    (4, "nf_conntrack: nf_conntrack: table full, dropping packet"),
    (
        3,
        "blk_update_request: I/O error, dev sdc, sector 2048 op 0x0:(READ) flags 0x80700 phys_seg 1 prio class 0",
    ),
    (
        6,
        "e1000e 0000:00:19.0 eth1: NIC Link is Up 1000 Mbps Full Duplex, Flow Control: Rx/Tx",
    ),
    (6, "bpfilter: Loaded bpfilter_umh pid 1234"),
    (5, "random: crng init done"),
    (4, "hrtimer: interrupt took 2473802 ns"),
    (
        6,
        "perf: interrupt took too long (3143 > 3131), lowering kernel.perf_event_max_sample_rate to 63500",
    ),
    (4, "kauditd_printk_skb: 27 callbacks suppressed"),
    (
        6,
        "systemd[1]: Started cri-containerd-6a1b2c3d4e5f.scope - libcontainer container 6a1b2c3d4e5f.",
    ),
    (6, "Bridge firewalling registered"),
    (6, "virtio_net virtio1 enp1s0: renamed from eth0"),
    (3, "print_req_error: I/O error, dev nvme0n1, sector 123456"),
    (6, "docker0: port 1(vethab12cd3) entered disabled state"),
    (
        4,
        "cgroup: fork rejected by pids controller in /kubepods/burstable/pod1234/abcd",
    ),
    (6, "NFSD: Using nfsdcld client tracking operations."),
];

/// Lines the built-in rules match.
const MATCHING: &[(u8, &str)] = &[
    (
        3,
        "Memory cgroup out of memory: Killed process 4321 (stress) total-vm:107920kB, anon-rss:98388kB, file-rss:1280kB, shmem-rss:0kB, UID:0 pgtables:244kB oom_score_adj:939",
    ),
    (
        6,
        "crash[999]: segfault at 0 ip 000055d5c0a8d139 sp 00007ffd1b0a3f40 error 6 in crash[1139,55d5c0a8d000+1000] likely on CPU 1 (core 1, socket 0)",
    ),
    (
        3,
        "Buffer I/O error on dev sdc, logical block 256, async page read",
    ),
    (
        3,
        "EXT4-fs error (device sdb1): ext4_find_entry:1455: inode #2: comm ls: reading directory lblock 0",
    ),
];

const OOPS: &[(u8, &str)] = &[
    (
        1,
        "BUG: kernel NULL pointer dereference, address: 0000000000000000",
    ),
    (1, "#PF: supervisor write access in kernel mode"),
    (4, "Oops: Oops: 0002 [#1] SMP NOPTI"),
    (
        4,
        "CPU: 1 UID: 0 PID: 4242 Comm: bash Not tainted 6.18.0 #1 PREEMPT(voluntary) ",
    ),
    (4, "RIP: 0010:sysrq_handle_crash+0x16/0x20"),
    (4, "Call Trace:"),
    (4, " <TASK>"),
    (4, " __handle_sysrq+0x9b/0x190"),
    (4, " write_sysrq_trigger+0x61/0x70"),
    (4, " </TASK>"),
    (4, "---[ end trace 0000000000000000 ]---"),
];

/// `n` records: ordinary lines, one in a hundred matching a rule, an oops every 10,000 lines;
/// 100 µs of kernel time apart (10,000 lines/s).
pub fn records(n: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::with_capacity(n);
    let mut k = 0usize;
    while out.len() < n {
        let (level, msg) = if k % 10_000 == 9_000 {
            for (l, m) in OOPS {
                out.push(record(out.len(), *l, m));
            }
            k += 1;
            continue;
        } else if k % 100 == 50 {
            MATCHING[(k / 100) % MATCHING.len()]
        } else {
            ORDINARY[k % ORDINARY.len()]
        };
        out.push(record(out.len(), level, msg));
        k += 1;
    }
    out.truncate(n);
    out
}

fn record(i: usize, level: u8, msg: &str) -> Vec<u8> {
    let ts = 1_000_000_000 + i as u64 * 100;
    format!("{level},{},{ts},-;{msg}", 1000 + i).into_bytes()
}

/// CPU time of this process (user + system).
pub fn cpu_time() -> Duration {
    let u = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF).unwrap();
    let t =
        |tv: nix::sys::time::TimeVal| Duration::new(tv.tv_sec() as u64, tv.tv_usec() as u32 * 1000);
    t(u.user_time()) + t(u.system_time())
}

/// Lines per CPU-second of `f` over `records`, best of `rounds`.
pub fn rate(records: &[Vec<u8>], rounds: usize, mut f: impl FnMut(&[Vec<u8>])) -> f64 {
    let mut best = 0f64;
    for _ in 0..rounds {
        let c0 = cpu_time();
        f(records);
        let cpu = (cpu_time() - c0).as_secs_f64().max(1e-9);
        best = best.max(records.len() as f64 / cpu);
    }
    best
}

/// One result line: lines/s per core, and the share of a core 10,000 lines/s take.
pub fn report(what: &str, per_s: f64) {
    println!(
        "{what:<58} {:>12.0} lines/s per core   {:>6.2} % of a core at 10,000 lines/s",
        per_s,
        1e6 / per_s
    );
}
