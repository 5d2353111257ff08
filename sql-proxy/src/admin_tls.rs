//! The admin API over TLS (`[admin] tls_cert`, `tls_key`): the bearer token and route changes
//! cross the datacenter network, so they travel encrypted and the migrator verifies the
//! proxy's certificate (`ca_file` in its site spec, `drivers::proxy::HttpProxy::new_tls`).
//!
//! With TLS configured the admin port speaks nothing else: a client that sends plain HTTP gets
//! one `400` line saying so and the connection is closed, before any request is read (the
//! token it may have sent in clear is never looked at). Handshakes run off the accept loop,
//! each bounded by [`HANDSHAKE_TIMEOUT`], so a silent client cannot stall the API.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// How long a client has to finish its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a plain-HTTP client is told.
const PLAIN_REFUSAL: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n\
Connection: close\r\nContent-Length: 49\r\n\r\nthis admin API speaks HTTPS only (TLS required)\n\n";

/// An `axum::serve` listener yielding TLS connections only.
pub struct TlsListener {
    rx: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Accepts on `tcp` in a task of its own; each connection's handshake in another.
    pub fn new(tcp: TcpListener, acceptor: TlsAcceptor) -> io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (stream, peer) = match tcp.accept().await {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "admin API: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if tx.is_closed() {
                    return;
                }
                let (tx, acceptor) = (tx.clone(), acceptor.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(stream, acceptor)).await
                    {
                        Ok(Ok(Some(tls))) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Ok(None)) => {
                            tracing::warn!(%peer, "admin API: plain HTTP refused (TLS required)")
                        }
                        Ok(Err(e)) => {
                            tracing::warn!(%peer, error = %e, "admin API: TLS handshake failed")
                        }
                        Err(_) => tracing::warn!(%peer, "admin API: TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { rx, local })
    }
}

/// The TLS stream, or `None` when the client spoke something else (answered and closed).
async fn handshake(
    mut stream: TcpStream,
    acceptor: TlsAcceptor,
) -> io::Result<Option<TlsStream<TcpStream>>> {
    let mut first = [0u8; 1];
    if stream.peek(&mut first).await? == 0 {
        return Ok(None);
    }
    // 0x16: a TLS handshake record (ClientHello). Anything else is not TLS.
    if first[0] != 0x16 {
        let _ = stream.write_all(PLAIN_REFUSAL).await;
        let _ = stream.shutdown().await;
        return Ok(None);
    }
    acceptor.accept(stream).await.map(Some)
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(x) => x,
            // The accept task ended (runtime shutting down): nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}
