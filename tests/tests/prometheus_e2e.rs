//! The Prometheus endpoint of the real agent (root, shipper as the agent user `nobody`,
//! sandboxed), scraped by the real Prometheus server from Debian (`/usr/bin/prometheus`, which
//! `dev.sh test` installs; its own service is never used: this test runs the binary on free
//! ports with its storage in a temporary directory, scraping every second). Prometheus's HTTP
//! API must return vigil's process series (a process this test started, by pid) and host
//! series, report the target healthy, and forget the process after it exits (staleness); a
//! write to the endpoint is refused and counted.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vigil_ipc_proto::Role;
use vigil_tests::otlp::free_port;
use vigil_tests::{Agent, terminate};

const PROMETHEUS: &str = "/usr/bin/prometheus";
const NOBODY: u32 = 65534;

/// One HTTP/1.0 exchange on 127.0.0.1 (both servers answer it with a body that ends with the
/// connection): status and body.
fn http(port: u16, request: &str) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .map_err(|e| e.to_string())?;
    s.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or(format!("no head: {raw}"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or(format!("no status: {head}"))?;
    Ok((status, body.to_string()))
}

fn get(port: u16, path: &str) -> Result<(u16, String), String> {
    http(
        port,
        &format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"),
    )
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The real Prometheus server, scraping one target every second.
struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: &str) -> Prometheus {
        assert!(
            Path::new(PROMETHEUS).exists(),
            "{PROMETHEUS} missing: apt-get install --no-install-recommends prometheus (dev.sh test does)"
        );
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("prometheus.yml");
        std::fs::write(
            &cfg,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: vigil\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start prometheus");
        Prometheus {
            child,
            port,
            _dir: dir,
        }
    }

    /// `data` of an API answer.
    fn api(&self, path: &str) -> Result<serde_json::Value, String> {
        let (status, body) = get(self.port, path)?;
        let v: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| format!("{status} {e}: {body}"))?;
        if v["status"] != "success" {
            return Err(format!("{status}: {body}"));
        }
        Ok(v["data"].clone())
    }

    /// Instant query: the result vector.
    fn query(&self, q: &str) -> Vec<serde_json::Value> {
        match self.api(&format!("/api/v1/query?query={}", urlencode(q))) {
            Ok(d) => d["result"].as_array().cloned().unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    }

    /// Wait until `q` returns at least one series for which `pred` holds.
    fn wait_for(
        &self,
        q: &str,
        timeout: Duration,
        pred: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let r = self.query(q);
            if pred(&r) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "{q}: not as wanted after {timeout:?}: {r:?}\ntargets: {:?}",
                self.api("/api/v1/targets")
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        terminate(&mut self.child, Duration::from_secs(10));
    }
}

fn counter(agent: &Agent, role: Role, name: &str) -> u64 {
    let st = agent.status().expect("status");
    st.stats
        .iter()
        .find(|(r, _)| *r == role)
        .and_then(|(_, s)| s.get(name))
        .unwrap_or(0)
}

fn shipper_counter(agent: &Agent, name: &str) -> u64 {
    counter(agent, Role::Shipper, name)
}

#[test]
fn real_prometheus_scrapes_process_and_host_series() {
    // A process of our own, to find by pid.
    let mut marker = Command::new("sleep").arg("600").spawn().unwrap();
    let pid = marker.id();
    let listen = format!("127.0.0.1:{}", free_port());
    let mut agent = Agent::builder()
        .args(vigil_tests::QUIET_ARGS)
        .env("VIGIL_PROMETHEUS_LISTEN", listen.as_str())
        .start();
    let st = agent.wait_ready(Duration::from_secs(60));

    // The shipper serves it confined: agent user, no capabilities, NoNewPrivs, seccomp with
    // the accept4-only extra, Landlock.
    let shipper = st
        .processes
        .iter()
        .find(|p| p.role == Role::Shipper)
        .unwrap();
    assert_eq!(shipper.uids[0], NOBODY, "{shipper:?}");
    assert_eq!(shipper.cap_eff | shipper.cap_prm, 0, "{shipper:?}");
    assert!(shipper.no_new_privs && shipper.seccomp == 2, "{shipper:?}");
    assert!(shipper.landlock.starts_with("enforced"), "{shipper:?}");
    assert_eq!(
        shipper.seccomp_policy, "shipper+shipper-listen",
        "{shipper:?}"
    );

    let prom = Prometheus::start(&listen);
    let q = format!("process_cpu_time_seconds_total{{process_pid=\"{pid}\"}}");
    let r = prom.wait_for(&q, Duration::from_secs(120), |r| r.len() == 2);
    for s in &r {
        let m = &s["metric"];
        assert_eq!(m["process_executable_name"], "sleep", "{s}");
        assert_eq!(m["job"], "vigil", "{s}");
        assert!(m["cpu_mode"] == "user" || m["cpu_mode"] == "system", "{s}");
        assert!(m.get("process_command_line").is_none(), "{s}");
    }
    let r = prom.wait_for("system_memory_usage_bytes", Duration::from_secs(60), |r| {
        r.iter()
            .any(|s| s["metric"]["system_memory_state"] == "used")
    });
    let used: f64 = r
        .iter()
        .find(|s| s["metric"]["system_memory_state"] == "used")
        .and_then(|s| s["value"][1].as_str())
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(used > 0.0, "{r:?}");
    prom.wait_for("target_info", Duration::from_secs(30), |r| {
        r.iter().any(|s| s["metric"]["service_name"] == "vigil")
    });
    prom.wait_for(
        "vigil_shipper_records_accepted_total",
        Duration::from_secs(30),
        |r| !r.is_empty(),
    );

    // The target is healthy (its last scrape parsed: OpenMetrics, as Prometheus asks first).
    let targets = prom.api("/api/v1/targets").unwrap();
    let t = &targets["activeTargets"][0];
    assert_eq!(t["health"], "up", "{targets}");
    assert_eq!(t["lastError"], "", "{targets}");
    assert_eq!(
        t["scrapeUrl"],
        format!("http://{listen}/metrics"),
        "{targets}"
    );

    // Writes are refused and counted; scrapes are counted.
    let port: u16 = listen.rsplit(':').next().unwrap().parse().unwrap();
    let refused = shipper_counter(&agent, "prometheus_refused");
    let (status, _) = http(
        port,
        "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
    )
    .unwrap();
    assert_eq!(status, 405);
    let deadline = Instant::now() + Duration::from_secs(30);
    while shipper_counter(&agent, "prometheus_refused") <= refused {
        assert!(Instant::now() < deadline, "refusal not counted");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(shipper_counter(&agent, "prometheus_scrapes") >= 1);

    // The sleeper was sent once, then listed as unchanged (process_refresh_ms: 30 s): the
    // lists keep it on the endpoint long past the store's expiry (two intervals and a
    // second), with its uptime moving on.
    let since = Instant::now();
    let uptime = |text: &str| -> Option<f64> {
        text.lines()
            .find(|l| {
                l.starts_with("process_uptime_seconds")
                    && l.contains(&format!("process_pid=\"{pid}\""))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    };
    let (_, text) = get(port, "/metrics").unwrap();
    let first = uptime(&text).unwrap_or_else(|| panic!("no uptime of {pid}:\n{text}"));
    std::thread::sleep(Duration::from_secs(5).saturating_sub(since.elapsed()));
    let (_, text) = get(port, "/metrics").unwrap();
    let later = uptime(&text).unwrap_or_else(|| panic!("{pid} expired:\n{text}"));
    assert!(later >= first + 3.0, "uptime {first} → {later}");
    assert!(counter(&agent, Role::Collector, "procs_unchanged") > 0);

    // The process exits: its series leave the endpoint, and Prometheus marks them stale.
    marker.kill().unwrap();
    marker.wait().unwrap();
    prom.wait_for(&q, Duration::from_secs(60), |r| r.is_empty());
    let (_, text) = get(port, "/metrics").unwrap();
    assert!(!text.contains(&format!("process_pid=\"{pid}\"")));
    assert!(text.contains("system_memory_usage_bytes{"));
    assert!(agent.try_wait().is_none(), "agent exited");
    agent.stop();
}
