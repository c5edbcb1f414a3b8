//! The collector: unprivileged producer of records.
//!
//! [`run`] does the handshakes, asks the privhelper for the kmsg descriptor (and the eBPF ring
//! buffers), then runs the one child loop (`vigil_ipc_proto::runtime`): every
//! `collector.interval_ms` one collection [`cycle::Cycle`] (host, processes, containers, disks,
//! network), in between the shipper's acknowledgements and every [`event_loop::Source`].

pub mod batch;
pub mod cgroups;
pub mod cycle;
pub mod disks;
pub mod diskstats;
pub mod ebpf;
pub mod event_loop;
pub mod host;
pub mod k8s;
pub mod kmsg;
pub mod mountinfo;
pub mod netdev;
pub mod netlink;
pub mod pressure;
pub mod privclient;
pub mod procs;
mod run;
pub mod sink;
pub mod sockets;
pub mod taskiter;
pub mod users;
pub mod util;

pub use run::{open_kmsg, run};

use vigil_ipc_proto::{InitConfig, KeyValue};

#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    #[error("ipc: {0}")]
    Proto(#[from] vigil_ipc_proto::ProtoError),
    #[error("shipper's first message was not Resume")]
    NoResume,
    #[error("privhelper: {0}")]
    Privhelper(#[from] privclient::PrivClientError),
    /// A configuration that cannot work, already told to the supervisor.
    #[error("{0}")]
    Config(String),
}

/// The resource attributes of the records the collector makes itself (kernel events, eBPF).
pub(crate) fn host_resource(init: &InitConfig) -> Vec<KeyValue> {
    vec![KeyValue::str("host.name", init.hostname.as_str())]
}

/// The kernel-line settings and rules as configured: the `kmsg_*` keys and the built-in and
/// user rule files (which the supervisor read, unparsed, at start).
fn kmsg_config(init: &InitConfig) -> Result<(kmsg::KmsgOptions, kmsg::RuleSet), String> {
    let c = &init.collector;
    let opts = kmsg::KmsgOptions::from_config(c).map_err(|e| e.to_string())?;
    let files: Vec<(String, String)> = c
        .kmsg_rule_files
        .iter()
        .map(|f| (f.path.clone(), f.text.clone()))
        .collect();
    let rules = kmsg::RuleSet::load(c.kmsg_builtin_rules, &files).map_err(|e| e.to_string())?;
    Ok((opts, rules))
}

fn batch_counters(b: &batch::Batcher) -> Vec<(String, u64)> {
    let s = b.stats;
    vec![
        ("batches_sent".into(), s.batches_sent),
        ("records_sent".into(), s.records_sent),
        ("batches_acked".into(), s.acked),
        ("batches_nacked".into(), s.nacked),
        ("batches_requeued".into(), s.requeued),
        ("dropped_batches".into(), s.dropped_batches),
        ("dropped_records".into(), s.dropped_records),
        ("oversized_records".into(), s.oversized_records),
        ("unacked_batches".into(), b.unacked() as u64),
    ]
}
