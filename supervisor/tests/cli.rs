//! The binary's command line (this integration test also makes cargo build `vigil` for the
//! workspace's end-to-end tests in tests/).

use std::process::Command;

fn vigil(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vigil"))
        .args(args)
        .env_remove("VIGIL_ENFORCE_SYS_CAPS")
        .output()
        .expect("run vigil");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_lists_the_commands_but_not_the_internal_one() {
    let (ok, out, _) = vigil(&["--help"]);
    assert!(ok);
    for c in ["run", "doctor", "status"] {
        assert!(out.contains(c), "{out}");
    }
    assert!(!out.contains("__child"), "{out}");
}

#[test]
fn doctor_emits_consistent_snippets() {
    let (ok, setcap, err) = vigil(&["doctor", "--emit", "setcap"]);
    assert!(ok, "{err}");
    let (_, systemd, _) = vigil(&["doctor", "--emit", "systemd"]);
    let (_, k8s, _) = vigil(&["doctor", "--emit", "k8s"]);
    let caps: Vec<String> = setcap
        .trim()
        .strip_prefix("setcap ")
        .and_then(|s| s.split('+').next())
        .expect("setcap line")
        .split(',')
        .map(|c| c.trim_start_matches("cap_").to_uppercase())
        .collect();
    assert!(caps.len() >= 3, "{setcap}");
    for c in &caps {
        assert!(systemd.contains(&format!("CAP_{c}")), "{c} in {systemd}");
        assert!(k8s.contains(&format!("- {c}\n")), "{c} in {k8s}");
    }
    assert!(k8s.contains("allowPrivilegeEscalation: false"));
}

#[test]
fn bad_config_is_a_clear_error() {
    let (ok, _, err) = vigil(&["doctor", "--config", "/nonexistent/vigil.toml"]);
    assert!(!ok);
    assert!(err.contains("/nonexistent/vigil.toml"), "{err}");
    let (ok, _, err) = vigil(&["status", "--runtime-dir", "/nonexistent-vigil"]);
    assert!(!ok);
    assert!(err.contains("cannot reach the agent"), "{err}");
}
