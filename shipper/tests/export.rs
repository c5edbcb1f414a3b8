//! End to end through run(): collector channel → journal → JSON lines and a real OTLP/HTTP
//! receiver on 127.0.0.1, with backend faults, restarts, corruption and a full disk.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;
use opentelemetry_proto::tonic::metrics::v1::{metric::Data, number_data_point::Value};
use vigil_ipc_proto::*;

fn ids(r: std::ops::Range<i64>) -> BTreeSet<i64> {
    r.collect()
}

#[test]
fn metrics_and_logs_arrive_with_names_values_attributes() {
    let rx = Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    let json_path = dir.path().join("out.jsonl");
    let mut init = init(
        &dir.path().join("journal"),
        Some(otlp_cfg(rx.endpoint())),
        json_path.to_str().unwrap(),
    );
    init.collector.interval_ms = 1000;
    let mut sh = Shipper::start(init);
    assert_eq!(sh.resume, None);

    let metrics = Record::Metrics {
        resource: vec![
            KeyValue::str("host.name", "test-host"),
            KeyValue::i64("process.pid", 42),
        ],
        metrics: vec![
            Metric {
                name: "process.memory.usage".into(),
                unit: "By".into(),
                kind: MetricKind::Gauge,
                start_time_unix_nano: 0,
                time_unix_nano: 123,
                value: MetricValue::I64(4096),
                attributes: vec![],
            },
            Metric {
                name: "process.cpu.time".into(),
                unit: "s".into(),
                kind: MetricKind::Sum { monotonic: true },
                start_time_unix_nano: 100,
                time_unix_nano: 123,
                value: MetricValue::F64(1.5),
                attributes: vec![KeyValue::str("cpu.mode", "user")],
            },
        ],
    };
    let oom = Record::Log {
        resource: vec![KeyValue::str("host.name", "test-host")],
        log: LogRecord {
            time_unix_nano: 5,
            observed_time_unix_nano: 6,
            severity_number: 17,
            severity_text: "ERROR".into(),
            event_name: "OOMKilling".into(),
            body: "Out of memory: Killed process 1234 (stress)".into(),
            attributes: vec![
                KeyValue::i64("process.pid", 1234),
                KeyValue::i64(ATTR_KMSG_SEQ, 777),
            ],
        },
    };
    assert!(sh.send(1, vec![metrics, oom]));

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = rx.received.lock().unwrap();
        if r.logs.len() == 1 && r.metrics.len() >= 2 {
            break;
        }
        drop(r);
        assert!(Instant::now() < deadline, "nothing arrived");
        std::thread::sleep(Duration::from_millis(20));
    }
    {
        let r = rx.received.lock().unwrap();
        assert!(
            r.requests.iter().all(|(_, _, _, gz)| *gz),
            "gzip configured"
        );
        let mem = r
            .metrics
            .iter()
            .find(|m| m.metric.name == "process.memory.usage")
            .unwrap();
        assert_eq!(mem.metric.unit, "By");
        assert_eq!(mem.resource["service.name"], "vigil");
        assert_eq!(mem.resource["host.name"], "test-host");
        assert_eq!(mem.resource["process.pid"], "42");
        let Some(Data::Gauge(g)) = &mem.metric.data else {
            panic!("gauge expected")
        };
        assert_eq!(g.data_points[0].value, Some(Value::AsInt(4096)));
        assert_eq!(g.data_points[0].time_unix_nano, 123);
        let cpu = r
            .metrics
            .iter()
            .find(|m| m.metric.name == "process.cpu.time")
            .unwrap();
        let Some(Data::Sum(s)) = &cpu.metric.data else {
            panic!("sum expected")
        };
        assert!(s.is_monotonic);
        assert_eq!(s.aggregation_temporality, 2, "cumulative");
        assert_eq!(s.data_points[0].value, Some(Value::AsDouble(1.5)));
        assert_eq!(s.data_points[0].start_time_unix_nano, 100);
        assert_eq!(attr_map(&s.data_points[0].attributes)["cpu.mode"], "user");

        let l = &r.logs[0];
        assert_eq!(l.log.event_name, "OOMKilling");
        assert_eq!(l.log.severity_number, 17);
        assert_eq!(l.log.severity_text, "ERROR");
        assert_eq!(
            any_to_string(&l.log.body),
            "Out of memory: Killed process 1234 (stress)"
        );
        let a = attr_map(&l.log.attributes);
        assert_eq!(a["process.pid"], "1234");
        assert_eq!(a["event.name"], "OOMKilling");
        assert_eq!(l.resource["service.name"], "vigil");
    }

    // Self-metrics arrive like any other metric (interval 1 s).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = rx.received.lock().unwrap();
        let acc = r
            .metrics
            .iter()
            .find(|m| m.metric.name == "vigil.shipper.records_accepted");
        if let Some(m) = acc {
            let Some(Data::Sum(s)) = &m.metric.data else {
                panic!()
            };
            assert_eq!(s.data_points[0].value, Some(Value::AsInt(2)));
            assert!(
                r.metrics
                    .iter()
                    .any(|m| m.metric.name == "vigil.shipper.journal_bytes")
            );
            break;
        }
        drop(r);
        assert!(Instant::now() < deadline, "no self metrics");
        std::thread::sleep(Duration::from_millis(50));
    }

    let st = sh.stats();
    assert_eq!(st.get("records_accepted"), Some(2));
    assert!(st.get("records_shipped.otlp").unwrap() >= 2);
    assert!(st.get("records_shipped.json").unwrap() >= 2);
    assert!(st.get("journal_segments").unwrap() >= 1);
    sh.shutdown();

    // JSON lines: one object per metric point and per log record, resource flattened.
    let text = std::fs::read_to_string(&json_path).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mem = lines
        .iter()
        .find(|v| v["name"] == "process.memory.usage")
        .unwrap();
    assert_eq!(mem["type"], "metric");
    assert_eq!(mem["value"], 4096);
    assert_eq!(mem["resource"]["process.pid"], 42);
    assert_eq!(mem["resource"]["service.name"], "vigil");
    let log = lines.iter().find(|v| v["type"] == "log").unwrap();
    assert_eq!(log["event_name"], "OOMKilling");
    assert_eq!(log["attributes"]["process.pid"], 1234);

    // The kmsg sequence journaled is announced to the next collector.
    let init2 = common::init(&dir.path().join("journal"), None, "");
    let sh = Shipper::start(init2);
    assert_eq!(sh.resume, Some(777));
    sh.shutdown();
}

#[test]
fn backend_down_then_up_loses_nothing() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let mut sh = Shipper::start(init(
        &dir.path().join("journal"),
        Some(otlp_cfg(format!("http://127.0.0.1:{port}"))),
        "",
    ));
    for b in 0..20 {
        assert!(sh.send(b, logs(b as i64 * 25..b as i64 * 25 + 25)));
    }
    std::thread::sleep(Duration::from_millis(300));
    let st = sh.stats();
    assert_eq!(st.get("records_accepted"), Some(500));
    assert!(st.get("retries").unwrap() >= 1);
    assert_eq!(st.get("records_shipped.otlp"), Some(0));
    let rx = Receiver::start_at(port);
    let (got, _) = rx.wait_ids(&ids(0..500), Duration::from_secs(20));
    assert_eq!(got, ids(0..500));
    let st = sh.stats();
    assert_eq!(st.get("records_shipped.otlp"), Some(500));
    sh.shutdown();
}

#[test]
fn server_errors_then_retry_after_then_ok() {
    let rx = Receiver::start();
    rx.push_replies([
        Reply::status(500),
        Reply::status(503),
        Reply::retry_after(429, "1"),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let mut sh = Shipper::start(init(
        &dir.path().join("journal"),
        Some(otlp_cfg(rx.endpoint())),
        "",
    ));
    assert!(sh.send(1, logs(0..50)));
    let (got, n) = rx.wait_ids(&ids(0..50), Duration::from_secs(20));
    assert_eq!(got, ids(0..50));
    assert_eq!(n, 50, "no duplicates: failed attempts were not accepted");
    let r = rx.received.lock().unwrap();
    let statuses: Vec<u16> = r.requests.iter().map(|q| q.1).collect();
    assert_eq!(&statuses[..4], &[500, 503, 429, 200]);
    let waited = r.requests[3].2 - r.requests[2].2;
    assert!(
        waited >= Duration::from_millis(950),
        "Retry-After honoured: {waited:?}"
    );
    drop(r);
    assert!(sh.stats().get("retries").unwrap() >= 3);
    sh.shutdown();
}

#[test]
fn client_errors_are_permanent_and_counted() {
    let rx = Receiver::start();
    rx.push_replies([Reply::status(400)]);
    let dir = tempfile::tempdir().unwrap();
    let mut sh = Shipper::start(init(
        &dir.path().join("journal"),
        Some(otlp_cfg(rx.endpoint())),
        "",
    ));
    assert!(sh.send(1, logs(0..10)));
    let deadline = Instant::now() + Duration::from_secs(10);
    while sh.stats().get("records_dropped.http_4xx") != Some(10) {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(sh.send(2, logs(10..20)));
    let (got, _) = rx.wait_ids(&ids(10..20), Duration::from_secs(10));
    assert_eq!(got, ids(10..20));
    let st = sh.stats();
    assert_eq!(st.get("retries"), Some(0));
    assert_eq!(st.get("records_pending.otlp"), Some(0));
    sh.shutdown();
}

#[test]
fn restart_mid_stream_replays_unshipped() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let jdir = dir.path().join("journal");
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut sh = Shipper::start(init(&jdir, Some(otlp_cfg(endpoint.clone())), ""));
    for b in 0..4 {
        assert!(sh.send(b, logs(b as i64 * 50..b as i64 * 50 + 50)));
    }
    sh.shutdown();
    // Second run: the backend is up now; what the first run journaled is shipped, plus more.
    let rx = Receiver::start_at(port);
    let mut sh = Shipper::start(init(&jdir, Some(otlp_cfg(endpoint)), ""));
    assert!(sh.stats().get("records_replayed").unwrap() >= 200);
    for b in 4..8 {
        assert!(sh.send(b, logs(b as i64 * 50..b as i64 * 50 + 50)));
    }
    let (got, _) = rx.wait_ids(&ids(0..400), Duration::from_secs(20));
    assert_eq!(got, ids(0..400));
    sh.shutdown();
    // Third run: nothing left to replay.
    let mut sh = Shipper::start(init(&jdir, Some(otlp_cfg(rx.endpoint())), ""));
    assert_eq!(sh.stats().get("records_replayed"), Some(0));
    sh.shutdown();
}

#[test]
fn malformed_frames_are_counted_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let mut sh = Shipper::start(init(&dir.path().join("journal"), None, ""));
    sh.collector
        .send_raw(b"\x05\0\0\0\xff\xff\xff\xff\xff")
        .unwrap();
    sh.collector.send_raw(b"\x01").unwrap();
    sh.collector.send_raw(&[0u8; 100]).unwrap();
    assert!(sh.send(7, logs(0..3)));
    let st = sh.stats();
    assert!(st.get("malformed_frames").unwrap() >= 3, "{st:?}");
    assert_eq!(st.get("records_accepted"), Some(3));
    sh.shutdown();
}

#[test]
fn corrupt_segments_detected_counted_rest_replayed() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let jdir = dir.path().join("journal");
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut init1 = init(&jdir, Some(otlp_cfg(endpoint.clone())), "");
    init1.shipper.journal_segment_bytes = 16 * 1024;
    let mut sh = Shipper::start(init1.clone());
    for b in 0..20 {
        assert!(sh.send(b, logs(b as i64 * 20..b as i64 * 20 + 20)));
    }
    sh.shutdown();
    let segs = segments(&jdir);
    assert!(segs.len() >= 3, "{segs:?}");
    // Flip bytes in the middle of the first segment, truncate the last one mid-record.
    let mut first = std::fs::read(&segs[0]).unwrap();
    let mid = first.len() / 2;
    for b in &mut first[mid..mid + 16] {
        *b ^= 0x5a;
    }
    std::fs::write(&segs[0], &first).unwrap();
    let last = segs
        .iter()
        .rev()
        .find(|p| std::fs::metadata(p).unwrap().len() > 100)
        .unwrap();
    let len = std::fs::metadata(last).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(last)
        .unwrap()
        .set_len(len - 10)
        .unwrap();

    let rx = Receiver::start_at(port);
    let (control, ship_control) = vigil_ipc_proto::Channel::pair().unwrap();
    let (mut collector, ship_collector) = vigil_ipc_proto::Channel::pair().unwrap();
    let init2 = init1.clone();
    let t = std::thread::spawn(move || {
        vigil_shipper::run(&init2, ship_control, ship_collector, Default::default())
    });
    handshake(&mut collector);
    // Warnings about the damage reach the supervisor.
    let mut control = control;
    control
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut warnings = Vec::new();
    control.send(&SupervisorToChild::StatsRequest).unwrap();
    let stats = loop {
        match control.recv::<ChildToSupervisor>().unwrap() {
            ChildToSupervisor::Warning(w) => warnings.push(w),
            ChildToSupervisor::Stats(s) => break s,
            other => panic!("{other:?}"),
        }
    };
    assert!(
        warnings.iter().any(|w| w.contains("corrupt region")),
        "{warnings:?}"
    );
    assert!(
        warnings.iter().any(|w| w.contains("torn tail")),
        "{warnings:?}"
    );
    let corrupt = stats.get("corrupt_records").unwrap();
    assert!(corrupt >= 2, "{stats:?}");
    std::thread::sleep(Duration::from_millis(500));
    let (got, _) = rx.wait_ids(&ids(0..400), Duration::from_secs(3));
    let missing = 400 - got.len() as u64;
    assert!(
        missing >= 1 && missing <= corrupt,
        "missing {missing}, corrupt {corrupt}"
    );
    control.send(&SupervisorToChild::Shutdown).unwrap();
    t.join().unwrap().unwrap();
}

/// Root: the journal on a 256 KiB tmpfs while the backend is down. Batches that do not fit are
/// refused (Nack) and counted; everything acknowledged reaches the backend once it is up; the
/// shipper keeps running and accepts batches again once space is freed.
#[test]
fn full_tmpfs_journal() {
    let fs = SmallTmpfs::mount();
    let mnt = fs.mnt.clone();
    let port = free_port();
    let mut cfg = init(
        &mnt.join("journal"),
        Some(otlp_cfg(format!("http://127.0.0.1:{port}"))),
        "",
    );
    cfg.shipper.journal_segment_bytes = 32 * 1024;
    let mut sh = Shipper::start(cfg);
    let mut acked = BTreeSet::new();
    let mut nacked = 0;
    for b in 0..300i64 {
        if sh.send(b as u64, logs(b * 20..b * 20 + 20)) {
            acked.extend(b * 20..b * 20 + 20);
        } else {
            nacked += 1;
        }
    }
    assert!(nacked > 0, "the tmpfs should have filled up");
    let st = sh.stats();
    assert_eq!(st.get("records_dropped.enospc"), Some(nacked * 20));
    assert_eq!(st.get("records_accepted"), Some(acked.len() as u64));
    let rx = Receiver::start_at(port);
    let (got, _) = rx.wait_ids(&acked, Duration::from_secs(20));
    assert!(
        acked.is_subset(&got),
        "lost {:?}",
        acked.difference(&got).count()
    );
    // Space is back once shipped segments are deleted.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut ok = false;
    while !ok && Instant::now() < deadline {
        ok = sh.send(1000, logs(10_000..10_020));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(ok, "journal accepts again after shipping");
    let (got, _) = rx.wait_ids(&ids(10_000..10_020), Duration::from_secs(10));
    assert!(ids(10_000..10_020).is_subset(&got));
    sh.shutdown();
}

#[test]
fn server_closing_idle_connections_costs_no_retry() {
    let rx = Receiver::start();
    rx.push_replies([
        Reply::then_close(200),
        Reply::then_close(200),
        Reply::then_close(200),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let mut sh = Shipper::start(init(
        &dir.path().join("journal"),
        Some(otlp_cfg(rx.endpoint())),
        "",
    ));
    for b in 0..4i64 {
        assert!(sh.send(b as u64, logs(b * 10..b * 10 + 10)));
        let (got, _) = rx.wait_ids(&ids(b * 10..b * 10 + 10), Duration::from_secs(10));
        assert!(ids(b * 10..b * 10 + 10).is_subset(&got));
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(sh.stats().get("retries"), Some(0));
    sh.shutdown();
}

#[test]
fn partial_success_rejections_are_counted() {
    use opentelemetry_proto::tonic::collector::logs::v1::{
        ExportLogsPartialSuccess, ExportLogsServiceResponse,
    };
    use prost::Message;
    let rx = Receiver::start();
    let body = ExportLogsServiceResponse {
        partial_success: Some(ExportLogsPartialSuccess {
            rejected_log_records: 3,
            error_message: "too old".into(),
        }),
    }
    .encode_to_vec();
    rx.push_replies([Reply {
        body,
        ..Reply::status(200)
    }]);
    let dir = tempfile::tempdir().unwrap();
    let mut sh = Shipper::start(init(
        &dir.path().join("journal"),
        Some(otlp_cfg(rx.endpoint())),
        "",
    ));
    assert!(sh.send(1, logs(0..10)));
    let (got, _) = rx.wait_ids(&ids(0..10), Duration::from_secs(10));
    assert_eq!(got, ids(0..10));
    let deadline = Instant::now() + Duration::from_secs(5);
    while sh.stats().get("otlp_rejected_items") != Some(3) {
        assert!(Instant::now() < deadline, "{:?}", sh.stats());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(sh.stats().get("retries"), Some(0));
    sh.shutdown();
}

#[test]
fn shutdown_before_the_collector_says_hello() {
    let dir = tempfile::tempdir().unwrap();
    let init = init(&dir.path().join("journal"), None, "");
    let (control, ship_control) = Channel::pair().unwrap();
    let (_collector, ship_collector) = Channel::pair().unwrap();
    let t = std::thread::spawn(move || {
        vigil_shipper::run(&init, ship_control, ship_collector, Default::default())
    });
    let mut control = control;
    control.send(&SupervisorToChild::StatsRequest).unwrap();
    control
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert!(matches!(
        control.recv::<ChildToSupervisor>().unwrap(),
        ChildToSupervisor::Stats(_)
    ));
    control.send(&SupervisorToChild::Shutdown).unwrap();
    t.join().unwrap().unwrap();
}

#[test]
fn journal_bound_drops_oldest_counted_while_backend_down() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = init(
        &dir.path().join("journal"),
        Some(otlp_cfg(format!("http://127.0.0.1:{port}"))),
        "",
    );
    cfg.shipper.journal_max_bytes = 64 * 1024;
    cfg.shipper.journal_segment_bytes = 8 * 1024;
    let mut sh = Shipper::start(cfg);
    for b in 0..100i64 {
        // Never blocked: every batch is acknowledged at once, the journal stays bounded.
        assert!(sh.send(b as u64, logs(b * 20..b * 20 + 20)));
    }
    let st = sh.stats();
    assert!(
        st.get("journal_bytes").unwrap() <= 64 * 1024 + 8 * 1024,
        "{st:?}"
    );
    let dropped = st.get("records_dropped.journal_full").unwrap();
    assert!(dropped > 0, "{st:?}");
    let rx = Receiver::start_at(port);
    let deadline = Instant::now() + Duration::from_secs(20);
    let (got, _) = loop {
        let (got, n) = rx.log_ids();
        if got.len() as u64 + dropped >= 2000 || Instant::now() > deadline {
            break (got, n);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // The newest records survive, contiguous; the oldest were dropped and counted exactly.
    assert_eq!(got.len() as u64 + dropped, 2000);
    assert_eq!(got, ids(dropped as i64..2000));
    sh.shutdown();
}

/// A backend that accepts connections and never answers: batches from the collector are still
/// journaled and acknowledged while the request waits for its (30 s) timeout.
#[test]
fn hanging_backend_does_not_block_the_collector() {
    let hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = hole.local_addr().unwrap().port();
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let accepted = std::thread::spawn(move || {
        let (c, _) = hole.accept().unwrap();
        let _ = stopped.recv_timeout(Duration::from_secs(60));
        drop(c);
    });
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = otlp_cfg(format!("http://127.0.0.1:{port}"));
    cfg.timeout_ms = 30_000;
    cfg.max_batch_delay_ms = 0;
    let mut sh = Shipper::start(init(&dir.path().join("journal"), Some(cfg), ""));
    assert!(sh.send(0, logs(0..10)));
    std::thread::sleep(Duration::from_millis(200));
    let start = Instant::now();
    for b in 1..50i64 {
        assert!(sh.send(b as u64, logs(b * 10..b * 10 + 10)));
    }
    let st = sh.stats();
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "acks waited for the hanging request"
    );
    assert_eq!(st.get("records_accepted"), Some(500));
    assert_eq!(st.get("records_shipped.otlp"), Some(0));
    sh.shutdown();
    stop.send(()).unwrap();
    accepted.join().unwrap();
}

/// Kernel events do not wait for `max_batch_delay_ms`; metrics wait to share a request. A
/// compact process record arrives expanded into the `process.*` conventions.
#[test]
fn events_go_at_once_metrics_wait_for_company() {
    let rx = Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = otlp_cfg(rx.endpoint());
    cfg.max_batch_delay_ms = 5_000;
    cfg.max_batch_records = 10_000;
    let mut sh = Shipper::start(init(&dir.path().join("journal"), Some(cfg), ""));
    let process = Record::Process(Box::new(ProcessRecord {
        time_unix_nano: 2_000_000_000,
        start_time_unix_nano: 1_000_000_000,
        pid: 4242,
        ppid: 1,
        uid: 1000,
        gid: 1000,
        state: b'R',
        threads: 2,
        cpu_user_ns: 3_000_000_000,
        cpu_system_ns: 1_000_000_000,
        memory_rss_bytes: 8192,
        memory_virtual_bytes: 65536,
        open_fds: Some(9),
        sockets: Some(1),
        executable_name: "postgres".into(),
        command_args: "postgres\x00-D\x00/data\x00".into(),
        user_name: "alice".into(),
        group_name: "alice".into(),
        ..ProcessRecord::default()
    }));
    let Record::Process(first) = &process else {
        unreachable!()
    };
    let first = (**first).clone();
    assert!(sh.send(1, vec![process]));
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(
        rx.received.lock().unwrap().metric_count,
        0,
        "a metric record alone waits for the batch delay"
    );
    let t = std::time::Instant::now();
    assert!(sh.send(2, vec![log(7)]));
    let (got, _) = rx.wait_ids(&ids(7..8), Duration::from_secs(3));
    assert!(got.contains(&7));
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "the event waited {:?}",
        t.elapsed()
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while rx.received.lock().unwrap().metric_count < 8 {
        assert!(std::time::Instant::now() < deadline, "metrics left behind");
        std::thread::sleep(Duration::from_millis(10));
    }
    let r = rx.received.lock().unwrap();
    let names: BTreeSet<&str> = r.metrics.iter().map(|m| m.metric.name.as_str()).collect();
    for n in [
        "process.cpu.time",
        "process.memory.usage",
        "process.memory.virtual",
        "process.thread.count",
        "process.uptime",
        "process.unix.file_descriptor.count",
        "process.linux.socket.count",
    ] {
        assert!(names.contains(n), "{n} missing: {names:?}");
    }
    let res = &r.metrics[0].resource;
    assert_eq!(res["process.pid"], "4242");
    assert_eq!(res["process.owner"], "alice");
    assert!(!res.contains_key("process.command_line"));
    assert!(res["process.command_args"].contains("\"/data\""), "{res:?}");
    assert_eq!(res["process.state"], "running");
    assert_eq!(res["service.name"], "vigil");
    let n = r.metrics.len();
    drop(r);
    // The same process again, sleeping now (its resource from the exporter's cache, the state
    // filled in), then with another owner (encoded afresh): what arrives says so.
    let again = |p: ProcessRecord| Record::Process(Box::new(p));
    let sleeping = ProcessRecord {
        state: b'S',
        time_unix_nano: first.time_unix_nano + 1_000_000_000,
        ..first.clone()
    };
    let bob = ProcessRecord {
        user_name: "bob".into(),
        ..sleeping.clone()
    };
    assert!(sh.send(3, vec![again(sleeping), again(bob), log(8)]));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while rx.received.lock().unwrap().metrics.len() < 3 * n {
        assert!(std::time::Instant::now() < deadline, "metrics left behind");
        std::thread::sleep(Duration::from_millis(10));
    }
    let r = rx.received.lock().unwrap();
    let (second, third) = (&r.metrics[n].resource, &r.metrics[2 * n].resource);
    assert_eq!(second["process.state"], "sleeping");
    assert_eq!(second["process.owner"], "alice");
    assert_eq!(third["process.owner"], "bob");
    assert_eq!(third["process.user.name"], "bob");
    for res in [second, third] {
        assert_eq!(res["process.pid"], "4242");
        assert_eq!(res["process.command"], "postgres");
        assert_eq!(res.get("host.name"), r.metrics[0].resource.get("host.name"));
    }
    drop(r);
    sh.shutdown();
}
