//! One command's round trip: write the command to the backend, then forward the backend's
//! frames to the client as they arrive, without decoding rows. Only sequence ids are rewritten
//! (so the proxy may re-frame a command) and, for COM_STMT_PREPARE, the statement id (the
//! client sees the proxy's id, which survives a switch). LOCAL INFILE data flows the other way
//! in the middle of the exchange.

use crate::stream::ClientStream;
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::backend::BackendConn;
use crate::response::{Expect, Scanner, Step};
use crate::wire::{decode_packet_limited, encode_packet, frame_header, DecodeError, PacketError};

/// Why a relay broke off; either way the client connection cannot continue.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("client: {0}")]
    Client(std::io::Error),
    #[error("client closed the connection")]
    ClientClosed,
    #[error("backend {side}: {source}")]
    Backend {
        side: String,
        source: std::io::Error,
    },
    #[error("backend {side}: {source}")]
    Decode { side: String, source: DecodeError },
    #[error("client: {0}")]
    ClientDecode(DecodeError),
    /// The client announced a packet larger than it may send (see `Limits`).
    #[error("client: {0}")]
    ClientTooLarge(PacketError),
}

impl From<PacketError> for RelayError {
    fn from(e: PacketError) -> Self {
        match e {
            PacketError::Decode(d) => RelayError::ClientDecode(d),
            too_large => RelayError::ClientTooLarge(too_large),
        }
    }
}

/// What a finished exchange reports.
#[derive(Debug)]
pub struct Outcome {
    pub scanner: Scanner,
    /// For COM_STMT_PREPARE: the backend's statement id and the counts.
    pub prepared: Option<(u32, u16, u16)>,
}

/// Sends `payload` as a command (sequence 0) and relays the response.
/// `client_seq` is the sequence id the client expects next (its command's last id + 1).
/// `client_stmt_id` replaces the backend's id in a prepare-OK packet.
pub async fn exchange(
    client: &mut ClientStream,
    cbuf: &mut BytesMut,
    be: &mut BackendConn,
    payload: &[u8],
    mut client_seq: u8,
    expect: Expect,
    client_stmt_id: Option<u32>,
) -> Result<Outcome, RelayError> {
    let be_err = |side: &str, source| RelayError::Backend {
        side: side.to_string(),
        source,
    };
    let mut out = BytesMut::with_capacity(payload.len() + 8);
    encode_packet(&mut out, 0, payload);
    if let Err(e) = be.stream.write_all(&out).await {
        return Err(be_err(&be.side, e));
    }
    let mut scanner = Scanner::new(expect);
    let mut prepared = None;
    // Whether the next frame continues a packet of 0xFFFFFF bytes (not a new packet).
    let mut continuation = false;
    let mut backend_seq: u8 = 0;
    loop {
        let mut pos = 0;
        let mut infile = false;
        while let Some(h) = frame_header(&be.buf[pos..]) {
            let end = pos + 4 + h.len;
            if be.buf.len() < end {
                break;
            }
            backend_seq = h.seq.wrapping_add(1);
            be.buf[pos + 3] = client_seq;
            client_seq = client_seq.wrapping_add(1);
            if !continuation {
                let step = match scanner.feed(&be.buf[pos + 4..end]) {
                    Ok(s) => s,
                    Err(source) => {
                        return Err(RelayError::Decode {
                            side: be.side.clone(),
                            source,
                        })
                    }
                };
                match step {
                    Step::Prepared {
                        stmt_id,
                        params,
                        columns,
                    } => {
                        prepared = Some((stmt_id, params, columns));
                        if let Some(id) = client_stmt_id {
                            be.buf[pos + 5..pos + 9].copy_from_slice(&id.to_le_bytes());
                        }
                    }
                    Step::LocalInfile => infile = true,
                    Step::More | Step::Done => {}
                }
            }
            continuation = h.continues();
            pos = end;
            if (scanner.is_done() && !continuation) || infile {
                break;
            }
        }
        if pos > 0 {
            client
                .write_all(&be.buf[..pos])
                .await
                .map_err(RelayError::Client)?;
            be.buf.advance(pos);
        }
        if scanner.is_done() && !continuation {
            shrink(&mut be.buf);
            return Ok(Outcome { scanner, prepared });
        }
        if infile {
            let (next_c, next_b) = relay_infile(client, cbuf, be, backend_seq).await?;
            client_seq = next_c;
            let _ = next_b;
            scanner.infile_sent();
            continue;
        }
        be.buf.reserve(16 * 1024);
        match be.stream.read_buf(&mut be.buf).await {
            Ok(0) => return Err(be_err(&be.side, std::io::ErrorKind::UnexpectedEof.into())),
            Ok(_) => {}
            Err(e) => return Err(be_err(&be.side, e)),
        }
    }
}

/// Forwards the client's file packets to the backend until the empty packet that ends them.
/// Returns the next client and backend sequence ids.
async fn relay_infile(
    client: &mut ClientStream,
    cbuf: &mut BytesMut,
    be: &mut BackendConn,
    mut backend_seq: u8,
) -> Result<(u8, u8), RelayError> {
    let side = be.side.clone();
    loop {
        let p = read_client_packet(client, cbuf).await?;
        let client_seq = p.last_seq.wrapping_add(1);
        let mut out = BytesMut::with_capacity(p.payload.len() + 8);
        backend_seq = encode_packet(&mut out, backend_seq, &p.payload);
        be.stream
            .write_all(&out)
            .await
            .map_err(|source| RelayError::Backend {
                side: side.clone(),
                source,
            })?;
        if p.payload.is_empty() {
            return Ok((client_seq, backend_seq));
        }
    }
}

/// Reads one logical packet from the client, refusing one over `client.max_packet` as soon as
/// its header says so.
pub async fn read_client_packet(
    client: &mut ClientStream,
    cbuf: &mut BytesMut,
) -> Result<crate::wire::Packet, RelayError> {
    loop {
        if let Some((p, used)) = decode_packet_limited(cbuf, client.max_packet)? {
            cbuf.advance(used);
            shrink(cbuf);
            return Ok(p);
        }
        cbuf.reserve(8 * 1024);
        let n = client.read_buf(cbuf).await.map_err(RelayError::Client)?;
        if n == 0 {
            return Err(RelayError::ClientClosed);
        }
    }
}

/// Gives memory back after a large packet, so idle sessions stay small.
pub fn shrink(buf: &mut BytesMut) {
    if buf.is_empty() && buf.capacity() > 64 * 1024 {
        *buf = BytesMut::new();
    }
}

/// Writes one packet to the client.
pub async fn write_client(
    client: &mut ClientStream,
    seq: u8,
    payload: &[u8],
) -> Result<u8, RelayError> {
    let mut out = BytesMut::with_capacity(payload.len() + 8);
    let next = encode_packet(&mut out, seq, payload);
    client.write_all(&out).await.map_err(RelayError::Client)?;
    Ok(next)
}
