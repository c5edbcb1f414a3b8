//! The Prometheus endpoint through run(), on a real listening socket, with the shipper's thread
//! under Landlock (journal directory only, no TCP bind or connect but one unused port) and a
//! seccomp allowlist of exactly [`vigil_shipper::SYSCALLS`] + [`vigil_shipper::LISTEN_SYSCALLS`];
//! this test plays supervisor, collector and scraping clients.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use common::*;
use vigil_ipc_proto::*;
use vigil_shipper::http::{Response, parse_response};

fn process(pid: u32, name: &str, cpu_s: u64) -> Record {
    Record::Process(Box::new(ProcessRecord {
        time_unix_nano: 1_700_000_010_000_000_000,
        start_time_unix_nano: 1_700_000_000_000_000_000,
        pid,
        ppid: 1,
        uid: 0,
        gid: 0,
        state: b'S',
        threads: 2,
        cpu_user_ns: cpu_s * 1_000_000_000 + 500_000_000,
        cpu_system_ns: 250_000_000,
        memory_rss_bytes: 4096 * u64::from(pid),
        memory_virtual_bytes: 1 << 30,
        open_fds: Some(5),
        sockets: None,
        executable_name: name.into(),
        command_args: format!("/usr/bin/{name}\0--secret-flag\0"),
        user_name: "root".into(),
        group_name: "root".into(),
        ..ProcessRecord::default()
    }))
}

fn host(used: i64) -> Record {
    Record::Metrics {
        resource: vec![KeyValue::str("host.name", "test-host")],
        metrics: vec![Metric {
            name: "system.memory.usage".into(),
            unit: "By".into(),
            kind: MetricKind::Gauge,
            start_time_unix_nano: 0,
            time_unix_nano: 1_700_000_010_000_000_000,
            value: MetricValue::I64(used),
            attributes: vec![KeyValue::str("system.memory.state", "used")],
        }],
    }
}

/// A shipper serving Prometheus on a fresh port, sandboxed, entries living 3 s (1 s interval).
fn start() -> (Shipper, u16, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal");
    std::fs::create_dir(&journal).unwrap();
    let mut init = init(&journal, None, "");
    init.collector.interval_ms = 1000;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let attachments = vigil_shipper::Attachments {
        inputs: None,
        prometheus: Some(OwnedFd::from(listener)),
    };
    let s = Shipper::start_with(init, attachments, |jd| {
        sandbox_this_thread(jd, 9, vigil_shipper::LISTEN_SYSCALLS)
    });
    (s, port, dir)
}

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// Send `raw`, read one whole response (or up to the end of the connection).
fn exchange(s: &mut TcpStream, raw: &[u8]) -> (Response, Vec<u8>) {
    s.write_all(raw).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        let n = s.read(&mut chunk).unwrap_or(0);
        buf.extend_from_slice(&chunk[..n]);
        if let Some(r) = parse_response(&buf, n == 0).unwrap() {
            return (r, buf);
        }
        assert!(n > 0, "connection ended: {}", String::from_utf8_lossy(&buf));
    }
}

fn get(port: u16, accept: &str) -> (Response, String) {
    let req = format!("GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: {accept}\r\n\r\n");
    let (r, raw) = exchange(&mut connect(port), req.as_bytes());
    (r, String::from_utf8(raw).unwrap())
}

fn body(r: &Response) -> String {
    String::from_utf8(r.body.clone()).unwrap()
}

#[test]
fn scrapes_text_and_openmetrics_refuses_the_rest_and_expires() {
    let policy = vigil_policies::seccomp::Policy::from_files(&[
        "shipper".to_string(),
        "shipper-listen".to_string(),
    ])
    .unwrap();
    for sc in vigil_shipper::SYSCALLS
        .iter()
        .chain(vigil_shipper::LISTEN_SYSCALLS)
    {
        assert!(
            policy.allows(sc),
            "{sc} is not in the shipper's policy with shipper-listen"
        );
    }
    let (mut s, port, _dir) = start();
    let seg = Record::Log {
        resource: vec![],
        log: LogRecord {
            time_unix_nano: 1,
            observed_time_unix_nano: 1,
            severity_number: 17,
            severity_text: "ERROR".into(),
            event_name: "Segfault".into(),
            body: "segfault".into(),
            attributes: vec![],
        },
    };
    assert!(s.send(
        0,
        vec![
            process(100, "alpha", 1),
            process(200, "beta", 2),
            host(123),
            seg
        ]
    ));

    let (r, raw) = get(port, "text/plain");
    assert_eq!(r.status, 200);
    assert!(
        raw.contains("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"),
        "{raw}"
    );
    let text = body(&r);
    for want in [
        "# TYPE process_cpu_time_seconds_total counter\n",
        "process_cpu_time_seconds_total{cpu_mode=\"user\",process_executable_name=\"alpha\",process_pid=\"100\",process_user_name=\"root\"} 1.5\n",
        "process_cpu_time_seconds_total{cpu_mode=\"user\",process_executable_name=\"beta\",process_pid=\"200\",process_user_name=\"root\"} 2.5\n",
        "process_memory_usage_bytes{process_executable_name=\"alpha\",process_pid=\"100\",process_user_name=\"root\"} 409600\n",
        "# TYPE system_memory_usage_bytes gauge\nsystem_memory_usage_bytes{system_memory_state=\"used\"} 123\n",
        "target_info{host_name=\"test-host\",service_name=\"vigil\"",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    assert!(
        !text.contains("secret") && !text.contains("egfault"),
        "{text}"
    );

    let (r, raw) = get(
        port,
        "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
    );
    assert!(
        raw.contains(
            "Content-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\n"
        )
    );
    let om = body(&r);
    assert!(
        om.contains(
            "# TYPE process_cpu_time_seconds counter\n# UNIT process_cpu_time_seconds seconds\n"
        ),
        "{om}"
    );
    assert!(om.ends_with("# EOF\n"), "{om}");

    // Keep-alive: two scrapes on one connection; then HEAD (no body).
    let mut c = connect(port);
    let req = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_eq!(exchange(&mut c, req).0.status, 200);
    assert_eq!(exchange(&mut c, req).0.status, 200);
    c.write_all(b"HEAD /metrics HTTP/1.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut head = String::new();
    c.read_to_string(&mut head).unwrap();
    assert!(
        head.starts_with("HTTP/1.1 200 OK\r\n") && head.ends_with("\r\n\r\n"),
        "{head}"
    );

    // Writes are refused (a body is never taken), and so is anything but /metrics.
    let mut post = b"POST /metrics HTTP/1.1\r\nContent-Length: 32768\r\n\r\n".to_vec();
    post.extend(vec![b'x'; 32768]);
    let (r, raw) = exchange(&mut connect(port), &post);
    assert_eq!(r.status, 405);
    assert!(String::from_utf8_lossy(&raw).contains("Allow: GET, HEAD\r\n"));
    assert_eq!(
        exchange(&mut connect(port), b"GET / HTTP/1.1\r\n\r\n")
            .0
            .status,
        404
    );
    let mut big = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
    big.extend(vec![b'a'; 9000]);
    big.extend(b"\r\n\r\n");
    assert_eq!(exchange(&mut connect(port), &big).0.status, 431);

    let st = s.stats();
    assert_eq!(st.get("prometheus_scrapes"), Some(5), "{st:?}");
    assert_eq!(st.get("prometheus_refused"), Some(3), "{st:?}");

    // Only alpha and the host keep being refreshed: beta's series expire (3 s), the shipper's
    // own metrics appear.
    let t0 = Instant::now();
    let mut seq = 1;
    while t0.elapsed() < Duration::from_millis(5500) {
        assert!(s.send(seq, vec![process(100, "alpha", seq), host(456)]));
        seq += 1;
        std::thread::sleep(Duration::from_millis(300));
    }
    let text = body(&get(port, "*/*").0);
    assert!(text.contains("process_pid=\"100\""), "{text}");
    assert!(!text.contains("process_pid=\"200\""), "{text}");
    assert!(
        text.contains("system_memory_usage_bytes{system_memory_state=\"used\"} 456\n"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE vigil_shipper_records_accepted_total counter\n"),
        "{text}"
    );
    assert!(
        text.contains("\nvigil_shipper_prometheus_refused_total 3\n"),
        "{text}"
    );
    s.shutdown();
}

#[test]
fn hostile_clients_never_stall_journaling() {
    let (mut s, port, _dir) = start();
    // Enough processes for an answer far larger than the socket buffers.
    let mut seq = 0;
    for b in 0..40u32 {
        let recs = (0..256)
            .map(|i| process(b * 256 + i + 1, "load", 1))
            .collect();
        assert!(s.send(seq, recs));
        seq += 1;
    }
    // One client asks and never reads; seven send half a head and stop.
    let mut stuck = connect(port);
    stuck.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
    let mut slow: Vec<TcpStream> = (0..7)
        .map(|_| {
            let mut c = connect(port);
            c.write_all(b"GET /metrics HTTP/1.1\r\nX-Slow: ").unwrap();
            c
        })
        .collect();
    // Journaling goes on meanwhile.
    for _ in 0..20 {
        assert!(s.send(seq, vec![host(seq as i64)]));
        seq += 1;
    }
    // Every slot is busy: the next client is told so at once.
    let mut extra = connect(port);
    let mut answer = String::new();
    extra.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
    assert!(s.stats().get("prometheus_refused").unwrap() >= 1);
    // The hostile clients leave; a scrape gets every process.
    drop(stuck);
    slow.clear();
    std::thread::sleep(Duration::from_millis(200));
    // HTTP/1.0: the body ends with the connection (and is larger than the harness's parser
    // takes).
    let mut c = connect(port);
    c.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut text = String::new();
    c.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{}", &text[..200]);
    assert!(!text.contains("Transfer-Encoding"));
    let lines = text
        .lines()
        .filter(|l| l.starts_with("process_thread_count{"))
        .count();
    assert_eq!(lines, 40 * 256);
    assert!(s.send(seq, vec![host(1)]));
    s.shutdown();
}
