//! Kubernetes names without the API: the kubelet lays out every pod's logs as
//! `/var/log/pods/<namespace>_<pod>_<pod uid>/<container>/<n>.log` and links each container's
//! log as `/var/log/containers/<pod>_<namespace>_<container>-<container id>.log`. Read through
//! the host view (read-only, no token), they map a pod UID and a container id — both known from
//! cgroup paths — to `k8s.namespace.name`, `k8s.pod.name` and `k8s.container.name`.
//!
//! The two directories are listed again only when their mtime changes (an entry added or
//! removed), checked at most once per collection cycle: two `stat` calls per cycle otherwise.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use vigil_ipc_proto::KeyValue;

/// Entries read per directory at most.
pub const MAX_ENTRIES: usize = 65_536;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    pub namespace: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    pub namespace: String,
    pub pod: String,
    pub name: String,
}

/// Namespace and pod names are DNS labels/subdomains: no `_`, no `/`, at most 253 bytes.
fn is_k8s_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.')
}

fn is_uid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// `<namespace>_<pod>_<uid>` → (uid, pod).
pub fn parse_pod_dir(name: &str) -> Option<(String, Pod)> {
    let mut it = name.split('_');
    let (ns, pod, uid) = (it.next()?, it.next()?, it.next()?);
    if it.next().is_some() || !is_k8s_name(ns) || !is_k8s_name(pod) || !is_uid(uid) {
        return None;
    }
    Some((
        uid.to_ascii_lowercase(),
        Pod {
            namespace: ns.into(),
            name: pod.into(),
        },
    ))
}

/// `<pod>_<namespace>_<container>-<64 hex>.log` → (container id, container).
pub fn parse_container_log(name: &str) -> Option<(String, Container)> {
    let stem = name.strip_suffix(".log")?;
    let (rest, id) = stem.rsplit_once('-')?;
    if id.len() != 64 || !id.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let mut it = rest.split('_');
    let (pod, ns, container) = (it.next()?, it.next()?, it.next()?);
    if it.next().is_some() || !is_k8s_name(pod) || !is_k8s_name(ns) || !is_k8s_name(container) {
        return None;
    }
    Some((
        id.to_ascii_lowercase(),
        Container {
            namespace: ns.into(),
            pod: pod.into(),
            name: container.into(),
        },
    ))
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

fn list(dir: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.flatten()
        .take(MAX_ENTRIES)
        .filter_map(|e| e.file_name().into_string().ok())
        .collect()
}

/// The names the kubelet's log directories give, refreshed when they change.
#[derive(Debug, Default)]
pub struct K8sNames {
    pods_dir: PathBuf,
    containers_dir: PathBuf,
    seen: (Option<SystemTime>, Option<SystemTime>),
    pods: HashMap<String, Pod>,
    containers: HashMap<String, Container>,
    /// Times the directories were listed again.
    pub refreshes: u64,
}

impl K8sNames {
    /// The kubelet's directories under `host_root`.
    pub fn new(host_root: &Path) -> Self {
        K8sNames {
            pods_dir: host_root.join("var/log/pods"),
            containers_dir: host_root.join("var/log/containers"),
            ..K8sNames::default()
        }
    }

    /// List the directories again if either changed since the last call.
    pub fn refresh(&mut self) {
        let now = (mtime(&self.pods_dir), mtime(&self.containers_dir));
        if now == self.seen && self.refreshes > 0 {
            return;
        }
        self.seen = now;
        self.refreshes += 1;
        self.pods = list(&self.pods_dir)
            .iter()
            .filter_map(|n| parse_pod_dir(n))
            .collect();
        self.containers = list(&self.containers_dir)
            .iter()
            .filter_map(|n| parse_container_log(n))
            .collect();
    }

    pub fn pod(&self, uid: &str) -> Option<&Pod> {
        self.pods.get(uid)
    }

    pub fn container(&self, id: &str) -> Option<&Container> {
        self.containers.get(id)
    }

    pub fn is_empty(&self) -> bool {
        self.pods.is_empty() && self.containers.is_empty()
    }

    /// (namespace, pod, container) names of a pod UID and / or container id; empty strings for
    /// what is unknown.
    pub fn names(&self, pod_uid: Option<&str>, container_id: Option<&str>) -> (&str, &str, &str) {
        let c = container_id.and_then(|id| self.container(id));
        let p = pod_uid.and_then(|u| self.pod(u));
        match (c, p) {
            (Some(c), _) => (&c.namespace, &c.pod, &c.name),
            (None, Some(p)) => (&p.namespace, &p.name, ""),
            (None, None) => ("", "", ""),
        }
    }

    /// `k8s.namespace.name`, `k8s.pod.name`, `k8s.container.name` for a resource, those known.
    pub fn attributes(&self, pod_uid: Option<&str>, container_id: Option<&str>) -> Vec<KeyValue> {
        let (ns, pod, c) = self.names(pod_uid, container_id);
        [
            ("k8s.namespace.name", ns),
            ("k8s.pod.name", pod),
            ("k8s.container.name", c),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| KeyValue::str(k, v))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "1b2c3d4e-0000-1111-2222-333344445555";
    const ID: &str = "4f2a9c1d3e5b7a9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c";

    #[test]
    fn names_as_the_kubelet_writes_them() {
        let (uid, p) =
            parse_pod_dir(&format!("kube-system_coredns-7db6d8ff4d-x2x9k_{UID}")).unwrap();
        assert_eq!(uid, UID);
        assert_eq!(
            (p.namespace.as_str(), p.name.as_str()),
            ("kube-system", "coredns-7db6d8ff4d-x2x9k")
        );
        let (id, c) = parse_container_log(&format!(
            "coredns-7db6d8ff4d-x2x9k_kube-system_coredns-{ID}.log"
        ))
        .unwrap();
        assert_eq!(id, ID);
        assert_eq!(
            (c.namespace.as_str(), c.pod.as_str(), c.name.as_str()),
            ("kube-system", "coredns-7db6d8ff4d-x2x9k", "coredns")
        );
        for bad in [
            "a_b",
            "a_b_c_d",
            "Ns_pod_1b2c3d4e-0000-1111-2222-333344445555",
            "ns_pod_not-a-uid",
            "../x_pod_1b2c3d4e-0000-1111-2222-333344445555",
        ] {
            assert!(parse_pod_dir(bad).is_none(), "{bad}");
        }
        for bad in [
            "pod_ns_c-abc.log",
            &format!("pod_ns_c-{ID}.txt"),
            &format!("pod_ns-{ID}.log"),
            &format!("pod_ns_c_x-{ID}.log"),
            "\u{0}.log",
        ] {
            assert!(parse_container_log(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn refresh_follows_the_directories() {
        let root = tempfile::tempdir().unwrap();
        let pods = root.path().join("var/log/pods");
        let ctrs = root.path().join("var/log/containers");
        std::fs::create_dir_all(&pods).unwrap();
        std::fs::create_dir_all(&ctrs).unwrap();
        let mut k = K8sNames::new(root.path());
        k.refresh();
        assert!(k.is_empty());
        std::fs::create_dir(pods.join(format!("default_web-0_{UID}"))).unwrap();
        std::os::unix::fs::symlink(
            format!("/var/log/pods/default_web-0_{UID}/nginx/0.log"),
            ctrs.join(format!("web-0_default_nginx-{ID}.log")),
        )
        .unwrap();
        k.refresh();
        assert_eq!(k.names(Some(UID), None), ("default", "web-0", ""));
        assert_eq!(k.names(Some(UID), Some(ID)), ("default", "web-0", "nginx"));
        assert_eq!(k.attributes(None, Some(ID)).len(), 3);
        assert!(k.attributes(Some("x"), None).is_empty());
        let n = k.refreshes;
        k.refresh();
        assert_eq!(k.refreshes, n, "unchanged directories are not listed again");
    }
}
