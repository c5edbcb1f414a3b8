//! The shipper: unprivileged journal and exporters.
//!
//! [`run`] is one single-threaded poll loop over the control channel (supervisor), the
//! collector channel, while an OTLP request is in flight its TCP connection and, when the
//! Prometheus endpoint is on, its listening socket and connections:
//! - every `Batch` from the collector is appended to the [`journal`] (durable per the fsync
//!   policy) and only then acknowledged; a batch that cannot be journaled (full disk) is
//!   answered with `Nack`, counted, and the next batch tries again;
//! - exporters ([`export`]) read the journal from their own acknowledged position, so nothing
//!   is lost while a backend is down or across restarts (replay; duplicates possible);
//! - `StatsRequest` is answered with the counters of [`stats::Stats`], which are also
//!   journaled as `vigil.shipper.*` metrics once per collection interval;
//! - every metric record journaled (the collector's and those self-metrics) also updates the
//!   latest-value store of the Prometheus endpoint ([`export::prometheus`]), which answers
//!   scrapes from it without blocking the loop.
//!
//! Sandbox contract: single-threaded (no clone); files only under the journal directory
//! (plus the JSON-lines file when it is not stdout); TCP connect only to the ports of the OTLP
//! endpoints (or their proxy) and 53; everything else it needs for delivery (CA bundles,
//! client certificates, resolv.conf, hosts) arrives in one sealed memfd the supervisor filled
//! before the view was built, and the Prometheus listening socket is bound by the supervisor.
//! Names are resolved here (UDP to the nameservers: the `shipper-dns` policy, only when a name
//! must be resolved). Syscalls run() makes on x86_64, as
//! traced under Landlock (`strace -f` of `tests/sandboxed.rs`) plus the error paths:
//! poll, recvmsg, sendmsg, recvfrom (MSG_PEEK), sendto, read, write, pread64, pwrite64, openat,
//! close, fcntl, ioctl (FIONBIO), fsync, fdatasync, ftruncate, rename, unlink, mkdir,
//! getdents64, statx, newfstatat, lseek, socket, connect, getsockopt, setsockopt,
//! clock_gettime, getrandom (HashMap seeds), getpid, mmap, munmap, mremap, mprotect, madvise,
//! brk, futex, rt_sigprocmask, sigaltstack, exit.

pub mod backoff;
pub mod convert;
pub mod export;
pub mod http;
pub mod journal;
pub mod net;
pub mod stats;

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::poll::{PollFd, PollFlags, poll};
use vigil_ipc_proto::delivery::ShipperInputs;
use vigil_ipc_proto::{
    Channel, ChildToSupervisor, InitConfig, ProtoError, Role, ShipperToCollector, SupervisorToChild,
};

use convert::ResourceDefaults;
use export::json::JsonExporter;
use export::otlp::OtlpExporter;
use export::prometheus::Endpoint;
use journal::{Journal, JournalConfig, JournalError};
use stats::Stats;

#[derive(Debug, thiserror::Error)]
pub enum ShipperError {
    #[error("ipc: {0}")]
    Proto(#[from] vigil_ipc_proto::ProtoError),
    #[error("journal: {0}")]
    Journal(#[from] JournalError),
    #[error("poll: {0}")]
    Poll(#[from] nix::Error),
    #[error("socket setup: {0}")]
    Io(#[from] std::io::Error),
    #[error("configuration: {0}")]
    Config(String),
}

/// Descriptors the supervisor attached to the Init frame.
#[derive(Debug, Default)]
pub struct Attachments {
    /// Sealed memfd of [`ShipperInputs`] (OTLP on).
    pub inputs: Option<OwnedFd>,
    /// Listening socket of the Prometheus endpoint.
    pub prometheus: Option<OwnedFd>,
}

/// Read the sealed memfd the supervisor filled (bounded, from offset 0 whatever its position).
pub fn read_inputs(fd: &OwnedFd) -> Result<ShipperInputs, String> {
    let st = nix::sys::stat::fstat(fd).map_err(|e| format!("shipper inputs: fstat: {e}"))?;
    let len = usize::try_from(st.st_size).unwrap_or(usize::MAX);
    if len > ShipperInputs::MAX_BYTES {
        return Err(format!("shipper inputs: {len} bytes is too large"));
    }
    let mut buf = vec![0u8; len];
    let mut off = 0;
    while off < len {
        match nix::sys::uio::pread(fd, &mut buf[off..], off as libc::off_t) {
            Ok(0) => return Err("shipper inputs: short read".into()),
            Ok(n) => off += n,
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(format!("shipper inputs: read: {e}")),
        }
    }
    ShipperInputs::decode(&buf).map_err(|e| format!("shipper inputs: decode: {e}"))
}

/// Syscalls [`run`] makes on x86_64 (see the module documentation); `tests/sandboxed.rs` runs
/// the shipper under a seccomp filter allowing exactly these, so the list stays complete for the
/// paths the tests exercise. The role's policy file must allow at least these.
pub const SYSCALLS: &[&str] = &[
    "poll",
    "ppoll",
    "recvmsg",
    "sendmsg",
    "recvfrom",
    "sendto",
    "read",
    "write",
    "pread64",
    "pwrite64",
    "openat",
    "close",
    "fcntl",
    "ioctl",
    "fsync",
    "fdatasync",
    "ftruncate",
    "rename",
    "renameat",
    "renameat2",
    "unlink",
    "unlinkat",
    "mkdir",
    "mkdirat",
    "getdents64",
    "statx",
    "newfstatat",
    "fstat",
    "lseek",
    "socket",
    "connect",
    "getsockopt",
    "setsockopt",
    "clock_gettime",
    "getrandom",
    "getpid",
    "gettid",
    "mmap",
    "munmap",
    "mremap",
    "mprotect",
    "madvise",
    "brk",
    "futex",
    "rt_sigprocmask",
    "sigaltstack",
    "exit",
    "sched_yield",
];

/// What the Prometheus endpoint adds to [`SYSCALLS`]: `accept4` (the `shipper-listen`
/// policy, only when the endpoint is on) and `shutdown` (after a refusal).
pub const LISTEN_SYSCALLS: &[&str] = &["accept4", "shutdown"];

/// Most collector batches handled in one loop turn before exporters get a turn.
const MAX_BATCHES_PER_TURN: usize = 64;

/// A duration from configuration, capped at one day (no `Instant` overflow whatever the
/// value).
pub fn config_ms(ms: u64) -> Duration {
    Duration::from_millis(ms.min(86_400_000))
}

/// The journal directory for this configuration.
pub fn journal_dir(init: &InitConfig) -> PathBuf {
    match &init.shipper.journal_dir {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(&init.runtime_dir).join("journal"),
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn warn(control: &Channel, msg: String) {
    tracing::warn!("{msg}");
    let _ = control.send(&ChildToSupervisor::Warning(msg));
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

/// Journal every batch from the collector, acknowledge it, export it, until shut down.
pub fn run(
    init: &InitConfig,
    mut control: Channel,
    mut collector: Channel,
    attachments: Attachments,
) -> Result<(), ShipperError> {
    let cfg = &init.shipper;
    let defaults = ResourceDefaults::with_attributes(&init.hostname, &cfg.resource_attributes);
    return_big_buffers();

    let mut json = None;
    if !cfg.json_lines.is_empty() {
        match JsonExporter::open(&cfg.json_lines, defaults.clone()) {
            Ok(j) => json = Some(j),
            Err(e) => warn(
                &control,
                format!(
                    "shipper: JSON lines output {:?} unusable ({e}); JSON exporter off",
                    cfg.json_lines
                ),
            ),
        }
    }
    let mut otlp = None;
    if let Some(o) = &cfg.otlp {
        let inputs = match &attachments.inputs {
            Some(fd) => read_inputs(fd).map_err(|e| config_error(&control, e))?,
            None => ShipperInputs::default(),
        };
        let x = OtlpExporter::new(o.clone(), defaults.clone(), &inputs)
            .map_err(|e| config_error(&control, format!("shipper: OTLP exporter: {e}")))?;
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
    let mut journal = Journal::open(&journal_dir(init), jcfg, &names)?;
    for w in journal.take_warnings() {
        warn(&control, w);
    }

    control.set_nonblocking(true)?;
    // Until the collector says hello, stay answerable to the supervisor (a shutdown during
    // start-up must not hang on a collector that never comes).
    let mut stats = Stats::default();
    loop {
        let mut fds = [
            PollFd::new(control.as_fd(), PollFlags::POLLIN),
            PollFd::new(collector.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, 1000u16) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
        let collector_ready = fds[1].revents().is_some_and(|r| !r.is_empty());
        loop {
            match control.recv::<SupervisorToChild>() {
                Err(e) if e.is_would_block() => break,
                Ok(SupervisorToChild::StatsRequest) => {
                    let _ = control.send(&ChildToSupervisor::Stats(
                        stats.role_stats(&journal, &names),
                    ));
                }
                Ok(SupervisorToChild::Shutdown)
                | Err(ProtoError::Closed)
                | Err(ProtoError::Io(_)) => {
                    journal.close();
                    return Ok(());
                }
                Ok(SupervisorToChild::Init(_)) | Err(_) => stats.malformed_frames += 1,
            }
        }
        if collector_ready {
            break;
        }
    }
    collector.handshake(Role::Shipper, Some(Role::Collector))?;
    collector.send(&ShipperToCollector::Resume {
        last_kmsg_seq: journal.last_kmsg_seq(),
    })?;
    collector.set_nonblocking(true)?;

    let start_ns = now_ns();
    let metrics_every = config_ms(init.collector.interval_ms.max(1000));
    // Entries of the scrape endpoint live two collection intervals (and a second) unrefreshed.
    let mut prom = match attachments.prometheus {
        Some(l) => Some(
            Endpoint::new(
                l,
                &defaults,
                metrics_every * 2 + Duration::from_secs(1),
                Instant::now(),
            )
            .map_err(|e| ShipperError::Io(e.into()))?,
        ),
        None => None,
    };
    let mut next_self_metrics = Instant::now() + metrics_every;
    let mut collector_open = true;
    let mut nospace_streak = false;
    let mut kmsg_order = journal::KmsgOrder::default();

    loop {
        let now = Instant::now();
        if now >= next_self_metrics {
            next_self_metrics = now + metrics_every;
            let rec = stats.self_metrics(&journal, &names, start_ns, now_ns());
            if let Err(e) = journal.append(std::slice::from_ref(&rec)) {
                stats.append_errors += 1;
                if let Some(more) = stats.append_warn.allow(now) {
                    warn(
                        &control,
                        format!(
                            "shipper: own metrics not journaled: {e} (append_errors {}{more})",
                            stats.append_errors
                        ),
                    );
                }
            } else if let Some(p) = prom.as_mut() {
                p.ingest(rec, now);
            }
        }
        let mut wake = Some(next_self_metrics);
        let mut merge = |t: Option<Instant>| {
            if let Some(t) = t {
                wake = Some(wake.map_or(t, |w| w.min(t)));
            }
        };
        if let Some(j) = json.as_mut() {
            merge(j.step(&mut journal, &mut stats, now));
        }
        if let Some(o) = otlp.as_mut() {
            merge(o.step(&mut journal, &mut stats, now));
        }
        merge(journal.tick(now));
        if let Some(p) = prom.as_mut() {
            merge(p.step(now, &mut stats));
        }
        for w in journal.take_warnings() {
            warn(&control, w);
        }

        let timeout_ms = wake
            .map(|w| w.saturating_duration_since(Instant::now()).as_millis())
            .unwrap_or(1000)
            .min(1000) as u16;
        let otlp_fd: Option<BorrowedFd<'_>> = otlp.as_ref().and_then(|o| o.poll_fd());
        let mut fds = vec![PollFd::new(control.as_fd(), PollFlags::POLLIN)];
        if collector_open {
            fds.push(PollFd::new(collector.as_fd(), PollFlags::POLLIN));
        }
        if let Some(fd) = otlp_fd {
            fds.push(PollFd::new(fd, PollFlags::POLLIN));
        }
        let prom_at = fds.len();
        if let Some(p) = prom.as_ref() {
            p.poll_fds(&mut fds);
        }
        match poll(&mut fds, timeout_ms) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
        let prom_ready: Vec<PollFlags> = fds[prom_at..]
            .iter()
            .map(|f| f.revents().unwrap_or(PollFlags::empty()))
            .collect();
        drop(fds);
        if let Some(p) = prom.as_mut() {
            p.handle(&prom_ready, Instant::now(), &mut stats);
        }

        // Supervisor.
        loop {
            match control.recv::<SupervisorToChild>() {
                Err(e) if e.is_would_block() => break,
                Ok(SupervisorToChild::StatsRequest) => {
                    let _ = control.send(&ChildToSupervisor::Stats(
                        stats.role_stats(&journal, &names),
                    ));
                }
                Ok(SupervisorToChild::Shutdown)
                | Err(ProtoError::Closed)
                | Err(ProtoError::Io(_)) => {
                    if let Some(j) = json.as_mut() {
                        j.step(&mut journal, &mut stats, Instant::now());
                        j.flush();
                    }
                    journal.close();
                    return Ok(());
                }
                Ok(SupervisorToChild::Init(_)) | Err(_) => stats.malformed_frames += 1,
            }
        }

        // Collector: journal every batch available (one fsync for all of them: group
        // commit), then acknowledge them.
        let mut handled = 0;
        // (batch sequence, records, earliest kmsg sequence)
        let mut staged: Vec<(u64, u64, Option<u64>)> = Vec::new();
        let mut replies: Vec<ShipperToCollector> = Vec::new();
        while collector_open && handled < MAX_BATCHES_PER_TURN {
            handled += 1;
            // Every record is decoded (validated) and journaled as the very bytes received.
            let received = collector
                .recv_bytes()
                .and_then(vigil_ipc_proto::batch::split_batch);
            match received {
                Err(e) if e.is_would_block() => break,
                Ok(batch) => {
                    let n = batch.records.len() as u64;
                    let kmsg = journal::max_kmsg_seq(batch.records.iter().map(|(r, _)| r));
                    let kmsg_min = journal::min_kmsg_seq(batch.records.iter().map(|(r, _)| r));
                    let events = batch.records.iter().any(|(r, _)| !convert::is_metrics(r));
                    let payloads: Vec<&[u8]> = batch.records.iter().map(|(_, b)| *b).collect();
                    let appended = if kmsg_order.admits(kmsg_min, Instant::now()) {
                        journal.append_encoded_deferred(&payloads, kmsg)
                    } else {
                        Err(JournalError::NoSpace {
                            path: "earlier kernel lines still to be journaled".into(),
                        })
                    };
                    match appended {
                        Ok(()) => {
                            staged.push((batch.seq, n, kmsg_min));
                            if events && let Some(o) = otlp.as_mut() {
                                o.urge();
                            }
                            if let Some(p) = prom.as_mut() {
                                let now = Instant::now();
                                for (r, _) in batch.records {
                                    p.ingest(r, now);
                                }
                            }
                        }
                        Err(e) => {
                            if matches!(e, JournalError::NoSpace { .. }) {
                                kmsg_order.refused(kmsg_min, Instant::now());
                            }
                            let (nack, w) =
                                refuse(&mut stats, batch.seq, n, &e, &mut nospace_streak);
                            replies.push(nack);
                            if let Some(w) = w {
                                warn(&control, w);
                            }
                        }
                    }
                }
                Err(e @ (ProtoError::Closed | ProtoError::Io(_))) => {
                    tracing::warn!("shipper: collector channel gone ({e}); still exporting");
                    collector_open = false;
                }
                Err(e) => {
                    stats.malformed_frames += 1;
                    tracing::warn!("shipper: malformed frame from the collector: {e}");
                }
            }
        }
        if !staged.is_empty() {
            match journal.commit() {
                Ok(()) => {
                    if std::mem::take(&mut nospace_streak) {
                        warn(
                            &control,
                            "shipper: journal has space again; accepting batches".into(),
                        );
                    }
                    for (seq, n, kmsg_min) in staged {
                        kmsg_order.journaled(kmsg_min);
                        stats.records_accepted += n;
                        stats.batches_accepted += 1;
                        replies.push(ShipperToCollector::Ack { seq });
                    }
                }
                Err(e) => {
                    for (seq, n, kmsg_min) in staged {
                        if matches!(e, JournalError::NoSpace { .. }) {
                            kmsg_order.refused(kmsg_min, Instant::now());
                        }
                        let (nack, w) = refuse(&mut stats, seq, n, &e, &mut nospace_streak);
                        replies.push(nack);
                        if let Some(w) = w {
                            warn(&control, w);
                        }
                    }
                }
            }
        }
        for r in replies {
            match collector.send(&r) {
                Ok(()) => {}
                Err(ProtoError::Closed) => collector_open = false,
                Err(e) => tracing::warn!("shipper: reply to collector: {e}"),
            }
        }
    }
}

/// A batch that is not (durably) in the journal: counted, warned about (once per full-disk
/// streak), answered with `Nack`.
fn refuse(
    stats: &mut Stats,
    seq: u64,
    n: u64,
    e: &JournalError,
    nospace_streak: &mut bool,
) -> (ShipperToCollector, Option<String>) {
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
    (
        ShipperToCollector::Nack {
            seq,
            reason: format!("not journaled: {e}"),
        },
        w,
    )
}
