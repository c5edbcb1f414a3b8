//! The supervision loop: start the three children with fresh channels, read their control
//! messages, reap them, restart the group with backoff when one dies, serve `vigil status`,
//! forward SIGTERM/SIGINT as an orderly shutdown.
//!
//! Restart policy: the collector holds one end of both peer channels, so when any child dies
//! its peers' channels are dead too. The supervisor stops the survivors (Shutdown, then SIGKILL
//! after a grace period) and starts all three again with new channels, after a backoff that
//! doubles from 0.5 s to 60 s and resets once the group has run for a minute. Every role
//! restarted this way has its `restarts` counted; `last_exit` says why. A role that fails the
//! same way [`SAME_CAUSE_REPORT`] times in a row (the same seccomp violation, the same error)
//! is reported once as a failure that will not fix itself; its repeats are not logged again.
//! A child that says its configuration cannot work (`ConfigError`) stops the agent instead.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tracing::{error, info, warn};
use vigil_ipc_proto::{
    Channel, ChildToSupervisor, Feature, InitConfig, ProtoError, Role, RoleStats, SandboxReport,
    SupervisorToChild,
};

use crate::delivery::Prepared;
use crate::error::{Error, Result};
use crate::spawn::{ChildFds, spawn};
use crate::status::{StatusContext, StatusServer};

const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Failures of one role with the same cause, in a row, after which it is reported as
/// deterministic (and its repeats are no longer logged).
pub const SAME_CAUSE_REPORT: u32 = 3;
const HEALTHY_AFTER: Duration = Duration::from_secs(60);
const GRACE: Duration = Duration::from_secs(5);
const STATS_EVERY: Duration = Duration::from_secs(2);
/// Exit status when a child reports a configuration that cannot work (sysexits' EX_CONFIG; the
/// systemd unit does not restart on it).
pub const EXIT_CONFIG: i32 = 78;

pub struct ChildState {
    pub role: Role,
    pub pid: Option<Pid>,
    control: Option<Channel>,
    pub restarts: u32,
    pub last_exit: Option<String>,
    pub ready: Option<SandboxReport>,
    pub stats: RoleStats,
    violation: Option<u32>,
    /// The child said its configuration cannot work (no restart will help).
    config_error: Option<String>,
    /// How this run of the child ended (without the "restart after ..." note).
    cause: Option<String>,
    /// The cause of its last failures, and how many times in a row it was that.
    streak_cause: Option<String>,
    pub same_cause: u32,
    pub bad_frames: u64,
    /// Features this run of the child found not working (`FeatureOff`), with the reason.
    pub features_off: Vec<(Feature, String)>,
}

impl ChildState {
    pub(crate) fn new(role: Role) -> Self {
        ChildState {
            role,
            pid: None,
            control: None,
            restarts: 0,
            last_exit: None,
            ready: None,
            stats: RoleStats::default(),
            violation: None,
            config_error: None,
            cause: None,
            streak_cause: None,
            same_cause: 0,
            bad_frames: 0,
            features_off: Vec::new(),
        }
    }
}

pub struct Supervisor {
    exe: OwnedFd,
    inits: Vec<InitConfig>,
    /// Descriptors opened at start for the children's Init frames.
    prepared: Prepared,
    pub children: Vec<ChildState>,
    status: StatusServer,
    pub ctx: StatusContext,
    signals: SignalFd,
    backoff: Duration,
    next_start: Option<Instant>,
    group_started: Instant,
    stopping: Option<Instant>,
    last_stats: Instant,
}

/// Block the signals we handle through a signalfd (children get a clean mask from std).
pub fn signal_fd() -> Result<SignalFd> {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGCHLD,
        Signal::SIGHUP,
    ] {
        set.add(s);
    }
    set.thread_block().map_err(Error::sys("block signals"))?;
    SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(Error::sys("signalfd"))
}

impl Supervisor {
    pub fn new(
        exe: OwnedFd,
        inits: Vec<InitConfig>,
        prepared: Prepared,
        status: StatusServer,
        ctx: StatusContext,
        signals: SignalFd,
    ) -> Self {
        Supervisor {
            exe,
            inits,
            prepared,
            children: Role::CHILDREN.iter().map(|r| ChildState::new(*r)).collect(),
            status,
            ctx,
            signals,
            backoff: BACKOFF_MIN,
            next_start: Some(Instant::now()),
            group_started: Instant::now(),
            stopping: None,
            last_stats: Instant::now(),
        }
    }

    fn init_for(&self, role: Role) -> Result<&InitConfig> {
        self.inits
            .iter()
            .find(|i| i.role == role)
            .ok_or_else(|| Error::Other(format!("no init config for {role}")))
    }

    /// Create the channels and start all three children.
    fn start_group(&mut self) -> Result<()> {
        let (ph_col, col_ph) = Channel::pair().map_err(|e| Error::Sys {
            step: "socketpair",
            source: e,
        })?;
        let (sh_col, col_sh) = Channel::pair().map_err(|e| Error::Sys {
            step: "socketpair",
            source: e,
        })?;
        let mut peers = [
            (Role::Privhelper, Some(ph_col), None),
            (Role::Collector, Some(col_ph), Some(col_sh)),
            (Role::Shipper, Some(sh_col), None),
        ];
        for (role, a, b) in peers.iter_mut() {
            let (mut mine, theirs) = Channel::pair().map_err(|e| Error::Sys {
                step: "socketpair",
                source: e,
            })?;
            let pid = spawn(
                *role,
                &self.exe,
                ChildFds {
                    control: theirs,
                    peer_a: a.take(),
                    peer_b: b.take(),
                },
            )?;
            // The child speaks first only after exec; bound how long a broken child can
            // stall the hello, then hand it its Init.
            mine.set_read_timeout(Some(Duration::from_secs(10)))
                .map_err(|e| Error::Sys {
                    step: "socket timeout",
                    source: e,
                })?;
            let hello = mine.handshake(Role::Supervisor, Some(*role));
            let init = self.init_for(*role)?;
            let fds: Vec<BorrowedFd<'_>> = init
                .attached
                .iter()
                .filter_map(|a| self.prepared.fd_for(*a))
                .collect();
            if fds.len() != init.attached.len() {
                return Err(Error::Other(format!(
                    "{role}: a descriptor of its Init is missing"
                )));
            }
            let sent = hello.and_then(|_| {
                mine.send_with_fds(&SupervisorToChild::Init(Box::new(init.clone())), &fds)
            });
            let st = self
                .children
                .iter_mut()
                .find(|c| c.role == *role)
                .expect("every child role has a state");
            st.pid = Some(pid);
            st.ready = None;
            st.violation = None;
            st.features_off.clear();
            match sent {
                Ok(()) => {
                    mine.set_nonblocking(true).map_err(|e| Error::Sys {
                        step: "nonblocking",
                        source: e,
                    })?;
                    mine.set_read_timeout(None).ok();
                    st.control = Some(mine);
                }
                Err(e) => {
                    warn!(%role, error = %e, "child did not start its protocol");
                    st.control = None;
                }
            }
            info!(%role, pid = pid.as_raw(), "started");
        }
        self.group_started = Instant::now();
        // Start-up (the configuration, `/etc/passwd`, certificate bundles, the feature
        // evaluation) leaves ≈ 200 KiB free but resident in a process that then only waits
        // (BENCHMARKS.md "PSS, third session").
        vigil_ipc_proto::heap::release_free_memory();
        vigil_ipc_proto::heap::release_startup_code();
        Ok(())
    }

    /// Ask every alive child to stop; wait up to `grace`, then SIGKILL and reap.
    fn stop_group(&mut self, grace: Duration, why: &str) {
        for c in &mut self.children {
            if let (Some(_), Some(ch)) = (c.pid, &c.control) {
                let _ = ch.send(&SupervisorToChild::Shutdown);
            }
        }
        let deadline = Instant::now() + grace;
        while self.children.iter().any(|c| c.pid.is_some()) && Instant::now() < deadline {
            self.reap(Some(why));
            std::thread::sleep(Duration::from_millis(20));
        }
        for c in &mut self.children {
            if let Some(pid) = c.pid {
                warn!(role = %c.role, "did not stop in time: SIGKILL");
                let _ = kill(pid, Signal::SIGKILL);
                let _ = waitpid(pid, None);
                c.pid = None;
                c.control = None;
                c.last_exit = Some(format!("killed after {why}"));
            }
        }
    }

    /// Reap exited children. `Some(why)`: exits expected (group stop), not failures.
    fn reap(&mut self, expected: Option<&str>) -> Option<Role> {
        let mut failed = None;
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(ws) => {
                    let Some(pid) = ws.pid() else { break };
                    let Some(c) = self.children.iter_mut().find(|c| c.pid == Some(pid)) else {
                        continue;
                    };
                    // Its last messages (Ready, warnings, a violation report) may still be
                    // queued on the control channel: read them before judging the exit.
                    drain_control(c);
                    let desc = describe(&ws, c.violation);
                    c.pid = None;
                    c.control = None;
                    c.ready = None;
                    c.cause = Some(desc.clone());
                    match expected {
                        Some(why) => {
                            info!(role = %c.role, "{} {desc} ({why})", c.role);
                            c.last_exit = Some(format!("{desc} ({why})"));
                        }
                        None => {
                            c.last_exit = Some(desc);
                            failed.get_or_insert(c.role);
                        }
                    }
                }
            }
        }
        failed
    }

    fn handle_control(&mut self, idx: usize) {
        drain_control(&mut self.children[idx]);
    }

    fn request_stats(&mut self) {
        for c in &self.children {
            if let Some(ch) = &c.control {
                let _ = ch.send(&SupervisorToChild::StatsRequest);
            }
        }
        self.last_stats = Instant::now();
    }

    fn on_failure(&mut self, role: Role) {
        self.stop_group(GRACE, &format!("restart after {role} died"));
        if self.group_started.elapsed() > HEALTHY_AFTER {
            self.backoff = BACKOFF_MIN;
            for c in &mut self.children {
                c.same_cause = 0;
                c.streak_cause = None;
            }
        }
        // The first child reaped may only have followed another one's death (its channel to
        // it closed): a child the seccomp filter killed is the cause; else the first.
        let root = self
            .children
            .iter()
            .position(|c| c.violation.is_some())
            .or_else(|| self.children.iter().position(|c| c.role == role));
        if let Some(i) = root {
            note_failure(&mut self.children[i]);
            let root_role = self.children[i].role;
            if root_role != role {
                info!(role = %role, "{role} ended after {root_role} died");
            }
        }
        for c in &mut self.children {
            c.restarts += 1;
        }
        if self
            .children
            .iter()
            .any(|c| c.same_cause >= SAME_CAUSE_REPORT)
        {
            tracing::debug!(after = ?self.backoff, "restarting privhelper, collector and shipper");
        } else {
            warn!(after = ?self.backoff, "restarting privhelper, collector and shipper");
        }
        self.next_start = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }

    /// Run until SIGTERM/SIGINT; returns the exit code.
    pub fn run(&mut self) -> Result<i32> {
        loop {
            if let Some(at) = self.next_start
                && Instant::now() >= at
                && self.stopping.is_none()
            {
                self.next_start = None;
                self.start_group()?;
            }
            if let Some(deadline) = self.stopping {
                if self.children.iter().all(|c| c.pid.is_none()) {
                    info!("all children stopped");
                    return Ok(0);
                }
                if Instant::now() > deadline {
                    self.stop_group(Duration::ZERO, "shutdown");
                    return Ok(0);
                }
            }
            if self.last_stats.elapsed() >= STATS_EVERY {
                self.request_stats();
            }

            let mut wait = STATS_EVERY;
            if let Some(at) = self.next_start {
                wait = wait.min(at.saturating_duration_since(Instant::now()));
            }
            if self.stopping.is_some() {
                wait = wait.min(Duration::from_millis(50));
            }

            let (sig_ready, listen_ready, ctl_ready) = {
                let mut fds = vec![
                    PollFd::new(self.signals.as_fd(), PollFlags::POLLIN),
                    PollFd::new(self.status.listener.as_fd(), PollFlags::POLLIN),
                ];
                let mut owners = Vec::new();
                for (i, c) in self.children.iter().enumerate() {
                    if let Some(ch) = &c.control {
                        fds.push(PollFd::new(ch.as_fd(), PollFlags::POLLIN));
                        owners.push(i);
                    }
                }
                let ms = wait.as_millis().min(60_000) as u16;
                match poll(&mut fds, PollTimeout::from(ms)) {
                    Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => return Err(Error::sys("poll")(e)),
                }
                let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
                let ctl: Vec<usize> = fds[2..]
                    .iter()
                    .zip(&owners)
                    .filter(|(f, _)| ready(f))
                    .map(|(_, i)| *i)
                    .collect();
                (ready(&fds[0]), ready(&fds[1]), ctl)
            };

            for i in ctl_ready {
                self.handle_control(i);
            }
            if sig_ready {
                while let Ok(Some(si)) = self.signals.read_signal() {
                    match Signal::try_from(si.ssi_signo as i32) {
                        Ok(Signal::SIGTERM) | Ok(Signal::SIGINT) if self.stopping.is_none() => {
                            info!("shutting down");
                            self.stopping = Some(Instant::now() + GRACE);
                            self.next_start = None;
                            for c in &self.children {
                                if let Some(ch) = &c.control {
                                    let _ = ch.send(&SupervisorToChild::Shutdown);
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            let expected = self.stopping.map(|_| "shutdown");
            let failed = self.reap(expected);
            if let Some((role, msg)) = self
                .children
                .iter()
                .find_map(|c| c.config_error.clone().map(|m| (c.role, m)))
            {
                self.stop_group(GRACE, "configuration error");
                error!("{role}: {msg}");
                error!(
                    "not restarting: the configuration cannot work; fix it and start vigil again"
                );
                return Ok(EXIT_CONFIG);
            }
            if let Some(role) = failed
                && self.stopping.is_none()
            {
                self.on_failure(role);
            }
            if listen_ready {
                self.status.accept_one(&self.children, &mut self.ctx);
            }
        }
    }
}

/// A child failed (its `cause`): counted against its streak of identical failures; logged
/// while the streak is short, reported once as deterministic when it reaches
/// [`SAME_CAUSE_REPORT`].
fn note_failure(c: &mut ChildState) {
    let desc = c.cause.clone().unwrap_or_else(|| "ended".into());
    if c.streak_cause.as_deref() == Some(desc.as_str()) {
        c.same_cause += 1;
    } else {
        c.same_cause = 1;
        c.streak_cause = Some(desc.clone());
    }
    match c.same_cause {
        n if n < SAME_CAUSE_REPORT => {
            if c.violation.is_none() {
                warn!(role = %c.role, "{} {desc}", c.role);
            }
        }
        SAME_CAUSE_REPORT => error!(
            role = %c.role,
            "{} failed {SAME_CAUSE_REPORT} times in a row the same way ({desc}): this will not fix \
             itself; restarting with backoff up to {}s, not logging it again (vigil status shows \
             the last cause)",
            c.role,
            BACKOFF_MAX.as_secs()
        ),
        _ => tracing::debug!(role = %c.role, "{} {desc} (again)", c.role),
    }
}

/// Read every queued control message of a child (non-blocking channel).
fn drain_control(c: &mut ChildState) {
    let Some(ch) = c.control.as_mut() else { return };
    for _ in 0..256 {
        match ch.recv::<ChildToSupervisor>() {
            Ok(ChildToSupervisor::Ready(r)) => {
                info!(role = %c.role, uid = r.uid, landlock = %r.landlock, seccomp = %r.seccomp, "sandboxed");
                c.ready = Some(r);
            }
            Ok(ChildToSupervisor::Stats(s)) => c.stats = s,
            Ok(ChildToSupervisor::Warning(w)) => warn!(role = %c.role, "{}: {w}", c.role),
            Ok(ChildToSupervisor::ConfigError(m)) => c.config_error = Some(m),
            Ok(ChildToSupervisor::FeatureOff { feature, reason }) => {
                if !c.features_off.iter().any(|(f, _)| *f == feature) {
                    warn!(role = %c.role, "{}: {feature} off: {reason}", c.role);
                    c.features_off.push((feature, reason));
                }
            }
            Ok(ChildToSupervisor::SeccompViolation { syscall, .. }) => {
                c.violation = Some(syscall);
                // A repeat of a deterministic failure already reported: not again.
                let name = vigil_policies::syscall_name(syscall);
                let repeat = c
                    .streak_cause
                    .as_deref()
                    .is_some_and(|l| l.contains(&format!("syscall {name} ({syscall})")));
                if !repeat || c.same_cause + 1 < SAME_CAUSE_REPORT {
                    error!(
                        role = %c.role,
                        "{} killed by seccomp: syscall {name} ({syscall})",
                        c.role
                    );
                }
            }
            Err(e) if e.is_would_block() => return,
            Err(ProtoError::Closed) | Err(ProtoError::Io(_)) => {
                c.control = None;
                return;
            }
            Err(e) => {
                c.bad_frames += 1;
                warn!(role = %c.role, error = %e, "malformed control frame");
            }
        }
    }
}

fn describe(ws: &WaitStatus, violation: Option<u32>) -> String {
    match ws {
        WaitStatus::Exited(_, code) => format!("exited with code {code}"),
        WaitStatus::Signaled(_, sig, _) => match (sig, violation) {
            (Signal::SIGSYS, Some(nr)) => format!(
                "killed by SIGSYS (seccomp: syscall {} ({nr}))",
                vigil_policies::syscall_name(nr)
            ),
            _ => format!("killed by {sig}"),
        },
        other => format!("{other:?}"),
    }
}
