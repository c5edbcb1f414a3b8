//! Fixtures the tests of every crate share, written once: the `Init` a role receives (no
//! sandbox, chosen features, its configuration), built as the tests need it.

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
