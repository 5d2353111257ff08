//! Where a home lives: a local path, or
//! `ssh://[user@]host[:port]/absolute/path[?known_hosts=FILE&identity=FILE&migrator=CMD]` for a
//! far host reached over SSH ([`crate::files::remote`]). The options default to
//! `~/.ssh/known_hosts`, `~/.ssh/id_ed25519` and `migrator` on the far host's PATH; paths in
//! the query cannot contain `&`. Parsed when the site spec is read, so a bad URL is refused
//! naming the site before anything runs.

use crate::files::remote::{SshError, SshOptions, SshTarget};
use std::path::{Path, PathBuf};

/// A remote home: where, and how to trust and log in to the far host.
#[derive(Debug, Clone)]
pub struct RemoteHome {
    pub target: SshTarget,
    pub opts: SshOptions,
}

/// Why a home URL is refused.
#[derive(Debug, thiserror::Error)]
pub enum HomeUrlError {
    #[error(transparent)]
    Target(#[from] SshError),
    #[error("{url}: option `{option}` needs a value (key=value)")]
    NoValue { url: String, option: String },
    #[error("{url}: unknown option `{option}` (known: known_hosts, identity, migrator)")]
    UnknownOption { url: String, option: String },
}

pub fn is_remote(p: &Path) -> bool {
    p.to_str().is_some_and(|s| s.starts_with("ssh://"))
}

fn home_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"))
}

/// Parses a remote home URL; `Ok(None)` for a local path.
pub fn parse(p: &Path) -> Result<Option<RemoteHome>, HomeUrlError> {
    if !is_remote(p) {
        return Ok(None);
    }
    let s = p.to_str().expect("checked by is_remote");
    let (url, query) = s.split_once('?').unwrap_or((s, ""));
    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
    let target = SshTarget::parse(url, &user)?;
    let mut opts = SshOptions {
        known_hosts: home_dir().join(".ssh/known_hosts"),
        identity: home_dir().join(".ssh/id_ed25519"),
        remote_migrator: "migrator".into(),
    };
    for kv in query.split('&').filter(|kv| !kv.is_empty()) {
        let (k, v) = kv.split_once('=').ok_or_else(|| HomeUrlError::NoValue {
            url: s.to_string(),
            option: kv.to_string(),
        })?;
        match k {
            "known_hosts" => opts.known_hosts = PathBuf::from(v),
            "identity" => opts.identity = PathBuf::from(v),
            "migrator" => opts.remote_migrator = v.to_string(),
            _ => {
                return Err(HomeUrlError::UnknownOption {
                    url: s.to_string(),
                    option: k.to_string(),
                })
            }
        }
    }
    Ok(Some(RemoteHome { target, opts }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_remote_homes_with_options_and_refuses_bad_ones() {
        assert!(parse(Path::new("/homez.1/alice")).unwrap().is_none());
        let r = parse(Path::new(
            "ssh://web@10.2.0.5:2222/homez.9/alice?known_hosts=/etc/m/kh&identity=/etc/m/id&migrator=/usr/bin/migrator",
        ))
        .unwrap()
        .unwrap();
        assert_eq!((r.target.user.as_str(), r.target.port), ("web", 2222));
        assert_eq!(r.target.path, Path::new("/homez.9/alice"));
        assert_eq!(r.opts.known_hosts, Path::new("/etc/m/kh"));
        assert_eq!(r.opts.remote_migrator, "/usr/bin/migrator");
        let r = parse(Path::new("ssh://filer/h")).unwrap().unwrap();
        assert!(r.opts.known_hosts.ends_with(".ssh/known_hosts"));
        assert!(parse(Path::new("ssh://filer/h?colour=blue"))
            .unwrap_err()
            .to_string()
            .contains("unknown option `colour`"));
        assert!(parse(Path::new("ssh://filer/h?identity"))
            .unwrap_err()
            .to_string()
            .contains("needs a value"));
        assert!(parse(Path::new("ssh://filer")).is_err());
    }
}
