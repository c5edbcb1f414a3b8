//! Configuration layering: embedded defaults ← TOML file ← `VIGIL_*` environment ← flags.

use vigil_ipc_proto::{AgentConfig, MountMode};

use crate::cli::ConfigArgs;
use crate::error::{Error, Result};

fn parse_bool(var: &str, v: &str) -> Result<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => Err(Error::Env {
            var: var.into(),
            msg: format!("not a boolean: {v:?}"),
        }),
    }
}

fn parse_mode(v: &str) -> Option<MountMode> {
    Some(match v {
        "full" => MountMode::Full,
        "read-only" | "readonly" | "ro" => MountMode::ReadOnly,
        "minimal" => MountMode::Minimal,
        _ => return None,
    })
}

/// Build the configuration from all layers. `env` is passed in so tests need not touch the
/// process environment.
pub fn load(args: &ConfigArgs, env: &dyn Fn(&str) -> Option<String>) -> Result<AgentConfig> {
    let mut cfg = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| Error::Config {
                path: path.clone(),
                msg: e.to_string(),
            })?;
            toml::from_str(&text).map_err(|e| Error::Config {
                path: path.clone(),
                msg: e.to_string(),
            })?
        }
        None => AgentConfig::default(),
    };

    if let Some(v) = env("VIGIL_USER") {
        cfg.user = v;
    }
    if let Some(v) = env("VIGIL_MOUNT_MODE") {
        cfg.mount_mode = parse_mode(&v).ok_or_else(|| Error::Env {
            var: "VIGIL_MOUNT_MODE".into(),
            msg: format!("{v:?} is not full, read-only or minimal"),
        })?;
    }
    if let Some(v) = env("VIGIL_HOST_ROOT") {
        cfg.host_root = v;
    }
    if let Some(v) = env("VIGIL_RUNTIME_DIR") {
        cfg.runtime_dir = v;
    }
    if let Some(v) = env("VIGIL_NON_ROOT_MODE") {
        cfg.non_root_mode = parse_bool("VIGIL_NON_ROOT_MODE", &v)?;
    }
    if let Some(v) = env("VIGIL_ENFORCE_SYS_CAPS") {
        cfg.enforce_sys_caps = parse_bool("VIGIL_ENFORCE_SYS_CAPS", &v)?;
    }
    if let Some(v) = env("VIGIL_NO_REMOUNT_ROOT") {
        cfg.no_remount_root = parse_bool("VIGIL_NO_REMOUNT_ROOT", &v)?;
    }
    if let Some(v) = env("VIGIL_INTERVAL_MS") {
        cfg.collector.interval_ms = v.parse().map_err(|_| Error::Env {
            var: "VIGIL_INTERVAL_MS".into(),
            msg: format!("not a number: {v:?}"),
        })?;
    }
    if let Some(v) = env("VIGIL_JSON_LINES") {
        cfg.shipper.json_lines = v;
    }
    if let Some(v) = env("VIGIL_OTLP_ENDPOINT") {
        set_otlp(&mut cfg, v);
    }

    if let Some(v) = &args.user {
        cfg.user = v.clone();
    }
    if let Some(v) = &args.mount_mode {
        cfg.mount_mode = parse_mode(v).unwrap_or_default();
    }
    if let Some(v) = &args.host_root {
        cfg.host_root = v.clone();
    }
    if let Some(v) = &args.runtime_dir {
        cfg.runtime_dir = v.clone();
    }
    if let Some(v) = args.non_root_mode {
        cfg.non_root_mode = v;
    }
    if args.enforce_sys_caps {
        cfg.enforce_sys_caps = true;
    }
    if args.no_remount_root {
        cfg.no_remount_root = true;
    }
    if let Some(v) = args.interval_ms {
        cfg.collector.interval_ms = v;
    }
    if let Some(v) = &args.json_lines {
        cfg.shipper.json_lines = v.clone();
    }
    if let Some(v) = &args.otlp_endpoint {
        set_otlp(&mut cfg, v.clone());
    }
    validate(&cfg)?;
    crate::kmsg_rules::load(&mut cfg)?;
    Ok(cfg)
}

fn set_otlp(cfg: &mut AgentConfig, endpoint: String) {
    if endpoint.is_empty() {
        cfg.shipper.otlp = None;
    } else {
        let mut o = cfg.shipper.otlp.clone().unwrap_or_default();
        o.endpoint = endpoint;
        cfg.shipper.otlp = Some(o);
    }
}

fn validate(cfg: &AgentConfig) -> Result<()> {
    let bad = |msg: String| Error::Config {
        path: "(merged configuration)".into(),
        msg,
    };
    if cfg.user.is_empty() || cfg.user.contains(['/', ':', '\n']) {
        return Err(bad(format!("bad user name {:?}", cfg.user)));
    }
    for (k, p) in [
        ("host_root", &cfg.host_root),
        ("runtime_dir", &cfg.runtime_dir),
    ] {
        if !p.starts_with('/') {
            return Err(bad(format!("{k} must be an absolute path, got {p:?}")));
        }
    }
    if cfg.collector.interval_ms < 100 {
        return Err(bad("collector.interval_ms must be at least 100".into()));
    }
    if let Some(o) = &cfg.shipper.otlp
        && otlp_port(&o.endpoint).is_none()
    {
        return Err(bad(format!(
            "otlp endpoint {:?} must look like http://HOST:PORT",
            o.endpoint
        )));
    }
    Ok(())
}

/// Port of an `http://host:port[/path]` endpoint (80 when absent), parsed exactly as the
/// shipper will parse it, so the Landlock rule and the connection agree.
pub fn otlp_port(endpoint: &str) -> Option<u16> {
    vigil_shipper::http::Endpoint::parse(endpoint)
        .ok()
        .map(|e| e.port)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn defaults_need_no_file() {
        let c = load(&ConfigArgs::default(), &env_of(&[])).unwrap();
        assert_eq!(c, AgentConfig::default());
        assert_eq!(c.mount_mode, MountMode::ReadOnly);
        assert_eq!(c.shipper.json_lines, "stdout");
    }

    #[test]
    fn layers_override_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("vigil.toml");
        std::fs::write(
            &f,
            "user = \"fromfile\"\nmount_mode = \"minimal\"\n[collector]\ninterval_ms = 2000\n",
        )
        .unwrap();
        let args = ConfigArgs {
            config: Some(f.clone()),
            ..Default::default()
        };
        let c = load(&args, &env_of(&[])).unwrap();
        assert_eq!(
            (c.user.as_str(), c.mount_mode),
            ("fromfile", MountMode::Minimal)
        );
        assert_eq!(c.collector.interval_ms, 2000);

        let env = env_of(&[
            ("VIGIL_USER", "fromenv"),
            ("VIGIL_ENFORCE_SYS_CAPS", "1"),
            ("VIGIL_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
        ]);
        let c = load(&args, &env).unwrap();
        assert_eq!(c.user, "fromenv");
        assert!(c.enforce_sys_caps);
        assert_eq!(c.shipper.otlp.unwrap().endpoint, "http://127.0.0.1:4318");

        let args2 = ConfigArgs {
            user: Some("fromflag".into()),
            mount_mode: Some("full".into()),
            ..args
        };
        let c = load(&args2, &env).unwrap();
        assert_eq!(
            (c.user.as_str(), c.mount_mode),
            ("fromflag", MountMode::Full)
        );
    }

    #[test]
    fn bad_values_are_errors() {
        let e = |pairs: &[(&str, &str)]| load(&ConfigArgs::default(), &env_of(pairs)).is_err();
        assert!(e(&[("VIGIL_MOUNT_MODE", "sideways")]));
        assert!(e(&[("VIGIL_ENFORCE_SYS_CAPS", "maybe")]));
        assert!(e(&[("VIGIL_INTERVAL_MS", "10")]));
        assert!(e(&[("VIGIL_RUNTIME_DIR", "relative/dir")]));
        assert!(e(&[("VIGIL_OTLP_ENDPOINT", "https://x")]));
        assert!(e(&[("VIGIL_USER", "a:b")]));
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("v.toml");
        std::fs::write(&f, "no_such_key = 1\n").unwrap();
        let args = ConfigArgs {
            config: Some(f),
            ..Default::default()
        };
        assert!(load(&args, &env_of(&[])).is_err());
    }

    #[test]
    fn readme_example_is_a_valid_config() {
        let readme = include_str!("../../README.md");
        let start = readme.find("```toml\n").expect("toml block") + "```toml\n".len();
        let len = readme[start..].find("```").expect("end of block");
        let cfg: AgentConfig = toml::from_str(&readme[start..start + len]).unwrap();
        validate(&cfg).unwrap();
        assert_eq!(cfg.user, "vigil");
        assert!(cfg.shipper.otlp.is_some());
    }

    #[test]
    fn ports() {
        assert_eq!(otlp_port("http://127.0.0.1:4318"), Some(4318));
        assert_eq!(otlp_port("http://collector/v1"), Some(80));
        assert_eq!(otlp_port("http://[::1]:9"), Some(9));
        assert_eq!(otlp_port("ftp://x"), None);
    }
}
