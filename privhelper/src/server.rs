//! The request table and the event loop.
//!
//! | request                 | feature          | answer                          |
//! |-------------------------|------------------|---------------------------------|
//! | `OpenKmsg`              | `kmsg_events`    | `Fd{Kmsg}` + /dev/kmsg          |
//! | `ProcFdStats{pids}`     | `process_sockets`, or `process_fds` before Linux 6.2 | `FdStats` |
//! | `ListNetns`             | `netns_metrics_setns` | `Netns`                    |
//! | `NetlinkRouteInNetns`   | `netns_metrics_setns` | `Fd{NetlinkRoute}` + socket |
//! | `BpfAttach{program}`    | `ebpf_*`         | `BpfRingbuf` + ring buffer map  |
//! | `ProcIoStats{pids}`     | `process_io`     | `IoStats`                       |
//! | `ProcExePaths{pids}`    | `process_io`     | `ExePaths`                      |
//!
//! Anything else, any malformed frame, any frame carrying descriptors, is answered with
//! `Error{BadRequest}` and counted; after [`MAX_CONSECUTIVE_BAD`] bad frames in a row the
//! collector channel is closed (the supervisor restarts the pair). The control channel
//! (supervisor) is served all along: `StatsRequest` → `Stats`, `Shutdown` → return.

use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::TimeVal;
use vigil_ipc_proto::{
    Channel, ChildToSupervisor, FdKind, InitConfig, PrivError, PrivErrorCode, PrivRequest,
    PrivResponse, ProtoError, Role, RoleStats, SupervisorToChild, frame,
};

use crate::error::{PrivhelperError, RequestError};
use crate::netns::{HomeNetns, NetnsError};
use crate::{fdstats, kmsg, netns, procio, validate};

/// Feature names (the supervisor's feature table, `policies/src/features.rs`).
pub const FEATURE_KMSG: &str = "kmsg_events";
pub const FEATURE_PROCESS_FDS: &str = "process_fds";
pub const FEATURE_PROCESS_SOCKETS: &str = "process_sockets";
pub const FEATURE_NETNS: &str = "netns_metrics_setns";
pub const FEATURE_PROCESS_IO: &str = "process_io";

/// Bad frames in a row after which the collector channel is closed.
pub const MAX_CONSECUTIVE_BAD: u32 = 16;
/// How long one answer may wait for room in the collector's receive queue before the
/// collector is considered stuck and its channel closed.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// Safety net against a spurious readiness report: a receive never blocks longer than this.
const RECV_TIMEOUT: Duration = Duration::from_secs(1);

/// The kinds of requests, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    OpenKmsg,
    ProcFdStats,
    ListNetns,
    NetlinkRoute,
    BpfAttach,
    ProcIoStats,
    ProcExePaths,
}

impl Kind {
    const ALL: [Kind; 7] = [
        Kind::OpenKmsg,
        Kind::ProcFdStats,
        Kind::ListNetns,
        Kind::NetlinkRoute,
        Kind::BpfAttach,
        Kind::ProcIoStats,
        Kind::ProcExePaths,
    ];

    fn of(req: &PrivRequest) -> Kind {
        match req {
            PrivRequest::OpenKmsg => Kind::OpenKmsg,
            PrivRequest::ProcFdStats { .. } => Kind::ProcFdStats,
            PrivRequest::ListNetns => Kind::ListNetns,
            PrivRequest::NetlinkRouteInNetns { .. } => Kind::NetlinkRoute,
            PrivRequest::BpfAttach { .. } => Kind::BpfAttach,
            PrivRequest::ProcIoStats { .. } => Kind::ProcIoStats,
            PrivRequest::ProcExePaths { .. } => Kind::ProcExePaths,
        }
    }

    fn counter(self) -> &'static str {
        match self {
            Kind::OpenKmsg => "served_open_kmsg",
            Kind::ProcFdStats => "served_proc_fd_stats",
            Kind::ListNetns => "served_list_netns",
            Kind::NetlinkRoute => "served_netlink_route_in_netns",
            Kind::BpfAttach => "served_bpf_attach",
            Kind::ProcIoStats => "served_proc_io_stats",
            Kind::ProcExePaths => "served_proc_exe_paths",
        }
    }
}

/// Counters reported to the supervisor.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    served: [u64; 7],
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
    fn served_mut(&mut self, k: Kind) -> &mut u64 {
        &mut self.served[Kind::ALL.iter().position(|x| *x == k).unwrap_or(0)]
    }

    pub fn to_role_stats(&self) -> RoleStats {
        let mut counters: Vec<(String, u64)> = Kind::ALL
            .iter()
            .zip(self.served)
            .map(|(k, n)| (k.counter().to_string(), n))
            .collect();
        counters.push(("served_total".into(), self.served.iter().sum()));
        counters.push(("refused".into(), self.refused));
        counters.push(("errors".into(), self.errors));
        counters.push(("bad_frames".into(), self.bad_frames));
        counters.push(("collector_closed".into(), self.collector_closed));
        RoleStats { counters }
    }
}

/// Give the heap's free pages back to the kernel. Loading a BPF object parses the kernel's
/// BTF (megabytes, freed at once): without this the privhelper would keep ~20 MB resident
/// for the rest of its life.
fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: glibc's malloc_trim takes no pointer and only returns free memory to the system.
    unsafe {
        libc::malloc_trim(0);
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
    pub stats: Stats,
}

impl Server {
    /// Read `kernel.pid_max` and open the own network namespace (to come back to).
    pub fn new(init: InitConfig) -> Result<Self, PrivhelperError> {
        Ok(Server {
            pid_max: validate::read_pid_max(),
            fd_count_stat: vigil_policies::features::fd_count_by_stat(),
            home: HomeNetns::open()?,
            init,
            stats: Stats::default(),
        })
    }

    /// `ProcFdStats` is ours for socket counts, and for fd counts only where the kernel does
    /// not give them by stat (there the collector counts them itself).
    fn require_fd_stats(&self) -> Result<bool, RequestError> {
        let sockets = self.init.feature_enabled(FEATURE_PROCESS_SOCKETS);
        if sockets || (!self.fd_count_stat && self.init.feature_enabled(FEATURE_PROCESS_FDS)) {
            Ok(sockets)
        } else {
            Err(RequestError::FeatureDisabled(FEATURE_PROCESS_SOCKETS))
        }
    }

    fn require(&self, feature: &'static str) -> Result<(), RequestError> {
        if self.init.feature_enabled(feature) {
            Ok(())
        } else {
            Err(RequestError::FeatureDisabled(feature))
        }
    }

    /// Serve one decoded request. `Err` only for a fatal condition (the process must exit).
    pub fn handle(&mut self, req: PrivRequest) -> Result<Answer, PrivhelperError> {
        let kind = Kind::of(&req);
        let result: Result<Answer, RequestError> = match req {
            PrivRequest::OpenKmsg => self.require(FEATURE_KMSG).and_then(|()| {
                let fd = kmsg::open_kmsg()?;
                Ok((PrivResponse::Fd { kind: FdKind::Kmsg }, vec![fd]))
            }),
            PrivRequest::ProcFdStats { pids } => self.require_fd_stats().and_then(|sockets| {
                let pids = validate::check_pids(&pids, self.pid_max)?;
                Ok((
                    PrivResponse::FdStats(fdstats::fd_stats(
                        &pids,
                        sockets,
                        std::time::Instant::now() + fdstats::FD_STATS_BUDGET,
                    )),
                    Vec::new(),
                ))
            }),
            PrivRequest::ProcIoStats { pids } => self.require(FEATURE_PROCESS_IO).and_then(|()| {
                let max = vigil_ipc_proto::MAX_IO_STAT_PIDS;
                let pids = validate::check_pids_at_most(&pids, max, self.pid_max)?;
                let deadline = std::time::Instant::now() + fdstats::FD_STATS_BUDGET;
                Ok((
                    PrivResponse::IoStats(procio::io_stats(&pids, deadline)),
                    Vec::new(),
                ))
            }),
            PrivRequest::ProcExePaths { pids } => self.require(FEATURE_PROCESS_IO).and_then(|()| {
                let max = vigil_ipc_proto::MAX_EXE_PIDS;
                let pids = validate::check_pids_at_most(&pids, max, self.pid_max)?;
                Ok((PrivResponse::ExePaths(procio::exe_paths(&pids)), Vec::new()))
            }),
            PrivRequest::ListNetns => self.require(FEATURE_NETNS).map(|()| {
                (
                    PrivResponse::Netns(netns::list(self.home.inode())),
                    Vec::new(),
                )
            }),
            PrivRequest::NetlinkRouteInNetns { target } => match self.require(FEATURE_NETNS) {
                Err(e) => Err(e),
                Ok(()) => match self.home.socket_in(&target, self.pid_max) {
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
                },
            },
            PrivRequest::BpfAttach { program } => {
                match self.require(crate::bpf::feature_of(program)) {
                    Err(e) => Err(e),
                    Ok(()) => {
                        // The eBPF engineer's module answers completely (and logs its refusals).
                        let (resp, fd) = crate::bpf::respond(program, &self.init);
                        release_free_memory();
                        match &resp {
                            PrivResponse::Error(PrivError { code, .. }) => {
                                if matches!(
                                    code,
                                    PrivErrorCode::BadRequest | PrivErrorCode::FeatureDisabled
                                ) {
                                    self.stats.refused += 1;
                                } else {
                                    self.stats.errors += 1;
                                }
                            }
                            _ => *self.stats.served_mut(kind) += 1,
                        }
                        return Ok((resp, fd.into_iter().collect()));
                    }
                }
            }
        };
        Ok(match result {
            Ok(answer) => {
                *self.stats.served_mut(kind) += 1;
                answer
            }
            Err(e) => {
                if e.is_refusal() {
                    self.stats.refused += 1;
                    tracing::warn!(request = ?kind, error = %e, "request refused");
                } else {
                    self.stats.errors += 1;
                    tracing::info!(request = ?kind, error = %e, "request failed");
                }
                (PrivResponse::Error(e.to_priv_error()), Vec::new())
            }
        })
    }

    /// Serve both channels until the supervisor says `Shutdown` (→ `Ok`), the control
    /// channel closes, or a fatal error.
    pub fn serve(
        &mut self,
        mut control: Channel,
        collector: Channel,
    ) -> Result<(), PrivhelperError> {
        let mut peer = Peer::start(collector);
        if peer.is_none() {
            self.stats.collector_closed += 1;
        }
        loop {
            let (ctl_ready, peer_ready) = {
                let mut fds = vec![PollFd::new(control.as_fd(), PollFlags::POLLIN)];
                if let Some(p) = &peer {
                    fds.push(PollFd::new(p.ch.as_fd(), PollFlags::POLLIN));
                }
                match poll(&mut fds, PollTimeout::NONE) {
                    Ok(_) => {}
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(e) => return Err(PrivhelperError::Poll(e)),
                }
                let ready = |f: &PollFd<'_>| {
                    f.revents().is_some_and(|r| {
                        r.intersects(
                            PollFlags::POLLIN
                                | PollFlags::POLLHUP
                                | PollFlags::POLLERR
                                | PollFlags::POLLNVAL,
                        )
                    })
                };
                (ready(&fds[0]), fds.get(1).is_some_and(ready))
            };

            if ctl_ready && self.serve_control(&mut control)? == Flow::Stop {
                return Ok(());
            }
            if peer_ready && let Some(p) = peer.as_mut() {
                match p.serve_one(self)? {
                    Flow::Continue => {}
                    Flow::Stop => {
                        peer = None;
                        self.stats.collector_closed += 1;
                        let _ = control.send(&ChildToSupervisor::Warning(
                            "privhelper: collector channel closed".into(),
                        ));
                    }
                }
            }
        }
    }

    fn serve_control(&mut self, control: &mut Channel) -> Result<Flow, PrivhelperError> {
        match control.recv::<SupervisorToChild>() {
            Ok(SupervisorToChild::StatsRequest) => {
                control.send(&ChildToSupervisor::Stats(self.stats.to_role_stats()))?;
                Ok(Flow::Continue)
            }
            Ok(SupervisorToChild::Shutdown) => {
                tracing::info!("shutdown requested");
                Ok(Flow::Stop)
            }
            Ok(SupervisorToChild::Init(_)) => {
                tracing::warn!("ignoring a second Init on the control channel");
                Ok(Flow::Continue)
            }
            Err(ProtoError::Closed) => Err(PrivhelperError::ControlClosed),
            Err(e) if e.is_would_block() => Ok(Flow::Continue),
            Err(ProtoError::Io(e)) => Err(PrivhelperError::Proto(ProtoError::Io(e))),
            Err(e) => {
                tracing::warn!(error = %e, "malformed frame on the control channel, ignored");
                Ok(Flow::Continue)
            }
        }
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
