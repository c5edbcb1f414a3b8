//! The privhelper's requests as data (OpenSSH's `mon_dispatch` tables are the model): for each
//! kind of [`PrivRequest`], the features that allow it, the phase in which it is served and
//! whether it may come only once. The privhelper dispatches with this table, the feature
//! table derives from it which capabilities outlive start-up, and `vigil doctor` prints it.
//! The whole privileged surface, on one screen.

use crate::{Feature, PrivRequest};

/// When a request is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Until the collector says `Ready`: opening descriptors, attaching programs. Refused and
    /// counted afterwards; the capabilities only these need are gone by then.
    StartUp,
    /// All along: the per-cycle work of the opt-in features that need privilege each time.
    Always,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PrivRequestKind {
    OpenKmsg,
    BpfAttach,
    ProcFdStats,
    ListNetns,
    NetlinkRouteInNetns,
    ProcIoStats,
    ProcExePaths,
    Ready,
    TaskIterLink,
}

/// One row of the table.
#[derive(Debug)]
pub struct RequestRule {
    pub kind: PrivRequestKind,
    /// Served when one of these is enabled (none: always, for the phase change itself).
    pub features: &'static [Feature],
    pub phase: Phase,
    /// At most once per privhelper life.
    pub once: bool,
    /// Name of its counter in the role's stats.
    pub counter: &'static str,
}

pub const PRIV_REQUESTS: &[RequestRule] = &[
    RequestRule {
        kind: PrivRequestKind::OpenKmsg,
        features: &[Feature::KmsgEvents],
        phase: Phase::StartUp,
        once: true,
        counter: "served_open_kmsg",
    },
    RequestRule {
        // Once per program: the BPF manager loads each at most once.
        kind: PrivRequestKind::BpfAttach,
        features: &[
            Feature::EbpfExec,
            Feature::EbpfFlowsTracepoint,
            Feature::EbpfFlowsSocket,
            Feature::EbpfFlowsTc,
            Feature::EbpfTcpChanges,
        ],
        phase: Phase::StartUp,
        once: false,
        counter: "served_bpf_attach",
    },
    RequestRule {
        // Socket counts; fd counts only where the kernel does not give them by stat.
        kind: PrivRequestKind::ProcFdStats,
        features: &[Feature::ProcessSockets, Feature::ProcessFds],
        phase: Phase::Always,
        once: false,
        counter: "served_proc_fd_stats",
    },
    RequestRule {
        kind: PrivRequestKind::ListNetns,
        features: &[Feature::NetnsMetricsSetns],
        phase: Phase::Always,
        once: false,
        counter: "served_list_netns",
    },
    RequestRule {
        kind: PrivRequestKind::NetlinkRouteInNetns,
        features: &[Feature::NetnsMetricsSetns],
        phase: Phase::Always,
        once: false,
        counter: "served_netlink_route_in_netns",
    },
    RequestRule {
        kind: PrivRequestKind::ProcIoStats,
        features: &[Feature::ProcessIo],
        phase: Phase::Always,
        once: false,
        counter: "served_proc_io_stats",
    },
    RequestRule {
        kind: PrivRequestKind::ProcExePaths,
        features: &[Feature::ProcessIo],
        phase: Phase::Always,
        once: false,
        counter: "served_proc_exe_paths",
    },
    RequestRule {
        // The link is all the collector needs: iterators made from it need no capability.
        kind: PrivRequestKind::TaskIterLink,
        features: &[Feature::ProcessIter],
        phase: Phase::StartUp,
        once: true,
        counter: "served_task_iter_link",
    },
    RequestRule {
        kind: PrivRequestKind::Ready,
        features: &[],
        phase: Phase::StartUp,
        once: true,
        counter: "served_ready",
    },
];

impl PrivRequest {
    pub fn kind(&self) -> PrivRequestKind {
        match self {
            PrivRequest::OpenKmsg => PrivRequestKind::OpenKmsg,
            PrivRequest::BpfAttach { .. } => PrivRequestKind::BpfAttach,
            PrivRequest::ProcFdStats { .. } => PrivRequestKind::ProcFdStats,
            PrivRequest::ListNetns => PrivRequestKind::ListNetns,
            PrivRequest::NetlinkRouteInNetns { .. } => PrivRequestKind::NetlinkRouteInNetns,
            PrivRequest::ProcIoStats { .. } => PrivRequestKind::ProcIoStats,
            PrivRequest::ProcExePaths { .. } => PrivRequestKind::ProcExePaths,
            PrivRequest::Ready => PrivRequestKind::Ready,
            PrivRequest::TaskIterLink => PrivRequestKind::TaskIterLink,
        }
    }
}

/// The row of a request kind.
pub fn rule(kind: PrivRequestKind) -> &'static RequestRule {
    PRIV_REQUESTS
        .iter()
        .find(|r| r.kind == kind)
        .expect("every request kind has its row (tested)")
}

/// A feature has privileged work after start-up: some request it allows is served always.
pub fn needs_privilege_after_startup(f: Feature) -> bool {
    PRIV_REQUESTS
        .iter()
        .any(|r| r.phase == Phase::Always && r.features.contains(&f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_row_per_kind() {
        for r in PRIV_REQUESTS {
            assert_eq!(
                PRIV_REQUESTS.iter().filter(|x| x.kind == r.kind).count(),
                1,
                "{:?}",
                r.kind
            );
        }
        assert_eq!(rule(PrivRequest::Ready.kind()).phase, Phase::StartUp);
    }

    #[test]
    fn start_up_features_need_nothing_after_it() {
        for f in [
            Feature::KmsgEvents,
            Feature::EbpfExec,
            Feature::EbpfFlowsTracepoint,
            Feature::EbpfFlowsSocket,
            Feature::EbpfFlowsTc,
            Feature::EbpfTcpChanges,
            Feature::ProcessIter,
        ] {
            assert!(!needs_privilege_after_startup(f), "{f}");
        }
        for f in [
            Feature::ProcessSockets,
            Feature::ProcessFds,
            Feature::NetnsMetricsSetns,
            Feature::ProcessIo,
        ] {
            assert!(needs_privilege_after_startup(f), "{f}");
        }
    }
}
