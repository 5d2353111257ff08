//! Database copy: one database from a source server to a destination server.
//!
//! Order: accounts (same password hash) and the database (same charset and collation); a short
//! `LOCK TABLES … READ` on one source connection while every worker opens
//! `START TRANSACTION WITH CONSISTENT SNAPSHOT`, so all workers read the same instant; tables
//! copied in parallel by the workers, chunked by primary key (tables without one are copied
//! whole); triggers, views, routines and events last, so triggers do not fire on copied rows.
//! Every table is checksummed on both sides after its copy.
//!
//! Resume: after each chunk is committed on the destination, the journal gets the chunk's last
//! primary key (scope `copy-db:<db>`); a table done gets its checksum. A re-run skips tables
//! done, deletes rows past the checkpoint of a table in progress (they may be a partial chunk)
//! and continues from there. The re-run reads a new snapshot: the final delta pass during the
//! freeze is what makes both sides equal.
//!
//! Delta mode: tables whose checksums are equal on both sides are left alone; the others are
//! emptied and copied again.

use crate::db::capture::BinlogPos;
use crate::db::progress::{scope, Journal};
pub use crate::db::progress::{TableCheckpoint, TableReport};
use crate::db::rows::{load_method, LoadMethod};
use crate::db::schema::{self, ctx, ident, DbError, Result, Side, TableInfo};
use crate::db::session::session;
use crate::db::{snapshot, table};
use mysql_async::prelude::*;
use mysql_async::{Conn, Opts};

#[derive(Debug, Clone, Default)]
pub struct CopyOptions {
    pub threads: usize,
    pub delta: bool,
    pub dry_run: bool,
    /// How rows reach the destination; `None`: the fastest the server offers
    /// ([`crate::db::rows::load_method`]).
    pub load_method: Option<LoadMethod>,
    /// Only these tables, copied afresh (a capture's re-copy); destination tables gone from
    /// the source are dropped. `None`: every table.
    pub tables: Option<Vec<String>>,
    /// Changes will be captured from the binary log after this copy: the snapshot's binary
    /// log position is reported, and triggers and events are left for the end of the capture
    /// (a trigger on the destination would fire on captured rows, which the log already
    /// holds the effects of).
    pub capture: bool,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CopyReport {
    pub database: String,
    pub dry_run: bool,
    pub users: Vec<String>,
    /// Grants and accounts of the source not replayed (other databases, global privileges,
    /// roles, passwordless network accounts), each with its account and why.
    pub users_skipped: Vec<String>,
    pub tables: Vec<TableReport>,
    pub views: usize,
    pub other_objects: usize,
    pub seconds: f64,
    /// How rows reach the destination (chosen, or forced, before anything is written).
    pub load_method: Option<LoadMethod>,
    /// The snapshot's binary log position (with [`CopyOptions::capture`]).
    pub binlog_position: Option<BinlogPos>,
}

/// Copies database `db` from `src` to `dst` (see the module documentation), stage by stage:
/// the source's description, the destination's accounts and database, the snapshot, the plan
/// of each table, the workers, the objects last.
pub async fn copy_database(
    src_url: &Opts,
    dst_url: &Opts,
    db: &str,
    journal: Journal,
    opts: &CopyOptions,
) -> Result<CopyReport> {
    let t0 = std::time::Instant::now();
    let mut report = CopyReport {
        database: db.to_string(),
        dry_run: opts.dry_run,
        ..Default::default()
    };
    let mut ctl = session(src_url, Side::Source, None).await?;
    let source = describe_source(&mut ctl, db).await?;
    report.users = source
        .users
        .accounts
        .iter()
        .map(|(u, _)| u.clone())
        .collect();
    report.users_skipped = source.users.skipped.clone();
    report.views = source.objects.views.len();
    report.other_objects = source.objects.others.len();
    let resume: Vec<(String, String)> = journal
        .lock()
        .expect("journal lock")
        .checkpoints(&scope(db))?;
    let checkpoint_of = |name: &str| -> Option<TableCheckpoint> {
        if opts.tables.is_some() {
            return None; // copied afresh
        }
        resume
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| serde_json::from_str(v).ok())
    };

    let mut dst_ctl = session(dst_url, Side::Destination, None).await?;
    // Before anything is written: a forced method the server cannot take is refused here.
    let loading = load_method(&mut dst_ctl, opts.load_method).await?;
    report.load_method = Some(loading.method);
    let dst_exists = schema::schema_charset(&mut dst_ctl, Side::Destination, db)
        .await?
        .is_some();
    if opts.dry_run {
        for t in &source.tables {
            let done = checkpoint_of(&t.name).is_some_and(|c| c.done);
            report.tables.push(TableReport {
                table: t.name.clone(),
                copied: false,
                action: if done { "already done" } else { "would copy" }.into(),
                rows: t.approx_rows,
                bytes: t.approx_bytes,
                ..Default::default()
            });
        }
        report.seconds = t0.elapsed().as_secs_f64();
        return Ok(report);
    }
    prepare_destination(&mut dst_ctl, db, &source).await?;
    let mut objects = source.objects;
    if opts.capture {
        objects
            .others
            .retain(|(kind, ..)| *kind != "TRIGGER" && *kind != "EVENT");
    }
    let mut tables = source.tables;
    if let Some(only) = &opts.tables {
        drop_gone_tables(&mut dst_ctl, db, &tables).await?;
        tables.retain(|t| only.contains(&t.name));
    }
    let threads = opts.threads.max(1).min(tables.len().max(1));
    let mut snap = snapshot::open(&mut ctl, src_url, db, tables, threads, opts.capture).await?;
    if let Some(now) = &snap.position {
        // A resumed copy reads a newer snapshot than the tables an earlier run finished: the
        // capture starts at the earliest (replaying a little is harmless, missing is not).
        report.binlog_position = Some(earliest_position(&journal, db, now)?);
    }
    let queue = table::plan_tables(
        &mut snap,
        &mut ctl,
        &mut dst_ctl,
        db,
        opts.delta && opts.tables.is_none(),
        dst_exists,
        &checkpoint_of,
        &mut report.tables,
    )
    .await?;
    let copied = table::run_workers(queue, snap, dst_url, db, &journal, loading).await?;
    report.tables.extend(copied);
    schema::create_objects(&mut dst_ctl, &objects).await?;
    report.tables.sort_by(|a, b| a.table.cmp(&b.table));
    // The copy is complete: the next run starts from a fresh snapshot (or a delta).
    journal
        .lock()
        .expect("journal lock")
        .clear_checkpoints(&scope(db))?;
    report.seconds = t0.elapsed().as_secs_f64();
    Ok(report)
}

/// What the source holds, read before the snapshot.
struct Source {
    charset: String,
    collation: String,
    tables: Vec<TableInfo>,
    /// The accounts and the statements that recreate them (with their password hashes).
    users: schema::UserCopy,
    objects: schema::Objects,
}

async fn describe_source(ctl: &mut Conn, db: &str) -> Result<Source> {
    let (charset, collation) = schema::schema_charset(ctl, Side::Source, db)
        .await?
        .ok_or_else(|| DbError::NoSuchDatabase { db: db.to_string() })?;
    Ok(Source {
        charset,
        collation,
        tables: schema::tables(ctl, Side::Source, db).await?,
        users: schema::user_statements(ctl, db).await?,
        objects: schema::objects(ctl, db).await?,
    })
}

/// The accounts (same hash) and the database (same charset and collation) on the destination;
/// triggers an earlier run left there are dropped (they would fire on copied rows; they are
/// recreated at the end, and the destination takes no writes before cutover).
async fn prepare_destination(dst_ctl: &mut Conn, db: &str, source: &Source) -> Result<()> {
    let d = Side::Destination;
    for (_, stmts) in &source.users.accounts {
        for s in stmts {
            dst_ctl.query_drop(s.as_str()).await.map_err(ctx(d, || {
                "creating an account (statement not shown: it holds a password hash)".into()
            }))?;
        }
    }
    dst_ctl
        .query_drop(format!(
            "CREATE DATABASE IF NOT EXISTS {} CHARACTER SET {} COLLATE {}",
            ident(db),
            source.charset,
            source.collation
        ))
        .await
        .map_err(ctx(d, || format!("creating database `{db}`")))?;
    dst_ctl
        .query_drop(format!("USE {}", ident(db)))
        .await
        .map_err(ctx(d, || format!("USE `{db}`")))?;
    let old_triggers: Vec<String> = dst_ctl
        .exec(
            "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = ?",
            (db,),
        )
        .await
        .map_err(ctx(d, || format!("listing triggers of `{db}`")))?;
    for t in old_triggers {
        dst_ctl
            .query_drop(format!("DROP TRIGGER IF EXISTS {}", ident(&t)))
            .await
            .map_err(ctx(d, || format!("dropping trigger `{t}` for the copy")))?;
    }
    Ok(())
}

/// The snapshot position of this copy's first run (journaled, scope `copy-db:<db>`, key
/// `@binlog`, cleared with the copy's other checkpoints when it completes).
fn earliest_position(journal: &Journal, db: &str, now: &BinlogPos) -> Result<BinlogPos> {
    let mut j = journal.lock().expect("journal lock");
    let earlier: Option<BinlogPos> = j
        .checkpoint_raw(&scope(db), BINLOG_KEY)?
        .and_then(|s| serde_json::from_str(&s).ok());
    match earlier {
        Some(e) if e <= *now => Ok(e),
        _ => {
            let json = serde_json::to_string(now).expect("position serializes");
            j.put_checkpoint_raw(&scope(db), BINLOG_KEY, &json)?;
            Ok(now.clone())
        }
    }
}

/// Not a table name (tables cannot hold `@` unquoted… they can quoted, so the key also has a
/// slash, which MariaDB refuses in table names).
const BINLOG_KEY: &str = "@binlog/position";

/// Drops destination tables of `db` the source no longer has (a capture saw the table list
/// change).
async fn drop_gone_tables(dst_ctl: &mut Conn, db: &str, source: &[TableInfo]) -> Result<()> {
    let d = Side::Destination;
    let on_dst: Vec<String> = dst_ctl
        .exec(
            "SELECT TABLE_NAME FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = ? AND TABLE_TYPE = 'BASE TABLE'",
            (db,),
        )
        .await
        .map_err(ctx(d, || format!("listing tables of `{db}`")))?;
    for t in on_dst {
        if !source.iter().any(|s| s.name == t) {
            dst_ctl
                .query_drop(format!("DROP TABLE IF EXISTS {}.{}", ident(db), ident(&t)))
                .await
                .map_err(ctx(d, || format!("dropping `{t}` (gone from the source)")))?;
        }
    }
    Ok(())
}

/// Compares every table's checksum on both sides; returns the tables that differ, with both.
pub async fn verify_database(src_url: &Opts, dst_url: &Opts, db: &str) -> Result<Vec<String>> {
    let mut s = session(src_url, Side::Source, None).await?;
    let mut d = session(dst_url, Side::Destination, None).await?;
    verify_sessions(&mut s, &mut d, db).await
}

/// [`verify_database`] on open sessions (one may be inside a snapshot).
pub async fn verify_sessions(s: &mut Conn, d: &mut Conn, db: &str) -> Result<Vec<String>> {
    Ok(verify_sessions_sums(s, d, db).await?.0)
}

/// [`verify_sessions`], also returning the source's checksum of every table it compared (the
/// cutover journals them: the old side's state at the switch, which a bundle records).
pub async fn verify_sessions_sums(
    s: &mut Conn,
    d: &mut Conn,
    db: &str,
) -> Result<(Vec<String>, std::collections::BTreeMap<String, String>)> {
    let src_tables = schema::tables(s, Side::Source, db).await?;
    let dst_tables = schema::tables(d, Side::Destination, db).await?;
    let mut diffs = Vec::new();
    let mut sums = std::collections::BTreeMap::new();
    for t in &src_tables {
        if !dst_tables.iter().any(|x| x.name == t.name) {
            diffs.push(format!("table `{}`: only on source", t.name));
            continue;
        }
        let a = schema::table_checksum(s, Side::Source, db, t).await?;
        let b = schema::table_checksum(d, Side::Destination, db, t).await?;
        if a != b {
            diffs.push(format!(
                "table `{}`: checksum source {a} vs destination {b} (rows:sum:xor)",
                t.name
            ));
        }
        sums.insert(t.name.clone(), a);
    }
    for t in &dst_tables {
        if !src_tables.iter().any(|x| x.name == t.name) {
            diffs.push(format!("table `{}`: only on destination", t.name));
        }
    }
    Ok((diffs, sums))
}
