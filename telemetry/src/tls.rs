//! TLS for the listeners of both binaries (rustls with ring; no OpenSSL):
//! a server configuration read from PEM files, optionally requiring client
//! certificates signed by a CA (mTLS), and read again when a file changes,
//! so a renewed certificate is served without a restart. A file that fails
//! to load keeps the previous configuration serving.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use serde::Deserialize;

/// The application protocols a listener offers in its handshake (ALPN),
/// in its order of preference (the server's order decides).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocols {
    /// HTTP/1.1 only.
    Http1,
    /// HTTP/1.1, and HTTP/2 for a client that offers only it (gRPC): a
    /// client that offers both gets HTTP/1.1.
    Http1AndH2,
}

impl Protocols {
    fn alpn(self) -> Vec<Vec<u8>> {
        match self {
            Protocols::Http1 => vec![b"http/1.1".to_vec()],
            Protocols::Http1AndH2 => vec![b"http/1.1".to_vec(), b"h2".to_vec()],
        }
    }
}

/// Where a listener's certificate and key are, as configured.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// PEM: the certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM: the private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM: CAs whose client certificates are required (mTLS); none: no
    /// client certificate is asked for.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct TlsError {
    pub path: PathBuf,
    pub message: String,
}

fn error(path: &Path, message: impl std::fmt::Display) -> TlsError {
    TlsError {
        path: path.into(),
        message: message.to_string(),
    }
}

/// The ring provider, named: rustls is also built with aws-lc here (by
/// another dependency), and a configuration must not depend on which
/// provider a process installed first.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate of a PEM file; none is an error.
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(path, e))?;
    if certs.is_empty() {
        return Err(error(path, "no PEM certificate in the file"));
    }
    Ok(certs)
}

impl TlsFiles {
    pub fn paths(&self) -> Vec<&Path> {
        let mut p = vec![self.cert_file.as_path(), self.key_file.as_path()];
        p.extend(self.client_ca_file.as_deref());
        p
    }

    /// A server configuration from the files, offering `protocols`.
    pub fn server_config(&self, protocols: Protocols) -> Result<ServerConfig, TlsError> {
        let certs = certificates(&self.cert_file)?;
        let key = PrivateKeyDer::from_pem_file(&self.key_file)
            .map_err(|e| error(&self.key_file, format!("no private key: {e}")))?;
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| error(&self.cert_file, e))?;
        let builder = match &self.client_ca_file {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for c in certificates(ca)? {
                    roots.add(c).map_err(|e| error(ca, e))?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(roots.into(), provider())
                        .build()
                        .map_err(|e| error(ca, e))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder
            .with_single_cert(certs, key)
            .map_err(|e| error(&self.cert_file, format!("certificate and key: {e}")))?;
        config.alpn_protocols = protocols.alpn();
        Ok(config)
    }
}

/// A listener's TLS: the configuration in use, replaced when its files
/// change and load.
pub struct ServerTls {
    files: TlsFiles,
    protocols: Protocols,
    current: RwLock<Arc<ServerConfig>>,
    stamps: Mutex<Vec<Stamp>>,
}

impl ServerTls {
    pub fn load(files: TlsFiles, protocols: Protocols) -> Result<ServerTls, TlsError> {
        let config = files.server_config(protocols)?;
        let stamps = stamps(&files.paths());
        Ok(ServerTls {
            files,
            protocols,
            current: RwLock::new(Arc::new(config)),
            stamps: Mutex::new(stamps),
        })
    }

    /// The acceptor for the next connection.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let config = self.current.read().unwrap_or_else(|p| p.into_inner());
        tokio_rustls::TlsAcceptor::from(config.clone())
    }

    /// Loads the files again when one changed (modification time or
    /// size): `None` when none did, else whether the new ones now serve.
    /// On failure the previous configuration keeps serving.
    pub fn reload_if_changed(&self) -> Option<Result<(), TlsError>> {
        let now = stamps(&self.files.paths());
        {
            let mut seen = self.stamps.lock().unwrap_or_else(|p| p.into_inner());
            if *seen == now {
                return None;
            }
            *seen = now;
        }
        Some(self.files.server_config(self.protocols).map(|c| {
            *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(c);
        }))
    }
}

/// What tells a changed file: its modification time and its size (for
/// writes within one tick of the clock); none when it cannot be read.
pub type Stamp = Option<(SystemTime, u64)>;

/// The stamp of each file.
pub fn stamps(paths: &[&Path]) -> Vec<Stamp> {
    paths
        .iter()
        .map(|p| {
            let m = std::fs::metadata(p).ok()?;
            Some((m.modified().ok()?, m.len()))
        })
        .collect()
}

/// Why a client's TLS handshake did not complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeError {
    /// Not TLS, no or a wrong client certificate, a broken connection.
    Failed,
    /// Not done within the time allowed.
    TimedOut,
}

impl ServerTls {
    /// The server side of a client's handshake, within `within`.
    pub async fn accept<IO>(
        &self,
        stream: IO,
        within: std::time::Duration,
    ) -> Result<tokio_rustls::server::TlsStream<IO>, HandshakeError>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        match tokio::time::timeout(within, self.acceptor().accept(stream)).await {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(_)) => Err(HandshakeError::Failed),
            Err(_) => Err(HandshakeError::TimedOut),
        }
    }
}

/// Reads the TLS files again every second while the listener serves, so a
/// renewed certificate is served without a restart: each reload counted
/// in `reloads{outcome="success|failure"}` and said, a failure with its
/// reason (the previous certificate keeps serving). `what` names the
/// listener in messages.
pub async fn watch(tls: Arc<ServerTls>, what: &'static str, reloads: prometheus::IntCounterVec) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tick.tick().await;
        let t = tls.clone();
        let Ok(Some(outcome)) = tokio::task::spawn_blocking(move || t.reload_if_changed()).await
        else {
            continue;
        };
        let label = match &outcome {
            Ok(()) => {
                tracing::info!(listener = what, "{what}: certificate reloaded");
                "success"
            }
            Err(e) => {
                tracing::error!(
                    listener = what,
                    "{what}: reloading the certificate failed, the previous one keeps serving: {e}"
                );
                "failure"
            }
        };
        reloads.with_label_values(&[label]).inc();
    }
}
