#![allow(dead_code)]

use vigil_ipc_proto::Feature;
use vigil_ipc_proto::{AttrValue, CollectorConfig, InitConfig, Record, Role};

pub fn init(features: &[Feature], collector: CollectorConfig) -> InitConfig {
    vigil_testkit::init(Role::Collector)
        .features(features)
        .collector(collector)
        .build()
}

pub fn res<'a>(r: &'a Record, k: &str) -> Option<&'a AttrValue> {
    let resource = match r {
        Record::Metrics { resource, .. } | Record::Log { resource, .. } => resource,
        Record::Process(_) | Record::ProcessesUnchanged { .. } => return None,
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

/// One collection cycle of a new `Cycle` with these features and settings, with a privhelper
/// channel nobody answers (the paths that need none); the cycle and its records.
pub fn one_cycle(
    features: &[Feature],
    collector: CollectorConfig,
) -> (vigil_collector::cycle::Cycle, Vec<Record>) {
    let init = init(features, collector);
    let mut cy = vigil_collector::cycle::Cycle::new(&init).unwrap();
    let (ph, _peer) = vigil_ipc_proto::Channel::pair().unwrap();
    let mut ph = vigil_collector::privclient::PrivClient::greeted(ph);
    let mut out = Vec::new();
    cy.collect(&mut ph, &mut out);
    (cy, out)
}
