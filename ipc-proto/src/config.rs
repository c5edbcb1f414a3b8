//! Configuration: the TOML file of the supervisor deserializes into [`AgentConfig`], and each
//! child receives what it needs of it in [`InitConfig`]. One definition for both.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::delivery::Secret;
use crate::messages::Role;

/// How much of the host the virtual root shows (the SmartAgent seed's three modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum MountMode {
    /// Host root read-write, nothing pruned (testing, debugging).
    Full,
    /// Host root read-only, boot/initrd/root/vmlinuz/home pruned, runtime dir read-write.
    #[default]
    ReadOnly,
    /// Only /etc, /usr, /lib*, /proc, /sys, /dev, /run read-only, runtime dir read-write.
    Minimal,
}

impl MountMode {
    pub fn as_str(self) -> &'static str {
        match self {
            MountMode::Full => "full",
            MountMode::ReadOnly => "read-only",
            MountMode::Minimal => "minimal",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// Host user the collector and shipper run as (must exist in the host's /etc/passwd).
    pub user: String,
    /// false: collector and shipper stay root (with a warning), as SmartAgent's flag.
    pub non_root_mode: bool,
    pub mount_mode: MountMode,
    /// Where the host's root is visible: `/` on a bare host, `/hostfs` in a container.
    pub host_root: String,
    /// Runtime directory (journal, status socket); bind-mounted read-write into the view.
    pub runtime_dir: String,
    /// Fail at start when a capability needed by an enabled feature is missing.
    pub enforce_sys_caps: bool,
    /// Never try to build the virtual root (SmartAgent's NO_REMOUNT_ROOT).
    pub no_remount_root: bool,
    /// Hostname reported as `host.name` (default: the kernel's).
    pub hostname: Option<String>,
    pub collector: CollectorConfig,
    pub shipper: ShipperConfig,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            user: "vigil".into(),
            non_root_mode: true,
            mount_mode: MountMode::ReadOnly,
            host_root: "/".into(),
            runtime_dir: "/var/run/vigil".into(),
            enforce_sys_caps: false,
            no_remount_root: false,
            hostname: None,
            collector: CollectorConfig::default(),
            shipper: ShipperConfig::default(),
        }
    }
}

/// node-exporter's default `--collector.diskstats.device-exclude`: RAM disks, loop and floppy
/// devices, and partitions of sd/hd/vd/xvd and NVMe disks (the whole disk is reported).
pub const DISK_DEVICES_EXCLUDE: &str = r"^(z?ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\d+n\d+p)\d+$";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CollectorConfig {
    pub interval_ms: u64,
    pub host: bool,
    pub processes: bool,
    /// Per-process open fd counts (`st_size` of /proc/PID/fd; before Linux 6.2 the privhelper
    /// lists the directory, with CAP_DAC_READ_SEARCH).
    pub process_fds: bool,
    /// Per-process socket counts (the privhelper reads fd links: CAP_DAC_READ_SEARCH +
    /// CAP_SYS_PTRACE). Off by default.
    pub process_sockets: bool,
    pub containers: bool,
    pub disks: bool,
    pub network: bool,
    /// Interface counters of other network namespaces.
    pub netns: bool,
    /// Block device I/O from /proc/diskstats (`system.disk.*`).
    pub disk_io: bool,
    /// Devices left out of `system.disk.*`: a regular expression matched against the whole
    /// device name, node-exporter's `--collector.diskstats.device-exclude` default (RAM, loop
    /// and floppy devices, partitions). Empty: every device.
    pub disk_devices_exclude: String,
    /// Swap usage, page faults and paging operations (/proc/swaps, /proc/vmstat).
    pub paging: bool,
    /// Pressure stall information of the host (/proc/pressure) and of every container (cgroup v2
    /// `*.pressure`).
    pub pressure: bool,
    /// TCP/UDP socket counts by state (netlink sock_diag) and conntrack table size.
    pub connections: bool,
    /// Per-process disk I/O (/proc/PID/io) and executable paths (/proc/PID/exe) of every
    /// process through the privhelper (CAP_DAC_READ_SEARCH + CAP_SYS_PTRACE). Off by default.
    pub process_io: bool,
    /// Process metrics from a BPF task iterator the privhelper loads (CAP_BPF +
    /// CAP_PERFMON at start-up only) instead of /proc/PID/stat and friends; where it is not
    /// available, /proc as before. `false` forces the /proc path.
    pub process_iter: bool,
    /// A process whose record would repeat the last one sent for it (same values, same
    /// attributes; only its time and uptime moved) is sent again only this long after that
    /// one; meanwhile its pid is listed as unchanged, which keeps it alive on the Prometheus
    /// endpoint. A process sent because something changed carries only the points that
    /// moved until then (the exporters leave the others out). 0: every process, every point,
    /// every cycle.
    pub process_refresh_ms: u64,
    /// Kubernetes namespace, pod and container names from the kubelet's log directories
    /// (`<host_root>/var/log/pods`, `<host_root>/var/log/containers`): no API access, no token.
    pub k8s_names: bool,
    /// `proc` (/proc/PID/net/dev, no capability) or `setns` (a netlink socket the privhelper
    /// makes inside each namespace: CAP_SYS_ADMIN + CAP_SYS_PTRACE; also reaches named
    /// namespaces without a process).
    pub netns_source: String,
    pub kmsg: bool,
    /// node-problem-detector rule files (kernel-monitor.json format, the counter plugin's
    /// form too) applied to kernel lines besides the built-in rules.
    pub kmsg_rules: Vec<String>,
    /// Apply the built-in rules: NPD's kernel-monitor, readonly-monitor and counter rules, and
    /// vigil's own.
    pub kmsg_builtin_rules: bool,
    /// On a first start (nothing journaled yet), kernel lines older than this are not shipped:
    /// a Go duration as NPD's `lookback` (`"5m"`). After a restart the journal says where to
    /// resume.
    pub kmsg_lookback: String,
    /// Plain kernel lines at or above this syslog severity are shipped as logs (`"warning"`;
    /// `"off"`: none).
    pub kmsg_log_level: String,
    /// Plain lines per second per source, after a burst of `kmsg_log_burst`; more are dropped
    /// and counted.
    pub kmsg_log_rate: u32,
    pub kmsg_log_burst: u32,
    /// The contents of `kmsg_rules`, read by the supervisor at start (before any sandbox) and
    /// handed to the collector; a value set in a configuration file is replaced.
    pub kmsg_rule_files: Vec<RuleFileText>,
    pub ebpf_exec: bool,
    pub ebpf_flows: bool,
    /// Count TCP state changes with a raw tracepoint program the privhelper loads (CAP_BPF +
    /// CAP_PERFMON at start-up only), so that the connection counts walk the kernel's TCP hash
    /// (≈ 2.3 ms on a 24 GiB machine, whatever it holds) only after a change, or 10 s after
    /// the last walk. `false`: a walk every cycle.
    pub ebpf_tcp_changes: bool,
    /// Where flows are counted: `tracepoint` (CAP_BPF + CAP_PERFMON, needs BTF; the cheapest),
    /// `socket` (CAP_BPF + CAP_NET_RAW) or `tc` (CAP_BPF + CAP_NET_ADMIN).
    pub flows_source: String,
    /// Interfaces the tc flow program attaches to (empty: all but loopback).
    pub flow_interfaces: Vec<String>,
    pub flow_evict_ms: u64,
    /// Largest number of records in one batch sent to the shipper.
    pub max_batch_records: usize,
    /// Batches sent but not yet acknowledged by the shipper before the collector drops the
    /// oldest unsent data instead of blocking.
    pub max_unacked_batches: usize,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        CollectorConfig {
            interval_ms: 10_000,
            host: true,
            processes: true,
            process_fds: true,
            process_sockets: false,
            containers: true,
            disks: true,
            network: true,
            netns: true,
            netns_source: "proc".into(),
            disk_io: true,
            disk_devices_exclude: DISK_DEVICES_EXCLUDE.into(),
            paging: true,
            pressure: true,
            connections: true,
            process_io: false,
            process_iter: true,
            process_refresh_ms: 30_000,
            k8s_names: true,
            kmsg: true,
            kmsg_rules: Vec::new(),
            kmsg_builtin_rules: true,
            kmsg_lookback: "5m".into(),
            kmsg_log_level: "warning".into(),
            kmsg_log_rate: 10,
            kmsg_log_burst: 100,
            kmsg_rule_files: Vec::new(),
            ebpf_exec: true,
            ebpf_flows: true,
            ebpf_tcp_changes: true,
            flows_source: "tracepoint".into(),
            flow_interfaces: Vec::new(),
            flow_evict_ms: 10_000,
            max_batch_records: 256,
            max_unacked_batches: 64,
        }
    }
}

/// One rule file as read by the supervisor: its path (for messages) and its text.
/// Most bytes one `kmsg_rules` file may have (the supervisor reads it bounded, the collector
/// checks it again).
pub const KMSG_RULE_FILE_MAX: usize = 1 << 20;

/// Rule text all `kmsg_rules` files together may have: it travels in the collector's Init, one
/// frame of at most 64 KiB.
pub const KMSG_RULE_TEXT_MAX: usize = 48 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFileText {
    pub path: String,
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum FsyncPolicy {
    /// fsync after every batch appended (default).
    #[default]
    Batch,
    /// Leave it to the kernel's writeback (fast, loses the tail on power loss).
    Never,
    /// fsync at most once per `fsync_interval_ms`.
    Interval,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShipperConfig {
    /// Journal directory; default `<runtime_dir>/journal`.
    pub journal_dir: Option<String>,
    pub journal_max_bytes: u64,
    pub journal_segment_bytes: u64,
    pub fsync: FsyncPolicy,
    pub fsync_interval_ms: u64,
    /// JSON lines: `stdout`, a file path, or empty to disable.
    pub json_lines: String,
    pub otlp: Option<OtlpConfig>,
    pub prometheus: PrometheusConfig,
    /// Resource attributes added to everything shipped (`OTEL_RESOURCE_ATTRIBUTES`;
    /// `service.name` also from `OTEL_SERVICE_NAME`). A record's own attributes win.
    pub resource_attributes: BTreeMap<String, String>,
}

impl Default for ShipperConfig {
    fn default() -> Self {
        ShipperConfig {
            journal_dir: None,
            journal_max_bytes: 256 * 1024 * 1024,
            journal_segment_bytes: 8 * 1024 * 1024,
            fsync: FsyncPolicy::Batch,
            fsync_interval_ms: 1000,
            json_lines: "stdout".into(),
            otlp: None,
            prometheus: PrometheusConfig::default(),
            resource_attributes: BTreeMap::new(),
        }
    }
}

/// Request body compression (`OTEL_EXPORTER_OTLP_COMPRESSION`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    Gzip,
    None,
}

/// The OTLP/HTTP exporter. Every key mirrors an `OTEL_EXPORTER_OTLP_*` setting; the per-signal
/// tables (`[shipper.otlp.metrics]`, `[shipper.otlp.logs]`) override the common values for
/// one signal as the `OTEL_EXPORTER_OTLP_{METRICS,LOGS}_*` variables do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OtlpConfig {
    /// Base URL, e.g. `https://otlp.example.com:4318`; `v1/metrics` and `v1/logs` are appended.
    pub endpoint: String,
    /// Request headers (credentials: never logged, never shown by `vigil status`).
    pub headers: BTreeMap<String, Secret>,
    /// A file of `Name: value` lines merged into `headers` (read by the supervisor at start).
    pub headers_file: Option<String>,
    pub compression: Compression,
    pub timeout_ms: u64,
    /// PEM CA bundle to verify the server with (default: the host's bundle).
    pub ca_file: Option<String>,
    /// PEM client certificate and key for mutual TLS.
    pub client_cert_file: Option<String>,
    pub client_key_file: Option<String>,
    /// Name sent as SNI and checked against the certificate (default: the endpoint's host).
    pub server_name: Option<String>,
    /// Proxy for https:// endpoints (HTTP CONNECT); default `HTTPS_PROXY`. "" for none.
    pub https_proxy: Option<Secret>,
    /// Proxy for http:// endpoints; default `HTTP_PROXY`. "" for none.
    pub http_proxy: Option<Secret>,
    /// Hosts reached without the proxy; default `NO_PROXY`.
    pub no_proxy: Option<String>,
    pub metrics: SignalConfig,
    pub logs: SignalConfig,
    pub max_batch_records: usize,
    pub max_batch_delay_ms: u64,
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
}

impl Default for OtlpConfig {
    fn default() -> Self {
        OtlpConfig {
            endpoint: "http://localhost:4318".into(),
            headers: BTreeMap::new(),
            headers_file: None,
            compression: Compression::Gzip,
            timeout_ms: 10_000,
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            server_name: None,
            https_proxy: None,
            http_proxy: None,
            no_proxy: None,
            metrics: SignalConfig::default(),
            logs: SignalConfig::default(),
            max_batch_records: 2048,
            max_batch_delay_ms: 1000,
            retry_initial_ms: 500,
            retry_max_ms: 30_000,
        }
    }
}

/// Per-signal overrides of [`OtlpConfig`]; unset values come from the common ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct SignalConfig {
    /// The signal's full URL, used as is (no path appended).
    pub endpoint: Option<String>,
    pub headers: BTreeMap<String, Secret>,
    pub compression: Option<Compression>,
    pub timeout_ms: Option<u64>,
    pub ca_file: Option<String>,
    pub client_cert_file: Option<String>,
    pub client_key_file: Option<String>,
}

/// Pull-based export: the latest value of every metric in the Prometheus text format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct PrometheusConfig {
    /// `IP:PORT` to serve `GET /metrics` on (`VIGIL_PROMETHEUS_LISTEN`); empty: off.
    pub listen: String,
}

/// Sent by the supervisor to each child right after the hello.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InitConfig {
    pub role: Role,
    pub sandbox: SandboxPlan,
    /// Where the host view is, seen from this process (`/` once inside the virtual root).
    pub host_root: String,
    pub runtime_dir: String,
    pub hostname: String,
    /// The features the supervisor enabled (see the feature table in `policies`).
    pub enabled_features: Vec<crate::Feature>,
    /// The kernel reports a process's open descriptors as the size of /proc/PID/fd (Linux >=
    /// 6.2, probed by the supervisor): the collector counts them; else the privhelper does.
    pub fd_count_by_stat: bool,
    pub collector: CollectorConfig,
    pub shipper: ShipperConfig,
    /// Descriptors sent with this Init frame, in this order.
    pub attached: Vec<Attached>,
}

/// A descriptor the supervisor opened for a child before the view was built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Attached {
    /// Sealed memfd holding [`crate::delivery::ShipperInputs`] (postcard).
    ShipperInputs,
    /// Listening TCP socket of the Prometheus endpoint.
    PrometheusListener,
}

impl InitConfig {
    pub fn feature_enabled(&self, feature: crate::Feature) -> bool {
        self.enabled_features.contains(&feature)
    }
}

/// What a child must drop and lock itself into, computed by the supervisor (pure data) and
/// applied by the child before it reads any peer input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxPlan {
    /// Switch to these ids (setgroups, setresgid, setresuid); `None`: stay as started.
    pub ids: Option<Ids>,
    /// Capabilities kept in the permitted and effective sets (numbers as in linux/capability.h).
    /// Everything else is dropped from every set.
    pub keep_caps: Vec<u8>,
    /// Of those, the ones still needed once start-up is over (the privhelper's steady-state
    /// requests); the bounding set is trimmed to these at once, the permitted and effective
    /// sets when the start-up phase ends.
    pub steady_caps: Vec<u8>,
    /// Mark the process non-dumpable after the drop: its /proc entries become root-owned, so
    /// same-uid peers can neither ptrace it nor read its memory or descriptors (the
    /// privhelper, and any process that keeps a capability).
    pub non_dumpable: bool,
    /// The seccomp policy files (`policies/seccomp/NAME.policy`), the role's first, then what
    /// this run's configuration adds (e.g. `["shipper", "shipper-dns"]` for a backend reached
    /// by name). Empty: no filter.
    pub seccomp: Vec<String>,
    pub landlock: LandlockPlan,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ids {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct LandlockPlan {
    pub enabled: bool,
    /// Paths readable (files and directory listings) and nothing more.
    pub read_only: Vec<String>,
    /// Paths fully usable (create, write, remove).
    pub read_write: Vec<String>,
    /// TCP ports the role may connect to (ABI >= 4; others can connect nowhere).
    pub connect_tcp: Vec<u16>,
}
