//! One collection cycle: host (CPU, memory, paging, pressure), processes (fd counts by st_size,
//! or from the privhelper with socket counts; disk I/O and executable paths from the privhelper
//! when `process_io` is on), containers, disks (space, I/O), network interfaces of the host and
//! of other network namespaces (/proc/PID/net/dev, or netlink sockets the privhelper made
//! inside them), connection counts; Kubernetes names on processes, containers and namespaces.

use std::collections::{BTreeMap, HashMap};
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Instant;

use crate::privclient::{PrivClient, PrivClientError};
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use vigil_ipc_proto::{
    Feature, InitConfig, KeyValue, MAX_EXE_PIDS, MAX_FD_STAT_PIDS, MAX_IO_STAT_PIDS, NetnsTarget,
    ProcFdStat, Record,
};

use crate::sink::Sink;
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
    /// Processes read by path this cycle (past the descriptor budget).
    pub uncached: u64,
    /// Network namespaces read from /proc/PID/net/dev this cycle.
    pub netns_read: u64,
    /// /proc/PID/status reads this cycle (processes whose main thread ran).
    pub status_reads: u64,
    /// Failed privhelper requests for /proc/PID/io or /proc/PID/exe.
    pub process_io_errors: u64,
    /// Failed sock_diag dumps.
    pub sockdiag_errors: u64,
    /// Cycles whose TCP connection counts were the last walk's (no state change since).
    pub tcp_walks_skipped: u64,
    /// Processes of the last cycle from the task iterator, and through /proc because the
    /// iterator did not show them; failed dumps (those cycles read /proc).
    pub from_iter: u64,
    pub iter_missed: u64,
    pub iter_errors: u64,
    /// Processes of the last cycle listed as unchanged instead of sent in full
    /// (`process_refresh_ms`).
    pub unchanged: u64,
}

pub struct Cycle {
    pub host_name: String,
    pub host_resource: Vec<KeyValue>,
    pub host: crate::host::HostCollector,
    pub procs: crate::procs::ProcScanner,
    pub users: crate::users::Users,
    pub cgroups: crate::cgroups::CgroupCollector,
    pub disks: crate::disks::DiskCollector,
    pub diskstats: crate::diskstats::DiskStatsCollector,
    pub netdev: crate::netdev::NetDevCollector,
    pub k8s: crate::k8s::K8sNames,
    sockdiag: Option<crate::sockets::SockDiag>,
    /// The kernel's count of TCP state changes (feature `ebpf_tcp_changes`), when attached.
    pub tcp_changes: Option<crate::ebpf::tcpchanges::TcpChanges>,
    /// Network namespace inode → netlink socket inside it (from the privhelper).
    netns: HashMap<u64, (OwnedFd, Option<String>)>,
    own_netns: u64,
    /// st_ino of our own /proc/self/net/dev (the `netns_metrics` id of our namespace).
    own_netdev: u64,
    /// This cycle's records of the small collectors, before they go to the sink.
    scratch: Vec<Record>,
    nl_buf: Vec<u8>,
    nl_seq: u32,
    pub cfg: vigil_ipc_proto::CollectorConfig,
    pub features: Vec<Feature>,
    pub stats: CycleStats,
    start_ns: u64,
}

impl Cycle {
    pub fn new(init: &InitConfig) -> std::io::Result<Self> {
        let host_root = PathBuf::from(&init.host_root);
        let proc_root = PathBuf::from("/proc");
        let ino = |p: &str| std::fs::metadata(p).map(|m| m.ino()).unwrap_or(0);
        let mut procs = crate::procs::ProcScanner::new(&proc_root)?;
        let on = |f: Feature| init.feature_enabled(f);
        // fd counts here when the kernel gives them by stat; else (or with socket counts)
        // the privhelper answers.
        procs.count_fds =
            init.collector.process_fds && on(Feature::ProcessFds) && init.fd_count_by_stat;
        procs.track_netns = init.collector.netns && on(Feature::NetnsMetrics);
        procs.set_switches(init.collector.processes && on(Feature::ProcessMetrics));
        let mut host = crate::host::HostCollector::new(&proc_root);
        host.paging = init.collector.paging && on(Feature::PagingMetrics);
        Ok(Cycle {
            host_name: init.hostname.clone(),
            host_resource: vec![KeyValue::str("host.name", init.hostname.as_str())],
            host,
            procs,
            users: crate::users::Users::new(&host_root),
            cgroups: crate::cgroups::CgroupCollector::new(crate::cgroups::Hierarchies::discover(
                &proc_root,
            )),
            disks: crate::disks::DiskCollector::new(&host_root, &proc_root),
            diskstats: crate::diskstats::DiskStatsCollector::new(
                &proc_root,
                &init.collector.disk_devices_exclude,
            ),
            netdev: crate::netdev::NetDevCollector::new(&proc_root),
            k8s: crate::k8s::K8sNames::new(&host_root),
            sockdiag: None,
            tcp_changes: None,
            netns: HashMap::new(),
            own_netns: ino("/proc/self/ns/net"),
            own_netdev: ino("/proc/self/net/dev"),
            scratch: Vec::new(),
            nl_buf: Vec::new(),
            nl_seq: 0,
            cfg: init.collector.clone(),
            features: init.enabled_features.clone(),
            stats: CycleStats::default(),
            start_ns: now_unix_nano(),
        })
    }

    fn on(&self, f: Feature) -> bool {
        self.features.contains(&f)
    }

    /// Run one cycle, handing its records to `sink`.
    pub fn collect(&mut self, privhelper: &mut PrivClient, sink: &mut dyn Sink) {
        let t0 = Instant::now();
        let st = Stamp {
            start: self.start_ns,
            now: now_unix_nano(),
        };
        let mut out = std::mem::take(&mut self.scratch);
        out.clear();
        if self.cfg.k8s_names && self.on(Feature::K8sNames) {
            self.k8s.refresh();
        }
        if self.cfg.host {
            self.stats.parse_errors += self.host.collect(st, &self.host_resource, &mut out);
            self.host_extras(st, &mut out);
        }
        if self.cfg.processes {
            self.processes(privhelper, st, sink, &mut out);
        }
        if self.cfg.containers {
            let e0 = self.cgroups.parse_errors;
            let pressure = self.cfg.pressure && self.on(Feature::PressureMetrics);
            self.cgroups
                .collect(st, &self.host_name, &self.k8s, pressure, &mut out);
            self.stats.parse_errors += self.cgroups.parse_errors - e0;
        }
        if self.cfg.disks {
            let e0 = self.disks.parse_errors;
            self.disks.collect(st, &self.host_name, &mut out);
            self.stats.parse_errors += self.disks.parse_errors - e0;
        }
        if self.cfg.disk_io && self.on(Feature::DiskIo) {
            let e0 = self.diskstats.parse_errors;
            let boot = self.host.boot_time_ns;
            self.diskstats
                .collect(st, boot, &self.host_resource, &mut out);
            self.stats.parse_errors += self.diskstats.parse_errors - e0;
        }
        if self.cfg.network {
            let e0 = self.netdev.parse_errors;
            self.netdev.collect(st, &self.host_resource, &mut out);
            self.stats.parse_errors += self.netdev.parse_errors - e0;
            if self.cfg.netns && self.on(Feature::NetnsMetrics) {
                self.netns_from_proc(st, &mut out);
            }
            if self.cfg.netns && self.on(Feature::NetnsMetricsSetns) {
                self.netns_metrics(privhelper, st, &mut out);
            }
        }
        self.stats.records += (out.len() + self.procs.samples.len()) as u64;
        self.procs.release_samples();
        vigil_ipc_proto::heap::release_free_memory();
        for r in out.drain(..) {
            sink.record(r);
        }
        self.scratch = out;
        self.stats.cycles += 1;
        self.stats.last_cycle_us = t0.elapsed().as_micros() as u64;
    }

    /// The host's pressure stall information and connection counts.
    fn host_extras(&mut self, st: Stamp, out: &mut Vec<Record>) {
        let mut m = Vec::new();
        if self.cfg.pressure && self.on(Feature::PressureMetrics) {
            let dir = std::path::Path::new("/proc/pressure");
            let mut buf = Vec::new();
            self.stats.parse_errors +=
                crate::pressure::collect_dir(dir, "", "system", st, &mut buf, &mut m);
        }
        if self.cfg.connections && self.on(Feature::ConnectionMetrics) {
            if self.sockdiag.is_none() {
                self.sockdiag = crate::sockets::SockDiag::open().ok();
            }
            let mut buf = Vec::new();
            let proc = std::path::Path::new("/proc");
            let ss = crate::sockets::read_sockstat(proc, &mut buf);
            let changes = self.tcp_changes.as_ref().map(|t| t.count());
            let counts = match (self.sockdiag.as_mut(), ss) {
                (Some(d), Some(ss)) => {
                    let reused = d.reused;
                    let c = d.counts(&ss, changes).ok();
                    self.stats.tcp_walks_skipped += d.reused - reused;
                    c
                }
                _ => None,
            };
            match counts {
                Some(c) => crate::sockets::metrics(st, &c, &mut m),
                None => {
                    // Open a new socket next cycle.
                    self.stats.sockdiag_errors += 1;
                    self.sockdiag = None;
                }
            }
            crate::sockets::conntrack(proc, st, &mut buf, &mut m);
        }
        if !m.is_empty() {
            out.push(Record::Metrics {
                resource: self.host_resource.clone(),
                metrics: m,
            });
        }
    }

    /// Scan the processes, ask the privhelper for what it counts, emit the process records and
    /// `system.process.*`.
    fn processes(
        &mut self,
        privhelper: &mut PrivClient,
        st: Stamp,
        sink: &mut dyn Sink,
        out: &mut Vec<Record>,
    ) {
        self.users.refresh();
        match self.procs.scan() {
            Ok(s) => {
                self.stats.processes = s.processes;
                self.stats.vanished += s.vanished;
                self.stats.parse_errors += s.parse_errors;
                self.stats.uncached = s.uncached;
                self.stats.status_reads = self.procs.status_reads;
                self.stats.from_iter = s.from_iter;
                self.stats.iter_missed = s.iter_missed;
                self.stats.iter_errors += s.iter_errors;
            }
            Err(_) => self.stats.parse_errors += 1,
        }
        let from_helper =
            (self.cfg.process_fds && !self.procs.count_fds && self.on(Feature::ProcessFds))
                || (self.cfg.process_sockets && self.on(Feature::ProcessSockets));
        let fds = if from_helper {
            self.fd_stats(privhelper)
        } else {
            None
        };
        if self.cfg.process_io && self.on(Feature::ProcessIo) {
            self.process_io(privhelper);
        }
        self.stats.unchanged = self.procs.records(
            st,
            self.host.boot_time_ns,
            &mut self.users,
            fds.as_ref(),
            &self.k8s,
            self.cfg.process_refresh_ms.saturating_mul(1_000_000),
            sink,
        );
        if self.cfg.host {
            let states = self.procs.state_counts();
            self.host
                .process_counts(st, &states, &self.host_resource, out);
        }
    }

    /// /proc/PID/io of every sampled process and /proc/PID/exe of the new ones, from the
    /// privhelper (feature `process_io`).
    fn process_io(&mut self, privhelper: &mut PrivClient) {
        let pids: Vec<u32> = self.procs.samples.iter().map(|s| s.pid).collect();
        for chunk in pids.chunks(MAX_IO_STAT_PIDS) {
            match privhelper.proc_io_stats(chunk.to_vec()) {
                Ok(v) => self.procs.set_io(&v),
                Err(_) => {
                    self.stats.process_io_errors += 1;
                    return;
                }
            }
        }
        for chunk in self.procs.exe_wanted().chunks(MAX_EXE_PIDS) {
            match privhelper.proc_exe_paths(chunk.to_vec()) {
                Ok(v) => {
                    for e in v {
                        self.procs.set_exe(e.pid, e.path);
                    }
                }
                Err(_) => {
                    self.stats.process_io_errors += 1;
                    return;
                }
            }
        }
    }

    /// Interface counters of every other network namespace that has a process, read from
    /// /proc/PID/net/dev of one process living in it (any user may: no capability). The
    /// namespace's id is st_ino of that file; its container, from the process's cgroup.
    fn netns_from_proc(&mut self, st: Stamp, out: &mut Vec<Record>) {
        let mut reps: BTreeMap<u64, u32> = BTreeMap::new();
        for s in &self.procs.samples {
            if let Some(id) = self.procs.netns(s.pid)
                && id != self.own_netdev
            {
                // Prefer a process of a container: the namespace is then that container's.
                let known = |pid: u32| self.procs.identity(pid) != ("", "");
                let e = reps.entry(id).or_insert(s.pid);
                if !known(*e) && known(s.pid) {
                    *e = s.pid;
                }
            }
        }
        for (&id, &pid) in reps.iter().take(1024) {
            let Ok(ifs) = self.read_proc_file(pid, "net/dev") else {
                // Gone since the scan: next cycle picks another process, or none.
                continue;
            };
            let (ifs, bad) = crate::netdev::parse_net_dev(&ifs);
            self.stats.parse_errors += bad;
            let mut resource = vec![
                KeyValue::str("host.name", self.host_name.as_str()),
                KeyValue::i64("linux.netns.id", crate::util::i(id)),
                KeyValue::i64("process.pid", i64::from(pid)),
            ];
            let (cid, uid) = self.procs.identity(pid);
            let container = !cid.is_empty() || !uid.is_empty();
            if !cid.is_empty() {
                resource.push(KeyValue::str("container.id", cid));
            }
            if !uid.is_empty() {
                resource.push(KeyValue::str("k8s.pod.uid", uid));
            }
            resource.extend(
                self.k8s
                    .attributes(crate::util::non_empty(uid), crate::util::non_empty(cid)),
            );
            // A container's namespace: `container.network.io`; any other namespace: the
            // system.network.* counters under its own resource.
            let mut metrics = Vec::with_capacity(ifs.len() * 8);
            for s in &ifs {
                if container {
                    crate::netdev::container_if_metrics(st, s, &mut metrics);
                } else {
                    crate::netdev::if_metrics(st, s, &[], &mut metrics);
                }
            }
            out.push(Record::Metrics { resource, metrics });
        }
        self.stats.netns_read = reps.len() as u64;
    }

    /// A file under /proc/PID, through the process's cached directory when there is one.
    fn read_proc_file(&self, pid: u32, file: &str) -> std::io::Result<Vec<u8>> {
        use std::io::Read;
        let flags = OFlag::O_RDONLY | OFlag::O_CLOEXEC;
        let fd = match self.procs.dir_fd(pid) {
            Some(dir) => nix::fcntl::openat(dir, file, flags, Mode::empty()),
            None => nix::fcntl::openat(
                self.procs.proc_fd(),
                format!("{pid}/{file}").as_str(),
                flags,
                Mode::empty(),
            ),
        }?;
        let mut buf = Vec::new();
        std::fs::File::from(fd)
            .take(crate::util::MAX_FILE as u64)
            .read_to_end(&mut buf)?;
        Ok(buf)
    }

    /// fd and socket counts of every sampled pid, in requests of at most MAX_FD_STAT_PIDS.
    pub fn fd_stats(&mut self, privhelper: &mut PrivClient) -> Option<HashMap<u32, ProcFdStat>> {
        let pids: Vec<u32> = self.procs.samples.iter().map(|s| s.pid).collect();
        let mut m = HashMap::with_capacity(pids.len());
        for chunk in pids.chunks(MAX_FD_STAT_PIDS) {
            match privhelper.proc_fd_stats(chunk.to_vec()) {
                Ok(v) => m.extend(v.into_iter().map(|s| (s.pid, s))),
                Err(_) => {
                    self.stats.fdstat_errors += 1;
                    return None;
                }
            }
        }
        Some(m)
    }

    fn netns_metrics(&mut self, privhelper: &mut PrivClient, st: Stamp, out: &mut Vec<Record>) {
        let Ok(list) = privhelper.list_netns() else {
            self.stats.netns_errors += 1;
            return;
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
                match privhelper.netlink_route_in_netns(target) {
                    Ok(fd) => {
                        self.stats.netns_sockets += 1;
                        self.netns.insert(ns.inode, (fd, ns.name.clone()));
                    }
                    Err(PrivClientError::Proto(_)) => {
                        self.stats.netns_errors += 1;
                        return;
                    }
                    Err(_) => {
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
            ("procs_cached".into(), self.procs.cached() as u64),
            ("procs_uncached".into(), s.uncached),
            ("netns_read".into(), s.netns_read),
            ("status_reads".into(), s.status_reads),
            ("procs_from_iter".into(), s.from_iter),
            ("procs_unchanged".into(), s.unchanged),
            ("procs_iter_missed".into(), s.iter_missed),
            ("task_iter_errors".into(), s.iter_errors),
            ("process_io_errors".into(), s.process_io_errors),
            ("sockdiag_errors".into(), s.sockdiag_errors),
            ("tcp_walks_skipped".into(), s.tcp_walks_skipped),
            ("k8s_names_refreshes".into(), self.k8s.refreshes),
        ]
    }
}
