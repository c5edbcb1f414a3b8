//! The status socket, in the supervisor (root, or the agent user under the systemd unit):
//! accepts a connection, checks the peer's uid, answers one `Status` request with the report
//! built from /proc and the children's own reports. Any misbehaviour ends that connection only.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::socket::{
    self, AddressFamily, Backlog, SockFlag, SockType, UnixAddr, accept4, bind, listen,
};
use tracing::warn;
use vigil_ipc_proto::procstatus::{ProcStatusFields, to_parent_id};
use vigil_ipc_proto::{
    Channel, ClientRequest, ClientResponse, FeatureState, ProcessStatus, Role, RoleStats,
    StatusReport,
};

use super::{StatusContext, socket_path};
use crate::error::{Error, Result};
use crate::supervise::ChildState;

pub struct StatusServer {
    pub listener: OwnedFd,
    pub path: PathBuf,
}

impl StatusServer {
    /// Bind `<runtime_dir>/vigil.sock`, mode 0600.
    pub fn bind(runtime_dir: &Path) -> Result<StatusServer> {
        let path = socket_path(runtime_dir);
        let _ = std::fs::remove_file(&path);
        let fd = socket::socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            // Non-blocking: a connection that vanished between poll and accept must not
            // stall the supervision loop.
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )
        .map_err(Error::sys("status socket"))?;
        let addr = UnixAddr::new(&path).map_err(Error::sys("status socket path"))?;
        // Created with no permissions for anyone but the owner, before it can be reached.
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
        let r = bind(fd.as_raw_fd(), &addr);
        nix::sys::stat::umask(old);
        r.map_err(Error::sys("bind status socket"))?;
        listen(&fd, Backlog::new(16).unwrap_or(Backlog::MAXCONN))
            .map_err(Error::sys("listen status socket"))?;
        Ok(StatusServer { listener: fd, path })
    }

    /// Answer one client. Any misbehaviour ends that connection only.
    pub fn accept_one(&mut self, children: &[ChildState], ctx: &mut StatusContext) {
        let fd = match accept4(self.listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
            Ok(fd) => fd,
            Err(nix::errno::Errno::EAGAIN) => return,
            Err(e) => {
                warn!(error = %e, "status accept");
                return;
            }
        };
        // SAFETY: accept4 returned a fresh descriptor that nothing else owns.
        let owned = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let mut ch = Channel::from_fd(owned);
        if let Err(e) = self.serve(&mut ch, children, ctx) {
            ctx.refused += 1;
            warn!(error = %e, "status client refused");
            let _ = ch.send(&ClientResponse::Error(e));
        }
    }

    fn serve(
        &self,
        ch: &mut Channel,
        children: &[ChildState],
        ctx: &StatusContext,
    ) -> std::result::Result<(), String> {
        let cred = ch.peer_credentials().map_err(|e| e.to_string())?;
        if !peer_allowed(cred.uid(), ctx.allowed_uid) {
            return Err(format!("uid {} may not read the status", cred.uid()));
        }
        ch.set_read_timeout(Some(Duration::from_secs(2)))
            .map_err(|e| e.to_string())?;
        ch.handshake(Role::Supervisor, Some(Role::StatusClient))
            .map_err(|e| e.to_string())?;
        match ch.recv::<ClientRequest>().map_err(|e| e.to_string())? {
            ClientRequest::Status => {
                let report = build_report(children, ctx);
                ch.send(&ClientResponse::Status(report))
                    .map_err(|e| e.to_string())
            }
        }
    }
}

/// Whether a status client with this uid (SO_PEERCRED, as our user namespace sees it) may read
/// the report: root, or the uid the supervisor runs as.
pub fn peer_allowed(peer_uid: u32, allowed_uid: u32) -> bool {
    peer_uid == 0 || peer_uid == allowed_uid
}

/// What /proc says of a process, ids translated to the host's (rootless, the children are
/// uid 0 in the agent's namespace but the invoking user on the host).
pub fn read_proc_status(pid: u32) -> Option<ProcessStatus> {
    let k = ProcStatusFields::of(pid)?;
    let uid_map = std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
    let gid_map = std::fs::read_to_string("/proc/self/gid_map").unwrap_or_default();
    let mut p = not_running();
    p.pid = pid;
    p.kernel = ProcStatusFields {
        uids: k.uids.map(|u| to_parent_id(u, &uid_map)),
        gids: k.gids.map(|g| to_parent_id(g, &gid_map)),
        ..k
    };
    Some(p)
}

fn not_running() -> ProcessStatus {
    ProcessStatus {
        role: Role::Supervisor,
        pid: 0,
        kernel: ProcStatusFields::default(),
        landlock: String::new(),
        seccomp_policy: String::new(),
        restarts: 0,
        last_exit: None,
    }
}

pub fn build_report(children: &[ChildState], ctx: &StatusContext) -> StatusReport {
    let mut processes = Vec::new();
    if let Some(mut me) = read_proc_status(std::process::id()) {
        me.landlock = ctx.landlock.clone();
        processes.push(me);
    }
    for c in children {
        // A child waiting for its restart is listed with pid 0 and its last exit.
        let pid = c.pid.map_or(0, |p| p.as_raw() as u32);
        let mut p = read_proc_status(pid).unwrap_or_else(not_running);
        p.role = c.role;
        p.landlock = c
            .ready
            .as_ref()
            .map(|r| r.landlock.clone())
            .unwrap_or_default();
        p.seccomp_policy = c
            .ready
            .as_ref()
            .map(|r| r.seccomp.clone())
            .unwrap_or_default();
        p.restarts = c.restarts;
        p.last_exit = c.last_exit.clone();
        processes.push(p);
    }
    StatusReport {
        version: env!("CARGO_PKG_VERSION").into(),
        mount_mode: ctx.mount_mode.clone(),
        virtual_root: ctx.virtual_root,
        non_root_mode: ctx.non_root_mode,
        user: ctx.user.clone(),
        processes,
        features: features_now(ctx, children),
        stats: std::iter::once((
            Role::Supervisor,
            RoleStats {
                counters: vec![
                    (
                        "bad_control_frames".into(),
                        children.iter().map(|c| c.bad_frames).sum(),
                    ),
                    ("refused_status_clients".into(), ctx.refused),
                ],
            },
        ))
        .chain(children.iter().map(|c| (c.role, c.stats.clone())))
        .collect(),
    }
}

/// The features as evaluated at start, with those a child found not working turned off.
fn features_now(ctx: &StatusContext, children: &[ChildState]) -> Vec<FeatureState> {
    let mut features = ctx.features.clone();
    for (feature, reason) in children.iter().flat_map(|c| &c.features_off) {
        if let Some(f) = features
            .iter_mut()
            .find(|f| f.name == *feature && f.enabled)
        {
            f.enabled = false;
            f.reason = format!("did not work: {reason}");
        }
    }
    features
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_the_supervisors_own_uid_may_ask() {
        // Supervisor started as root.
        assert!(peer_allowed(0, 0));
        assert!(!peer_allowed(999, 0));
        // Supervisor started as the agent user (systemd User=vigil): root and vigil.
        assert!(peer_allowed(0, 999));
        assert!(peer_allowed(999, 999));
        assert!(!peer_allowed(1000, 999));
        // The overflow uid (an unmapped peer seen from a user namespace) is nobody special.
        assert!(!peer_allowed(65534, 0));
    }

    #[test]
    fn a_feature_a_child_found_not_working_is_shown_off_with_its_reason() {
        use vigil_ipc_proto::Feature;
        let on = |name| FeatureState {
            name,
            enabled: true,
            reason: String::new(),
        };
        let ctx = StatusContext {
            mount_mode: "full".into(),
            virtual_root: true,
            non_root_mode: true,
            user: "vigil".into(),
            features: vec![
                on(Feature::EbpfExec),
                on(Feature::EbpfFlowsSocket),
                FeatureState {
                    name: Feature::EbpfFlowsTc,
                    enabled: false,
                    reason: "not configured".into(),
                },
            ],
            landlock: "off".into(),
            allowed_uid: 0,
            refused: 0,
        };
        let mut collector = ChildState::new(Role::Collector);
        collector.features_off = vec![
            (Feature::EbpfExec, "privhelper refused ExecExit".into()),
            (Feature::EbpfFlowsTc, "privhelper refused FlowsTc".into()),
        ];
        let report = build_report(&[ChildState::new(Role::Privhelper), collector], &ctx);
        let state = |f| report.features.iter().find(|s| s.name == f).unwrap();
        assert!(!state(Feature::EbpfExec).enabled);
        assert_eq!(
            state(Feature::EbpfExec).reason,
            "did not work: privhelper refused ExecExit"
        );
        assert!(state(Feature::EbpfFlowsSocket).enabled);
        // Off already: its reason stays the evaluation's.
        assert_eq!(state(Feature::EbpfFlowsTc).reason, "not configured");
    }

    #[test]
    fn reads_our_own_status() {
        let me = read_proc_status(std::process::id()).expect("our own /proc status");
        assert_eq!(me.uids[0], nix::unistd::getuid().as_raw());
        assert_eq!(me.gids[0], nix::unistd::getgid().as_raw());
        assert!(read_proc_status(u32::MAX).is_none());
    }
}
