//! The shipper end to end with the real agent (root): metrics and kernel events reach a real
//! OTLP/HTTP receiver on 127.0.0.1 decoded with the official protobuf types, and records are
//! counted end to end through backend faults and `kill -9` of the shipper and of the whole agent.
//!
//! Kernel events are written to /dev/kmsg by the test. The collector emits only the events it
//! recognises, so each marker is a `segfault` line with a name unique to the test run and a
//! distinct pid: `<6>vgXXXXXX[<n>]: segfault at 0 ip ... error 4` → LogRecord `Segfault` with
//! `process.executable.name` and `process.pid = n`. Duplicates are allowed, losses are not.
//!
//! The lines that must be shipped from the journal (not re-read from the kernel) are written
//! while the backend refuses everything, and the test waits until they are in the journal files
//! before killing: the collector restarted skips kmsg records already journaled
//! (`Resume{last_kmsg_seq}`), so they can only arrive through the journal replay.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use vigil_testkit::KillOnDrop;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use vigil_ipc_proto::Role;
use vigil_tests::otlp::{Receiver, Reply, free_port};
use vigil_tests::{
    Agent, kmsg, kmsg_segfaults, proc_status, proc_status_line, unique_name, wait_markers_by,
};

const NOBODY: u32 = 65534;

/// Distinct marker numbers received for `name`, and the total count (duplicates included).
fn markers(rx: &Receiver, name: &str) -> (BTreeSet<i64>, usize) {
    let r = rx.received.lock().unwrap();
    let mut set = BTreeSet::new();
    let mut n = 0;
    for l in &r.logs {
        if l.log.event_name != "Segfault" {
            continue;
        }
        let a = l.attrs();
        if a.get("process.executable.name").map(String::as_str) == Some(name) {
            set.insert(a["process.pid"].parse::<i64>().unwrap());
            n += 1;
        }
    }
    (set, n)
}

fn wait_markers(rx: &Receiver, name: &str, want: &BTreeSet<i64>, timeout: Duration) {
    wait_markers_by(name, want, timeout, || markers(rx, name).0);
    let (got, n) = markers(rx, name);
    eprintln!("{name}: {} distinct markers, {n} received", got.len());
}

/// Fast retries and batching so the fault tests stay short (backoff capped at 1 s).
fn config_file(dir: &Path, endpoint: &str) -> PathBuf {
    let p = dir.join("vigil-e2e.toml");
    std::fs::write(
        &p,
        format!(
            "[shipper.otlp]\nendpoint = \"{endpoint}\"\ntimeout_ms = 2000\nmax_batch_delay_ms = 100\n\
             retry_initial_ms = 100\nretry_max_ms = 1000\n"
        ),
    )
    .unwrap();
    p
}

fn agent_args(cfg: &Path, endpoint: &str) -> Vec<String> {
    vigil_tests::QUIET_ARGS
        .iter()
        .chain(&[
            "--config",
            cfg.to_str().unwrap(),
            "--otlp-endpoint",
            endpoint,
        ])
        .map(|s| s.to_string())
        .collect()
}

fn start_agent(runtime: &Path, cfg_dir: &Path, endpoint: &str) -> Agent {
    let cfg = config_file(cfg_dir, endpoint);
    let mut agent = Agent::builder()
        .runtime_dir(runtime)
        .args(agent_args(&cfg, endpoint))
        .start();
    agent.wait_ready(Duration::from_secs(30));
    agent
}

/// Wait until every marker line of `ns` is in the journal files (postcard keeps strings as is).
fn wait_journaled(agent: &Agent, name: &str, ns: impl IntoIterator<Item = i64>) {
    let journal = agent.runtime_dir.join("journal");
    let want: Vec<i64> = ns.into_iter().collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut all = Vec::new();
        if let Ok(rd) = std::fs::read_dir(&journal) {
            for e in rd.flatten() {
                if e.file_name().to_string_lossy().ends_with(".vjl")
                    && let Ok(b) = std::fs::read(e.path())
                {
                    all.extend_from_slice(&b);
                }
            }
        }
        let text = String::from_utf8_lossy(&all);
        let missing: Vec<i64> = want
            .iter()
            .copied()
            .filter(|n| !text.contains(&format!("{name}[{n}]: segfault")))
            .collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} marker lines not journaled in {}: {missing:?}\nstats: {:?}",
            missing.len(),
            want.len(),
            journal.display(),
            agent.status().map(|s| s.stats)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn shipper_stat(agent: &Agent, key: &str) -> Option<u64> {
    role_stat(agent, Role::Shipper, key)
}

fn role_stat(agent: &Agent, role: Role, key: &str) -> Option<u64> {
    let st = agent.status().ok()?;
    st.stats
        .iter()
        .find(|(r, _)| *r == role)
        .and_then(|(_, s)| s.get(key))
}

/// The restarted collector skipped the kmsg records already journaled: what was journaled
/// before the kill can only have been shipped from the journal.
fn assert_collector_resumed(agent: &Agent) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let v = role_stat(agent, Role::Collector, "kmsg_skipped_resumed");
        if v.is_some_and(|v| v >= 100) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "collector kmsg_skipped_resumed {v:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Poll the shipper's counter in `vigil status` (refreshed by the supervisor every interval)
/// until `ok` holds; returns the last value.
fn wait_stat(agent: &Agent, key: &str, ok: impl Fn(u64) -> bool) -> Option<u64> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let v = shipper_stat(agent, key);
        if v.is_some_and(&ok) || Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn runtime_tmp() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("vigil-e2e-ship-")
        .tempdir_in("/tmp")
        .unwrap()
}

// ----------------------------------------------------------------------------------------

#[test]
fn otlp_metrics_resource_process_and_kernel_oom_event() {
    let rx = Receiver::start();
    let tmp = runtime_tmp();
    let sleeper = KillOnDrop(
        Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "sleep",
                "60",
            ])
            .stdin(Stdio::null())
            .spawn()
            .expect("setpriv sleep"),
    );
    let sleep_pid = sleeper.0.id().to_string();
    let agent = start_agent(&tmp.path().join("run"), tmp.path(), &rx.endpoint());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string();

    // Process metrics of the sleeper, as a resource of its own.
    let got = rx.wait(Duration::from_secs(20), |r| {
        let mine: Vec<_> = r
            .metrics
            .iter()
            .filter(|m| m.resource.get("process.pid") == Some(&sleep_pid))
            .cloned()
            .collect();
        let names: BTreeSet<_> = mine.iter().map(|m| m.metric.name.clone()).collect();
        (names.contains("process.cpu.time") && names.contains("process.memory.usage"))
            .then_some(mine)
    });
    let mine = got.unwrap_or_else(|| {
        panic!(
            "no process.* metrics for pid {sleep_pid}; metric names received: {:?}\n{}",
            rx.metrics()
                .iter()
                .map(|m| m.metric.name.clone())
                .collect::<BTreeSet<_>>(),
            agent.stderr.text()
        )
    });
    for m in &mine {
        assert!(m.metric.name.starts_with("process."), "{}", m.metric.name);
        assert_eq!(m.scope, "vigil");
        assert_eq!(m.resource["host.name"], host);
        assert_eq!(m.resource["service.name"], "vigil");
        assert_eq!(m.resource["process.user.id"], "65534");
        assert_eq!(m.resource["process.executable.name"], "sleep");
    }
    let mem = mine
        .iter()
        .find(|m| m.metric.name == "process.memory.usage")
        .unwrap();
    assert_eq!(mem.metric.unit, "By");
    // An UpDownCounter of the conventions: a cumulative non-monotonic sum.
    let Some(Data::Sum(g)) = &mem.metric.data else {
        panic!("process.memory.usage is not a sum: {:?}", mem.metric.data)
    };
    assert!(!g.is_monotonic);
    assert_eq!(g.aggregation_temporality, 2, "cumulative");
    assert!(!g.data_points.is_empty());
    let cpu = mine
        .iter()
        .find(|m| m.metric.name == "process.cpu.time")
        .unwrap();
    let Some(Data::Sum(s)) = &cpu.metric.data else {
        panic!("process.cpu.time is not a sum: {:?}", cpu.metric.data)
    };
    assert!(s.is_monotonic);
    assert_eq!(s.aggregation_temporality, 2, "cumulative");

    // The shipper's own counters arrive the same way.
    let selfm = rx.wait(Duration::from_secs(15), |r| {
        r.metrics
            .iter()
            .find(|m| m.metric.name == "vigil.shipper.records_accepted")
            .cloned()
    });
    let selfm = selfm.expect("no vigil.shipper.records_accepted metric");
    assert_eq!(selfm.resource["service.name"], "vigil");
    assert_eq!(selfm.resource["host.name"], host);

    // A kernel OOM kill line becomes an OOMKilling log record.
    let name = unique_name("o");
    kmsg(&format!(
        "<3>Out of memory: Killed process 4242 ({name}) total-vm:1000kB, anon-rss:500kB, \
         file-rss:0kB, shmem-rss:0kB, UID:0 pgtables:40kB oom_score_adj:0"
    ));
    let oom = rx.wait(Duration::from_secs(20), |r| {
        r.logs
            .iter()
            .find(|l| l.attrs().get("process.executable.name").map(String::as_str) == Some(&name))
            .cloned()
    });
    let oom = oom.unwrap_or_else(|| {
        panic!(
            "no log record for {name}; event names received: {:?}\n{}",
            rx.logs()
                .iter()
                .map(|l| l.log.event_name.clone())
                .collect::<BTreeSet<_>>(),
            agent.stderr.text()
        )
    });
    assert_eq!(oom.log.event_name, "OOMKilling");
    assert_eq!(oom.scope, "vigil");
    assert_eq!(oom.log.severity_number, 17);
    assert_eq!(oom.log.severity_text, "ERROR");
    assert!(
        vigil_tests::otlp::any_to_string(&oom.log.body).contains("Killed process 4242"),
        "{:?}",
        oom.log.body
    );
    let a = oom.attrs();
    assert_eq!(a["process.pid"], "4242");
    assert_eq!(a["event.name"], "OOMKilling");
    assert_eq!(a["linux.oom.total_vm_kb"], "1000");
    assert_eq!(a["linux.oom.anon_rss_kb"], "500");
    assert_eq!(a["linux.oom.pgtables_kb"], "40");
    assert_eq!(a["process.user.id"], "0");
    assert!(a["linux.kmsg.seq"].parse::<u64>().is_ok(), "{a:?}");
    assert_eq!(oom.resource["host.name"], host);
    assert_eq!(oom.resource["service.name"], "vigil");
    assert!(oom.log.time_unix_nano > 0);
}

#[test]
fn backend_down_then_up_loses_no_kernel_event() {
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let tmp = runtime_tmp();
    let run = tmp.path().join("run");
    let agent = start_agent(&run, tmp.path(), &endpoint);
    let name = unique_name("a");
    kmsg_segfaults(&name, 1..=100);
    wait_journaled(&agent, &name, 1..=100);
    // Nothing listens: connection refused, retried.
    let deadline = Instant::now() + Duration::from_secs(10);
    while shipper_stat(&agent, "retries").unwrap_or(0) == 0 {
        assert!(Instant::now() < deadline, "no retry counted while down");
        std::thread::sleep(Duration::from_millis(100));
    }
    kmsg_segfaults(&name, 101..=200);
    let rx = Receiver::start_at(port);
    wait_markers(&rx, &name, &(1..=200).collect(), Duration::from_secs(30));
    assert!(
        agent
            .status()
            .unwrap()
            .processes
            .iter()
            .all(|p| p.restarts == 0)
    );
}

#[test]
fn backend_503_retry_after_then_200_loses_no_kernel_event() {
    let rx = Receiver::start();
    rx.set_default(Reply::retry_after(503, "1"));
    let tmp = runtime_tmp();
    let run = tmp.path().join("run");
    let agent = start_agent(&run, tmp.path(), &rx.endpoint());
    let name = unique_name("b");
    kmsg_segfaults(&name, 1..=200);
    wait_journaled(&agent, &name, 1..=200);
    // Several refusals (Retry-After: 1 s between them), nothing accepted meanwhile.
    assert!(
        rx.wait(Duration::from_secs(15), |r| {
            (r.requests.iter().filter(|q| q.1 == 503).count() >= 3).then_some(())
        })
        .is_some(),
        "the shipper did not retry after 503"
    );
    assert!(markers(&rx, &name).0.is_empty());
    rx.set_default(Reply::status(200));
    wait_markers(&rx, &name, &(1..=200).collect(), Duration::from_secs(30));
    let retries = wait_stat(&agent, "retries", |v| v >= 3);
    assert!(retries >= Some(3), "retries {retries:?}");
    assert_eq!(
        shipper_stat(&agent, "records_dropped.http_4xx").unwrap_or(0),
        0
    );
}

#[test]
fn kill_9_shipper_mid_stream_journal_replays() {
    let rx = Receiver::start();
    rx.set_default(Reply::retry_after(503, "1"));
    let tmp = runtime_tmp();
    let run = tmp.path().join("run");
    let agent = start_agent(&run, tmp.path(), &rx.endpoint());
    let name = unique_name("c");
    kmsg_segfaults(&name, 1..=100);
    wait_journaled(&agent, &name, 1..=100);

    let before = agent.status().unwrap();
    let shipper = before
        .processes
        .iter()
        .find(|p| p.role == Role::Shipper)
        .unwrap()
        .pid;
    assert_eq!(proc_status(shipper).unwrap().uids, [NOBODY; 4]);
    kill(Pid::from_raw(shipper as i32), Signal::SIGKILL).unwrap();
    // While the children are restarted: more lines, then the backend recovers.
    kmsg_segfaults(&name, 101..=150);
    rx.set_default(Reply::status(200));
    kmsg_segfaults(&name, 151..=200);
    wait_markers(&rx, &name, &(1..=200).collect(), Duration::from_secs(30));

    let after = agent.status().unwrap();
    let sh = after
        .processes
        .iter()
        .find(|p| p.role == Role::Shipper)
        .unwrap();
    assert_ne!(sh.pid, shipper, "shipper not restarted");
    assert!(sh.restarts >= 1, "{sh:?}");
    // Markers 1..=100 were journaled before the kill and never acknowledged by the backend:
    // the new shipper replayed them (the new collector skipped them in kmsg).
    let replayed = wait_stat(&agent, "records_replayed", |v| v >= 100);
    assert!(replayed >= Some(100), "records_replayed {replayed:?}");
    assert_collector_resumed(&agent);
}

#[test]
fn kill_9_whole_agent_then_restart_on_same_runtime_dir_ships_the_journal() {
    let rx = Receiver::start();
    rx.set_default(Reply::retry_after(503, "1"));
    let tmp = runtime_tmp();
    let run = tmp.path().join("run");
    let mut agent = start_agent(&run, tmp.path(), &rx.endpoint());
    let name = unique_name("d");
    kmsg_segfaults(&name, 1..=100);
    wait_journaled(&agent, &name, 1..=100);

    // SIGKILL the supervisor, then every child it had.
    let last = agent.status().unwrap();
    kill(Pid::from_raw(agent.pid() as i32), Signal::SIGKILL).unwrap();
    for p in &last.processes {
        if p.role != Role::Supervisor {
            let _ = kill(Pid::from_raw(p.pid as i32), Signal::SIGKILL);
        }
    }
    assert!(agent.wait_exit(Duration::from_secs(10)).is_some());
    let deadline = Instant::now() + Duration::from_secs(10);
    for p in &last.processes {
        while Path::new(&format!("/proc/{}", p.pid)).exists()
            && proc_status_line(p.pid, "State").is_some_and(|s| !s.starts_with('Z'))
        {
            assert!(
                Instant::now() < deadline,
                "{:?} {} still alive",
                p.role,
                p.pid
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    drop(agent);

    // Lines written while no agent runs are read from the kernel by the next one.
    kmsg_segfaults(&name, 101..=200);
    rx.set_default(Reply::status(200));
    let agent2 = start_agent(&run, tmp.path(), &rx.endpoint());
    wait_markers(&rx, &name, &(1..=200).collect(), Duration::from_secs(30));
    let replayed = wait_stat(&agent2, "records_replayed", |v| v >= 100);
    assert!(replayed >= Some(100), "records_replayed {replayed:?}");
    assert_collector_resumed(&agent2);
}

#[test]
fn journal_dir_belongs_to_agent_user_0700_and_the_shipper_writes_there() {
    let rx = Receiver::start();
    let tmp = runtime_tmp();
    let run = tmp.path().join("run");
    let agent = start_agent(&run, tmp.path(), &rx.endpoint());
    let journal = run.join("journal");
    let md = std::fs::metadata(&journal).unwrap();
    assert!(md.is_dir());
    assert_eq!(md.uid(), NOBODY, "journal dir owner");
    assert_eq!(
        md.mode() & 0o7777,
        0o700,
        "journal dir mode {:o}",
        md.mode()
    );
    let rmd = std::fs::metadata(&run).unwrap();
    assert_eq!(rmd.uid(), 0, "runtime dir owner");
    assert_eq!(
        rmd.mode() & 0o7777,
        0o755,
        "runtime dir mode {:o}",
        rmd.mode()
    );

    let shipper = agent.role_pid(Role::Shipper);
    let st = proc_status(shipper).unwrap();
    assert_eq!(st.uids, [NOBODY; 4], "shipper uids");
    assert_eq!(st.cap_eff, 0);

    // What is in the journal dir was written by the shipper (uid 65534): segments, checkpoint.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let files: Vec<(String, u32)> = std::fs::read_dir(&journal)
            .unwrap()
            .flatten()
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    e.metadata().unwrap().uid(),
                )
            })
            .collect();
        let seg = files
            .iter()
            .any(|(n, _)| n.starts_with("seg-") && n.ends_with(".vjl"));
        let ck = files.iter().any(|(n, _)| n == "checkpoint.json");
        if seg && ck {
            for (n, uid) in &files {
                assert_eq!(
                    *uid, NOBODY,
                    "{n} in the journal dir not written by the shipper"
                );
            }
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no segment and checkpoint written: {files:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // And it shipped from there.
    assert!(
        rx.wait(Duration::from_secs(15), |r| (!r.metrics.is_empty())
            .then_some(()))
            .is_some()
    );
}
