//! A database kept following its source by change capture ([`crate::db::capture`]), in the
//! two steps a cutover takes:
//! - [`sync`], outside the freeze: the bulk copy the first time (its snapshot's binary log
//!   position starts the capture), tables the capture flagged copied again, then the changes
//!   since the last step applied up to the source's position when the step began;
//! - [`tail`], inside the freeze (writes paused and drained): the changes up to the source's
//!   position now, the tables without a primary key copied again (the old method, their size
//!   is the freeze's cost), the triggers and events created last.
//!
//! A source whose changes cannot be captured ([`capturable`] says why) is not handled here:
//! the caller copies as before (delta copies) and says so.

use crate::db::capture::position::{not_capturable, source_position};
use crate::db::capture::stream::run;
use crate::db::capture::{self, load_state, save_state, BinlogPos, CaptureState, TABLE_LIST};
use crate::db::copy::{copy_database, CopyOptions};
use crate::db::progress::Journal;
use crate::db::schema::{self, ctx, ident, DbError, Result, Side};
use crate::db::session::session;
use mysql_async::prelude::*;
use mysql_async::{Conn, Opts};

/// What one step did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct FollowReport {
    pub database: String,
    /// Bytes copied (bulk copy, re-copies) plus binary log bytes applied.
    pub bytes: u64,
    /// Row changes applied from the log.
    pub rows_applied: u64,
    /// Tables copied in this step (all of them the first time), with why.
    pub copied: Vec<(String, String)>,
    /// Applied up to here.
    pub applied: BinlogPos,
    /// Tables whose changes are not captured, with why (no primary key, say): copied again
    /// in the freeze.
    pub uncaptured: Vec<(String, String)>,
    /// Approximate bytes of the uncaptured tables: what the freeze copies.
    pub uncaptured_bytes: u64,
    pub seconds: f64,
}

/// Why the source's changes cannot be captured (`None`: they can).
pub async fn capturable(src: &Opts) -> Result<Option<String>> {
    let mut c = Conn::new(src.clone())
        .await
        .map_err(ctx(Side::Source, || "connecting".into()))?;
    let r = not_capturable(&mut c).await;
    let _ = c.disconnect().await;
    r
}

/// The step outside the freeze (see the module documentation).
pub async fn sync(
    src: &Opts,
    dst: &Opts,
    db: &str,
    journal: Journal,
    threads: usize,
) -> Result<FollowReport> {
    let t0 = std::time::Instant::now();
    let mut report = FollowReport {
        database: db.to_string(),
        ..Default::default()
    };
    let state = match load_state(&journal, db)? {
        Some(s) => s,
        None => {
            first_copy(
                src,
                dst,
                db,
                &journal,
                threads,
                &mut report,
                false,
                "bulk copy",
            )
            .await?
        }
    };
    drop_deferred_objects(dst, db).await?;
    // Tables flagged by an earlier step are copied again first; tables the capture flags now
    // (DDL in the log, say) are copied again in this step too, a few rounds at most.
    let mut state = state;
    for _ in 0..3 {
        state = recopy_flagged(src, dst, db, &journal, threads, state, &mut report).await?;
        let target = position_now(src).await?;
        catch_up(src, dst, db, &journal, threads, target, &mut report).await?;
        state = load_state(&journal, db)?.unwrap_or(state);
        if state.recopy.is_empty() {
            break;
        }
    }
    let state = load_state(&journal, db)?.unwrap_or(state);
    report.uncaptured = uncaptured_list(&state);
    report.seconds = t0.elapsed().as_secs_f64();
    Ok(report)
}

/// What a `follow-db` run would do now (`--dry-run`), read from the journal and the source's
/// current binary log position; nothing is copied, applied or recorded.
#[derive(Debug, Default, serde::Serialize)]
pub struct FollowPlan {
    pub database: String,
    /// No capture state in the journal: the run starts with a full copy.
    pub first_copy: bool,
    /// Applied on the destination up to here (none before the first copy).
    pub applied: Option<BinlogPos>,
    /// The source's position now: a run applies changes up to at least here.
    pub source_now: BinlogPos,
    /// Tables a run copies again first, with why.
    pub recopy: Vec<(String, String)>,
    /// Tables not followed from the log (copied inside the freeze, by `--tail`), with why.
    pub uncaptured: Vec<(String, String)>,
}

/// [`FollowPlan`] of `db`: read-only on the journal and the source.
pub async fn plan(src: &Opts, db: &str, journal: &Journal) -> Result<FollowPlan> {
    let state = load_state(journal, db)?;
    let source_now = position_now(src).await?;
    let list = |m: &std::collections::BTreeMap<String, String>| {
        m.iter().map(|(t, w)| (t.clone(), w.clone())).collect()
    };
    Ok(FollowPlan {
        database: db.to_string(),
        first_copy: state.is_none(),
        applied: state.as_ref().map(|s| s.applied.clone()),
        source_now,
        recopy: state.as_ref().map(|s| list(&s.recopy)).unwrap_or_default(),
        uncaptured: state
            .as_ref()
            .map(|s| list(&s.uncaptured))
            .unwrap_or_default(),
    })
}

async fn position_now(src: &Opts) -> Result<BinlogPos> {
    let mut conn = Conn::new(src.clone())
        .await
        .map_err(ctx(Side::Source, || "connecting".into()))?;
    let p = source_position(&mut conn).await;
    let _ = conn.disconnect().await;
    p
}

fn uncaptured_list(state: &CaptureState) -> Vec<(String, String)> {
    state
        .uncaptured
        .iter()
        .map(|(t, w)| (t.clone(), w.clone()))
        .collect()
}

/// Puts each of `names` (as the source has them now) among the captured tables, followed
/// from `at`, or the uncaptured ones with why; names the source no longer has are dropped.
async fn classify(
    src: &Opts,
    db: &str,
    names: &[String],
    at: &BinlogPos,
    state: &mut CaptureState,
) -> Result<()> {
    let mut c = Conn::new(src.clone())
        .await
        .map_err(ctx(Side::Source, || "connecting".into()))?;
    let metas = capture::values::table_metas(&mut c, db).await?;
    let _ = c.disconnect().await;
    state
        .tables
        .retain(|t, _| metas.iter().any(|m| m.name == *t));
    state
        .uncaptured
        .retain(|t, _| metas.iter().any(|m| m.name == *t));
    for n in names {
        state.tables.remove(n);
        state.uncaptured.remove(n);
        let Some(m) = metas.iter().find(|m| m.name == *n) else {
            continue;
        };
        match m.uncapturable() {
            None => {
                state.tables.insert(n.clone(), at.clone());
            }
            Some(why) => {
                state.uncaptured.insert(n.clone(), why);
            }
        }
    }
    Ok(())
}

/// The step inside the freeze (see the module documentation).
pub async fn tail(
    src: &Opts,
    dst: &Opts,
    db: &str,
    journal: Journal,
    threads: usize,
) -> Result<FollowReport> {
    let t0 = std::time::Instant::now();
    let mut report = FollowReport {
        database: db.to_string(),
        ..Default::default()
    };
    let state = load_state(&journal, db)?.ok_or_else(|| DbError::Capture {
        db: db.to_string(),
        reason: "no capture to finish: the database was not synced by capture".into(),
    })?;
    let state = recopy_flagged(src, dst, db, &journal, threads, state, &mut report).await?;
    let mut conn = session(src, Side::Source, None).await?;
    let target = source_position(&mut conn).await?;
    catch_up(src, dst, db, &journal, threads, target, &mut report).await?;
    let state = load_state(&journal, db)?.unwrap_or(state);
    if !state.uncaptured.is_empty() {
        let opts = CopyOptions {
            threads,
            tables: Some(state.uncaptured.keys().cloned().collect()),
            capture: true,
            ..Default::default()
        };
        let r = copy_database(src, dst, db, journal.clone(), &opts).await?;
        add_copied(&mut report, &r, "not captured: copied again in the freeze");
    }
    // The triggers and events the copy left for the end.
    let mut objects = schema::objects(&mut conn, db).await?;
    objects.views.clear();
    objects
        .others
        .retain(|(kind, ..)| *kind == "TRIGGER" || *kind == "EVENT");
    let mut d = session(dst, Side::Destination, Some(db)).await?;
    schema::create_objects(&mut d, &objects).await?;
    let _ = d.disconnect().await;
    let _ = conn.disconnect().await;
    report.uncaptured = uncaptured_list(&state);
    report.seconds = t0.elapsed().as_secs_f64();
    Ok(report)
}

/// The bulk copy that starts a capture: every table, the snapshot's position journaled as
/// the capture's start.
/// With `delta`, tables whose checksums already agree are kept (a capture started afresh).
#[allow(clippy::too_many_arguments)]
async fn first_copy(
    src: &Opts,
    dst: &Opts,
    db: &str,
    journal: &Journal,
    threads: usize,
    report: &mut FollowReport,
    delta: bool,
    why: &str,
) -> Result<CaptureState> {
    let opts = CopyOptions {
        threads,
        delta,
        capture: true,
        ..Default::default()
    };
    let r = copy_database(src, dst, db, journal.clone(), &opts).await?;
    add_copied(report, &r, why);
    let at = r.binlog_position.clone().ok_or_else(|| DbError::Capture {
        db: db.to_string(),
        reason: "the copy reported no binary log position".into(),
    })?;
    let mut state = CaptureState {
        applied: at.clone(),
        ..Default::default()
    };
    let names: Vec<String> = r.tables.iter().map(|t| t.table.clone()).collect();
    classify(src, db, &names, &at, &mut state).await?;
    report.uncaptured_bytes = r
        .tables
        .iter()
        .filter(|t| state.uncaptured.contains_key(&t.table))
        .map(|t| t.bytes)
        .sum();
    save_state(journal, db, &state)?;
    Ok(state)
}

/// Copies again the tables the capture flagged (DDL, images that no longer fit, a table list
/// that changed); each starts following from its new snapshot.
async fn recopy_flagged(
    src: &Opts,
    dst: &Opts,
    db: &str,
    journal: &Journal,
    threads: usize,
    mut state: CaptureState,
    report: &mut FollowReport,
) -> Result<CaptureState> {
    if state.recopy.is_empty() {
        return Ok(state);
    }
    let mut names: Vec<String> = state
        .recopy
        .keys()
        .filter(|t| t.as_str() != TABLE_LIST)
        .cloned()
        .collect();
    // Tables the source has and the capture does not know (created, or renamed to) are
    // copied too, whether or not the log named them.
    let mut c = Conn::new(src.clone())
        .await
        .map_err(ctx(Side::Source, || "connecting".into()))?;
    let on_source = capture::values::table_metas(&mut c, db).await?;
    let _ = c.disconnect().await;
    for m in &on_source {
        let known = state.tables.contains_key(&m.name) || state.uncaptured.contains_key(&m.name);
        if !known && !names.contains(&m.name) {
            names.push(m.name.clone());
        }
    }
    let opts = CopyOptions {
        threads,
        tables: Some(names.clone()),
        capture: true,
        ..Default::default()
    };
    let r = copy_database(src, dst, db, journal.clone(), &opts).await?;
    let at = r.binlog_position.clone().ok_or_else(|| DbError::Capture {
        db: db.to_string(),
        reason: "the re-copy reported no binary log position".into(),
    })?;
    for (t, why) in &state.recopy {
        if t != TABLE_LIST {
            report
                .copied
                .push((t.clone(), format!("copied again: {why}")));
        }
    }
    for t in &names {
        if !state.recopy.contains_key(t) {
            report.copied.push((t.clone(), "new on the source".into()));
        }
    }
    report.bytes += r
        .tables
        .iter()
        .filter(|t| t.copied)
        .map(|t| t.bytes)
        .sum::<u64>();
    // Tables gone from the source are gone from the destination too (the copy dropped them).
    classify(src, db, &names, &at, &mut state).await?;
    state.recopy.clear();
    save_state(journal, db, &state)?;
    Ok(state)
}

/// Runs the capture until `target` is applied; a binary log the source no longer has means
/// every table is copied again (a delta copy: unchanged tables are kept) and followed anew.
async fn catch_up(
    src: &Opts,
    dst: &Opts,
    db: &str,
    journal: &Journal,
    threads: usize,
    target: BinlogPos,
    report: &mut FollowReport,
) -> Result<()> {
    match run(src, dst, db, journal.clone(), &target).await {
        Ok(st) => {
            report.bytes += st.bytes;
            report.rows_applied += st.rows;
            report.applied = st.applied;
            Ok(())
        }
        Err(DbError::BinlogGone { at, message, .. }) => {
            capture::clear_state(journal, db)?;
            report.copied.push((
                "*".into(),
                format!("the binary log at {at} is gone ({message}): every table checked and copied again"),
            ));
            let why = "copied again (binary log gone)";
            let state = first_copy(src, dst, db, journal, threads, report, true, why).await?;
            report.applied = state.applied;
            Ok(())
        }
        Err(e) => Err(e),
    }
}

fn add_copied(report: &mut FollowReport, r: &crate::db::copy::CopyReport, why: &str) {
    for t in &r.tables {
        if t.copied {
            report.bytes += t.bytes;
            report.copied.push((t.table.clone(), why.to_string()));
        }
    }
}

/// Triggers and events on the destination would act on captured rows (whose effects the log
/// already holds): they exist there only from the freeze's tail on. A step outside the freeze
/// after an aborted freeze removes them again.
async fn drop_deferred_objects(dst: &Opts, db: &str) -> Result<()> {
    let d = Side::Destination;
    let mut c = session(dst, d, None).await?;
    let triggers: Vec<String> = c
        .exec(
            "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = ?",
            (db,),
        )
        .await
        .map_err(ctx(d, || format!("listing triggers of `{db}`")))?;
    let events: Vec<String> = c
        .exec(
            "SELECT EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA = ?",
            (db,),
        )
        .await
        .map_err(ctx(d, || format!("listing events of `{db}`")))?;
    for (kind, names) in [("TRIGGER", triggers), ("EVENT", events)] {
        for n in names {
            c.query_drop(format!("DROP {kind} IF EXISTS {}.{}", ident(db), ident(&n)))
                .await
                .map_err(ctx(d, || format!("dropping {kind} `{n}` while following")))?;
        }
    }
    let _ = c.disconnect().await;
    Ok(())
}
