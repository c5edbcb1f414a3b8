//! OTLP/HTTP protobuf exporter: `POST <endpoint>/v1/metrics` (ExportMetricsServiceRequest) and
//! `/v1/logs` (ExportLogsServiceRequest), or each signal's own URL; gzip when configured;
//! http:// or https:// (rustls), by address or by name (resolved in the shipper, re-resolved
//! after a failed connection and at least every minute), directly or through a proxy. The two
//! signals share one connection when their targets allow it.
//!
//! Batching: a batch is sent when `max_batch_records` journal records are waiting or the
//! oldest waiting one is `max_batch_delay_ms` old, or at once when a log record (a kernel
//! event) is among them ([`OtlpExporter::urge`]): metrics wait to share a request, events do
//! not wait. Outcome of a request:
//! - 2xx: shipped; once every request of the batch is done the journal position advances;
//! - 408, 429, 5xx, resolution, connection, proxy and TLS errors (a certificate that does not
//!   verify included), timeouts: retried with exponential backoff and full jitter, or after
//!   `Retry-After` when the server gives one; counted by cause (`export_errors.<cause>`), the
//!   records stay in the journal until the backend takes them;
//! - other 4xx (and 3xx): permanent, the records of that request are dropped and counted
//!   (`records_dropped.http_4xx`), never retried.
//!
//! The request is written blocking (bounded by `timeout_ms`), the response is read when the
//! run loop's poll says the socket is readable, so the loop keeps journaling batches meanwhile;
//! while a request is in flight the next full batch is read and encoded already (one ahead),
//! so the shipper's encoding overlaps the backend's decoding.

use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use std::sync::Arc;

use prost::Message;
use rustls::ClientConfig;
use vigil_ipc_proto::delivery::{Scheme, ShipperInputs, Signal, Target};
use vigil_ipc_proto::{Compression, Decoded, OtlpConfig, RecordRef};

use crate::backoff::{self, Backoff};
use crate::convert::pb::ProcessEncoder;
use crate::convert::{self, ResourceDefaults};
use crate::export::gzip::{Gzip, GzipError};
use crate::http::{self, Response};
use crate::journal::Journal;
use crate::net::resolve::Resolver;
use crate::net::{self, Conn, NetError};
use crate::stats::Stats;

use super::{MAX_READ_BYTES, OTLP};

/// Longest `Retry-After` honoured as given.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// Index of a signal in the exporter's per-signal arrays.
fn idx(s: Signal) -> usize {
    match s {
        Signal::Metrics => 0,
        Signal::Logs => 1,
    }
}

struct Request {
    signal: Signal,
    body: Vec<u8>,
    records: u64,
    /// Journal sequence numbers of those records.
    seqs: Vec<u64>,
}

struct Pending {
    /// Our journal position when the batch was read.
    from: u64,
    next: u64,
    requests: VecDeque<Request>,
}

pub struct OtlpExporter {
    cfg: OtlpConfig,
    /// Per signal (metrics, logs): where and how to send.
    targets: [Target; 2],
    tls: [Option<Arc<ClientConfig>>; 2],
    /// Connection slot of each signal: the logs use the metrics' slot when both targets can
    /// share a connection.
    lane: [usize; 2],
    conns: [Option<Conn>; 2],
    /// Signal of the request in flight.
    inflight: Option<Signal>,
    resolver: Resolver,
    defaults: ResourceDefaults,
    batch: Option<Pending>,
    /// The batch after `batch`, encoded while `batch`'s request was in flight.
    ahead: Option<Pending>,
    inflight_deadline: Option<Instant>,
    backoff: Backoff,
    retry_at: Option<Instant>,
    pending_since: Option<Instant>,
    /// A log record was journaled since the last batch was taken: send without waiting.
    urgent: bool,
    failing: bool,
    /// Latest export error, for warnings and tests.
    pub last_error: Option<String>,
    /// Encoding state kept between requests: a piece of protobuf being written and the gzip
    /// stream (made on the first gzip request).
    scratch: Vec<u8>,
    gzip: Option<Box<Gzip>>,
    /// Process records' resources encoded earlier and the metrics' constant bytes.
    procs: ProcessEncoder,
}

impl OtlpExporter {
    /// The exporter for `cfg`, with the files the supervisor handed over. An error here is a
    /// configuration that cannot work (restarting will not fix it).
    pub fn new(
        cfg: OtlpConfig,
        defaults: ResourceDefaults,
        inputs: &ShipperInputs,
    ) -> Result<Self, String> {
        let [m, l]: [Target; 2] = cfg
            .targets()
            .map_err(|e| e.to_string())?
            .try_into()
            .map_err(|_| "expected one target per signal".to_string())?;
        let tls_of = |t: &Target| match t.endpoint.scheme {
            Scheme::Https => net::tls::client_config(t, inputs)
                .map(Some)
                .map_err(|e| format!("{} ({} endpoint): {e}", t.endpoint.url(), t.signal.as_str())),
            Scheme::Http => Ok(None),
        };
        let tls = [tls_of(&m)?, tls_of(&l)?];
        let lane = [0, if l.same_connection(&m) { 0 } else { 1 }];
        let resolver = Resolver::new(inputs.resolv_conf.as_deref(), inputs.hosts.as_deref())
            .map_err(|e| e.to_string())?;
        let backoff = Backoff::new(
            crate::config_ms(cfg.retry_initial_ms),
            crate::config_ms(cfg.retry_max_ms),
            backoff::seed(),
        );
        Ok(OtlpExporter {
            cfg,
            targets: [m, l],
            tls,
            lane,
            conns: [None, None],
            inflight: None,
            resolver,
            defaults,
            batch: None,
            ahead: None,
            inflight_deadline: None,
            backoff,
            retry_at: None,
            pending_since: None,
            urgent: false,
            failing: false,
            last_error: None,
            scratch: Vec::new(),
            gzip: None,
            procs: ProcessEncoder::default(),
        })
    }

    /// Records that should not wait for `max_batch_delay_ms` were journaled (kernel events).
    pub fn urge(&mut self) {
        self.urgent = true;
    }

    /// The connection to watch for readability while a request is in flight.
    pub fn poll_fd(&self) -> Option<BorrowedFd<'_>> {
        self.inflight_deadline?;
        let s = self.inflight?;
        self.conns[self.lane[idx(s)]].as_ref().map(|c| c.as_fd())
    }

    fn timeout(&self, s: Signal) -> Duration {
        crate::config_ms(self.targets[idx(s)].timeout_ms.max(1))
    }

    /// Lookups that went to a nameserver (for stats).
    pub fn dns_queries(&self) -> u64 {
        self.resolver.queries
    }

    /// Advance: read a response, start the next request, take a new batch. Returns when to be
    /// called again at the latest (besides readability of [`Self::poll_fd`]).
    pub fn step(&mut self, j: &mut Journal, stats: &mut Stats, now: Instant) -> Option<Instant> {
        loop {
            if let (Some(deadline), Some(sig)) = (self.inflight_deadline, self.inflight) {
                let polled = match self.conns[self.lane[idx(sig)]].as_mut() {
                    Some(c) => c.poll_response(),
                    None => Err(NetError::Closed),
                };
                match polled {
                    Ok(Some(resp)) => {
                        self.inflight_deadline = None;
                        self.inflight = None;
                        self.on_response(sig, resp, j, stats, now);
                        continue;
                    }
                    Ok(None) if now < deadline => {
                        self.prefetch(j);
                        return Some(deadline);
                    }
                    Ok(None) => self.fail("timeout", "request timed out".into(), None, stats, now),
                    Err(e) => self.fail(e.reason(), e.to_string(), None, stats, now),
                }
            }
            if let Some(t) = self.retry_at {
                if now < t {
                    return Some(t);
                }
                self.retry_at = None;
            }
            if self.batch.is_none() {
                let from = j.acked(OTLP)?;
                let waiting = j.next_seq().saturating_sub(from);
                if waiting == 0 {
                    self.pending_since = None;
                    return None;
                }
                let since = *self.pending_since.get_or_insert(now);
                let due = since + crate::config_ms(self.cfg.max_batch_delay_ms);
                if !self.urgent
                    && (waiting as usize) < self.cfg.max_batch_records.max(1)
                    && now < due
                {
                    return Some(due);
                }
                self.urgent = false;
                match j.read(from, self.cfg.max_batch_records.max(1), MAX_READ_BYTES) {
                    Ok(b) => {
                        self.pending_since = (b.next < j.next_seq()).then_some(now);
                        if b.is_empty() {
                            j.ack(OTLP, b.next);
                            continue;
                        }
                        match self.build(&b.decode(), b.next) {
                            Ok(p) => self.batch = Some(p),
                            Err(e) => {
                                self.fail("encode", e.to_string(), None, stats, now);
                                continue;
                            }
                        }
                    }
                    Err(e) => {
                        self.fail("journal", format!("journal read: {e}"), None, stats, now);
                        continue;
                    }
                }
            }
            // The journal dropped records of this batch meanwhile (drop-oldest, counted
            // there): forget it and read again from the new position.
            if let (Some(b), Some(a)) = (&self.batch, j.acked(OTLP))
                && a > b.from
            {
                self.batch = None;
                self.ahead = None;
                continue;
            }
            let Some(batch) = self.batch.as_mut() else {
                continue;
            };
            let Some(req) = batch.requests.front() else {
                let next = batch.next;
                self.batch = self.ahead.take();
                j.ack(OTLP, next);
                continue;
            };
            let signal = req.signal;
            if let Err(e) = self.send(signal, now) {
                self.fail(e.reason(), e.to_string(), None, stats, now);
                continue;
            }
        }
    }

    /// Write the request at the head of the batch on its signal's connection; a reused
    /// keep-alive connection that turns out closed gets one fresh connection at once.
    fn send(&mut self, signal: Signal, now: Instant) -> Result<(), NetError> {
        let i = idx(signal);
        let lane = self.lane[i];
        if let Some(c) = self.conns[lane].as_mut()
            && (c.is_stale() || !net::still_current(c, &self.targets[i], &mut self.resolver, now))
        {
            self.conns[lane] = None;
        }
        let timeout = self.timeout(signal);
        for _ in 0..2 {
            let fresh = self.conns[lane].is_none();
            if fresh {
                let c = net::connect(
                    &self.targets[i],
                    self.tls[i].as_ref(),
                    &mut self.resolver,
                    now,
                )?;
                self.conns[lane] = Some(c);
            }
            let Some(req) = self.batch.as_ref().and_then(|b| b.requests.front()) else {
                return Ok(());
            };
            let head =
                http::request_head(&self.targets[i], "application/x-protobuf", req.body.len());
            let Some(conn) = self.conns[lane].as_mut() else {
                continue;
            };
            match conn.send(&head, &req.body, timeout) {
                Ok(()) => {
                    self.inflight_deadline = Some(now + timeout);
                    self.inflight = Some(signal);
                    return Ok(());
                }
                Err(e) => {
                    self.conns[lane] = None;
                    if fresh {
                        return Err(e);
                    }
                }
            }
        }
        Err(NetError::Closed)
    }

    fn on_response(
        &mut self,
        sig: Signal,
        resp: Response,
        j: &mut Journal,
        stats: &mut Stats,
        now: Instant,
    ) {
        if !resp.keep_alive {
            self.conns[self.lane[idx(sig)]] = None;
        }
        let status = resp.status;
        if (200..300).contains(&status) {
            if let Some(b) = self.batch.as_mut()
                && let Some(req) = b.requests.pop_front()
            {
                stats.add_shipped(OTLP, req.records);
                // Records dropped by the journal while this request was in flight were
                // delivered after all: do not count them as dropped.
                let ack = j.acked(OTLP).unwrap_or(0);
                let delivered_anyway = req.seqs.iter().filter(|&&s| s < ack).count() as u64;
                j.uncount_dropped(delivered_anyway);
                let rejected = partial_rejections(req.signal, &resp.body);
                if rejected > 0 {
                    stats.otlp_rejected_items += rejected;
                    tracing::warn!(
                        "otlp exporter: {} accepted the request partially, rejecting {rejected} items",
                        self.targets[idx(req.signal)].endpoint.url()
                    );
                }
            }
            self.backoff.reset();
            if self.failing {
                tracing::info!("otlp exporter: backend accepts data again");
            }
            self.failing = false;
            self.finish_if_done(j);
        } else if status == 408 || status == 429 || status >= 500 {
            self.fail(
                "http_retry",
                format!("HTTP {status}"),
                resp.retry_after.map(|d| d.min(MAX_RETRY_AFTER)),
                stats,
                now,
            );
        } else {
            // Permanent: the backend will never take these bytes.
            if let Some(b) = self.batch.as_mut()
                && let Some(req) = b.requests.pop_front()
            {
                stats.add_dropped("http_4xx", req.records);
                tracing::warn!(
                    "otlp exporter: HTTP {status} from {}: {} records dropped: {}",
                    self.targets[idx(req.signal)].endpoint.url(),
                    req.records,
                    String::from_utf8_lossy(&resp.body[..resp.body.len().min(200)])
                );
            }
            self.finish_if_done(j);
        }
    }

    fn finish_if_done(&mut self, j: &mut Journal) {
        if let Some(b) = &self.batch
            && b.requests.is_empty()
        {
            let next = b.next;
            self.batch = self.ahead.take();
            j.ack(OTLP, next);
        }
    }

    /// While a request is in flight: read and encode the next batch if a full one is waiting
    /// (a partial one waits for its delay as usual). At most one batch ahead.
    fn prefetch(&mut self, j: &mut Journal) {
        let Some(b) = &self.batch else {
            return;
        };
        if self.ahead.is_some() {
            return;
        }
        let max = self.cfg.max_batch_records.max(1);
        if (j.next_seq().saturating_sub(b.next) as usize) < max {
            return;
        }
        if let Ok(rb) = j.read(b.next, max, MAX_READ_BYTES)
            && !rb.is_empty()
        {
            // An encoding failure is met again (and reported) when the batch is taken.
            self.ahead = self.build(&rb.decode(), rb.next).ok();
        }
    }

    /// A failed attempt: counted by cause, logged when a failing streak starts or its cause
    /// changes (naming the endpoint), retried after a backoff; the journal keeps the records.
    fn fail(
        &mut self,
        cause: &'static str,
        why: String,
        retry_after: Option<Duration>,
        stats: &mut Stats,
        now: Instant,
    ) {
        stats.retries += 1;
        stats.add_export_error(cause);
        let endpoint = self
            .batch
            .as_ref()
            .and_then(|b| b.requests.front())
            .map(|r| self.targets[idx(r.signal)].endpoint.url())
            .unwrap_or_else(|| self.cfg.endpoint.clone());
        self.conns = [None, None];
        self.inflight_deadline = None;
        self.inflight = None;
        let delay = retry_after.unwrap_or_else(|| self.backoff.next_delay());
        let msg = format!("otlp exporter: {endpoint}: {why}");
        if !self.failing || self.last_error.as_deref() != Some(msg.as_str()) {
            tracing::warn!("{msg}; retrying in {delay:?} (journal keeps the data)");
        }
        self.failing = true;
        self.last_error = Some(msg);
        self.retry_at = Some(now + delay);
    }

    fn build(&mut self, records: &[(u64, Decoded<'_>)], next: u64) -> Result<Pending, GzipError> {
        let mut requests = VecDeque::new();
        for signal in [Signal::Metrics, Signal::Logs] {
            let metrics = signal == Signal::Metrics;
            let (items, body) = self.encode(signal, records.iter().map(|(_, r)| r.borrowed()))?;
            if items > 0 {
                let seqs: Vec<u64> = records
                    .iter()
                    .filter(|(_, r)| convert::is_metrics(r.borrowed()) == metrics)
                    .map(|(s, _)| *s)
                    .collect();
                requests.push_back(Request {
                    signal,
                    body,
                    records: seqs.len() as u64,
                    seqs,
                });
            }
        }
        let from = records.first().map_or(next, |(s, _)| *s);
        Ok(Pending {
            from,
            next,
            requests,
        })
    }

    /// The request body of `signal` for these records, compressed as its target says, and the
    /// number of items (data points or log records) in it.
    fn encode<'a>(
        &mut self,
        signal: Signal,
        records: impl Iterator<Item = RecordRef<'a>>,
    ) -> Result<(usize, Vec<u8>), GzipError> {
        let d = &self.defaults;
        let procs = &mut self.procs;
        let request = |out: &mut Vec<u8>, chunk: &mut dyn FnMut(&mut Vec<u8>)| match signal {
            Signal::Metrics => convert::pb::metrics_request_chunked(records, d, procs, out, chunk),
            Signal::Logs => convert::pb::logs_request_chunked(records, d, out, chunk),
        };
        if self.targets[idx(signal)].compression == Compression::None {
            let mut body = Vec::new();
            let items = request(&mut body, &mut |_| {});
            return Ok((items, body));
        }
        let gz = self.gzip.get_or_insert_with(Box::default);
        gz.begin(convert::pb::CHUNK);
        let mut failed = None;
        self.scratch.clear();
        let items = request(&mut self.scratch, &mut |piece| {
            if failed.is_none()
                && let Err(e) = gz.write(piece)
            {
                failed = Some(e);
            }
            piece.clear();
        });
        if let Some(e) = failed {
            return Err(e);
        }
        Ok((items, gz.finish()?))
    }
}

/// Items (log records or data points) a 2xx answer says were rejected (`partial_success`).
/// An empty or undecodable body means full success. Public for the fuzz target only.
#[doc(hidden)]
pub fn partial_rejections(signal: Signal, body: &[u8]) -> u64 {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
    if body.is_empty() {
        return 0;
    }
    let n = match signal {
        Signal::Logs => ExportLogsServiceResponse::decode(body)
            .ok()
            .and_then(|r| r.partial_success)
            .map_or(0, |p| p.rejected_log_records),
        Signal::Metrics => ExportMetricsServiceResponse::decode(body)
            .ok()
            .and_then(|r| r.partial_success)
            .map_or(0, |p| p.rejected_data_points),
    };
    n.max(0) as u64
}
