//! Fixtures the tests of every crate share, written once: the `Init` a role receives (no
//! sandbox, chosen features, its configuration), built as the tests need it; a process's
//! `/proc/PID/status` as the agent parses it; a real OTLP/HTTP receiver ([`otlp`]); a network
//! namespace joined by a veth pair ([`netns`]).

pub mod netns;
pub mod otlp;

use vigil_ipc_proto::procstatus::{ProcStatusFields, status_line};
use vigil_ipc_proto::{
    CollectorConfig, Feature, InitConfig, LandlockPlan, Role, SandboxPlan, ShipperConfig,
};

/// A sandbox plan that changes nothing: stay as started, no filter, no ruleset.
pub fn unconfined() -> SandboxPlan {
    SandboxPlan {
        ids: None,
        keep_caps: Vec::new(),
        steady_caps: Vec::new(),
        non_dumpable: false,
        seccomp: Vec::new(),
        landlock: LandlockPlan::default(),
    }
}

/// An `Init` for `role`: unconfined, no feature, default configuration, host root `/`.
pub fn init(role: Role) -> Init {
    Init(InitConfig {
        role,
        sandbox: unconfined(),
        host_root: "/".into(),
        runtime_dir: "/tmp".into(),
        hostname: "testhost".into(),
        enabled_features: Vec::new(),
        fd_count_by_stat: std::fs::metadata("/proc/self/fd").is_ok_and(|m| m.len() > 0),
        collector: CollectorConfig::default(),
        shipper: ShipperConfig::default(),
        attached: Vec::new(),
    })
}

/// Builder of an [`InitConfig`].
pub struct Init(pub InitConfig);

impl Init {
    pub fn features(mut self, f: &[Feature]) -> Self {
        self.0.enabled_features = f.to_vec();
        self
    }

    pub fn collector(mut self, c: CollectorConfig) -> Self {
        self.0.collector = c;
        self
    }

    pub fn shipper(mut self, s: ShipperConfig) -> Self {
        self.0.shipper = s;
        self
    }

    pub fn sandbox(mut self, p: SandboxPlan) -> Self {
        self.0.sandbox = p;
        self
    }

    pub fn runtime_dir(mut self, d: impl Into<String>) -> Self {
        self.0.runtime_dir = d.into();
        self
    }

    pub fn hostname(mut self, h: impl Into<String>) -> Self {
        self.0.hostname = h.into();
        self
    }

    pub fn build(self) -> InitConfig {
        self.0
    }
}

/// `/proc/<of>/status` (`of`: a pid, `self`, `thread-self`) read by the agent's own parser:
/// ids, capability sets, NoNewPrivs, seccomp mode.
pub fn proc_status(of: impl std::fmt::Display) -> std::io::Result<ProcStatusFields> {
    let path = format!("/proc/{of}/status");
    let text = std::fs::read_to_string(&path)?;
    ProcStatusFields::parse(&text)
        .ok_or_else(|| std::io::Error::other(format!("{path}: unexpected format")))
}

/// Another line of `/proc/<of>/status` by name (`State`, `VmRSS`, `PPid`), trimmed.
pub fn proc_status_line(of: impl std::fmt::Display, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{of}/status")).ok()?;
    status_line(&text, key).map(String::from)
}

/// A size line of `/proc/<of>/status` (`VmRSS`, `VmHWM`) in KiB.
pub fn proc_status_kib(of: impl std::fmt::Display, key: &str) -> Option<u64> {
    proc_status_line(of, key)?
        .trim_end_matches(" kB")
        .trim()
        .parse()
        .ok()
}

/// Read a non-blocking `/dev/kmsg` descriptor until a record contains `marker` (true), or 10 s
/// pass (false). A record overwritten while reading (EPIPE) is skipped.
pub fn kmsg_fd_finds(kmsg: &mut std::fs::File, marker: &str) -> bool {
    use std::io::Read;
    use std::time::{Duration, Instant};
    let mut buf = vec![0u8; 8192];
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match kmsg.read(&mut buf) {
            Ok(n) if String::from_utf8_lossy(&buf[..n]).contains(marker) => return true,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => panic!("read kmsg: {e}"),
        }
    }
    false
}

/// A child process killed and reaped when the test lets go of it (also when it fails).
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
