//! Container metrics from cgroup v1 (memory, cpu/cpuacct, pids, blkio hierarchies) and cgroup
//! v2 (unified), located through mountinfo so both the hybrid layout (v1 + `/sys/fs/cgroup/
//! unified`) and the pure v2 layout work. Container ids come from docker / containerd / cri-o /
//! podman path shapes, pod UIDs and QoS classes from kubepods paths.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use vigil_ipc_proto::{KeyValue, Metric, Record};

use crate::mountinfo::Mount;
use crate::util::{Stamp, i, kv_lines, parse_u64, read_into, sum_f64, sum_i64, updown_i64};

/// Directories walked per hierarchy at most, and depth.
pub const MAX_DIRS: usize = 20_000;
pub const MAX_DEPTH: usize = 12;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub container_id: Option<String>,
    pub pod_uid: Option<String>,
    pub qos: Option<&'static str>,
}

fn is_hex_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|c| c.is_ascii_hexdigit())
}

fn pod_uid_of(comp: &str) -> Option<String> {
    // cgroupfs driver: "pod<uid>"; systemd driver: "kubepods-burstable-pod<uid_with_underscores>.slice".
    let c = comp.strip_suffix(".slice").unwrap_or(comp);
    let idx = c.rfind("pod")?;
    let uid = &c[idx + 3..];
    let uid = uid.replace('_', "-");
    (uid.len() == 36 && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')).then_some(uid)
}

fn container_id_of(comp: &str) -> Option<String> {
    let c = comp.strip_suffix(".scope").unwrap_or(comp);
    for prefix in ["docker-", "cri-containerd-", "crio-", "libpod-", ""] {
        if let Some(id) = c.strip_prefix(prefix)
            && is_hex_id(id)
        {
            return Some(id.to_string());
        }
    }
    None
}

/// Identity from a cgroup path relative to the hierarchy root.
pub fn identify(rel: &str) -> Identity {
    let mut id = Identity::default();
    let mut kube = false;
    for comp in rel.split('/').filter(|c| !c.is_empty()) {
        if comp.starts_with("kubepods") {
            kube = true;
        }
        if kube && id.pod_uid.is_none() {
            id.pod_uid = pod_uid_of(comp);
        }
        if let Some(cid) = container_id_of(comp) {
            id.container_id = Some(cid);
        }
    }
    if kube {
        id.qos = Some(if rel.contains("besteffort") {
            "BestEffort"
        } else if rel.contains("burstable") {
            "Burstable"
        } else {
            "Guaranteed"
        });
    }
    id
}

/// A cgroup file that did not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed cgroup file")]
pub struct Malformed;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgStats {
    pub cpu_usage_ns: Option<u64>,
    pub cpu_user_ns: Option<u64>,
    pub cpu_system_ns: Option<u64>,
    pub nr_periods: Option<u64>,
    pub nr_throttled: Option<u64>,
    pub throttled_ns: Option<u64>,
    pub mem_usage: Option<u64>,
    pub mem_limit: Option<u64>,
    pub pids_current: Option<u64>,
    pub pids_max: Option<u64>,
    pub io_read_bytes: Option<u64>,
    pub io_write_bytes: Option<u64>,
    pub io_read_ops: Option<u64>,
    pub io_write_ops: Option<u64>,
    /// memory.stat: inactive file pages (working set = usage − this, as cAdvisor and the
    /// kubelet compute it), anonymous memory (RSS), page faults.
    pub mem_inactive_file: Option<u64>,
    pub mem_anon: Option<u64>,
    pub pgfault: Option<u64>,
    pub pgmajfault: Option<u64>,
}

impl CgStats {
    /// `container.memory.working_set`: usage − inactive file pages.
    pub fn working_set(&self) -> Option<u64> {
        let u = self.mem_usage?;
        Some(u.saturating_sub(self.mem_inactive_file.unwrap_or(0)))
    }
}

/// memory.stat of v2 (`anon`, `inactive_file`, `pgfault`, `pgmajfault`) or v1 (`total_rss`,
/// `total_inactive_file`, `total_pgfault`, `total_pgmajfault`: the hierarchy's totals).
pub fn parse_memory_stat(buf: &[u8], v1: bool, s: &mut CgStats) -> Result<(), Malformed> {
    for (k, v) in kv_lines(buf) {
        let k = if v1 {
            match k.strip_prefix(b"total_") {
                Some(k) => k,
                None => continue,
            }
        } else {
            k
        };
        let slot = match k {
            b"inactive_file" => &mut s.mem_inactive_file,
            b"anon" if !v1 => &mut s.mem_anon,
            b"rss" if v1 => &mut s.mem_anon,
            b"pgfault" => &mut s.pgfault,
            b"pgmajfault" => &mut s.pgmajfault,
            _ => continue,
        };
        *slot = Some(parse_u64(v).ok_or(Malformed)?);
    }
    Ok(())
}

/// `max` → None (unlimited), a number → Some; Err on garbage. v1 "unlimited" is a huge number.
pub fn parse_limit(buf: &[u8]) -> Result<Option<u64>, Malformed> {
    let t = buf.trim_ascii();
    if t == b"max" {
        return Ok(None);
    }
    let v = parse_u64(t).ok_or(Malformed)?;
    Ok((v < (1 << 62)).then_some(v))
}

pub fn parse_single(buf: &[u8]) -> Result<u64, Malformed> {
    parse_u64(buf.trim_ascii()).ok_or(Malformed)
}

/// v2 cpu.stat (µs) into `s`.
pub fn parse_v2_cpu_stat(buf: &[u8], s: &mut CgStats) -> Result<(), Malformed> {
    let mut any = false;
    for (k, v) in kv_lines(buf) {
        let v = parse_u64(v).ok_or(Malformed)?;
        match k {
            b"usage_usec" => s.cpu_usage_ns = Some(v.saturating_mul(1000)),
            b"user_usec" => s.cpu_user_ns = Some(v.saturating_mul(1000)),
            b"system_usec" => s.cpu_system_ns = Some(v.saturating_mul(1000)),
            b"nr_periods" => s.nr_periods = Some(v),
            b"nr_throttled" => s.nr_throttled = Some(v),
            b"throttled_usec" => s.throttled_ns = Some(v.saturating_mul(1000)),
            _ => continue,
        }
        any = true;
    }
    if any { Ok(()) } else { Err(Malformed) }
}

/// v1 cpu.stat (throttled_time in ns).
pub fn parse_v1_cpu_stat(buf: &[u8], s: &mut CgStats) -> Result<(), Malformed> {
    for (k, v) in kv_lines(buf) {
        let v = parse_u64(v).ok_or(Malformed)?;
        match k {
            b"nr_periods" => s.nr_periods = Some(v),
            b"nr_throttled" => s.nr_throttled = Some(v),
            b"throttled_time" => s.throttled_ns = Some(v),
            _ => {}
        }
    }
    Ok(())
}

/// v1 cpuacct.stat (user/system in USER_HZ ticks).
pub fn parse_cpuacct_stat(buf: &[u8], s: &mut CgStats) -> Result<(), Malformed> {
    let tick_ns = 1_000_000_000 / crate::util::USER_HZ;
    for (k, v) in kv_lines(buf) {
        let v = parse_u64(v).ok_or(Malformed)?.saturating_mul(tick_ns);
        match k {
            b"user" => s.cpu_user_ns = Some(v),
            b"system" => s.cpu_system_ns = Some(v),
            _ => {}
        }
    }
    Ok(())
}

/// v2 io.stat: `MAJ:MIN rbytes=.. wbytes=.. rios=.. wios=..` summed over devices.
pub fn parse_io_stat(buf: &[u8], s: &mut CgStats) -> Result<(), Malformed> {
    let (mut rb, mut wb, mut ro, mut wo) = (0u64, 0u64, 0u64, 0u64);
    for line in buf.split(|&c| c == b'\n') {
        for kv in line.split(|&c| c == b' ').skip(1) {
            let Some(eq) = kv.iter().position(|&c| c == b'=') else {
                continue;
            };
            let v = parse_u64(kv[eq + 1..].trim_ascii()).ok_or(Malformed)?;
            match &kv[..eq] {
                b"rbytes" => rb = rb.saturating_add(v),
                b"wbytes" => wb = wb.saturating_add(v),
                b"rios" => ro = ro.saturating_add(v),
                b"wios" => wo = wo.saturating_add(v),
                _ => {}
            }
        }
    }
    s.io_read_bytes = Some(rb);
    s.io_write_bytes = Some(wb);
    s.io_read_ops = Some(ro);
    s.io_write_ops = Some(wo);
    Ok(())
}

/// v1 blkio.throttle.io_service_bytes / io_serviced: `MAJ:MIN Read N` lines → (read, write).
pub fn parse_blkio(buf: &[u8]) -> Result<(u64, u64), Malformed> {
    let (mut r, mut w) = (0u64, 0u64);
    for line in buf.split(|&c| c == b'\n') {
        let f: Vec<&[u8]> = line
            .split(|&c| c == b' ')
            .filter(|x| !x.is_empty())
            .collect();
        if f.len() != 3 {
            continue;
        }
        let v = parse_u64(f[2]).ok_or(Malformed)?;
        match f[1] {
            b"Read" => r = r.saturating_add(v),
            b"Write" => w = w.saturating_add(v),
            _ => {}
        }
    }
    Ok((r, w))
}

/// Where the hierarchies are mounted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hierarchies {
    pub v2: Option<PathBuf>,
    pub memory: Option<PathBuf>,
    pub cpu: Option<PathBuf>,
    pub cpuacct: Option<PathBuf>,
    pub pids: Option<PathBuf>,
    pub blkio: Option<PathBuf>,
}

impl Hierarchies {
    pub fn from_mounts(mounts: &[Mount]) -> Self {
        let mut h = Hierarchies::default();
        for m in mounts {
            let p = PathBuf::from(&m.mount_point);
            match m.fstype.as_str() {
                "cgroup2" if h.v2.is_none() => h.v2 = Some(p),
                "cgroup" => {
                    for opt in m.super_opts.split(',') {
                        let slot = match opt {
                            "memory" => &mut h.memory,
                            "cpu" => &mut h.cpu,
                            "cpuacct" => &mut h.cpuacct,
                            "pids" => &mut h.pids,
                            "blkio" => &mut h.blkio,
                            _ => continue,
                        };
                        if slot.is_none() {
                            *slot = Some(p.clone());
                        }
                    }
                }
                _ => {}
            }
        }
        h
    }

    /// From this process's mountinfo.
    pub fn discover(proc_root: &Path) -> Self {
        let mut buf = Vec::new();
        if read_into(&proc_root.join("self/mountinfo"), &mut buf).is_err() {
            return Hierarchies::default();
        }
        Hierarchies::from_mounts(&crate::mountinfo::parse(&buf).0)
    }
}

/// Walk `root` and call `f(rel)` for every directory with an identity (bounded).
fn walk(root: &Path, mut f: impl FnMut(&str, Identity)) -> usize {
    let mut stack: Vec<(PathBuf, usize)> = vec![(root.to_path_buf(), 0)];
    let mut n = 0;
    while let Some((dir, depth)) = stack.pop() {
        n += 1;
        if n > MAX_DIRS {
            break;
        }
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for ent in rd.flatten() {
            if !ent.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                continue;
            }
            let p = ent.path();
            if let Ok(rel) = p.strip_prefix(root) {
                let rel = format!("/{}", rel.to_string_lossy());
                let id = identify(&rel);
                if id.container_id.is_some() || id.pod_uid.is_some() {
                    f(&rel, id);
                }
            }
            if depth + 1 < MAX_DEPTH {
                stack.push((p, depth + 1));
            }
        }
    }
    n
}

pub struct CgroupCollector {
    pub h: Hierarchies,
    buf: Vec<u8>,
    pub parse_errors: u64,
}

impl CgroupCollector {
    pub fn new(h: Hierarchies) -> Self {
        CgroupCollector {
            h,
            buf: Vec::with_capacity(4096),
            parse_errors: 0,
        }
    }

    fn read(&mut self, p: &Path) -> bool {
        read_into(p, &mut self.buf).is_ok()
    }

    /// Stats of one v2 cgroup directory.
    pub fn read_v2(&mut self, dir: &Path) -> CgStats {
        let mut s = CgStats::default();
        let mut bad = 0;
        if self.read(&dir.join("cpu.stat")) && parse_v2_cpu_stat(&self.buf, &mut s).is_err() {
            bad += 1;
        }
        if self.read(&dir.join("memory.current")) {
            match parse_single(&self.buf) {
                Ok(v) => s.mem_usage = Some(v),
                Err(Malformed) => bad += 1,
            }
        }
        if self.read(&dir.join("memory.max")) {
            match parse_limit(&self.buf) {
                Ok(v) => s.mem_limit = v,
                Err(Malformed) => bad += 1,
            }
        }
        if self.read(&dir.join("pids.current")) {
            match parse_single(&self.buf) {
                Ok(v) => s.pids_current = Some(v),
                Err(Malformed) => bad += 1,
            }
        }
        if self.read(&dir.join("pids.max")) {
            match parse_limit(&self.buf) {
                Ok(v) => s.pids_max = v,
                Err(Malformed) => bad += 1,
            }
        }
        if self.read(&dir.join("io.stat")) && parse_io_stat(&self.buf, &mut s).is_err() {
            bad += 1;
        }
        if self.read(&dir.join("memory.stat"))
            && parse_memory_stat(&self.buf, false, &mut s).is_err()
        {
            bad += 1;
        }
        self.parse_errors += bad;
        s
    }

    /// Stats of one cgroup found at `rel` in the v1 hierarchies.
    pub fn read_v1(&mut self, rel: &str) -> CgStats {
        let mut s = CgStats::default();
        let mut bad = 0;
        let rel = rel.trim_start_matches('/');
        if let Some(d) = self.h.cpuacct.clone().map(|r| r.join(rel)) {
            if self.read(&d.join("cpuacct.usage")) {
                match parse_single(&self.buf) {
                    Ok(v) => s.cpu_usage_ns = Some(v),
                    Err(Malformed) => bad += 1,
                }
            }
            if self.read(&d.join("cpuacct.stat")) && parse_cpuacct_stat(&self.buf, &mut s).is_err()
            {
                bad += 1;
            }
        }
        if let Some(d) = self.h.cpu.clone().map(|r| r.join(rel))
            && self.read(&d.join("cpu.stat"))
            && parse_v1_cpu_stat(&self.buf, &mut s).is_err()
        {
            bad += 1;
        }
        if let Some(d) = self.h.memory.clone().map(|r| r.join(rel)) {
            if self.read(&d.join("memory.usage_in_bytes")) {
                match parse_single(&self.buf) {
                    Ok(v) => s.mem_usage = Some(v),
                    Err(Malformed) => bad += 1,
                }
            }
            if self.read(&d.join("memory.limit_in_bytes")) {
                match parse_limit(&self.buf) {
                    Ok(v) => s.mem_limit = v,
                    Err(Malformed) => bad += 1,
                }
            }
            if self.read(&d.join("memory.stat"))
                && parse_memory_stat(&self.buf, true, &mut s).is_err()
            {
                bad += 1;
            }
        }
        if let Some(d) = self.h.pids.clone().map(|r| r.join(rel)) {
            if self.read(&d.join("pids.current")) {
                match parse_single(&self.buf) {
                    Ok(v) => s.pids_current = Some(v),
                    Err(Malformed) => bad += 1,
                }
            }
            if self.read(&d.join("pids.max")) {
                match parse_limit(&self.buf) {
                    Ok(v) => s.pids_max = v,
                    Err(Malformed) => bad += 1,
                }
            }
        }
        if let Some(d) = self.h.blkio.clone().map(|r| r.join(rel)) {
            if self.read(&d.join("blkio.throttle.io_service_bytes")) {
                match parse_blkio(&self.buf) {
                    Ok((r, w)) => (s.io_read_bytes, s.io_write_bytes) = (Some(r), Some(w)),
                    Err(Malformed) => bad += 1,
                }
            }
            if self.read(&d.join("blkio.throttle.io_serviced")) {
                match parse_blkio(&self.buf) {
                    Ok((r, w)) => (s.io_read_ops, s.io_write_ops) = (Some(r), Some(w)),
                    Err(Malformed) => bad += 1,
                }
            }
        }
        self.parse_errors += bad;
        s
    }

    /// Every container/pod cgroup of both versions → records, with the Kubernetes names
    /// `names` knows and, with `pressure`, the cgroup v2 pressure files.
    pub fn collect(
        &mut self,
        st: Stamp,
        host_name: &str,
        names: &crate::k8s::K8sNames,
        pressure: bool,
        out: &mut Vec<Record>,
    ) {
        let mut v2: BTreeMap<String, Identity> = BTreeMap::new();
        if let Some(root) = self.h.v2.clone() {
            walk(&root, |rel, id| {
                v2.insert(rel.to_string(), id);
            });
            for (rel, id) in v2 {
                let dir = root.join(rel.trim_start_matches('/'));
                let s = self.read_v2(&dir);
                let mut m = metrics(st, &s);
                if pressure {
                    self.parse_errors += crate::pressure::collect_dir(
                        &dir,
                        ".pressure",
                        "container",
                        st,
                        &mut self.buf,
                        &mut m,
                    );
                }
                let resource = resource(host_name, &rel, "v2", &id, names);
                out.push(Record::Metrics {
                    resource,
                    metrics: m,
                });
            }
        }
        let v1_root = self
            .h
            .memory
            .clone()
            .or_else(|| self.h.cpuacct.clone())
            .or_else(|| self.h.pids.clone());
        if let Some(root) = v1_root {
            let mut v1: BTreeMap<String, Identity> = BTreeMap::new();
            walk(&root, |rel, id| {
                v1.insert(rel.to_string(), id);
            });
            for (rel, id) in v1 {
                let s = self.read_v1(&rel);
                let resource = resource(host_name, &rel, "v1", &id, names);
                out.push(Record::Metrics {
                    resource,
                    metrics: metrics(st, &s),
                });
            }
        }
    }
}

/// The resource of one cgroup: host, path, version, container id, pod UID and QoS class, and
/// the Kubernetes names of the pod / container.
pub fn resource(
    host_name: &str,
    rel: &str,
    version: &str,
    id: &Identity,
    names: &crate::k8s::K8sNames,
) -> Vec<KeyValue> {
    let mut resource = vec![
        KeyValue::str("host.name", host_name),
        KeyValue::str("linux.cgroup.path", rel),
        KeyValue::str("linux.cgroup.version", version),
    ];
    if let Some(c) = &id.container_id {
        resource.push(KeyValue::str("container.id", c.as_str()));
    }
    if let Some(p) = &id.pod_uid {
        resource.push(KeyValue::str("k8s.pod.uid", p.as_str()));
    }
    if let Some(q) = id.qos {
        resource.push(KeyValue::str("vigil.k8s.pod.qos_class", q));
    }
    resource.extend(names.attributes(id.pod_uid.as_deref(), id.container_id.as_deref()));
    resource
}

/// The metrics of one cgroup: `container.*` of the conventions (cpu.time, memory.usage,
/// .working_set, .rss, .available, paging.faults, disk.io); the docker_stats receiver's names
/// where the conventions have none (memory.usage.limit, pids.count, pids.limit,
/// cpu.throttling_data.*); `container.disk.operations` as the conventions' process.* and
/// system.* analog.
pub fn metrics(st: Stamp, s: &CgStats) -> Vec<Metric> {
    let mut m: Vec<Metric> = Vec::with_capacity(24);
    let dir = |d: &str| vec![KeyValue::str("disk.io.direction", d)];
    let secs = |ns: u64| ns as f64 / 1e9;
    // Either user + system, or the total without a mode (never both: the conventions).
    match (s.cpu_user_ns, s.cpu_system_ns, s.cpu_usage_ns) {
        (Some(u), Some(sy), _) => {
            for (mode, ns) in [("user", u), ("system", sy)] {
                let a = vec![KeyValue::str("cpu.mode", mode)];
                m.push(sum_f64("container.cpu.time", "s", st, secs(ns), a));
            }
        }
        (_, _, Some(t)) => m.push(sum_f64("container.cpu.time", "s", st, secs(t), Vec::new())),
        _ => {}
    }
    let throttling = [
        ("periods", s.nr_periods, "{periods}"),
        ("throttled_periods", s.nr_throttled, "{periods}"),
        ("throttled_time", s.throttled_ns, "ns"),
    ];
    for (name, v, unit) in throttling {
        if let Some(v) = v {
            let n = format!("container.cpu.throttling_data.{name}");
            m.push(sum_i64(&n, unit, st, i(v), Vec::new()));
        }
    }
    let ws = s.working_set();
    let memory = [
        ("container.memory.usage", s.mem_usage),
        ("container.memory.working_set", ws),
        ("container.memory.rss", s.mem_anon),
        ("container.memory.usage.limit", s.mem_limit),
        (
            "container.memory.available",
            s.mem_limit.zip(ws).map(|(l, w)| l.saturating_sub(w)),
        ),
    ];
    for (name, v) in memory {
        if let Some(v) = v {
            m.push(updown_i64(name, "By", st, i(v), Vec::new()));
        }
    }
    if let (Some(all), Some(major)) = (s.pgfault, s.pgmajfault) {
        for (ty, v) in [("minor", all.saturating_sub(major)), ("major", major)] {
            let a = vec![KeyValue::str("system.paging.fault.type", ty)];
            m.push(sum_i64("container.paging.faults", "{fault}", st, i(v), a));
        }
    }
    for (name, v) in [
        ("container.pids.count", s.pids_current),
        ("container.pids.limit", s.pids_max),
    ] {
        if let Some(v) = v {
            m.push(updown_i64(name, "{pids}", st, i(v), Vec::new()));
        }
    }
    if let (Some(r), Some(w)) = (s.io_read_bytes, s.io_write_bytes) {
        m.push(sum_i64("container.disk.io", "By", st, i(r), dir("read")));
        m.push(sum_i64("container.disk.io", "By", st, i(w), dir("write")));
    }
    if let (Some(r), Some(w)) = (s.io_read_ops, s.io_write_ops) {
        let ops = "container.disk.operations";
        m.push(sum_i64(ops, "{operation}", st, i(r), dir("read")));
        m.push(sum_i64(ops, "{operation}", st, i(w), dir("write")));
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn path_shapes() {
        assert_eq!(
            identify(&format!("/system.slice/docker-{ID}.scope"))
                .container_id
                .as_deref(),
            Some(ID)
        );
        assert_eq!(
            identify(&format!("/docker/{ID}")).container_id.as_deref(),
            Some(ID)
        );
        let k = identify(&format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1b2c3d4e_0000_1111_2222_333344445555.slice/cri-containerd-{ID}.scope"
        ));
        assert_eq!(k.container_id.as_deref(), Some(ID));
        assert_eq!(
            k.pod_uid.as_deref(),
            Some("1b2c3d4e-0000-1111-2222-333344445555")
        );
        assert_eq!(k.qos, Some("Burstable"));
        let g = identify(&format!(
            "/kubepods/pod1b2c3d4e-0000-1111-2222-333344445555/crio-{ID}.scope"
        ));
        assert_eq!(g.qos, Some("Guaranteed"));
        assert_eq!(identify("/user.slice/user-0.slice"), Identity::default());
        assert_eq!(identify("/docker/abc"), Identity::default());
    }

    #[test]
    fn hostile_files() {
        let mut s = CgStats::default();
        assert!(parse_v2_cpu_stat(b"usage_usec zz", &mut s).is_err());
        assert!(parse_v2_cpu_stat(b"\xff\xfe", &mut s).is_err());
        assert!(parse_io_stat(b"8:0 rbytes=x", &mut s).is_err());
        assert!(parse_limit(b"maxx").is_err());
        assert_eq!(parse_limit(b"max\n"), Ok(None));
        assert_eq!(parse_limit(b"9223372036854771712\n"), Ok(None));
        assert_eq!(parse_limit(b"1048576\n"), Ok(Some(1048576)));
        assert!(parse_blkio(b"8:0 Read q").is_err());
        assert_eq!(
            parse_blkio(b"8:0 Read 5\n8:0 Write 7\n8:16 Read 1\nTotal 13\n"),
            Ok((6, 7))
        );
    }
}
