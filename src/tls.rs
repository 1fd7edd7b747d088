//! TLS for the node's HTTP listeners (rustls with ring; no OpenSSL): a
//! server config from PEM files (`tls = { cert, key, client_ca }`), TLS 1.2
//! and 1.3 only, ALPN `http/1.1`, and a client certificate required and
//! checked against `client_ca` when it is set (mTLS). The files are watched:
//! when they change (a renewal by certbot or cert-manager) or on SIGHUP, new
//! connections get the new certificate; connections in flight keep theirs.

use crate::config::TlsConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

/// How often the certificate files are looked at for a change.
const WATCH_EVERY: Duration = Duration::from_secs(2);

/// Why a TLS config could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{what} {path}: {reason}")]
    File {
        what: &'static str,
        path: String,
        reason: String,
    },
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
    #[error("client_ca: {0}")]
    ClientCa(String),
}

fn file_error(what: &'static str, path: &Path, reason: impl ToString) -> TlsError {
    TlsError::File {
        what,
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// Builds a server config from the files as they are now.
pub fn server_config(cfg: &TlsConfig) -> Result<ServerConfig, TlsError> {
    let certs = certificates("cert", &cfg.cert)?;
    let key = PrivateKeyDer::from_pem_file(&cfg.key).map_err(|e| file_error("key", &cfg.key, e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = match &cfg.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for c in certificates("client_ca", path)? {
                roots.add(c)?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::ClientCa(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The certificates of a PEM file, at least one.
fn certificates(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| file_error(what, path, e))?;
    if certs.is_empty() {
        return Err(file_error(what, path, "no certificate in it"));
    }
    Ok(certs)
}

/// A client config trusting `ca`'s certificates (else the platform's
/// roots), showing `identity` (certificate chain and key files) when a
/// server asks for one.
pub fn client_config(
    ca: Option<&Path>,
    identity: Option<(&Path, &Path)>,
) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    match ca {
        Some(path) => {
            for c in certificates("ca", path)? {
                roots.add(c)?;
            }
        }
        None => {
            for c in rustls_native_certs::load_native_certs().certs {
                // A platform root rustls cannot use is no reason to fail.
                let _ = roots.add(c);
            }
        }
    }
    let builder = client_builder(roots)?;
    // No ALPN here: the HTTP client sets it for the protocols it speaks.
    Ok(match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let certs = certificates("client_cert", cert)?;
            let key =
                PrivateKeyDer::from_pem_file(key).map_err(|e| file_error("client_key", key, e))?;
            builder.with_client_auth_cert(certs, key)?
        }
    })
}

fn client_builder(
    roots: RootCertStore,
) -> Result<rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert>, TlsError>
{
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots))
}

/// An HTTP/1.1 client (one connection pool: egress's webhook targets, the
/// CLI) that speaks TLS with `tls` to https:// URLs.
pub type HttpClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Full<bytes::Bytes>,
>;

pub fn http_client(tls: rustls::ClientConfig) -> HttpClient {
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    connector.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(connector);
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(https)
}

/// A client for http:// URLs only: its TLS trusts nothing, and it does not
/// read the platform's roots for nothing.
pub fn plain_client() -> HttpClient {
    let tls = client_builder(RootCertStore::empty())
        .expect("ring supports TLS 1.2 and 1.3")
        .with_no_client_auth();
    http_client(tls)
}

/// The TLS of an https:// webhook target: its CA (or the platform's
/// roots), and its client certificate for an mTLS receiver.
pub fn webhook(cfg: &crate::config::WebhookTarget) -> Result<rustls::ClientConfig, TlsError> {
    let identity = cfg.client_cert.as_deref().zip(cfg.client_key.as_deref());
    client_config(cfg.ca.as_deref(), identity)
}

/// A listener's TLS config, swapped whole when its files change.
pub struct Reloading {
    files: RwLock<TlsConfig>,
    current: RwLock<Arc<ServerConfig>>,
    /// What the files looked like when `current` was built.
    seen: RwLock<Vec<Option<(SystemTime, u64)>>>,
}

impl Reloading {
    pub fn new(files: &TlsConfig) -> Result<Self, TlsError> {
        Ok(Self {
            current: RwLock::new(Arc::new(server_config(files)?)),
            seen: RwLock::new(stamps(files)),
            files: RwLock::new(files.clone()),
        })
    }

    /// Takes new files (a config reload): they must load, else nothing changes.
    pub fn set_files(&self, files: &TlsConfig) -> Result<(), TlsError> {
        if *self.files.read().expect("tls files") == *files {
            return Ok(());
        }
        let config = server_config(files)?;
        *self.files.write().expect("tls files") = files.clone();
        *self.seen.write().expect("tls stamps") = stamps(files);
        *self.current.write().expect("tls config") = Arc::new(config);
        tracing::info!(cert = %files.cert.display(), "TLS files changed by a reload; new connections use them");
        Ok(())
    }

    /// The config for a new connection.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current.read().expect("tls config").clone()
    }

    /// Rebuilds the config when the files changed (or `force`); a config
    /// that does not build is logged and the old one kept.
    pub fn reload(&self, force: bool) {
        let files = self.files.read().expect("tls files").clone();
        let now = stamps(&files);
        if !force && *self.seen.read().expect("tls stamps") == now {
            return;
        }
        *self.seen.write().expect("tls stamps") = now;
        match server_config(&files) {
            Ok(c) => {
                *self.current.write().expect("tls config") = Arc::new(c);
                tracing::info!(cert = %files.cert.display(), "TLS certificate reloaded; new connections use it");
            }
            Err(e) => {
                tracing::warn!(error = %e, "TLS files changed but do not load; keeping the previous certificate")
            }
        }
    }

    /// Looks at the files every few seconds, and reloads on SIGHUP, until `stop`.
    pub async fn watch(self: Arc<Self>, stop: CancellationToken) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = signal(SignalKind::hangup()).ok();
        loop {
            let hangup = async {
                match hup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(WATCH_EVERY) => self.reload(false),
                _ = hangup => self.reload(true),
            }
        }
    }
}

/// The server side of a new connection's handshake, within `timeout`. A
/// failure (a plain-HTTP request, a client certificate that does not chain
/// to `client_ca`) is counted as a `tls_handshake_failed` refusal and
/// summarised once a minute with the others, never logged line by line.
pub async fn accept(
    config: Arc<ServerConfig>,
    stream: tokio::net::TcpStream,
    timeout: Duration,
    metrics: &crate::metrics::Metrics,
) -> Option<tokio_rustls::server::TlsStream<tokio::net::TcpStream>> {
    let peer = stream.peer_addr().ok();
    let accept = tokio_rustls::TlsAcceptor::from(config).accept(stream);
    let error = match tokio::time::timeout(timeout, accept).await {
        Ok(Ok(s)) => return Some(s),
        Ok(Err(e)) => e.to_string(),
        Err(_) => "timed out".to_string(),
    };
    metrics.reject(None, "tls_handshake_failed");
    tracing::debug!(?peer, %error, "TLS handshake failed");
    None
}

/// The identities of a connection's client certificate: its subject's
/// common names and its DNS names (none without a client certificate).
pub fn client_identities(
    stream: &tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
) -> Vec<String> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let Some(der) = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
    else {
        return Vec::new();
    };
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return Vec::new();
    };
    let mut out: Vec<String> = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_string))
        .collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(dns) = name {
                out.push(dns.to_string());
            }
        }
    }
    out
}

/// Builds a listener's reloading TLS config and starts watching its files.
pub fn start(cfg: &TlsConfig, stop: &CancellationToken) -> Result<Arc<Reloading>, TlsError> {
    let r = Arc::new(Reloading::new(cfg)?);
    tokio::spawn(r.clone().watch(stop.clone()));
    Ok(r)
}

/// Modification time and length of each file (`None` if unreadable).
fn stamps(files: &TlsConfig) -> Vec<Option<(SystemTime, u64)>> {
    [
        Some(&files.cert),
        Some(&files.key),
        files.client_ca.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(|p| {
        let m = std::fs::metadata(p).ok()?;
        Some((m.modified().ok()?, m.len()))
    })
    .collect()
}
