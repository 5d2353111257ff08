//! The SSH destination: `russh` to the far host, `migrator receive --root PATH` started on the
//! exec channel, and the batch protocol of `wire.rs` over its stdin/stdout.
//!
//! Host keys are checked against a known_hosts file given by the operator; an unknown host or a
//! changed key is a refusal with the file and line named, before any authentication happens.
//! Authentication is by private key (the file must not be readable by others).
//!
//! Layout: [`session`] opens and trusts the connection (target URL, known_hosts, key, the
//! receiver's greeting, frames off the channel); this file is the [`Destination`] over it:
//! batches pipelined, large files in chunks resumed where an interrupted pass stopped.

pub(crate) mod session;

pub use session::{SshError, SshOptions, SshTarget};

use crate::files::apply::large_copy::{SourceId, RESUME_MIN};
use crate::files::apply::{Applied, Data, Op};
use crate::files::beneath::{open_source, SourceFailure};
use crate::files::manifest::Manifest;
use crate::files::stamps::DirStamp;
use crate::files::sync::{Destination, SyncError};
use crate::files::wire::{self, Request, Response};
use session::{read_frame_async, FrameError, KnownHostsCheck};
use tokio::io::AsyncWriteExt;

/// A destination directory on another host, reached over SSH.
pub struct SshDestination {
    rt: tokio::runtime::Runtime,
    /// Write half of the exec channel's stdin.
    /// `None` only while dropping (the channel must be dropped inside the runtime).
    writer: Option<tokio::io::WriteHalf<russh::ChannelStream<russh::client::Msg>>>,
    /// Frames read by a background task, so the connection keeps flowing (window updates,
    /// acknowledgements) while this thread reads source files.
    frames: tokio::sync::mpsc::UnboundedReceiver<Result<Vec<u8>, FrameError>>,
    host: String,
    /// `ssh://user@host:port/path`, the key of this destination's cached manifest.
    identity: String,
    sets_owner: bool,
    /// Apply frames sent whose acknowledgement was not read yet (pipelining).
    in_flight: usize,
    total: Applied,
    /// Kept so the connection lives as long as the destination.
    _handle: russh::client::Handle<KnownHostsCheck>,
}

/// Batches in flight before the sender waits for an acknowledgement.
const MAX_IN_FLIGHT: usize = 8;
/// Files up to this size travel inline in a batch; larger ones as chunks.
const INLINE_MAX: u64 = 1 << 20;
const CHUNK: usize = 4 << 20;

impl SshDestination {
    pub fn connect(target: &SshTarget, opts: &SshOptions) -> Result<SshDestination, SyncError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| SyncError::Remote(format!("starting the I/O runtime: {e}")))?;
        let (handle, stream, sets_owner) = rt
            .block_on(session::open(target, opts))
            .map_err(|e| SyncError::Remote(e.to_string()))?;
        let (mut reader, writer) = tokio::io::split(stream);
        let (tx, frames) = tokio::sync::mpsc::unbounded_channel();
        rt.spawn(async move {
            loop {
                let f = read_frame_async(&mut reader).await;
                let stop = f.is_err();
                if tx.send(f).is_err() || stop {
                    break;
                }
            }
        });
        Ok(SshDestination {
            rt,
            writer: Some(writer),
            frames,
            host: target.host.clone(),
            identity: format!(
                "ssh://{}@{}:{}{}",
                target.user,
                target.host,
                target.port,
                target.path.display()
            ),
            sets_owner,
            in_flight: 0,
            total: Applied::default(),
            _handle: handle,
        })
    }

    fn send(&mut self, req: &Request) -> Result<(), SyncError> {
        let payload = wire::encode_request(req);
        let Some(stream) = self.writer.as_mut() else {
            return Err(SyncError::Remote(format!(
                "{}: connection closed",
                self.host
            )));
        };
        self.rt
            .block_on(async {
                stream
                    .write_all(&(payload.len() as u32).to_be_bytes())
                    .await?;
                stream.write_all(&payload).await?;
                stream.flush().await
            })
            .map_err(|e| SyncError::Remote(format!("{}: sending: {e}", self.host)))
    }

    fn recv(&mut self) -> Result<Response, SyncError> {
        let frames = &mut self.frames;
        let frame = self
            .rt
            .block_on(frames.recv())
            .unwrap_or(Err(FrameError::Gone))
            .map_err(|e| SyncError::Remote(format!("{}: {e}", self.host)))?;
        match wire::decode_response(&frame) {
            Ok(Response::Error(e)) => Err(SyncError::Remote(format!("{}: {e}", self.host))),
            Ok(r) => Ok(r),
            Err(e) => Err(SyncError::Remote(format!("{}: {e}", self.host))),
        }
    }

    fn ack(&mut self) -> Result<(), SyncError> {
        match self.recv()? {
            Response::Applied(a) => {
                self.in_flight -= 1;
                self.total.bytes += a.bytes;
                self.total.files += a.files;
                self.total.warnings.extend(a.warnings);
                Ok(())
            }
            other => Err(self.unexpected("an acknowledgement", other)),
        }
    }

    /// Where the chunks of a large file start: asks the receiver (after the batches in flight)
    /// for the offset an interrupted pass committed of this very source, for files of at
    /// least [`RESUME_MIN`] bytes; 0 otherwise.
    fn resume_at(&mut self, path: &[u8], st: &libc::stat) -> Result<u64, SyncError> {
        let source = SourceId::of(st);
        if source.size < RESUME_MIN {
            return Ok(0);
        }
        let req = Request::Resume {
            path: path.to_vec(),
            source,
        };
        match self.round_trip(&req)? {
            Response::ResumeAt(n) if n <= source.size => Ok(n),
            other => Err(self.unexpected("a resume offset", other)),
        }
    }

    /// One request answered on its own: after every batch in flight is acknowledged.
    fn round_trip(&mut self, req: &Request) -> Result<Response, SyncError> {
        while self.in_flight > 0 {
            self.ack()?;
        }
        self.send(req)?;
        self.recv()
    }

    fn unexpected(&self, expected: &str, got: Response) -> SyncError {
        SyncError::Remote(format!("{}: expected {expected}, got {got:?}", self.host))
    }

    fn send_batch(&mut self, ops: Vec<Op>) -> Result<(), SyncError> {
        if ops.is_empty() {
            return Ok(());
        }
        self.send(&Request::Apply(ops))?;
        self.in_flight += 1;
        while self.in_flight > MAX_IN_FLIGHT {
            self.ack()?;
        }
        Ok(())
    }
}

impl Drop for SshDestination {
    fn drop(&mut self) {
        // russh's channel halves close themselves on drop by spawning onto the runtime.
        if let Some(mut w) = self.writer.take() {
            // EOF on the receiver's stdin: it finishes and the remote session ends.
            let _ = self.rt.block_on(async {
                tokio::time::timeout(std::time::Duration::from_secs(5), w.shutdown()).await
            });
            let _inside = self.rt.enter();
            drop(w);
        }
        let _inside = self.rt.enter();
        self.frames.close();
    }
}

impl Destination for SshDestination {
    fn manifest(&mut self, checksum: bool) -> Result<Manifest, SyncError> {
        match self.round_trip(&Request::Scan { checksum })? {
            Response::Manifest(m) => Ok(m),
            other => Err(self.unexpected("a manifest", other)),
        }
    }

    fn apply(&mut self, ops: Vec<Op>) -> Result<(), SyncError> {
        let mut batch = Vec::with_capacity(ops.len());
        for op in ops {
            let Op::File {
                path,
                meta,
                data: Data::Local(src),
            } = op
            else {
                batch.push(op);
                continue;
            };
            // Beneath the source root, never through a symlink, never blocking on a FIFO,
            // only a regular file (`beneath::open_source`).
            let (mut f, st) = match open_source(&src.tree, &src.rel) {
                Ok(x) => x,
                Err(SourceFailure::Gone(why)) => {
                    self.total.warnings.push(format!(
                        "{}: {why} during the pass; the next pass will reconcile",
                        src.abs().display()
                    ));
                    continue;
                }
                Err(SourceFailure::Error(source)) => {
                    return Err(SyncError::ReadSource {
                        path: src.abs(),
                        source,
                    })
                }
            };
            let read_err = |source| SyncError::ReadSource {
                path: src.abs(),
                source,
            };
            let size = st.st_size as u64;
            if size <= INLINE_MAX {
                let mut bytes = Vec::with_capacity(size as usize);
                // No more than the size it had when opened: a file growing meanwhile is
                // seen by the next pass.
                std::io::Read::read_to_end(
                    &mut std::io::Read::take(&mut f, INLINE_MAX),
                    &mut bytes,
                )
                .map_err(read_err)?;
                batch.push(Op::File {
                    path,
                    meta,
                    data: Data::Inline(bytes),
                });
                continue;
            }
            // Large file: its chunks go in their own frames, then the rename.
            self.send_batch(std::mem::take(&mut batch))?;
            let mut offset = self.resume_at(&path, &st)?;
            if offset > 0 {
                std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(offset)).map_err(read_err)?;
            }
            loop {
                let mut buf = vec![0u8; CHUNK];
                let n = std::io::Read::read(&mut f, &mut buf).map_err(read_err)?;
                if n == 0 && offset > 0 {
                    break;
                }
                buf.truncate(n);
                self.send_batch(vec![Op::Chunk {
                    path: path.clone(),
                    offset,
                    data: buf,
                }])?;
                offset += n as u64;
                if n == 0 {
                    break;
                }
            }
            batch.push(Op::File {
                path,
                meta,
                data: Data::Staged,
            });
        }
        self.send_batch(batch)
    }

    /// The receiver always syncs: its boot id is not known here.
    fn finish(&mut self, _sync: bool) -> Result<Applied, SyncError> {
        match self.round_trip(&Request::Finish)? {
            Response::Finished => Ok(std::mem::take(&mut self.total)),
            other => Err(self.unexpected("the end of the pass", other)),
        }
    }

    fn sets_owner(&self) -> bool {
        self.sets_owner
    }

    fn identity(&self) -> String {
        self.identity.clone()
    }

    fn dir_stamps(
        &mut self,
        dirs: &[Vec<u8>],
        settled: bool,
    ) -> Result<Option<Vec<DirStamp>>, SyncError> {
        let req = Request::Stamps {
            dirs: dirs.to_vec(),
            settled,
        };
        match self.round_trip(&req)? {
            Response::Stamps(s) if s.len() == dirs.len() => Ok(Some(s)),
            other => Err(self.unexpected(&format!("{} directory stamps", dirs.len()), other)),
        }
    }
}
