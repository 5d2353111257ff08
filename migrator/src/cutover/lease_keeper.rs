//! Keeping a site's lease alive through one long pass.
//!
//! A lease is renewed at every phase, but one sync pass (a file pass over a large home, a
//! database copy) can outlast its TTL: from another host, an expired lease may be taken over,
//! and a second migrator would then write into the site in the middle of the pass. A
//! [`LeaseKeeper`] renews the lease from a thread of its own, every third of the TTL, through
//! its own journal handle (the pass keeps the other), until it is stopped.
//!
//! A renewal that finds the lease taken over stops the keeper and is reported by
//! [`LeaseKeeper::stop`] (the run then fails, naming the new owner); a renewal that fails
//! otherwise (the journal briefly unreachable) is retried at the next tick: the lease is lost
//! only once it expires.

use crate::cutover::lease::{self, LeaseKind};
use crate::cutover::phase::CutoverError;
use crate::journal::JournalStore;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

/// The fastest renewal (a very short TTL, in tests, must not spin).
const MIN_EVERY: Duration = Duration::from_millis(10);

/// Renews a lease in the background until stopped (explicitly or when dropped).
pub struct LeaseKeeper {
    /// Dropping or sending on it wakes the thread, which then stops.
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<Result<(), CutoverError>>>,
}

impl LeaseKeeper {
    /// Starts renewing `site`'s lease of `kind` for `ttl` every `ttl / 3`, through `journal`
    /// (a handle of its own). The caller holds the lease already.
    pub fn start(
        mut journal: Box<dyn JournalStore + Send>,
        site: &str,
        kind: LeaseKind,
        ttl: Duration,
    ) -> std::io::Result<LeaseKeeper> {
        let (tx, rx) = mpsc::channel::<()>();
        let every = (ttl / 3).max(MIN_EVERY);
        let site = site.to_string();
        let thread = std::thread::Builder::new()
            .name(format!("lease-{site}"))
            .spawn(move || loop {
                match rx.recv_timeout(every) {
                    Err(RecvTimeoutError::Timeout) => {}
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => return Ok(()),
                }
                match lease::take_kind(journal.as_mut(), &site, kind, ttl) {
                    Ok(()) => {}
                    Err(e @ CutoverError::Leased { .. }) => return Err(e),
                    Err(e) => {
                        tracing::warn!("renewing the lease of {site} failed, retrying: {e}")
                    }
                }
            })?;
        Ok(LeaseKeeper {
            stop: Some(tx),
            thread: Some(thread),
        })
    }

    /// Stops renewing (the lease itself stays: release it, or let the next phase renew it).
    /// An error when the lease was taken over by another migrator meanwhile.
    pub fn stop(mut self) -> Result<(), CutoverError> {
        self.halt()
    }

    fn halt(&mut self) -> Result<(), CutoverError> {
        drop(self.stop.take());
        match self.thread.take().map(JoinHandle::join) {
            None => Ok(()),
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(CutoverError::Leased {
                site: "?".into(),
                owner: "unknown (the lease renewal thread panicked)".into(),
            }),
        }
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        let _ = self.halt();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{now_ms, SqliteJournal};

    /// Issue 18 (5): a pass longer than the sync lease's TTL keeps the lease: judged from
    /// another host (by its expiry) it never runs out while the keeper runs; once stopped, it
    /// is no longer renewed.
    #[test]
    fn a_pass_longer_than_the_ttl_keeps_the_lease() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.sqlite");
        let mut j = SqliteJournal::open(&path).unwrap();
        let ttl = Duration::from_millis(300);
        lease::take_kind(&mut j, "shop", LeaseKind::Sync, ttl).unwrap();
        let as_seen_elsewhere = |j: &SqliteJournal| lease::Lease {
            host: "another-host".into(),
            ..lease::get(j, "shop").unwrap().expect("a lease")
        };
        let keeper = LeaseKeeper::start(
            Box::new(SqliteJournal::open(&path).unwrap()),
            "shop",
            LeaseKind::Sync,
            ttl,
        )
        .unwrap();
        // A "pass" of five TTLs: sampled often, the lease never expires.
        let t0 = std::time::Instant::now();
        while t0.elapsed() < ttl * 5 {
            let l = as_seen_elsewhere(&j);
            assert!(!l.expired(now_ms()), "expired mid-pass: {l:?}");
            assert_eq!(l.kind, LeaseKind::Sync);
            std::thread::sleep(Duration::from_millis(25));
        }
        keeper.stop().unwrap();
        let after = as_seen_elsewhere(&j);
        std::thread::sleep(ttl + Duration::from_millis(100));
        let later = as_seen_elsewhere(&j);
        assert_eq!(after.expires_ms, later.expires_ms, "renewed after stop");
        assert!(
            later.expired(now_ms()),
            "the TTL applies again once stopped"
        );
    }

    /// Without the keeper the same lease runs out mid-pass (what the test above guards).
    #[test]
    fn without_a_keeper_the_lease_runs_out() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = SqliteJournal::open(&dir.path().join("j.sqlite")).unwrap();
        let ttl = Duration::from_millis(100);
        lease::take_kind(&mut j, "shop", LeaseKind::Sync, ttl).unwrap();
        std::thread::sleep(ttl * 2);
        let l = lease::Lease {
            host: "another-host".into(),
            ..lease::get(&j, "shop").unwrap().unwrap()
        };
        assert!(l.expired(now_ms()));
    }

    /// A renewal finding the lease in another owner's hands stops and says whose it is.
    #[test]
    fn a_lease_taken_over_is_reported_at_stop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.sqlite");
        let mut j = SqliteJournal::open(&path).unwrap();
        let ttl = Duration::from_millis(60);
        lease::take_kind(&mut j, "shop", LeaseKind::Sync, ttl).unwrap();
        let keeper = LeaseKeeper::start(
            Box::new(SqliteJournal::open(&path).unwrap()),
            "shop",
            LeaseKind::Sync,
            ttl,
        )
        .unwrap();
        // Another host's migrator writes its own lease over ours (as after an expiry).
        let theirs = lease::Lease {
            host: "another-host".into(),
            pid: 4242,
            expires_ms: now_ms() + 3_600_000,
            ..lease::get(&j, "shop").unwrap().unwrap()
        };
        crate::cutover::checkpoints::put(
            &mut j,
            "shop",
            crate::cutover::checkpoints::Checkpoint::Lease,
            &serde_json::to_string(&theirs).unwrap(),
        )
        .unwrap();
        std::thread::sleep(ttl * 2);
        let e = keeper.stop().unwrap_err().to_string();
        assert!(e.contains("pid 4242 on another-host"), "{e}");
        assert_eq!(lease::get(&j, "shop").unwrap().unwrap().pid, 4242);
    }
}
