//! The fence of a site's scheduled jobs: every job runs on exactly one side.
//!
//! The **owner token** (journal checkpoint `cron-fence`/SITE, a [`Token`]) says which side owns
//! the site's jobs, whether they are frozen, and which runs are in progress. It changes only by
//! compare-and-swap ([`JournalStore::swap_checkpoint_raw`]), so a run's start (token read,
//! run registered) is atomic against the cutover's moves:
//! - the freeze sets `frozen` and waits (bounded) for the runs in progress to end ([`settle`]:
//!   a run whose process died is reaped, not waited for; one still running at the deadline is
//!   stopped ([`stop`]) or refuses the switch, see `cutover::cron_fence`);
//! - the switch's commit point sets the owner to `new` (still frozen), the rollback's sets it
//!   back to `old`; an abort puts `old` and unfrozen back;
//! - the unfreeze clears `frozen`.
//!
//! The **run journal** (`cron-runs/SITE`, one [`RunRecord`] per `JOB@SLOT`) is written by
//! compare-and-swap on an absent key: one run per slot, whichever side asks. Refusals are kept
//! in `cron-refused/SITE` (`JOB@SLOT@SIDE`).
//!
//! `migrator cron-run` ([`run`]) is installed on both sides: started by the system's cron at a
//! due time, it waits while the site is frozen (bounded), then runs the job only where the token
//! names its side. A waiter whose slot was overtaken by a newer one while it waited gives way:
//! a job due during the freeze runs once after the unfreeze, on the owning side.

use super::liveness::{Liveness, ProcId};
use crate::journal::{JournalError, JournalStore};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

const TOKEN_SCOPE: &str = "cron-fence";

/// One side of the migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    #[default]
    Old,
    New,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Old => "old",
            Side::New => "new",
        }
    }

    /// The other side.
    pub fn other(self) -> Side {
        match self {
            Side::Old => Side::New,
            Side::New => Side::Old,
        }
    }
}

impl std::str::FromStr for Side {
    type Err = String;
    fn from_str(s: &str) -> Result<Side, String> {
        match s {
            "old" => Ok(Side::Old),
            "new" => Ok(Side::New),
            o => Err(format!("{o:?}: a side is `old` or `new`")),
        }
    }
}

/// The owner token of a site's jobs. Absent in the journal: owned by `old`, not frozen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Token {
    pub owner: Side,
    pub frozen: bool,
    /// Runs started and not yet ended (the freeze waits for them).
    #[serde(default)]
    pub running: Vec<Running>,
}

/// A run in progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Running {
    pub job: String,
    pub side: Side,
    pub slot: i64,
    pub started_ms: i64,
    /// The process that runs it ([`super::liveness`]): a run whose process died is reaped instead
    /// of waited for. Absent (an in-process run): waited for until the deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcId>,
    /// The last beat of `cron-run` while the job runs ([`beat`], every [`HEARTBEAT`]): a run
    /// on another host (its process not checkable from here) whose beats stopped for
    /// [`STALE_AFTER`] is taken for dead and reaped, instead of holding the freeze to its
    /// deadline and refusing the switch. Absent (no beat yet, an older `cron-run`): waited for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_ms: Option<i64>,
}

/// How often `cron-run` beats while its job runs ([`beat`]).
pub const HEARTBEAT: Duration = Duration::from_secs(5);
/// A run not known alive (another host) whose last beat is older than this is dead.
pub const STALE_AFTER: Duration = Duration::from_secs(20);

/// One run of a job, by slot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub job: String,
    /// The due time (unix seconds) this run is for.
    pub slot: i64,
    pub side: Side,
    pub started_ms: i64,
    pub ended_ms: Option<i64>,
    pub exit: Option<i32>,
    /// Why it ended without an exit status (its process died, or was stopped at a freeze).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost: Option<String>,
}

/// Why a side did not run a slot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Refusal {
    pub job: String,
    pub slot: i64,
    pub side: Side,
    pub at_ms: i64,
    pub reason: String,
}

/// What `cron-run` did.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Ran {
        exit: i32,
    },
    /// Not run here: the reason (another side owns the site, a newer slot overtook it, the
    /// freeze outlasted the wait).
    Refused(String),
    /// The slot was already run (by `side`).
    AlreadyRan {
        side: Side,
    },
}

fn runs_scope(site: &str) -> String {
    format!("cron-runs/{site}")
}
fn refused_scope(site: &str) -> String {
    format!("cron-refused/{site}")
}

fn bad(j: &dyn JournalStore, what: &'static str, e: serde_json::Error) -> JournalError {
    JournalError::BadValue {
        journal: j.name().to_string(),
        what,
        reason: e.to_string(),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The site's token as stored (raw, for a swap) and parsed.
pub fn token(j: &dyn JournalStore, site: &str) -> Result<(Option<String>, Token), JournalError> {
    let raw = j.checkpoint_raw(TOKEN_SCOPE, site)?;
    let t = match &raw {
        Some(r) => serde_json::from_str(r).map_err(|e| bad(j, "cron owner token", e))?,
        None => Token::default(),
    };
    Ok((raw, t))
}

/// Changes the token by compare-and-swap, retried until no other writer came between; `f`
/// returns `false` to leave it as it is. Returns the token as it ends.
fn update(
    j: &mut dyn JournalStore,
    site: &str,
    mut f: impl FnMut(&mut Token) -> bool,
) -> Result<Token, JournalError> {
    loop {
        let (raw, mut t) = token(j, site)?;
        if !f(&mut t) {
            return Ok(t);
        }
        let json = serde_json::to_string(&t).map_err(|e| bad(j, "cron owner token", e))?;
        if j.swap_checkpoint_raw(TOKEN_SCOPE, site, raw.as_deref(), &json)? {
            return Ok(t);
        }
    }
}

/// The freeze: no job of the site starts from now on, on either side.
pub fn freeze(j: &mut dyn JournalStore, site: &str) -> Result<(), JournalError> {
    update(j, site, |t| !std::mem::replace(&mut t.frozen, true)).map(|_| ())
}

/// A commit point: `side` owns the site's jobs (still frozen until [`unfreeze`]).
pub fn set_owner(j: &mut dyn JournalStore, site: &str, side: Side) -> Result<(), JournalError> {
    update(j, site, |t| std::mem::replace(&mut t.owner, side) != side).map(|_| ())
}

/// The unfreeze: the owner's jobs run again.
pub fn unfreeze(j: &mut dyn JournalStore, site: &str) -> Result<(), JournalError> {
    update(j, site, |t| std::mem::replace(&mut t.frozen, false)).map(|_| ())
}

/// Waits up to `deadline` for the site's runs in progress to end; returns those still running
/// then (see [`settle`]).
pub fn wait_idle(
    j: &mut dyn JournalStore,
    site: &str,
    deadline: Duration,
) -> Result<Vec<Running>, JournalError> {
    settle(j, site, deadline).map(|s| s.left)
}

/// What [`settle`] found.
#[derive(Debug, Default)]
pub struct Settled {
    /// Still running at the deadline.
    pub left: Vec<Running>,
    /// Registered as running, but their process had died: taken out of the token, their run
    /// record ended as `lost`.
    pub dead: Vec<Running>,
}

/// Waits up to `deadline` for the site's runs in progress to end, reaping those whose process
/// died ([`reap`]) rather than waiting for them.
pub fn settle(
    j: &mut dyn JournalStore,
    site: &str,
    deadline: Duration,
) -> Result<Settled, JournalError> {
    let end = Instant::now() + deadline;
    let mut dead = Vec::new();
    loop {
        dead.extend(reap(j, site)?);
        let (_, t) = token(j, site)?;
        if t.running.is_empty() || Instant::now() >= end {
            return Ok(Settled {
                left: t.running,
                dead,
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Records a beat (now) on the site's runs in progress registered by `process` (the calling
/// `cron-run`); returns whether it found one. Called every [`HEARTBEAT`] while the job runs.
pub fn beat(j: &mut dyn JournalStore, site: &str, process: &ProcId) -> Result<bool, JournalError> {
    let now = now_ms();
    let mut found = false;
    update(j, site, |t| {
        found = false;
        for r in t.running.iter_mut() {
            if r.process.as_ref() == Some(process) {
                r.heartbeat_ms = Some(now);
                found = true;
            }
        }
        found
    })?;
    Ok(found)
}

/// Why a registered run is taken for dead, if it is: its process died (same host and boot,
/// [`super::liveness`]), or, not known alive from here, its beats stopped ([`STALE_AFTER`]).
fn death(r: &Running, now: i64) -> Option<String> {
    let pid = r.process.as_ref().map_or(0, |p| p.pid);
    match r.process.as_ref().map(ProcId::liveness) {
        Some(Liveness::Dead) => {
            return Some(format!("its process (pid {pid}) died before it ended"))
        }
        Some(Liveness::Alive) => return None,
        _ => {}
    }
    let h = r.heartbeat_ms?;
    let silent = now - h;
    (silent > STALE_AFTER.as_millis() as i64).then(|| {
        format!(
            "no heartbeat from its process (pid {pid}, another host) for {} s",
            silent / 1000
        )
    })
}

/// Takes the runs taken for dead ([`death`]) out of the token and ends their run records as
/// `lost`, saying why; returns them.
pub fn reap(j: &mut dyn JournalStore, site: &str) -> Result<Vec<Running>, JournalError> {
    let now = now_ms();
    let is_dead = |r: &Running| death(r, now).is_some();
    let mut dead = Vec::new();
    update(j, site, |t| {
        dead = t.running.iter().filter(|r| is_dead(r)).cloned().collect();
        t.running.retain(|r| !is_dead(r));
        !dead.is_empty()
    })?;
    for r in &dead {
        let key = format!("{}@{}", r.job, r.slot);
        let Some(raw) = j.checkpoint_raw(&runs_scope(site), &key)? else {
            continue;
        };
        let mut rec: RunRecord =
            serde_json::from_str(&raw).map_err(|e| bad(j, "cron run record", e))?;
        if rec.ended_ms.is_some() || rec.side != r.side || rec.started_ms != r.started_ms {
            continue;
        }
        rec.ended_ms = Some(now_ms());
        rec.lost = death(r, now);
        let json = serde_json::to_string(&rec).map_err(|e| bad(j, "cron run record", e))?;
        j.swap_checkpoint_raw(&runs_scope(site), &key, Some(&raw), &json)?;
    }
    Ok(dead)
}

/// Stops a run still going past the freeze's wait: its process group gets SIGTERM, then
/// SIGKILL after `grace` ([`ProcId::stop`]); once it is dead its record ends as
/// `lost`. The error says why it cannot be stopped from here (another host, no process).
pub fn stop(
    j: &mut dyn JournalStore,
    site: &str,
    r: &Running,
    grace: Duration,
) -> Result<Result<&'static str, String>, JournalError> {
    let Some(p) = &r.process else {
        return Ok(Err("no process recorded for it".into()));
    };
    let how = match p.stop(grace) {
        Ok(how) => how,
        Err(e) => return Ok(Err(e)),
    };
    reap(j, site)?;
    Ok(Ok(how))
}

/// Every run of the site's jobs, by `JOB@SLOT`.
pub fn runs(j: &dyn JournalStore, site: &str) -> Result<Vec<RunRecord>, JournalError> {
    j.checkpoints(&runs_scope(site))?
        .into_iter()
        .map(|(_, v)| serde_json::from_str(&v).map_err(|e| bad(j, "cron run record", e)))
        .collect()
}

/// Every refusal recorded for the site's jobs.
pub fn refusals(j: &dyn JournalStore, site: &str) -> Result<Vec<Refusal>, JournalError> {
    j.checkpoints(&refused_scope(site))?
        .into_iter()
        .map(|(_, v)| serde_json::from_str(&v).map_err(|e| bad(j, "cron refusal", e)))
        .collect()
}

/// One invocation of a job on one side (see the module).
pub struct Invocation<'a> {
    pub site: &'a str,
    pub job: &'a str,
    pub side: Side,
    pub schedule: &'a super::cron::Schedule,
    /// How long to wait while the site is frozen before giving the slot up.
    pub max_wait: Duration,
    pub poll: Duration,
    /// The process running the job, registered with it ([`ProcId::me`] in `cron-run`).
    pub process: Option<ProcId>,
}

impl Invocation<'_> {
    fn refuse(
        &self,
        j: &mut dyn JournalStore,
        slot: i64,
        reason: String,
    ) -> Result<Outcome, JournalError> {
        let r = Refusal {
            job: self.job.into(),
            slot,
            side: self.side,
            at_ms: now_ms(),
            reason: reason.clone(),
        };
        let key = format!("{}@{slot}@{}", self.job, self.side.as_str());
        let json = serde_json::to_string(&r).map_err(|e| bad(j, "cron refusal", e))?;
        j.put_checkpoint_raw(&refused_scope(self.site), &key, &json)?;
        Ok(Outcome::Refused(reason))
    }

    /// Runs `job` through the fence for the slot due at `now_s` (unix seconds): waits while
    /// frozen, refuses on the non-owner, claims the slot, runs, records the end.
    pub fn run(
        &self,
        j: &mut dyn JournalStore,
        now_s: i64,
        job: impl FnOnce() -> std::io::Result<i32>,
    ) -> Result<std::io::Result<Outcome>, JournalError> {
        let Some(slot) = self.schedule.last_due(now_s) else {
            return self
                .refuse(
                    j,
                    now_s,
                    format!("no due time of {:?} before now", self.schedule.text),
                )
                .map(Ok);
        };
        let give_up = Instant::now() + self.max_wait;
        let mut waited = false;
        let started_ms = loop {
            let (_, t) = token(j, self.site)?;
            if t.frozen {
                if Instant::now() >= give_up {
                    let why = format!(
                        "the site stayed frozen longer than the wait ({} s)",
                        self.max_wait.as_secs()
                    );
                    return self.refuse(j, slot, why).map(Ok);
                }
                waited = true;
                std::thread::sleep(self.poll);
                continue;
            }
            if t.owner != self.side {
                let why = format!("the {} side owns the site", t.owner.as_str());
                return self.refuse(j, slot, why).map(Ok);
            }
            if waited {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64);
                if let Some(newer) = self.schedule.last_due(now).filter(|n| *n > slot) {
                    let why = format!("the freeze ran past slot {newer}, which runs instead");
                    return self.refuse(j, slot, why).map(Ok);
                }
            }
            // Registered only while still unfrozen and ours: atomic against the freeze.
            let started = now_ms();
            let mut ok = false;
            let me = Running {
                job: self.job.into(),
                side: self.side,
                slot,
                started_ms: started,
                process: self.process.clone(),
                heartbeat_ms: None,
            };
            update(j, self.site, |t| {
                ok = !t.frozen && t.owner == self.side;
                if ok {
                    t.running.push(me.clone());
                }
                ok
            })?;
            if ok {
                break started;
            }
        };
        let rec = RunRecord {
            job: self.job.into(),
            slot,
            side: self.side,
            started_ms,
            ended_ms: None,
            exit: None,
            lost: None,
        };
        let key = format!("{}@{slot}", self.job);
        let json = serde_json::to_string(&rec).map_err(|e| bad(j, "cron run record", e))?;
        let claimed = j.swap_checkpoint_raw(&runs_scope(self.site), &key, None, &json)?;
        if !claimed {
            self.unregister(j, slot, started_ms)?;
            let prev: RunRecord = j
                .checkpoint_raw(&runs_scope(self.site), &key)?
                .map(|v| serde_json::from_str(&v))
                .transpose()
                .map_err(|e| bad(j, "cron run record", e))?
                .unwrap_or(rec);
            return Ok(Ok(Outcome::AlreadyRan { side: prev.side }));
        }
        let result = job();
        let done = RunRecord {
            ended_ms: Some(now_ms()),
            exit: Some(*result.as_ref().unwrap_or(&-1)),
            ..rec
        };
        let json = serde_json::to_string(&done).map_err(|e| bad(j, "cron run record", e))?;
        j.put_checkpoint_raw(&runs_scope(self.site), &key, &json)?;
        self.unregister(j, slot, started_ms)?;
        Ok(result.map(|exit| Outcome::Ran { exit }))
    }

    fn unregister(
        &self,
        j: &mut dyn JournalStore,
        slot: i64,
        started_ms: i64,
    ) -> Result<(), JournalError> {
        update(j, self.site, |t| {
            let n = t.running.len();
            t.running.retain(|r| {
                !(r.job == self.job
                    && r.side == self.side
                    && r.slot == slot
                    && r.started_ms == started_ms)
            });
            t.running.len() != n
        })
        .map(|_| ())
    }
}
