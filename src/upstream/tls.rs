//! Extra certificate authorities for upstreams (`--upstream-ca-file`): upstreams behind a
//! private CA are trusted over `https` (reqwest) and `wss` (tokio-tungstenite), on top of
//! the public web roots. Read and checked at start-up.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use std::sync::Arc;

#[derive(Clone, Debug, Default)]
pub struct ExtraRoots {
    certs: Vec<CertificateDer<'static>>,
}

impl ExtraRoots {
    /// The CA certificates of a PEM file (one or more `CERTIFICATE` blocks).
    pub fn from_pem_file(path: &str) -> Result<ExtraRoots, String> {
        let pem = std::fs::read(path).map_err(|e| format!("--upstream-ca-file {path}: {e}"))?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("--upstream-ca-file {path}: {e:?}"))?;
        if certs.is_empty() {
            return Err(format!(
                "--upstream-ca-file {path}: no PEM CERTIFICATE block in it"
            ));
        }
        // Each must be a certificate rustls can use as a root.
        let mut store = rustls::RootCertStore::empty();
        let (_, bad) = store.add_parsable_certificates(certs.iter().cloned());
        if bad > 0 {
            return Err(format!(
                "--upstream-ca-file {path}: {bad} certificate(s) could not be parsed"
            ));
        }
        Ok(ExtraRoots { certs })
    }

    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }

    /// `builder` trusting these roots besides the web's.
    pub fn trusted_by(&self, builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
        self.certs
            .iter()
            .filter_map(|c| reqwest::Certificate::from_der(c).ok())
            .fold(builder, reqwest::ClientBuilder::add_root_certificate)
    }

    /// A TLS connector for upstream WebSockets trusting the web roots and these; `None`
    /// when there are no extra roots (tokio-tungstenite's default then applies).
    pub fn websocket(&self) -> Option<tokio_tungstenite::Connector> {
        if self.certs.is_empty() {
            return None;
        }
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        roots.add_parsable_certificates(self.certs.iter().cloned());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .ok()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Some(tokio_tungstenite::Connector::Rustls(Arc::new(config)))
    }
}
