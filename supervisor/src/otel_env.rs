//! The OpenTelemetry SDK environment variables users already set, applied as one layer of the
//! configuration (above the TOML file, below `VIGIL_*` and the flags), with the precedence the
//! OTLP exporter specification gives them: a signal-specific variable wins over the generic one
//! for that signal. Proxy variables (`HTTPS_PROXY`, `HTTP_PROXY`, `NO_PROXY`, either case) fill
//! only what the configuration leaves unset.

use vigil_ipc_proto::delivery::{Secret, parse_key_values};
use vigil_ipc_proto::{AgentConfig, Compression, OtlpConfig, SignalConfig};

use crate::error::{Error, Result};

const GENERIC: &str = "OTEL_EXPORTER_OTLP_";
const SIGNALS: [(&str, Sig); 2] = [
    ("OTEL_EXPORTER_OTLP_METRICS_", Sig::Metrics),
    ("OTEL_EXPORTER_OTLP_LOGS_", Sig::Logs),
];

#[derive(Clone, Copy)]
enum Sig {
    Metrics,
    Logs,
}

fn env_err(var: &str, msg: impl Into<String>) -> Error {
    Error::Env {
        var: var.into(),
        msg: msg.into(),
    }
}

fn compression(var: &str, v: &str) -> Result<Compression> {
    match v.trim().to_ascii_lowercase().as_str() {
        "gzip" => Ok(Compression::Gzip),
        "none" | "" => Ok(Compression::None),
        other => Err(env_err(var, format!("{other:?} is not gzip or none"))),
    }
}

fn timeout(var: &str, v: &str) -> Result<u64> {
    match v.trim().parse::<u64>() {
        Ok(ms) if ms > 0 => Ok(ms),
        _ => Err(env_err(
            var,
            format!("{v:?} is not a positive number of milliseconds"),
        )),
    }
}

fn headers(var: &str, v: &str) -> Result<Vec<(String, Secret)>> {
    parse_key_values(var, v)
        .map(|kv| kv.into_iter().map(|(k, v)| (k, Secret::new(v))).collect())
        .map_err(|e| env_err(var, e.msg))
}

fn protocol(var: &str, v: &str) -> Result<()> {
    match v.trim() {
        "http/protobuf" | "" => Ok(()),
        other => Err(env_err(
            var,
            format!(
                "vigil exports OTLP over HTTP with protobuf only; {other:?} is not supported (set http/protobuf or unset it)"
            ),
        )),
    }
}

/// Settings one prefix (`OTEL_EXPORTER_OTLP_` or a signal's) may carry, applied to a
/// [`SignalConfig`]-shaped set of fields.
struct Fields<'a> {
    endpoint: &'a mut Option<String>,
    headers: &'a mut std::collections::BTreeMap<String, Secret>,
    compression: &'a mut Option<Compression>,
    timeout_ms: &'a mut Option<u64>,
    ca_file: &'a mut Option<String>,
    client_cert_file: &'a mut Option<String>,
    client_key_file: &'a mut Option<String>,
}

fn apply_prefix(prefix: &str, f: Fields<'_>, env: &dyn Fn(&str) -> Option<String>) -> Result<bool> {
    let get = |name: &str| {
        let var = format!("{prefix}{name}");
        env(&var).map(|v| (var, v))
    };
    let mut any = false;
    if let Some((var, v)) = get("PROTOCOL") {
        protocol(&var, &v)?;
    }
    if let Some((_, v)) = get("ENDPOINT").filter(|(_, v)| !v.trim().is_empty()) {
        *f.endpoint = Some(v.trim().to_string());
        any = true;
    }
    if let Some((var, v)) = get("HEADERS") {
        f.headers.extend(headers(&var, &v)?);
    }
    if let Some((var, v)) = get("COMPRESSION") {
        *f.compression = Some(compression(&var, &v)?);
    }
    if let Some((var, v)) = get("TIMEOUT") {
        *f.timeout_ms = Some(timeout(&var, &v)?);
    }
    for (name, slot) in [
        ("CERTIFICATE", f.ca_file),
        ("CLIENT_CERTIFICATE", f.client_cert_file),
        ("CLIENT_KEY", f.client_key_file),
    ] {
        if let Some((_, v)) = get(name).filter(|(_, v)| !v.trim().is_empty()) {
            *slot = Some(v.trim().to_string());
        }
    }
    Ok(any)
}

fn signal_fields(s: &mut SignalConfig) -> Fields<'_> {
    Fields {
        endpoint: &mut s.endpoint,
        headers: &mut s.headers,
        compression: &mut s.compression,
        timeout_ms: &mut s.timeout_ms,
        ca_file: &mut s.ca_file,
        client_cert_file: &mut s.client_cert_file,
        client_key_file: &mut s.client_key_file,
    }
}

/// Apply the `OTEL_*` layer. An endpoint variable turns the OTLP exporter on.
pub fn apply(cfg: &mut AgentConfig, env: &dyn Fn(&str) -> Option<String>) -> Result<()> {
    let mut otlp = cfg.shipper.otlp.clone().unwrap_or_default();
    let mut enable = false;
    {
        let o: &mut OtlpConfig = &mut otlp;
        let mut endpoint = None;
        let mut compression = None;
        let mut timeout_ms = None;
        enable |= apply_prefix(
            GENERIC,
            Fields {
                endpoint: &mut endpoint,
                headers: &mut o.headers,
                compression: &mut compression,
                timeout_ms: &mut timeout_ms,
                ca_file: &mut o.ca_file,
                client_cert_file: &mut o.client_cert_file,
                client_key_file: &mut o.client_key_file,
            },
            env,
        )?;
        if let Some(e) = endpoint {
            o.endpoint = e;
        }
        if let Some(c) = compression {
            o.compression = c;
        }
        if let Some(t) = timeout_ms {
            o.timeout_ms = t;
        }
        for (prefix, sig) in SIGNALS {
            let s = match sig {
                Sig::Metrics => &mut o.metrics,
                Sig::Logs => &mut o.logs,
            };
            enable |= apply_prefix(prefix, signal_fields(s), env)?;
        }
        let either = |a: &str| env(a).or_else(|| env(&a.to_ascii_lowercase()));
        if o.https_proxy.is_none() {
            o.https_proxy = either("HTTPS_PROXY").map(Secret::new);
        }
        if o.http_proxy.is_none() {
            o.http_proxy = either("HTTP_PROXY").map(Secret::new);
        }
        if o.no_proxy.is_none() {
            o.no_proxy = either("NO_PROXY");
        }
    }
    if enable || cfg.shipper.otlp.is_some() {
        cfg.shipper.otlp = Some(otlp);
    }

    if let Some(v) = env("OTEL_RESOURCE_ATTRIBUTES") {
        let kv = parse_key_values("OTEL_RESOURCE_ATTRIBUTES", &v)
            .map_err(|e| env_err("OTEL_RESOURCE_ATTRIBUTES", e.msg))?;
        cfg.shipper.resource_attributes.extend(kv);
    }
    if let Some(v) = env("OTEL_SERVICE_NAME").filter(|v| !v.trim().is_empty()) {
        cfg.shipper
            .resource_attributes
            .insert("service.name".into(), v.trim().to_string());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use vigil_ipc_proto::delivery::Signal;

    fn run(pairs: &[(&str, &str)], start: AgentConfig) -> Result<AgentConfig> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut cfg = start;
        apply(&mut cfg, &|k| m.get(k).cloned())?;
        Ok(cfg)
    }

    #[test]
    fn nothing_set_changes_nothing() {
        assert_eq!(
            run(&[], AgentConfig::default()).unwrap(),
            AgentConfig::default()
        );
    }

    #[test]
    fn generic_and_signal_specific() {
        let c = run(
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://otlp.example:4318"),
                (
                    "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
                    "https://logs.example/v1/logs",
                ),
                ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=abc,x-team=a%20b"),
                ("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "api-key=metrics"),
                ("OTEL_EXPORTER_OTLP_COMPRESSION", "none"),
                ("OTEL_EXPORTER_OTLP_LOGS_COMPRESSION", "gzip"),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
                ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/etc/ca.pem"),
                ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "/etc/c.pem"),
                ("OTEL_EXPORTER_OTLP_CLIENT_KEY", "/etc/k.pem"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ],
            AgentConfig::default(),
        )
        .unwrap();
        let o = c.shipper.otlp.as_ref().unwrap();
        let t = o.targets().unwrap();
        assert_eq!(t[0].signal, Signal::Metrics);
        assert_eq!(t[0].endpoint.url(), "https://otlp.example:4318/v1/metrics");
        assert_eq!(t[1].endpoint.url(), "https://logs.example:443/v1/logs");
        let h = |i: usize, k: &str| {
            t[i].headers
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.expose().to_string())
        };
        assert_eq!(h(0, "api-key").as_deref(), Some("metrics"));
        assert_eq!(h(1, "api-key").as_deref(), Some("abc"));
        assert_eq!(h(1, "x-team").as_deref(), Some("a b"));
        assert_eq!(t[0].compression, Compression::None);
        assert_eq!(t[1].compression, Compression::Gzip);
        assert_eq!(t[0].timeout_ms, 2500);
        assert_eq!(t[1].tls.ca_file.as_deref(), Some("/etc/ca.pem"));
        assert_eq!(t[1].tls.client_key_file.as_deref(), Some("/etc/k.pem"));
    }

    #[test]
    fn file_values_stay_unless_overridden() {
        let mut start = AgentConfig::default();
        start.shipper.otlp = Some(OtlpConfig {
            endpoint: "https://from-file:4318".into(),
            https_proxy: Some(Secret::new("")),
            ..Default::default()
        });
        let c = run(
            &[("HTTPS_PROXY", "http://proxy:3128"), ("no_proxy", ".corp")],
            start,
        )
        .unwrap();
        let o = c.shipper.otlp.unwrap();
        assert_eq!(o.endpoint, "https://from-file:4318");
        // The file said "no proxy" explicitly; NO_PROXY was unset in the file.
        assert_eq!(o.https_proxy, Some(Secret::new("")));
        assert_eq!(o.no_proxy.as_deref(), Some(".corp"));
    }

    #[test]
    fn proxy_alone_does_not_turn_otlp_on() {
        let c = run(
            &[("HTTPS_PROXY", "http://proxy:3128")],
            AgentConfig::default(),
        )
        .unwrap();
        assert!(c.shipper.otlp.is_none());
    }

    #[test]
    fn resource_attributes_and_service_name() {
        let c = run(
            &[
                (
                    "OTEL_RESOURCE_ATTRIBUTES",
                    "deployment.environment=prod,service.name=x",
                ),
                ("OTEL_SERVICE_NAME", "node-agent"),
            ],
            AgentConfig::default(),
        )
        .unwrap();
        let r = &c.shipper.resource_attributes;
        assert_eq!(r["deployment.environment"], "prod");
        assert_eq!(r["service.name"], "node-agent");
    }

    #[test]
    fn bad_values_name_the_variable() {
        for (k, v) in [
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "http/json"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd"),
            ("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "soon"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "0"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "api-key=secret-value,broken"),
            ("OTEL_RESOURCE_ATTRIBUTES", "=x"),
        ] {
            let e = run(&[(k, v)], AgentConfig::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains(k), "{e}");
            assert!(!e.contains("secret-value"), "{e}");
        }
    }
}
