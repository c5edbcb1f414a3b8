//! The collector: unprivileged producer of records.
//!
//! [`run`] does the handshakes, asks the privhelper for the kmsg descriptor (and the eBPF ring
//! buffers), then loops: every `collector.interval_ms` one collection [`cycle::Cycle`] (host,
//! processes, containers, disks, network), in between it polls the control channel, the
//! shipper's acknowledgements and every registered [`event_loop::Source`].

pub mod batch;
pub mod cgroups;
pub mod cycle;
pub mod disks;
pub mod diskstats;
pub mod ebpf;
pub mod event_loop;
pub mod host;
pub mod k8s;
pub mod kmsg;
pub mod mountinfo;
pub mod netdev;
pub mod netlink;
pub mod pressure;
pub mod privclient;
pub mod procs;
pub mod sink;
pub mod sockets;
pub mod users;
pub mod util;

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};
use privclient::PrivClient;
use vigil_ipc_proto::{
    Channel, ChildToSupervisor, Feature, InitConfig, KeyValue, ProtoError, Record, Role, RoleStats,
    ShipperToCollector, SupervisorToChild,
};

use crate::event_loop::Sources;

#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    #[error("ipc: {0}")]
    Proto(#[from] vigil_ipc_proto::ProtoError),
    #[error("shipper's first message was not Resume")]
    NoResume,
    #[error("poll: {0}")]
    Poll(nix::errno::Errno),
    #[error("privhelper: {0}")]
    Privhelper(#[from] privclient::PrivClientError),
    /// A configuration that cannot work, already told to the supervisor.
    #[error("{0}")]
    Config(String),
}

/// The /dev/kmsg descriptor from the privhelper, made non-blocking.
pub fn open_kmsg(privhelper: &mut PrivClient) -> Result<OwnedFd, String> {
    let fd = privhelper.open_kmsg().map_err(|e| e.to_string())?;
    let fl = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETFL).map_err(|e| e.to_string())?;
    let fl = nix::fcntl::OFlag::from_bits_truncate(fl) | nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFL(fl)).map_err(|e| e.to_string())?;
    Ok(fd)
}

/// Collect every interval and send batches to the shipper until the supervisor says shut down.
pub fn run(
    init: &InitConfig,
    mut control: Channel,
    privhelper: Channel,
    mut shipper: Channel,
) -> Result<(), CollectorError> {
    // What the user wrote, checked before anything starts: a mistake stops the agent with
    // one error (the supervisor does not restart a ConfigError), it is not a crash loop.
    let kmsg_config = match kmsg_config(init) {
        Ok(k) => k,
        Err(msg) => {
            let _ = control.send(&ChildToSupervisor::ConfigError(msg.clone()));
            return Err(CollectorError::Config(msg));
        }
    };
    // The privhelper answers at once; never wait on it forever.
    let mut privhelper = PrivClient::connect(privhelper, Duration::from_secs(5))?;
    shipper.handshake(Role::Collector, Some(Role::Shipper))?;
    let last_kmsg_seq = match shipper.recv::<ShipperToCollector>()? {
        ShipperToCollector::Resume { last_kmsg_seq } => last_kmsg_seq,
        _ => return Err(CollectorError::NoResume),
    };

    let mut cycle = cycle::Cycle::new(init).map_err(ProtoError::Io)?;
    let host_resource = vec![KeyValue::str("host.name", init.hostname.as_str())];
    let mut sources = Sources::default();
    let mut pending: Vec<Record> = Vec::new();
    if init.collector.kmsg && init.feature_enabled(Feature::KmsgEvents) {
        let (opts, rules) = kmsg_config;
        let source = kmsg::KmsgParser::with_rules(
            host_resource.clone(),
            cycle.host.boot_time_ns,
            last_kmsg_seq,
            rules,
            opts,
        )
        .map_err(|e| e.to_string())
        .and_then(|p| open_kmsg(&mut privhelper).map(|fd| kmsg::KmsgSource::new(fd, p)));
        match source {
            Ok(mut s) => {
                s.drain(&mut pending);
                sources.add(Box::new(s));
            }
            Err(e) => {
                tracing::warn!("kmsg events unavailable: {e}");
                let _ = control.send(&ChildToSupervisor::Warning(format!(
                    "collector: kernel events off: {e}"
                )));
            }
        }
    }
    let mut ebpf = ebpf::start(&mut privhelper, init);
    // Start-up requests are done: the privhelper keeps only what the cycles need.
    match privhelper.ready() {
        Ok(caps) => tracing::info!(?caps, "privhelper start-up over"),
        Err(e) => tracing::warn!("privhelper did not end its start-up: {e}"),
    }

    control.set_nonblocking(true).map_err(ProtoError::Io)?;
    shipper.set_nonblocking(true).map_err(ProtoError::Io)?;
    let mut batcher = batch::Batcher::new(
        init.collector.max_batch_records,
        init.collector.max_unacked_batches,
    );
    let interval = Duration::from_millis(init.collector.interval_ms.max(10));
    let mut next_cycle = Instant::now();
    let start_ns = util::now_unix_nano();

    loop {
        let now = Instant::now();
        if now >= next_cycle {
            // Fresh metrics supersede the ones the shipper has not taken yet.
            batcher.supersede();
            cycle.collect(&mut privhelper, &mut batcher);
            let st = util::Stamp {
                start: start_ns,
                now: util::now_unix_nano(),
            };
            for s in &mut sources.list {
                s.on_cycle(st, &mut pending);
            }
            next_cycle += interval;
            if next_cycle <= now {
                next_cycle = now + interval;
            }
        }
        for s in &mut sources.list {
            s.on_tick(now, &mut pending);
        }
        if !ebpf.is_empty() && now >= ebpf.next_deadline() {
            for e in ebpf.service(now, &mut pending, &host_resource) {
                tracing::warn!("eBPF: {e}");
            }
        }
        cycle.stats.records += pending.len() as u64;
        for r in pending.drain(..) {
            batcher.push(&r);
        }
        batcher.seal();
        batcher.flush(&shipper)?;

        let mut deadline = next_cycle;
        if let Some(d) = sources.deadline() {
            deadline = deadline.min(d);
        }
        if !ebpf.is_empty() {
            deadline = deadline.min(ebpf.next_deadline());
        }
        if let Some(d) = batcher.deadline() {
            deadline = deadline.min(d);
        }
        let wait = deadline.saturating_duration_since(Instant::now());
        let timeout = PollTimeout::try_from(wait.as_millis().min(60_000) as i32 + 1)
            .unwrap_or(PollTimeout::MAX);

        let ebpf_fds = ebpf.fds();
        let (ctl_ready, shp_ready, src_ready, bpf_ready) = {
            // SAFETY: every descriptor is owned by a value alive for this whole block.
            let b = |fd: i32| unsafe { BorrowedFd::borrow_raw(fd) };
            let mut fds = vec![
                PollFd::new(control.as_fd_ref(), PollFlags::POLLIN),
                PollFd::new(
                    b(shipper.as_raw_fd()),
                    if batcher.wants_to_send(Instant::now()) {
                        PollFlags::POLLIN | PollFlags::POLLOUT
                    } else {
                        PollFlags::POLLIN
                    },
                ),
            ];
            for s in &sources.list {
                fds.push(PollFd::new(b(s.raw_fd()), PollFlags::POLLIN));
            }
            for fd in &ebpf_fds {
                fds.push(PollFd::new(b(*fd), PollFlags::POLLIN));
            }
            match nix::poll::poll(&mut fds, timeout) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(CollectorError::Poll(e)),
            }
            let r = |p: &PollFd| p.revents().is_some_and(|r| !r.is_empty());
            let n = sources.list.len();
            (
                r(&fds[0]),
                r(&fds[1]),
                fds[2..2 + n].iter().map(r).collect::<Vec<_>>(),
                fds[2 + n..].iter().any(r),
            )
        };
        if ctl_ready {
            loop {
                match control.recv::<SupervisorToChild>() {
                    Ok(SupervisorToChild::StatsRequest) => {
                        let mut counters = cycle.counters();
                        counters.extend(batch_counters(&batcher));
                        for s in &sources.list {
                            counters.extend(s.counters());
                        }
                        counters.extend(ebpf.counters());
                        let _ = control.send(&ChildToSupervisor::Stats(RoleStats { counters }));
                    }
                    Ok(SupervisorToChild::Shutdown) | Err(ProtoError::Closed) => {
                        let _ = batcher.flush(&shipper);
                        return Ok(());
                    }
                    Ok(SupervisorToChild::Init(_)) => {}
                    Err(e) if e.is_would_block() => break,
                    Err(e) => {
                        cycle.stats.peer_errors += 1;
                        tracing::warn!("control channel: {e}");
                        break;
                    }
                }
            }
        }
        if shp_ready {
            loop {
                match shipper.recv::<ShipperToCollector>() {
                    Ok(m) => batcher.on_answer(&m),
                    Err(e) if e.is_would_block() => break,
                    Err(ProtoError::Closed) => return Err(ProtoError::Closed.into()),
                    Err(e) => {
                        cycle.stats.peer_errors += 1;
                        tracing::warn!("shipper channel: {e}");
                        break;
                    }
                }
            }
        }
        for (s, ready) in sources.list.iter_mut().zip(src_ready) {
            if ready {
                s.on_readable(&mut pending);
            }
        }
        if bpf_ready {
            for e in ebpf.service(Instant::now(), &mut pending, &host_resource) {
                tracing::warn!("eBPF: {e}");
            }
        }
    }
}

/// The kernel-line settings and rules as configured: the `kmsg_*` keys and the built-in and
/// user rule files (which the supervisor read, unparsed, at start).
fn kmsg_config(init: &InitConfig) -> Result<(kmsg::KmsgOptions, kmsg::RuleSet), String> {
    let c = &init.collector;
    let opts = kmsg::KmsgOptions::from_config(c).map_err(|e| e.to_string())?;
    let files: Vec<(String, String)> = c
        .kmsg_rule_files
        .iter()
        .map(|f| (f.path.clone(), f.text.clone()))
        .collect();
    let rules = kmsg::RuleSet::load(c.kmsg_builtin_rules, &files).map_err(|e| e.to_string())?;
    Ok((opts, rules))
}

fn batch_counters(b: &batch::Batcher) -> Vec<(String, u64)> {
    let s = b.stats;
    vec![
        ("batches_sent".into(), s.batches_sent),
        ("records_sent".into(), s.records_sent),
        ("batches_acked".into(), s.acked),
        ("batches_nacked".into(), s.nacked),
        ("batches_requeued".into(), s.requeued),
        ("dropped_batches".into(), s.dropped_batches),
        ("dropped_records".into(), s.dropped_records),
        ("oversized_records".into(), s.oversized_records),
        ("unacked_batches".into(), b.unacked() as u64),
    ]
}

trait AsFdRef {
    fn as_fd_ref(&self) -> BorrowedFd<'_>;
}

impl AsFdRef for Channel {
    fn as_fd_ref(&self) -> BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(self)
    }
}
