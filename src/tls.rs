//! TLS for a node (`[tls]` in `cluster.toml`): what its listeners present and check, and
//! what its own HTTP clients (Raft RPCs, relayed requests, start-up probes) trust.
//!
//! - **Listeners.** With `tls.cert_file` both the API and the Raft listener speak TLS
//!   only (rustls on the `ring` provider, TLS 1.2 and 1.3, ALPN `http/1.1`). With
//!   `tls.client_auth` the Raft listener also asks for a client certificate signed by
//!   `tls.ca_file` and refuses a peer without one in the handshake: mutual TLS on top of
//!   the cluster secret. The API listener never asks clients for certificates (clients
//!   authenticate with API keys, see `auth`).
//! - **Peer clients.** A node reaches its peers over `https://`, trusting only the CAs in
//!   `tls.ca_file` when it is set (else the system's roots), and presents its own
//!   certificate when `tls.client_auth` is on.
//! - **Start-up.** Every file is read and checked when the node starts: a missing file,
//!   a file without a certificate or key, or a key that does not match the certificate
//!   is a [`TlsError`] naming the setting and the path, never a panic later.
//!
//! The handshake itself runs inside the connection limits of `serve` (see there).
//!
//! # Caveats
//! - Files are read once at start; a renewed certificate needs a restart (a rolling one
//!   keeps the cluster available).
//! - Certificate revocation (CRLs, OCSP) is not checked.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

use crate::config::{Config, TlsConfig};
use crate::NodeId;

/// The only application protocol the listeners speak.
const ALPN_HTTP1: &[u8] = b"http/1.1";

/// A `[tls]` file that cannot be used; the message names the setting and the path.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read.
    #[error("tls.{setting} {path}: cannot read: {source}")]
    Read {
        setting: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not PEM, or holds nothing of the kind expected.
    #[error("tls.{setting} {path}: {problem}")]
    Content {
        setting: &'static str,
        path: PathBuf,
        problem: String,
    },
    /// rustls refused the certificate and key (a key that does not match, say).
    #[error("tls.cert_file {cert} with tls.key_file {key}: {source}")]
    Pair {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
    /// The CA file cannot check client certificates.
    #[error("tls.ca_file {path}: cannot check client certificates: {problem}")]
    Verifier { path: PathBuf, problem: String },
    /// The HTTP client for peers could not be built with these files.
    #[error("tls: cannot build the client for peers: {0}")]
    Client(#[from] reqwest::Error),
}

/// The listeners' TLS configurations of one node.
#[derive(Clone, Debug)]
pub struct ServerTls {
    /// The API listener: no client certificates.
    pub api: Arc<ServerConfig>,
    /// The Raft listener: client certificates required with `tls.client_auth`.
    pub raft: Arc<ServerConfig>,
}

impl ServerTls {
    /// Reads and checks `[tls]` for node `node`; `None` when TLS is off.
    pub fn load(config: &Config, node: NodeId) -> Result<Option<ServerTls>, TlsError> {
        let tls = &config.tls;
        let (Some(cert_path), Some(key_path)) = (&tls.cert_file, &tls.key_file) else {
            return Ok(None);
        };
        let cert_path = TlsConfig::path_for(cert_path, node);
        let key_path = TlsConfig::path_for(key_path, node);
        let certs = read_certs("cert_file", &cert_path)?;
        let key = read_key(&key_path)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = || {
            ServerConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .expect("ring supports the default protocol versions")
        };
        let pair_err = |source| TlsError::Pair {
            cert: cert_path.clone(),
            key: key_path.clone(),
            source,
        };
        let mut api = builder()
            .with_no_client_auth()
            .with_single_cert(certs.clone(), key.clone_key())
            .map_err(pair_err)?;
        let raft_builder = match (&tls.ca_file, tls.client_auth) {
            (Some(ca), true) => {
                let ca = TlsConfig::path_for(ca, node);
                let roots = root_store(&ca)?;
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                        .build()
                        .map_err(|e| TlsError::Verifier {
                            path: ca.clone(),
                            problem: e.to_string(),
                        })?;
                builder().with_client_cert_verifier(verifier)
            }
            _ => builder().with_no_client_auth(),
        };
        let mut raft = raft_builder
            .with_single_cert(certs, key)
            .map_err(pair_err)?;
        for c in [&mut api, &mut raft] {
            c.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
        }
        Ok(Some(ServerTls {
            api: Arc::new(api),
            raft: Arc::new(raft),
        }))
    }
}

/// A `reqwest` client builder for reaching this node's peers (their Raft and API
/// listeners): no proxy, and with TLS on, only the CAs of `tls.ca_file` trusted (when
/// set) and this node's certificate presented (with `tls.client_auth`).
pub fn peer_client(config: &Config, node: NodeId) -> Result<reqwest::ClientBuilder, TlsError> {
    let mut builder = reqwest::Client::builder().no_proxy();
    let tls = &config.tls;
    if !tls.enabled() {
        return Ok(builder);
    }
    builder = builder.use_rustls_tls();
    if let Some(ca) = &tls.ca_file {
        let ca = TlsConfig::path_for(ca, node);
        let pem = read("ca_file", &ca)?;
        // Checked here so that a bad file is named, not reported by reqwest as a build error.
        read_certs("ca_file", &ca)?;
        builder = builder.tls_built_in_root_certs(false);
        for cert in reqwest::Certificate::from_pem_bundle(&pem)? {
            builder = builder.add_root_certificate(cert);
        }
    }
    if tls.client_auth {
        let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) else {
            return Ok(builder);
        };
        let mut pem = read("cert_file", &TlsConfig::path_for(cert, node))?;
        pem.push(b'\n');
        pem.extend(read("key_file", &TlsConfig::path_for(key, node))?);
        builder = builder.identity(reqwest::Identity::from_pem(&pem)?);
    }
    Ok(builder)
}

/// The certificates in the CA file `path`, for a client that trusts only them.
pub fn root_store(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs("ca_file", path)? {
        roots.add(cert).map_err(|e| TlsError::Content {
            setting: "ca_file",
            path: path.to_owned(),
            problem: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(roots)
}

fn read(setting: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        setting,
        path: path.to_owned(),
        source,
    })
}

/// Every certificate in the PEM file `path`; at least one.
pub fn read_certs(
    setting: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(setting, path)?;
    let content = |problem: String| TlsError::Content {
        setting,
        path: path.to_owned(),
        problem,
    };
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| content(format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(content("no CERTIFICATE block in the file".into()));
    }
    Ok(certs)
}

/// The private key in the PEM file `path`.
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read("key_file", path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::Content {
        setting: "key_file",
        path: path.to_owned(),
        problem: format!("no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {e}"),
    })
}
