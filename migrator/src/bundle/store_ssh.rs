//! Bundles in a directory of another host, over SSH: [`SshStore`], the same
//! [`BundleStore`] calls as the local directory, on `ssh://[user@]host[:port]/path`.
//!
//! The connection is the project's (`files::remote::session::connect`): the host key checked
//! against the operator's known_hosts before anything else (an unknown host or a changed key
//! is refused, naming the file), authentication by private key. Each call is one command on
//! its own exec channel, run by the far host's shell with its coreutils: `find` to list and
//! size, `cat` to read, `rm -rf` to delete. A part is written to a local temporary file
//! first and sent whole on commit, where the far side stores it under a temporary name,
//! `sync`s it, renames it into place and `sync`s the directory: a part appears complete or
//! not at all, as in the local store.

use super::store::{BundleRef, BundleStore, PartSink};
use super::{BundleError, Result};
use crate::files::remote::session::{connect, shell_quote, KnownHostsCheck, SshTarget};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A bundle directory on another host (clones share the connection).
#[derive(Clone)]
pub struct SshStore {
    rt: Arc<tokio::runtime::Runtime>,
    /// `None` only while dropping (the connection is dropped inside the runtime).
    handle: Option<Arc<russh::client::Handle<KnownHostsCheck>>>,
    target: SshTarget,
}

impl Drop for SshStore {
    fn drop(&mut self) {
        // russh closes a connection by spawning onto the runtime.
        let _inside = self.rt.enter();
        self.handle.take();
    }
}

/// What a command on the far host did.
struct Ran {
    status: Option<u32>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl SshStore {
    /// Connects to `url` (`ssh://[user@]host[:port]/path`), trusting only the host key in
    /// `known_hosts`, authenticating with `identity`.
    pub fn connect(url: &str, known_hosts: &Path, identity: &Path) -> Result<SshStore> {
        let fail = |message: String| BundleError::Invalid {
            bundle: url.to_string(),
            message,
        };
        let target = SshTarget::parse(url, "root").map_err(|e| fail(e.to_string()))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| fail(format!("starting the I/O runtime: {e}")))?;
        let handle = rt
            .block_on(connect(&target, known_hosts, identity))
            .map_err(|e| fail(e.to_string()))?;
        Ok(SshStore {
            rt: Arc::new(rt),
            handle: Some(Arc::new(handle)),
            target,
        })
    }

    fn q(p: &Path) -> String {
        String::from_utf8_lossy(&shell_quote(p.as_os_str().as_encoded_bytes())).into_owned()
    }

    fn dir(&self, b: &BundleRef) -> PathBuf {
        self.target.path.join(&b.site).join(b.switch_ms.to_string())
    }

    fn checked(name: &str) -> Result<&str> {
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(BundleError::Invalid {
                bundle: name.into(),
                message: "not a part name".into(),
            });
        }
        Ok(name)
    }

    /// Runs `cmd` on the far host with `input` (a local file) on its stdin; its stdout into
    /// `out` (a local file) when given, else kept in memory.
    fn run(
        &self,
        cmd: &str,
        input: Option<&mut std::fs::File>,
        out: Option<&mut std::fs::File>,
    ) -> Result<Ran> {
        let io = |e: std::io::Error| BundleError::Program {
            program: "ssh".into(),
            what: format!("{}: {cmd}", self.target.host),
            message: e.to_string(),
        };
        let ssh = |e: russh::Error| io(std::io::Error::other(e.to_string()));
        let input = match input {
            Some(f) => {
                f.rewind().map_err(io)?;
                Some(tokio::fs::File::from_std(f.try_clone().map_err(io)?))
            }
            None => None,
        };
        let handle = self.handle.clone().expect("connection kept until drop");
        let mut ran = Ran {
            status: None,
            stdout: Vec::new(),
            stderr: Vec::new(),
        };
        let mut out = out;
        self.rt.block_on(async {
            let mut ch = handle.channel_open_session().await.map_err(ssh)?;
            ch.exec(true, cmd.as_bytes()).await.map_err(ssh)?;
            if let Some(f) = input {
                ch.data(f).await.map_err(ssh)?;
            }
            ch.eof().await.map_err(ssh)?;
            while let Some(msg) = ch.wait().await {
                match msg {
                    russh::ChannelMsg::Data { data } => match out.as_mut() {
                        Some(f) => f.write_all(&data).map_err(io)?,
                        None => ran.stdout.extend_from_slice(&data),
                    },
                    russh::ChannelMsg::ExtendedData { data, .. } => {
                        ran.stderr.extend_from_slice(&data)
                    }
                    russh::ChannelMsg::ExitStatus { exit_status } => ran.status = Some(exit_status),
                    _ => {}
                }
            }
            Ok::<_, BundleError>(())
        })?;
        Ok(ran)
    }

    /// [`Self::run`] that must exit 0.
    fn run_ok(&self, cmd: &str, input: Option<&mut std::fs::File>) -> Result<Vec<u8>> {
        let r = self.run(cmd, input, None)?;
        if r.status != Some(0) {
            return Err(BundleError::Program {
                program: "ssh".into(),
                what: format!("{}: {cmd}", self.target.host),
                message: format!(
                    "exit status {:?}: {}",
                    r.status,
                    super::part::tail(&String::from_utf8_lossy(&r.stderr))
                ),
            });
        }
        Ok(r.stdout)
    }
}

/// A part being written: a local temporary file, sent on commit.
struct SshSink {
    file: std::fs::File,
    store: SshStore,
    dir: PathBuf,
    name: String,
}

impl Write for SshSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

impl PartSink for SshSink {
    fn commit(mut self: Box<Self>) -> Result<()> {
        let (dir, tmp, path) = (
            SshStore::q(&self.dir),
            SshStore::q(&self.dir.join(format!(".tmp.{}", self.name))),
            SshStore::q(&self.dir.join(&self.name)),
        );
        let cmd = format!(
            "set -e; mkdir -p {dir}; cat > {tmp}; sync {tmp}; mv -f {tmp} {path}; sync {dir}"
        );
        self.store.run_ok(&cmd, Some(&mut self.file))?;
        Ok(())
    }
}

impl BundleStore for SshStore {
    fn describe(&self) -> String {
        format!(
            "ssh://{}@{}:{}{}",
            self.target.user,
            self.target.host,
            self.target.port,
            self.target.path.display()
        )
    }

    fn list(&self, site: Option<&str>) -> Result<Vec<BundleRef>> {
        let root = match site {
            Some(s) => self.target.path.join(Self::checked(s)?),
            None => self.target.path.clone(),
        };
        let depth = if site.is_some() { 1 } else { 2 };
        let out = self.run_ok(
            &format!(
                "test -d {r} || exit 0; find {r} -mindepth {depth} -maxdepth {depth} -type d -printf '%P\\n'",
                r = Self::q(&root)
            ),
            None,
        )?;
        let mut refs = Vec::new();
        for line in String::from_utf8_lossy(&out).lines() {
            let id = match site {
                Some(s) => format!("{s}/{line}"),
                None => line.to_string(),
            };
            if let Ok(b) = BundleRef::parse(&id) {
                refs.push(b);
            }
        }
        refs.sort_by(|a, b| (&a.site, a.switch_ms).cmp(&(&b.site, b.switch_ms)));
        Ok(refs)
    }

    fn create(&self, b: &BundleRef, name: &str) -> Result<Box<dyn PartSink>> {
        let name = Self::checked(name)?.to_string();
        let file = tempfile::tempfile().map_err(BundleError::io(std::env::temp_dir()))?;
        Ok(Box::new(SshSink {
            file,
            store: self.clone(),
            dir: self.dir(b),
            name,
        }))
    }

    fn open(&self, b: &BundleRef, name: &str) -> Result<Option<Box<dyn Read + Send>>> {
        let path = Self::q(&self.dir(b).join(Self::checked(name)?));
        let mut file = tempfile::tempfile().map_err(BundleError::io(std::env::temp_dir()))?;
        // Exit 3: not there (any other failure is an error).
        let r = self.run(
            &format!("test -f {path} || exit 3; cat {path}"),
            None,
            Some(&mut file),
        )?;
        match r.status {
            Some(0) => {}
            Some(3) => return Ok(None),
            s => {
                return Err(BundleError::Program {
                    program: "ssh".into(),
                    what: format!("{}: cat {path}", self.target.host),
                    message: format!(
                        "exit status {s:?}: {}",
                        super::part::tail(&String::from_utf8_lossy(&r.stderr))
                    ),
                })
            }
        }
        file.rewind().map_err(BundleError::io(name))?;
        Ok(Some(Box::new(std::io::BufReader::with_capacity(
            1 << 20,
            file,
        ))))
    }

    fn delete(&self, b: &BundleRef) -> Result<u64> {
        let n = self.size(b)?;
        let site = Self::q(&self.target.path.join(&b.site));
        self.run_ok(
            &format!(
                "rm -rf {}; rmdir {site} 2>/dev/null; true",
                Self::q(&self.dir(b))
            ),
            None,
        )?;
        Ok(n)
    }

    fn size(&self, b: &BundleRef) -> Result<u64> {
        let out = self.run_ok(
            &format!(
                "test -d {d} || exit 0; find {d} -maxdepth 1 -type f -printf '%s\\n'",
                d = Self::q(&self.dir(b))
            ),
            None,
        )?;
        Ok(String::from_utf8_lossy(&out)
            .lines()
            .filter_map(|l| l.trim().parse::<u64>().ok())
            .sum())
    }
}
