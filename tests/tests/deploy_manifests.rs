//! Kubernetes manifests (deploy/kubernetes/): generated files up to date, valid against the
//! Kubernetes OpenAPI schemas (kubernetes-validate, offline), the security settings each mode
//! promises, and checkov with no failure that is not skipped with a reason.
//!
//! Tools: `deploy/ci-deps.sh` (python venv /opt/vigil-deploy-venv, or $VIGIL_DEPLOY_VENV).
//! A missing tool is a test failure, never a skip.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const MODES: &[&str] = &["full", "read-only", "minimal", "non-privileged"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn venv_bin(tool: &str) -> PathBuf {
    let venv = std::env::var("VIGIL_DEPLOY_VENV").unwrap_or("/opt/vigil-deploy-venv".into());
    let p = Path::new(&venv).join("bin").join(tool);
    assert!(
        p.exists(),
        "{} missing: run deploy/ci-deps.sh (installs kubernetes-validate and checkov)",
        p.display()
    );
    p
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn manifest(mode: &str) -> PathBuf {
    repo()
        .join("deploy/kubernetes")
        .join(mode)
        .join("vigil.yaml")
}

/// The YAML documents of a file, parsed by PyYAML (checkov's dependency) into JSON.
fn docs(path: &Path) -> Vec<Value> {
    let (ok, out) = run(Command::new(venv_bin("python")).args([
        "-c",
        "import json,sys,yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))",
        path.to_str().unwrap(),
    ]));
    assert!(ok, "YAML of {} does not parse: {out}", path.display());
    serde_json::from_str(&out).unwrap()
}

fn kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}

#[test]
fn generated_manifests_are_up_to_date() {
    let (ok, out) = run(Command::new("python3")
        .arg(repo().join("deploy/kubernetes/generate.py"))
        .arg("--check"));
    assert!(
        ok,
        "deploy/kubernetes differs from generate.py's output:\n{out}"
    );
}

fn validate(files: &[PathBuf]) -> (bool, String) {
    run(Command::new(venv_bin("kubernetes-validate"))
        .args(["--strict", "--kubernetes-version", "1.30.0"])
        .args(files))
}

#[test]
fn manifests_validate_against_kubernetes_schemas() {
    let files: Vec<PathBuf> = MODES.iter().map(|m| manifest(m)).collect();
    let (ok, out) = validate(&files);
    assert!(ok, "kubernetes-validate failed:\n{out}");
    // 4 resources in each of the 4 files.
    assert_eq!(out.matches("passed for resource").count(), 16, "{out}");

    // The validator does reject a broken manifest (a misspelt field, a wrong type).
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(manifest("non-privileged")).unwrap();
    for (from, to) in [
        (
            "readOnlyRootFilesystem: true",
            "readOnlyRootFilesytem: true",
        ),
        ("hostPID: true", "hostPID: \"yes\""),
    ] {
        assert!(text.contains(from));
        let bad = dir.path().join("bad.yaml");
        std::fs::write(&bad, text.replacen(from, to, 1)).unwrap();
        let (ok, out) = validate(&[bad]);
        assert!(!ok, "kubernetes-validate accepted `{to}`:\n{out}");
    }
}

#[test]
fn every_mode_has_its_promised_settings() {
    for mode in MODES {
        let d = docs(&manifest(mode));
        let sa = kind(&d, "ServiceAccount");
        assert_eq!(sa["automountServiceAccountToken"], false, "{mode}");
        let cm = kind(&d, "ConfigMap");
        let toml = cm["data"]["vigil.toml"].as_str().unwrap();
        let on_disk = std::fs::read_to_string(
            repo()
                .join("deploy/kubernetes")
                .join(mode)
                .join("vigil.toml"),
        )
        .unwrap();
        assert_eq!(toml, on_disk, "{mode}: ConfigMap and vigil.toml differ");
        let want_mode = if *mode == "non-privileged" {
            "read-only"
        } else {
            mode
        };
        assert!(
            toml.contains(&format!("mount_mode = \"{want_mode}\"")),
            "{mode}: {toml}"
        );
        assert!(toml.contains("host_root = \"/hostfs\""), "{mode}");
        // Only the non-privileged variant leaves the view to the runtime (no SYS_ADMIN there);
        // the privileged ones build the supervisor's own.
        assert_eq!(
            toml.lines().any(|l| l.trim() == "no_remount_root = true"),
            *mode == "non-privileged",
            "{mode}: {toml}"
        );

        let ds = kind(&d, "DaemonSet");
        let pod = &ds["spec"]["template"]["spec"];
        assert_eq!(pod["hostPID"], true, "{mode}");
        assert_eq!(pod["hostNetwork"], true, "{mode}");
        assert_eq!(pod["automountServiceAccountToken"], false, "{mode}");
        let c = &pod["containers"][0];
        let sc = &c["securityContext"];
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{mode}");
        assert_eq!(sc["runAsUser"], 0, "{mode}");
        // Exec probes are `vigil status`, or absent with the reason (generate.py EXEC_PROBES:
        // an exec probe would run inside the agent's host view, see deploy_container.rs).
        let raw = std::fs::read_to_string(manifest(mode)).unwrap();
        for (probe, check) in [
            ("livenessProbe", "CKV_K8S_8"),
            ("readinessProbe", "CKV_K8S_9"),
        ] {
            if c.get(probe).is_some() {
                let cmd = &c[probe]["exec"]["command"];
                assert_eq!(cmd[0], "/usr/local/bin/vigil", "{mode} {probe}");
                assert_eq!(cmd[1], "status", "{mode} {probe}");
            } else {
                assert!(
                    raw.contains(&format!("{check}=no ")) && raw.contains("EXEC_PROBES"),
                    "{mode}: {probe} missing without a reason"
                );
            }
        }
        for r in ["requests", "limits"] {
            assert!(c["resources"][r]["cpu"].is_string(), "{mode} {r}");
            assert!(c["resources"][r]["memory"].is_string(), "{mode} {r}");
        }

        let vols = pod["volumes"].as_array().unwrap();
        let mounts = c["volumeMounts"].as_array().unwrap();
        let mount = |path: &str| {
            mounts
                .iter()
                .find(|m| m["mountPath"] == path)
                .unwrap_or_else(|| panic!("{mode}: nothing mounted at {path}"))
        };
        let vol = |name: &Value| vols.iter().find(|v| v["name"] == *name).unwrap();
        // Runtime dir: host directory, created if missing, same path inside, writable.
        let rt = mount("/run/vigil");
        assert_eq!(rt["readOnly"], false);
        assert_eq!(vol(&rt["name"])["hostPath"]["path"], "/run/vigil");
        assert_eq!(vol(&rt["name"])["hostPath"]["type"], "DirectoryOrCreate");
        for f in ["/etc/passwd", "/etc/group"] {
            let m = mount(f);
            assert_eq!(m["readOnly"], true, "{mode} {f}");
            assert_eq!(vol(&m["name"])["hostPath"]["path"], f);
        }
        let sys = mount("/hostfs/sys");
        assert_eq!(sys["readOnly"], true, "{mode}");
        // Every host mount other than the runtime dir is read-only, except the full mode's root.
        for m in mounts {
            let v = vol(&m["name"]);
            if v.get("hostPath").is_none() || m["mountPath"] == "/run/vigil" {
                continue;
            }
            let writable = m["readOnly"] != true;
            let allowed = *mode == "full" && m["mountPath"] == "/hostfs";
            assert_eq!(writable, allowed, "{mode}: {m}");
        }
        if *mode == "minimal" {
            assert!(
                mounts.iter().all(|m| m["mountPath"] != "/hostfs"),
                "minimal mounts the whole host root"
            );
            mount("/hostfs/etc");
            mount("/hostfs/usr");
        } else {
            assert_eq!(vol(&mount("/hostfs")["name"])["hostPath"]["path"], "/");
        }

        if *mode == "non-privileged" {
            // Kubernetes names from the kubelet's log directories, read-only, no token.
            for d in ["pods", "containers"] {
                let m = mount(&format!("/hostfs/var/log/{d}"));
                assert_eq!(m["readOnly"], true, "{d}");
                assert_eq!(vol(&m["name"])["hostPath"]["path"], format!("/var/log/{d}"));
            }
            assert_eq!(sc["privileged"], false);
            assert_eq!(sc["allowPrivilegeEscalation"], false);
            assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
            assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
            let add = sc["capabilities"]["add"].as_array().unwrap();
            assert!(add.len() > 3);
            assert!(!add.contains(&serde_json::json!("SYS_ADMIN")), "{add:?}");
            assert!(sc.get("appArmorProfile").is_none(), "no mount(2): no need");
        } else {
            assert_eq!(sc["privileged"], true, "{mode}");
        }
    }
}

/// checkov results: (failed check ids with resource, skipped (id, justification)).
fn checkov(dir: &Path) -> (Vec<String>, Vec<(String, String)>) {
    let (_, out) = run(Command::new(venv_bin("checkov"))
        .args(["--framework", "kubernetes", "--skip-download", "-o", "json"])
        .arg("-d")
        .arg(dir));
    let start = out
        .find(['{', '['])
        .unwrap_or_else(|| panic!("checkov said:\n{out}"));
    let v: Value = serde_json::Deserializer::from_str(&out[start..])
        .into_iter::<Value>()
        .next()
        .unwrap()
        .unwrap_or_else(|e| panic!("checkov output is not JSON ({e}):\n{out}"));
    let reports = if v.is_array() {
        v.as_array().unwrap().clone()
    } else {
        vec![v]
    };
    let mut failed = Vec::new();
    let mut skipped = Vec::new();
    for r in reports {
        let res = &r["results"];
        for c in res["failed_checks"].as_array().into_iter().flatten() {
            failed.push(format!(
                "{} {} {}",
                c["check_id"].as_str().unwrap_or("?"),
                c["resource"].as_str().unwrap_or("?"),
                c["file_path"].as_str().unwrap_or("?")
            ));
        }
        for c in res["skipped_checks"].as_array().into_iter().flatten() {
            skipped.push((
                c["check_id"].as_str().unwrap_or("?").to_string(),
                c["check_result"]["suppress_comment"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            ));
        }
    }
    (failed, skipped)
}

#[test]
fn checkov_has_no_unjustified_failure() {
    let (failed, skipped) = checkov(&repo().join("deploy/kubernetes"));
    assert!(
        failed.is_empty(),
        "checkov failures (fix them, or skip with a justification annotation and a comment at the setting):\n{}",
        failed.join("\n")
    );
    assert!(!skipped.is_empty());
    for (id, why) in &skipped {
        assert!(
            why.split_whitespace().count() >= 4,
            "checkov skip {id} has no real justification: {why:?}"
        );
    }
    // Every skipped check is explained next to the setting too (a `checkov CKV_...` comment or
    // the generator's reason table).
    let generator = std::fs::read_to_string(repo().join("deploy/kubernetes/generate.py")).unwrap();
    for (id, _) in &skipped {
        assert!(
            generator.contains(id.as_str()),
            "{id} not explained in generate.py"
        );
    }

    // Without the skip annotations the same manifest fails: the checks do run. (checkov
    // ignores hidden directories: no leading dot in the name.)
    let dir = tempfile::Builder::new()
        .prefix("vigil-checkov-")
        .tempdir()
        .unwrap();
    let text = std::fs::read_to_string(manifest("non-privileged")).unwrap();
    // The annotations stay, under a key checkov does not read.
    let stripped = text.replace("checkov.io/skip", "example.org/note");
    assert_ne!(stripped, text);
    std::fs::write(dir.path().join("vigil.yaml"), stripped).unwrap();
    let (failed, _) = checkov(dir.path());
    for id in ["CKV_K8S_17", "CKV_K8S_19", "CKV_K8S_23"] {
        assert!(
            failed.iter().any(|f| f.starts_with(id)),
            "{id} not reported without its skip: {failed:?}"
        );
    }
    // "Do not admit containers with CAP_SYS_ADMIN" passes on its own: no skip needed.
    assert!(
        !failed.iter().any(|f| f.starts_with("CKV_K8S_39")),
        "{failed:?}"
    );
}
