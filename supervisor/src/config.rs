//! Configuration layering: embedded defaults ← TOML file ← `VIGIL_*` environment ← flags.

use vigil_ipc_proto::delivery::{self, Secret};
use vigil_ipc_proto::{AgentConfig, BpfProgram, MountMode};

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

/// Largest headers file read (it holds a few credentials, not data).
const MAX_HEADERS_FILE: u64 = 64 * 1024;
/// The configuration file is parsed by the root supervisor: bounded like every file it reads.
const MAX_CONFIG_FILE: u64 = 1024 * 1024;

/// Build the configuration from all layers: embedded defaults ← TOML file (and its
/// `headers_file`) ← `OTEL_*` environment ← `VIGIL_*` environment ← flags. `env` is passed in
/// so tests need not touch the process environment.
pub fn load(args: &ConfigArgs, env: &dyn Fn(&str) -> Option<String>) -> Result<AgentConfig> {
    let mut cfg = match &args.config {
        Some(path) => {
            let text = crate::files::read_text_bounded(path, MAX_CONFIG_FILE).map_err(|e| {
                Error::Config {
                    path: path.clone(),
                    msg: e.to_string(),
                }
            })?;
            toml::from_str(&text).map_err(|e| Error::Config {
                path: path.clone(),
                msg: e.to_string(),
            })?
        }
        None => AgentConfig::default(),
    };
    merge_headers_file(&mut cfg)?;
    crate::otel_env::apply(&mut cfg, env)?;

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
    if let Some(v) = env("VIGIL_PROMETHEUS_LISTEN") {
        cfg.shipper.prometheus.listen = v;
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
    if let Some(v) = &args.prometheus_listen {
        cfg.shipper.prometheus.listen = v.clone();
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
    if let Err(e) = regex::Regex::new(&cfg.collector.disk_devices_exclude) {
        return Err(bad(format!(
            "collector.disk_devices_exclude is not a valid regular expression: {e}"
        )));
    }
    let flow_sources = BpfProgram::FLOW_SOURCES.map(|(name, _)| name);
    for (key, value, allowed) in [
        (
            "collector.flows_source",
            &cfg.collector.flows_source,
            &flow_sources[..],
        ),
        (
            "collector.netns_source",
            &cfg.collector.netns_source,
            &["proc", "setns"][..],
        ),
    ] {
        if !allowed.contains(&value.as_str()) {
            return Err(bad(format!(
                "{key} = {value:?} is not one of {}",
                allowed
                    .iter()
                    .map(|a| format!("{a:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    if cfg.collector.interval_ms < 100 {
        return Err(bad("collector.interval_ms must be at least 100".into()));
    }
    if let Some(o) = &cfg.shipper.otlp {
        o.targets().map_err(|e| bad(e.to_string()))?;
    }
    if !cfg.shipper.prometheus.listen.is_empty() {
        delivery::parse_listen("shipper.prometheus.listen", &cfg.shipper.prometheus.listen)
            .map_err(|e| bad(e.to_string()))?;
    }
    Ok(())
}

/// Merge `shipper.otlp.headers_file` (`Name: value` lines) into the headers; the file wins
/// over inline headers of the same name. Its values are secrets: errors name lines, not text.
fn merge_headers_file(cfg: &mut AgentConfig) -> Result<()> {
    let Some(o) = cfg.shipper.otlp.as_mut() else {
        return Ok(());
    };
    let Some(path) = o.headers_file.clone().filter(|p| !p.is_empty()) else {
        return Ok(());
    };
    let bad = |msg: String| Error::Config {
        path: path.clone().into(),
        msg: format!("shipper.otlp.headers_file: {msg}"),
    };
    let text = crate::files::read_bounded(std::path::Path::new(&path), MAX_HEADERS_FILE)
        .map_err(|e| bad(e.to_string()))?;
    let text = String::from_utf8(text).map_err(|_| bad("not UTF-8 text".into()))?;
    let headers = delivery::parse_headers_file(&path, &text).map_err(|e| bad(e.msg))?;
    o.headers
        .extend(headers.into_iter().map(|(k, v)| (k, Secret::new(v))));
    Ok(())
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
        assert!(e(&[("VIGIL_OTLP_ENDPOINT", "ftp://x")]));
        assert!(e(&[("VIGIL_OTLP_ENDPOINT", "http://h:99999")]));
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

    /// A value no code path knows would otherwise just leave the feature off.
    #[test]
    fn sources_name_a_known_one() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("v.toml");
        let with = |text: &str| {
            std::fs::write(&f, text).unwrap();
            let args = ConfigArgs {
                config: Some(f.clone()),
                ..Default::default()
            };
            load(&args, &env_of(&[]))
        };
        for ok in ["tracepoint", "socket", "tc"] {
            let c = with(&format!("[collector]\nflows_source = \"{ok}\"\n")).unwrap();
            assert_eq!(c.collector.flows_source, ok);
        }
        let e = with("[collector]\nflows_source = \"pcap\"\n").unwrap_err();
        assert!(
            e.to_string().contains(
                "collector.flows_source = \"pcap\" is not one of \"tracepoint\", \"socket\", \"tc\""
            ),
            "{e}"
        );
        let e = with("[collector]\nnetns_source = \"nsenter\"\n").unwrap_err();
        assert!(e.to_string().contains("collector.netns_source"), "{e}");
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
    fn otel_layer_sits_between_file_and_vigil_env() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("v.toml");
        std::fs::write(&f, "[shipper.otlp]\nendpoint = \"http://file:4318\"\n").unwrap();
        let args = ConfigArgs {
            config: Some(f),
            ..Default::default()
        };
        let ep = |pairs: &[(&str, &str)], args: &ConfigArgs| {
            load(args, &env_of(pairs))
                .unwrap()
                .shipper
                .otlp
                .unwrap()
                .endpoint
        };
        assert_eq!(ep(&[], &args), "http://file:4318");
        let otel = ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://otel:4318");
        assert_eq!(ep(&[otel], &args), "https://otel:4318");
        let vigil = ("VIGIL_OTLP_ENDPOINT", "https://vigil:4318");
        assert_eq!(ep(&[otel, vigil], &args), "https://vigil:4318");
        let flag = ConfigArgs {
            otlp_endpoint: Some("https://flag:4318".into()),
            ..args.clone()
        };
        assert_eq!(ep(&[otel, vigil], &flag), "https://flag:4318");
        // An OTEL endpoint alone turns the exporter on.
        let c = load(&ConfigArgs::default(), &env_of(&[otel])).unwrap();
        assert_eq!(c.shipper.otlp.unwrap().endpoint, "https://otel:4318");
    }

    #[test]
    fn headers_file_merges_and_errors_hide_values() {
        let dir = tempfile::tempdir().unwrap();
        let h = dir.path().join("headers");
        std::fs::write(&h, "# team credentials\nAuthorization: Bearer s3cret\n").unwrap();
        let f = dir.path().join("v.toml");
        std::fs::write(
            &f,
            format!(
                "[shipper.otlp]\nendpoint = \"https://c:4318\"\nheaders_file = \"{}\"\n[shipper.otlp.headers]\nAuthorization = \"inline\"\nx-org = \"7\"\n",
                h.display()
            ),
        )
        .unwrap();
        let args = ConfigArgs {
            config: Some(f),
            ..Default::default()
        };
        let o = load(&args, &env_of(&[])).unwrap().shipper.otlp.unwrap();
        assert_eq!(o.headers["Authorization"].expose(), "Bearer s3cret");
        assert_eq!(o.headers["x-org"].expose(), "7");
        // The environment wins over the file.
        let o = load(
            &args,
            &env_of(&[("OTEL_EXPORTER_OTLP_HEADERS", "Authorization=Bearer%20env")]),
        )
        .unwrap()
        .shipper
        .otlp
        .unwrap();
        assert_eq!(o.headers["Authorization"].expose(), "Bearer env");

        std::fs::write(&h, "Authorization Bearer s3cret\n").unwrap();
        let e = load(&args, &env_of(&[])).unwrap_err().to_string();
        assert!(e.contains("headers_file") && e.contains("line 1"), "{e}");
        assert!(!e.contains("s3cret"), "{e}");
        std::fs::remove_file(&h).unwrap();
        let e = load(&args, &env_of(&[])).unwrap_err().to_string();
        assert!(e.contains("headers_file"), "{e}");
    }

    #[test]
    fn prometheus_listen() {
        let c = load(
            &ConfigArgs::default(),
            &env_of(&[("VIGIL_PROMETHEUS_LISTEN", "127.0.0.1:9464")]),
        )
        .unwrap();
        assert_eq!(c.shipper.prometheus.listen, "127.0.0.1:9464");
        let e = load(
            &ConfigArgs::default(),
            &env_of(&[("VIGIL_PROMETHEUS_LISTEN", "localhost:9464")]),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("shipper.prometheus.listen"), "{e}");
    }
}
