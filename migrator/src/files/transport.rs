//! Where a home's new side lives, and how the engine's file passes reach it.
//!
//! `HomeSpec::new` is either a local path (the new filer mounted on the migrator host) or an
//! `ssh://` URL ([`crate::files::home_url`]): the pass streams to `migrator receive` on the far
//! host over [`crate::files::remote`] (russh, the host key checked against `known_hosts`,
//! never added).
//!
//! Over SSH the new side is a destination only: a rollback (copy new → old) of a site whose
//! home is remote is refused before anything is frozen.

use crate::files::home_url::{is_remote, parse};
use crate::files::owners::{MappedOwners, OwnerMap};
use crate::files::remote::SshDestination;
use crate::files::sync::{self, Destination, LocalDestination, PassOptions};
use crate::site_spec::HomeSpec;
use crate::systems::{Dc, Direction, SysResult, SystemError};
use std::path::Path;

/// The destination a pass in `dir` writes to for home `h`, its owners mapped when the home
/// has an owner map ([`HomeSpec::owner_map`]; copying back, the map is read in reverse).
fn destination(h: &HomeSpec, dir: Direction) -> SysResult<(Box<dyn Destination>, &Path)> {
    let (d, src) = unmapped_destination(h, dir)?;
    let Some(file) = &h.owner_map else {
        return Ok((d, src));
    };
    let dc = match dir {
        Direction::Forward => Dc::New,
        Direction::Back => Dc::Old,
    };
    let map = OwnerMap::load(file).map_err(|e| SystemError::new("files", dc, e.to_string()))?;
    let map = match dir {
        Direction::Forward => map,
        Direction::Back => map.reversed(),
    };
    Ok((Box::new(MappedOwners { inner: d, map }), src))
}

fn unmapped_destination(h: &HomeSpec, dir: Direction) -> SysResult<(Box<dyn Destination>, &Path)> {
    let remote = parse(&h.new).map_err(|e| SystemError::new("files", Dc::New, e.to_string()))?;
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
    let r = sync::run_pass(src, d.as_mut(), PassOptions::default(), &|_| {})
        .map_err(|e| SystemError::new("files", dc, e.to_string()))?;
    Ok(r.bytes_written)
}

/// How long a forward pass waits for a silent change feed before walking instead.
const FEED_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// One forward pass of home `h` through its change feed ([`HomeSpec::feed`]), recorded in
/// `journal` under `site` (the destination manifest cached there, the feed's chain checked
/// against the last pass's): returns bytes written and whether the source was walked (false:
/// the feed said what to re-stat).
pub fn sync_home_with_feed(
    h: &HomeSpec,
    feed: &Path,
    journal: &mut dyn crate::journal::JournalStore,
    site: &str,
) -> SysResult<(u64, bool)> {
    let (mut d, src) = destination(h, Direction::Forward)?;
    let opts = crate::files::journaled::FeedOptions {
        socket: feed.to_path_buf(),
        root: None,
        timeout: FEED_TIMEOUT,
    };
    let r = crate::files::journaled::run_pass_journaled_with_feed(
        journal,
        site,
        src,
        d.as_mut(),
        PassOptions::default(),
        Some(&opts),
        &|_| {},
    )
    .map_err(|e| SystemError::new("files", Dc::New, e.to_string()))?;
    Ok((r.bytes_written, r.source_walked))
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

    /// The engine's passes go through the home's owner map: forward to the new ids, and a
    /// rollback's copy-back to the old ones.
    #[test]
    fn the_engine_maps_owners_both_ways() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("not root: owners cannot be set");
            return;
        }
        use std::os::unix::fs::MetadataExt;
        let d = tempfile::tempdir().unwrap();
        let (old, new) = (d.path().join("old/alice"), d.path().join("new/alice"));
        std::fs::create_dir_all(&old).unwrap();
        std::fs::write(old.join("index.php"), b"<?php").unwrap();
        for p in [&old, &old.join("index.php")] {
            std::os::unix::fs::chown(p, Some(1001), Some(1001)).unwrap();
        }
        let map = d.path().join("owners.map");
        std::fs::write(&map, "uid 1001 52001\ngid 1001 52002\n").unwrap();
        let h = HomeSpec {
            old: old.clone(),
            new: new.clone(),
            compat_link: None,
            compat_target: None,
            feed: None,
            owner_map: Some(map),
        };
        sync_home(&h, Direction::Forward).unwrap();
        let md = std::fs::metadata(new.join("index.php")).unwrap();
        assert_eq!((md.uid(), md.gid()), (52001, 52002));
        assert!(verify_home(&h).unwrap().is_empty());
        std::fs::remove_file(old.join("index.php")).unwrap();
        sync_home(&h, Direction::Back).unwrap();
        let md = std::fs::metadata(old.join("index.php")).unwrap();
        assert_eq!((md.uid(), md.gid()), (1001, 1001));
    }

    #[test]
    fn a_remote_home_is_a_destination_only() {
        let h = HomeSpec {
            old: "/o".into(),
            new: "ssh://filer/h".into(),
            compat_link: None,
            compat_target: None,
            feed: None,
            owner_map: None,
        };
        assert!(check_direction(std::slice::from_ref(&h), Direction::Forward).is_ok());
        let e = check_direction(&[h], Direction::Back).unwrap_err();
        assert!(e.message.contains("not supported"), "{e}");
    }
}
