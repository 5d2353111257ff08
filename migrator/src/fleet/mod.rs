//! Many workers on many hosts sharing one wave (issue 17, item 2): the wave's move groups are
//! rows of the journal, claimed one at a time with a lease.
//!
//! - `migrator wave start N` ([`Fleet::start_wave`]) writes wave N's move groups to
//!   `wave_groups` (state `queued`) and marks the wave started in `wave_runs`. Starting again
//!   adds nothing (a group already there keeps its state).
//! - `migrator worker` ([`Fleet::claim`]) takes the first group whose claim ran out, else the
//!   first queued one (through the `(wave, state, grp)` index), in one transaction: on MariaDB `SELECT … FOR UPDATE SKIP LOCKED`
//!   (two workers never wait for each other, nor take the same row), on SQLite under the
//!   file's write lock (`BEGIN IMMEDIATE`). The claim names its owner (host, PID, boot id) and
//!   runs until `lease_until_ms`; the worker renews it while it works ([`Fleet::renew`]).
//! - A worker that dies stops renewing: once its lease has run out, another worker claims the
//!   group and runs it again. Each site resumes from the journal (the engine's own resume,
//!   and the site's freeze lease, [`crate::cutover::lease`], keeps two workers out of one
//!   freeze), so a site already live is not moved twice.
//! - The wave's controls ([`crate::control`]) act on every worker: a paused wave is not
//!   claimed from, and a throttle caps the groups claimed across the fleet.
//! - Per-resource caps ([`Fleet::set_cap`], `migrator wave cap RESOURCE N`): each group
//!   names the shared resources its sites load ([`resources`]: the old SQL endpoint by its
//!   proxy, the filer by the old homes' parent directory, the tunnel by its config); a group
//!   is claimed only while fewer than the cap of live claims hold each of them. The cap rows
//!   are read `FOR UPDATE` inside the claim, so two workers cannot both take the last slot.
//! - [`worker`]: the loop a worker runs (claim, move the group's sites while renewing the
//!   claim, mark it done).

use crate::control::Controls;
use crate::journal::{now_ms, Dialect, JournalError, SqlConn, SqlValue};
use crate::site_spec::SiteSpec;
use std::collections::BTreeSet;
use std::path::Path;

pub mod worker;

#[cfg(test)]
mod tests;

/// Candidate groups looked at per claim when caps hold the first ones back.
const CANDIDATES: usize = 20;
/// Claims run again after a deadlock or Galera certification conflict rolled them back.
const CLAIM_CONFLICT_RETRIES: u32 = 6;

/// The shared resources a site loads: `sql:<proxy admin address>` (the proxy in front of its
/// old SQL endpoint; only for a site with databases), `filer:<parent of an old home>`,
/// `tunnel:<config>`.
pub fn resources(spec: &SiteSpec) -> BTreeSet<String> {
    let mut r = BTreeSet::new();
    if !spec.databases.is_empty() {
        r.insert(format!("sql:{}", spec.proxy.admin));
    }
    for h in &spec.homes {
        if let Some(p) = h.old.parent() {
            r.insert(format!("filer:{}", p.display()));
        }
    }
    if let Some(t) = &spec.tunnel {
        r.insert(format!("tunnel:{}", t.config.display()));
    }
    r
}

/// What one claim transaction found.
enum Race {
    Won(Claim),
    /// Nothing claimable (all done, held, or capped).
    Nothing,
    /// The group chosen was claimed by another worker in between (another Galera node).
    Lost,
}

/// A claimed move group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub wave: u32,
    pub group: u32,
    pub sites: Vec<String>,
    pub owner: String,
    /// Claims of this group so far, this one included (more than one: taken over).
    pub attempts: u32,
}

/// How far a wave is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Progress {
    pub queued: u64,
    /// Claimed with a live lease.
    pub claimed: u64,
    /// Claimed, but the lease ran out (its worker is gone): claimable again.
    pub expired: u64,
    pub done: u64,
}

impl Progress {
    pub fn finished(&self) -> bool {
        self.queued + self.claimed + self.expired == 0
    }
}

/// The fleet's tables of one journal.
pub struct Fleet {
    db: Box<dyn SqlConn>,
    controls: Controls,
}

/// Who claims: `host:pid:boot-id` (a PID alone is reused across reboots and hosts).
pub fn owner_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown-host".into());
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|b| b.trim().to_string())
        .unwrap_or_default();
    format!("{host}:{}:{boot}", std::process::id())
}

impl Fleet {
    /// Opens the journal a `--journal` value names (a file or a MariaDB URL).
    pub fn open(journal: &Path) -> Result<Fleet, JournalError> {
        Ok(Fleet {
            db: crate::journal::open_sql_at(journal)?,
            controls: Controls::on(crate::journal::open_sql_at(journal)?),
        })
    }

    /// Marks wave `wave` started with these move groups (each a list of sites); returns the
    /// groups added (0 when the wave was started before).
    pub fn start_wave(
        &self,
        wave: u32,
        plan: &str,
        groups: &[Vec<String>],
        who: &str,
    ) -> Result<usize, JournalError> {
        let none = vec![BTreeSet::new(); groups.len()];
        self.start_wave_with(wave, plan, groups, &none, who)
    }

    /// [`Fleet::start_wave`] with the shared resources of each group (see [`resources`]).
    pub fn start_wave_with(
        &self,
        wave: u32,
        plan: &str,
        groups: &[Vec<String>],
        res: &[BTreeSet<String>],
        who: &str,
    ) -> Result<usize, JournalError> {
        let d = self.db.dialect();
        let ignore = match d {
            Dialect::Sqlite => "INSERT OR IGNORE",
            Dialect::MariaDb => "INSERT IGNORE",
        };
        let now = now_ms();
        self.db.exec(
            &format!("{ignore} INTO wave_runs(wave, plan, started_ms, who) VALUES (?, ?, ?, ?)"),
            &[wave.into(), plan.into(), now.into(), who.into()],
        )?;
        let mut added = 0;
        for (i, sites) in groups.iter().enumerate() {
            let json = serde_json::to_string(sites).expect("site names serialize");
            let r = self.db.exec(
                &format!(
                    "{ignore} INTO wave_groups(wave, grp, sites, state, lease_until_ms, attempts,
                                              updated_ms)
                     VALUES (?, ?, ?, 'queued', 0, 0, ?)"
                ),
                &[wave.into(), (i as i64).into(), json.into(), now.into()],
            )?;
            added += r.affected as usize;
            for name in res.get(i).into_iter().flatten() {
                self.db.exec(
                    &format!("{ignore} INTO group_resources(wave, grp, resource) VALUES (?, ?, ?)"),
                    &[wave.into(), (i as i64).into(), name.as_str().into()],
                )?;
            }
        }
        Ok(added)
    }

    /// At most `cap` live claims, fleet-wide, on groups that load `resource`; 0 removes the
    /// cap.
    pub fn set_cap(&self, resource: &str, cap: u32) -> Result<(), JournalError> {
        if cap == 0 {
            self.db.exec(
                "DELETE FROM resource_caps WHERE resource = ?",
                &[resource.into()],
            )?;
            return Ok(());
        }
        let d = self.db.dialect();
        self.db.exec(
            &format!(
                "INSERT INTO resource_caps(resource, cap) VALUES (?, ?) {} cap = {}",
                d.upsert("resource"),
                d.excluded("cap")
            ),
            &[resource.into(), cap.into()],
        )?;
        Ok(())
    }

    /// Whether claiming group `grp` of `wave` now would exceed a resource's cap. The caps'
    /// rows are locked until the claim's transaction ends.
    fn over_cap(&self, wave: u32, grp: i64, now: i64, lock: &str) -> Result<bool, JournalError> {
        let lock = if lock.is_empty() { "" } else { " FOR UPDATE" };
        let caps = self.db.query(
            &format!(
                "SELECT c.resource, c.cap FROM resource_caps c
                   JOIN group_resources r ON r.resource = c.resource
                  WHERE r.wave = ? AND r.grp = ?{lock}"
            ),
            &[wave.into(), grp.into()],
        )?;
        for c in caps {
            let (resource, cap) = (c.text(0)?, c.i64(1)?);
            let held = self
                .db
                .row(
                    "SELECT COUNT(*) FROM group_resources r
                       JOIN wave_groups g ON g.wave = r.wave AND g.grp = r.grp
                      WHERE r.resource = ? AND g.state = 'claimed' AND g.lease_until_ms >= ?",
                    &[resource.into(), SqlValue::Int(now)],
                )?
                .map(|r| r.i64(0))
                .transpose()?
                .unwrap_or(0);
            if held >= cap {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Whether wave `wave` was started (`migrator wave start`).
    pub fn started(&self, wave: u32) -> Result<bool, JournalError> {
        Ok(self
            .db
            .row("SELECT 1 FROM wave_runs WHERE wave = ?", &[wave.into()])?
            .is_some())
    }

    /// Claims the first claimable group of `wave` for `owner` for `lease_ms`; `None` when no
    /// group is claimable now (all done or held), the wave is paused, or its throttle is
    /// reached across the fleet.
    pub fn claim(
        &self,
        wave: u32,
        owner: &str,
        lease_ms: i64,
    ) -> Result<Option<Claim>, JournalError> {
        let ctl = self.controls.current(wave).map_err(|e| match e {
            crate::control::ControlError::Journal(j) => j,
            other => JournalError::BadValue {
                journal: self.db.name().to_string(),
                what: "the wave's controls",
                reason: other.to_string(),
            },
        })?;
        if ctl.paused {
            return Ok(None);
        }
        let (begin, lock) = match self.db.dialect() {
            Dialect::Sqlite => ("BEGIN IMMEDIATE", ""),
            Dialect::MariaDb => ("START TRANSACTION", " FOR UPDATE SKIP LOCKED"),
        };
        // Workers on different Galera nodes claiming at once: the loser of a certification
        // conflict sees its transaction rolled back (a deadlock error, at any statement or at
        // COMMIT). It is not an error of the worker: the claim runs again.
        let mut conflicts = 0;
        loop {
            self.db.batch(begin)?;
            let r = self
                .claim_in_tx(wave, owner, lease_ms, ctl.concurrency_limit, lock)
                .and_then(|c| match c {
                    Race::Lost => Ok(Race::Lost),
                    c => self.db.batch("COMMIT").map(|_| c),
                });
            match r {
                Ok(Race::Won(c)) => return Ok(Some(c)),
                Ok(Race::Nothing) => return Ok(None),
                Ok(Race::Lost) => {
                    let _ = self.db.batch("ROLLBACK");
                    if conflicts >= CLAIM_CONFLICT_RETRIES {
                        return Ok(None);
                    }
                    conflicts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(10 << conflicts));
                }
                Err(e) => {
                    let _ = self.db.batch("ROLLBACK");
                    if !e.is_conflict() || conflicts >= CLAIM_CONFLICT_RETRIES {
                        return Err(e);
                    }
                    conflicts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(10 << conflicts));
                }
            }
        }
    }

    fn claim_in_tx(
        &self,
        wave: u32,
        owner: &str,
        lease_ms: i64,
        limit: Option<u32>,
        lock: &str,
    ) -> Result<Race, JournalError> {
        let now = now_ms();
        if let Some(limit) = limit {
            let held = self
                .db
                .row(
                    "SELECT COUNT(*) FROM wave_groups
                      WHERE wave = ? AND state = 'claimed' AND lease_until_ms >= ?",
                    &[wave.into(), now.into()],
                )?
                .map(|r| r.i64(0))
                .transpose()?
                .unwrap_or(0);
            if held >= i64::from(limit) {
                return Ok(Race::Nothing);
            }
        }
        // Run-out claims first (a dead worker's group waits no longer than it must), then
        // queued groups; each through the `(wave, state, grp)` index, so a claim's cost does
        // not grow with the groups already done.
        let mut chosen = None;
        for filter in [
            "state = 'claimed' AND lease_until_ms < ?",
            "state = 'queued' AND lease_until_ms < ?",
        ] {
            let candidates = self.db.query(
                &format!(
                    "SELECT grp, sites, attempts FROM wave_groups
                      WHERE wave = ? AND {filter}
                      ORDER BY grp LIMIT {CANDIDATES}{lock}"
                ),
                &[wave.into(), now.into()],
            )?;
            for row in candidates {
                if !self.over_cap(wave, row.i64(0)?, now, lock)? {
                    chosen = Some(row);
                    break;
                }
            }
            if chosen.is_some() {
                break;
            }
        }
        let Some(row) = chosen else {
            return Ok(Race::Nothing);
        };
        let group = u32::try_from(row.i64(0)?).unwrap_or(0);
        let sites: Vec<String> =
            serde_json::from_str(&row.text(1)?).map_err(|e| JournalError::BadValue {
                journal: self.db.name().to_string(),
                what: "a move group's sites",
                reason: e.to_string(),
            })?;
        let attempts = u32::try_from(row.i64(2)?).unwrap_or(0) + 1;
        // The same condition again, on the row's latest version: on Galera the row lock of the
        // SELECT is the node's own, and another node's claim may have been applied since.
        let r = self.db.exec(
            "UPDATE wave_groups SET state = 'claimed', owner = ?, lease_until_ms = ?,
                    attempts = ?, updated_ms = ?
              WHERE wave = ? AND grp = ? AND state <> 'done' AND lease_until_ms < ?",
            &[
                owner.into(),
                (now + lease_ms).into(),
                attempts.into(),
                now.into(),
                wave.into(),
                group.into(),
                now.into(),
            ],
        )?;
        if r.affected != 1 {
            return Ok(Race::Lost);
        }
        Ok(Race::Won(Claim {
            wave,
            group,
            sites,
            owner: owner.to_string(),
            attempts,
        }))
    }

    /// Extends the claim's lease; `false` when the claim is no longer this owner's (it ran
    /// out and another worker took the group).
    pub fn renew(&self, c: &Claim, lease_ms: i64) -> Result<bool, JournalError> {
        let now = now_ms();
        let r = self.db.exec(
            "UPDATE wave_groups SET lease_until_ms = ?, updated_ms = ?
              WHERE wave = ? AND grp = ? AND owner = ? AND state = 'claimed'",
            &[
                (now + lease_ms).into(),
                now.into(),
                c.wave.into(),
                c.group.into(),
                c.owner.as_str().into(),
            ],
        )?;
        Ok(r.affected == 1)
    }

    /// Marks the claimed group done; `false` when the claim was no longer this owner's.
    pub fn finish(&self, c: &Claim) -> Result<bool, JournalError> {
        let r = self.db.exec(
            "UPDATE wave_groups SET state = 'done', lease_until_ms = 0, updated_ms = ?
              WHERE wave = ? AND grp = ? AND owner = ? AND state = 'claimed'",
            &[
                now_ms().into(),
                c.wave.into(),
                c.group.into(),
                c.owner.as_str().into(),
            ],
        )?;
        Ok(r.affected == 1)
    }

    /// The sites of `wave`'s groups claimed now, live claims and run-out ones alike (a dead
    /// worker's site may be frozen under either): what the workers' watchdog looks at.
    pub fn claimed_sites(&self, wave: u32) -> Result<Vec<String>, JournalError> {
        let mut out = Vec::new();
        for r in self.db.query(
            "SELECT sites FROM wave_groups WHERE wave = ? AND state = 'claimed'",
            &[wave.into()],
        )? {
            let sites: Vec<String> =
                serde_json::from_str(&r.text(0)?).map_err(|e| JournalError::BadValue {
                    journal: self.db.name().to_string(),
                    what: "a move group's sites",
                    reason: e.to_string(),
                })?;
            out.extend(sites);
        }
        Ok(out)
    }

    /// Groups of `wave` by where they are.
    pub fn progress(&self, wave: u32) -> Result<Progress, JournalError> {
        let now = now_ms();
        let mut p = Progress::default();
        for r in self.db.query(
            "SELECT state, lease_until_ms >= ?, COUNT(*) FROM wave_groups WHERE wave = ?
              GROUP BY state, lease_until_ms >= ?",
            &[now.into(), wave.into(), now.into()],
        )? {
            let n = u64::try_from(r.i64(2)?).unwrap_or(0);
            match (r.text(0)?.as_str(), r.i64(1)? != 0) {
                ("queued", _) => p.queued += n,
                ("claimed", true) => p.claimed += n,
                ("claimed", false) => p.expired += n,
                _ => p.done += n,
            }
        }
        Ok(p)
    }
}
