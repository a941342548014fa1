//! Certificates made at test time (rcgen) and a blocking TLS client
//! (rustls) that reports the certificate the server presented.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// A test certificate authority.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A certificate and its key, written as PEM files.
pub struct Pair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Ca {
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = KeyPair::generate().expect("CA key");
        Ca {
            issuer: CertifiedIssuer::self_signed(params, key).expect("CA"),
        }
    }

    /// Writes the CA's certificate as `dir/NAME` and returns its path.
    pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, self.issuer.pem()).expect("write CA");
        path
    }

    /// A certificate for `names` (DNS names or IP addresses) signed by
    /// this CA, written as `dir/PREFIX.crt` and `dir/PREFIX.key`.
    pub fn issue(&self, dir: &Path, prefix: &str, names: &[&str]) -> Pair {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, prefix);
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        let pair = Pair {
            cert: dir.join(format!("{prefix}.crt")),
            key: dir.join(format!("{prefix}.key")),
        };
        // Key first: a watcher that sees the certificate change finds its key.
        std::fs::write(&pair.key, key.serialize_pem()).expect("write key");
        std::fs::write(&pair.cert, cert.pem()).expect("write cert");
        pair
    }
}

/// What one HTTPS request gave: the status, the body and the DER of the
/// certificate the server presented.
pub struct Answer {
    pub status: u16,
    pub body: String,
    pub server_cert: Vec<u8>,
}

/// `GET path` over TLS to `addr` (`127.0.0.1:port`), trusting `ca` only,
/// with a client certificate when given. Err: why the handshake or the
/// request failed.
pub fn get(addr: &str, path: &str, ca: &Path, client: Option<&Pair>) -> Result<Answer, String> {
    let (conn, tcp) = connect(addr, client_config(ca, client)?)?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    write!(
        tls,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    // A peer that closes without close_notify still sent its answer.
    if let Err(e) = tls.read_to_end(&mut raw) {
        if raw.is_empty() {
            return Err(e.to_string());
        }
    }
    let server_cert = tls
        .conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no HTTP answer: {text:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok(Answer {
        status,
        body,
        server_cert,
    })
}

/// A TLS client for `addr` (`host:port`, the host its server name) and
/// its TCP connection, reads bounded by 10 s; no byte sent yet.
fn connect(
    addr: &str,
    config: rustls::ClientConfig,
) -> Result<(rustls::ClientConnection, TcpStream), String> {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h).to_string();
    let name = ServerName::try_from(host).map_err(|e| e.to_string())?;
    let conn = rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let tcp = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    Ok((conn, tcp))
}

/// A client configuration trusting `ca` only, with a client certificate
/// when given.
fn client_config(ca: &Path, client: Option<&Pair>) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).map_err(|e| e.to_string())? {
        roots
            .add(c.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    match client {
        None => Ok(builder.with_no_client_auth()),
        Some(pair) => {
            let certs = CertificateDer::pem_file_iter(&pair.cert)
                .map_err(|e| e.to_string())?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?;
            let key = PrivateKeyDer::from_pem_file(&pair.key).map_err(|e| e.to_string())?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| e.to_string())
        }
    }
}

/// The application protocol a TLS server at `addr` chooses when a client
/// offers `offered` (ALPN), trusting `ca` only: none when it chose none.
/// Err: why the handshake failed.
pub fn negotiate(addr: &str, ca: &Path, offered: &[&str]) -> Result<Option<String>, String> {
    let mut config = client_config(ca, None)?;
    config.alpn_protocols = offered.iter().map(|p| p.as_bytes().to_vec()).collect();
    let (mut conn, mut tcp) = connect(addr, config)?;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).map_err(|e| e.to_string())?;
    }
    Ok(conn
        .alpn_protocol()
        .map(|p| String::from_utf8_lossy(p).into_owned()))
}

/// The DER of the first certificate of a PEM file.
pub fn der(cert: &Path) -> Vec<u8> {
    CertificateDer::pem_file_iter(cert)
        .expect("PEM")
        .next()
        .expect("a certificate")
        .expect("PEM")
        .to_vec()
}
