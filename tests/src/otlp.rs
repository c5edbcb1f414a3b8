//! A real OTLP/HTTP receiver on 127.0.0.1 for the end-to-end tests: HTTP/1.1 with keep-alive,
//! one thread per connection, bodies gunzipped and decoded with the official opentelemetry-proto
//! types. Answers can be scripted (one per request) or set for every request (`set_default`), to
//! play a backend that is down, overloaded (503 + Retry-After) or healthy.

use std::collections::{BTreeMap, VecDeque};
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
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Reply {
            status,
            headers: Vec::new(),
        }
    }

    pub fn retry_after(status: u16, v: &str) -> Self {
        Reply {
            status,
            headers: vec![("Retry-After".into(), v.into())],
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
    pub logs: Vec<RecvLog>,
    pub metrics: Vec<RecvMetric>,
    /// (path, status answered, gzip)
    pub requests: Vec<(String, u16, bool)>,
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
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
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
            match path.as_str() {
                "/v1/logs" => {
                    let req = ExportLogsServiceRequest::decode(&raw[..]).expect("decode logs");
                    for rl in req.resource_logs {
                        let res = attr_map(&rl.resource.unwrap_or_default().attributes);
                        for sl in rl.scope_logs {
                            let scope = sl.scope.map(|s| s.name).unwrap_or_default();
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
                    let req =
                        ExportMetricsServiceRequest::decode(&raw[..]).expect("decode metrics");
                    for rm in req.resource_metrics {
                        let res = attr_map(&rm.resource.unwrap_or_default().attributes);
                        for sm in rm.scope_metrics {
                            let scope = sm.scope.map(|s| s.name).unwrap_or_default();
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
            r.requests.push((path.clone(), 200, gzip));
        } else {
            received
                .lock()
                .unwrap()
                .requests
                .push((path.clone(), reply.status, gzip));
        }
        let mut resp = format!("HTTP/1.1 {} X\r\nContent-Length: 0\r\n", reply.status);
        for (k, v) in &reply.headers {
            resp.push_str(&format!("{k}: {v}\r\n"));
        }
        resp.push_str("\r\n");
        if w.write_all(resp.as_bytes()).is_err() {
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
