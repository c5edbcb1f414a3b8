//! Every parser of kernel-provided text or binary the collector (and the privhelper) reads:
//! /proc/PID/stat, status, schedstat, cmdline, io; /proc/stat, meminfo, loadavg, uptime,
//! vmstat, swaps, diskstats, net/dev, net/sockstat, pressure/*, self/mountinfo; /etc/passwd
//! and group; cgroup v2 and v1 files (memory.stat, memory.max, cpu.stat, cpuacct.stat,
//! io.stat, blkio) and cgroup paths (container and pod ids); kubelet directory names;
//! netlink RTM_NEWLINK and sock_diag datagrams; BPF ring buffer records and flow table
//! entries, /sys/devices/system/cpu/possible; task iterator dumps. The first byte picks
//! the parser, the rest is the file (so each parser gets the whole corpus' attention).

#![no_main]

use libfuzzer_sys::fuzz_target;
use vigil_collector::cgroups::{self, CgStats};
use vigil_collector::ebpf;
use vigil_collector::{
    diskstats, host, k8s, mountinfo, netdev, netlink, pressure, procs, sockets, users, util,
};
use vigil_ipc_proto::procstatus::ProcStatusFields;

fuzz_target!(|data: &[u8]| {
    let Some((&which, buf)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(buf);
    let mut cg = CgStats::default();
    match which % 32 {
        0 => {
            let _ = procs::parse_stat(buf);
        }
        1 => {
            let _ = procs::parse_status_switches(buf);
            let _ = ProcStatusFields::parse(&text);
        }
        2 => {
            let _ = procs::parse_schedstat_pcount(buf);
            let _ = procs::cmdline_args(buf);
        }
        3 => {
            let _ = vigil_privhelper::procio::parse_io(&text);
        }
        4 => {
            let _ = host::parse_proc_stat(buf);
        }
        5 => {
            let _ = host::parse_meminfo(buf);
        }
        6 => {
            let _ = host::parse_loadavg(buf);
            let _ = host::parse_uptime(buf);
        }
        7 => {
            let _ = host::parse_vmstat(buf);
        }
        8 => {
            let _ = host::parse_swaps(buf);
        }
        9 => {
            let _ = diskstats::parse(buf);
        }
        10 => {
            let _ = netdev::parse_net_dev(buf);
        }
        11 => {
            let _ = sockets::parse_sockstat(buf);
        }
        12 => {
            let _ = pressure::parse(buf);
        }
        13 => {
            let (mounts, _) = mountinfo::parse(buf);
            let _ = vigil_collector::disks::real_filesystems(&mounts);
            let _ = cgroups::Hierarchies::from_mounts(&mounts);
        }
        14 => {
            let _ = users::parse_id_file(buf);
        }
        15 => {
            let _ = cgroups::parse_memory_stat(buf, false, &mut cg);
            let _ = cg.working_set();
        }
        16 => {
            let _ = cgroups::parse_memory_stat(buf, true, &mut cg);
            let _ = cg.working_set();
        }
        17 => {
            let _ = cgroups::parse_limit(buf);
            let _ = cgroups::parse_single(buf);
        }
        18 => {
            let _ = cgroups::parse_v2_cpu_stat(buf, &mut cg);
        }
        19 => {
            let _ = cgroups::parse_v1_cpu_stat(buf, &mut cg);
            let _ = cgroups::parse_cpuacct_stat(buf, &mut cg);
        }
        20 => {
            let _ = cgroups::parse_io_stat(buf, &mut cg);
        }
        21 => {
            let _ = cgroups::parse_blkio(buf);
        }
        22 => {
            let _ = cgroups::identify(&text);
            let _ = ebpf::cgroup::container_id(&text);
            let _ = ebpf::cgroup::pod_uid(&text);
        }
        23 => {
            let _ = k8s::parse_pod_dir(&text);
            let _ = k8s::parse_container_log(&text);
        }
        24 => {
            let mut out = Vec::new();
            let _ = netlink::parse_datagram(buf, &mut out);
            let _ = netlink::parse_link(buf);
        }
        25 => {
            let mut per_state = [0u64; 13];
            let _ = sockets::parse_datagram(buf, &mut per_state);
        }
        26 => {
            let _ = ebpf::records::parse(buf);
        }
        27 => {
            // One flow table entry: key, then value; and the possible-CPUs list.
            let (k, v) = buf.split_at(buf.len().min(ebpf::flowmap::KEY_SIZE));
            let _ = ebpf::flowmap::parse_entry(k, v);
            let _ = ebpf::flowmap::parse_possible(&text);
        }
        28 => {
            let mut out = Vec::new();
            let _ = vigil_collector::taskiter::decode_dump(buf, &mut out);
            for r in &out {
                let _ = (r.state_letter(), r.start_ticks(), r.cputime_ns((1, 1)));
            }
        }
        _ => {
            let _ = util::parse_u64(buf);
            let _ = util::parse_i64(buf);
            let _ = util::parse_f64(buf);
        }
    }
});
