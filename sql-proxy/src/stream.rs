//! The client side of a session: plain TCP, or TLS after the client's SSL request, with the
//! largest packet the proxy accepts from it (small before authentication, see `Limits`).

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::{TlsAcceptor, TlsConnector};

pub enum ClientIo {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

pub struct ClientStream {
    pub io: ClientIo,
    /// Largest logical packet read from this client (`read_client_packet`, the command loop).
    pub max_packet: usize,
}

impl ClientStream {
    pub fn new(io: ClientIo, max_packet: usize) -> Self {
        Self { io, max_packet }
    }

    pub fn is_tls(&self) -> bool {
        matches!(self.io, ClientIo::Tls(_))
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            ClientIo::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ClientIo::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ClientStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            ClientIo::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ClientIo::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            ClientIo::Plain(s) => Pin::new(s).poll_flush(cx),
            ClientIo::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            ClientIo::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ClientIo::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: String,
        source: io::Error,
    },
    #[error("TLS {what} {path}: {why}")]
    Pem {
        what: &'static str,
        path: String,
        why: String,
    },
    #[error("TLS configuration: {0}")]
    Config(#[from] tokio_rustls::rustls::Error),
}

/// The crypto provider, named, not guessed: a build where another crate also enables rustls'
/// ring provider would otherwise panic at `ServerConfig::builder()`.
fn provider() -> Arc<tokio_rustls::rustls::crypto::CryptoProvider> {
    Arc::new(tokio_rustls::rustls::crypto::aws_lc_rs::default_provider())
}

/// Builds the connector the proxy reaches its backends with over TLS: their certificates are
/// verified against the CA certificates (PEM) in `ca_file`, for the backend's IP address.
pub fn connector(ca_file: &Path) -> Result<TlsConnector, TlsError> {
    let pem = std::fs::read(ca_file).map_err(|source| TlsError::Read {
        what: "backend CA file",
        path: ca_file.display().to_string(),
        source,
    })?;
    let pem_err = |why: String| TlsError::Pem {
        what: "backend CA file",
        path: ca_file.display().to_string(),
        why,
    };
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| pem_err(e.to_string()))?;
        roots.add(cert).map_err(|e| pem_err(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(pem_err("no certificate found".into()));
    }
    let cfg = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(cfg)))
}

/// Builds the acceptor from a PEM certificate chain and a PEM private key.
pub fn acceptor(cert_file: &Path, key_file: &Path) -> Result<TlsAcceptor, TlsError> {
    let read = |what, p: &Path| {
        std::fs::read(p).map_err(|source| TlsError::Read {
            what,
            path: p.display().to_string(),
            source,
        })
    };
    let cert_pem = read("certificate", cert_file)?;
    let key_pem = read("key", key_file)?;
    let pem_err = |what, p: &Path, why: String| TlsError::Pem {
        what,
        path: p.display().to_string(),
        why,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| pem_err("certificate", cert_file, e.to_string()))?;
    if certs.is_empty() {
        return Err(pem_err(
            "certificate",
            cert_file,
            "no certificate found".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| pem_err("key", key_file, e.to_string()))?;
    let cfg = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}
