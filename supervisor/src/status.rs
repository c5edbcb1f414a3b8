//! `vigil status`: the supervisor's root-only socket in the runtime directory, and the client
//! that prints the live process tree.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::socket::{
    self, AddressFamily, Backlog, SockFlag, SockType, UnixAddr, accept4, bind, listen,
};
use tracing::warn;
use vigil_ipc_proto::{
    Channel, ClientRequest, ClientResponse, FeatureState, ProcessStatus, Role, RoleStats,
    StatusReport,
};

use crate::error::{Error, Result};
use crate::supervise::ChildState;

/// What the report says about this run besides the processes.
#[derive(Debug, Clone)]
pub struct StatusContext {
    pub mount_mode: String,
    pub virtual_root: bool,
    pub non_root_mode: bool,
    pub user: String,
    pub features: Vec<FeatureState>,
    /// Besides root, peers with this uid may ask: the supervisor's own (the agent user when
    /// it was started as that user, the invoking user when rootless).
    pub allowed_uid: u32,
    /// Status clients refused so far.
    pub refused: u64,
}

pub struct StatusServer {
    pub listener: OwnedFd,
    pub path: PathBuf,
}

pub fn socket_path(runtime_dir: &Path) -> PathBuf {
    runtime_dir.join("vigil.sock")
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

/// An id as the kernel shows it in our user namespace, translated to the parent namespace
/// with a `uid_map`/`gid_map` text (`inside outside count` per line). Rootless, the children
/// are uid 0 in the agent's namespace but the invoking user on the host: report the host id.
/// Unmapped ids (and an unreadable map) stay as they are.
pub fn to_parent_id(id: u32, map: &str) -> u32 {
    for l in map.lines() {
        let f: Vec<u64> = l
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        if let [inside, outside, count] = f[..]
            && (inside..inside.saturating_add(count)).contains(&u64::from(id))
            && let Ok(v) = u32::try_from(outside + (u64::from(id) - inside))
        {
            return v;
        }
    }
    id
}

/// Fields of /proc/PID/status as the kernel shows them, ids translated to the host's.
pub fn read_proc_status(pid: u32) -> Option<ProcessStatus> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let uid_map = std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
    let gid_map = std::fs::read_to_string("/proc/self/gid_map").unwrap_or_default();
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix(':').map(str::trim))
    };
    let ids = |k: &str| -> [u32; 4] {
        let mut out = [0; 4];
        if let Some(v) = field(k) {
            for (i, x) in v.split_whitespace().take(4).enumerate() {
                out[i] = x.parse().unwrap_or(u32::MAX);
            }
        }
        out
    };
    let hex = |k: &str| {
        field(k)
            .and_then(|v| u64::from_str_radix(v, 16).ok())
            .unwrap_or(0)
    };
    Some(ProcessStatus {
        role: Role::Supervisor,
        pid,
        uids: ids("Uid").map(|u| to_parent_id(u, &uid_map)),
        gids: ids("Gid").map(|g| to_parent_id(g, &gid_map)),
        cap_inh: hex("CapInh"),
        cap_prm: hex("CapPrm"),
        cap_eff: hex("CapEff"),
        cap_bnd: hex("CapBnd"),
        cap_amb: hex("CapAmb"),
        no_new_privs: field("NoNewPrivs") == Some("1"),
        seccomp: field("Seccomp").and_then(|v| v.parse().ok()).unwrap_or(0),
        landlock: String::new(),
        seccomp_policy: String::new(),
        restarts: 0,
        last_exit: None,
    })
}

fn not_running() -> ProcessStatus {
    ProcessStatus {
        role: Role::Supervisor,
        pid: 0,
        uids: [0; 4],
        gids: [0; 4],
        cap_inh: 0,
        cap_prm: 0,
        cap_eff: 0,
        cap_bnd: 0,
        cap_amb: 0,
        no_new_privs: false,
        seccomp: 0,
        landlock: String::new(),
        seccomp_policy: String::new(),
        restarts: 0,
        last_exit: None,
    }
}

pub fn build_report(children: &[ChildState], ctx: &StatusContext) -> StatusReport {
    let mut processes = Vec::new();
    if let Some(mut me) = read_proc_status(std::process::id()) {
        me.landlock = "off".into();
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
        features: ctx.features.clone(),
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

/// Client side: ask the supervisor listening under `runtime_dir`.
pub fn query(runtime_dir: &Path) -> Result<StatusReport> {
    let path = socket_path(runtime_dir);
    let fd = socket::socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(Error::sys("socket"))?;
    let addr = UnixAddr::new(&path).map_err(Error::sys("socket path"))?;
    socket::connect(fd.as_raw_fd(), &addr)
        .map_err(|e| Error::Other(format!("cannot reach the agent at {}: {e}", path.display())))?;
    let mut ch = Channel::from_fd(fd);
    ch.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| Error::Sys {
            step: "timeout",
            source: e,
        })?;
    ch.handshake(Role::StatusClient, Some(Role::Supervisor))?;
    ch.send(&ClientRequest::Status)?;
    match ch.recv::<ClientResponse>()? {
        ClientResponse::Status(r) => Ok(r),
        ClientResponse::Error(e) => Err(Error::Other(format!("agent refused: {e}"))),
    }
}

/// Capability names of a /proc mask.
pub fn cap_names(mask: u64) -> String {
    if mask == 0 {
        return "-".into();
    }
    let mut names = Vec::new();
    for c in caps::all() {
        if mask & (1u64 << c.index()) != 0 {
            names.push(c.to_string().to_lowercase());
        }
    }
    names.sort();
    if names.len() > 12 {
        return format!("{} capabilities", names.len());
    }
    names.join(",")
}

/// Whether `pid` lives in a user namespace other than ours (rootless agent seen from outside).
fn in_other_user_namespace(pid: u32) -> bool {
    match (
        std::fs::read_link(format!("/proc/{pid}/ns/user")),
        std::fs::read_link("/proc/self/ns/user"),
    ) {
        (Ok(theirs), Ok(ours)) => theirs != ours,
        _ => false,
    }
}

pub fn print_report(r: &StatusReport) {
    println!(
        "vigil {}  mount mode {}  virtual root {}  agent user {}{}",
        r.version,
        r.mount_mode,
        if r.virtual_root { "yes" } else { "no" },
        r.user,
        if r.non_root_mode {
            ""
        } else {
            " (non-root mode off)"
        }
    );
    println!(
        "{:<11} {:>7} {:>11} {:>11} {:>4} {:>7} {:<22} {:>8}  capabilities",
        "ROLE", "PID", "UID", "GID", "NNP", "SECCOMP", "LANDLOCK", "RESTARTS"
    );
    for p in &r.processes {
        let seccomp = match p.seccomp {
            0 => "off",
            1 => "strict",
            _ => "filter",
        };
        println!(
            "{:<11} {:>7} {:>11} {:>11} {:>4} {:>7} {:<22} {:>8}  eff={:#x} prm={:#x} bnd={:#x} amb={:#x} inh={:#x}",
            p.role.as_str(),
            p.pid,
            p.uids[0],
            p.gids[0],
            if p.no_new_privs { "yes" } else { "no" },
            seccomp,
            p.landlock,
            p.restarts,
            p.cap_eff,
            p.cap_prm,
            p.cap_bnd,
            p.cap_amb,
            p.cap_inh,
        );
        for (set, v) in [
            ("effective", p.cap_eff),
            ("permitted", p.cap_prm),
            ("bounding", p.cap_bnd),
            ("ambient", p.cap_amb),
            ("inheritable", p.cap_inh),
        ] {
            // Other sets only when they say something the effective set does not.
            if set == "effective" || (v != 0 && v != p.cap_eff) {
                println!("{:<11} {set}: {}", "", cap_names(v));
            }
        }
        if p.pid != 0 && (p.cap_eff | p.cap_prm | p.cap_bnd) != 0 && in_other_user_namespace(p.pid)
        {
            println!(
                "{:<11} (in its own user namespace: these capabilities do not apply on the host)",
                ""
            );
        }
        if let Some(e) = &p.last_exit {
            println!("{:<11} last exit: {e}", "");
        }
    }
    println!();
    println!("features:");
    for f in &r.features {
        println!(
            "  {:<20} {:<4} {}",
            f.name,
            if f.enabled { "on" } else { "off" },
            f.reason
        );
    }
    println!();
    println!("pipeline:");
    for (role, s) in &r.stats {
        for (k, v) in &s.counters {
            println!("  {:<11} {:<32} {v}", role.as_str(), k);
        }
    }
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
    fn ids_are_translated_to_the_parent_namespace() {
        let rootless = "         0      65534          1\n";
        assert_eq!(to_parent_id(0, rootless), 65534);
        assert_eq!(to_parent_id(5, rootless), 5, "unmapped stays");
        let identity = "         0          0 4294967295\n";
        assert_eq!(to_parent_id(1000, identity), 1000);
        assert_eq!(to_parent_id(u32::MAX - 1, identity), u32::MAX - 1);
        let ranges = "0 1000 1\n1 100000 65536\n";
        assert_eq!(to_parent_id(1, ranges), 100000);
        assert_eq!(to_parent_id(65536, ranges), 165535);
        assert_eq!(to_parent_id(65537, ranges), 65537);
        for hostile in ["", "x y z", "1 2", "0 4294967295 10", "\n\n 1 2 3 4"] {
            let _ = to_parent_id(3, hostile);
        }
        assert_eq!(
            to_parent_id(3, "0 4294967295 10"),
            3,
            "overflow is not a mapping"
        );
    }

    #[test]
    fn reads_our_own_status() {
        let me = read_proc_status(std::process::id()).expect("our own /proc status");
        assert_eq!(me.uids[0], nix::unistd::getuid().as_raw());
        assert_eq!(me.gids[0], nix::unistd::getgid().as_raw());
        let eff = std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:").map(|v| v.trim().to_string()))
            .unwrap();
        assert_eq!(me.cap_eff, u64::from_str_radix(&eff, 16).unwrap());
        assert!(read_proc_status(u32::MAX).is_none());
    }
}
