//! The collector role: start-up (the user's kernel rules checked, the privhelper's start-up
//! requests, the shipper's handshake) and then its part of the one child loop: a collection
//! cycle when due, the event sources, batches to the shipper and its acknowledgements.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use nix::poll::PollFlags;
use vigil_ipc_proto::runtime::{self, Flow, Worker};
use vigil_ipc_proto::{
    Channel, ChildToSupervisor, Feature, InitConfig, ProtoError, Record, Role, RoleStats,
    ShipperToCollector,
};

use crate::event_loop::Sources;
use crate::privclient::PrivClient;
use crate::{CollectorError, batch, cycle, ebpf, kmsg, util};

/// The /dev/kmsg descriptor from the privhelper, made non-blocking.
pub fn open_kmsg(privhelper: &mut PrivClient) -> Result<OwnedFd, String> {
    let fd = privhelper.open_kmsg().map_err(|e| e.to_string())?;
    let fl = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETFL).map_err(|e| e.to_string())?;
    let fl = nix::fcntl::OFlag::from_bits_truncate(fl) | nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFL(fl)).map_err(|e| e.to_string())?;
    Ok(fd)
}

/// A feature the supervisor turned on does not work here: `vigil status` shows it off, with
/// the reason.
fn feature_off(control: &Channel, feature: Feature, reason: String) {
    let _ = control.send(&ChildToSupervisor::FeatureOff { feature, reason });
}

/// The task iterator's link from the privhelper, tried once (a dump that decodes) before the
/// process scanner takes it. `Ok` too when the feature is off: nothing to do then.
fn start_task_iter(
    privhelper: &mut PrivClient,
    cycle: &mut cycle::Cycle,
    init: &InitConfig,
) -> Result<(), String> {
    if !(init.collector.processes
        && init.collector.process_iter
        && init.feature_enabled(Feature::ProcessIter))
    {
        return Ok(());
    }
    let link = privhelper.task_iter_link().map_err(|e| e.to_string())?;
    cycle.procs.set_task_iter(link);
    let first = match cycle.procs.dump_task_iter() {
        Some(Ok(r)) if r.is_empty() => Err("the first dump shows no process".into()),
        Some(Ok(records)) => Ok(records.len()),
        Some(Err(e)) => Err(format!("first dump: {e}")),
        None => Err("no iterator".into()),
    };
    let n = first.inspect_err(|_| cycle.procs.clear_task_iter())?;
    tracing::info!(processes = n, "task iterator ready");
    Ok(())
}

/// The kernel's count of TCP state changes (`ebpf_tcp_changes`), mapped for the connection
/// counts. `Ok` too when the feature is off: the TCP hash is walked every cycle then.
fn start_tcp_changes(
    privhelper: &mut PrivClient,
    cycle: &mut cycle::Cycle,
    init: &InitConfig,
) -> Result<(), String> {
    let c = &init.collector;
    if !(c.host
        && c.connections
        && c.ebpf_tcp_changes
        && init.feature_enabled(Feature::EbpfTcpChanges))
    {
        return Ok(());
    }
    let changes = ebpf::request_tcp_changes(privhelper).map_err(|e| e.to_string())?;
    tracing::info!(
        changes = changes.count(),
        "TCP state changes counted in the kernel"
    );
    cycle.tcp_changes = Some(changes);
    Ok(())
}

/// Collect every interval and send batches to the shipper until the supervisor says shut down.
pub fn run(
    init: &InitConfig,
    mut control: Channel,
    privhelper: Channel,
    shipper: Channel,
) -> Result<(), CollectorError> {
    let mut collector = Collector::start(init, &control, privhelper, shipper)?;
    runtime::run(&mut control, &mut collector)?;
    Ok(())
}

/// The running collector: what the loop turns.
struct Collector {
    privhelper: PrivClient,
    shipper: Channel,
    cycle: cycle::Cycle,
    sources: Sources,
    batcher: batch::Batcher,
    /// Records of the sources not batched yet.
    pending: Vec<Record>,
    interval: Duration,
    next_cycle: Instant,
    start_ns: u64,
    /// The sources' descriptors of this turn (after the shipper's, in [`Worker::watch`]).
    source_fds: Vec<RawFd>,
    /// The batcher's dropped records + refused batches when last looked at.
    lost: u64,
    /// The first cycles (every process new) are start-up too: their code is released after.
    warm_up: vigil_ipc_proto::heap::WarmUp,
}

impl Collector {
    /// Everything before the loop: the configuration checked, the privhelper's start-up
    /// requests (kmsg, eBPF) and its end, the shipper's handshake and resume point.
    fn start(
        init: &InitConfig,
        control: &Channel,
        privhelper: Channel,
        mut shipper: Channel,
    ) -> Result<Collector, CollectorError> {
        // What the user wrote, checked before anything starts: a mistake stops the agent with
        // one error (the supervisor does not restart a ConfigError), it is not a crash loop.
        let kmsg_config = crate::kmsg_config(init).map_err(|msg| {
            let _ = control.send(&ChildToSupervisor::ConfigError(msg.clone()));
            CollectorError::Config(msg)
        })?;
        // The privhelper answers at once; never wait on it forever.
        let mut privhelper = PrivClient::connect(privhelper, Duration::from_secs(5))?;
        shipper.handshake(Role::Collector, Some(Role::Shipper))?;
        let last_kmsg_seq = match shipper.recv::<ShipperToCollector>()? {
            ShipperToCollector::Resume { last_kmsg_seq } => last_kmsg_seq,
            _ => return Err(CollectorError::NoResume),
        };

        let mut cycle = cycle::Cycle::new(init).map_err(ProtoError::Io)?;
        let mut sources = Sources::default();
        let mut pending = Vec::new();
        if init.collector.kmsg && init.feature_enabled(Feature::KmsgEvents) {
            let (opts, rules) = kmsg_config;
            let boot_ns = cycle.host.boot_time_ns;
            let source = kmsg::KmsgParser::with_rules(
                crate::host_resource(init),
                boot_ns,
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
                    feature_off(control, Feature::KmsgEvents, e);
                }
            }
        }
        if let Err(reason) = start_task_iter(&mut privhelper, &mut cycle, init) {
            tracing::warn!("task iterator unavailable, processes are read from /proc: {reason}");
            feature_off(control, Feature::ProcessIter, reason);
        }
        if let Err(reason) = start_tcp_changes(&mut privhelper, &mut cycle, init) {
            tracing::warn!(
                "TCP state changes unavailable, the TCP hash is walked every cycle: {reason}"
            );
            feature_off(control, Feature::EbpfTcpChanges, reason);
        }
        let mut ebpf = ebpf::start(&mut privhelper, init);
        for (feature, reason) in ebpf.take_failures() {
            feature_off(control, feature, reason);
        }
        if !ebpf.is_empty() {
            sources.add(Box::new(ebpf));
        }
        // Start-up requests are done: the privhelper keeps only what the cycles need.
        match privhelper.ready() {
            Ok(caps) => tracing::info!(?caps, "privhelper start-up over"),
            Err(e) => tracing::warn!("privhelper did not end its start-up: {e}"),
        }
        vigil_ipc_proto::heap::release_startup_code();

        shipper.set_nonblocking(true).map_err(ProtoError::Io)?;
        let mut source_fds = Vec::new();
        sources.watch(&mut source_fds);
        let c = &init.collector;
        Ok(Collector {
            privhelper,
            shipper,
            cycle,
            sources,
            batcher: batch::Batcher::new(c.max_batch_records, c.max_unacked_batches),
            pending,
            interval: Duration::from_millis(c.interval_ms.max(10)),
            next_cycle: Instant::now(),
            start_ns: util::now_unix_nano(),
            source_fds,
            lost: 0,
            warm_up: vigil_ipc_proto::heap::WarmUp::after(vigil_ipc_proto::heap::WARM_UP_INTERVALS),
        })
    }

    /// One collection cycle and the sources' metrics of it.
    fn collect(&mut self, now: Instant) {
        // Fresh metrics supersede the ones the shipper has not taken yet.
        self.batcher.supersede();
        // Process records that never reached the journal (superseded, refused): send every
        // process in full, not as unchanged since a record the shipper never had.
        let lost = self.batcher.stats.dropped_records + self.batcher.stats.nacked;
        if lost != self.lost {
            self.lost = lost;
            self.cycle.procs.forget_sent();
        }
        self.cycle.collect(&mut self.privhelper, &mut self.batcher);
        let st = util::Stamp {
            start: self.start_ns,
            now: util::now_unix_nano(),
        };
        self.sources.cycle(st, &mut self.pending);
        if self.warm_up.ending() {
            self.sources.end_warm_up();
        }
        self.warm_up.tick();
        self.next_cycle += self.interval;
        if self.next_cycle <= now {
            self.next_cycle = now + self.interval;
        }
    }

    /// The shipper's channel failed: this collector exits, and the group restarts. Say what is
    /// lost with it: event batches the shipper never acknowledged (one it refused because the
    /// journal's disk was full is held here until space comes back).
    fn shipper_gone(&self) {
        let n = self.batcher.unacknowledged_event_records();
        if n > 0 {
            tracing::warn!(
                "{n} event records not acknowledged by the shipper are dropped with this \
                 collector: kernel lines among them are read again from /dev/kmsg, exec and \
                 exit events are lost"
            );
        }
    }

    /// Every acknowledgement the shipper sent.
    fn read_answers(&mut self) -> Result<(), CollectorError> {
        loop {
            match self.shipper.recv::<ShipperToCollector>() {
                Ok(m) => self.batcher.on_answer(&m),
                Err(e) if e.is_would_block() => return Ok(()),
                Err(ProtoError::Closed) => {
                    self.shipper_gone();
                    return Err(ProtoError::Closed.into());
                }
                Err(e) => {
                    self.cycle.stats.peer_errors += 1;
                    tracing::warn!("shipper channel: {e}");
                    return Ok(());
                }
            }
        }
    }
}

impl Worker for Collector {
    type Error = CollectorError;

    fn due(&mut self, now: Instant) -> Result<Option<Instant>, CollectorError> {
        if now >= self.next_cycle {
            self.collect(now);
        }
        self.sources.tick(now, &mut self.pending);
        self.cycle.stats.records += self.pending.len() as u64;
        for r in self.pending.drain(..) {
            self.batcher.push(&r);
        }
        self.batcher.seal();
        if let Err(e) = self.batcher.flush(&self.shipper) {
            self.shipper_gone();
            return Err(e.into());
        }
        // The next cycle, a source's timer, or a held batch's retry, whichever comes first.
        let at = [self.sources.deadline(), self.batcher.deadline()]
            .into_iter()
            .flatten()
            .fold(self.next_cycle, Instant::min);
        Ok(Some(at))
    }

    fn watch(&self, out: &mut Vec<(RawFd, PollFlags)>) {
        // Writable matters only while a sealed batch waits for room in the window.
        let send = self.batcher.wants_to_send(Instant::now());
        let flags = if send {
            PollFlags::POLLIN | PollFlags::POLLOUT
        } else {
            PollFlags::POLLIN
        };
        out.push((self.shipper.as_raw_fd(), flags));
        out.extend(self.source_fds.iter().map(|&fd| (fd, PollFlags::POLLIN)));
    }

    fn ready(&mut self, events: &[PollFlags]) -> Result<Flow, CollectorError> {
        if events.first().is_some_and(|e| !e.is_empty()) {
            self.read_answers()?;
        }
        let ready: Vec<bool> = events.iter().skip(1).map(|e| !e.is_empty()).collect();
        self.sources.ready(&ready, &mut self.pending);
        // The next turn's descriptors (a source may have gained or lost some).
        self.source_fds.clear();
        self.sources.watch(&mut self.source_fds);
        Ok(Flow::Continue)
    }

    fn stats(&mut self) -> RoleStats {
        let mut counters = self.cycle.counters();
        counters.extend(crate::batch_counters(&self.batcher));
        counters.extend(self.sources.counters());
        RoleStats { counters }
    }

    fn shutdown(&mut self) {
        let _ = self.batcher.flush(&self.shipper);
    }

    fn bad_control(&mut self, what: &str) {
        self.cycle.stats.peer_errors += 1;
        tracing::warn!("control channel: {what}");
    }
}
