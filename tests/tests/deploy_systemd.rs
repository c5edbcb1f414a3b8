//! The hardened systemd unit (deploy/systemd/vigil.service): `systemd-analyze security
//! --offline=yes` (systemd 252) scores it at most 4.0, and every exposure item it reports is
//! one the unit's comments justify (a new one fails the test). `systemd-analyze verify`
//! finds no syntax problem.
//!
//! Why not 2.0: root (user switching), host network, AF_PACKET/NETLINK/INET, SYS_ADMIN,
//! SYS_PTRACE, SETUID/SETGID/SETPCAP, CHOWN, BPF, NET_RAW, SYSLOG, KILL, @mount, @privileged,
//! mnt/net namespaces, full /proc and /dev/kmsg are what the features need, and they add up
//! to 4.0 (see the unit's header).

use std::path::{Path, PathBuf};
use std::process::Command;

fn unit() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("deploy/systemd/vigil.service")
}

/// What the features need (see the unit's header).
const MAX_EXPOSURE: f64 = 4.0;

/// Exposure items the unit accepts, each needed by a feature (see the unit's comments).
const ACCEPTED: &[&str] = &[
    "SystemCallFilter=~@privileged",
    "SystemCallFilter=~@mount",
    "RootDirectory=/RootImage=",
    "User=/DynamicUser=",
    "AmbientCapabilities=",
    "CapabilityBoundingSet=~CAP_KILL",
    "ProtectKernelLogs=",
    "CapabilityBoundingSet=~CAP_BPF",
    "RestrictNamespaces=~net",
    "RestrictNamespaces=~mnt",
    "CapabilityBoundingSet=~CAP_(CHOWN|FSETID|SETFCAP)",
    // CAP_DAC_READ_SEARCH: the privhelper lists other users' /proc/PID/fd (fd counts).
    "CapabilityBoundingSet=~CAP_(DAC_*|FOWNER|IPC_OWNER)",
    "CapabilityBoundingSet=~CAP_SET(UID|GID|PCAP)",
    "RestrictAddressFamilies=~AF_PACKET",
    "RestrictAddressFamilies=~AF_NETLINK",
    "RestrictAddressFamilies=~AF_UNIX",
    "RestrictAddressFamilies=~AF_(INET|INET6)",
    "CapabilityBoundingSet=~CAP_SYS_PTRACE",
    "ProtectProc=",
    "ProcSubset=",
    "CapabilityBoundingSet=~CAP_NET_(BIND_SERVICE|BROADCAST|RAW)",
    "CapabilityBoundingSet=~CAP_SYS_ADMIN",
    "PrivateNetwork=",
    "PrivateUsers=",
    "CapabilityBoundingSet=~CAP_SYSLOG",
    "DeviceAllow=",
    "IPAddressDeny=",
];

struct Analysis {
    score: f64,
    exposed: Vec<String>,
    text: String,
}

fn analyze(path: &Path) -> Analysis {
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(path)
        .output()
        .expect("systemd-analyze missing: apt-get install systemd (deploy/ci-deps.sh)");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no exposure line:\n{text}"));
    let score: f64 = line
        .split(':')
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("cannot parse {line:?}"));
    let exposed = text
        .lines()
        .filter_map(|l| l.strip_prefix("✗ "))
        .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
        .collect();
    Analysis {
        score,
        exposed,
        text,
    }
}

fn unexpected(a: &Analysis) -> Vec<String> {
    a.exposed
        .iter()
        .filter(|e| !ACCEPTED.contains(&e.as_str()))
        .cloned()
        .collect()
}

#[test]
fn unit_exposure_is_bounded_and_every_item_justified() {
    let a = analyze(&unit());
    eprintln!("systemd-analyze security --offline=yes: {}", a.score);
    assert!(
        a.score <= MAX_EXPOSURE,
        "exposure {} > {MAX_EXPOSURE}:\n{}",
        a.score,
        a.text
    );
    assert!(a.exposed.len() >= 10, "parsed too few items:\n{}", a.text);
    let extra = unexpected(&a);
    assert!(
        extra.is_empty(),
        "exposure items not justified: {extra:?}\n{}",
        a.text
    );

    // The analysis does see a loosened unit: drop two settings, both checks trip.
    let text = std::fs::read_to_string(unit()).unwrap();
    let loose = text
        .replace("NoNewPrivileges=yes\n", "")
        .replace("ProtectKernelModules=yes\n", "");
    assert_ne!(loose, text);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("vigil.service");
    std::fs::write(&p, loose).unwrap();
    let b = analyze(&p);
    assert!(b.score > a.score, "{} !> {}", b.score, a.score);
    let extra = unexpected(&b);
    assert!(
        extra.iter().any(|e| e == "NoNewPrivileges=")
            && extra.iter().any(|e| e == "ProtectKernelModules="),
        "{extra:?}"
    );
}

#[test]
fn unit_keeps_the_settings_the_agent_relies_on() {
    let text = std::fs::read_to_string(unit()).unwrap();
    let has = |l: &str| text.lines().any(|x| x.trim() == l);
    for l in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "RuntimeDirectory=vigil",
        "RuntimeDirectoryPreserve=yes",
        "ReadWritePaths=/run/vigil",
        "PrivateTmp=yes",
        "ProtectKernelLogs=no",
        "RestrictNamespaces=mnt net",
        "RestrictAddressFamilies=AF_UNIX AF_NETLINK AF_INET AF_INET6 AF_PACKET",
        "SystemCallArchitectures=native",
        "LockPersonality=yes",
        "MemoryDenyWriteExecute=yes",
        "RestrictRealtime=yes",
    ] {
        assert!(has(l), "vigil.service lacks {l}");
    }
    assert!(text.contains("--runtime-dir /run/vigil"));
    // The outer syscall filter must let the agent build its view and its inner sandboxes.
    let filter = text
        .lines()
        .find(|l| l.starts_with("SystemCallFilter=@system-service"))
        .expect("allow-list filter");
    for s in [
        "@mount",
        "bpf",
        "perf_event_open",
        "seccomp",
        "landlock_create_ruleset",
        "landlock_add_rule",
        "landlock_restrict_self",
    ] {
        assert!(filter.split_whitespace().any(|w| w == s), "{s} not allowed");
    }

    // systemd itself parses every directive (unknown or misspelt ones are reported).
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(unit())
        .output()
        .expect("systemd-analyze");
    let err = String::from_utf8_lossy(&out.stderr);
    let problems: Vec<&str> = err
        .lines()
        .filter(|l| !l.contains("is not executable") && !l.trim().is_empty())
        .collect();
    assert!(problems.is_empty(), "systemd-analyze verify:\n{err}");
}
