//! One collection cycle: host, processes (+ fd counts from the privhelper), containers, disks,
//! network interfaces of the host and of other network namespaces.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Instant;

use vigil_ipc_proto::{
    Channel, FdKind, InitConfig, KeyValue, MAX_FD_STAT_PIDS, NetnsTarget, PrivRequest,
    PrivResponse, ProcFdStat, Record,
};

use crate::util::{Stamp, now_unix_nano};

#[derive(Debug, Default, Clone, Copy)]
pub struct CycleStats {
    pub cycles: u64,
    pub records: u64,
    pub parse_errors: u64,
    pub processes: u64,
    pub vanished: u64,
    pub last_cycle_us: u64,
    pub fdstat_errors: u64,
    pub netns_errors: u64,
    pub netns_sockets: u64,
    pub peer_errors: u64,
}

pub struct Cycle {
    pub host_name: String,
    pub host_resource: Vec<KeyValue>,
    pub host: crate::host::HostCollector,
    pub procs: crate::procs::ProcScanner,
    pub users: crate::users::Users,
    pub cgroups: crate::cgroups::CgroupCollector,
    pub disks: crate::disks::DiskCollector,
    pub netdev: crate::netdev::NetDevCollector,
    /// Network namespace inode → netlink socket inside it (from the privhelper).
    netns: HashMap<u64, (OwnedFd, Option<String>)>,
    own_netns: u64,
    nl_buf: Vec<u8>,
    nl_seq: u32,
    pub cfg: vigil_ipc_proto::CollectorConfig,
    pub features: Vec<String>,
    pub stats: CycleStats,
    start_ns: u64,
}

impl Cycle {
    pub fn new(init: &InitConfig) -> Self {
        let host_root = PathBuf::from(&init.host_root);
        let proc_root = PathBuf::from("/proc");
        let own_netns = std::fs::metadata("/proc/self/ns/net")
            .map(|m| m.ino())
            .unwrap_or(0);
        Cycle {
            host_name: init.hostname.clone(),
            host_resource: vec![KeyValue::str("host.name", init.hostname.as_str())],
            host: crate::host::HostCollector::new(&proc_root),
            procs: crate::procs::ProcScanner::new(&proc_root),
            users: crate::users::Users::new(&host_root),
            cgroups: crate::cgroups::CgroupCollector::new(crate::cgroups::Hierarchies::discover(
                &proc_root,
            )),
            disks: crate::disks::DiskCollector::new(&host_root, &proc_root),
            netdev: crate::netdev::NetDevCollector::new(&proc_root),
            netns: HashMap::new(),
            own_netns,
            nl_buf: Vec::new(),
            nl_seq: 0,
            cfg: init.collector.clone(),
            features: init.enabled_features.clone(),
            stats: CycleStats::default(),
            start_ns: now_unix_nano(),
        }
    }

    fn on(&self, f: &str) -> bool {
        self.features.iter().any(|x| x == f)
    }

    /// Run one cycle, appending its records to `out`.
    pub fn collect(&mut self, privhelper: &mut Channel, out: &mut Vec<Record>) {
        let t0 = Instant::now();
        let st = Stamp {
            start: self.start_ns,
            now: now_unix_nano(),
        };
        let before = out.len();
        if self.cfg.host {
            self.stats.parse_errors += self.host.collect(st, &self.host_resource, out);
        }
        if self.cfg.processes {
            self.users.refresh();
            match self.procs.scan() {
                Ok(s) => {
                    self.stats.processes = s.processes;
                    self.stats.vanished += s.vanished;
                    self.stats.parse_errors += s.parse_errors;
                }
                Err(_) => self.stats.parse_errors += 1,
            }
            let fds = if self.cfg.process_fds && self.on("process_fds") {
                self.fd_stats(privhelper)
            } else {
                None
            };
            self.procs.records(
                st,
                &self.host_name,
                self.host.boot_time_ns,
                &self.users,
                fds.as_ref(),
                out,
            );
        }
        if self.cfg.containers {
            let e0 = self.cgroups.parse_errors;
            self.cgroups.collect(st, &self.host_name, out);
            self.stats.parse_errors += self.cgroups.parse_errors - e0;
        }
        if self.cfg.disks {
            let e0 = self.disks.parse_errors;
            self.disks.collect(st, &self.host_name, out);
            self.stats.parse_errors += self.disks.parse_errors - e0;
        }
        if self.cfg.network {
            let e0 = self.netdev.parse_errors;
            self.netdev.collect(st, &self.host_resource, out);
            self.stats.parse_errors += self.netdev.parse_errors - e0;
            if self.cfg.netns && self.on("netns_metrics") {
                self.netns_metrics(privhelper, st, out);
            }
        }
        self.stats.cycles += 1;
        let _ = before;
        self.stats.last_cycle_us = t0.elapsed().as_micros() as u64;
    }

    /// fd and socket counts of every sampled pid, in requests of at most MAX_FD_STAT_PIDS.
    pub fn fd_stats(&mut self, privhelper: &mut Channel) -> Option<HashMap<u32, ProcFdStat>> {
        let pids: Vec<u32> = self.procs.samples.iter().map(|s| s.pid).collect();
        let mut m = HashMap::with_capacity(pids.len());
        for chunk in pids.chunks(MAX_FD_STAT_PIDS) {
            if privhelper
                .send(&PrivRequest::ProcFdStats {
                    pids: chunk.to_vec(),
                })
                .is_err()
            {
                self.stats.fdstat_errors += 1;
                return None;
            }
            match privhelper.recv::<PrivResponse>() {
                Ok(PrivResponse::FdStats(v)) => {
                    for s in v {
                        m.insert(s.pid, s);
                    }
                }
                _ => {
                    self.stats.fdstat_errors += 1;
                    return None;
                }
            }
        }
        Some(m)
    }

    fn netns_metrics(&mut self, privhelper: &mut Channel, st: Stamp, out: &mut Vec<Record>) {
        if privhelper.send(&PrivRequest::ListNetns).is_err() {
            self.stats.netns_errors += 1;
            return;
        }
        let list = match privhelper.recv::<PrivResponse>() {
            Ok(PrivResponse::Netns(v)) => v,
            _ => {
                self.stats.netns_errors += 1;
                return;
            }
        };
        // Forget namespaces that disappeared.
        self.netns
            .retain(|ino, _| list.iter().any(|n| n.inode == *ino));
        for ns in list.iter().take(1024) {
            if ns.inode == self.own_netns {
                continue;
            }
            if !self.netns.contains_key(&ns.inode) {
                let target = match (&ns.name, ns.pid) {
                    (Some(n), _) => NetnsTarget::Named(n.clone()),
                    (None, Some(p)) => NetnsTarget::Pid(p),
                    _ => continue,
                };
                if privhelper
                    .send(&PrivRequest::NetlinkRouteInNetns { target })
                    .is_err()
                {
                    self.stats.netns_errors += 1;
                    return;
                }
                match privhelper.recv_with_fds::<PrivResponse>(1) {
                    Ok((
                        PrivResponse::Fd {
                            kind: FdKind::NetlinkRoute,
                        },
                        mut fds,
                    )) if fds.len() == 1 => {
                        self.stats.netns_sockets += 1;
                        self.netns
                            .insert(ns.inode, (fds.remove(0), ns.name.clone()));
                    }
                    _ => {
                        self.stats.netns_errors += 1;
                        continue;
                    }
                }
            }
            let Some((fd, name)) = self.netns.get(&ns.inode) else {
                continue;
            };
            self.nl_seq = self.nl_seq.wrapping_add(1);
            match crate::netlink::dump_links(fd, self.nl_seq, &mut self.nl_buf) {
                Ok(links) => {
                    let mut resource = vec![
                        KeyValue::str("host.name", self.host_name.as_str()),
                        KeyValue::i64("linux.netns.inode", crate::util::i(ns.inode)),
                    ];
                    if let Some(n) = name {
                        resource.push(KeyValue::str("linux.netns.name", n.as_str()));
                    }
                    let mut metrics = Vec::new();
                    for l in &links {
                        crate::netdev::if_metrics(st, l, &[], &mut metrics);
                    }
                    out.push(Record::Metrics { resource, metrics });
                }
                Err(_) => {
                    // Ask again next cycle.
                    self.stats.netns_errors += 1;
                    self.netns.remove(&ns.inode);
                }
            }
        }
    }

    pub fn counters(&self) -> Vec<(String, u64)> {
        let s = self.stats;
        vec![
            ("cycles".into(), s.cycles),
            ("records_produced".into(), s.records),
            (
                "parse_errors".into(),
                s.parse_errors + self.users.parse_errors,
            ),
            ("processes".into(), s.processes),
            ("processes_vanished".into(), s.vanished),
            ("last_cycle_us".into(), s.last_cycle_us),
            ("fdstat_errors".into(), s.fdstat_errors),
            ("netns_errors".into(), s.netns_errors),
            ("netns_sockets".into(), self.netns.len() as u64),
            ("peer_errors".into(), s.peer_errors),
        ]
    }
}
