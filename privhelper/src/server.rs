//! The requests' handlers and the privhelper's part of the one child loop
//! (`vigil_ipc_proto::runtime`). Which request is served when is data: the table `vigil_ipc_proto::privtable::PRIV_REQUESTS` (kind → features, phase, once-only); this file
//! only says what each kind does ([`Server::handle`]) and enforces the table before it runs:
//!
//! | request                 | feature          | phase    | answer                          |
//! |-------------------------|------------------|----------|---------------------------------|
//! | `OpenKmsg`              | `kmsg_events`    | start-up, once | `Fd{Kmsg}` + /dev/kmsg    |
//! | `BpfAttach{program}`    | `ebpf_*`         | start-up | `BpfRingbuf` + ring buffer map; flows: `BpfFlowMap` + flows and totals maps; TCP changes: `BpfCounters` + the frozen counters map |
//! | `Ready`                 | —                | start-up, once | `Ready{caps}`: capabilities dropped to the steady-state set |
//! | `ProcFdStats{pids}`     | `process_sockets`, or `process_fds` before Linux 6.2 | always | `FdStats` |
//! | `ListNetns`             | `netns_metrics_setns` | always | `Netns`                    |
//! | `NetlinkRouteInNetns`   | `netns_metrics_setns` | always | `Fd{NetlinkRoute}` + socket |
//! | `ProcIoStats{pids}`     | `process_io`     | always   | `IoStats`                       |
//! | `ProcExePaths{pids}`    | `process_io`     | always   | `ExePaths`                      |
//!
//! Anything else, any malformed frame, any frame carrying descriptors, a start-up request
//! after `Ready`, a once-only request again, is answered with an error and counted; after
//! [`MAX_CONSECUTIVE_BAD`] bad frames in a row the collector channel is closed (the supervisor
//! restarts the group). The control channel (supervisor) is served all along:
//! `StatsRequest` → `Stats`, `Shutdown` → return.

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use nix::poll::PollFlags;
use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::TimeVal;
use vigil_ipc_proto::privtable::{self, Phase, PrivRequestKind, RequestRule};
use vigil_ipc_proto::runtime::{self, Exit, Worker};
use vigil_ipc_proto::{
    Channel, FdKind, Feature, InitConfig, PrivError, PrivErrorCode, PrivRequest, PrivResponse,
    ProtoError, Role, RoleStats, frame,
};

use crate::error::{PrivhelperError, RequestError};
use crate::netns::{HomeNetns, NetnsError};
use crate::{fdstats, kmsg, netns, procio, validate};

/// Bad frames in a row after which the collector channel is closed.
pub const MAX_CONSECUTIVE_BAD: u32 = 16;
/// How long one answer may wait for room in the collector's receive queue before the
/// collector is considered stuck and its channel closed.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// Safety net against a spurious readiness report: a receive never blocks longer than this.
const RECV_TIMEOUT: Duration = Duration::from_secs(1);

/// Counters reported to the supervisor.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    /// Per row of the request table.
    served: [u64; privtable::PRIV_REQUESTS.len()],
    /// Start-up requests after start-up, once-only requests again.
    pub out_of_phase: u64,
    /// 0 during start-up, 1 once the collector said it is ready.
    pub steady: u64,
    /// Requests refused: validation failed or feature disabled.
    pub refused: u64,
    /// Valid requests whose operation failed (not found, permission, other).
    pub errors: u64,
    /// Frames that could not be decoded (or carried descriptors, or were oversized).
    pub bad_frames: u64,
    /// Times the collector channel was closed (peer gone, bad handshake, too many bad frames).
    pub collector_closed: u64,
}

impl Stats {
    fn served_mut(&mut self, k: PrivRequestKind) -> &mut u64 {
        let i = privtable::PRIV_REQUESTS
            .iter()
            .position(|r| r.kind == k)
            .unwrap_or(0);
        &mut self.served[i]
    }

    pub fn to_role_stats(&self) -> RoleStats {
        let mut counters: Vec<(String, u64)> = privtable::PRIV_REQUESTS
            .iter()
            .zip(self.served)
            .map(|(r, n)| (r.counter.to_string(), n))
            .collect();
        counters.push(("out_of_phase".into(), self.out_of_phase));
        counters.push(("steady_state".into(), self.steady));
        counters.push(("served_total".into(), self.served.iter().sum()));
        counters.push(("refused".into(), self.refused));
        counters.push(("errors".into(), self.errors));
        counters.push(("bad_frames".into(), self.bad_frames));
        counters.push(("collector_closed".into(), self.collector_closed));
        RoleStats { counters }
    }
}

/// Whether the table lets a request of `rule` be served now: not a start-up request once
/// `steady`, not a once-only request already in `done`, and one of its features enabled.
/// Pure, so the fuzz target runs exactly what [`Server::handle`] runs.
pub fn admit(
    rule: &RequestRule,
    steady: bool,
    done: &[PrivRequestKind],
    enabled: impl Fn(Feature) -> bool,
) -> Result<(), RequestError> {
    if rule.phase == Phase::StartUp && steady {
        return Err(RequestError::OutOfPhase(rule.kind, "start-up is over"));
    }
    if rule.once && done.contains(&rule.kind) {
        return Err(RequestError::OutOfPhase(rule.kind, "served once already"));
    }
    match rule.features.first() {
        Some(first) if !rule.features.iter().any(|f| enabled(*f)) => {
            Err(RequestError::FeatureDisabled(*first))
        }
        _ => Ok(()),
    }
}

/// An answer: the response and the descriptors to attach to it.
pub type Answer = (PrivResponse, Vec<OwnedFd>);

/// The privhelper's state: configuration, facts read once at start, counters.
#[derive(Debug)]
pub struct Server {
    init: InitConfig,
    pid_max: u32,
    /// This kernel gives fd counts by stat: the collector counts them, not us.
    fd_count_stat: bool,
    home: HomeNetns,
    /// The collector said `Ready`: start-up requests are refused.
    steady: bool,
    /// Once-only requests already served.
    done: Vec<PrivRequestKind>,
    pub stats: Stats,
}

impl Server {
    /// Read `kernel.pid_max` and open the own network namespace (to come back to).
    pub fn new(init: InitConfig) -> Result<Self, PrivhelperError> {
        Ok(Server {
            pid_max: validate::read_pid_max(),
            fd_count_stat: init.fd_count_by_stat,
            home: HomeNetns::open()?,
            init,
            steady: false,
            done: Vec::new(),
            stats: Stats::default(),
        })
    }

    /// `ProcFdStats` is ours for socket counts, and for fd counts only where the kernel does
    /// not give them by stat (there the collector counts them itself).
    fn require_fd_stats(&self) -> Result<bool, RequestError> {
        let sockets = self.init.feature_enabled(Feature::ProcessSockets);
        if sockets || (!self.fd_count_stat && self.init.feature_enabled(Feature::ProcessFds)) {
            Ok(sockets)
        } else {
            Err(RequestError::FeatureDisabled(Feature::ProcessSockets))
        }
    }

    fn require(&self, feature: Feature) -> Result<(), RequestError> {
        if self.init.feature_enabled(feature) {
            Ok(())
        } else {
            Err(RequestError::FeatureDisabled(feature))
        }
    }

    /// Whether the table lets this request be served now.
    fn admit(&self, rule: &RequestRule) -> Result<(), RequestError> {
        admit(rule, self.steady, &self.done, |f| {
            self.init.feature_enabled(f)
        })
    }

    /// Serve one decoded request. `Err` only for a fatal condition (the process must exit).
    pub fn handle(&mut self, req: PrivRequest) -> Result<Answer, PrivhelperError> {
        let rule = privtable::rule(req.kind());
        let result = match self.admit(rule) {
            Ok(()) => self.dispatch(req)?,
            Err(e) => Err(e),
        };
        Ok(match result {
            Ok(answer) => {
                if rule.once {
                    self.done.push(rule.kind);
                }
                *self.stats.served_mut(rule.kind) += 1;
                answer
            }
            Err(e) => {
                if matches!(e, RequestError::OutOfPhase(..)) {
                    self.stats.out_of_phase += 1;
                }
                if e.is_refusal() {
                    self.stats.refused += 1;
                    tracing::warn!(request = ?rule.kind, error = %e, "request refused");
                } else {
                    self.stats.errors += 1;
                    tracing::info!(request = ?rule.kind, error = %e, "request failed");
                }
                (PrivResponse::Error(e.to_priv_error()), Vec::new())
            }
        })
    }

    /// What each kind of request does (admitted by the table already). The outer `Err` is
    /// fatal for the process.
    fn dispatch(
        &mut self,
        req: PrivRequest,
    ) -> Result<Result<Answer, RequestError>, PrivhelperError> {
        Ok(match req {
            PrivRequest::OpenKmsg => {
                kmsg::open_kmsg().map(|fd| (PrivResponse::Fd { kind: FdKind::Kmsg }, vec![fd]))
            }
            PrivRequest::ProcFdStats { pids } => self.require_fd_stats().and_then(|sockets| {
                let pids = validate::check_pids(&pids, self.pid_max)?;
                let deadline = std::time::Instant::now() + fdstats::FD_STATS_BUDGET;
                let stats = fdstats::fd_stats(&pids, sockets, deadline);
                Ok((PrivResponse::FdStats(stats), Vec::new()))
            }),
            PrivRequest::ProcIoStats { pids } => {
                let max = vigil_ipc_proto::MAX_IO_STAT_PIDS;
                validate::check_pids_at_most(&pids, max, self.pid_max).map(|pids| {
                    let deadline = std::time::Instant::now() + fdstats::FD_STATS_BUDGET;
                    let stats = procio::io_stats(&pids, deadline);
                    (PrivResponse::IoStats(stats), Vec::new())
                })
            }
            PrivRequest::ProcExePaths { pids } => {
                let max = vigil_ipc_proto::MAX_EXE_PIDS;
                validate::check_pids_at_most(&pids, max, self.pid_max)
                    .map(|pids| (PrivResponse::ExePaths(procio::exe_paths(&pids)), Vec::new()))
            }
            PrivRequest::ListNetns => Ok((
                PrivResponse::Netns(netns::list(self.home.inode())),
                Vec::new(),
            )),
            PrivRequest::NetlinkRouteInNetns { target } => {
                match self.home.socket_in(&target, self.pid_max) {
                    Ok(fd) => Ok((
                        PrivResponse::Fd {
                            kind: FdKind::NetlinkRoute,
                        },
                        vec![fd],
                    )),
                    Err(NetnsError::Request(e)) => Err(e),
                    Err(NetnsError::Restore(errno)) => {
                        tracing::error!(%errno, "cannot return to the own network namespace");
                        return Err(PrivhelperError::NetnsRestore(errno));
                    }
                }
            }
            PrivRequest::BpfAttach { program } => self.attach(program),
            PrivRequest::Ready => self.end_startup(),
            PrivRequest::TaskIterLink => {
                let (resp, fd) = crate::bpf::taskiter::respond();
                // Loading a BPF object parses the kernel's BTF (megabytes, freed at once):
                // without a trim the privhelper would keep ~20 MB resident for life.
                vigil_ipc_proto::heap::release_free_memory();
                match resp {
                    PrivResponse::Error(PrivError { message, .. }) => Err(RequestError::Failed {
                        what: "attach the task iterator".into(),
                        source: std::io::Error::other(message),
                    }),
                    r => Ok((r, fd.into_iter().collect())),
                }
            }
        })
    }

    fn attach(&mut self, program: vigil_ipc_proto::BpfProgram) -> Result<Answer, RequestError> {
        self.require(program.feature())?;
        // The BPF module answers completely (and logs its refusals).
        let (resp, fds) = crate::bpf::respond(program, &self.init);
        // The BTF parse's memory, as for the task iterator.
        vigil_ipc_proto::heap::release_free_memory();
        match &resp {
            PrivResponse::Error(PrivError { code, message }) => Err(match code {
                PrivErrorCode::BadRequest | PrivErrorCode::FeatureDisabled => {
                    RequestError::BadRequest(message.clone())
                }
                _ => RequestError::Failed {
                    what: format!("attach {program:?}"),
                    source: std::io::Error::other(message.clone()),
                },
            }),
            _ => Ok((resp, fds)),
        }
    }

    /// The collector's start-up is over: from now on only the requests served always, and
    /// only the capabilities they need (`steady_caps` of the plan; none by default).
    fn end_startup(&mut self) -> Result<Answer, RequestError> {
        crate::caps::drop_to(&self.init.sandbox.steady_caps).map_err(|e| RequestError::Failed {
            what: "dropping the start-up capabilities".into(),
            source: e,
        })?;
        self.steady = true;
        self.stats.steady = 1;
        let caps = crate::caps::effective();
        vigil_ipc_proto::heap::release_startup_code();
        tracing::info!(
            ?caps,
            "start-up over: start-up requests refused from now on"
        );
        Ok((PrivResponse::Ready { caps }, Vec::new()))
    }

    /// Serve both channels in the one child loop until the supervisor says `Shutdown` (→ `Ok`),
    /// the control channel closes (→ [`PrivhelperError::ControlClosed`]), or a fatal error.
    pub fn serve(
        &mut self,
        mut control: Channel,
        collector: Channel,
    ) -> Result<(), PrivhelperError> {
        let peer = Peer::start(collector);
        if peer.is_none() {
            self.stats.collector_closed += 1;
        }
        let mut serving = Serving {
            server: self,
            peer,
            warnings: Vec::new(),
        };
        match runtime::run(&mut control, &mut serving)? {
            Exit::Orphaned => Err(PrivhelperError::ControlClosed),
            Exit::Shutdown | Exit::Done => {
                tracing::info!("shutdown requested");
                Ok(())
            }
        }
    }
}

/// The privhelper's part of the child loop: the collector's requests, one per readiness.
struct Serving<'a> {
    server: &'a mut Server,
    /// `None` once the collector channel closed (the supervisor restarts the group).
    peer: Option<Peer>,
    warnings: Vec<String>,
}

impl Worker for Serving<'_> {
    type Error = PrivhelperError;

    fn due(&mut self, _now: Instant) -> Result<Option<Instant>, PrivhelperError> {
        // Nothing happens by time: every request is the collector's.
        Ok(None)
    }

    fn watch(&self, out: &mut Vec<(RawFd, PollFlags)>) {
        if let Some(p) = &self.peer {
            out.push((p.ch.as_raw_fd(), PollFlags::POLLIN));
        }
    }

    fn ready(&mut self, events: &[PollFlags]) -> Result<runtime::Flow, PrivhelperError> {
        let readable = events.first().is_some_and(|e| !e.is_empty());
        if readable
            && let Some(p) = self.peer.as_mut()
            && p.serve_one(self.server)? == Flow::Stop
        {
            self.peer = None;
            self.server.stats.collector_closed += 1;
            self.warnings
                .push("privhelper: collector channel closed".into());
        }
        Ok(runtime::Flow::Continue)
    }

    fn stats(&mut self) -> RoleStats {
        self.server.stats.to_role_stats()
    }

    fn bad_control(&mut self, what: &str) {
        tracing::warn!(error = %what, "control channel: frame ignored");
    }

    fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

/// The collector end: handshake state and the count of bad frames in a row.
struct Peer {
    ch: Channel,
    greeted: bool,
    consecutive_bad: u32,
}

impl Peer {
    /// Bound the socket timeouts and send our hello (the collector's is read when it comes).
    fn start(ch: Channel) -> Option<Peer> {
        let tv = |d: Duration| TimeVal::new(d.as_secs() as libc::time_t, 0);
        let _ = setsockopt(&ch, sockopt::SendTimeout, &tv(SEND_TIMEOUT));
        let _ = setsockopt(&ch, sockopt::ReceiveTimeout, &tv(RECV_TIMEOUT));
        match ch.send(&vigil_ipc_proto::Hello::new(Role::Privhelper)) {
            Ok(()) => Some(Peer {
                ch,
                greeted: false,
                consecutive_bad: 0,
            }),
            Err(e) => {
                tracing::warn!(error = %e, "cannot greet the collector");
                None
            }
        }
    }

    /// Read one datagram and answer it. `Stop`: close the channel.
    fn serve_one(&mut self, server: &mut Server) -> Result<Flow, PrivhelperError> {
        if !self.greeted {
            return Ok(match self.ch.expect_hello(Some(Role::Collector)) {
                Ok(_) => {
                    self.greeted = true;
                    Flow::Continue
                }
                Err(e) if e.is_would_block() => Flow::Continue,
                Err(e) => {
                    tracing::warn!(error = %e, "collector handshake failed, closing the channel");
                    server.stats.bad_frames += 1;
                    Flow::Stop
                }
            });
        }
        let (resp, fds) = match self.ch.recv_with_fds::<PrivRequest>(0) {
            Ok((req, _none)) => {
                self.consecutive_bad = 0;
                server.handle(req)?
            }
            Err(ProtoError::Closed) => {
                tracing::info!("collector closed its channel");
                return Ok(Flow::Stop);
            }
            Err(e) if e.is_would_block() => return Ok(Flow::Continue),
            Err(ProtoError::Io(e)) => {
                tracing::warn!(error = %e, "collector channel failed, closing it");
                return Ok(Flow::Stop);
            }
            Err(e) => {
                server.stats.bad_frames += 1;
                self.consecutive_bad += 1;
                tracing::warn!(error = %e, consecutive = self.consecutive_bad, "bad frame refused");
                let refusal = PrivResponse::Error(PrivError {
                    code: PrivErrorCode::BadRequest,
                    message: format!("malformed request: {e}"),
                });
                if self.ch.send(&refusal).is_err() {
                    return Ok(Flow::Stop);
                }
                if self.consecutive_bad >= MAX_CONSECUTIVE_BAD {
                    tracing::warn!("too many bad frames in a row, closing the collector channel");
                    return Ok(Flow::Stop);
                }
                return Ok(Flow::Continue);
            }
        };
        Ok(self.answer(server, resp, fds))
    }

    fn answer(&mut self, server: &mut Server, resp: PrivResponse, fds: Vec<OwnedFd>) -> Flow {
        let borrowed: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
        let sent = match frame::encoded_len(&resp) {
            Ok(n) if n <= frame::MAX_FRAME => self.ch.send_with_fds(&resp, &borrowed),
            _ => {
                server.stats.errors += 1;
                let e = RequestError::TooLarge("answer exceeds MAX_FRAME".into());
                self.ch.send(&PrivResponse::Error(e.to_priv_error()))
            }
        };
        match sent {
            Ok(()) => Flow::Continue,
            Err(e) => {
                tracing::warn!(error = %e, "cannot answer the collector, closing the channel");
                Flow::Stop
            }
        }
    }
}
