//! Test harness: a real OTLP/HTTP receiver on 127.0.0.1 (HTTP/1.1 server in threads, bodies
//! gunzipped and decoded with opentelemetry-proto), and a shipper run() driven over real
//! SEQPACKET channels, this test playing supervisor and collector.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue as PKeyValue, any_value};
use prost::Message;
use vigil_ipc_proto::*;

// ----------------------------------------------------------------------------------------
// OTLP receiver
// ----------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// Close the connection after answering, without announcing it (idle keep-alive timeout).
    pub close: bool,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Reply {
            status,
            headers: Vec::new(),
            close: false,
            body: Vec::new(),
        }
    }
    pub fn then_close(status: u16) -> Self {
        Reply {
            close: true,
            ..Reply::status(status)
        }
    }
    pub fn retry_after(status: u16, v: &str) -> Self {
        Reply {
            status,
            headers: vec![("Retry-After".into(), v.into())],
            ..Reply::status(status)
        }
    }
}

#[derive(Debug, Clone)]
pub struct RecvLog {
    pub arrived: Instant,
    pub resource: BTreeMap<String, String>,
    pub log: opentelemetry_proto::tonic::logs::v1::LogRecord,
}

#[derive(Debug, Clone)]
pub struct RecvMetric {
    pub resource: BTreeMap<String, String>,
    pub metric: opentelemetry_proto::tonic::metrics::v1::Metric,
}

#[derive(Debug, Default)]
pub struct Received {
    /// Keep every record (false: only count them; the benchmark's lean receiver).
    pub discard: bool,
    /// Count the items of each body by walking its protobuf fields, without decoding it into
    /// messages (the throughput benchmark: the receiver shares the machine's two cores).
    pub count_only: bool,
    pub log_count: usize,
    pub metric_count: usize,
    pub logs: Vec<RecvLog>,
    pub metrics: Vec<RecvMetric>,
    /// (path, status answered, time, gzip)
    pub requests: Vec<(String, u16, Instant, bool)>,
}

pub struct Receiver {
    pub port: u16,
    pub received: Arc<Mutex<Received>>,
    pub script: Arc<Mutex<VecDeque<Reply>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

pub fn any_to_string(v: &Option<AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(f)) => f.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        other => format!("{other:?}"),
    }
}

pub fn attr_map(kvs: &[PKeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), any_to_string(&kv.value)))
        .collect()
}

impl Receiver {
    pub fn start() -> Receiver {
        Self::start_on(TcpListener::bind("127.0.0.1:0").unwrap())
    }

    /// Bind to a given port (a backend coming up where the shipper already points).
    pub fn start_at(port: u16) -> Receiver {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match TcpListener::bind(("127.0.0.1", port)) {
                Ok(l) => return Self::start_on(l),
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("bind {port}: {e}"),
            }
        }
    }

    fn start_on(listener: TcpListener) -> Receiver {
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let received = Arc::new(Mutex::new(Received::default()));
        let script = Arc::new(Mutex::new(VecDeque::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s, st) = (received.clone(), script.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let (r, s, st) = (r.clone(), s.clone(), st.clone());
                        std::thread::spawn(move || serve(conn, r, s, st));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Receiver {
            port,
            received,
            script,
            stop,
            thread: Some(thread),
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn push_replies(&self, replies: impl IntoIterator<Item = Reply>) {
        self.script.lock().unwrap().extend(replies);
    }

    /// Distinct `test.id` attributes of received log records and the total count.
    pub fn log_ids(&self) -> (BTreeSet<i64>, usize) {
        let r = self.received.lock().unwrap();
        let mut set = BTreeSet::new();
        let mut n = 0;
        for l in &r.logs {
            if let Some(id) = attr_map(&l.log.attributes).get("test.id") {
                set.insert(id.parse().unwrap());
                n += 1;
            }
        }
        (set, n)
    }

    pub fn wait_ids(&self, want: &BTreeSet<i64>, timeout: Duration) -> (BTreeSet<i64>, usize) {
        let deadline = Instant::now() + timeout;
        loop {
            let (got, n) = self.log_ids();
            if want.is_subset(&got) || Instant::now() > deadline {
                return (got, n);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Items (metrics or log records) of an OTLP export request: the length-delimited field 2
/// inside field 2 inside field 1 (ResourceX → ScopeX → Metric / LogRecord), counted by
/// skipping over every other field.
pub fn count_items(buf: &[u8]) -> usize {
    fn fields(mut b: &[u8], mut f: impl FnMut(u32, &[u8])) {
        use prost::encoding::{decode_key, decode_varint};
        while !b.is_empty() {
            let Ok((field, wire)) = decode_key(&mut b) else {
                return;
            };
            match wire as u8 {
                0 => {
                    let _ = decode_varint(&mut b);
                }
                1 => b = &b[8.min(b.len())..],
                2 => {
                    let Ok(len) = decode_varint(&mut b) else {
                        return;
                    };
                    let len = (len as usize).min(b.len());
                    f(field, &b[..len]);
                    b = &b[len..];
                }
                5 => b = &b[4.min(b.len())..],
                _ => return,
            }
        }
    }
    let mut n = 0;
    fields(buf, |f1, res| {
        if f1 == 1 {
            fields(res, |f2, scope| {
                if f2 == 2 {
                    fields(scope, |f3, _| n += usize::from(f3 == 2));
                }
            })
        }
    });
    n
}

fn serve(
    conn: TcpStream,
    received: Arc<Mutex<Received>>,
    script: Arc<Mutex<VecDeque<Reply>>>,
    stop: Arc<AtomicBool>,
) {
    conn.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut w = conn.try_clone().unwrap();
    let mut rd = BufReader::new(conn);
    loop {
        // Request line and headers.
        let mut line = String::new();
        match rd.read_line(&mut line) {
            Ok(0) => return,
            Ok(_) => {}
            Err(_) => {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                continue;
            }
        }
        let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
        let mut len = 0usize;
        let mut gzip = false;
        let mut ctype = String::new();
        loop {
            let mut h = String::new();
            if rd.read_line(&mut h).is_err() {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (k, v) = h.split_once(':').unwrap();
            match k.to_ascii_lowercase().as_str() {
                "content-length" => len = v.trim().parse().unwrap(),
                "content-encoding" => gzip = v.trim() == "gzip",
                "content-type" => ctype = v.trim().to_string(),
                _ => {}
            }
        }
        let mut body = vec![0u8; len];
        if rd.read_exact(&mut body).is_err() {
            return;
        }
        let reply = script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Reply::status(200));
        if reply.status == 200 {
            assert_eq!(ctype, "application/x-protobuf");
            let raw = if gzip {
                let mut out = Vec::new();
                flate2::read::GzDecoder::new(&body[..])
                    .read_to_end(&mut out)
                    .unwrap();
                out
            } else {
                body
            };
            if received.lock().unwrap().count_only {
                // Checked against the full decode on the first body of each kind.
                let n = count_items(&raw);
                let mut r = received.lock().unwrap();
                let first = !r.requests.iter().any(|q| q.0 == path);
                if first {
                    let full = match path.as_str() {
                        "/v1/logs" => ExportLogsServiceRequest::decode(&raw[..])
                            .unwrap()
                            .resource_logs
                            .iter()
                            .flat_map(|rl| &rl.scope_logs)
                            .map(|sl| sl.log_records.len())
                            .sum::<usize>(),
                        _ => ExportMetricsServiceRequest::decode(&raw[..])
                            .unwrap()
                            .resource_metrics
                            .iter()
                            .flat_map(|rm| &rm.scope_metrics)
                            .map(|sm| sm.metrics.len())
                            .sum::<usize>(),
                    };
                    assert_eq!(n, full, "protobuf walk and decode disagree");
                }
                if path == "/v1/logs" {
                    r.log_count += n;
                } else {
                    r.metric_count += n;
                }
                r.requests.push((path.clone(), 200, Instant::now(), gzip));
            } else {
                let mut r = received.lock().unwrap();
                match path.as_str() {
                    "/v1/logs" => {
                        let req = ExportLogsServiceRequest::decode(&raw[..]).unwrap();
                        for rl in req.resource_logs {
                            let res = attr_map(&rl.resource.unwrap_or_default().attributes);
                            for sl in rl.scope_logs {
                                assert_eq!(sl.scope.as_ref().unwrap().name, "vigil");
                                r.log_count += sl.log_records.len();
                                if r.discard {
                                    continue;
                                }
                                for log in sl.log_records {
                                    r.logs.push(RecvLog {
                                        arrived: Instant::now(),
                                        resource: res.clone(),
                                        log,
                                    });
                                }
                            }
                        }
                    }
                    "/v1/metrics" => {
                        let req = ExportMetricsServiceRequest::decode(&raw[..]).unwrap();
                        for rm in req.resource_metrics {
                            let res = attr_map(&rm.resource.unwrap_or_default().attributes);
                            for sm in rm.scope_metrics {
                                r.metric_count += sm.metrics.len();
                                if r.discard {
                                    continue;
                                }
                                for metric in sm.metrics {
                                    r.metrics.push(RecvMetric {
                                        resource: res.clone(),
                                        metric,
                                    });
                                }
                            }
                        }
                    }
                    other => panic!("unexpected path {other}"),
                }
                r.requests.push((path.clone(), 200, Instant::now(), gzip));
            }
        } else {
            received.lock().unwrap().requests.push((
                path.clone(),
                reply.status,
                Instant::now(),
                gzip,
            ));
        }
        let mut resp = format!(
            "HTTP/1.1 {} X\r\nContent-Length: {}\r\n",
            reply.status,
            reply.body.len()
        );
        for (k, v) in &reply.headers {
            resp.push_str(&format!("{k}: {v}\r\n"));
        }
        resp.push_str("\r\n");
        let mut resp = resp.into_bytes();
        resp.extend_from_slice(&reply.body);
        if w.write_all(&resp).is_err() {
            return;
        }
        if reply.close {
            // Later, as an idle timeout would: the client already took the response.
            std::thread::sleep(Duration::from_millis(100));
            return;
        }
    }
}

/// A port nothing listens on (yet).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

// ----------------------------------------------------------------------------------------
// Shipper under test
// ----------------------------------------------------------------------------------------

pub fn init(journal: &Path, otlp: Option<OtlpConfig>, json_lines: &str) -> InitConfig {
    vigil_testkit::init(Role::Shipper)
        .runtime_dir(journal.parent().unwrap().display().to_string())
        .hostname("test-host")
        .shipper(ShipperConfig {
            journal_dir: Some(journal.display().to_string()),
            json_lines: json_lines.into(),
            otlp,
            ..ShipperConfig::default()
        })
        .build()
}

pub fn otlp_cfg(endpoint: String) -> OtlpConfig {
    OtlpConfig {
        endpoint,
        timeout_ms: 2000,
        max_batch_records: 100,
        max_batch_delay_ms: 20,
        retry_initial_ms: 20,
        retry_max_ms: 200,
        ..OtlpConfig::default()
    }
}

pub struct Shipper {
    pub control: Channel,
    pub collector: Channel,
    pub resume: Option<u64>,
    pub thread: Option<JoinHandle<Result<(), vigil_shipper::ShipperError>>>,
}

/// A sealed-enough memfd of shipper inputs, as the supervisor hands them over.
pub fn inputs_fd(inputs: &vigil_ipc_proto::delivery::ShipperInputs) -> std::os::fd::OwnedFd {
    use std::io::Write;
    let fd = nix::sys::memfd::memfd_create(c"test-inputs", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
        .unwrap();
    let mut f = std::fs::File::from(fd);
    f.write_all(&inputs.encode().unwrap()).unwrap();
    f.into()
}

impl Shipper {
    pub fn start(init: InitConfig) -> Shipper {
        Self::start_with(init, Default::default(), |_| {})
    }

    /// With descriptors attached to Init, `before` run on the shipper's thread first (to
    /// sandbox it).
    pub fn start_with(
        init: InitConfig,
        attachments: vigil_shipper::Attachments,
        before: impl FnOnce(&Path) + Send + 'static,
    ) -> Shipper {
        let (control, ship_control) = Channel::pair().unwrap();
        let (mut collector, ship_collector) = Channel::pair().unwrap();
        let thread = std::thread::spawn(move || {
            before(Path::new(
                init.shipper.journal_dir.as_deref().unwrap_or("/"),
            ));
            vigil_shipper::run(&init, ship_control, ship_collector, attachments)
        });
        let resume = handshake(&mut collector);
        Shipper {
            control,
            collector,
            resume,
            thread: Some(thread),
        }
    }

    /// Send a batch, wait for its answer: true for Ack, false for Nack.
    pub fn send(&mut self, seq: u64, records: Vec<Record>) -> bool {
        self.collector
            .send(&CollectorToShipper::Batch(Batch { seq, records }))
            .unwrap();
        wait_reply(&mut self.collector, seq)
    }

    pub fn stats(&mut self) -> RoleStats {
        self.control.send(&SupervisorToChild::StatsRequest).unwrap();
        self.control
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        loop {
            match self.control.recv::<ChildToSupervisor>().unwrap() {
                ChildToSupervisor::Stats(s) => return s,
                _ => continue,
            }
        }
    }

    pub fn shutdown(mut self) {
        self.control.send(&SupervisorToChild::Shutdown).unwrap();
        self.thread.take().unwrap().join().unwrap().unwrap();
    }
}

/// Landlock (journal dir read-write, TCP connect to `port` only, no bind) and a seccomp
/// allowlist of exactly [`vigil_shipper::SYSCALLS`] and `extra` on the calling thread, with
/// checks that they bite. The ruleset is applied to that thread only (Landlock without TSYNC
/// restricts the calling thread), so the test's other threads are unaffected.
pub fn sandbox_this_thread(jd: &Path, port: u16, extra: &[&str]) {
    use landlock::{
        ABI, Access, AccessFs, AccessNet, CompatLevel, Compatible, NetPort, Ruleset, RulesetAttr,
        RulesetCreatedAttr, RulesetStatus, path_beneath_rules,
    };
    let abi = ABI::V4;
    let status = Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(AccessFs::from_all(abi))
        .unwrap()
        .handle_access(AccessNet::ConnectTcp | AccessNet::BindTcp)
        .unwrap()
        .create()
        .unwrap()
        .add_rules(path_beneath_rules([jd], AccessFs::from_all(abi)))
        .unwrap()
        .add_rule(NetPort::new(port, AccessNet::ConnectTcp))
        .unwrap()
        .restrict_self()
        .unwrap();
    assert_eq!(status.ruleset, RulesetStatus::FullyEnforced);
    // The sandbox is real: nothing outside the journal directory, no other port.
    assert!(std::fs::read("/etc/hostname").is_err());
    assert!(std::fs::write(jd.parent().unwrap().join("escape"), b"x").is_err());
    let other = if port == 9 { 10 } else { 9 };
    let denied = std::net::TcpStream::connect(("127.0.0.1", other)).unwrap_err();
    assert_eq!(denied.kind(), std::io::ErrorKind::PermissionDenied);
    // Seccomp for this thread: the documented syscalls and nothing else (ENOSYS for the
    // rest, so a missing one shows as a failure here rather than a silent kill).
    let mut filter =
        libseccomp::ScmpFilterContext::new(libseccomp::ScmpAction::Errno(libc::ENOSYS)).unwrap();
    for name in vigil_shipper::SYSCALLS.iter().chain(extra) {
        if let Ok(sc) = libseccomp::ScmpSyscall::from_name(name) {
            filter.add_rule(libseccomp::ScmpAction::Allow, sc).unwrap();
        }
    }
    filter.load().unwrap();
    assert_eq!(
        std::fs::metadata("/").map(|_| ()).ok(),
        Some(()),
        "stat is allowed"
    );
}

pub fn handshake(collector: &mut Channel) -> Option<u64> {
    collector
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    collector
        .handshake(Role::Collector, Some(Role::Shipper))
        .unwrap();
    match collector.recv::<ShipperToCollector>().unwrap() {
        ShipperToCollector::Resume { last_kmsg_seq } => last_kmsg_seq,
        other => panic!("expected Resume, got {other:?}"),
    }
}

pub fn wait_reply(collector: &mut Channel, seq: u64) -> bool {
    match collector.recv::<ShipperToCollector>().unwrap() {
        ShipperToCollector::Ack { seq: s } if s == seq => true,
        ShipperToCollector::Nack { seq: s, .. } if s == seq => false,
        other => panic!("unexpected {other:?} waiting for {seq}"),
    }
}

pub fn log(id: i64) -> Record {
    Record::Log {
        resource: vec![KeyValue::str("host.name", "test-host")],
        log: LogRecord {
            time_unix_nano: 1_700_000_000_000_000_000 + id as u64,
            observed_time_unix_nano: 1_700_000_000_000_000_001,
            severity_number: 9,
            severity_text: "INFO".into(),
            event_name: String::new(),
            body: format!("test record {id}"),
            attributes: vec![KeyValue::i64("test.id", id)],
        },
    }
}

pub fn logs(range: std::ops::Range<i64>) -> Vec<Record> {
    range.map(log).collect()
}
