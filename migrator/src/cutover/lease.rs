//! Site leases: one migrator at a time mutates a site, and a crash never leaves a site frozen
//! indefinitely.
//!
//! Every mutating phase runs under the site's lease in the journal: owner (host, PID), a kind
//! and an expiry. A [`LeaseKind::Sync`] lease covers prepare and the sync passes (nothing is
//! frozen; a long TTL, renewed at every phase); before the first freezing action (cutover or
//! rollback) it becomes a [`LeaseKind::Freeze`] lease, renewed at every phase of the critical
//! section and released once the site serves again from one side. `finalize` takes one too.
//! If the migrator dies in between, the lease stays behind and says so:
//! - `migrator wave run` again resumes every site of its wave (a frozen site is aborted to the
//!   old side or, past the commit point, completed on the new side);
//! - `migrator lease-watch` (and the start of any `wave run`, for sites outside its wave) finds
//!   leases that expired, or whose owner process on this host is gone, and recovers those
//!   sites the same way: unfreeze on the side that owns the data.
//!
//! The owner is named by host, PID, the host's boot id and the process's start time, so neither
//! a reboot nor a PID reused by another process keeps a dead owner's lease alive.
//!
//! A migrator that cannot finish unfreezing a site past the commit point (the load balancer
//! keeps refusing, retried with backoff within its budget) hands its lease over
//! ([`hand_over`]): the lease then counts as expired although its owner lives, so `lease-watch`
//! and the next `wave run` finish the unfreeze on the new side instead of leaving it in 503.
//!
//! Two migrators never act on one site: on the owner's host a live owner is never preempted;
//! from another host only an expired lease is taken over (so `--lease` must exceed the
//! longest phase of a freeze: the lease is renewed at every phase). Taking, renewing and
//! releasing are compare-and-set on the journal row; `migrate`, `rollback`, `recover` and an
//! abort refuse a site another live owner holds, and a renewal finding the lease taken over
//! fails the phase before it acts.

use crate::cutover::checkpoints::{self, Checkpoint};
use crate::cutover::phase::CutoverError;
use crate::journal::now_ms;
use crate::journal::JournalStore;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// What the lease holder is doing to the site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaseKind {
    /// Prepare and sync passes: the site is not frozen; nothing to unfreeze if the owner dies.
    Sync,
    /// The freeze window (cutover or rollback) or finalize: a dead owner's site is recovered.
    /// Leases written before kinds existed were freeze leases.
    #[default]
    Freeze,
}

/// A site lease as stored (checkpoint [`Checkpoint::Lease`], JSON; `null` when released).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lease {
    pub host: String,
    pub pid: u32,
    pub taken_ms: i64,
    pub expires_ms: i64,
    /// The owner host's boot (`/proc/sys/kernel/random/boot_id`): after a reboot the PID means
    /// nothing. Absent in leases written before it was recorded.
    #[serde(default)]
    pub boot_id: Option<String>,
    /// The owner process's start time (clock ticks since boot, `/proc/<pid>/stat` field 22): a
    /// PID reused by another process does not keep the lease alive.
    #[serde(default)]
    pub started: Option<u64>,
    #[serde(default)]
    pub kind: LeaseKind,
    /// Set when the owner gave the site up to the watchdog (why): the lease counts as expired
    /// even while its owner lives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handed_over: Option<String>,
}

/// The sites this process holds a freeze lease of (what a bundle capture of this process
/// yields to at once, [`crate::bundle::pause`]).
static FROZEN_HERE: std::sync::Mutex<std::collections::BTreeSet<String>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

fn frozen_here_set(site: &str, frozen: bool) {
    let mut s = FROZEN_HERE.lock().unwrap_or_else(|e| e.into_inner());
    if frozen {
        s.insert(site.to_string());
    } else {
        s.remove(site);
    }
}

/// Whether this process holds a freeze lease now (a site of its own is frozen).
pub fn frozen_here() -> bool {
    !FROZEN_HERE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .is_empty()
}

/// This host's boot id, if the kernel tells.
fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// When process `pid` started (clock ticks since boot), if it exists.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid …`: comm may hold spaces and parentheses; fields restart after
    // the last ')'. starttime is field 22, the 20th after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// This host's name (leases name their owner host so a PID is only checked where it lives).
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for `buf.len()` bytes; gethostname NUL-terminates on success.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr() as *mut libc::c_char, buf.len()) };
    if rc != 0 {
        return "unknown-host".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

impl Lease {
    /// Whether a watchdog may take the site over. On this host the owner's PID decides: a live
    /// owner is never preempted (a long final sync can outlast the expiry between renewals),
    /// a dead one frees the site at once. An owner on another host is judged by the expiry.
    pub fn expired(&self, now_ms: i64) -> bool {
        if self.handed_over.is_some() {
            return true;
        }
        if self.host == hostname() {
            !self.owner_alive()
        } else {
            now_ms >= self.expires_ms
        }
    }

    /// Whether the owning process (on this host) still runs: the same boot, the PID alive and,
    /// when recorded, started when the owner did (a reused PID is another process).
    fn owner_alive(&self) -> bool {
        if let (Some(theirs), Some(ours)) = (&self.boot_id, boot_id()) {
            if *theirs != ours {
                return false; // rebooted since
            }
        }
        if !process_alive(self.pid) {
            return false;
        }
        match (self.started, start_time(self.pid)) {
            (Some(then), Some(now)) => then == now,
            _ => true,
        }
    }
}

fn process_alive(pid: u32) -> bool {
    if pid == 0 || pid > i32::MAX as u32 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists.
    let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

impl Lease {
    /// Whether this process owns the lease.
    pub fn is_ours(&self) -> bool {
        self.pid == std::process::id() && self.host == hostname() && self.owner_alive()
    }
}

/// The stored lease of `site`: the raw value (for the compare-and-set) and the lease, if held.
fn current(
    journal: &dyn JournalStore,
    site: &str,
) -> Result<(Option<String>, Option<Lease>), CutoverError> {
    let raw = checkpoints::get(journal, site, Checkpoint::Lease)?;
    let lease = raw
        .as_deref()
        .and_then(|s| serde_json::from_str::<Option<Lease>>(s).ok().flatten());
    Ok((raw, lease))
}

fn refused(site: &str, l: &Lease) -> CutoverError {
    CutoverError::Leased {
        site: site.to_string(),
        owner: format!("pid {} on {}", l.pid, l.host),
    }
}

/// Refuses (an error) when `site` is leased by another migrator that is alive (or, on another
/// host, whose lease has not expired): nobody else may act on the site meanwhile.
pub fn ensure_free(journal: &dyn JournalStore, site: &str) -> Result<(), CutoverError> {
    match current(journal, site)?.1 {
        Some(l) if !l.is_ours() && !l.expired(now_ms()) => Err(refused(site, &l)),
        _ => Ok(()),
    }
}

/// Takes (or renews) the freeze lease of `site` for `ttl` ([`take_kind`]).
pub fn take(journal: &mut dyn JournalStore, site: &str, ttl: Duration) -> Result<(), CutoverError> {
    take_kind(journal, site, LeaseKind::Freeze, ttl)
}

/// Takes (or renews, or changes the kind of) the lease of `site` for `ttl`, owned by this
/// process: a compare-and-set against the lease read, so two migrators never both hold it.
/// Refused while another live owner holds it (a renewal finding the lease taken over fails,
/// so the phase does not run).
pub fn take_kind(
    journal: &mut dyn JournalStore,
    site: &str,
    kind: LeaseKind,
    ttl: Duration,
) -> Result<(), CutoverError> {
    let (raw, cur) = current(journal, site)?;
    let now = now_ms();
    if let Some(l) = &cur {
        if !l.is_ours() && !l.expired(now) {
            return Err(refused(site, l));
        }
    }
    let lease = Lease {
        host: hostname(),
        pid: std::process::id(),
        taken_ms: now,
        expires_ms: now + ttl.as_millis() as i64,
        boot_id: boot_id(),
        started: start_time(std::process::id()),
        kind,
        handed_over: None,
    };
    let json = serde_json::to_string(&lease).expect("lease serializes");
    if !checkpoints::swap(
        journal,
        site,
        Checkpoint::Lease,
        raw.as_deref(),
        Some(&json),
    )? {
        // Someone wrote the lease between our read and our write.
        let (_, now_held) = current(journal, site)?;
        return Err(match now_held {
            Some(l) => refused(site, &l),
            None => CutoverError::Leased {
                site: site.to_string(),
                owner: "a concurrent migrator".into(),
            },
        });
    }
    frozen_here_set(site, kind == LeaseKind::Freeze);
    Ok(())
}

/// Releases the lease of `site` (the site serves from one side again): ours, or one whose owner
/// is gone (recovered by us). Another live owner's lease is left alone.
pub fn release(journal: &mut dyn JournalStore, site: &str) -> Result<(), CutoverError> {
    let (raw, cur) = current(journal, site)?;
    // Whoever holds it now, this process holds no lease of `site` any more.
    frozen_here_set(site, false);
    match cur {
        None => Ok(()),
        Some(l) if !l.is_ours() && !l.expired(now_ms()) => Ok(()),
        Some(_) => {
            // Lost only to a new owner, whose lease then stays.
            checkpoints::swap(journal, site, Checkpoint::Lease, raw.as_deref(), None)?;
            Ok(())
        }
    }
}

/// Hands our lease of `site` over to the watchdog (`why` says what is left to do): it counts
/// as expired from now on, so `lease-watch` and the next `wave run` finish the site although
/// this process lives. A lease that is not ours is left alone.
pub fn hand_over(
    journal: &mut dyn JournalStore,
    site: &str,
    why: &str,
) -> Result<(), CutoverError> {
    let (raw, cur) = current(journal, site)?;
    let Some(mut l) = cur.filter(Lease::is_ours) else {
        return Ok(());
    };
    frozen_here_set(site, false);
    l.expires_ms = now_ms();
    l.handed_over = Some(why.to_string());
    let json = serde_json::to_string(&l).expect("lease serializes");
    checkpoints::swap(
        journal,
        site,
        Checkpoint::Lease,
        raw.as_deref(),
        Some(&json),
    )?;
    Ok(())
}

/// The lease of `site`, if one is held.
pub fn get(journal: &dyn JournalStore, site: &str) -> Result<Option<Lease>, CutoverError> {
    Ok(checkpoints::get(journal, site, Checkpoint::Lease)?
        .and_then(|s| serde_json::from_str::<Option<Lease>>(&s).ok().flatten()))
}

/// Every held lease: (site, lease).
pub fn all(journal: &dyn JournalStore) -> Result<Vec<(String, Lease)>, CutoverError> {
    let mut out = Vec::new();
    for (site, v) in checkpoints::all_of(journal, Checkpoint::Lease)? {
        if let Ok(Some(l)) = serde_json::from_str::<Option<Lease>>(&v) {
            out.push((site, l));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::SqliteJournal;

    #[test]
    fn lease_expires_by_time_or_when_its_owner_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = SqliteJournal::open(&dir.path().join("j")).unwrap();
        assert!(get(&j, "a").unwrap().is_none());
        take(&mut j, "a", Duration::from_secs(60)).unwrap();
        let l = get(&j, "a").unwrap().unwrap();
        assert_eq!(l.pid, std::process::id());
        assert!(!l.expired(now_ms()), "our own live lease");
        assert!(
            !l.expired(l.expires_ms + 1),
            "a live owner on this host is never preempted"
        );
        let dead = Lease {
            pid: i32::MAX as u32, // beyond pid_max: no such process
            ..l.clone()
        };
        assert!(dead.expired(now_ms()));
        let elsewhere = Lease {
            host: "another-host".into(),
            ..dead
        };
        assert!(
            !elsewhere.expired(now_ms()),
            "a PID on another host is not ours to check"
        );
        assert!(
            elsewhere.expired(elsewhere.expires_ms),
            "there the expiry decides"
        );
        assert_eq!(all(&j).unwrap().len(), 1);
        // Our own PID, but another boot or another start time: not us any more (a reboot, a
        // reused PID), so the site is free.
        assert!(l.boot_id.is_some() && l.started.is_some(), "{l:?}");
        let rebooted = Lease {
            boot_id: Some("00000000-0000-0000-0000-000000000000".into()),
            ..l.clone()
        };
        assert!(rebooted.expired(now_ms()) && !rebooted.is_ours());
        let reused = Lease {
            started: l.started.map(|t| t + 1),
            ..l.clone()
        };
        assert!(reused.expired(now_ms()) && !reused.is_ours());
        // A lease written before these were recorded still reads, judged by the PID.
        let old: Lease = serde_json::from_str(&format!(
            r#"{{"host":"{}","pid":{},"taken_ms":1,"expires_ms":2}}"#,
            l.host, l.pid
        ))
        .unwrap();
        assert!(!old.expired(now_ms()));
        release(&mut j, "a").unwrap();
        assert!(get(&j, "a").unwrap().is_none());
        assert!(all(&j).unwrap().is_empty());
    }

    /// What a bundle capture of this process yields to at once: the sites it holds a freeze
    /// lease of (not a sync lease), until released or handed over.
    #[test]
    fn this_process_s_freezes_are_known_without_reading_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = SqliteJournal::open(&dir.path().join("j")).unwrap();
        let site = "frozen-here-test-site";
        let here = || FROZEN_HERE.lock().unwrap().contains(site);
        let ttl = Duration::from_secs(60);
        take_kind(&mut j, site, LeaseKind::Sync, ttl).unwrap();
        assert!(!here(), "a sync lease is no freeze");
        take(&mut j, site, ttl).unwrap();
        assert!(here() && frozen_here());
        release(&mut j, site).unwrap();
        assert!(!here());
        take(&mut j, site, ttl).unwrap();
        hand_over(&mut j, site, "test").unwrap();
        assert!(!here(), "handed over: the watchdog's now");
    }
}
