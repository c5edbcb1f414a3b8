//! `vigil doctor`: what works on this host with this config and these privileges, what is
//! missing and why, and the minimal capability add-list in the forms deployments need.

use std::fmt::Write;

use caps::Capability;
use vigil_ipc_proto::{AgentConfig, Feature};
use vigil_policies::features::{
    self, Evaluation, KernelFacts, Launch, names, render_k8s, render_setcap, render_systemd,
    required_caps,
};

use crate::cli::Emit;
use crate::rootfs;

pub const BINARY: &str = "/usr/local/bin/vigil";

/// Where the unit keeps the journal and the status socket (systemd's `RuntimeDirectory=vigil`).
pub const SYSTEMD_RUNTIME_DIR: &str = "/run/vigil";

/// What the read-only mount mode hides, as systemd `InaccessiblePaths=` entries (`-`: a path
/// this host lacks is fine): the same list the supervisor's own view prunes.
pub fn inaccessible_paths() -> String {
    rootfs::PRUNE_DIRS
        .iter()
        .chain(rootfs::PRUNE_FILES_KNOWN)
        .map(|p| format!("-/{p}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The launch-dependent lines of a systemd unit that starts the supervisor as the agent user
/// holding only the features' capabilities (deploy/systemd/vigil.service has them verbatim):
/// systemd builds the read-only view (so `--no-remount-root`), and /dev/kmsg is reachable only
/// when kernel events are configured.
pub fn systemd_block(cfg: &AgentConfig, caps: &[Capability]) -> String {
    let mut s = format!("User={}\n", cfg.user);
    s.push_str(&render_systemd(caps));
    s.push_str(&format!(
        "ExecStart={BINARY} run --user {} --no-remount-root --runtime-dir {SYSTEMD_RUNTIME_DIR}\n",
        cfg.user
    ));
    s.push_str(&format!("InaccessiblePaths={}\n", inaccessible_paths()));
    let (allow, notes) = crate::delivery::ip_address_allow(cfg);
    for n in notes {
        s.push_str(&format!("# {n}\n"));
    }
    s.push_str(&allow);
    s.push('\n');
    // The unit denies every bind (SocketBindDeny=any): the Prometheus port is the exception.
    if let Ok(sa) = vigil_ipc_proto::delivery::parse_listen("", &cfg.shipper.prometheus.listen) {
        s.push_str(&format!("SocketBindAllow=tcp:{}\n", sa.port()));
    }
    if (features::row(Feature::KmsgEvents).configured)(cfg) {
        s.push_str("ProtectKernelLogs=no\nDeviceAllow=/dev/kmsg r\n");
    } else {
        s.push_str("ProtectKernelLogs=yes\n");
    }
    s
}

fn opt(v: Option<i32>) -> String {
    v.map_or("unknown".into(), |v| v.to_string())
}

/// The "kernel" block of the text report: settings and facilities that decide features.
fn kernel_section(cfg: &AgentConfig, facts: &KernelFacts) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "kernel");
    let _ = writeln!(
        s,
        "  kernel.perf_event_paranoid      {}  (raw and BTF tracepoints and tc use bpf() only: their capabilities suffice whatever the value; perf_event_open would need CAP_SYS_ADMIN above 2)",
        opt(facts.perf_event_paranoid)
    );
    let _ = writeln!(
        s,
        "  kernel.dmesg_restrict           {}  ({})",
        opt(facts.dmesg_restrict),
        if facts.dmesg_restrict == Some(0) {
            "/dev/kmsg readable without CAP_SYSLOG"
        } else {
            "reading /dev/kmsg needs CAP_SYSLOG"
        }
    );
    let _ = writeln!(
        s,
        "  kernel.unprivileged_bpf_disabled {}  (irrelevant with CAP_BPF; since Linux 6.5 it does not cover the collector's lookups in the flow maps the privhelper passed)",
        opt(facts.unprivileged_bpf_disabled)
    );
    let _ = writeln!(
        s,
        "  BTF (/sys/kernel/btf/vmlinux)   {}",
        if facts.btf {
            "present"
        } else {
            "absent: eBPF exec/exit is off"
        }
    );
    let _ = writeln!(
        s,
        "  Landlock ABI                    {}",
        if facts.landlock_abi > 0 {
            facts.landlock_abi.to_string()
        } else {
            "unsupported: children are confined by seccomp and the virtual root only".into()
        }
    );
    let _ = writeln!(s, "  cgroups                         {}", facts.cgroup);
    let _ = writeln!(
        s,
        "  pressure stall information      {}",
        if facts.psi {
            "present (/proc/pressure)"
        } else {
            "absent: pressure_metrics is off"
        }
    );
    let kubelet = std::path::Path::new(&cfg.host_root).join("var/log/pods");
    let _ = writeln!(
        s,
        "  kubelet logs                    {} {}",
        kubelet.display(),
        if kubelet.is_dir() {
            "present: k8s_names reads pod and container names there"
        } else {
            "absent (not a Kubernetes node, or not mounted): no Kubernetes names"
        }
    );
    let _ = writeln!(
        s,
        "  /dev/kmsg                       {}",
        if facts.kmsg { "present" } else { "absent" }
    );
    s
}

pub fn render(cfg: &AgentConfig, facts: &KernelFacts, eval: &Evaluation, emit: Emit) -> String {
    // A Kubernetes container starts the supervisor as uid 0 with an add list; a systemd unit
    // (User= + AmbientCapabilities=) or a setcap'd binary starts it as the agent user.
    let root = required_caps(cfg, facts, Launch::ROOT);
    let agent = required_caps(cfg, facts, Launch::AGENT_USER);
    match emit {
        Emit::Setcap => return render_setcap(&agent, BINARY) + "\n",
        Emit::Systemd => return systemd_block(cfg, &agent),
        Emit::K8s => return render_k8s(&root),
        Emit::Text => {}
    }
    let mut s = kernel_section(cfg, facts);
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "{:<19} {:<11} {:<4} {:<40} why",
        "feature", "process", "on", "needs"
    );
    for f in &eval.features {
        let needs = names(features::row(f.feature).needed_caps(facts));
        let _ = writeln!(
            s,
            "{:<19} {:<11} {:<4} {:<40} {}",
            f.feature.as_str(),
            f.process.as_str(),
            if f.enabled { "yes" } else { "no" },
            if needs.is_empty() { "-".into() } else { needs },
            f.reason
        );
    }
    if let Some(w) = eval.warning() {
        let _ = writeln!(s, "\nmissing: {w}");
    }
    let _ = writeln!(s, "\ndelivery");
    for l in crate::delivery::describe(cfg) {
        let _ = writeln!(s, "  {l}");
    }
    if !cfg.shipper.prometheus.listen.is_empty() {
        let _ = writeln!(
            s,
            "  Prometheus endpoint: http://{}/metrics",
            cfg.shipper.prometheus.listen
        );
    }
    let _ = writeln!(
        s,
        "\nminimal capability add-list for the configured features\n  started as root (container add list): {}\n  started as the agent user (systemd User=, setcap): {}",
        names(&root),
        names(&agent)
    );
    let _ = writeln!(
        s,
        "\n# file capabilities (run as the agent user)\n{}",
        render_setcap(&agent, BINARY)
    );
    let _ = writeln!(
        s,
        "\n# systemd unit ([Service], started as the agent user)\n{}",
        systemd_block(cfg, &agent)
    );
    let _ = writeln!(s, "# Kubernetes container\n{}", render_k8s(&root));
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use caps::Capability::*;

    #[test]
    fn systemd_block_follows_the_config() {
        let cfg = AgentConfig {
            user: "vigil".into(),
            ..AgentConfig::default()
        };
        let b = systemd_block(&cfg, &[CAP_NET_RAW, CAP_BPF]);
        let lines: Vec<&str> = b.lines().collect();
        assert_eq!(lines[0], "User=vigil");
        assert!(lines.contains(&"AmbientCapabilities=CAP_NET_RAW CAP_BPF"));
        assert!(lines.contains(&"CapabilityBoundingSet=CAP_NET_RAW CAP_BPF"));
        assert!(lines.contains(
            &"ExecStart=/usr/local/bin/vigil run --user vigil --no-remount-root --runtime-dir /run/vigil"
        ));
        let ip = lines
            .iter()
            .find_map(|l| l.strip_prefix("InaccessiblePaths="))
            .unwrap();
        for p in [
            "-/boot",
            "-/root",
            "-/home",
            "-/srv",
            "-/vmlinuz",
            "-/initrd.img",
        ] {
            assert!(ip.split(' ').any(|x| x == p), "{p} in {ip}");
        }
        assert!(lines.contains(&"DeviceAllow=/dev/kmsg r"));
        assert!(lines.contains(&"IPAddressAllow=localhost"));
        let mut remote = cfg.clone();
        remote.shipper.otlp = Some(vigil_ipc_proto::OtlpConfig {
            endpoint: "https://192.0.2.10:4318".into(),
            ..Default::default()
        });
        remote.shipper.prometheus.listen = "0.0.0.0:9464".into();
        let b = systemd_block(&remote, &[]);
        assert!(
            b.lines()
                .any(|l| l == "IPAddressAllow=localhost 192.0.2.10")
        );
        assert!(b.lines().any(|l| l == "SocketBindAllow=tcp:9464"));
        assert!(!systemd_block(&cfg, &[]).contains("SocketBindAllow"));
        assert!(lines.contains(&"ProtectKernelLogs=no"));
        let mut quiet = cfg.clone();
        quiet.collector.kmsg = false;
        quiet.user = "agent".into();
        let b = systemd_block(&quiet, &[]);
        assert!(b.starts_with("User=agent\n") && b.contains("--user agent "));
        assert!(b.contains("ProtectKernelLogs=yes\n") && !b.contains("DeviceAllow"));
    }
}
