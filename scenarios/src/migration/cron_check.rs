//! `wave_artifacts` and `rollback_artifacts` (issue 20): the sites' cron jobs
//! ([`crate::cron_lab`]) keep running through the wave (and the rollback) and every slot runs
//! exactly once, on the side that owns the site. After the migration the lab's cron daemons
//! are paused (their env file removed) and the runs in progress waited for; then, per site:
//!
//! - **owner**: every run in the journal (`cron-runs/SITE`) ran on the side owning the site
//!   when it started: `old` until its `switch` step, `new` from it, `old` again from a
//!   `rollback-switch` (or an `abort`). A run cannot start while the site is frozen, and the
//!   freeze precedes those steps, so a step's start separates the owners;
//! - **ended well**: every run ended with exit 0 (none `lost`, none still running);
//! - **no slot twice**: on the side that serves the site at the end, the job's rows
//!   (`events` tokens `cron-LOGIN-JOB-SLOT`) and files (`JOB-SLOT.txt`, one line per execution)
//!   are exactly the journal's slots, each file one line naming the side the journal names; on
//!   the other side a row or file may only be one of that side's own runs, or one of the other
//!   side's runs from before that side took the site over (copied by the migration);
//! - **no missing slot**: every due time between the first and the last run has a run, except
//!   those inside one of the site's freeze windows widened by [`EARLY_MS`] before and
//!   [`LATE_MS`] after (see there);
//! - **keeps running**: after each move, at least [`MIN_RUNS_AFTER`] runs on the new owner
//!   before the next move (or the end).
//!
//! Zero lost cron writes is the first half of **no slot twice**: every run of the journal has its
//! row and its file on the final side.

use super::{MigrationReport, Migrator};
use crate::cron_lab::out_dir_on;
use crate::dc_services::mariadb_exec;
use crate::state::{ArtifactsState, LabState};
use migrator::artifacts::cron::Schedule;
use migrator::artifacts::fence::{self, RunRecord, Side};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// A due time can be lost to a freeze only when its `cron-run` finds the site's jobs frozen
/// and the freeze outlasts the next due time. The jobs freeze before the freeze step the
/// journal shows begins: the migrator first waits for the runs in progress, up to one run of
/// the lab's job ([`crate::php_app::CRON_WORK_MS`] plus PHP's start and the row: under 2 s on
/// a loaded 2-core machine). And a due line starts up to ~1 s late (the daemon ticks once a
/// second) and `cron-run` needs up to another second to read the token. So a slot due up to
/// 4 s before the freeze step began can be lost to it, never earlier.
pub const EARLY_MS: u64 = 4_000;
/// A slot due after the unfreeze's end finds the site unfrozen; its step's end is written a
/// moment after the token flips, so 1 s covers the clock read.
pub const LATE_MS: u64 = 1_000;
/// Runs the new owner must show after each move (10 s apart: the tail must be ≥ 25 s).
pub const MIN_RUNS_AFTER: usize = 2;

/// A change of the owner: a `switch` (to `new`), a `rollback-switch` or `abort` (to `old`)
/// step that ended, by its start and end (ms).
#[derive(Debug, Clone, PartialEq)]
pub struct Move {
    pub started_ms: u64,
    pub ended_ms: u64,
    pub to: Side,
}

/// What one side holds of a site's cron writes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Marks {
    /// Slots with a row.
    pub rows: BTreeSet<i64>,
    /// Slots with a file, and the file's lines' first words (the side of each execution).
    pub files: BTreeMap<i64, Vec<String>>,
}

/// Everything the check reads about one site.
#[derive(Debug, Clone)]
pub struct SiteCron {
    pub site: String,
    pub runs: Vec<RunRecord>,
    pub moves: Vec<Move>,
    /// Freeze windows (ms).
    pub freezes: Vec<(u64, u64)>,
    /// The side serving the site at the end.
    pub final_side: Side,
    pub old: Marks,
    pub new: Marks,
}

/// What the check counted for a site (for the report).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counted {
    pub runs_old: usize,
    pub runs_new: usize,
    /// Due times without a run, all inside freezes (or they are violations).
    pub skipped_in_freeze: usize,
}

impl SiteCron {
    fn marks(&self, s: Side) -> &Marks {
        match s {
            Side::Old => &self.old,
            Side::New => &self.new,
        }
    }

    /// The owner at `ms`: old, then each move that started at or before it.
    fn owner_at(&self, ms: i64) -> Side {
        self.moves
            .iter()
            .filter(|m| m.started_ms as i64 <= ms)
            .max_by_key(|m| m.started_ms)
            .map_or(Side::Old, |m| m.to)
    }

    /// Checks the site; violations name the site, the slot and what is wrong.
    pub fn check(&self, schedule: &Schedule) -> (Vec<String>, Counted) {
        let site = &self.site;
        let mut v = Vec::new();
        let mut c = Counted::default();
        let mut by_slot: BTreeMap<i64, &RunRecord> = BTreeMap::new();
        for r in &self.runs {
            match r.side {
                Side::Old => c.runs_old += 1,
                Side::New => c.runs_new += 1,
            }
            if by_slot.insert(r.slot, r).is_some() {
                v.push(format!("{site}: slot {} has two run records", r.slot));
            }
            let owner = self.owner_at(r.started_ms);
            if owner != r.side {
                v.push(format!(
                    "{site}: slot {} ran on the {} side at {} ms, while the {} side owned the site",
                    r.slot,
                    r.side.as_str(),
                    r.started_ms,
                    owner.as_str()
                ));
            }
            if r.exit != Some(0) || r.lost.is_some() || r.ended_ms.is_none() {
                v.push(format!(
                    "{site}: slot {} on the {} side did not end well (exit {:?}, ended {:?}, lost {:?})",
                    r.slot,
                    r.side.as_str(),
                    r.exit,
                    r.ended_ms,
                    r.lost
                ));
            }
        }
        // The final side holds exactly the journal's runs, each once.
        let fin = self.final_side;
        let marks = self.marks(fin);
        for (slot, r) in &by_slot {
            if !marks.rows.contains(slot) {
                v.push(format!(
                    "{site}: slot {slot} (run on {}) has no row on the {} side: a lost cron write",
                    r.side.as_str(),
                    fin.as_str()
                ));
            }
            match marks.files.get(slot) {
                None => v.push(format!(
                    "{site}: slot {slot} (run on {}) has no file on the {} side: a lost cron write",
                    r.side.as_str(),
                    fin.as_str()
                )),
                Some(lines) if lines.len() != 1 => v.push(format!(
                    "{site}: slot {slot}: its file on the {} side was written {} times ({lines:?})",
                    fin.as_str(),
                    lines.len()
                )),
                Some(lines) if lines[0] != r.side.as_str() => v.push(format!(
                    "{site}: slot {slot}: its file on the {} side was written by the {} side, the \
                     journal says {}",
                    fin.as_str(),
                    lines[0],
                    r.side.as_str()
                )),
                Some(_) => {}
            }
        }
        let unjournaled = |slots: Vec<i64>, what: &str, side: Side, v: &mut Vec<String>| {
            for s in slots {
                v.push(format!(
                    "{site}: slot {s} has a {what} on the {} side but no run in the journal \
                     (run outside the fence)",
                    side.as_str()
                ));
            }
        };
        let extra_rows: Vec<i64> = marks
            .rows
            .iter()
            .filter(|s| !by_slot.contains_key(s))
            .copied()
            .collect();
        unjournaled(extra_rows, "row", fin, &mut v);
        let extra_files: Vec<i64> = marks
            .files
            .keys()
            .filter(|s| !by_slot.contains_key(s))
            .copied()
            .collect();
        unjournaled(extra_files, "file", fin, &mut v);
        // The other side: its own runs, or copies of runs from before it took the site over.
        let o = fin.other();
        let allowed = |slot: i64| {
            by_slot.get(&slot).is_some_and(|r| {
                r.side == o
                    || self
                        .moves
                        .iter()
                        .any(|m| m.to == o && r.started_ms < m.started_ms as i64)
            })
        };
        let om = self.marks(o);
        for (slot, what) in om
            .rows
            .iter()
            .map(|s| (*s, "row"))
            .chain(om.files.keys().map(|s| (*s, "file")))
        {
            if !allowed(slot) {
                let ran = by_slot
                    .get(&slot)
                    .map_or("no run in the journal".to_string(), |r| {
                        format!("the journal's run was on the {} side", r.side.as_str())
                    });
                v.push(format!(
                    "{site}: slot {slot} has a {what} on the {} side, which did not own it ({ran})",
                    o.as_str()
                ));
            }
        }
        for (slot, lines) in &om.files {
            if lines.len() > 1 {
                v.push(format!(
                    "{site}: slot {slot}: its file on the {} side was written {} times",
                    o.as_str(),
                    lines.len()
                ));
            }
        }
        // Every due time between the first and the last run, outside the freezes.
        if let (Some(first), Some(last)) = (
            by_slot.keys().next().copied(),
            by_slot.keys().last().copied(),
        ) {
            let mut s = first;
            while let Some(n) = schedule.next_due(s).filter(|n| *n < last) {
                s = n;
                if by_slot.contains_key(&s) {
                    continue;
                }
                let ms = (s * 1000) as u64;
                let frozen = self
                    .freezes
                    .iter()
                    .any(|(a, b)| a.saturating_sub(EARLY_MS) <= ms && ms <= b + LATE_MS);
                if frozen {
                    c.skipped_in_freeze += 1;
                } else {
                    v.push(format!(
                        "{site}: slot {s} has no run and was due outside every freeze window"
                    ));
                }
            }
        } else {
            v.push(format!("{site}: no cron run at all"));
        }
        // Each move's new owner keeps running the job.
        let mut moves = self.moves.clone();
        moves.sort_by_key(|m| m.started_ms);
        for (i, m) in moves.iter().enumerate() {
            let until = moves.get(i + 1).map_or(i64::MAX, |n| n.started_ms as i64);
            let n = self
                .runs
                .iter()
                .filter(|r| {
                    r.side == m.to && r.started_ms >= m.ended_ms as i64 && r.started_ms < until
                })
                .count();
            if n < MIN_RUNS_AFTER {
                v.push(format!(
                    "{site}: {n} run(s) on the {} side after it took the site over at {} ms \
                     (at least {MIN_RUNS_AFTER} expected)",
                    m.to.as_str(),
                    m.ended_ms
                ));
            }
        }
        (v, c)
    }
}

/// Waits up to `timeout` for a run of `site`'s jobs to be in progress; returns it.
pub(super) fn wait_for_run(m: &Migrator, site: &str, timeout: Duration) -> Option<fence::Running> {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        let running = m
            .journal()
            .ok()
            .and_then(|j| fence::token(j.as_ref(), site).ok())
            .and_then(|(_, t)| t.running.into_iter().next());
        if running.is_some() {
            return running;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Stops new runs (the daemons' env file removed) and waits for those in progress to end.
fn pause(a: &ArtifactsState, st: &LabState, m: &Migrator, r: &mut MigrationReport) {
    let _ = std::fs::remove_file(&a.env_file);
    // A line started just before the removal registers its run within a moment.
    std::thread::sleep(Duration::from_secs(2));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let busy: Vec<String> = m
            .journal()
            .ok()
            .map(|j| {
                st.sites
                    .iter()
                    .filter(|s| {
                        fence::token(j.as_ref(), &s.login).is_ok_and(|(_, t)| !t.running.is_empty())
                    })
                    .map(|s| s.login.clone())
                    .collect()
            })
            .unwrap_or_default();
        if busy.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            r.violations.push(format!(
                "cron: runs of {busy:?} still in progress 30 s after the daemons were paused"
            ));
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn lab_side(s: Side) -> crate::state::Side {
    match s {
        Side::Old => crate::state::Side::Old,
        Side::New => crate::state::Side::New,
    }
}

/// What one DC holds of a site's cron writes: rows of its database, files on its filer.
fn read_marks(
    st: &LabState,
    a: &ArtifactsState,
    site: &crate::state::SiteState,
    side: Side,
) -> std::result::Result<Marks, String> {
    let prefix = crate::php_app::cron_token(&site.login, &a.job, 0);
    let prefix = prefix.trim_end_matches('0');
    let rows = mariadb_exec(
        st.dc(lab_side(side)),
        &format!(
            "SELECT token FROM `{}`.events WHERE token LIKE '{prefix}%';",
            site.database
        ),
    )
    .map_err(|e| {
        format!(
            "reading the cron rows of {} on {}: {e}",
            site.database,
            side.as_str()
        )
    })?;
    let mut marks = Marks::default();
    for t in rows.lines().map(str::trim) {
        if let Some(slot) = t.strip_prefix(prefix).and_then(|x| x.parse().ok()) {
            marks.rows.insert(slot);
        }
    }
    let dir = out_dir_on(st, a, lab_side(side), &site.login);
    let file_prefix = format!("{}-", a.job);
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for e in entries.filter_map(|e| e.ok()) {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(slot) = name
                .strip_prefix(&file_prefix)
                .and_then(|x| x.strip_suffix(".txt"))
                .and_then(|x| x.parse::<i64>().ok())
            else {
                continue;
            };
            let text = std::fs::read_to_string(e.path())
                .map_err(|err| format!("{}: {err}", e.path().display()))?;
            let lines = text
                .lines()
                .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
                .collect();
            marks.files.insert(slot, lines);
        }
    }
    Ok(marks)
}

/// The owner's moves of a site from its journal steps.
fn moves_of(steps: &[migrator::journal::StepRecord], site: &str) -> Vec<Move> {
    steps
        .iter()
        .filter(|s| s.site == site)
        .filter_map(|s| {
            let to = match s.phase.as_str() {
                "switch" => Side::New,
                "rollback-switch" | "abort" => Side::Old,
                _ => return None,
            };
            Some(Move {
                started_ms: s.started_ms as u64,
                ended_ms: s.ended_ms? as u64,
                to,
            })
        })
        .collect()
}

/// Pauses the lab's cron daemons, then checks every site (see the module); findings go to
/// `r.violations`, the counts to `r.events`. `final_side` is the side each site must serve from.
pub(super) fn check(
    st: &LabState,
    m: &Migrator,
    final_side: &dyn Fn(&str) -> crate::state::Side,
    r: &mut MigrationReport,
) {
    let Some(a) = &st.artifacts else {
        r.violations
            .push("cron: the lab has no artifacts (`[lab] artifacts = true`)".into());
        return;
    };
    let schedule = match Schedule::parse(&a.schedule) {
        Ok(s) => s,
        Err(e) => {
            r.violations.push(format!("cron: the lab's schedule: {e}"));
            return;
        }
    };
    pause(a, st, m, r);
    let (steps, windows, j) = match (super::steps(m), super::freeze_windows(m), m.journal()) {
        (Ok(s), Ok(w), Ok(j)) => (s, w, j),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            r.violations.push(format!("cron: reading the journal: {e}"));
            return;
        }
    };
    let mut total = Counted::default();
    let mut sites = 0;
    let before = r.violations.len();
    for s in &st.sites {
        let fin = match final_side(&s.login) {
            crate::state::Side::Old => Side::Old,
            crate::state::Side::New => Side::New,
        };
        let runs = match fence::runs(j.as_ref(), &s.login) {
            Ok(v) => v.into_iter().filter(|x| x.job == a.job).collect(),
            Err(e) => {
                r.violations
                    .push(format!("cron: {}: reading its runs: {e}", s.login));
                continue;
            }
        };
        let mut marks = BTreeMap::new();
        for side in [Side::Old, Side::New] {
            match read_marks(st, a, s, side) {
                Ok(mk) => {
                    marks.insert(side.as_str(), mk);
                }
                // The side the site never reached has no database: nothing of it there.
                Err(_) if side != fin && side == Side::New => {
                    marks.insert(side.as_str(), Marks::default());
                }
                Err(e) => r.violations.push(format!("cron: {}: {e}", s.login)),
            }
        }
        let c = SiteCron {
            site: s.login.clone(),
            runs,
            moves: moves_of(&steps, &s.login),
            freezes: windows.get(&s.login).cloned().unwrap_or_default(),
            final_side: fin,
            old: marks.remove("old").unwrap_or_default(),
            new: marks.remove("new").unwrap_or_default(),
        };
        let (v, counted) = c.check(&schedule);
        r.violations
            .extend(v.into_iter().map(|x| format!("cron: {x}")));
        total.runs_old += counted.runs_old;
        total.runs_new += counted.runs_new;
        total.skipped_in_freeze += counted.skipped_in_freeze;
        sites += 1;
    }
    let findings = r.violations.len() - before;
    r.events.push(format!(
        "cron: {sites} sites checked: {} runs on old, {} on new, {} due time(s) skipped inside \
         freezes, {}",
        total.runs_old,
        total.runs_new,
        total.skipped_in_freeze,
        if findings == 0 {
            "every run once, on its owner, its row and file on the serving side".to_string()
        } else {
            format!("{findings} finding(s)")
        }
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_700_000_000; // a multiple of 10

    fn run(slot: i64, side: Side) -> RunRecord {
        RunRecord {
            job: "tick".into(),
            slot,
            side,
            started_ms: slot * 1000 + 300,
            ended_ms: Some(slot * 1000 + 500),
            exit: Some(0),
            lost: None,
        }
    }

    fn marks(runs: &[RunRecord]) -> Marks {
        Marks {
            rows: runs.iter().map(|r| r.slot).collect(),
            files: runs
                .iter()
                .map(|r| (r.slot, vec![r.side.as_str().to_string()]))
                .collect(),
        }
    }

    /// Slots T..T+90 on old, the freeze T+95..T+103 (slot T+100 skipped), switch at T+98,
    /// slots T+110..T+140 on new. old holds its own runs, new everything (copied + its own).
    fn switched() -> SiteCron {
        let mut runs: Vec<RunRecord> = (0..10).map(|i| run(T + 10 * i, Side::Old)).collect();
        let old = marks(&runs);
        runs.extend((11..15).map(|i| run(T + 10 * i, Side::New)));
        SiteCron {
            site: "site0001".into(),
            new: marks(&runs),
            runs,
            moves: vec![Move {
                started_ms: ((T + 98) * 1000) as u64,
                ended_ms: ((T + 99) * 1000) as u64,
                to: Side::New,
            }],
            freezes: vec![(((T + 95) * 1000) as u64, ((T + 103) * 1000) as u64)],
            final_side: Side::New,
            old,
        }
    }

    fn sched() -> Schedule {
        Schedule::parse("*/10 * * * * *").unwrap()
    }

    fn check(s: &SiteCron) -> Vec<String> {
        s.check(&sched()).0
    }

    #[test]
    fn a_clean_switch_passes_and_counts_the_skipped_slot() {
        let s = switched();
        let (v, c) = s.check(&sched());
        assert!(v.is_empty(), "{v:?}");
        assert_eq!(
            c,
            Counted {
                runs_old: 10,
                runs_new: 4,
                skipped_in_freeze: 1
            }
        );
    }

    #[test]
    fn a_run_on_the_side_not_owning_the_site_is_named() {
        let mut s = switched();
        // The old side runs slot T+120 after the switch (its crontab left enabled and the
        // fence ignored): the journal has it on old.
        let i = s.runs.iter().position(|r| r.slot == T + 120).unwrap();
        s.runs[i].side = Side::Old;
        s.old.rows.insert(T + 120);
        s.old.files.insert(T + 120, vec!["old".into()]);
        let v = check(&s);
        assert!(
            v.iter()
                .any(|x| x.contains("slot 1700000120 ran on the old side")
                    && x.contains("new side owned")),
            "{v:?}"
        );
        // The final side's file names the new side, the journal the old one.
        assert!(v.iter().any(|x| x.contains("journal says old")), "{v:?}");
    }

    #[test]
    fn a_slot_run_twice_is_named_by_its_file_or_its_extra_row() {
        let mut s = switched();
        s.new.files.get_mut(&(T + 130)).unwrap().push("new".into());
        let v = check(&s);
        assert!(
            v.iter()
                .any(|x| x.contains("slot 1700000130") && x.contains("written 2 times")),
            "{v:?}"
        );
        // The old side ran a slot after the switch without the journal knowing (no fence).
        let mut s = switched();
        s.old.rows.insert(T + 140);
        let v = check(&s);
        assert!(
            v.iter()
                .any(|x| x.contains("slot 1700000140 has a row on the old side")
                    && x.contains("did not own it")),
            "{v:?}"
        );
        // A row on the final side no run accounts for.
        let mut s = switched();
        s.new.rows.insert(T + 100);
        let v = check(&s);
        assert!(
            v.iter()
                .any(|x| x.contains("slot 1700000100 has a row on the new side but no run")),
            "{v:?}"
        );
    }

    #[test]
    fn a_lost_write_is_named() {
        let mut s = switched();
        s.new.rows.remove(&(T + 40));
        s.new.files.remove(&(T + 120));
        let v = check(&s);
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(v[0].contains("slot 1700000040") && v[0].contains("no row on the new side"));
        assert!(v[1].contains("slot 1700000120") && v[1].contains("no file on the new side"));
    }

    #[test]
    fn a_missing_slot_outside_the_freeze_tolerance_is_named() {
        // Slot T+50 missing: nowhere near the freeze.
        let mut s = switched();
        s.runs.retain(|r| r.slot != T + 50);
        s.old.rows.remove(&(T + 50));
        s.old.files.remove(&(T + 50));
        s.new.rows.remove(&(T + 50));
        s.new.files.remove(&(T + 50));
        let v = check(&s);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].contains("slot 1700000050 has no run"), "{v:?}");
        // Slot T+90, due 5 s before the freeze began: beyond EARLY_MS.
        let mut s = switched();
        s.runs.retain(|r| r.slot != T + 90);
        for m in [&mut s.old, &mut s.new] {
            m.rows.remove(&(T + 90));
            m.files.remove(&(T + 90));
        }
        let v = check(&s);
        assert!(
            v.iter().any(|x| x.contains("slot 1700000090 has no run")),
            "{v:?}"
        );
        // Due 1.5 s before the freeze: within the tolerance.
        let mut s = switched();
        s.freezes = vec![(((T + 91) * 1000 + 500) as u64, ((T + 103) * 1000) as u64)];
        s.runs.retain(|r| r.slot != T + 90);
        for m in [&mut s.old, &mut s.new] {
            m.rows.remove(&(T + 90));
            m.files.remove(&(T + 90));
        }
        let (v, c) = s.check(&sched());
        assert!(v.is_empty(), "{v:?}");
        assert_eq!(c.skipped_in_freeze, 2);
    }

    #[test]
    fn runs_must_go_on_after_each_move_and_end_well() {
        let mut s = switched();
        s.runs.retain(|r| r.slot <= T + 110);
        s.new = marks(&s.runs);
        let v = check(&s);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].contains("1 run(s) on the new side after"), "{v:?}");
        let mut s = switched();
        s.runs[3].exit = Some(1);
        s.runs[4].ended_ms = None;
        let v = check(&s);
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(v.iter().all(|x| x.contains("did not end well")), "{v:?}");
    }

    #[test]
    fn a_rollback_gives_the_site_back_to_the_old_side() {
        // Switch at T+98, rollback at T+148 (freeze T+145..T+152), old runs again from T+160.
        let mut s = switched();
        s.runs.extend((16..19).map(|i| run(T + 10 * i, Side::Old)));
        s.moves.push(Move {
            started_ms: ((T + 148) * 1000) as u64,
            ended_ms: ((T + 149) * 1000) as u64,
            to: Side::Old,
        });
        s.freezes
            .push((((T + 145) * 1000) as u64, ((T + 152) * 1000) as u64));
        s.final_side = Side::Old;
        s.old = marks(&s.runs);
        s.new = marks(&s.runs[..14]);
        let (v, c) = s.check(&sched());
        assert!(v.is_empty(), "{v:?}");
        assert_eq!((c.runs_old, c.runs_new, c.skipped_in_freeze), (13, 4, 2));
        // The new side running a slot after the rollback (its row on new, not journaled there).
        let mut bad = s.clone();
        bad.new.rows.insert(T + 170);
        let v = check(&bad);
        assert!(
            v.iter()
                .any(|x| x.contains("slot 1700000170 has a row on the new side")),
            "{v:?}"
        );
        // The rolled-back site missing a write the new side made (not copied back).
        let mut bad = s.clone();
        bad.old.rows.remove(&(T + 120));
        let v = check(&bad);
        assert!(
            v.iter()
                .any(|x| x.contains("slot 1700000120") && x.contains("no row on the old side")),
            "{v:?}"
        );
    }
}
