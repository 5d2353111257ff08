//! A connection to a backend MariaDB/MySQL server: login with a stage-1 hash (never a
//! password), plus the few commands the proxy issues itself (replaying session state,
//! re-preparing statements, the user sync query).

use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

use crate::auth::{scramble_token, Stage1};
use crate::protocol::{
    cap, parse_auth_switch, ErrPacket, HandshakeResponse, HandshakeV10, NATIVE_PASSWORD,
};
use crate::response::{Expect, Scanner, Step};
use crate::wire::{decode_packet, encode_packet, DecodeError, Packet, Reader};

/// Why talking to a backend failed. `side` names the backend (e.g. "old", "new").
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("backend {side} ({addr}): {source}")]
    Io {
        side: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("backend {side} ({addr}): no answer within {ms} ms")]
    Timeout {
        side: String,
        addr: SocketAddr,
        ms: u64,
    },
    #[error("backend {side} ({addr}): {source}")]
    Decode {
        side: String,
        addr: SocketAddr,
        source: DecodeError,
    },
    /// The server answered with an error packet (forwardable to the client as-is).
    #[error("backend {side} ({addr}) refused: {err}")]
    Server {
        side: String,
        addr: SocketAddr,
        err: ErrPacket,
    },
    /// TLS to the backend was needed and could not be set up (never retried in plain text).
    #[error("backend {side} ({addr}): TLS: {why}")]
    Tls {
        side: String,
        addr: SocketAddr,
        why: String,
    },
    #[error("backend {side} ({addr}) asked for authentication plugin {plugin:?}; only mysql_native_password is supported")]
    Plugin {
        side: String,
        addr: SocketAddr,
        plugin: String,
    },
}

/// Who to log in as.
#[derive(Debug, Clone)]
pub struct Login {
    pub user: String,
    pub stage1: Option<Stage1>,
    pub database: Option<String>,
    /// Capabilities the client negotiated with the proxy (the backend gets the same, so its
    /// packets can be relayed untouched).
    pub capabilities: u32,
    pub charset: u8,
    pub max_packet: u32,
    /// Whether the backend is reached over TLS.
    pub tls: BackendTls,
}

/// TLS between the proxy and the backend for one login.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendTls {
    /// Plain (a plain client, the proxy's own admin logins).
    #[default]
    Off,
    /// A TLS client: over TLS when the proxy has a backend CA configured.
    Preferred,
    /// The account requires TLS: over TLS, else refused (never in plain text).
    Required,
}

/// TCP, or the same server's unix socket when the proxy runs on its host.
pub enum BackendStream {
    Tcp(TcpStream),
    Unix(UnixStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for BackendStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Self::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for BackendStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Self::Unix(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_flush(cx),
            Self::Unix(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Self::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// An authenticated backend connection.
pub struct BackendConn {
    pub stream: BackendStream,
    /// Bytes read from the backend not yet consumed.
    pub buf: BytesMut,
    pub side: String,
    pub addr: SocketAddr,
    pub connection_id: u32,
}

impl BackendConn {
    fn io(&self, source: std::io::Error) -> BackendError {
        BackendError::Io {
            side: self.side.clone(),
            addr: self.addr,
            source,
        }
    }

    fn decode(&self, source: DecodeError) -> BackendError {
        BackendError::Decode {
            side: self.side.clone(),
            addr: self.addr,
            source,
        }
    }

    fn server(&self, payload: &[u8]) -> BackendError {
        let err = ErrPacket::parse(payload)
            .unwrap_or_else(|_| ErrPacket::new(2027, "HY000", "malformed error packet"));
        BackendError::Server {
            side: self.side.clone(),
            addr: self.addr,
            err,
        }
    }

    /// Connects over TCP and logs in. `timeout` bounds the whole exchange.
    pub async fn connect(
        side: &str,
        addr: SocketAddr,
        login: &Login,
        timeout: Duration,
    ) -> Result<Self, BackendError> {
        Self::connect_via(side, addr, None, login, None, timeout).await
    }

    /// As [`connect`](Self::connect), through `socket` (the unix socket of the server at
    /// `addr`) when given; `addr` still names the backend in errors. Over TLS (TCP to `addr`,
    /// the server's certificate checked by `tls`) as `login.tls` asks ([`BackendTls`]).
    pub async fn connect_via(
        side: &str,
        addr: SocketAddr,
        socket: Option<&Path>,
        login: &Login,
        tls: Option<&tokio_rustls::TlsConnector>,
        timeout: Duration,
    ) -> Result<Self, BackendError> {
        let tls = match (login.tls, tls) {
            (BackendTls::Off, _) | (BackendTls::Preferred, None) => None,
            (BackendTls::Preferred | BackendTls::Required, Some(c)) => Some(c),
            (BackendTls::Required, None) => {
                return Err(BackendError::Tls {
                    side: side.into(),
                    addr,
                    why: format!(
                        "account '{}' requires TLS and no [tls] backend_ca_file is configured \
                         (its traffic would reach the server in plain text)",
                        login.user
                    ),
                })
            }
        };
        let socket = if tls.is_some() { None } else { socket };
        let inner = Self::connect_inner(side, addr, socket, login, tls);
        match tokio::time::timeout(timeout, inner).await {
            Ok(r) => r,
            Err(_) => Err(BackendError::Timeout {
                side: side.into(),
                addr,
                ms: timeout.as_millis() as u64,
            }),
        }
    }

    async fn connect_inner(
        side: &str,
        addr: SocketAddr,
        socket: Option<&Path>,
        login: &Login,
        tls: Option<&tokio_rustls::TlsConnector>,
    ) -> Result<Self, BackendError> {
        let io_err = |source: std::io::Error| BackendError::Io {
            side: side.into(),
            addr,
            source,
        };
        let stream = match socket {
            Some(path) => BackendStream::Unix(UnixStream::connect(path).await.map_err(|e| {
                io_err(std::io::Error::new(
                    e.kind(),
                    format!("unix socket {}: {e}", path.display()),
                ))
            })?),
            None => {
                let s = TcpStream::connect(addr).await.map_err(io_err)?;
                let _ = s.set_nodelay(true);
                BackendStream::Tcp(s)
            }
        };
        let mut conn = Self {
            stream,
            buf: BytesMut::with_capacity(4096),
            side: side.into(),
            addr,
            connection_id: 0,
        };
        let greeting = conn.read_packet().await?;
        if greeting.payload.first() == Some(&0xFF) {
            return Err(conn.server(&greeting.payload));
        }
        let hs = HandshakeV10::parse(&greeting.payload).map_err(|e| conn.decode(e))?;
        conn.connection_id = hs.connection_id;
        let scramble = &hs.scramble[..hs.scramble.len().min(20)];
        let token = login
            .stage1
            .as_ref()
            .map_or_else(Vec::new, |s| scramble_token(s, scramble));
        let mut caps = (login.capabilities & hs.capabilities & cap::PROXY_OFFER)
            | cap::PROTOCOL_41
            | cap::SECURE_CONNECTION
            | cap::PLUGIN_AUTH;
        if tls.is_some() {
            caps |= cap::SSL;
        }
        let resp = HandshakeResponse {
            capabilities: caps,
            max_packet: login.max_packet,
            charset: login.charset,
            user: login.user.clone(),
            auth_response: token,
            database: login.database.clone(),
            auth_plugin: Some(NATIVE_PASSWORD.into()),
            attrs_len: 0,
        };
        let packet = resp.build();
        let mut seq = greeting.last_seq.wrapping_add(1);
        if let Some(connector) = tls {
            // The server takes the capabilities from the SSL request: it is the login
            // packet's first 32 bytes.
            conn = conn.start_tls(connector, &hs, &packet[..32], seq).await?;
            seq = seq.wrapping_add(1);
        }
        conn.write_packet(seq, &packet).await?;
        let mut reply = conn.read_packet().await?;
        if reply.payload.first() == Some(&0xFE) {
            let (plugin, data) = parse_auth_switch(&reply.payload).map_err(|e| conn.decode(e))?;
            if plugin != NATIVE_PASSWORD {
                return Err(BackendError::Plugin {
                    side: side.into(),
                    addr,
                    plugin,
                });
            }
            let token = login
                .stage1
                .as_ref()
                .map_or_else(Vec::new, |s| scramble_token(s, &data[..data.len().min(20)]));
            conn.write_packet(reply.last_seq.wrapping_add(1), &token)
                .await?;
            reply = conn.read_packet().await?;
        }
        match reply.payload.first() {
            Some(0x00) => Ok(conn),
            Some(0xFF) => Err(conn.server(&reply.payload)),
            _ => Err(conn.decode(crate::wire::bad(
                "login reply",
                "expected OK, ERR or auth switch",
            ))),
        }
    }

    /// The SSL request `request` (the first 32 bytes of the login packet, CLIENT_SSL set) at
    /// `seq`, then
    /// the TLS handshake, the server's certificate verified for its IP address.
    async fn start_tls(
        mut self,
        connector: &tokio_rustls::TlsConnector,
        hs: &HandshakeV10,
        request: &[u8],
        seq: u8,
    ) -> Result<Self, BackendError> {
        let (side, addr) = (self.side.clone(), self.addr);
        let tls_err = |why: String| BackendError::Tls {
            side: side.clone(),
            addr,
            why,
        };
        if hs.capabilities & cap::SSL == 0 {
            return Err(tls_err("the server does not offer TLS".into()));
        }
        self.write_packet(seq, request).await?;
        let BackendStream::Tcp(tcp) = self.stream else {
            return Err(tls_err("TLS is only set up over TCP".into()));
        };
        let name = tokio_rustls::rustls::pki_types::ServerName::IpAddress(self.addr.ip().into());
        let stream = connector
            .connect(name, tcp)
            .await
            .map_err(|e| tls_err(e.to_string()))?;
        Ok(Self {
            stream: BackendStream::Tls(Box::new(stream)),
            ..self
        })
    }

    /// Reads one logical packet.
    pub async fn read_packet(&mut self) -> Result<Packet, BackendError> {
        loop {
            match decode_packet(&self.buf) {
                Ok(Some((p, used))) => {
                    self.buf.advance(used);
                    return Ok(p);
                }
                Ok(None) => {}
                Err(e) => return Err(self.decode(e)),
            }
            let n = self
                .stream
                .read_buf(&mut self.buf)
                .await
                .map_err(|e| self.io(e))?;
            if n == 0 {
                return Err(self.io(std::io::ErrorKind::UnexpectedEof.into()));
            }
        }
    }

    /// Writes one logical packet starting at `seq`; returns the next sequence id.
    pub async fn write_packet(&mut self, seq: u8, payload: &[u8]) -> Result<u8, BackendError> {
        let mut out = BytesMut::with_capacity(payload.len() + 4);
        let next = encode_packet(&mut out, seq, payload);
        self.stream.write_all(&out).await.map_err(|e| self.io(e))?;
        Ok(next)
    }

    /// Runs a text query and returns its rows (all result sets), NULL as `None`.
    pub async fn query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>, BackendError> {
        let mut cmd = vec![0x03];
        cmd.extend_from_slice(sql.as_bytes());
        self.write_packet(0, &cmd).await?;
        let mut scanner = Scanner::new(Expect::Results { binary: false });
        let mut rows = Vec::new();
        let mut in_rows = false;
        loop {
            let p = self.read_packet().await?;
            let step = scanner.feed(&p.payload).map_err(|e| self.decode(e))?;
            if p.payload.first() == Some(&0xFF) {
                return Err(self.server(&p.payload));
            }
            if crate::protocol::is_eof(&p.payload) {
                in_rows = !in_rows;
            } else if in_rows {
                let mut r = Reader::new(&p.payload);
                let mut row = Vec::new();
                while !r.is_empty() {
                    let v = r.lenenc_bytes("column value").map_err(|e| self.decode(e))?;
                    row.push(v.map(|b| String::from_utf8_lossy(b).into_owned()));
                }
                rows.push(row);
            }
            match step {
                Step::Done => return Ok(rows),
                Step::LocalInfile => {
                    // We never send files on our own queries: answer with an empty file.
                    self.write_packet(p.last_seq.wrapping_add(1), &[]).await?;
                    scanner.infile_sent();
                }
                _ => {}
            }
        }
    }

    /// Prepares a statement; returns the backend's statement id.
    pub async fn prepare(&mut self, sql: &[u8]) -> Result<u32, BackendError> {
        let mut cmd = vec![0x16];
        cmd.extend_from_slice(sql);
        self.write_packet(0, &cmd).await?;
        let mut scanner = Scanner::new(Expect::Prepare);
        let mut id = None;
        loop {
            let p = self.read_packet().await?;
            if p.payload.first() == Some(&0xFF) && id.is_none() {
                return Err(self.server(&p.payload));
            }
            match scanner.feed(&p.payload).map_err(|e| self.decode(e))? {
                Step::Prepared { stmt_id, .. } => {
                    id = Some(stmt_id);
                    if scanner.is_done() {
                        return Ok(stmt_id);
                    }
                }
                Step::Done => {
                    return id
                        .ok_or_else(|| self.decode(crate::wire::bad("prepare", "no statement id")))
                }
                _ => {}
            }
        }
    }
}
