//! The collector's one client of the privhelper (OpenSSH's `monitor_wrap.c` is the model): one
//! function per request, each checking that the answer is the kind it expects and carries the
//! descriptors it should. Nothing else in the collector builds a request.

use std::os::fd::OwnedFd;
use std::time::Duration;

use vigil_ipc_proto::{
    BpfProgram, Channel, FdKind, NetnsInfo, NetnsTarget, PrivErrorCode, PrivRequest, PrivResponse,
    ProcExePath, ProcFdStat, ProcIoStat, ProtoError, Role,
};

#[derive(Debug, thiserror::Error)]
pub enum PrivClientError {
    #[error("ipc: {0}")]
    Proto(#[from] ProtoError),
    #[error("privhelper refused {request}: {code:?}: {message}")]
    Refused {
        request: &'static str,
        code: PrivErrorCode,
        message: String,
    },
    #[error("unexpected answer from the privhelper to {0}")]
    Unexpected(&'static str),
}

type Result<T> = std::result::Result<T, PrivClientError>;

pub struct PrivClient {
    ch: Channel,
}

impl PrivClient {
    /// Greet the privhelper on this channel. It answers at once: a read never waits longer
    /// than `timeout`.
    pub fn connect(mut ch: Channel, timeout: Duration) -> Result<PrivClient> {
        ch.handshake(Role::Collector, Some(Role::Privhelper))?;
        ch.set_read_timeout(Some(timeout)).map_err(ProtoError::Io)?;
        Ok(PrivClient::greeted(ch))
    }

    /// A channel whose hellos were exchanged already.
    pub fn greeted(ch: Channel) -> PrivClient {
        PrivClient { ch }
    }

    /// One request, its answer and exactly `fds` descriptors; an error answer is `Refused`.
    fn call(
        &mut self,
        name: &'static str,
        req: &PrivRequest,
        fds: usize,
    ) -> Result<(PrivResponse, Vec<OwnedFd>)> {
        self.ch.send(req)?;
        let (resp, got) = self.ch.recv_with_fds::<PrivResponse>(fds)?;
        match resp {
            PrivResponse::Error(e) => Err(PrivClientError::Refused {
                request: name,
                code: e.code,
                message: e.message,
            }),
            r if got.len() == fds => Ok((r, got)),
            _ => Err(PrivClientError::Unexpected(name)),
        }
    }

    /// /dev/kmsg, opened by the privhelper (start-up only).
    pub fn open_kmsg(&mut self) -> Result<OwnedFd> {
        match self.call("OpenKmsg", &PrivRequest::OpenKmsg, 1)? {
            (PrivResponse::Fd { kind: FdKind::Kmsg }, mut fds) => Ok(fds.remove(0)),
            _ => Err(PrivClientError::Unexpected("OpenKmsg")),
        }
    }

    /// Attach `program` (start-up only): the answer (`BpfRingbuf` with the ring buffer map,
    /// `BpfFlowMap` with the flow table and totals, `BpfCounters` with the counters) and
    /// exactly the descriptors it names.
    pub fn bpf_attach(&mut self, program: BpfProgram) -> Result<(PrivResponse, Vec<OwnedFd>)> {
        self.ch.send(&PrivRequest::BpfAttach { program })?;
        let (resp, fds) = self.ch.recv_with_fds::<PrivResponse>(2)?;
        match resp {
            PrivResponse::Error(e) => Err(PrivClientError::Refused {
                request: "BpfAttach",
                code: e.code,
                message: e.message,
            }),
            PrivResponse::BpfRingbuf { program: p, .. } if p == program && fds.len() == 1 => {
                Ok((resp, fds))
            }
            PrivResponse::BpfFlowMap { program: p, .. } if p == program && fds.len() == 2 => {
                Ok((resp, fds))
            }
            PrivResponse::BpfCounters { program: p, .. } if p == program && fds.len() == 1 => {
                Ok((resp, fds))
            }
            _ => Err(PrivClientError::Unexpected("BpfAttach")),
        }
    }

    /// The task iterator's link (start-up only): BPF_ITER_CREATE on it gives a dump.
    pub fn task_iter_link(&mut self) -> Result<OwnedFd> {
        match self.call("TaskIterLink", &PrivRequest::TaskIterLink, 1)? {
            (
                PrivResponse::Fd {
                    kind: FdKind::BpfIterLink,
                },
                mut fds,
            ) => Ok(fds.remove(0)),
            _ => Err(PrivClientError::Unexpected("TaskIterLink")),
        }
    }

    /// Start-up is over: the privhelper refuses start-up requests from now on and keeps only
    /// its steady-state capabilities; returns those (numbers).
    pub fn ready(&mut self) -> Result<Vec<u8>> {
        match self.call("Ready", &PrivRequest::Ready, 0)? {
            (PrivResponse::Ready { caps }, _) => Ok(caps),
            _ => Err(PrivClientError::Unexpected("Ready")),
        }
    }

    pub fn proc_fd_stats(&mut self, pids: Vec<u32>) -> Result<Vec<ProcFdStat>> {
        match self.call("ProcFdStats", &PrivRequest::ProcFdStats { pids }, 0)? {
            (PrivResponse::FdStats(v), _) => Ok(v),
            _ => Err(PrivClientError::Unexpected("ProcFdStats")),
        }
    }

    pub fn proc_io_stats(&mut self, pids: Vec<u32>) -> Result<Vec<ProcIoStat>> {
        match self.call("ProcIoStats", &PrivRequest::ProcIoStats { pids }, 0)? {
            (PrivResponse::IoStats(v), _) => Ok(v),
            _ => Err(PrivClientError::Unexpected("ProcIoStats")),
        }
    }

    pub fn proc_exe_paths(&mut self, pids: Vec<u32>) -> Result<Vec<ProcExePath>> {
        match self.call("ProcExePaths", &PrivRequest::ProcExePaths { pids }, 0)? {
            (PrivResponse::ExePaths(v), _) => Ok(v),
            _ => Err(PrivClientError::Unexpected("ProcExePaths")),
        }
    }

    pub fn list_netns(&mut self) -> Result<Vec<NetnsInfo>> {
        match self.call("ListNetns", &PrivRequest::ListNetns, 0)? {
            (PrivResponse::Netns(v), _) => Ok(v),
            _ => Err(PrivClientError::Unexpected("ListNetns")),
        }
    }

    /// A NETLINK_ROUTE socket made inside that network namespace.
    pub fn netlink_route_in_netns(&mut self, target: NetnsTarget) -> Result<OwnedFd> {
        let req = PrivRequest::NetlinkRouteInNetns { target };
        match self.call("NetlinkRouteInNetns", &req, 1)? {
            (
                PrivResponse::Fd {
                    kind: FdKind::NetlinkRoute,
                },
                mut fds,
            ) => Ok(fds.remove(0)),
            _ => Err(PrivClientError::Unexpected("NetlinkRouteInNetns")),
        }
    }
}
