//! The SSH destination: `russh` to the far host, `migrator receive --root PATH` started on the
//! exec channel, and the batch protocol of `wire.rs` over its stdin/stdout.
//!
//! Host keys are checked against a known_hosts file given by the operator; an unknown host or a
//! changed key is a refusal with the file and line named, before any authentication happens.
//! Authentication is by private key (the file must not be readable by others).

use crate::files::apply::large_copy::{SourceId, RESUME_MIN};
use crate::files::apply::{Applied, Data, Op};
use crate::files::manifest::Manifest;
use crate::files::stamps::DirStamp;
use crate::files::sync::{Destination, SyncError};
use crate::files::wire::{self, Request, Response};
use russh::keys::{PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Where to connect: parsed from `ssh://[user@]host[:port]/path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    pub user: String,
    pub host: String,
    pub port: u16,
    pub path: PathBuf,
}

impl SshTarget {
    /// Parses `ssh://[user@]host[:port]/absolute/path`; `default_user` when none is given.
    pub fn parse(url: &str, default_user: &str) -> Result<SshTarget, SshError> {
        let bad = |why: &str| SshError::BadTarget {
            url: url.to_string(),
            why: why.to_string(),
        };
        let rest = url
            .strip_prefix("ssh://")
            .ok_or_else(|| bad("must start with ssh://"))?;
        let slash = rest
            .find('/')
            .ok_or_else(|| bad("needs an absolute path after the host"))?;
        let (authority, path) = rest.split_at(slash);
        let (user, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (u.to_string(), h),
            None => (default_user.to_string(), authority),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (
                h.to_string(),
                p.parse::<u16>().map_err(|_| bad("port is not a number"))?,
            ),
            None => (hostport.to_string(), 22),
        };
        if host.is_empty() {
            return Err(bad("host is empty"));
        }
        Ok(SshTarget {
            user,
            host,
            port,
            path: PathBuf::from(path),
        })
    }
}

/// How to reach and trust the far side.
#[derive(Debug, Clone)]
pub struct SshOptions {
    pub known_hosts: PathBuf,
    pub identity: PathBuf,
    /// The receiver's command on the far host (the path of the `migrator` binary there).
    pub remote_migrator: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error("{url}: {why} (expected ssh://[user@]host[:port]/absolute/path)")]
    BadTarget { url: String, why: String },
    #[error(
        "host key of {host}:{port} ({fingerprint}) does NOT match line {line} of {known_hosts}: \
         refusing to connect (the key changed, or someone is in the middle)"
    )]
    HostKeyChanged {
        host: String,
        port: u16,
        fingerprint: String,
        known_hosts: PathBuf,
        line: usize,
    },
    #[error(
        "host {host}:{port} (key {fingerprint}) is not in {known_hosts}: refusing to connect; \
         add its key to that file after checking it out of band"
    )]
    HostUnknown {
        host: String,
        port: u16,
        fingerprint: String,
        known_hosts: PathBuf,
    },
    #[error("reading known_hosts {path}: {why}")]
    KnownHosts { path: PathBuf, why: String },
    #[error("loading private key {path}: {why}")]
    Key { path: PathBuf, why: String },
    #[error("{host}:{port}: authentication as {user} with {key} was refused")]
    AuthRefused {
        host: String,
        port: u16,
        user: String,
        key: PathBuf,
    },
    #[error("{host}:{port}: {source}")]
    Ssh {
        host: String,
        port: u16,
        #[source]
        source: russh::Error,
    },
    #[error("receiver on {host}: {why}")]
    Receiver { host: String, why: String },
}

/// Checks the server's key against the known_hosts file and remembers why it refused.
struct KnownHostsCheck {
    host: String,
    port: u16,
    known_hosts: PathBuf,
    verdict: Arc<Mutex<Option<SshError>>>,
}

impl russh::client::Handler for KnownHostsCheck {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let PublicKeyOrCertificate::PublicKey { key, .. } = key else {
            *self.verdict.lock().expect("verdict lock") = Some(SshError::KnownHosts {
                path: self.known_hosts.clone(),
                why: "the server offered a certificate; only plain host keys are checked".into(),
            });
            return Ok(false);
        };
        let fingerprint = key.fingerprint(russh::keys::HashAlg::Sha256).to_string();
        let refusal = match russh::keys::check_known_hosts_path(
            &self.host,
            self.port,
            key,
            &self.known_hosts,
        ) {
            Ok(true) => return Ok(true),
            Ok(false) => SshError::HostUnknown {
                host: self.host.clone(),
                port: self.port,
                fingerprint,
                known_hosts: self.known_hosts.clone(),
            },
            Err(russh::keys::Error::KeyChanged { line }) => SshError::HostKeyChanged {
                host: self.host.clone(),
                port: self.port,
                fingerprint,
                known_hosts: self.known_hosts.clone(),
                line,
            },
            Err(e) => SshError::KnownHosts {
                path: self.known_hosts.clone(),
                why: e.to_string(),
            },
        };
        *self.verdict.lock().expect("verdict lock") = Some(refusal);
        Ok(false)
    }
}

/// Quotes a word for the remote POSIX shell.
fn shell_quote(s: &[u8]) -> Vec<u8> {
    let mut out = b"'".to_vec();
    for &b in s {
        if b == b'\'' {
            out.extend_from_slice(b"'\\''");
        } else {
            out.push(b);
        }
    }
    out.push(b'\'');
    out
}

/// A destination directory on another host, reached over SSH.
pub struct SshDestination {
    rt: tokio::runtime::Runtime,
    /// Write half of the exec channel's stdin.
    /// `None` only while dropping (the channel must be dropped inside the runtime).
    writer: Option<tokio::io::WriteHalf<russh::ChannelStream<russh::client::Msg>>>,
    /// Frames read by a background task, so the connection keeps flowing (window updates,
    /// acknowledgements) while this thread reads source files.
    frames: tokio::sync::mpsc::UnboundedReceiver<Result<Vec<u8>, String>>,
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
            .block_on(Self::open(target, opts))
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

    async fn open(
        target: &SshTarget,
        opts: &SshOptions,
    ) -> Result<
        (
            russh::client::Handle<KnownHostsCheck>,
            russh::ChannelStream<russh::client::Msg>,
            bool,
        ),
        SshError,
    > {
        if !opts.known_hosts.is_file() {
            return Err(SshError::KnownHosts {
                path: opts.known_hosts.clone(),
                why: "no such file".into(),
            });
        }
        let key =
            russh::keys::load_secret_key(&opts.identity, None).map_err(|e| SshError::Key {
                path: opts.identity.clone(),
                why: e.to_string(),
            })?;
        let verdict = Arc::new(Mutex::new(None));
        let check = KnownHostsCheck {
            host: target.host.clone(),
            port: target.port,
            known_hosts: opts.known_hosts.clone(),
            verdict: verdict.clone(),
        };
        let config = Arc::new(russh::client::Config {
            window_size: 8 << 20,
            maximum_packet_size: 65535,
            ..Default::default()
        });
        let ssh_err = |source| SshError::Ssh {
            host: target.host.clone(),
            port: target.port,
            source,
        };
        let mut handle = match russh::client::connect(
            config,
            (target.host.as_str(), target.port),
            check,
        )
        .await
        {
            Ok(h) => h,
            Err(e) => {
                if let Some(refusal) = verdict.lock().expect("verdict lock").take() {
                    return Err(refusal);
                }
                return Err(ssh_err(e));
            }
        };
        let hash = handle.best_supported_rsa_hash().await.map_err(ssh_err)?;
        let auth = handle
            .authenticate_publickey(
                target.user.clone(),
                PrivateKeyWithHashAlg::new(Arc::new(key), hash.flatten()),
            )
            .await
            .map_err(ssh_err)?;
        if !auth.success() {
            return Err(SshError::AuthRefused {
                host: target.host.clone(),
                port: target.port,
                user: target.user.clone(),
                key: opts.identity.clone(),
            });
        }
        let channel = handle.channel_open_session().await.map_err(ssh_err)?;
        let mut cmd = shell_quote(opts.remote_migrator.as_bytes());
        cmd.extend_from_slice(b" receive --root ");
        cmd.extend_from_slice(&shell_quote(target.path.as_os_str().as_encoded_bytes()));
        channel.exec(true, cmd).await.map_err(ssh_err)?;
        let mut stream = channel.into_stream();
        let hello = read_frame_async(&mut stream)
            .await
            .map_err(|why| SshError::Receiver {
                host: target.host.clone(),
                why: format!(
                    "{why}; is `{} receive` installed on the far host?",
                    opts.remote_migrator
                ),
            })?;
        match wire::decode_response(&hello) {
            Ok(Response::Hello {
                version,
                sets_owner,
            }) if version == wire::PROTOCOL_VERSION => Ok((handle, stream, sets_owner)),
            Ok(Response::Hello { version, .. }) => Err(SshError::Receiver {
                host: target.host.clone(),
                why: format!(
                    "speaks protocol {version}, we speak {}: install the same migrator version",
                    wire::PROTOCOL_VERSION
                ),
            }),
            other => Err(SshError::Receiver {
                host: target.host.clone(),
                why: format!("unexpected greeting {other:?}"),
            }),
        }
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
            .unwrap_or_else(|| Err("connection closed".to_string()))
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
    fn resume_at(&mut self, path: &[u8], src: &Path, f: &std::fs::File) -> Result<u64, SyncError> {
        use std::os::fd::AsRawFd;
        // SAFETY: a zeroed stat is a valid out-buffer; the descriptor is open.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        if unsafe { libc::fstat(f.as_raw_fd(), &mut st) } != 0 {
            return Err(SyncError::ReadSource {
                path: src.to_path_buf(),
                source: std::io::Error::last_os_error(),
            });
        }
        let source = SourceId::of(&st);
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

async fn read_frame_async(
    stream: &mut (impl tokio::io::AsyncRead + Unpin),
) -> Result<Vec<u8>, String> {
    let mut len = [0u8; 4];
    stream
        .read_exact(&mut len)
        .await
        .map_err(|e| format!("connection closed ({e})"))?;
    let n = u32::from_be_bytes(len) as usize;
    if n > 256 << 20 {
        return Err(format!("frame of {n} bytes exceeds the limit"));
    }
    let mut buf = vec![0u8; n];
    stream
        .read_exact(&mut buf)
        .await
        .map_err(|e| format!("connection closed mid-frame ({e})"))?;
    Ok(buf)
}

fn read_source(p: &Path) -> Result<Option<Vec<u8>>, SyncError> {
    match std::fs::read(p) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(SyncError::ReadSource {
            path: p.to_path_buf(),
            source,
        }),
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
            let size = std::fs::symlink_metadata(&src).map(|m| m.len()).ok();
            match size {
                None => self.total.warnings.push(format!(
                    "{}: vanished from the source during the pass; the next pass will reconcile",
                    src.display()
                )),
                Some(n) if n <= INLINE_MAX => match read_source(&src)? {
                    Some(bytes) => batch.push(Op::File {
                        path,
                        meta,
                        data: Data::Inline(bytes),
                    }),
                    None => self
                        .total
                        .warnings
                        .push(format!("{}: vanished from the source", src.display())),
                },
                Some(_) => {
                    // Large file: its chunks go in their own frames, then the rename.
                    self.send_batch(std::mem::take(&mut batch))?;
                    let mut f =
                        std::fs::File::open(&src).map_err(|source| SyncError::ReadSource {
                            path: src.clone(),
                            source,
                        })?;
                    let mut offset = self.resume_at(&path, &src, &f)?;
                    if offset > 0 {
                        std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(offset)).map_err(
                            |source| SyncError::ReadSource {
                                path: src.clone(),
                                source,
                            },
                        )?;
                    }
                    loop {
                        let mut buf = vec![0u8; CHUNK];
                        let n = std::io::Read::read(&mut f, &mut buf).map_err(|source| {
                            SyncError::ReadSource {
                                path: src.clone(),
                                source,
                            }
                        })?;
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
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_targets_and_rejects_bad_ones() {
        let t = SshTarget::parse("ssh://web@10.0.0.1:2222/homez.2/alice", "root").unwrap();
        assert_eq!(
            (t.user.as_str(), t.host.as_str(), t.port),
            ("web", "10.0.0.1", 2222)
        );
        assert_eq!(t.path, PathBuf::from("/homez.2/alice"));
        let t = SshTarget::parse("ssh://filer/h", "root").unwrap();
        assert_eq!((t.user.as_str(), t.port), ("root", 22));
        assert!(SshTarget::parse("filer:/h", "root").is_err());
        assert!(SshTarget::parse("ssh://filer", "root").is_err());
        assert!(SshTarget::parse("ssh://filer:x/h", "root").is_err());
    }

    #[test]
    fn shell_quoting_survives_quotes() {
        assert_eq!(shell_quote(b"a b'c"), b"'a b'\\''c'".to_vec());
    }
}
