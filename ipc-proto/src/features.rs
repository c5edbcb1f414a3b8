//! The features vigil can turn on or off, by name. One enum for every process: the supervisor's
//! feature table (`policies`), `vigil doctor` and `vigil status`, the sandbox plans, the
//! privhelper's request table and the collector all name features with it, so a typo does not
//! compile. The names below are the only place a feature is spelled as a string (they are what
//! the configuration, status JSON and doctor print).

use serde::{Deserialize, Serialize};

macro_rules! features {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)*) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum Feature {
            $($(#[$doc])* #[serde(rename = $name)] $variant,)*
        }

        impl Feature {
            /// Every feature, in the order the feature table lists them.
            pub const ALL: &'static [Feature] = &[$(Feature::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Feature::$variant => $name,)*
                }
            }

            pub fn parse(s: &str) -> Option<Feature> {
                match s {
                    $($name => Some(Feature::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

features! {
    /// The trimmed read-only host view (supervisor).
    VirtualRoot => "virtual_root",
    /// Children run as the named host user (supervisor).
    UserSwitch => "user_switch",
    HostMetrics => "host_metrics",
    ProcessMetrics => "process_metrics",
    /// Process metrics from a BPF task iterator instead of /proc/PID/* (privhelper loads it).
    ProcessIter => "process_iter",
    ProcessFds => "process_fds",
    ProcessSockets => "process_sockets",
    ContainerMetrics => "container_metrics",
    DiskMetrics => "disk_metrics",
    NetMetrics => "net_metrics",
    NetnsMetrics => "netns_metrics",
    NetnsMetricsSetns => "netns_metrics_setns",
    DiskIo => "disk_io",
    PagingMetrics => "paging_metrics",
    PressureMetrics => "pressure_metrics",
    ConnectionMetrics => "connection_metrics",
    ProcessIo => "process_io",
    K8sNames => "k8s_names",
    KmsgEvents => "kmsg_events",
    EbpfExec => "ebpf_exec",
    EbpfFlowsTracepoint => "ebpf_flows_tracepoint",
    EbpfFlowsSocket => "ebpf_flows_socket",
    EbpfFlowsTc => "ebpf_flows_tc",
    /// TCP state changes counted by a raw tracepoint program (privhelper loads it), so that
    /// the connection counts walk the kernel's TCP hash only after a change.
    EbpfTcpChanges => "ebpf_tcp_changes",
}

impl std::fmt::Display for Feature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for f in Feature::ALL {
            assert!(seen.insert(f.as_str()), "{f} twice");
            assert_eq!(Feature::parse(f.as_str()), Some(*f));
            // Status JSON and the configuration carry the table's name.
            assert_eq!(serde_json::to_string(f).unwrap(), format!("\"{f}\""));
        }
        assert_eq!(Feature::parse("kmsg"), None);
    }
}
