//! The shipper role: start-up (outputs, journal, the Prometheus endpoint) and its part of the
//! one child loop (`vigil_ipc_proto::runtime`): first waiting for the collector, then journaling
//! its batches, acknowledging them and exporting the journal.

use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use nix::poll::PollFlags;
use vigil_ipc_proto::runtime::{self, Exit, Flow, Worker};
use vigil_ipc_proto::{
    Channel, ChildToSupervisor, InitConfig, ProtoError, Role, RoleStats, ShipperToCollector,
    delivery::ShipperInputs,
};

use crate::convert::ResourceDefaults;
use crate::export::json::JsonExporter;
use crate::export::otlp::OtlpExporter;
use crate::export::prometheus::Endpoint;
use crate::journal::{self, Journal, JournalConfig, JournalError};
use crate::stats::Stats;
use crate::{Attachments, MAX_BATCHES_PER_TURN, ShipperError, config_ms, convert, export};

/// The longest the shipper sleeps: the exporters' retry and backoff times are checked at
/// least this often.
const MAX_WAIT: Duration = Duration::from_secs(1);

/// Journal every batch from the collector, acknowledge it, export it, until shut down.
pub fn run(
    init: &InitConfig,
    mut control: Channel,
    collector: Channel,
    attachments: Attachments,
) -> Result<(), ShipperError> {
    return_big_buffers();
    let mut shipper = Shipper::start(init, &control, collector, attachments)?;
    // Until the collector says hello, stay answerable to the supervisor (a shutdown during
    // start-up must not hang on a collector that never comes).
    if runtime::run(&mut control, &mut shipper)? != Exit::Done {
        return Ok(());
    }
    shipper.greet_collector()?;
    vigil_ipc_proto::heap::release_startup_code();
    runtime::run(&mut control, &mut shipper)?;
    Ok(())
}

/// The shipper's state across both phases.
struct Shipper {
    collector: Channel,
    /// The collector's hello has come and was answered (the running phase).
    greeted: bool,
    collector_open: bool,
    journal: Journal,
    /// The exporters on, by name (`json`, `otlp`), as the journal keeps their positions.
    names: Vec<&'static str>,
    json: Option<JsonExporter>,
    otlp: Option<OtlpExporter>,
    prom: Option<Endpoint>,
    stats: Stats,
    /// The first intervals (every resource encoded, the first connections) are start-up too:
    /// their code is released after.
    warm_up: vigil_ipc_proto::heap::WarmUp,
    start_ns: u64,
    metrics_every: Duration,
    next_self_metrics: Instant,
    /// Batches are being refused for a full disk (warned once per streak).
    nospace_streak: bool,
    /// Kernel lines journaled in the order they were read.
    kmsg_order: crate::order::KmsgOrder,
    warnings: Vec<String>,
}

impl Shipper {
    fn start(
        init: &InitConfig,
        control: &Channel,
        collector: Channel,
        attachments: Attachments,
    ) -> Result<Shipper, ShipperError> {
        let cfg = &init.shipper;
        let defaults = ResourceDefaults::with_attributes(&init.hostname, &cfg.resource_attributes);
        let mut warnings = Vec::new();
        let mut json = None;
        if !cfg.json_lines.is_empty() {
            match JsonExporter::open(&cfg.json_lines, defaults.clone()) {
                Ok(j) => json = Some(j),
                Err(e) => warnings.push(format!(
                    "shipper: JSON lines output {:?} unusable ({e}); JSON exporter off",
                    cfg.json_lines
                )),
            }
        }
        let mut otlp = None;
        if let Some(o) = &cfg.otlp {
            let inputs = match &attachments.inputs {
                Some(fd) => crate::read_inputs(fd).map_err(|e| config_error(control, e))?,
                None => ShipperInputs::default(),
            };
            let x = OtlpExporter::new(o.clone(), defaults.clone(), &inputs)
                .map_err(|e| config_error(control, format!("shipper: OTLP exporter: {e}")))?;
            otlp = Some(x);
        }
        let mut names: Vec<&'static str> = Vec::new();
        if json.is_some() {
            names.push(export::JSON);
        }
        if otlp.is_some() {
            names.push(export::OTLP);
        }
        let jcfg = JournalConfig {
            max_bytes: cfg.journal_max_bytes,
            segment_bytes: cfg.journal_segment_bytes,
            fsync: cfg.fsync,
            fsync_interval: config_ms(cfg.fsync_interval_ms.max(1)),
        };
        let mut journal = Journal::open(&crate::journal_dir(init), jcfg, &names)?;
        warnings.extend(journal.take_warnings());

        let metrics_every = config_ms(init.collector.interval_ms.max(1000));
        // Entries of the scrape endpoint live two collection intervals (and a second)
        // unrefreshed.
        let ttl = metrics_every * 2 + Duration::from_secs(1);
        let prom = match attachments.prometheus {
            Some(l) => Some(
                Endpoint::new(l, &defaults, ttl, Instant::now())
                    .map_err(|e| ShipperError::Io(e.into()))?,
            ),
            None => None,
        };
        for w in &warnings {
            tracing::warn!("{w}");
        }
        Ok(Shipper {
            collector,
            greeted: false,
            collector_open: true,
            warm_up: vigil_ipc_proto::heap::WarmUp::after(vigil_ipc_proto::heap::WARM_UP_INTERVALS),
            journal,
            names,
            json,
            otlp,
            prom,
            stats: Stats::default(),
            start_ns: crate::now_ns(),
            metrics_every,
            next_self_metrics: Instant::now() + metrics_every,
            nospace_streak: false,
            kmsg_order: Default::default(),
            warnings,
        })
    }

    /// The collector's hello, ours, and where its kernel lines resume.
    fn greet_collector(&mut self) -> Result<(), ShipperError> {
        let c = &mut self.collector;
        c.handshake(Role::Shipper, Some(Role::Collector))?;
        c.send(&ShipperToCollector::Resume {
            last_kmsg_seq: self.journal.last_kmsg_seq(),
        })?;
        c.set_nonblocking(true)?;
        self.greeted = true;
        Ok(())
    }

    fn warn(&mut self, msg: String) {
        tracing::warn!("{msg}");
        self.warnings.push(msg);
    }

    /// The shipper's own metrics, journaled once per collection interval.
    fn self_metrics(&mut self, now: Instant) {
        self.next_self_metrics = now + self.metrics_every;
        let rec =
            self.stats
                .self_metrics(&self.journal, &self.names, self.start_ns, crate::now_ns());
        if let Err(e) = self.journal.append(std::slice::from_ref(&rec)) {
            self.stats.append_errors += 1;
            if let Some(more) = self.stats.append_warn.allow(now) {
                let n = self.stats.append_errors;
                self.warn(format!(
                    "shipper: own metrics not journaled: {e} (append_errors {n}{more})"
                ));
            }
        } else if let Some(p) = self.prom.as_mut() {
            p.ingest(rec, now);
        }
        // Once per collection interval: a cycle's batches leave ≈ 300 KiB of free chunks below
        // the top of the heap (which the trim threshold does not reach) that would otherwise
        // stay resident until the next cycle's burst.
        vigil_ipc_proto::heap::release_free_memory();
        self.warm_up.tick();
    }

    /// Journal every batch the collector has sent (one fsync for all of them: group commit),
    /// then acknowledge them.
    fn take_batches(&mut self) {
        let mut staged: Vec<(u64, u64)> = Vec::new();
        let mut replies: Vec<ShipperToCollector> = Vec::new();
        for _ in 0..MAX_BATCHES_PER_TURN {
            if !self.collector_open {
                break;
            }
            // Every record is decoded (validated) and journaled as the very bytes received.
            let received = self
                .collector
                .recv_bytes()
                .and_then(vigil_ipc_proto::batch::split_batch);
            match received {
                Err(e) if e.is_would_block() => break,
                Ok(batch) => {
                    let n = batch.records.len() as u64;
                    let kmsg =
                        journal::max_kmsg_seq(batch.records.iter().map(|(r, _)| r.borrowed()));
                    let events = batch
                        .records
                        .iter()
                        .any(|(r, _)| !convert::is_metrics(r.borrowed()));
                    let payloads: Vec<&[u8]> = batch.records.iter().map(|(_, b)| *b).collect();
                    let appended = self
                        .kmsg_order
                        .admit(batch.seq, Instant::now())
                        .and_then(|()| self.journal.append_encoded_deferred(&payloads, kmsg));
                    match appended {
                        Ok(()) => {
                            self.kmsg_order.journaled(batch.seq);
                            staged.push((batch.seq, n));
                            if events && let Some(o) = self.otlp.as_mut() {
                                o.urge();
                            }
                            if let Some(p) = self.prom.as_mut() {
                                let now = Instant::now();
                                for (r, _) in batch.records {
                                    p.ingest(r.into_owned(), now);
                                }
                            }
                        }
                        Err(e) => replies.push(refuse(
                            &mut self.kmsg_order,
                            kmsg.is_some(),
                            &mut self.stats,
                            &mut self.nospace_streak,
                            &mut self.warnings,
                            (batch.seq, n),
                            &e,
                        )),
                    }
                }
                Err(e @ (ProtoError::Closed | ProtoError::Io(_))) => {
                    tracing::warn!("shipper: collector channel gone ({e}); still exporting");
                    self.collector_open = false;
                }
                Err(e) => {
                    self.stats.malformed_frames += 1;
                    tracing::warn!("shipper: malformed frame from the collector: {e}");
                }
            }
        }
        if !staged.is_empty() {
            match self.journal.commit() {
                Ok(()) => {
                    if std::mem::take(&mut self.nospace_streak) {
                        self.warn("shipper: journal has space again; accepting batches".into());
                    }
                    for (seq, n) in staged {
                        self.stats.records_accepted += n;
                        self.stats.batches_accepted += 1;
                        replies.push(ShipperToCollector::Ack { seq });
                    }
                }
                Err(e) => {
                    for b in staged {
                        let (stats, streak) = (&mut self.stats, &mut self.nospace_streak);
                        // Their kernel lines are in the journal's file (not durably): no
                        // order to keep (`false`: the order is left as it is).
                        replies.push(refuse(
                            &mut self.kmsg_order,
                            false,
                            stats,
                            streak,
                            &mut self.warnings,
                            b,
                            &e,
                        ));
                    }
                }
            }
        }
        for r in replies {
            match self.collector.send(&r) {
                Ok(()) => {}
                Err(ProtoError::Closed) => self.collector_open = false,
                Err(e) => tracing::warn!("shipper: reply to collector: {e}"),
            }
        }
    }
}

impl Worker for Shipper {
    type Error = ShipperError;

    fn due(&mut self, now: Instant) -> Result<Option<Instant>, ShipperError> {
        if !self.greeted {
            return Ok(Some(now + MAX_WAIT));
        }
        if now >= self.next_self_metrics {
            self.self_metrics(now);
        }
        let mut wake = (now + MAX_WAIT).min(self.next_self_metrics);
        let mut merge = |t: Option<Instant>| {
            if let Some(t) = t {
                wake = wake.min(t);
            }
        };
        if let Some(j) = self.json.as_mut() {
            merge(j.step(&mut self.journal, &mut self.stats, now));
        }
        if let Some(o) = self.otlp.as_mut() {
            merge(o.step(&mut self.journal, &mut self.stats, now));
        }
        merge(self.journal.tick(now));
        if let Some(p) = self.prom.as_mut() {
            merge(p.step(now, &mut self.stats));
        }
        let journal_warnings = self.journal.take_warnings();
        for w in journal_warnings {
            self.warn(w);
        }
        Ok(Some(wake))
    }

    fn watch(&self, out: &mut Vec<(RawFd, PollFlags)>) {
        if !self.greeted {
            out.push((self.collector.as_raw_fd(), PollFlags::POLLIN));
            return;
        }
        if self.collector_open {
            out.push((self.collector.as_raw_fd(), PollFlags::POLLIN));
        }
        if let Some(fd) = self.otlp.as_ref().and_then(|o| o.poll_fd()) {
            out.push((fd.as_raw_fd(), PollFlags::POLLIN));
        }
        if let Some(p) = self.prom.as_ref() {
            p.for_each_fd(|fd, ev| out.push((fd.as_raw_fd(), ev)));
        }
    }

    fn ready(&mut self, events: &[PollFlags]) -> Result<Flow, ShipperError> {
        if !self.greeted {
            let hello = events.first().is_some_and(|e| !e.is_empty());
            return Ok(if hello { Flow::Done } else { Flow::Continue });
        }
        // The events are in the order `watch` listed them: the collector (while open), the
        // OTLP connection in flight (its step reads it), then the Prometheus descriptors.
        let prom_at = usize::from(self.collector_open)
            + usize::from(self.otlp.as_ref().and_then(|o| o.poll_fd()).is_some());
        if let Some(p) = self.prom.as_mut() {
            p.handle(
                events.get(prom_at..).unwrap_or(&[]),
                Instant::now(),
                &mut self.stats,
            );
        }
        self.take_batches();
        Ok(Flow::Continue)
    }

    fn stats(&mut self) -> RoleStats {
        self.stats.role_stats(&self.journal, &self.names)
    }

    fn shutdown(&mut self) {
        if let Some(j) = self.json.as_mut() {
            j.step(&mut self.journal, &mut self.stats, Instant::now());
            j.flush();
        }
        self.journal.close();
    }

    fn bad_control(&mut self, what: &str) {
        self.stats.malformed_frames += 1;
        tracing::warn!("shipper: control channel: {what}");
    }

    fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
    }
}

/// A batch `(seq, records)` that is not (durably) in the journal: counted, warned about (once
/// per full-disk streak), answered with `Nack`.
fn refuse(
    kmsg_order: &mut crate::order::KmsgOrder,
    kernel_lines: bool,
    stats: &mut Stats,
    nospace_streak: &mut bool,
    warnings: &mut Vec<String>,
    (seq, n): (u64, u64),
    e: &JournalError,
) -> ShipperToCollector {
    kmsg_order.refused(seq, kernel_lines, e, Instant::now());
    stats.batches_nacked += 1;
    let reason = match e {
        JournalError::NoSpace { .. } => "enospc",
        JournalError::RecordTooLarge(_) | JournalError::Encode(_) => "record_too_large",
        JournalError::Io { .. } => {
            stats.append_errors += 1;
            "journal_io"
        }
    };
    stats.add_dropped(reason, n);
    let first = !std::mem::replace(nospace_streak, reason == "enospc");
    let w = match reason {
        "enospc" => first.then(|| format!("shipper: batch {seq} not journaled: {e}")),
        "journal_io" => stats.append_warn.allow(Instant::now()).map(|more| {
            format!(
                "shipper: batch {seq} not journaled: {e} (append_errors {}{more})",
                stats.append_errors
            )
        }),
        _ => Some(format!("shipper: batch {seq} not journaled: {e}")),
    };
    if let Some(w) = w {
        tracing::warn!("{w}");
        warnings.push(w);
    }
    ShipperToCollector::Nack {
        seq,
        reason: format!("not journaled: {e}"),
    }
}

/// Request bodies, journal reads and their gzip copies are megabytes each, allocated and freed
/// every batch. glibc's dynamic mmap threshold would soon serve them from the heap, where the
/// freed pages stay resident between batches; a fixed threshold keeps every buffer above it an
/// mmap of its own, unmapped when freed.
fn return_big_buffers() {
    // SAFETY: mallopt only changes allocator parameters; called before this thread allocates
    // its large buffers, with a constant valid for M_MMAP_THRESHOLD.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// A configuration that cannot work: told to the supervisor (which stops instead of restarting
/// us), then returned.
fn config_error(control: &Channel, msg: String) -> ShipperError {
    let _ = control.send(&ChildToSupervisor::ConfigError(msg.clone()));
    ShipperError::Config(msg)
}
