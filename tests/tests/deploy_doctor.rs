//! The deployment files grant exactly what `vigil doctor --emit k8s|systemd|setcap` says the
//! configured features need: the non-privileged DaemonSet's capability add-list (a root
//! launch with that DaemonSet's vigil.toml: no_remount_root, so no SYS_ADMIN), the systemd unit's AmbientCapabilities= and CapabilityBoundingSet= and its other
//! launch lines (User=, ExecStart=, InaccessiblePaths=, /dev/kmsg) and the setcap line (an
//! agent-user launch) all agree with the binary (target/debug/vigil, next to this test's
//! deps/ directory).
//!
//! The files are written for a kernel with kernel.dmesg_restrict=1 (the common default), where
//! kmsg_events needs CAP_SYSLOG; on a host with dmesg_restrict=0 the doctor leaves SYSLOG out,
//! and the test accounts for exactly that difference.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn vigil() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let p = exe.parent().unwrap().parent().unwrap().join("vigil");
    assert!(
        p.exists(),
        "{} missing (cargo test --workspace builds it)",
        p.display()
    );
    p
}

fn doctor(args: &[&str]) -> String {
    doctor_env(args, &[])
}

fn doctor_env(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new(vigil())
        .arg("doctor")
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run vigil doctor");
    assert!(
        out.status.success(),
        "vigil doctor {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn set<'a>(it: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
    it.into_iter()
        .map(|c| {
            c.trim()
                .to_uppercase()
                .trim_start_matches("CAP_")
                .to_string()
        })
        .filter(|c| !c.is_empty())
        .collect()
}

/// The items of the first `add:` list after `capabilities:` in a YAML text.
fn k8s_add_list(yaml: &str) -> BTreeSet<String> {
    let mut lines = yaml
        .lines()
        .skip_while(|l| l.trim() != "capabilities:")
        .skip_while(|l| l.trim() != "add:")
        .skip(1);
    let mut out = Vec::new();
    for l in lines.by_ref() {
        let t = l.trim();
        if t.starts_with('#') {
            continue;
        }
        match t.strip_prefix("- ") {
            Some(item) => out.push(item.split('#').next().unwrap().trim().to_string()),
            None => break,
        }
    }
    set(out.iter().map(String::as_str))
}

fn directive(text: &str, key: &str) -> BTreeSet<String> {
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in:\n{text}"));
    set(line[key.len() + 1..].split_whitespace())
}

/// Granted beyond the doctor's list (each with its reason next to it in the files); must
/// match generate.py's BEYOND_DOCTOR. Empty: the files grant exactly what the doctor says.
const BEYOND_DOCTOR: &[&str] = &[];

/// What the files were written for, from what the doctor says on this host.
fn expected_from_doctor(doctor_set: BTreeSet<String>) -> BTreeSet<String> {
    let restrict = std::fs::read_to_string("/proc/sys/kernel/dmesg_restrict")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let mut want = doctor_set;
    want.extend(BEYOND_DOCTOR.iter().map(|s| s.to_string()));
    if restrict == "0" {
        // Here /dev/kmsg needs no CAP_SYSLOG; the files are for dmesg_restrict=1 hosts.
        assert!(!want.contains("SYSLOG"));
        want.insert("SYSLOG".into());
    }
    want
}

#[test]
fn non_privileged_daemonset_grants_the_doctor_add_list() {
    let dir = repo().join("deploy/kubernetes/non-privileged");
    // The DaemonSet's own configuration (its ConfigMap's vigil.toml): the runtime builds the
    // read-only view, so the supervisor does not (no_remount_root).
    let cfg = dir.join("vigil.toml");
    let toml = std::fs::read_to_string(&cfg).unwrap();
    assert!(
        toml.lines().any(|l| l.trim() == "no_remount_root = true"),
        "{toml}"
    );
    let emitted = doctor(&["--config", cfg.to_str().unwrap(), "--emit", "k8s"]);
    let doctor_set = k8s_add_list(&emitted);
    assert!(doctor_set.len() >= 3, "doctor emitted:\n{emitted}");
    for line in [
        "privileged: false",
        "allowPrivilegeEscalation: false",
        "readOnlyRootFilesystem: true",
        "drop: [\"ALL\"]",
    ] {
        assert!(emitted.contains(line), "doctor: {emitted}");
    }
    let manifest = std::fs::read_to_string(dir.join("vigil.yaml")).unwrap();
    let granted = k8s_add_list(&manifest);
    assert_eq!(
        granted,
        expected_from_doctor(doctor_set.clone()),
        "deploy/kubernetes/non-privileged/vigil.yaml add-list vs `vigil doctor --emit k8s`"
    );
    // The manifest's add-list parser is not vacuous, and no SYS_ADMIN is granted.
    assert!(granted.contains("SETUID") && granted.contains("BPF"));
    assert!(!granted.contains("SYS_ADMIN"), "{granted:?}");
    // It is the configuration that spares SYS_ADMIN: the same file with the supervisor's own
    // view (VIGIL_NO_REMOUNT_ROOT=0 overrides the key) needs exactly SYS_ADMIN more.
    let with_view = k8s_add_list(&doctor_env(
        &["--config", cfg.to_str().unwrap(), "--emit", "k8s"],
        &[("VIGIL_NO_REMOUNT_ROOT", "0")],
    ));
    let extra: BTreeSet<String> = with_view.difference(&doctor_set).cloned().collect();
    assert_eq!(extra, set(["SYS_ADMIN"]), "{with_view:?} vs {doctor_set:?}");
}

#[test]
fn systemd_unit_and_setcap_line_match_the_doctor() {
    let unit = std::fs::read_to_string(repo().join("deploy/systemd/vigil.service")).unwrap();
    // The unit's launch: the `vigil` user, default features, host root /.
    let emitted = doctor(&["--user", "vigil", "--host-root", "/", "--emit", "systemd"]);
    let ambient = directive(&emitted, "AmbientCapabilities");
    let bounding = directive(&emitted, "CapabilityBoundingSet");
    assert_eq!(ambient, bounding);
    let want = expected_from_doctor(bounding);
    assert_eq!(
        directive(&unit, "AmbientCapabilities"),
        want,
        "vigil.service AmbientCapabilities= vs `vigil doctor --emit systemd`"
    );
    assert_eq!(
        directive(&unit, "CapabilityBoundingSet"),
        want,
        "vigil.service CapabilityBoundingSet= vs `vigil doctor --emit systemd`"
    );
    // Every other line the doctor emits is in the unit verbatim: User=, ExecStart= (as the
    // agent user, --no-remount-root), InaccessiblePaths= (the read-only view's prune list),
    // the /dev/kmsg lines.
    let mut compared = 0;
    for line in emitted
        .lines()
        .filter(|l| l.contains('=') && !l.starts_with('#'))
    {
        let key = line.split('=').next().unwrap();
        if matches!(key, "AmbientCapabilities" | "CapabilityBoundingSet") {
            continue;
        }
        compared += 1;
        assert!(
            unit.lines().any(|l| l.trim() == line),
            "vigil.service lacks `{line}` (vigil doctor --emit systemd)"
        );
    }
    assert!(compared >= 5, "doctor emitted:\n{emitted}");

    let setcap = doctor(&["--host-root", "/", "--emit", "setcap"]);
    let caps = setcap
        .split_whitespace()
        .nth(1)
        .and_then(|w| w.strip_suffix("+ep"))
        .unwrap_or_else(|| panic!("setcap line: {setcap}"));
    assert_eq!(expected_from_doctor(set(caps.split(','))), want, "{setcap}");
    let generator = std::fs::read_to_string(repo().join("deploy/kubernetes/generate.py")).unwrap();
    let beyond: Vec<String> = BEYOND_DOCTOR.iter().map(|c| format!("\"{c}\"")).collect();
    assert!(
        generator.contains(&format!("BEYOND_DOCTOR = [{}]", beyond.join(", "))),
        "generate.py BEYOND_DOCTOR differs from {BEYOND_DOCTOR:?}"
    );

    // The container starts the supervisor as root: its add list is the unit's plus exactly
    // what a root launch does itself (user switch, bounding sets, journal chown, signals
    // across uids). The view is the runtime's there, as it is systemd's for the unit: no
    // SYS_ADMIN in either.
    let manifest =
        std::fs::read_to_string(repo().join("deploy/kubernetes/non-privileged/vigil.yaml"))
            .unwrap();
    let k8s = k8s_add_list(&manifest);
    assert!(k8s.is_superset(&want), "{k8s:?} vs {want:?}");
    let extra: BTreeSet<String> = k8s.difference(&want).cloned().collect();
    assert_eq!(extra, set(["SETUID", "SETGID", "SETPCAP", "CHOWN", "KILL"]));
}
