//! cgroup v2 id → cgroup path → container / pod, for attributing exec/exit events and tc
//! egress flows. The id the BPF programs record is the inode number of the cgroup's directory
//! in the cgroup v2 hierarchy, so the collector resolves it by walking that (read-only) tree —
//! no privilege, no bpf().
//!
//! Attributes: `process.linux.cgroup` (`0::/path`), `container.id` (a 64-hex component, as
//! docker, containerd, CRI-O and podman name their scopes/directories), `k8s.pod.uid` (from a
//! `pod<uid>` component, `_` turned back into `-` for the systemd cgroup driver), and with
//! [`CgroupResolver::set_k8s_names`] `k8s.namespace.name`, `k8s.pod.name`,
//! `k8s.container.name` from the kubelet's log directories.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vigil_ipc_proto::KeyValue;

/// Directories visited per walk at most.
const MAX_DIRS: usize = 50_000;
const MAX_DEPTH: usize = 16;
/// A miss triggers a new walk at most this often.
const MIN_RESCAN: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub struct CgroupResolver {
    root: PathBuf,
    by_id: HashMap<u64, String>,
    last_walk: Option<Instant>,
    names: Option<(crate::k8s::K8sNames, Option<Instant>)>,
}

/// Mount point of the cgroup v2 hierarchy in this process's view, from /proc/self/mountinfo.
pub fn cgroup2_mount() -> Option<PathBuf> {
    let mi = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mi.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        if post.split(' ').next()? != "cgroup2" {
            return None;
        }
        pre.split(' ').nth(4).map(PathBuf::from)
    })
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The container id in a cgroup path, if one of its components carries a 64-hex id.
pub fn container_id(path: &str) -> Option<String> {
    path.rsplit('/').find_map(|comp| {
        let comp = comp.strip_suffix(".scope").unwrap_or(comp);
        let id = comp.rsplit(['-', ':']).next()?;
        is_hex64(id).then(|| id.to_ascii_lowercase())
    })
}

/// The Kubernetes pod UID in a cgroup path (`.../pod<uid>/...` or `...-pod<uid>.slice`).
pub fn pod_uid(path: &str) -> Option<String> {
    path.rsplit('/').find_map(|comp| {
        // "kubepods" contains "pod" too: try every occurrence.
        comp.match_indices("pod").find_map(|(i, _)| {
            let rest = comp.get(i + 3..)?;
            let uid: String = rest
                .chars()
                .take(36)
                .map(|c| if c == '_' { '-' } else { c })
                .collect();
            let ok = uid.len() == 36
                && uid.char_indices().all(|(i, c)| match i {
                    8 | 13 | 18 | 23 => c == '-',
                    _ => c.is_ascii_hexdigit(),
                });
            ok.then(|| uid.to_ascii_lowercase())
        })
    })
}

impl CgroupResolver {
    /// A resolver over the hierarchy mounted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        CgroupResolver {
            root: root.into(),
            by_id: HashMap::new(),
            last_walk: None,
            names: None,
        }
    }

    /// Add Kubernetes names to the attributes (refreshed at most every 2 s).
    pub fn set_k8s_names(&mut self, names: crate::k8s::K8sNames) {
        self.names = Some((names, None));
    }

    /// A resolver over this process's cgroup v2 mount, if there is one.
    pub fn discover() -> Option<Self> {
        cgroup2_mount().map(CgroupResolver::new)
    }

    fn walk(&mut self) {
        self.by_id.clear();
        let mut stack: Vec<(PathBuf, usize)> = vec![(self.root.clone(), 0)];
        let mut seen = 0;
        while let Some((dir, depth)) = stack.pop() {
            seen += 1;
            if seen > MAX_DIRS {
                break;
            }
            if let Ok(md) = std::fs::symlink_metadata(&dir) {
                let rel = dir
                    .strip_prefix(&self.root)
                    .map(Path::to_string_lossy)
                    .unwrap_or_default();
                self.by_id.insert(md.ino(), format!("/{rel}"));
            }
            if depth >= MAX_DEPTH {
                continue;
            }
            let Ok(rd) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in rd.flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    stack.push((e.path(), depth + 1));
                }
            }
        }
        self.last_walk = Some(Instant::now());
    }

    /// The cgroup path (relative to the hierarchy's root, starting with `/`) of `id`.
    pub fn path(&mut self, id: u64) -> Option<&str> {
        if id == 0 {
            return None;
        }
        if !self.by_id.contains_key(&id) && self.last_walk.is_none_or(|t| t.elapsed() >= MIN_RESCAN)
        {
            self.walk();
        }
        self.by_id.get(&id).map(String::as_str)
    }

    /// Attributes for a task or socket in cgroup `id` (empty when unknown).
    pub fn attributes(&mut self, id: u64) -> Vec<KeyValue> {
        let Some(path) = self.path(id) else {
            return Vec::new();
        };
        let path = path.to_string();
        let mut v = vec![KeyValue::str("process.linux.cgroup", format!("0::{path}"))];
        if let Some(c) = container_id(&path) {
            v.push(KeyValue::str("container.id", c));
        }
        let pod = pod_uid(&path);
        let cid = container_id(&path);
        if let Some((names, refreshed)) = self.names.as_mut() {
            if refreshed.is_none_or(|t| t.elapsed() >= MIN_RESCAN) {
                names.refresh();
                *refreshed = Some(Instant::now());
            }
            v.extend(names.attributes(pod.as_deref(), cid.as_deref()));
        }
        if let Some(p) = pod {
            v.push(KeyValue::str("k8s.pod.uid", p));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f2a9c1d3e5b7a9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c";

    #[test]
    fn container_ids_of_the_usual_runtimes() {
        for p in [
            format!("/system.slice/docker-{ID}.scope"),
            format!("/docker/{ID}"),
            format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1b2c3d4e_0000_1111_2222_333344445555.slice/cri-containerd-{ID}.scope"
            ),
            format!("/kubepods/besteffort/pod1b2c3d4e-0000-1111-2222-333344445555/{ID}"),
            format!("/machine.slice/libpod-{ID}.scope/container"),
            format!("/kubepods.slice/crio-{ID}.scope"),
        ] {
            assert_eq!(container_id(&p).as_deref(), Some(ID), "{p}");
        }
        assert_eq!(
            container_id("/user.slice/user-0.slice/session-1.scope"),
            None
        );
        assert_eq!(container_id("/"), None);
        assert_eq!(container_id(&format!("/docker/{}", &ID[..63])), None);
    }

    #[test]
    fn pod_uids_both_drivers() {
        let want = Some("1b2c3d4e-0000-1111-2222-333344445555".to_string());
        assert_eq!(
            pod_uid(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1b2c3d4e_0000_1111_2222_333344445555.slice/x"
            ),
            want
        );
        assert_eq!(
            pod_uid("/kubepods/besteffort/pod1b2c3d4e-0000-1111-2222-333344445555/abc"),
            want
        );
        assert_eq!(pod_uid("/system.slice/podman.service"), None);
        assert_eq!(pod_uid("/pod"), None);
    }
}
