//! Issue 12: every metric a real run emits — with every group on, the opt-in process I/O
//! included, a container-like cgroup with a process in its own network namespace, loopback
//! traffic for flows — conforms to the table generated from the OpenTelemetry semantic
//! conventions (conventions/semconv-table.json): name, instrument, unit, attributes and enum
//! values. METRICS.md is what the same table gives.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use vigil_tests::conformance::Table;
use vigil_tests::{Agent, sh};

/// A cgroup named as docker names a container's scope, in cgroup2 and the v1 memory
/// hierarchy, holding `unshare --net sleep` (a container with its own network namespace).
struct Container {
    dirs: Vec<String>,
    child: std::process::Child,
}

impl Container {
    fn start(tag: &str, id: &str) -> Container {
        let mut dirs = Vec::new();
        let mut procs = Vec::new();
        for base in [
            "/sys/fs/cgroup/unified",
            "/sys/fs/cgroup/memory",
            "/sys/fs/cgroup",
        ] {
            // Hybrid: cgroup2 at unified/, v1 memory; pure v2: /sys/fs/cgroup itself.
            if !std::path::Path::new(&format!("{base}/cgroup.procs")).exists() {
                continue;
            }
            let top = format!("{base}/{tag}");
            let leaf = format!("{top}/docker-{id}.scope");
            std::fs::create_dir_all(&leaf).unwrap();
            dirs.push(top);
            dirs.push(leaf.clone());
            procs.push(format!("{leaf}/cgroup.procs"));
        }
        let joins: Vec<String> = procs.iter().map(|p| format!("echo $$ > {p}")).collect();
        let child = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "{} && exec unshare --net sleep 120",
                joins.join(" && ")
            ))
            .spawn()
            .unwrap();
        Container { dirs, child }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for d in self.dirs.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// Loopback TCP traffic until dropped (flows).
fn traffic(stop: std::sync::Arc<std::sync::atomic::AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            if let Ok((mut s, _)) = l.accept() {
                let mut b = [0u8; 4096];
                while s.read(&mut b).is_ok_and(|n| n > 0) {}
            }
        });
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let _ = c.write_all(&[7u8; 1024]);
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(c);
        let _ = t.join();
    })
}

#[test]
fn a_real_run_conforms_to_the_semantic_conventions() {
    let table = Table::load();
    let tag = format!("vigil-conf-{}", std::process::id());
    let id = format!(
        "{:064x}",
        u128::from(std::process::id()) * 0x9e37_79b9_7f4a_7c15
    );
    let _ctr = Container::start(&tag, &id);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tr = traffic(stop.clone());
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("vigil.toml");
    std::fs::write(
        &cfg,
        "[collector]\ninterval_ms = 500\nprocess_io = true\nprocess_sockets = true\nflow_evict_ms = 1000\n",
    )
    .unwrap();
    let mut agent = Agent::builder()
        .args(["--user", "nobody", "--config"])
        .arg(cfg.display().to_string())
        .start();
    agent.wait_ready(Duration::from_secs(30));

    // Every group shows up at least once before the output is judged.
    let want = [
        "system.cpu.time",
        "system.memory.usage",
        "system.paging.faults",
        "system.process.count",
        "system.disk.io",
        "system.filesystem.usage",
        "system.network.packet.count",
        "system.network.connection.count",
        "system.memory.linux.pressure.total",
        "process.context_switches",
        "process.paging.faults",
        "process.disk.io",
        "process.unix.file_descriptor.count",
        "container.cpu.time",
        "container.memory.working_set",
        "container.network.io",
        "vigil.network.flow.bytes",
    ];
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut missing: Vec<&str> = want.to_vec();
    while !missing.is_empty() && Instant::now() < deadline {
        // Text search only: the output is judged once, at the end.
        missing.retain(|m| {
            let needle = format!("\"name\":\"{m}\"");
            agent
                .stdout
                .find_last(|l| l.contains(&needle).then_some(()))
                .is_none()
        });
        std::thread::sleep(Duration::from_millis(500));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = tr.join();
    agent.stop();
    assert!(
        missing.is_empty(),
        "never emitted: {missing:?}\n{}",
        agent.stderr.text()
    );

    let lines = agent.json_lines();
    let (problems, seen) = table.check_lines(&lines);
    assert!(
        problems.is_empty(),
        "{} lines against semantic conventions {}:\n{}",
        lines.len(),
        table.version(),
        problems.join("\n")
    );
    // The container's own resource carries its id and the process I/O its executable path.
    assert!(lines.iter().any(
        |l| l["name"] == "container.network.io" && l["resource"]["container.id"] == id.as_str()
    ));
    assert!(
        lines
            .iter()
            .any(|l| l["resource"]["process.executable.path"].is_string()),
        "no executable path with process_io on"
    );
    eprintln!("{} metric names checked: {seen:?}", seen.len());
    assert!(!agent.stderr.text().contains("killed by seccomp"));
}

#[test]
fn metrics_md_is_generated_from_the_table() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = sh(&format!(
        "cd {} && python3 conventions/generate.py docs --check && echo ok",
        root.display()
    ));
    assert!(out.contains("ok"));
    let table = Table::load();
    assert!(table.version().starts_with("v1."));
    let md = std::fs::read_to_string(root.join("METRICS.md")).unwrap();
    for m in table.metric_names() {
        assert!(
            md.contains(&format!("`{m}`")),
            "{m} missing from METRICS.md"
        );
    }
}
