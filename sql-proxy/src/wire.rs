//! The MySQL packet layer: frames (`len:u24 seq:u8 payload`), logical packets joined from
//! frames of exactly 0xFFFFFF bytes, and a bounds-checked reader for payload fields.
//!
//! Every decoder here takes arbitrary bytes and returns `Err`/`None` instead of panicking; the
//! fuzz target (`sql-proxy/fuzz`) calls them directly.

use bytes::{BufMut, BytesMut};

/// Largest payload one frame can carry; a frame of exactly this size continues in the next.
pub const MAX_FRAME: usize = 0xFF_FFFF;

/// A payload could not be decoded: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed packet: {field}: {why}")]
pub struct DecodeError {
    /// The protocol field being read when the bytes ran out or made no sense.
    pub field: &'static str,
    pub why: &'static str,
}

pub(crate) fn bad(field: &'static str, why: &'static str) -> DecodeError {
    DecodeError { field, why }
}

/// One frame header found at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Payload length of this frame (0..=0xFFFFFF).
    pub len: usize,
    pub seq: u8,
}

impl FrameHeader {
    /// Whether a further frame continues this logical packet.
    pub fn continues(&self) -> bool {
        self.len == MAX_FRAME
    }
}

/// Reads a frame header if at least 4 bytes are present.
pub fn frame_header(buf: &[u8]) -> Option<FrameHeader> {
    if buf.len() < 4 {
        return None;
    }
    Some(FrameHeader {
        len: buf[0] as usize | (buf[1] as usize) << 8 | (buf[2] as usize) << 16,
        seq: buf[3],
    })
}

/// A logical packet joined from one or more frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// Sequence id of the first frame.
    pub seq: u8,
    /// Sequence id of the last frame (the next packet in the exchange uses `last_seq + 1`).
    pub last_seq: u8,
    pub payload: Vec<u8>,
}

/// Why [`decode_packet_limited`] refused the bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The frame headers seen so far already announce more than `max` payload bytes: refused
    /// before the payload is read or buffered.
    #[error("packet of at least {len} bytes is larger than the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
}

/// Tries to take one complete logical packet from the front of `buf`.
/// Returns the packet and how many bytes it used, or `None` when more bytes are needed.
/// Never panics; a frame sequence that does not count up by one is an error.
pub fn decode_packet(buf: &[u8]) -> Result<Option<(Packet, usize)>, DecodeError> {
    decode_packet_limited(buf, usize::MAX).map_err(|e| match e {
        PacketError::Decode(d) => d,
        PacketError::TooLarge { .. } => bad("packet length", "too large"),
    })
}

/// As [`decode_packet`], refusing a packet whose payload is announced larger than `max` as
/// soon as the frame header saying so is in `buf`.
///
/// Linear: the frame headers are walked first (no copy) and the payload is copied once, only
/// when the whole packet is there, so calling this after every read of a growing buffer costs
/// one header walk per call instead of re-copying every frame read so far.
pub fn decode_packet_limited(
    buf: &[u8],
    max: usize,
) -> Result<Option<(Packet, usize)>, PacketError> {
    let mut pos = 0;
    let mut total = 0usize;
    let mut first_seq = None;
    let mut prev_seq: Option<u8> = None;
    let last_seq = loop {
        let Some(h) = frame_header(&buf[pos..]) else {
            return Ok(None);
        };
        if let Some(p) = prev_seq {
            if h.seq != p.wrapping_add(1) {
                return Err(bad("sequence id", "continuation frame out of order").into());
            }
        }
        total += h.len;
        if total > max {
            return Err(PacketError::TooLarge { len: total, max });
        }
        first_seq.get_or_insert(h.seq);
        prev_seq = Some(h.seq);
        let end = pos + 4 + h.len;
        if buf.len() < end {
            return Ok(None);
        }
        pos = end;
        if !h.continues() {
            break h.seq;
        }
    };
    let mut payload = Vec::with_capacity(total);
    let mut at = 0;
    while at < pos {
        let h = frame_header(&buf[at..]).expect("walked above");
        payload.extend_from_slice(&buf[at + 4..at + 4 + h.len]);
        at += 4 + h.len;
    }
    Ok(Some((
        Packet {
            seq: first_seq.unwrap_or(last_seq),
            last_seq,
            payload,
        },
        pos,
    )))
}

/// Appends `payload` as frames starting at sequence id `seq`; returns the next sequence id.
/// Payloads of a multiple of 0xFFFFFF bytes end with an empty frame, as the protocol requires.
pub fn encode_packet(out: &mut BytesMut, mut seq: u8, payload: &[u8]) -> u8 {
    let mut rest = payload;
    loop {
        let n = rest.len().min(MAX_FRAME);
        out.reserve(4 + n);
        out.put_u8(n as u8);
        out.put_u8((n >> 8) as u8);
        out.put_u8((n >> 16) as u8);
        out.put_u8(seq);
        out.put_slice(&rest[..n]);
        seq = seq.wrapping_add(1);
        rest = &rest[n..];
        if n < MAX_FRAME {
            return seq;
        }
    }
}

/// A bounds-checked cursor over a payload.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }
    pub fn rest(&mut self) -> &'a [u8] {
        let r = &self.buf[self.pos..];
        self.pos = self.buf.len();
        r
    }
    pub fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(bad(field, "packet too short"));
        }
        let r = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(r)
    }
    pub fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, field)?[0])
    }
    pub fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        let b = self.take(2, field)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    pub fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        let b = self.take(4, field)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    /// A length-encoded integer; `None` for the NULL marker 0xFB.
    pub fn lenenc(&mut self, field: &'static str) -> Result<Option<u64>, DecodeError> {
        let first = self.u8(field)?;
        let n = match first {
            0..=0xFA => return Ok(Some(first as u64)),
            0xFB => return Ok(None),
            0xFC => 2,
            0xFD => 3,
            0xFE => 8,
            0xFF => return Err(bad(field, "0xFF is not a length-encoded integer")),
        };
        let b = self.take(n, field)?;
        let mut v = 0u64;
        for (i, byte) in b.iter().enumerate() {
            v |= (*byte as u64) << (8 * i);
        }
        Ok(Some(v))
    }
    /// A length-encoded string; `None` for NULL.
    pub fn lenenc_bytes(&mut self, field: &'static str) -> Result<Option<&'a [u8]>, DecodeError> {
        match self.lenenc(field)? {
            None => Ok(None),
            Some(n) => {
                let n = usize::try_from(n).map_err(|_| bad(field, "length too large"))?;
                self.take(n, field).map(Some)
            }
        }
    }
    /// Bytes up to a NUL terminator (consumed); the whole rest if there is none.
    pub fn nul_str(&mut self, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let rest = &self.buf[self.pos..];
        match rest.iter().position(|&b| b == 0) {
            Some(i) => {
                self.pos += i + 1;
                Ok(&rest[..i])
            }
            None => Err(bad(field, "missing NUL terminator")),
        }
    }
}

/// Appends a length-encoded integer.
pub fn put_lenenc(out: &mut Vec<u8>, v: u64) {
    match v {
        0..=0xFA => out.push(v as u8),
        0xFB..=0xFFFF => {
            out.push(0xFC);
            out.extend_from_slice(&(v as u16).to_le_bytes());
        }
        0x1_0000..=0xFF_FFFF => {
            out.push(0xFD);
            out.extend_from_slice(&(v as u32).to_le_bytes()[..3]);
        }
        _ => {
            out.push(0xFE);
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
}

/// Appends a length-encoded string.
pub fn put_lenenc_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_lenenc(out, b.len() as u64);
    out.extend_from_slice(b);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_packet_round_trips() {
        let mut out = BytesMut::new();
        let next = encode_packet(&mut out, 3, b"hello");
        assert_eq!(next, 4);
        assert_eq!(&out[..], b"\x05\x00\x00\x03hello");
        let (p, used) = decode_packet(&out).unwrap().unwrap();
        assert_eq!(used, out.len());
        assert_eq!((p.seq, p.last_seq, &p.payload[..]), (3, 3, &b"hello"[..]));
    }

    #[test]
    fn packets_over_16_mib_are_split_and_joined() {
        for size in [
            MAX_FRAME - 1,
            MAX_FRAME,
            MAX_FRAME + 1,
            2 * MAX_FRAME,
            20 << 20,
        ] {
            let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            let mut out = BytesMut::new();
            let next = encode_packet(&mut out, 255, &payload);
            let frames = size / MAX_FRAME + 1;
            assert_eq!(next, 255u8.wrapping_add(frames as u8), "size {size}");
            assert_eq!(out.len(), size + 4 * frames);
            // Incomplete input asks for more instead of failing.
            assert_eq!(decode_packet(&out[..out.len() - 1]).unwrap(), None);
            let (p, used) = decode_packet(&out).unwrap().unwrap();
            assert_eq!(used, out.len());
            assert_eq!(p.seq, 255);
            assert_eq!(p.last_seq, 255u8.wrapping_add(frames as u8 - 1));
            assert!(p.payload == payload, "size {size}");
        }
    }

    #[test]
    fn out_of_order_continuation_is_an_error() {
        let mut buf = vec![0xFF, 0xFF, 0xFF, 1];
        buf.extend(std::iter::repeat_n(0u8, MAX_FRAME));
        buf.extend_from_slice(&[0, 0, 0, 5]);
        assert!(decode_packet(&buf).is_err());
    }

    #[test]
    fn oversized_packet_is_refused_at_its_header() {
        // A header announcing 16 MiB - 1 with no payload yet: refused at once when over the
        // limit, "need more" without one.
        let head = [0xFE, 0xFF, 0xFF, 0];
        assert_eq!(
            decode_packet_limited(&head, 1024),
            Err(PacketError::TooLarge {
                len: 0xFF_FFFE,
                max: 1024
            })
        );
        assert_eq!(decode_packet(&head).unwrap(), None);
        // Continuation frames add up: the second frame's header alone passes 20 MiB.
        let mut buf = vec![0xFF, 0xFF, 0xFF, 0];
        buf.extend(std::iter::repeat_n(7u8, MAX_FRAME));
        buf.extend_from_slice(&[0xFF, 0xFF, 0xFF, 1]);
        assert!(matches!(
            decode_packet_limited(&buf, 20 << 20),
            Err(PacketError::TooLarge { .. })
        ));
        assert_eq!(decode_packet_limited(&buf, 40 << 20).unwrap(), None);
        buf.extend(std::iter::repeat_n(7u8, MAX_FRAME));
        buf.extend_from_slice(&[0x10, 0, 0, 2]);
        assert!(matches!(
            decode_packet_limited(&buf, 2 * MAX_FRAME + 15),
            Err(PacketError::TooLarge { .. })
        ));
        // Exactly at the limit is allowed.
        let mut out = BytesMut::new();
        encode_packet(&mut out, 0, &[1u8; 1024]);
        assert!(decode_packet_limited(&out, 1024).unwrap().is_some());
    }

    #[test]
    fn decoding_a_growing_buffer_is_linear() {
        // 40 MiB arriving 64 KiB at a time: the old decoder copied every complete frame again
        // on each call (~640 calls x up to 40 MiB). Now each incomplete call only walks
        // headers; time it against one full decode.
        let payload = vec![3u8; 40 << 20];
        let mut out = BytesMut::new();
        encode_packet(&mut out, 0, &payload);
        let started = std::time::Instant::now();
        let mut calls = 0;
        for end in (0..out.len()).step_by(64 << 10) {
            assert_eq!(decode_packet(&out[..end]).unwrap(), None);
            calls += 1;
        }
        let incomplete = started.elapsed();
        let started = std::time::Instant::now();
        let (p, _) = decode_packet(&out).unwrap().unwrap();
        let full = started.elapsed();
        assert_eq!(p.payload.len(), payload.len());
        assert!(
            incomplete < full * 4 + std::time::Duration::from_millis(20),
            "{calls} incomplete calls took {incomplete:?}, one full decode {full:?}"
        );
    }

    #[test]
    fn lenenc_round_trips_and_short_input_fails() {
        for v in [
            0u64,
            250,
            251,
            0xFFFF,
            0x10000,
            0xFF_FFFF,
            0x100_0000,
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_lenenc(&mut out, v);
            assert_eq!(Reader::new(&out).lenenc("x").unwrap(), Some(v));
            assert!(Reader::new(&out[..out.len() - 1]).lenenc("x").is_err() || out.len() == 1);
        }
        assert_eq!(Reader::new(&[0xFB]).lenenc("x").unwrap(), None);
        assert!(Reader::new(&[0xFF]).lenenc("x").is_err());
        assert!(Reader::new(&[0xFE, 1]).lenenc_bytes("x").is_err());
    }
}
