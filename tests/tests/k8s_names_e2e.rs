//! Issue 12: Kubernetes names without an API token. The test makes a host root the way a node
//! looks to a DaemonSet (`--host-root`): the kubelet's `/var/log/pods/<ns>_<pod>_<uid>/<ctr>/`
//! directories and `/var/log/containers/<pod>_<ns>_<ctr>-<id>.log` links, the host's /etc and
//! /usr bound in; and real cgroups named as containerd (systemd driver) and CRI-O (cgroupfs
//! driver) name them, with processes inside. The agent's virtual root is built from that host
//! root; process, container, network-namespace and flow records carry `k8s.namespace.name`,
//! `k8s.pod.name`, `k8s.container.name`, and a pod created while it runs is named too.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use vigil_tests::conformance::Table;
use vigil_tests::{Agent, sh};

struct Node {
    base: PathBuf,
    root: PathBuf,
    cgroups: Vec<PathBuf>,
    children: Vec<std::process::Child>,
    mounts: Vec<PathBuf>,
}

impl Drop for Node {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        std::thread::sleep(Duration::from_millis(200));
        for d in self.cgroups.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
        for m in self.mounts.iter().rev() {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(m)
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

struct Pod<'a> {
    ns: &'a str,
    name: &'a str,
    uid: String,
    container: &'a str,
    id: String,
}

fn hex_id(seed: u64) -> String {
    format!(
        "{:032x}{:032x}",
        u128::from(seed) * 0x9e37_79b9_7f4a_7c15,
        u128::from(seed) + 0xabc
    )
}

fn uid_of(seed: u64) -> String {
    let h = format!("{:032x}", u128::from(seed) * 0x1234_5678_9abc_def1);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn cgroup2() -> PathBuf {
    if Path::new("/sys/fs/cgroup/unified/cgroup.procs").exists() {
        PathBuf::from("/sys/fs/cgroup/unified")
    } else {
        PathBuf::from("/sys/fs/cgroup")
    }
}

impl Node {
    fn new() -> Node {
        let base = PathBuf::from(format!("/tmp/vigil-k8s-{}", std::process::id()));
        let root = base.join("root");
        let mut n = Node {
            base: base.clone(),
            root: root.clone(),
            cgroups: Vec::new(),
            children: Vec::new(),
            mounts: Vec::new(),
        };
        for d in [
            "proc",
            "sys",
            "dev",
            "etc",
            "usr",
            "var/log/pods",
            "var/log/containers",
        ] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        // The runtime dir's mount point inside the view, and the dir itself.
        std::fs::create_dir_all(root.join(base.join("rt").strip_prefix("/").unwrap())).unwrap();
        std::fs::create_dir_all(base.join("rt")).unwrap();
        for d in ["etc", "usr"] {
            sh(&format!(
                "mount --bind -o ro /{d} {}",
                root.join(d).display()
            ));
            n.mounts.push(root.join(d));
        }
        for l in ["bin", "sbin", "lib", "lib64"] {
            if let Ok(t) = std::fs::read_link(Path::new("/").join(l)) {
                std::os::unix::fs::symlink(t, root.join(l)).unwrap();
            }
        }
        n
    }

    /// The kubelet's log layout of a pod's container.
    fn kubelet_logs(&self, p: &Pod<'_>) {
        let dir = format!("{}_{}_{}", p.ns, p.name, p.uid);
        let c = self.root.join("var/log/pods").join(&dir).join(p.container);
        std::fs::create_dir_all(&c).unwrap();
        std::fs::write(c.join("0.log"), "").unwrap();
        std::os::unix::fs::symlink(
            format!("/var/log/pods/{dir}/{}/0.log", p.container),
            self.root
                .join("var/log/containers")
                .join(format!("{}_{}_{}-{}.log", p.name, p.ns, p.container, p.id)),
        )
        .unwrap();
    }

    /// Make the cgroup path (each level remembered for cleanup) and start `cmd` inside it.
    fn run_in(&mut self, rel: &str, cmd: &str) {
        let mut p = cgroup2();
        for comp in rel.split('/') {
            p = p.join(comp);
            if !p.exists() {
                std::fs::create_dir(&p).unwrap();
                self.cgroups.push(p.clone());
            }
        }
        let child = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "echo $$ > {}/cgroup.procs && exec {cmd}",
                p.display()
            ))
            .spawn()
            .unwrap();
        self.children.push(child);
    }
}

/// The first line containing `needle` (only those are parsed) that satisfies `pred`.
fn wait_line(a: &Agent, secs: u64, needle: &str, pred: impl Fn(&Value) -> bool) -> Option<Value> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if let Some(l) = a.json_lines_with(needle).into_iter().find(|l| pred(l)) {
            return Some(l);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    None
}

fn named(l: &Value, where_: &str, p: &Pod<'_>) -> bool {
    let r = &l[where_];
    r["k8s.namespace.name"] == p.ns
        && r["k8s.pod.name"] == p.name
        && r["k8s.container.name"] == p.container
}

#[test]
fn kubernetes_names_from_the_kubelets_log_directories() {
    let me = u64::from(std::process::id());
    let mut node = Node::new();
    let top = format!("vigil-k8s-{me}");
    let web = Pod {
        ns: "shop",
        name: "web-7d4b9c-x2x9k",
        uid: uid_of(me),
        container: "nginx",
        id: hex_id(me),
    };
    let db = Pod {
        ns: "data",
        name: "db-0",
        uid: uid_of(me + 1),
        container: "postgres",
        id: hex_id(me + 1),
    };
    node.kubelet_logs(&web);
    node.kubelet_logs(&db);
    // containerd, systemd cgroup driver; the container in its own network namespace, sending
    // UDP out of eth0 (tc egress sees its socket's cgroup).
    let web_cg = format!(
        "{top}/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{}.scope",
        web.uid.replace('-', "_"),
        web.id
    );
    node.run_in(&web_cg, "unshare --net sleep 120");
    // CRI-O, cgroupfs driver.
    let db_cg = format!("{top}/kubepods/burstable/pod{}/crio-{}", db.uid, db.id);
    node.run_in(
        &db_cg,
        "python3 -c 'import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\nfor _ in range(2400):\n    s.sendto(b\"x\"*64,(\"192.0.2.1\",9)); time.sleep(0.05)'",
    );

    let cfg = node.base.join("vigil.toml");
    std::fs::write(
        &cfg,
        "[collector]\ninterval_ms = 500\nflows_source = \"tc\"\nflow_evict_ms = 1000\n",
    )
    .unwrap();
    let mut agent = Agent::builder()
        .runtime_dir(node.base.join("rt"))
        .args(["--user", "nobody", "--host-root"])
        .arg(node.root.display().to_string())
        .arg("--config")
        .arg(cfg.display().to_string())
        .start();
    agent.wait_ready(Duration::from_secs(30));

    for p in [&web, &db] {
        let proc_line = wait_line(&agent, 30, &p.id, |l| {
            l["name"] == "process.cpu.time" && l["resource"]["container.id"] == p.id.as_str()
        })
        .unwrap_or_else(|| panic!("no process of {}\n{}", p.name, agent.stderr.text()));
        assert!(named(&proc_line, "resource", p), "{proc_line}");
        assert_eq!(proc_line["resource"]["k8s.pod.uid"], p.uid.as_str());
        let ctr = wait_line(&agent, 20, &p.id, |l| {
            l["name"] == "container.cpu.time" && l["resource"]["container.id"] == p.id.as_str()
        })
        .unwrap_or_else(|| panic!("no container record of {}", p.name));
        assert!(named(&ctr, "resource", p), "{ctr}");
    }
    let net = wait_line(&agent, 20, &web.id, |l| {
        l["name"] == "container.network.io" && l["resource"]["container.id"] == web.id.as_str()
    })
    .expect("the web container's network namespace");
    assert!(named(&net, "resource", &web), "{net}");
    let flow = wait_line(&agent, 30, &db.id, |l| {
        l["name"] == "vigil.network.flow.packets"
            && l["attributes"]["container.id"] == db.id.as_str()
    })
    .unwrap_or_else(|| panic!("no flow of the db pod\n{}", agent.stderr.text()));
    assert!(named(&flow, "attributes", &db), "{flow}");

    // A pod scheduled while the agent runs: the directories change, the names follow.
    let late = Pod {
        ns: "batch",
        name: "job-q8z2f",
        uid: uid_of(me + 2),
        container: "worker",
        id: hex_id(me + 2),
    };
    node.kubelet_logs(&late);
    let late_cg = format!("{top}/kubepods/besteffort/pod{}/crio-{}", late.uid, late.id);
    node.run_in(&late_cg, "sleep 120");
    let l = wait_line(&agent, 30, &late.id, |l| {
        l["name"] == "process.cpu.time"
            && l["resource"]["container.id"] == late.id.as_str()
            && l["resource"]["k8s.pod.name"] == late.name
    })
    .expect("names of a pod created after the start");
    assert!(named(&l, "resource", &late), "{l}");

    let (problems, _) = Table::load().check_lines(&agent.json_lines());
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(!agent.stderr.text().contains("killed by seccomp"));
    agent.stop();
}
