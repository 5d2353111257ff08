//! Opening an SSH destination: the target URL, the host key checked against known_hosts, the
//! private key, `migrator receive` started on the exec channel and its greeting; and the
//! frames read off that channel.

use crate::files::wire::{self, Response};
use russh::keys::{PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::io::AsyncReadExt;

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
pub(crate) struct KnownHostsCheck {
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
pub(crate) fn shell_quote(s: &[u8]) -> Vec<u8> {
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

/// Connects, checks the host key, authenticates, starts `migrator receive` on the exec
/// channel and reads its greeting: the connection, the channel and whether the receiver sets
/// owners (it runs as root).
pub(super) async fn open(
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
    let handle = connect(target, &opts.known_hosts, &opts.identity).await?;
    let ssh_err = |source| SshError::Ssh {
        host: target.host.clone(),
        port: target.port,
        source,
    };
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

/// Connects to `target`, checks its host key against `known_hosts` (an unknown host or a
/// changed key is refused, naming the file and line) and authenticates with the private key
/// `identity`: a connection on which channels can be opened.
pub(crate) async fn connect(
    target: &SshTarget,
    known_hosts: &std::path::Path,
    identity: &std::path::Path,
) -> Result<russh::client::Handle<KnownHostsCheck>, SshError> {
    if !known_hosts.is_file() {
        return Err(SshError::KnownHosts {
            path: known_hosts.to_path_buf(),
            why: "no such file".into(),
        });
    }
    let key = russh::keys::load_secret_key(identity, None).map_err(|e| SshError::Key {
        path: identity.to_path_buf(),
        why: e.to_string(),
    })?;
    let verdict = Arc::new(Mutex::new(None));
    let check = KnownHostsCheck {
        host: target.host.clone(),
        port: target.port,
        known_hosts: known_hosts.to_path_buf(),
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
    let mut handle =
        match russh::client::connect(config, (target.host.as_str(), target.port), check).await {
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
            key: identity.to_path_buf(),
        });
    }
    Ok(handle)
}

/// Why a frame could not be read off the channel (the connection is then unusable).
#[derive(Debug, thiserror::Error)]
pub(super) enum FrameError {
    #[error("connection closed ({0})")]
    Closed(#[source] std::io::Error),
    #[error("connection closed mid-frame ({0})")]
    ClosedMidFrame(#[source] std::io::Error),
    #[error("frame of {0} bytes exceeds the limit")]
    TooLarge(usize),
    /// The reader task ended: nothing more will come.
    #[error("connection closed")]
    Gone,
}

/// One frame (`u32` length, big-endian, then the payload) off the channel.
pub(super) async fn read_frame_async(
    stream: &mut (impl tokio::io::AsyncRead + Unpin),
) -> Result<Vec<u8>, FrameError> {
    let mut len = [0u8; 4];
    stream
        .read_exact(&mut len)
        .await
        .map_err(FrameError::Closed)?;
    let n = u32::from_be_bytes(len) as usize;
    if n > 256 << 20 {
        return Err(FrameError::TooLarge(n));
    }
    let mut buf = vec![0u8; n];
    stream
        .read_exact(&mut buf)
        .await
        .map_err(FrameError::ClosedMidFrame)?;
    Ok(buf)
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
