//! What the supervisor prepares for the shipper's delivery, once at start, before the view is
//! built and before any child runs:
//! - every file the delivery settings name (CA bundles, client certificates and keys) and, when
//!   TLS is used without a `ca_file`, the host's CA bundle, read here (bounded) and checked to
//!   hold what the key says; when a name must be resolved, the supervisor's own
//!   `/etc/resolv.conf` and `/etc/hosts` (the container's in a pod: the resolution the agent was
//!   started with). All of it goes to the shipper as one sealed memfd: its Landlock ruleset
//!   opens nothing outside the journal, and it needs no path of the host view for delivery.
//! - the Prometheus endpoint's listening socket, bound here so the shipper's filter needs
//!   `accept4` only (no `bind`, no `listen`).
//!
//! What cannot work is one error naming the key and the fix; the agent then does not start.

use std::io::Write;
use std::net::TcpListener;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use vigil_ipc_proto::delivery::{NetNeeds, Scheme, ShipperInputs, Target, net_needs, parse_listen};
use vigil_ipc_proto::{AgentConfig, Attached};

use crate::error::{Error, Result};
use crate::files::read_bounded;

const MAX_PEM: u64 = 4 << 20;
const MAX_RESOLV_CONF: u64 = 64 << 10;
const MAX_HOSTS: u64 = 16 << 20;

/// Where distributions keep the system CA bundle (the list rustls-native-certs and OpenSSL's
/// builds search), looked up under the host root first.
const CA_BUNDLES: &[&str] = &[
    "etc/ssl/certs/ca-certificates.crt",
    "etc/pki/tls/certs/ca-bundle.crt",
    "etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "etc/ssl/ca-bundle.pem",
    "etc/ssl/cert.pem",
];

/// Descriptors and facts for the shipper.
#[derive(Debug, Default)]
pub struct Prepared {
    /// Sealed memfd with the [`ShipperInputs`] (only when OTLP is on).
    pub inputs: Option<OwnedFd>,
    pub listener: Option<OwnedFd>,
    /// What the shipper's sandbox must allow.
    pub needs: NetNeeds,
}

impl Prepared {
    /// The descriptor sent for one [`Attached`] entry of an Init.
    pub fn fd_for(&self, a: Attached) -> Option<BorrowedFd<'_>> {
        match a {
            Attached::ShipperInputs => self.inputs.as_ref().map(|f| f.as_fd()),
            Attached::PrometheusListener => self.listener.as_ref().map(|f| f.as_fd()),
        }
    }
}

fn bad(msg: String) -> Error {
    Error::Config {
        path: "(merged configuration)".into(),
        msg,
    }
}

pub fn prepare(
    cfg: &AgentConfig,
    host_root: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Prepared> {
    let mut out = Prepared::default();
    if let Some(o) = &cfg.shipper.otlp {
        let targets = o.targets().map_err(|e| bad(e.to_string()))?;
        out.needs = net_needs(&targets);
        let inputs = gather(&targets, host_root, env)?;
        out.inputs = Some(seal(&inputs)?);
    }
    if !cfg.shipper.prometheus.listen.is_empty() {
        out.listener = Some(listen(&cfg.shipper.prometheus.listen)?);
    }
    Ok(out)
}

fn gather(
    targets: &[Target],
    host_root: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ShipperInputs> {
    let mut inputs = ShipperInputs::default();
    for t in targets
        .iter()
        .filter(|t| t.endpoint.scheme == Scheme::Https)
    {
        let key = |f: &str| format!("shipper.otlp.{f} ({} endpoint)", t.signal.as_str());
        match &t.tls.ca_file {
            Some(p) => add_pem(&mut inputs, &key("ca_file"), p, Pem::Certs)?,
            None if inputs.default_ca.is_none() => {
                let p = default_ca(host_root, env)?;
                add_pem(&mut inputs, "the host's CA bundle", &p, Pem::Certs)?;
                inputs.default_ca = Some(p);
            }
            None => {}
        }
        if let (Some(c), Some(k)) = (&t.tls.client_cert_file, &t.tls.client_key_file) {
            add_pem(&mut inputs, &key("client_cert_file"), c, Pem::Certs)?;
            add_pem(&mut inputs, &key("client_key_file"), k, Pem::Key)?;
        }
    }
    if targets.iter().any(Target::needs_dns) {
        inputs.resolv_conf = read_bounded(Path::new("/etc/resolv.conf"), MAX_RESOLV_CONF).ok();
        inputs.hosts = read_bounded(Path::new("/etc/hosts"), MAX_HOSTS).ok();
        check_resolvable(targets, &inputs)?;
    }
    Ok(inputs)
}

#[derive(Clone, Copy)]
enum Pem {
    Certs,
    Key,
}

fn add_pem(inputs: &mut ShipperInputs, key: &str, path: &str, kind: Pem) -> Result<()> {
    if inputs.files.contains_key(path) {
        return Ok(());
    }
    let bytes = read_bounded(Path::new(path), MAX_PEM)
        .map_err(|e| bad(format!("{key}: cannot read {path}: {e}")))?;
    check_pem(&bytes, kind).map_err(|why| bad(format!("{key}: {path}: {why}")))?;
    inputs.files.insert(path.to_string(), bytes);
    Ok(())
}

/// A certificate file must hold at least one certificate, a key file exactly one private key
/// (PKCS#8, PKCS#1 or SEC1 PEM), or the shipper could never connect.
fn check_pem(bytes: &[u8], kind: Pem) -> std::result::Result<(), String> {
    match kind {
        Pem::Certs => {
            let mut n = 0;
            for c in CertificateDer::pem_slice_iter(bytes) {
                c.map_err(|e| format!("not a PEM certificate file: {e}"))?;
                n += 1;
            }
            if n == 0 {
                return Err("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into());
            }
        }
        Pem::Key => {
            PrivateKeyDer::from_pem_slice(bytes)
                .map_err(|e| format!("holds no PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"))?;
        }
    }
    Ok(())
}

/// The CA bundle used when none is configured: `SSL_CERT_FILE` if set, else the first bundle
/// found under the host root, else under our own root (a container image's).
fn default_ca(host_root: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<String> {
    if let Some(p) = env("SSL_CERT_FILE").filter(|p| !p.is_empty()) {
        return Ok(p);
    }
    let mut tried = Vec::new();
    for root in [host_root, Path::new("/")] {
        for rel in CA_BUNDLES {
            let p: PathBuf = root.join(rel);
            if p.is_file() {
                return Ok(p.display().to_string());
            }
            tried.push(p.display().to_string());
        }
        if root == Path::new("/") {
            break;
        }
    }
    Err(bad(format!(
        "https:// needs a CA bundle and none was found (tried {}): set shipper.otlp.ca_file \
         (or OTEL_EXPORTER_OTLP_CERTIFICATE) to a PEM file of the CAs to trust",
        tried.join(", ")
    )))
}

/// A name that is neither in /etc/hosts nor resolvable through a nameserver cannot work.
fn check_resolvable(targets: &[Target], inputs: &ShipperInputs) -> Result<()> {
    let has_nameserver = inputs.resolv_conf.as_deref().is_some_and(|t| {
        String::from_utf8_lossy(t)
            .lines()
            .any(|l| l.split_whitespace().next() == Some("nameserver"))
    });
    if has_nameserver {
        return Ok(());
    }
    let hosts = String::from_utf8_lossy(inputs.hosts.as_deref().unwrap_or(&[])).into_owned();
    let in_hosts = |name: &str| {
        hosts.lines().any(|l| {
            let l = l.split('#').next().unwrap_or("");
            l.split_whitespace()
                .skip(1)
                .any(|n| n.trim_end_matches('.').eq_ignore_ascii_case(name))
        })
    };
    for t in targets.iter().filter(|t| t.needs_dns()) {
        let (key, name) = match &t.proxy {
            Some(p) => ("https_proxy/http_proxy", p.host.as_str()),
            None => ("endpoint", t.endpoint.host.as_str()),
        };
        if !in_hosts(name) {
            return Err(bad(format!(
                "shipper.otlp.{key}: {name} is not in /etc/hosts and /etc/resolv.conf names no \
                 nameserver: add a nameserver, an /etc/hosts entry, or use an IP address"
            )));
        }
    }
    Ok(())
}

/// The inputs in a sealed memfd: the shipper reads it with pread, nobody can change it.
fn seal(inputs: &ShipperInputs) -> Result<OwnedFd> {
    use nix::fcntl::{FcntlArg, SealFlag, fcntl};
    use nix::sys::memfd::{MFdFlags, memfd_create};
    let bytes = inputs
        .encode()
        .map_err(|e| Error::Other(format!("encode shipper inputs: {e}")))?;
    if bytes.len() > ShipperInputs::MAX_BYTES {
        return Err(bad(format!(
            "the files named for delivery add up to {} bytes, more than {}",
            bytes.len(),
            ShipperInputs::MAX_BYTES
        )));
    }
    let fd = memfd_create(
        c"vigil-shipper-inputs",
        MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
    )
    .map_err(Error::sys("memfd_create"))?;
    let mut f = std::fs::File::from(fd);
    f.write_all(&bytes).map_err(|source| Error::Sys {
        step: "write shipper inputs",
        source,
    })?;
    let fd = OwnedFd::from(f);
    fcntl(
        &fd,
        FcntlArg::F_ADD_SEALS(
            SealFlag::F_SEAL_SHRINK
                | SealFlag::F_SEAL_GROW
                | SealFlag::F_SEAL_WRITE
                | SealFlag::F_SEAL_SEAL,
        ),
    )
    .map_err(Error::sys("seal shipper inputs"))?;
    Ok(fd)
}

fn listen(addr: &str) -> Result<OwnedFd> {
    let key = "shipper.prometheus.listen";
    let sa = parse_listen(key, addr).map_err(|e| bad(e.to_string()))?;
    let l = TcpListener::bind(sa).map_err(|e| {
        bad(format!(
            "{key}: cannot listen on {sa}: {e} (another process on that port? pick another or stop it)"
        ))
    })?;
    Ok(OwnedFd::from(l))
}

/// systemd's `IPAddressAllow=` for this configuration: loopback, plus each backend's (or
/// proxy's) address — a name as it resolves now, with the nameservers of /etc/resolv.conf —
/// so the unit's IP firewall is widened exactly as far as delivery needs. Names whose
/// addresses may change are listed in the returned notes.
pub fn ip_address_allow(cfg: &AgentConfig) -> (String, Vec<String>) {
    use std::net::ToSocketAddrs;
    let mut allow = vec!["localhost".to_string()];
    let mut notes = Vec::new();
    let targets = cfg
        .shipper
        .otlp
        .as_ref()
        .and_then(|o| o.targets().ok())
        .unwrap_or_default();
    let mut dns = false;
    for t in &targets {
        let (host, port) = match &t.proxy {
            Some(p) => (p.host.clone(), p.port),
            None => (t.endpoint.host.clone(), t.endpoint.port),
        };
        if vigil_ipc_proto::delivery::is_localhost(&host) {
            continue;
        }
        if host.parse::<std::net::IpAddr>().is_ok() {
            allow.push(host);
            continue;
        }
        dns = true;
        match (host.as_str(), port).to_socket_addrs() {
            Ok(a) => {
                let ips: Vec<String> = a.map(|a| a.ip().to_string()).collect();
                notes.push(format!(
                    "{host} resolves to {} now; if its addresses change, allow its network instead",
                    ips.join(" ")
                ));
                allow.extend(ips);
            }
            Err(e) => notes.push(format!(
                "{host} does not resolve here ({e}): add its addresses"
            )),
        }
    }
    if dns {
        let conf = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        for l in conf.lines() {
            let mut w = l.split_whitespace();
            if w.next() == Some("nameserver")
                && let Some(ip) = w.next()
            {
                allow.push(ip.to_string());
            }
        }
    }
    // `localhost` already covers 127.0.0.0/8 and ::1.
    let mut seen = std::collections::BTreeSet::new();
    allow.retain(|a| {
        !a.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
            && seen.insert(a.clone())
    });
    (format!("IPAddressAllow={}", allow.join(" ")), notes)
}

/// One line per signal saying where it goes (no header values), for `vigil doctor`.
pub fn describe(cfg: &AgentConfig) -> Vec<String> {
    let Some(o) = &cfg.shipper.otlp else {
        return vec!["OTLP exporter off".into()];
    };
    match o.targets() {
        Err(e) => vec![format!("OTLP configuration error: {e}")],
        Ok(ts) => ts
            .iter()
            .map(|t| {
                let via = t
                    .proxy
                    .as_ref()
                    .map(|p| format!(" via proxy {}", p.authority()))
                    .unwrap_or_default();
                format!(
                    "OTLP {}: {}{via} ({} header(s), {:?}, timeout {} ms)",
                    t.signal.as_str(),
                    t.endpoint.url(),
                    t.headers.len(),
                    t.compression,
                    t.timeout_ms
                )
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_ipc_proto::OtlpConfig;

    const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUQ0WmF0M2tL6nJpV9f4Fq0uJvJ8EwCgYIKoZIzj0EAwIw\n-----END CERTIFICATE-----\n";

    fn cfg(endpoint: &str) -> AgentConfig {
        let mut c = AgentConfig::default();
        c.shipper.otlp = Some(OtlpConfig {
            endpoint: endpoint.into(),
            ..Default::default()
        });
        c
    }

    #[test]
    fn pem_checks_name_the_problem() {
        assert!(
            check_pem(b"hello", Pem::Certs)
                .unwrap_err()
                .contains("no PEM certificate")
        );
        assert!(
            check_pem(b"hello", Pem::Key)
                .unwrap_err()
                .contains("private key")
        );
        // Structure only: a truncated body still base64-decodes.
        assert!(check_pem(CERT.as_bytes(), Pem::Certs).is_ok());
    }

    #[test]
    fn missing_ca_file_is_a_clear_error() {
        let mut c = cfg("https://127.0.0.1:4318");
        c.shipper.otlp.as_mut().unwrap().ca_file = Some("/nonexistent/ca.pem".into());
        let e = prepare(&c, Path::new("/"), &|_| None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("shipper.otlp.ca_file") && e.contains("/nonexistent/ca.pem"),
            "{e}"
        );
    }

    #[test]
    fn custom_ca_and_default_bundle_are_sealed_in() {
        let d = tempfile::tempdir().unwrap();
        let ca = d.path().join("ca.pem");
        std::fs::write(&ca, CERT).unwrap();
        let mut c = cfg("https://127.0.0.1:4318");
        c.shipper.otlp.as_mut().unwrap().ca_file = Some(ca.display().to_string());
        let p = prepare(&c, Path::new("/"), &|_| None).unwrap();
        let fd = p.inputs.unwrap();
        let mut f = std::fs::File::from(fd);
        let mut b = Vec::new();
        std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(0)).unwrap();
        std::io::Read::read_to_end(&mut f, &mut b).unwrap();
        let inputs = ShipperInputs::decode(&b).unwrap();
        assert_eq!(inputs.ca(None), None);
        assert_eq!(
            inputs.ca(Some(&ca.display().to_string())).unwrap().1,
            CERT.as_bytes()
        );
        // Sealed: not writable any more.
        assert!(std::io::Write::write_all(&mut f, b"x").is_err());

        // SSL_CERT_FILE names the default bundle.
        let c = cfg("https://127.0.0.1:4318");
        let ca_s = ca.display().to_string();
        let p = prepare(&c, Path::new("/nonexistent-root"), &|k| {
            (k == "SSL_CERT_FILE").then(|| ca_s.clone())
        })
        .unwrap();
        assert!(p.inputs.is_some() && !p.needs.dns && p.needs.tls);
    }

    #[test]
    fn plain_http_to_an_ip_needs_nothing() {
        let p = prepare(&cfg("http://127.0.0.1:4318"), Path::new("/"), &|_| None).unwrap();
        assert_eq!(p.needs.connect_tcp, vec![4318]);
        assert!(!p.needs.dns && !p.needs.tls);
    }

    #[test]
    fn unresolvable_names_are_refused() {
        let targets = cfg("http://otlp.example.test:4318")
            .shipper
            .otlp
            .unwrap()
            .targets()
            .unwrap();
        let mut inputs = ShipperInputs {
            hosts: Some(b"127.0.0.1 localhost\n10.0.0.5 otlp.example.test # test\n".to_vec()),
            ..Default::default()
        };
        assert!(check_resolvable(&targets, &inputs).is_ok());
        inputs.hosts = Some(b"127.0.0.1 localhost\n".to_vec());
        let e = check_resolvable(&targets, &inputs).unwrap_err().to_string();
        assert!(
            e.contains("otlp.example.test") && e.contains("nameserver"),
            "{e}"
        );
        inputs.resolv_conf = Some(b"search x\nnameserver 10.0.0.53\n".to_vec());
        assert!(check_resolvable(&targets, &inputs).is_ok());
    }

    #[test]
    fn listener_in_use_names_the_key() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let e = listen(&addr).unwrap_err().to_string();
        assert!(e.contains("shipper.prometheus.listen"), "{e}");
    }
}
