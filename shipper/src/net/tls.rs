//! TLS client configuration (rustls, ring provider): the CA bundle the supervisor read (the
//! host's by default, or `ca_file`), an optional client certificate and key for mutual TLS,
//! TLS 1.2 and 1.3 only. Built once per distinct setting at start; a setting that cannot work
//! is a configuration error, not a retry.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use vigil_ipc_proto::delivery::{ShipperInputs, Target};

/// Build the client configuration for one target.
pub fn client_config(t: &Target, inputs: &ShipperInputs) -> Result<Arc<ClientConfig>, String> {
    let (ca_path, ca) = inputs.ca(t.tls.ca_file.as_deref()).ok_or_else(|| {
        format!(
            "{}: no CA bundle was handed over (ca_file {:?})",
            t.endpoint.origin(),
            t.tls.ca_file
        )
    })?;
    let mut roots = RootCertStore::empty();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(ca)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("CA bundle {ca_path}: {e}"))?;
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(format!("CA bundle {ca_path}: no usable CA certificate"));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_root_certificates(roots);
    let mut cfg = match (&t.tls.client_cert_file, &t.tls.client_key_file) {
        (Some(cp), Some(kp)) => {
            let file = |p: &str| {
                inputs
                    .files
                    .get(p)
                    .ok_or_else(|| format!("{p} was not handed over"))
            };
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(file(cp)?)
                .collect::<Result<_, _>>()
                .map_err(|e| format!("client_cert_file {cp}: {e}"))?;
            let key = PrivateKeyDer::from_pem_slice(file(kp)?)
                .map_err(|e| format!("client_key_file {kp}: {e}"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("client certificate {cp} with key {kp}: {e}"))?
        }
        _ => builder.with_no_client_auth(),
    };
    // HTTP/1.1 only: no ALPN needed, and none offered (a server must not pick h2).
    cfg.alpn_protocols.clear();
    Ok(Arc::new(cfg))
}

/// The name sent as SNI and verified: `server_name` or the endpoint's host.
pub fn server_name(t: &Target) -> Result<ServerName<'static>, String> {
    let n = t.tls.server_name.as_deref().unwrap_or(&t.endpoint.host);
    ServerName::try_from(n.to_string()).map_err(|e| format!("server name {n:?}: {e}"))
}

/// A rustls error in words a user can act on.
pub fn explain(e: &rustls::Error) -> String {
    use rustls::{CertificateError, Error};
    match e {
        Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            "certificate not trusted: unknown issuer (is ca_file / OTEL_EXPORTER_OTLP_CERTIFICATE the CA that signed the server's certificate?)".into()
        }
        Error::InvalidCertificate(CertificateError::NotValidForName)
        | Error::InvalidCertificate(CertificateError::NotValidForNameContext { .. }) => {
            "certificate is not valid for this name (set server_name if the certificate names another host)".into()
        }
        Error::InvalidCertificate(CertificateError::Expired)
        | Error::InvalidCertificate(CertificateError::ExpiredContext { .. }) => {
            "certificate expired".into()
        }
        Error::InvalidCertificate(c) => format!("certificate rejected: {c:?}"),
        Error::AlertReceived(a) => format!("server sent TLS alert {a:?} (a client certificate required or refused?)"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_ipc_proto::OtlpConfig;

    fn target(ca: Option<&str>) -> Target {
        let c = OtlpConfig {
            endpoint: "https://otlp.example:4318".into(),
            ca_file: ca.map(String::from),
            ..Default::default()
        };
        c.targets().unwrap().remove(0)
    }

    #[test]
    fn missing_or_empty_bundle_is_an_error() {
        let t = target(None);
        assert!(client_config(&t, &ShipperInputs::default()).is_err());
        let mut inputs = ShipperInputs::default();
        inputs.files.insert("/ca.pem".into(), b"not pem".to_vec());
        let e = client_config(&target(Some("/ca.pem")), &inputs).unwrap_err();
        assert!(e.contains("/ca.pem"), "{e}");
    }

    #[test]
    fn host_bundle_builds() {
        // The machine's own bundle: real CA certificates in PEM.
        let Ok(b) = std::fs::read("/etc/ssl/certs/ca-certificates.crt") else {
            panic!("this test needs the ca-certificates package");
        };
        let mut inputs = ShipperInputs {
            default_ca: Some("/etc/ssl/certs/ca-certificates.crt".into()),
            ..Default::default()
        };
        inputs
            .files
            .insert("/etc/ssl/certs/ca-certificates.crt".into(), b);
        let t = target(None);
        client_config(&t, &inputs).unwrap();
        assert_eq!(
            server_name(&t).unwrap(),
            ServerName::try_from("otlp.example").unwrap()
        );
    }
}
