#![allow(dead_code)]

use vigil_ipc_proto::{
    AttrValue, CollectorConfig, InitConfig, LandlockPlan, Record, Role, SandboxPlan, ShipperConfig,
};

pub fn init(features: &[&str], collector: CollectorConfig) -> InitConfig {
    InitConfig {
        role: Role::Collector,
        sandbox: SandboxPlan {
            ids: None,
            keep_caps: Vec::new(),
            seccomp: false,
            seccomp_extra: Vec::new(),
            landlock: LandlockPlan::default(),
        },
        host_root: "/".into(),
        runtime_dir: "/tmp".into(),
        hostname: "testhost".into(),
        enabled_features: features.iter().map(|s| s.to_string()).collect(),
        collector,
        shipper: ShipperConfig::default(),
        attached: Vec::new(),
    }
}

pub fn res<'a>(r: &'a Record, k: &str) -> Option<&'a AttrValue> {
    let resource = match r {
        Record::Metrics { resource, .. } | Record::Log { resource, .. } => resource,
        Record::Process(_) => return None,
    };
    resource.iter().find(|a| a.key == k).map(|a| &a.value)
}

/// The process record of `pid` among `out`.
pub fn process(out: &[Record], pid: u32) -> Option<&vigil_ipc_proto::ProcessRecord> {
    out.iter().find_map(|r| match r {
        Record::Process(p) if p.pid == pid => Some(&**p),
        _ => None,
    })
}

pub fn metric<'a>(r: &'a Record, name: &str) -> Option<&'a vigil_ipc_proto::Metric> {
    match r {
        Record::Metrics { metrics, .. } => metrics.iter().find(|m| m.name == name),
        _ => None,
    }
}

pub fn s(v: &str) -> AttrValue {
    AttrValue::Str(v.into())
}
