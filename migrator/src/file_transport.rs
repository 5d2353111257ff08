//! Where a home's new side lives, and how the engine's file passes reach it.
//!
//! `HomeSpec::new` is either a local path (the new filer mounted on the migrator host) or
//! `ssh://[user@]host[:port]/absolute/path[?known_hosts=FILE&identity=FILE&migrator=CMD]`:
//! the pass streams to `migrator receive` on the far host over [`crate::remote`] (russh, the
//! host key checked against `known_hosts`, never added). The options default to
//! `~/.ssh/known_hosts`, `~/.ssh/id_ed25519` and `migrator` on the far host's PATH; paths in
//! the query cannot contain `&`.
//!
//! Over SSH the new side is a destination only: a rollback (copy new → old) of a site whose
//! home is remote is refused before anything is frozen.

use crate::remote::{SshDestination, SshOptions, SshTarget};
use crate::site_spec::HomeSpec;
use crate::sync_files::{self, Destination, LocalDestination, PassOptions};
use crate::systems::{Dc, Direction, SysResult, SystemError};
use std::path::{Path, PathBuf};

/// A remote home: where, and how to trust and log in to the far host.
#[derive(Debug, Clone)]
pub struct RemoteHome {
    pub target: SshTarget,
    pub opts: SshOptions,
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
pub fn parse(p: &Path) -> Result<Option<RemoteHome>, String> {
    if !is_remote(p) {
        return Ok(None);
    }
    let s = p.to_str().expect("checked by is_remote");
    let (url, query) = s.split_once('?').unwrap_or((s, ""));
    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
    let target = SshTarget::parse(url, &user).map_err(|e| e.to_string())?;
    let mut opts = SshOptions {
        known_hosts: home_dir().join(".ssh/known_hosts"),
        identity: home_dir().join(".ssh/id_ed25519"),
        remote_migrator: "migrator".into(),
    };
    for kv in query.split('&').filter(|kv| !kv.is_empty()) {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| format!("{s}: option `{kv}` needs a value (key=value)"))?;
        match k {
            "known_hosts" => opts.known_hosts = PathBuf::from(v),
            "identity" => opts.identity = PathBuf::from(v),
            "migrator" => opts.remote_migrator = v.to_string(),
            _ => {
                return Err(format!(
                    "{s}: unknown option `{k}` (known: known_hosts, identity, migrator)"
                ))
            }
        }
    }
    Ok(Some(RemoteHome { target, opts }))
}

/// The destination a pass in `dir` writes to for home `h`.
fn destination(h: &HomeSpec, dir: Direction) -> SysResult<(Box<dyn Destination>, &Path)> {
    let remote = parse(&h.new).map_err(|e| SystemError::new("files", Dc::New, e))?;
    match (dir, remote) {
        (Direction::Forward, None) => Ok((Box::new(LocalDestination::new(&h.new)), &h.old)),
        (Direction::Back, None) => Ok((Box::new(LocalDestination::new(&h.old)), &h.new)),
        (Direction::Forward, Some(r)) => {
            let d = SshDestination::connect(&r.target, &r.opts)
                .map_err(|e| SystemError::new("files", Dc::New, e.to_string()))?;
            Ok((Box::new(d), &h.old))
        }
        (Direction::Back, Some(_)) => Err(back_refused(h)),
    }
}

fn back_refused(h: &HomeSpec) -> SystemError {
    SystemError::new(
        "files",
        Dc::New,
        format!(
            "{}: copying back from an ssh:// home is not supported (the far side can only \
             receive); mount the new filer on the migrator host to roll this site back",
            h.new.display()
        ),
    )
}

/// Refuses early (before any freeze) what [`sync_home`] cannot do in `dir`.
pub fn check_direction(homes: &[HomeSpec], dir: Direction) -> SysResult<()> {
    match homes
        .iter()
        .find(|h| dir == Direction::Back && is_remote(&h.new))
    {
        Some(h) => Err(back_refused(h)),
        None => Ok(()),
    }
}

/// One file pass of home `h` in `dir`; returns bytes written.
pub fn sync_home(h: &HomeSpec, dir: Direction) -> SysResult<u64> {
    let dc = match dir {
        Direction::Forward => Dc::New,
        Direction::Back => Dc::Old,
    };
    let (mut d, src) = destination(h, dir)?;
    let r = sync_files::run_pass(src, d.as_mut(), PassOptions::default(), &|_| {})
        .map_err(|e| SystemError::new("files", dc, e.to_string()))?;
    Ok(r.bytes_written)
}

/// Every difference between home `h`'s two sides.
pub fn verify_home(h: &HomeSpec) -> SysResult<Vec<String>> {
    let (mut d, src) = destination(h, Direction::Forward)?;
    let r = crate::verify::verify_files(src, d.as_mut(), false)
        .map_err(|e| SystemError::new("files", Dc::New, e.to_string()))?;
    Ok(r.differences
        .into_iter()
        .map(|x| format!("{}: {x}", h.old.display()))
        .collect())
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
            .contains("unknown option `colour`"));
        assert!(parse(Path::new("ssh://filer")).is_err());
        let h = HomeSpec {
            old: "/o".into(),
            new: "ssh://filer/h".into(),
            compat_link: None,
            compat_target: None,
        };
        assert!(check_direction(std::slice::from_ref(&h), Direction::Forward).is_ok());
        let e = check_direction(&[h], Direction::Back).unwrap_err();
        assert!(e.message.contains("not supported"), "{e}");
    }
}
