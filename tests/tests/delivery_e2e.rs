//! Delivery to real backends, end to end: the real agent (supervisor and three sandboxed
//! children) ships kernel events and metrics to the rotel OpenTelemetry collector, by name
//! (/etc/hosts of a mount namespace, or dnsmasq in a network namespace with a search list),
//! over TLS terminated by stunnel4 with certificates made by openssl at test time (the system
//! bundle replaced, a custom CA, mutual TLS, a wrong CA), through an HTTP CONNECT proxy, from
//! the OpenTelemetry environment variables alone; secrets never show in argv, logs, status or
//! JSON lines; a configuration that cannot work is one error at start, never a restart loop.
//!
//! Markers are segfault lines written to /dev/kmsg with a unique name; each must arrive at the
//! receiver (rotel prints every log body it decoded).

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use vigil_ipc_proto::Role;
use vigil_tests::backends::{
    ConnectProxy, DnsNet, Pki, Rotel, Stunnel, hosts_with, mount_ns_wrapper, temp_file,
};
use vigil_tests::otlp::{Receiver, free_port};
use vigil_tests::{Agent, kmsg_segfaults, unique_name, wait_markers_by};

const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

fn marker(name: &str, n: i64) -> String {
    format!("{name}[{n}]: segfault at 0")
}

/// Wait until every marker `ns` of `name` arrived at one of `rx`.
fn wait_markers(rx: &[&Rotel], name: &str, ns: impl IntoIterator<Item = i64>, timeout: Duration) {
    let want: BTreeSet<i64> = ns.into_iter().collect();
    wait_markers_by(name, &want, timeout, || {
        want.iter()
            .copied()
            .filter(|n| rx.iter().any(|r| r.count_bodies(&marker(name, *n)) > 0))
            .collect()
    });
}

/// Short batching and retries so the tests stay short.
fn config(dir: &Path, otlp_extra: &str) -> String {
    let p = dir.join("vigil.toml");
    std::fs::write(
        &p,
        format!(
            "[shipper.otlp]\ntimeout_ms = 3000\nmax_batch_delay_ms = 100\nretry_initial_ms = 100\n\
             retry_max_ms = 1000\n{otlp_extra}\n"
        ),
    )
    .unwrap();
    p.display().to_string()
}

fn base_args(cfg: &str) -> Vec<String> {
    vigil_tests::QUIET_ARGS
        .iter()
        .chain(&["--config", cfg])
        .map(|s| s.to_string())
        .collect()
}

fn shipper_stat(agent: &Agent, key: &str) -> Option<u64> {
    let st = agent.status().ok()?;
    st.stats
        .iter()
        .find(|(r, _)| *r == Role::Shipper)
        .and_then(|(_, s)| s.get(key))
}

fn wait_stat(agent: &Agent, key: &str, ok: impl Fn(u64) -> bool, timeout: Duration) -> u64 {
    let deadline = Instant::now() + timeout;
    loop {
        let v = shipper_stat(agent, key);
        if let Some(v) = v.filter(|v| ok(*v)) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "shipper counter {key} = {v:?} after {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn shipper_seccomp(agent: &Agent) -> String {
    let st = agent.status().unwrap();
    st.processes
        .iter()
        .find(|p| p.role == Role::Shipper)
        .map(|p| p.seccomp_policy.clone())
        .unwrap_or_default()
}

fn no_restarts(agent: &Agent) {
    let st = agent.status().unwrap();
    for p in &st.processes {
        assert_eq!(p.restarts, 0, "{:?} restarted: {:?}", p.role, p.last_exit);
    }
    assert!(
        !agent.stderr.text().contains("killed by seccomp"),
        "{}",
        agent.stderr.text()
    );
}

/// Nothing of `secret` in any process's argv or environment (the children's), in what the
/// agent logged, in `vigil status --json` or on its stdout.
fn assert_secret_hidden(agent: &Agent, secret: &str) {
    let st = agent.status().unwrap();
    for p in &st.processes {
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", p.pid)).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&cmdline).contains(secret),
            "{:?} argv",
            p.role
        );
        if p.role != Role::Supervisor {
            let env = std::fs::read(format!("/proc/{}/environ", p.pid)).unwrap_or_default();
            assert!(
                !String::from_utf8_lossy(&env).contains(secret),
                "{:?} environment",
                p.role
            );
        }
    }
    let status = std::process::Command::new(vigil_tests::vigil_bin())
        .args(["status", "--json", "--runtime-dir"])
        .arg(&agent.runtime_dir)
        .output()
        .unwrap();
    assert!(status.status.success());
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("shipper") && !text.contains(secret), "status");
    assert!(!agent.stderr.text().contains(secret), "logs");
    assert!(!agent.stdout.text().contains(secret), "stdout / JSON lines");
}

/// rotel behind stunnel4 on 127.0.0.1, with a test PKI whose server certificate names `dns`
/// (and 127.0.0.1); `mtls`: stunnel requires a client certificate of that CA.
struct TlsBackend {
    pki: Pki,
    rotel: Rotel,
    tls: Stunnel,
    port: u16,
}

fn tls_backend(dns: &[&str], mtls: bool) -> TlsBackend {
    let pki = Pki::new(dns, &["127.0.0.1"]);
    let rotel = Rotel::start();
    let port = free_port();
    let ca = pki.path("ca.pem");
    let tls = Stunnel::start(
        &pki,
        &format!("127.0.0.1:{port}"),
        &rotel.addr,
        mtls.then_some(ca.as_str()),
    );
    TlsBackend {
        pki,
        rotel,
        tls,
        port,
    }
}

// ---------------------------------------------------------------------------------------------

#[test]
fn https_by_name_with_the_system_bundle_replaced_by_the_test_ca() {
    let TlsBackend {
        pki,
        rotel,
        port,
        tls: _tls,
    } = tls_backend(&["otlp.example.test"], false);
    let (_h, hosts) = temp_file("hosts", &hosts_with("127.0.0.1 otlp.example.test"));
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "");
    let ca = pki.path("ca.pem");
    let mut agent = Agent::builder()
        .wrapper(mount_ns_wrapper(&[
            (&hosts, "/etc/hosts"),
            (&ca, SYSTEM_BUNDLE),
        ]))
        .args(base_args(&cfg))
        .args([
            "--otlp-endpoint",
            &format!("https://otlp.example.test:{port}"),
        ])
        .start();
    agent.wait_ready(Duration::from_secs(30));
    let name = unique_name("h");
    kmsg_segfaults(&name, 0..20);
    wait_markers(&[&rotel], &name, 0..20, Duration::from_secs(30));
    // Metrics travel the same way.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !rotel.out.text().contains("Name: process.") {
        assert!(Instant::now() < deadline, "no process metric at rotel");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(shipper_seccomp(&agent), "shipper+shipper-dns");
    no_restarts(&agent);
}

#[test]
fn mtls_is_refused_without_the_client_certificate_and_loses_nothing_once_it_is_set() {
    let TlsBackend {
        pki,
        rotel,
        tls,
        port,
    } = tls_backend(&["localhost"], true);
    let runtime = tempfile::Builder::new()
        .prefix("vigil-e2e-mtls-")
        .tempdir_in("/tmp")
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("https://127.0.0.1:{port}");
    let name = unique_name("m");

    // Without a client certificate: the handshake is refused, counted, retried; the journal
    // keeps every record.
    let cfg = config(dir.path(), &format!("ca_file = \"{}\"", pki.path("ca.pem")));
    let mut agent = Agent::builder()
        .runtime_dir(runtime.path())
        .args(base_args(&cfg))
        .args(["--otlp-endpoint", &endpoint])
        .start();
    agent.wait_ready(Duration::from_secs(30));
    kmsg_segfaults(&name, 0..10);
    wait_stat(
        &agent,
        "export_errors.tls",
        |v| v >= 2,
        Duration::from_secs(30),
    );
    assert_eq!(rotel.count_bodies(&name), 0);
    let line = agent
        .stderr
        .wait_for(Duration::from_secs(5), |l| {
            l.contains("otlp exporter") && l.contains("TLS")
        })
        .expect("a log line about the TLS failure");
    assert!(line.contains(&endpoint), "names the endpoint: {line}");
    assert!(
        tls.out.text().contains("peer did not return a certificate")
            || tls.out.text().contains("certificate required")
            || tls.out.text().contains("SSL_accept"),
        "stunnel refused the client: {}",
        tls.out.text()
    );
    agent.stop();

    // With it: everything journaled before arrives, and what comes after.
    let cfg = config(
        dir.path(),
        &format!(
            "ca_file = \"{}\"\nclient_cert_file = \"{}\"\nclient_key_file = \"{}\"",
            pki.path("ca.pem"),
            pki.path("client.pem"),
            pki.path("client.key")
        ),
    );
    let mut agent = Agent::builder()
        .runtime_dir(runtime.path())
        .args(base_args(&cfg))
        .args(["--otlp-endpoint", &endpoint])
        .start();
    agent.wait_ready(Duration::from_secs(30));
    kmsg_segfaults(&name, 10..20);
    wait_markers(&[&rotel], &name, 0..20, Duration::from_secs(40));
    no_restarts(&agent);
}

#[test]
fn wrong_ca_counts_one_clear_error_keeps_the_journal_and_a_fixed_config_delivers_all() {
    let TlsBackend {
        pki,
        rotel,
        port,
        tls: _tls,
    } = tls_backend(&["localhost"], false);
    let runtime = tempfile::Builder::new()
        .prefix("vigil-e2e-ca-")
        .tempdir_in("/tmp")
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("https://127.0.0.1:{port}");
    let name = unique_name("c");

    let cfg = config(
        dir.path(),
        &format!("ca_file = \"{}\"", pki.path("other-ca.pem")),
    );
    let mut agent = Agent::builder()
        .runtime_dir(runtime.path())
        .args(base_args(&cfg))
        .args(["--otlp-endpoint", &endpoint])
        .start();
    agent.wait_ready(Duration::from_secs(30));
    kmsg_segfaults(&name, 0..15);
    let errors = wait_stat(
        &agent,
        "export_errors.tls",
        |v| v >= 3,
        Duration::from_secs(30),
    );
    assert!(errors >= 3);
    // One line for the whole failing streak, naming the endpoint and the reason.
    std::thread::sleep(Duration::from_secs(2));
    let lines: Vec<String> = agent
        .stderr
        .lines()
        .into_iter()
        .filter(|l| l.contains("otlp exporter") && l.contains("TLS"))
        .collect();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(
        lines[0].contains(&endpoint) && lines[0].contains("unknown issuer"),
        "{}",
        lines[0]
    );
    assert_eq!(rotel.count_bodies(&name), 0);
    assert!(shipper_stat(&agent, "records_pending.otlp").unwrap() > 0);
    agent.stop();

    let cfg = config(dir.path(), &format!("ca_file = \"{}\"", pki.path("ca.pem")));
    let mut agent = Agent::builder()
        .runtime_dir(runtime.path())
        .args(base_args(&cfg))
        .args(["--otlp-endpoint", &endpoint])
        .start();
    agent.wait_ready(Duration::from_secs(30));
    wait_markers(&[&rotel], &name, 0..15, Duration::from_secs(40));
    no_restarts(&agent);
}

#[test]
fn dnsmasq_search_list_resolves_the_backend_and_a_moved_name_is_followed() {
    let pki = Pki::new(&["otlp", "otlp.example.test"], &[]);
    let net = DnsNet::new("dns", "");
    net.set_hosts(&format!("{} otlp.example.test\n", net.host_ip));
    let (rotel_a, rotel_b) = (Rotel::start(), Rotel::start());
    let port = free_port();
    let _tls_a = Stunnel::start(
        &pki,
        &format!("{}:{port}", net.host_ip),
        &rotel_a.addr,
        None,
    );
    let _tls_b = Stunnel::start(
        &pki,
        &format!("{}:{port}", net.spare_ip),
        &rotel_b.addr,
        None,
    );
    // A single-label name: found through the search list, as glibc would.
    let (_r, resolv) = temp_file("resolv.conf", &net.resolv_conf("example.test"));
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &format!("ca_file = \"{}\"", pki.path("ca.pem")));
    let mut agent = Agent::builder()
        .wrapper(mount_ns_wrapper(&[(&resolv, "/etc/resolv.conf")]))
        .args(base_args(&cfg))
        .args(["--otlp-endpoint", &format!("https://otlp:{port}")])
        .start();
    agent.wait_ready(Duration::from_secs(30));
    let name = unique_name("d");
    kmsg_segfaults(&name, 0..10);
    wait_markers(&[&rotel_a], &name, 0..10, Duration::from_secs(30));
    assert!(
        net.queries_for("otlp.example.test") > 0,
        "{}",
        net.log.text()
    );
    assert_eq!(rotel_b.count_bodies(&name), 0);

    // The name moves while the old backend stays up: within a minute (the longest an answer
    // is used) the agent follows it.
    net.set_hosts(&format!("{} otlp.example.test\n", net.spare_ip));
    let moved = Instant::now();
    let mut n = 10;
    while rotel_b.count_bodies(&name) == 0 {
        assert!(
            moved.elapsed() < Duration::from_secs(100),
            "still not at the new address"
        );
        kmsg_segfaults(&name, [n]);
        n += 1;
        std::thread::sleep(Duration::from_secs(1));
    }
    eprintln!("followed the move after {:?}", moved.elapsed());
    wait_markers(&[&rotel_a, &rotel_b], &name, 0..n, Duration::from_secs(30));
    no_restarts(&agent);
}

#[test]
fn https_through_a_connect_proxy_with_credentials_resolves_nothing_itself() {
    let TlsBackend {
        pki,
        rotel,
        port,
        tls: _tls,
    } = tls_backend(&["otlp.example.test"], false);
    let target = format!("otlp.example.test:{port}");
    // base64("agent:s3cret pass")
    let proxy = ConnectProxy::start(
        Some("Basic YWdlbnQ6czNjcmV0IHBhc3M="),
        &[(&target, &format!("127.0.0.1:{port}"))],
    );
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &format!("ca_file = \"{}\"", pki.path("ca.pem")));
    let mut agent = Agent::builder()
        .args(base_args(&cfg))
        .args(["--otlp-endpoint", &format!("https://{target}")])
        .env(
            "HTTPS_PROXY",
            format!("http://agent:s3cret%20pass@127.0.0.1:{}", proxy.port),
        )
        .env("NO_PROXY", "localhost,.internal")
        .start();
    agent.wait_ready(Duration::from_secs(30));
    let name = unique_name("p");
    kmsg_segfaults(&name, 0..10);
    wait_markers(&[&rotel], &name, 0..10, Duration::from_secs(30));
    assert!(proxy.connects.lock().unwrap().iter().all(|c| *c == target));
    assert_eq!(*proxy.refused.lock().unwrap(), 0);
    // The proxy is an address: the shipper needs no resolver at all.
    assert_eq!(shipper_seccomp(&agent), "shipper");
    assert_secret_hidden(&agent, "s3cret");
    no_restarts(&agent);
}

#[test]
fn the_opentelemetry_environment_alone_configures_delivery() {
    let TlsBackend {
        pki,
        rotel,
        port,
        tls: _tls,
    } = tls_backend(&["localhost"], false);
    let mut agent = Agent::builder()
        .args(["--user", "nobody", "--interval-ms", "1000"])
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("https://127.0.0.1:{port}"),
        )
        .env("OTEL_EXPORTER_OTLP_CERTIFICATE", pki.path("ca.pem"))
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        .env(
            "OTEL_EXPORTER_OTLP_HEADERS",
            "authorization=Bearer%20tok-e2e-Zq9",
        )
        .env("OTEL_EXPORTER_OTLP_TIMEOUT", "3000")
        .env(
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment=e2e,team=infra",
        )
        .env("OTEL_SERVICE_NAME", "vigil-e2e")
        .start();
    agent.wait_ready(Duration::from_secs(30));
    let name = unique_name("o");
    kmsg_segfaults(&name, 0..5);
    wait_markers(&[&rotel], &name, 0..5, Duration::from_secs(40));
    let text = rotel.out.text();
    assert!(
        text.contains("deployment.environment: Str(e2e)"),
        "resource attributes"
    );
    assert!(
        text.contains("service.name: Str(vigil-e2e)"),
        "OTEL_SERVICE_NAME"
    );
    // JSON lines are on (the default) here: the token is not in them either.
    assert!(agent.stdout.text().contains("\"service.name\""));
    assert_secret_hidden(&agent, "tok-e2e-Zq9");
    no_restarts(&agent);
}

#[test]
fn headers_from_config_file_and_environment_reach_the_backend() {
    // A header check needs to see the request; rotel does not print headers, so this one
    // test reads them with the small receiver of tests/src/otlp.rs.
    let rx = Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    let (_h, headers_file) = temp_file("headers", "# credentials\nX-Api-Key: file-k3y\n");
    let cfg = config(
        dir.path(),
        &format!(
            "endpoint = \"{}\"\nheaders_file = \"{headers_file}\"\n[shipper.otlp.headers]\nX-Org = \"inline-0rg\"\n",
            rx.endpoint()
        ),
    );
    let mut agent = Agent::builder()
        .args(base_args(&cfg))
        .env(
            "OTEL_EXPORTER_OTLP_LOGS_HEADERS",
            "authorization=Bearer%20env-t0k",
        )
        .start();
    agent.wait_ready(Duration::from_secs(30));
    let name = unique_name("x");
    kmsg_segfaults(&name, 0..3);
    let seen = rx.wait(Duration::from_secs(30), |r| {
        let logs = r.requests.iter().position(|q| q.0 == "/v1/logs")?;
        let metrics = r.requests.iter().position(|q| q.0 == "/v1/metrics")?;
        Some((r.headers[logs].clone(), r.headers[metrics].clone()))
    });
    let (logs, metrics) = seen.expect("a logs and a metrics request");
    let has = |h: &[(String, String)], k: &str, v: &str| h.iter().any(|(a, b)| a == k && b == v);
    assert!(has(&logs, "x-api-key", "file-k3y") && has(&logs, "x-org", "inline-0rg"));
    assert!(has(&logs, "authorization", "Bearer env-t0k"));
    assert!(has(&metrics, "x-api-key", "file-k3y"));
    assert!(
        !metrics.iter().any(|(k, _)| k == "authorization"),
        "logs only"
    );
    for s in ["file-k3y", "inline-0rg", "env-t0k"] {
        assert_secret_hidden(&agent, s);
    }
}

#[test]
fn a_hostname_endpoint_ships_and_never_trips_seccomp() {
    // Regression: a name in /etc/hosts used to end in `shipper killed by seccomp: syscall
    // socket (41)` (glibc's resolver) and a restart loop of all three children.
    let rotel = Rotel::start();
    let (_h, hosts) = temp_file("hosts", &hosts_with("127.0.0.1 otlp.example.test"));
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "");
    let mut agent = Agent::builder()
        .wrapper(mount_ns_wrapper(&[(&hosts, "/etc/hosts")]))
        .args(base_args(&cfg))
        .args([
            "--otlp-endpoint",
            &format!("http://otlp.example.test:{}", rotel.port()),
        ])
        .start();
    agent.wait_ready(Duration::from_secs(30));
    let name = unique_name("n");
    kmsg_segfaults(&name, 0..5);
    wait_markers(&[&rotel], &name, 0..5, Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(2));
    no_restarts(&agent);
}

/// `vigil run` with this configuration exits by itself, non-zero, within `secs`; its stderr.
fn refused_at_start(args: &[&str], env: &[(&str, &str)], secs: u64) -> (i32, String) {
    let mut b = Agent::builder()
        .args(["--user", "nobody"])
        .args(args.iter().copied());
    for (k, v) in env {
        b = b.env(*k, *v);
    }
    let mut agent = b.start();
    let st = agent
        .wait_exit(Duration::from_secs(secs))
        .unwrap_or_else(|| panic!("still running: {}", agent.stderr.text()));
    (st.code().unwrap_or(-1), agent.stderr.text())
}

#[test]
fn configurations_that_cannot_work_are_one_error_at_start() {
    let pki = Pki::new(&["localhost"], &["127.0.0.1"]);
    let dir = tempfile::tempdir().unwrap();

    let cfg = config(dir.path(), "ca_file = \"/nonexistent/ca.pem\"");
    let (code, err) = refused_at_start(
        &[
            "--config",
            &cfg,
            "--otlp-endpoint",
            "https://127.0.0.1:4318",
        ],
        &[],
        10,
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("shipper.otlp.ca_file") && err.contains("/nonexistent/ca.pem"),
        "{err}"
    );
    assert!(!err.contains("started role"), "nothing started: {err}");

    let (code, err) = refused_at_start(&[], &[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")], 10);
    assert_ne!(code, 0);
    assert!(err.contains("OTEL_EXPORTER_OTLP_PROTOCOL"), "{err}");

    // A key that is a key but not the certificate's: only TLS can tell. The shipper says so
    // once and the agent stops (exit 78), it does not restart.
    let cfg = config(
        dir.path(),
        &format!(
            "client_cert_file = \"{}\"\nclient_key_file = \"{}\"",
            pki.path("client.pem"),
            pki.path("server.key")
        ),
    );
    let (code, err) = refused_at_start(
        &[
            "--config",
            &cfg,
            "--otlp-endpoint",
            "https://127.0.0.1:4318",
        ],
        &[("SSL_CERT_FILE", &pki.path("ca.pem"))],
        20,
    );
    assert_eq!(code, 78, "{err}");
    assert!(
        err.contains("client certificate") && err.contains("not restarting"),
        "{err}"
    );
    assert!(!err.contains("restarting privhelper"), "{err}");

    let (code, err) = refused_at_start(&["--prometheus-listen", "localhost:9464"], &[], 10);
    assert_ne!(code, 0);
    assert!(err.contains("shipper.prometheus.listen"), "{err}");
}
