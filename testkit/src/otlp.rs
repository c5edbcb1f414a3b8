//! A real OTLP/HTTP receiver on 127.0.0.1 for the shipper's tests and the end-to-end tests:
//! HTTP/1.1 with keep-alive, one thread per connection, bodies gunzipped and decoded with the
//! official opentelemetry-proto types (every log scope must be vigil's). Answers can be scripted
//! (one per request) or set for every request (`set_default`), to play a backend that is down,
//! overloaded (503 + Retry-After), closing idle connections, or healthy.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
pub use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
pub use opentelemetry_proto::tonic::logs::v1::LogRecord;
pub use opentelemetry_proto::tonic::metrics::v1::Metric;
use prost::Message;

/// One HTTP answer.
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
            headers: vec![("Retry-After".into(), v.into())],
            ..Reply::status(status)
        }
    }
}

#[derive(Debug, Clone)]
pub struct RecvLog {
    pub resource: BTreeMap<String, String>,
    pub scope: String,
    pub log: LogRecord,
    /// When its request was decoded.
    pub arrived: Instant,
}

impl RecvLog {
    pub fn attrs(&self) -> BTreeMap<String, String> {
        attr_map(&self.log.attributes)
    }
}

#[derive(Debug, Clone)]
pub struct RecvMetric {
    pub resource: BTreeMap<String, String>,
    pub scope: String,
    pub metric: Metric,
}

#[derive(Debug, Default)]
pub struct Received {
    /// Count the items of each body by walking its protobuf fields, without decoding it into
    /// messages and keeping them (the throughput benchmark: the receiver shares the machine's
    /// two cores).
    pub count_only: bool,
    pub log_count: usize,
    pub metric_count: usize,
    pub logs: Vec<RecvLog>,
    pub metrics: Vec<RecvMetric>,
    /// (path, status answered, time, gzip)
    pub requests: Vec<(String, u16, Instant, bool)>,
    /// The request headers of each request, in arrival order (names lower-cased).
    pub headers: Vec<Vec<(String, String)>>,
}

pub struct Receiver {
    pub port: u16,
    pub received: Arc<Mutex<Received>>,
    script: Arc<Mutex<VecDeque<Reply>>>,
    default: Arc<Mutex<Reply>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// The value of an OTLP attribute as a string (ints in decimal).
pub fn any_to_string(v: &Option<AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(f)) => f.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        other => format!("{other:?}"),
    }
}

pub fn attr_map(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), any_to_string(&kv.value)))
        .collect()
}

/// A port nothing listens on (yet).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Receiver {
    pub fn start() -> Receiver {
        Self::start_on(TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
    }

    /// Bind to a given port (a backend coming up where the agent already points).
    pub fn start_at(port: u16) -> Receiver {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match TcpListener::bind(("127.0.0.1", port)) {
                Ok(l) => return Self::start_on(l),
                Err(e) if Instant::now() > deadline => panic!("bind {port}: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    fn start_on(listener: TcpListener) -> Receiver {
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let received = Arc::new(Mutex::new(Received::default()));
        let script = Arc::new(Mutex::new(VecDeque::new()));
        let default = Arc::new(Mutex::new(Reply::status(200)));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s, d, st) = (
            received.clone(),
            script.clone(),
            default.clone(),
            stop.clone(),
        );
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let (r, s, d, st) = (r.clone(), s.clone(), d.clone(), st.clone());
                        std::thread::spawn(move || serve(conn, r, s, d, st));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Receiver {
            port,
            received,
            script,
            default,
            stop,
            thread: Some(thread),
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Answers for the next requests, in order; afterwards the default answer.
    pub fn push_replies(&self, replies: impl IntoIterator<Item = Reply>) {
        self.script.lock().unwrap().extend(replies);
    }

    /// The answer to every request once the script is exhausted (initially 200).
    pub fn set_default(&self, reply: Reply) {
        *self.default.lock().unwrap() = reply;
    }

    pub fn logs(&self) -> Vec<RecvLog> {
        self.received.lock().unwrap().logs.clone()
    }

    pub fn metrics(&self) -> Vec<RecvMetric> {
        self.received.lock().unwrap().metrics.clone()
    }

    /// Requests answered with `status` so far.
    pub fn answered(&self, status: u16) -> usize {
        self.received
            .lock()
            .unwrap()
            .requests
            .iter()
            .filter(|r| r.1 == status)
            .count()
    }

    /// Poll `f` over what arrived until it returns `Some`, or give up after `timeout`.
    pub fn wait<T>(
        &self,
        timeout: Duration,
        mut f: impl FnMut(&Received) -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(v) = f(&self.received.lock().unwrap()) {
                return Some(v);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
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

    /// Wait until every id of `want` arrived (or `timeout` passed): what [`Self::log_ids`] says.
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

/// Items of a body of `path` by a full decode (the check of [`count_items`]).
fn decoded_items(path: &str, raw: &[u8]) -> usize {
    match path {
        "/v1/logs" => ExportLogsServiceRequest::decode(raw)
            .expect("decode logs")
            .resource_logs
            .iter()
            .flat_map(|rl| &rl.scope_logs)
            .map(|sl| sl.log_records.len())
            .sum(),
        _ => ExportMetricsServiceRequest::decode(raw)
            .expect("decode metrics")
            .resource_metrics
            .iter()
            .flat_map(|rm| &rm.scope_metrics)
            .map(|sm| sm.metrics.len())
            .sum(),
    }
}

/// Take in one accepted body of `path`: count its items, and keep them unless `count_only`.
fn accept(r: &mut Received, path: &str, raw: &[u8]) {
    if r.count_only {
        // Checked against the full decode on the first body of each kind.
        let n = count_items(raw);
        if !r.requests.iter().any(|q| q.0 == path) {
            assert_eq!(
                n,
                decoded_items(path, raw),
                "protobuf walk and decode disagree"
            );
        }
        if path == "/v1/logs" {
            r.log_count += n;
        } else {
            r.metric_count += n;
        }
        return;
    }
    match path {
        "/v1/logs" => {
            let req = ExportLogsServiceRequest::decode(raw).expect("decode logs");
            for rl in req.resource_logs {
                let res = attr_map(&rl.resource.unwrap_or_default().attributes);
                for sl in rl.scope_logs {
                    let scope = sl.scope.map(|s| s.name).unwrap_or_default();
                    assert_eq!(scope, "vigil");
                    r.log_count += sl.log_records.len();
                    for log in sl.log_records {
                        r.logs.push(RecvLog {
                            resource: res.clone(),
                            scope: scope.clone(),
                            log,
                            arrived: Instant::now(),
                        });
                    }
                }
            }
        }
        "/v1/metrics" => {
            let req = ExportMetricsServiceRequest::decode(raw).expect("decode metrics");
            for rm in req.resource_metrics {
                let res = attr_map(&rm.resource.unwrap_or_default().attributes);
                for sm in rm.scope_metrics {
                    let scope = sm.scope.map(|s| s.name).unwrap_or_default();
                    r.metric_count += sm.metrics.len();
                    for metric in sm.metrics {
                        r.metrics.push(RecvMetric {
                            resource: res.clone(),
                            scope: scope.clone(),
                            metric,
                        });
                    }
                }
            }
        }
        other => panic!("unexpected path {other}"),
    }
}

fn serve(
    conn: TcpStream,
    received: Arc<Mutex<Received>>,
    script: Arc<Mutex<VecDeque<Reply>>>,
    default: Arc<Mutex<Reply>>,
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
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            match rd.read_line(&mut h) {
                Ok(0) => return,
                Ok(_) => {}
                Err(_) if stop.load(Ordering::Relaxed) => return,
                // A slow writer: the header line may still be coming.
                Err(_) => continue,
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let Some((k, v)) = h.split_once(':') else {
                return;
            };
            headers.push((k.to_ascii_lowercase(), v.trim().to_string()));
            match k.to_ascii_lowercase().as_str() {
                "content-length" => len = v.trim().parse().unwrap_or(0),
                "content-encoding" => gzip = v.trim() == "gzip",
                "content-type" => ctype = v.trim().to_string(),
                _ => {}
            }
        }
        let mut body = vec![0u8; len];
        if !conn_read_exact(&mut rd, &mut body, &stop) {
            return;
        }
        received.lock().unwrap().headers.push(headers);
        let reply = script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| default.lock().unwrap().clone());
        if reply.status == 200 {
            assert_eq!(ctype, "application/x-protobuf", "content type of {path}");
            let raw = if gzip {
                let mut out = Vec::new();
                flate2::read::GzDecoder::new(&body[..])
                    .read_to_end(&mut out)
                    .expect("gunzip");
                out
            } else {
                body
            };
            let mut r = received.lock().unwrap();
            accept(&mut r, &path, &raw);
        }
        received
            .lock()
            .unwrap()
            .requests
            .push((path, reply.status, Instant::now(), gzip));
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

fn conn_read_exact(rd: &mut BufReader<TcpStream>, buf: &mut [u8], stop: &AtomicBool) -> bool {
    let mut got = 0;
    while got < buf.len() {
        match rd.read(&mut buf[got..]) {
            Ok(0) => return false,
            Ok(n) => got += n,
            Err(_) if stop.load(Ordering::Relaxed) => return false,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut
                    || e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    true
}
