//! Where the shipper delivers and how: OTLP endpoints per signal, headers, TLS files, egress
//! proxy, the Prometheus listen address. Parsed here, once, for both sides: the supervisor
//! validates the merged configuration with it at start (one clear error naming the key), opens
//! the files it names, and derives the shipper's Landlock ports and seccomp needs from it; the
//! shipper connects with the very same [`Target`]s.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::config::{Compression, OtlpConfig, SignalConfig};

/// A value that must never be printed: header values, proxy credentials. Its `Debug` is
/// `<redacted>` and it has no `Display`, so neither a log line nor `vigil status` can show it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The value, for the one place that writes it on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A configuration value that cannot work, with the key that holds it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {msg}")]
pub struct DeliveryError {
    pub key: String,
    pub msg: String,
}

fn err(key: impl Into<String>, msg: impl Into<String>) -> DeliveryError {
    DeliveryError {
        key: key.into(),
        msg: msg.into(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Scheme {
    Http,
    Https,
}

/// One parsed `http(s)://host[:port][/path]` URL (no query, no fragment, no credentials).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Endpoint {
    pub scheme: Scheme,
    /// A DNS name (lower case, no trailing dot) or an IP literal (without brackets).
    pub host: String,
    pub port: u16,
    /// The path, "/" at least.
    pub path: String,
}

impl Endpoint {
    /// Parse an endpoint URL. Errors quote the URL with any credentials masked.
    pub fn parse(raw: &str) -> Result<Endpoint, String> {
        let url = redact_userinfo(raw);
        let u = url::Url::parse(raw.trim()).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
        let scheme = match u.scheme() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            s => {
                return Err(format!(
                    "{url:?}: scheme {s}:// is not supported (use http:// or https://)"
                ));
            }
        };
        if !u.username().is_empty() || u.password().is_some() {
            return Err(format!(
                "{url:?}: credentials in the URL are not allowed (they would show in logs); use headers"
            ));
        }
        if u.query().is_some() || u.fragment().is_some() {
            return Err(format!("{url:?}: a query or fragment is not allowed"));
        }
        let host = match u.host() {
            Some(url::Host::Domain(d)) => d.trim_end_matches('.').to_ascii_lowercase(),
            Some(url::Host::Ipv4(a)) => a.to_string(),
            Some(url::Host::Ipv6(a)) => a.to_string(),
            None => return Err(format!("{url:?}: no host")),
        };
        if host.is_empty() {
            return Err(format!("{url:?}: no host"));
        }
        let port = u.port_or_known_default().unwrap_or(match scheme {
            Scheme::Http => 80,
            Scheme::Https => 443,
        });
        if port == 0 {
            return Err(format!("{url:?}: port 0"));
        }
        Ok(Endpoint {
            scheme,
            host,
            port,
            path: u.path().to_string(),
        })
    }

    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }

    /// Whether reaching this host needs the resolver: not an IP literal and not `localhost`.
    pub fn needs_dns(&self) -> bool {
        self.ip().is_none() && !is_localhost(&self.host)
    }

    /// `host:port` as written in a Host header or a CONNECT request (IPv6 in brackets).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The URL without the path, for messages.
    pub fn origin(&self) -> String {
        let s = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        format!("{s}://{}", self.authority())
    }

    /// The full URL, for messages.
    pub fn url(&self) -> String {
        format!("{}{}", self.origin(), self.path)
    }
}

/// `scheme://user:pass@host` → `scheme://***@host`, for messages.
fn redact_userinfo(url: &str) -> String {
    let start = url.find("://").map_or(0, |i| i + 3);
    let end = url[start..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| start + i);
    match url[start..end].rfind('@') {
        Some(at) => format!("{}***{}", &url[..start], &url[start + at..]),
        None => url.to_string(),
    }
}

pub fn is_localhost(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost") || host.to_ascii_lowercase().ends_with(".localhost")
}

/// The two OTLP signals vigil sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Signal {
    Metrics,
    Logs,
}

impl Signal {
    pub const ALL: [Signal; 2] = [Signal::Metrics, Signal::Logs];

    /// Path appended to a base endpoint (OTLP/HTTP specification).
    pub fn path(self) -> &'static str {
        match self {
            Signal::Metrics => "v1/metrics",
            Signal::Logs => "v1/logs",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Metrics => "metrics",
            Signal::Logs => "logs",
        }
    }
}

/// An egress proxy (HTTP CONNECT for https targets, absolute-form requests for http ones).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proxy {
    pub host: String,
    pub port: u16,
    /// `Proxy-Authorization` value (`Basic base64(user:password)`), from the proxy URL.
    pub authorization: Option<Secret>,
}

impl Proxy {
    /// Parse `http://[user[:password]@]host[:port]` (port 80 by default, as curl does 1080 for
    /// socks only). `key` names the setting in errors; the URL itself is never echoed back, it
    /// may hold a password.
    pub fn parse(key: &str, url: &str) -> Result<Proxy, DeliveryError> {
        let url = url.trim();
        // A bare `host:port`, as HTTPS_PROXY is often written, means http://.
        let full = if url.contains("://") {
            url.to_string()
        } else {
            format!("http://{url}")
        };
        let u = url::Url::parse(&full).map_err(|e| err(key, format!("not a proxy URL: {e}")))?;
        if u.scheme() != "http" {
            return Err(err(
                key,
                format!(
                    "proxy scheme {}:// is not supported: use http:// (HTTPS targets are tunnelled with CONNECT)",
                    u.scheme()
                ),
            ));
        }
        let host = match u.host() {
            Some(url::Host::Domain(d)) => d.trim_end_matches('.').to_ascii_lowercase(),
            Some(url::Host::Ipv4(a)) => a.to_string(),
            Some(url::Host::Ipv6(a)) => a.to_string(),
            None => return Err(err(key, "the proxy URL has no host")),
        };
        let authorization = if u.username().is_empty() {
            None
        } else {
            let user = percent_decode(u.username());
            let pass = percent_decode(u.password().unwrap_or(""));
            Some(Secret::new(format!(
                "Basic {}",
                base64_encode(format!("{user}:{pass}").as_bytes())
            )))
        };
        Ok(Proxy {
            host,
            port: u.port_or_known_default().unwrap_or(80),
            authorization,
        })
    }

    pub fn needs_dns(&self) -> bool {
        self.host.parse::<IpAddr>().is_err() && !is_localhost(&self.host)
    }

    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Whether `host` (a name or an IP literal) is excluded from proxying by a `NO_PROXY` list:
/// comma-separated entries, `*` for all, a domain matching itself and its subdomains (a
/// leading dot is ignored), an IP address, or a CIDR block (`10.0.0.0/8`), as curl and Go read it.
pub fn no_proxy_matches(list: &str, host: &str, port: u16) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let ip: Option<IpAddr> = host.parse().ok();
    for entry in list
        .split([',', ' '])
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        if entry == "*" {
            return true;
        }
        if let Some((net, bits)) = entry.split_once('/') {
            if let (Some(ip), Ok(net), Ok(bits)) = (ip, net.parse::<IpAddr>(), bits.parse::<u8>())
                && cidr_contains(net, bits, ip)
            {
                return true;
            }
            continue;
        }
        // An entry may name a port: it then matches that port only.
        let (name, want_port) = split_port(entry);
        if want_port.is_some_and(|p| p != port) {
            continue;
        }
        let name = name.trim_start_matches('.').trim_end_matches('.');
        let name = name.trim_start_matches('[').trim_end_matches(']');
        if let (Some(ip), Ok(e)) = (ip, name.parse::<IpAddr>()) {
            if ip == e {
                return true;
            }
            continue;
        }
        let name = name.to_ascii_lowercase();
        if host == name || host.ends_with(&format!(".{name}")) {
            return true;
        }
    }
    false
}

fn split_port(entry: &str) -> (&str, Option<u16>) {
    // `[v6]:port`, `name:port`; a bare IPv6 address has several colons and no port.
    if let Some(rest) = entry.strip_prefix('[') {
        if let Some((h, p)) = rest.split_once("]:") {
            return (h, p.parse().ok());
        }
        return (entry, None);
    }
    match entry.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, p.parse().ok()),
        _ => (entry, None),
    }
}

fn cidr_contains(net: IpAddr, bits: u8, ip: IpAddr) -> bool {
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(a)) if bits <= 32 => {
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(bits))
            };
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) if bits <= 128 => {
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(bits))
            };
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

/// TLS material of a target: file paths as configured (the supervisor opens them before the
/// sandbox and hands their bytes to the shipper).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct TlsFiles {
    /// PEM CA bundle; `None`: the host's bundle (resolved by the supervisor).
    pub ca_file: Option<String>,
    pub client_cert_file: Option<String>,
    pub client_key_file: Option<String>,
    /// Name to send as SNI and to verify the certificate against (default: the URL's host).
    pub server_name: Option<String>,
}

/// Everything the shipper needs to send one signal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub signal: Signal,
    pub endpoint: Endpoint,
    pub headers: Vec<(String, Secret)>,
    pub compression: Compression,
    pub timeout_ms: u64,
    pub tls: TlsFiles,
    pub proxy: Option<Proxy>,
}

impl Target {
    /// Whether this target needs the resolver (the proxy's name when proxied: the proxy
    /// resolves the target's).
    pub fn needs_dns(&self) -> bool {
        match &self.proxy {
            Some(p) => p.needs_dns(),
            None => self.endpoint.needs_dns(),
        }
    }

    /// The TCP port the shipper connects to (the proxy's when proxied).
    pub fn connect_port(&self) -> u16 {
        self.proxy.as_ref().map_or(self.endpoint.port, |p| p.port)
    }

    /// The same connection can carry both signals.
    pub fn same_connection(&self, other: &Target) -> bool {
        self.endpoint.scheme == other.endpoint.scheme
            && self.endpoint.host == other.endpoint.host
            && self.endpoint.port == other.endpoint.port
            && self.tls == other.tls
            && self.proxy == other.proxy
    }
}

/// A header name as HTTP allows it (RFC 9110 token).
pub fn valid_header_name(n: &str) -> bool {
    !n.is_empty()
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A header value without control characters (no CR/LF injection).
pub fn valid_header_value(v: &str) -> bool {
    v.bytes().all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// Headers reserved to the client itself.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "content-type",
    "content-encoding",
    "transfer-encoding",
    "connection",
];

fn check_headers(key: &str, h: &BTreeMap<String, Secret>) -> Result<(), DeliveryError> {
    for (n, v) in h {
        if !valid_header_name(n) {
            return Err(err(key, format!("{n:?} is not a valid header name")));
        }
        if RESERVED_HEADERS.contains(&n.to_ascii_lowercase().as_str()) {
            return Err(err(key, format!("header {n:?} is set by vigil itself")));
        }
        if !valid_header_value(v.expose()) {
            // The value is a secret: name the header only.
            return Err(err(
                key,
                format!("the value of header {n:?} contains control characters"),
            ));
        }
    }
    Ok(())
}

/// Parse `key=value,key2=value2` with percent-encoded values (W3C Baggage, as
/// `OTEL_EXPORTER_OTLP_HEADERS` and `OTEL_RESOURCE_ATTRIBUTES` are written).
pub fn parse_key_values(var: &str, s: &str) -> Result<Vec<(String, String)>, DeliveryError> {
    let mut out = Vec::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let Some((k, v)) = item.split_once('=') else {
            return Err(err(
                var,
                format!(
                    "entry {} is not key=value",
                    out.len() + 1 // never echo the entry: it may hold a secret
                ),
            ));
        };
        let k = percent_decode(k.trim());
        if k.is_empty() {
            return Err(err(
                var,
                format!("entry {} has an empty key", out.len() + 1),
            ));
        }
        out.push((k, percent_decode(v.trim())));
    }
    Ok(out)
}

/// Parse a headers file: one `Name: value` per line, `#` comments and blank lines ignored.
pub fn parse_headers_file(path: &str, text: &str) -> Result<Vec<(String, String)>, DeliveryError> {
    let key = format!("shipper.otlp.headers_file ({path})");
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((n, v)) = line.split_once(':') else {
            return Err(err(&key, format!("line {} is not `Name: value`", i + 1)));
        };
        out.push((n.trim().to_string(), v.trim().to_string()));
    }
    Ok(out)
}

pub fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn signal_key(signal: Signal, field: &str) -> String {
    format!("shipper.otlp.{}.{field}", signal.as_str())
}

impl OtlpConfig {
    fn signal_cfg(&self, s: Signal) -> &SignalConfig {
        match s {
            Signal::Metrics => &self.metrics,
            Signal::Logs => &self.logs,
        }
    }

    /// The endpoint of one signal: its own URL used as is (an empty path becomes "/"), or the
    /// base endpoint with `v1/metrics` / `v1/logs` appended (OTLP/HTTP exporter specification).
    fn signal_endpoint(&self, s: Signal) -> Result<Endpoint, DeliveryError> {
        if let Some(url) = self
            .signal_cfg(s)
            .endpoint
            .as_deref()
            .filter(|u| !u.is_empty())
        {
            return Endpoint::parse(url).map_err(|m| err(signal_key(s, "endpoint"), m));
        }
        let mut ep =
            Endpoint::parse(&self.endpoint).map_err(|m| err("shipper.otlp.endpoint", m))?;
        if !ep.path.ends_with('/') {
            ep.path.push('/');
        }
        ep.path.push_str(s.path());
        Ok(ep)
    }

    /// The proxy for an endpoint: none when `no_proxy` matches, else the scheme's proxy.
    fn proxy_for(&self, ep: &Endpoint) -> Result<Option<Proxy>, DeliveryError> {
        if no_proxy_matches(self.no_proxy.as_deref().unwrap_or(""), &ep.host, ep.port) {
            return Ok(None);
        }
        let (key, url) = match ep.scheme {
            Scheme::Https => ("shipper.otlp.https_proxy", &self.https_proxy),
            Scheme::Http => ("shipper.otlp.http_proxy", &self.http_proxy),
        };
        match url {
            Some(u) if !u.is_empty() => Proxy::parse(key, u.expose()).map(Some),
            _ => Ok(None),
        }
    }

    /// Both signals' targets, every value checked; the first problem is the error.
    pub fn targets(&self) -> Result<Vec<Target>, DeliveryError> {
        check_headers("shipper.otlp.headers", &self.headers)?;
        let mut out = Vec::new();
        for s in Signal::ALL {
            let sc = self.signal_cfg(s);
            check_headers(&signal_key(s, "headers"), &sc.headers)?;
            let endpoint = self.signal_endpoint(s)?;
            let mut headers = self.headers.clone();
            headers.extend(sc.headers.iter().map(|(k, v)| (k.clone(), v.clone())));
            let pick = |own: &Option<String>, base: &Option<String>| {
                own.clone()
                    .filter(|p| !p.is_empty())
                    .or_else(|| base.clone().filter(|p| !p.is_empty()))
            };
            let tls = TlsFiles {
                ca_file: pick(&sc.ca_file, &self.ca_file),
                client_cert_file: pick(&sc.client_cert_file, &self.client_cert_file),
                client_key_file: pick(&sc.client_key_file, &self.client_key_file),
                server_name: self.server_name.clone().filter(|n| !n.is_empty()),
            };
            if tls.client_cert_file.is_some() != tls.client_key_file.is_some() {
                return Err(err(
                    "shipper.otlp.client_cert_file",
                    "a client certificate needs its key (client_key_file) and a key its certificate",
                ));
            }
            if endpoint.scheme == Scheme::Http
                && (tls.client_cert_file.is_some() || self.server_name.is_some())
            {
                return Err(err(
                    signal_key(s, "endpoint"),
                    format!(
                        "{} is plain http:// but TLS settings (client certificate or server_name) are set: use https://",
                        endpoint.url()
                    ),
                ));
            }
            if let Some(n) = &tls.server_name
                && url::Host::parse(n).is_err()
            {
                return Err(err(
                    "shipper.otlp.server_name",
                    format!("{n:?} is not a DNS name or IP address"),
                ));
            }
            let timeout_ms = sc.timeout_ms.unwrap_or(self.timeout_ms);
            if timeout_ms == 0 {
                return Err(err(signal_key(s, "timeout_ms"), "must be at least 1"));
            }
            out.push(Target {
                signal: s,
                proxy: self.proxy_for(&endpoint)?,
                endpoint,
                headers: headers.into_iter().collect(),
                compression: sc.compression.unwrap_or(self.compression),
                timeout_ms,
                tls,
            });
        }
        Ok(out)
    }
}

/// What the shipper's sandbox must allow for these targets.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NetNeeds {
    /// TCP ports to connect to (endpoints or proxies; 53 for DNS over TCP).
    pub connect_tcp: Vec<u16>,
    /// A name must be resolved: UDP sockets to the nameservers (and TCP 53).
    pub dns: bool,
    /// Some target is https.
    pub tls: bool,
}

pub fn net_needs(targets: &[Target]) -> NetNeeds {
    let mut n = NetNeeds::default();
    for t in targets {
        n.connect_tcp.push(t.connect_port());
        n.dns |= t.needs_dns();
        n.tls |= t.endpoint.scheme == Scheme::Https;
    }
    if n.dns {
        n.connect_tcp.push(53);
    }
    n.connect_tcp.sort_unstable();
    n.connect_tcp.dedup();
    n
}

/// What the supervisor read for the shipper before the view was built (the shipper can open
/// none of it: its Landlock ruleset covers the journal only). Sent as one sealed memfd.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ShipperInputs {
    /// Files the delivery settings name (CA bundles, client certificates and keys), by path as
    /// configured; the host's CA bundle under [`ShipperInputs::default_ca`].
    pub files: BTreeMap<String, Vec<u8>>,
    /// Path of the CA bundle used where no `ca_file` is set.
    pub default_ca: Option<String>,
    /// The supervisor's own `/etc/resolv.conf` and `/etc/hosts` (the container's in a pod: the
    /// resolution the agent was started with), when a name must be resolved.
    pub resolv_conf: Option<Vec<u8>>,
    pub hosts: Option<Vec<u8>>,
}

impl ShipperInputs {
    /// Largest encoded size accepted (a CA bundle is ~0.2 MiB; hosts files can be large).
    pub const MAX_BYTES: usize = 64 << 20;

    pub fn encode(&self) -> Result<Vec<u8>, postcard::Error> {
        postcard::to_stdvec(self)
    }

    pub fn decode(b: &[u8]) -> Result<Self, postcard::Error> {
        postcard::from_bytes(b)
    }

    /// Bytes of a configured file, or of the default CA bundle for `None`.
    pub fn ca<'a>(&'a self, path: Option<&'a str>) -> Option<(&'a str, &'a [u8])> {
        let p = path.or(self.default_ca.as_deref())?;
        self.files.get(p).map(|b| (p, b.as_slice()))
    }
}

/// Lists paths and sizes only: the files hold private keys.
impl std::fmt::Debug for ShipperInputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let files: Vec<(&String, usize)> = self.files.iter().map(|(k, v)| (k, v.len())).collect();
        f.debug_struct("ShipperInputs")
            .field("files", &files)
            .field("default_ca", &self.default_ca)
            .field("resolv_conf", &self.resolv_conf.as_ref().map(Vec::len))
            .field("hosts", &self.hosts.as_ref().map(Vec::len))
            .finish()
    }
}

/// Parse a Prometheus listen address: `IP:PORT` (`[::1]:9464` for IPv6).
pub fn parse_listen(key: &str, s: &str) -> Result<SocketAddr, DeliveryError> {
    s.trim().parse::<SocketAddr>().map_err(|_| {
        err(
            key,
            format!(
                "{s:?} is not IP:PORT (e.g. 127.0.0.1:9464, or 0.0.0.0:9464 for every address)"
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let e = Endpoint::parse("http://127.0.0.1:4318").unwrap();
        assert_eq!(
            (e.scheme, e.host.as_str(), e.port),
            (Scheme::Http, "127.0.0.1", 4318)
        );
        assert_eq!(e.path, "/");
        let e = Endpoint::parse("https://Collector.Example.:8443/otlp/").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("collector.example", 8443));
        assert_eq!(e.path, "/otlp/");
        assert!(e.needs_dns());
        let e = Endpoint::parse("https://otlp.example.com").unwrap();
        assert_eq!(e.port, 443);
        let e = Endpoint::parse("http://[::1]:9").unwrap();
        assert_eq!(
            (e.host.as_str(), e.authority()),
            ("::1", "[::1]:9".to_string())
        );
        assert!(!e.needs_dns());
        assert!(
            !Endpoint::parse("http://localhost:4318")
                .unwrap()
                .needs_dns()
        );
        for bad in [
            "ftp://x",
            "http://:80",
            "http://h:99999",
            "https://user:pw@h",
            "http://h/?a=1",
            "h:4318",
            "",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
        let e = Endpoint::parse("https://u:hunter2@h").unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
        let e = Endpoint::parse("gopher://u:hunter2@h/x@y").unwrap_err();
        assert!(e.contains("***@h/x@y") && !e.contains("hunter2"), "{e}");
    }

    #[test]
    fn signal_paths_follow_the_otlp_exporter_spec() {
        let mut c = OtlpConfig {
            endpoint: "https://c.example:4318/base".into(),
            ..Default::default()
        };
        let t = c.targets().unwrap();
        assert_eq!(t[0].endpoint.path, "/base/v1/metrics");
        assert_eq!(t[1].endpoint.path, "/base/v1/logs");
        c.endpoint = "http://c:4318/".into();
        assert_eq!(c.targets().unwrap()[0].endpoint.path, "/v1/metrics");
        c.logs.endpoint = Some("https://logs.example".into());
        let t = c.targets().unwrap();
        assert_eq!(t[1].endpoint.url(), "https://logs.example:443/");
        assert!(!t[0].same_connection(&t[1]));
        c.logs.endpoint = Some("https://logs.example/custom/path".into());
        assert_eq!(c.targets().unwrap()[1].endpoint.path, "/custom/path");
    }

    #[test]
    fn headers_merge_and_are_checked() {
        let mut c = OtlpConfig::default();
        c.headers
            .insert("Authorization".into(), Secret::new("Bearer a"));
        c.logs
            .headers
            .insert("Authorization".into(), Secret::new("Bearer b"));
        let t = c.targets().unwrap();
        assert_eq!(t[0].headers[0].1.expose(), "Bearer a");
        assert_eq!(t[1].headers[0].1.expose(), "Bearer b");
        c.headers
            .insert("X-Bad".into(), Secret::new("a\r\nInjected: 1"));
        let e = c.targets().unwrap_err();
        assert!(
            e.msg.contains("X-Bad") && !e.msg.contains("Injected"),
            "{e}"
        );
        let mut c = OtlpConfig::default();
        c.headers.insert("bad name".into(), Secret::new("x"));
        assert!(c.targets().is_err());
        let mut c = OtlpConfig::default();
        c.headers.insert("content-length".into(), Secret::new("1"));
        assert!(c.targets().is_err());
    }

    #[test]
    fn secrets_never_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "<redacted>");
        let mut c = OtlpConfig::default();
        c.headers.insert("api-key".into(), s);
        c.https_proxy = Some(Secret::new("http://u:pw@proxy:3128"));
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("hunter2") && !dbg.contains("pw@"), "{dbg}");
    }

    #[test]
    fn key_values() {
        let kv = parse_key_values("V", "a=1, b%20c=x%3Dy ,,k=").unwrap();
        assert_eq!(
            kv,
            vec![
                ("a".into(), "1".into()),
                ("b c".into(), "x=y".into()),
                ("k".into(), "".into())
            ]
        );
        let e = parse_key_values("V", "api-key=s3cret,oops").unwrap_err();
        assert!(!e.msg.contains("s3cret") && e.msg.contains("entry 2"));
        assert!(parse_key_values("V", "=v").is_err());
        let h = parse_headers_file("f", "# c\n\nAuthorization: Bearer t:x\n").unwrap();
        assert_eq!(h, vec![("Authorization".into(), "Bearer t:x".into())]);
        assert!(parse_headers_file("f", "nocolon").is_err());
    }

    #[test]
    fn proxies() {
        let p = Proxy::parse("k", "http://user:p%40ss@proxy.corp:3128").unwrap();
        assert_eq!((p.host.as_str(), p.port), ("proxy.corp", 3128));
        // base64("user:p@ss")
        assert_eq!(p.authorization.unwrap().expose(), "Basic dXNlcjpwQHNz");
        let p = Proxy::parse("k", "10.0.0.1:8080").unwrap();
        assert_eq!(
            (p.host.as_str(), p.port, p.needs_dns()),
            ("10.0.0.1", 8080, false)
        );
        let e = Proxy::parse("k", "https://u:secret@p:1").unwrap_err();
        assert!(!e.msg.contains("secret"));
        assert!(Proxy::parse("k", "socks5://p:1").is_err());
    }

    #[test]
    fn no_proxy() {
        let l = "localhost, .corp.example,10.0.0.0/8, 192.168.1.5,[::1],api.x:8443";
        assert!(no_proxy_matches(l, "corp.example", 443));
        assert!(no_proxy_matches(l, "a.b.corp.example", 443));
        assert!(!no_proxy_matches(l, "xcorp.example", 443));
        assert!(no_proxy_matches(l, "10.2.3.4", 80));
        assert!(!no_proxy_matches(l, "11.2.3.4", 80));
        assert!(no_proxy_matches(l, "192.168.1.5", 80));
        assert!(no_proxy_matches(l, "::1", 80));
        assert!(no_proxy_matches(l, "api.x", 8443));
        assert!(!no_proxy_matches(l, "api.x", 443));
        assert!(no_proxy_matches("*", "anything", 1));
        assert!(!no_proxy_matches("", "anything", 1));
    }

    #[test]
    fn proxy_selection_and_needs() {
        let mut c = OtlpConfig {
            endpoint: "https://otlp.example:4318".into(),
            https_proxy: Some(Secret::new("http://proxy:3128")),
            http_proxy: Some(Secret::new("http://10.1.1.1:8080")),
            ..Default::default()
        };
        let t = c.targets().unwrap();
        assert_eq!(t[0].proxy.as_ref().unwrap().port, 3128);
        let n = net_needs(&t);
        assert_eq!(n.connect_tcp, vec![53, 3128]);
        assert!(n.dns && n.tls);
        c.no_proxy = Some("example".into());
        let n = net_needs(&c.targets().unwrap());
        assert_eq!(n.connect_tcp, vec![53, 4318]);
        c.endpoint = "http://127.0.0.1:4318".into();
        c.no_proxy = None;
        let t = c.targets().unwrap();
        assert_eq!(t[0].proxy.as_ref().unwrap().port, 8080);
        let n = net_needs(&t);
        assert_eq!((n.connect_tcp, n.dns, n.tls), (vec![8080], false, false));
    }

    #[test]
    fn tls_settings_are_consistent() {
        let mut c = OtlpConfig {
            endpoint: "https://h".into(),
            client_cert_file: Some("/c.pem".into()),
            ..Default::default()
        };
        assert!(c.targets().unwrap_err().msg.contains("key"));
        c.client_key_file = Some("/k.pem".into());
        assert!(c.targets().is_ok());
        c.endpoint = "http://h".into();
        assert!(c.targets().unwrap_err().msg.contains("https://"));
        let c = OtlpConfig {
            endpoint: "https://h".into(),
            server_name: Some("bad name!".into()),
            ..Default::default()
        };
        assert!(c.targets().is_err());
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(
            parse_listen("k", "127.0.0.1:9464").unwrap(),
            "127.0.0.1:9464".parse().unwrap()
        );
        assert!(parse_listen("k", "[::1]:9464").is_ok());
        assert!(parse_listen("k", "localhost:9464").is_err());
        assert!(parse_listen("k", "9464").is_err());
    }
}
