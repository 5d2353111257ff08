//! The framed batch protocol between the sync sender and `migrator receive`.
//!
//! Each frame is `u32` length (big-endian) then a tag byte and a payload. One `Apply` frame
//! carries hundreds of operations (small files inline), so many small files cost one round trip
//! per batch, and the sender keeps several batches in flight before it reads acknowledgements.
//! Hand-written encoding: a handful of message types, raw byte paths, no extra dependency.
//! The receiving side's loop is [`crate::files::receive`].

use crate::files::apply::large_copy::SourceId;
use crate::files::apply::{Applied, Data, Meta, Op};
use crate::files::manifest::{Entry, Kind, Manifest};
use crate::files::stamps::DirStamp;
use std::io::{Read, Write};

/// Bumped on any incompatible change; both sides must agree. 4: the receiver refuses paths
/// leaving its root, copies files named like temporaries, and resume records name their file
/// (an older receiver would delete such customer files and follow `..`).
pub const PROTOCOL_VERSION: u32 = 4;
/// Refuse absurd frames from a confused peer instead of allocating them.
const MAX_FRAME: usize = 256 << 20;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed frame: {0}")]
    Malformed(&'static str),
    #[error("frame of {0} bytes exceeds the limit")]
    TooLarge(usize),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    Scan {
        checksum: bool,
    },
    Apply(Vec<Op>),
    /// Sync to disk and report totals.
    Finish,
    /// Stamps of these directories (for a cached destination manifest): `settled` waits out
    /// the racy window first (after a pass), otherwise they are taken as they are.
    Stamps {
        dirs: Vec<Vec<u8>>,
        settled: bool,
    },
    /// Before the chunks of a large file: where they should start (see
    /// [`crate::files::apply::Applier::resume_offset`]); answered by [`Response::ResumeAt`].
    Resume {
        path: Vec<u8>,
        source: SourceId,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    Hello { version: u32, sets_owner: bool },
    Manifest(Manifest),
    Applied(Applied),
    Finished,
    Error(String),
    Stamps(Vec<DirStamp>),
    ResumeAt(u64),
}

struct Enc(Vec<u8>);

impl Enc {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.u64(b.len() as u64);
        self.0.extend_from_slice(b);
    }
    fn opt(&mut self, b: &Option<Vec<u8>>) {
        match b {
            None => self.u8(0),
            Some(b) => {
                self.u8(1);
                self.bytes(b);
            }
        }
    }
    fn meta(&mut self, m: &Meta) {
        self.u32(m.mode);
        self.u32(m.uid);
        self.u32(m.gid);
        self.u64(m.mtime_s as u64);
        self.u32(m.mtime_ns);
    }
    fn kind(&mut self, k: Kind) {
        self.u8(match k {
            Kind::Dir => 0,
            Kind::File => 1,
            Kind::Symlink => 2,
        });
    }
}

struct Dec<'a>(&'a [u8]);

impl Dec<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], WireError> {
        if self.0.len() < n {
            return Err(WireError::Malformed("truncated"));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn bytes(&mut self) -> Result<Vec<u8>, WireError> {
        let n = self.u64()? as usize;
        Ok(self.take(n)?.to_vec())
    }
    fn opt(&mut self) -> Result<Option<Vec<u8>>, WireError> {
        Ok(match self.u8()? {
            0 => None,
            _ => Some(self.bytes()?),
        })
    }
    fn meta(&mut self) -> Result<Meta, WireError> {
        Ok(Meta {
            mode: self.u32()?,
            uid: self.u32()?,
            gid: self.u32()?,
            mtime_s: self.u64()? as i64,
            mtime_ns: self.u32()?,
        })
    }
    fn kind(&mut self) -> Result<Kind, WireError> {
        match self.u8()? {
            0 => Ok(Kind::Dir),
            1 => Ok(Kind::File),
            2 => Ok(Kind::Symlink),
            _ => Err(WireError::Malformed("unknown entry kind")),
        }
    }
    fn string(&mut self) -> Result<String, WireError> {
        String::from_utf8(self.bytes()?).map_err(|_| WireError::Malformed("text is not UTF-8"))
    }
}

fn enc_op(e: &mut Enc, op: &Op) {
    match op {
        Op::RemoveTemp { path } => {
            e.u8(0);
            e.bytes(path);
        }
        Op::Delete { path } => {
            e.u8(1);
            e.bytes(path);
        }
        Op::Mkdir { path, meta } => {
            e.u8(2);
            e.bytes(path);
            e.meta(meta);
        }
        Op::File { path, meta, data } => {
            e.u8(3);
            e.bytes(path);
            e.meta(meta);
            match data {
                Data::Inline(b) => {
                    e.u8(0);
                    e.bytes(b);
                }
                Data::Staged => e.u8(1),
                // A local path means nothing on the far side; the sender converts it first.
                Data::Local(_) => unreachable!("Data::Local is converted before sending"),
            }
        }
        Op::Chunk { path, offset, data } => {
            e.u8(4);
            e.bytes(path);
            e.u64(*offset);
            e.bytes(data);
        }
        Op::Symlink { path, target, meta } => {
            e.u8(5);
            e.bytes(path);
            e.bytes(target);
            e.meta(meta);
        }
        Op::HardLink { path, leader } => {
            e.u8(6);
            e.bytes(path);
            e.bytes(leader);
        }
        Op::SetMeta { path, kind, meta } => {
            e.u8(7);
            e.bytes(path);
            e.kind(*kind);
            e.meta(meta);
        }
    }
}

fn dec_op(d: &mut Dec) -> Result<Op, WireError> {
    Ok(match d.u8()? {
        0 => Op::RemoveTemp { path: d.bytes()? },
        1 => Op::Delete { path: d.bytes()? },
        2 => Op::Mkdir {
            path: d.bytes()?,
            meta: d.meta()?,
        },
        3 => {
            let path = d.bytes()?;
            let meta = d.meta()?;
            let data = match d.u8()? {
                0 => Data::Inline(d.bytes()?),
                1 => Data::Staged,
                _ => return Err(WireError::Malformed("unknown file data kind")),
            };
            Op::File { path, meta, data }
        }
        4 => Op::Chunk {
            path: d.bytes()?,
            offset: d.u64()?,
            data: d.bytes()?,
        },
        5 => Op::Symlink {
            path: d.bytes()?,
            target: d.bytes()?,
            meta: d.meta()?,
        },
        6 => Op::HardLink {
            path: d.bytes()?,
            leader: d.bytes()?,
        },
        7 => Op::SetMeta {
            path: d.bytes()?,
            kind: d.kind()?,
            meta: d.meta()?,
        },
        _ => return Err(WireError::Malformed("unknown operation")),
    })
}

fn enc_entry(e: &mut Enc, x: &Entry) {
    e.bytes(&x.path);
    e.kind(x.kind);
    e.u64(x.size);
    e.meta(&Meta::of(x));
    e.opt(&x.link_target);
    e.opt(&x.hardlink);
    e.opt(&x.blake3.map(|b| b.to_vec()));
}

fn dec_entry(d: &mut Dec) -> Result<Entry, WireError> {
    let path = d.bytes()?;
    let kind = d.kind()?;
    let size = d.u64()?;
    let m = d.meta()?;
    let link_target = d.opt()?;
    let hardlink = d.opt()?;
    let blake3 = match d.opt()? {
        None => None,
        Some(b) => Some(
            b.try_into()
                .map_err(|_| WireError::Malformed("BLAKE3 digest is not 32 bytes"))?,
        ),
    };
    Ok(Entry {
        path,
        kind,
        size,
        mtime_s: m.mtime_s,
        mtime_ns: m.mtime_ns,
        mode: m.mode,
        uid: m.uid,
        gid: m.gid,
        link_target,
        hardlink,
        blake3,
    })
}

fn list<T>(e: &mut Enc, items: &[T], f: impl Fn(&mut Enc, &T)) {
    e.u64(items.len() as u64);
    for i in items {
        f(e, i);
    }
}

fn dec_list<T>(
    d: &mut Dec,
    f: impl Fn(&mut Dec) -> Result<T, WireError>,
) -> Result<Vec<T>, WireError> {
    let n = d.u64()? as usize;
    let mut v = Vec::with_capacity(n.min(1 << 20));
    for _ in 0..n {
        v.push(f(d)?);
    }
    Ok(v)
}

pub fn encode_request(r: &Request) -> Vec<u8> {
    let mut e = Enc(Vec::new());
    match r {
        Request::Scan { checksum } => {
            e.u8(1);
            e.u8(*checksum as u8);
        }
        Request::Apply(ops) => {
            e.u8(2);
            list(&mut e, ops, enc_op);
        }
        Request::Finish => e.u8(3),
        Request::Stamps { dirs, settled } => {
            e.u8(4);
            e.u8(*settled as u8);
            list(&mut e, dirs, |e, d| e.bytes(d));
        }
        Request::Resume { path, source } => {
            e.u8(5);
            e.bytes(path);
            for v in [source.ino, source.size] {
                e.u64(v);
            }
            for (s, ns) in [source.mtime, source.ctime] {
                e.u64(s as u64);
                e.u64(ns as u64);
            }
        }
    }
    e.0
}

pub fn decode_request(b: &[u8]) -> Result<Request, WireError> {
    let mut d = Dec(b);
    Ok(match d.u8()? {
        1 => Request::Scan {
            checksum: d.u8()? != 0,
        },
        2 => Request::Apply(dec_list(&mut d, dec_op)?),
        3 => Request::Finish,
        4 => {
            let settled = d.u8()? != 0;
            Request::Stamps {
                settled,
                dirs: dec_list(&mut d, |d| d.bytes())?,
            }
        }
        5 => Request::Resume {
            path: d.bytes()?,
            source: SourceId {
                ino: d.u64()?,
                size: d.u64()?,
                mtime: (d.u64()? as i64, d.u64()? as i64),
                ctime: (d.u64()? as i64, d.u64()? as i64),
            },
        },
        _ => return Err(WireError::Malformed("unknown request")),
    })
}

pub fn encode_response(r: &Response) -> Vec<u8> {
    let mut e = Enc(Vec::new());
    let strings = |e: &mut Enc, s: &String| e.bytes(s.as_bytes());
    match r {
        Response::Hello {
            version,
            sets_owner,
        } => {
            e.u8(0x81);
            e.u32(*version);
            e.u8(*sets_owner as u8);
        }
        Response::Manifest(m) => enc_manifest(&mut e, m),
        Response::Applied(a) => {
            e.u8(0x83);
            e.u64(a.bytes);
            e.u64(a.files);
            list(&mut e, &a.warnings, strings);
        }
        Response::Finished => e.u8(0x84),
        Response::Error(s) => {
            e.u8(0x85);
            e.bytes(s.as_bytes());
        }
        Response::Stamps(stamps) => {
            e.u8(0x86);
            list(&mut e, stamps, |e, s| {
                e.u64(s.dev);
                e.u64(s.ino);
                e.u64(s.ctime_s as u64);
                e.u64(s.ctime_ns as u64);
            });
        }
        Response::ResumeAt(offset) => {
            e.u8(0x87);
            e.u64(*offset);
        }
    }
    e.0
}

/// A manifest alone, in the wire encoding (the journal's cached destination manifest).
pub fn encode_manifest(m: &Manifest) -> Vec<u8> {
    let mut e = Enc(Vec::with_capacity(64 * m.entries.len() + 64));
    enc_manifest(&mut e, m);
    e.0
}

fn enc_manifest(e: &mut Enc, m: &Manifest) {
    e.u8(0x82);
    list(e, &m.entries, enc_entry);
    list(e, &m.warnings, |e, s| e.bytes(s.as_bytes()));
    list(e, &m.temp_files, |e, t| e.bytes(t));
}

pub fn decode_manifest(b: &[u8]) -> Result<Manifest, WireError> {
    match decode_response(b)? {
        Response::Manifest(m) => Ok(m),
        _ => Err(WireError::Malformed("not a manifest")),
    }
}

pub fn decode_response(b: &[u8]) -> Result<Response, WireError> {
    let mut d = Dec(b);
    Ok(match d.u8()? {
        0x81 => Response::Hello {
            version: d.u32()?,
            sets_owner: d.u8()? != 0,
        },
        0x82 => Response::Manifest(Manifest {
            entries: dec_list(&mut d, dec_entry)?,
            warnings: dec_list(&mut d, |d| d.string())?,
            temp_files: dec_list(&mut d, |d| d.bytes())?,
        }),
        0x83 => Response::Applied(Applied {
            bytes: d.u64()?,
            files: d.u64()?,
            warnings: dec_list(&mut d, |d| d.string())?,
        }),
        0x84 => Response::Finished,
        0x85 => Response::Error(d.string()?),
        0x86 => Response::Stamps(dec_list(&mut d, |d| {
            Ok(DirStamp {
                dev: d.u64()?,
                ino: d.u64()?,
                ctime_s: d.u64()? as i64,
                ctime_ns: d.u64()? as i64,
            })
        })?),
        0x87 => Response::ResumeAt(d.u64()?),
        _ => return Err(WireError::Malformed("unknown response")),
    })
}

/// Writes one frame (blocking I/O, the receiver's side).
pub fn write_frame(w: &mut impl Write, payload: &[u8]) -> Result<(), WireError> {
    w.write_all(&(payload.len() as u32).to_be_bytes())?;
    w.write_all(payload)?;
    Ok(())
}

/// Reads one frame; `None` at a clean end of stream.
pub fn read_frame(r: &mut impl Read) -> Result<Option<Vec<u8>>, WireError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let n = u32::from_be_bytes(len) as usize;
    if n > MAX_FRAME {
        return Err(WireError::TooLarge(n));
    }
    let mut buf = vec![0u8; n];
    r.read_exact(&mut buf)?;
    Ok(Some(buf))
}

#[cfg(test)]
mod tests;
