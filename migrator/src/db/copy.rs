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

use crate::db::rows::{load_method, LoadMethod};
use crate::db::schema::{self, ctx, ident, DbError, Result, Side, TableInfo};
use crate::db::{snapshot, table};
use crate::journal::JournalStore;
use mysql_async::prelude::*;
use mysql_async::{Conn, Opts};
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone)]
pub struct CopyOptions {
    pub threads: usize,
    pub delta: bool,
    pub dry_run: bool,
    /// How rows reach the destination; `None`: the fastest the server offers
    /// ([`crate::db::rows::load_method`]).
    pub load_method: Option<LoadMethod>,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct TableReport {
    pub table: String,
    pub copied: bool,
    /// Why it was (not) copied: `copied`, `unchanged`, `resumed`, `already done`, `would copy`.
    pub action: String,
    pub rows: u64,
    pub bytes: u64,
    pub source_checksum: String,
    pub destination_checksum: String,
    /// Where the source checksum came from: `stream` (computed over the rows as they were
    /// copied, the table read whole from the snapshot), `server` (a checksum query on the
    /// snapshot: a resumed table, or a stream checksum that did not match), or empty.
    pub source_checksum_from: String,
    /// Seconds spent copying rows (and the source checksum), and finishing afterwards
    /// (secondary indexes built after the load, destination checksum).
    pub copy_seconds: f64,
    pub verify_seconds: f64,
}

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CopyReport {
    pub database: String,
    pub dry_run: bool,
    pub users: Vec<String>,
    pub tables: Vec<TableReport>,
    pub views: usize,
    pub other_objects: usize,
    pub seconds: f64,
    /// How rows reach the destination (chosen, or forced, before anything is written).
    pub load_method: Option<LoadMethod>,
}

/// Committed progress of one table.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Default)]
pub struct TableCheckpoint {
    /// Last primary key copied, when the table has one: hex of the raw bytes when `pk_hex`,
    /// else text (checkpoints written before values travelled as raw bytes).
    pub last_pk: Option<Vec<Option<String>>>,
    pub rows: u64,
    pub done: bool,
    pub checksum: Option<String>,
    #[serde(default)]
    pub pk_hex: bool,
}

impl TableCheckpoint {
    /// The resume point as raw bytes.
    pub(super) fn last_pk_bytes(&self) -> Option<Vec<Option<Vec<u8>>>> {
        let v = self.last_pk.as_ref()?;
        v.iter()
            .map(|x| match x {
                None => Some(None),
                Some(s) if self.pk_hex => hex::decode(s).ok().map(Some),
                Some(s) => Some(Some(s.as_bytes().to_vec())),
            })
            .collect()
    }
}

pub(super) type Journal = Arc<Mutex<dyn JournalStore + Send>>;

pub(super) fn scope(db: &str) -> String {
    format!("copy-db:{db}")
}

pub(super) async fn session(url: &Opts, side: Side, db: Option<&str>) -> Result<Conn> {
    let mut c = Conn::new(url.clone())
        .await
        .map_err(ctx(side, || "connecting".to_string()))?;
    c.query_drop(
        "SET NAMES utf8mb4, time_zone = '+00:00', sql_mode = 'NO_AUTO_VALUE_ON_ZERO', \
         foreign_key_checks = 0, unique_checks = 0",
    )
    .await
    .map_err(ctx(side, || "setting up the session".to_string()))?;
    if let Some(db) = db {
        c.query_drop(format!("USE {}", ident(db)))
            .await
            .map_err(ctx(side, || format!("USE `{db}`")))?;
    }
    Ok(c)
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
    report.users = source.users.iter().map(|(u, _)| u.clone()).collect();
    report.views = source.objects.views.len();
    report.other_objects = source.objects.others.len();
    let resume: Vec<(String, String)> = journal
        .lock()
        .expect("journal lock")
        .checkpoints(&scope(db))?;
    let checkpoint_of = |name: &str| -> Option<TableCheckpoint> {
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
    let threads = opts.threads.max(1).min(source.tables.len().max(1));
    let mut snap = snapshot::open(&mut ctl, src_url, db, source.tables, threads).await?;
    let queue = table::plan_tables(
        &mut snap,
        &mut ctl,
        &mut dst_ctl,
        db,
        opts.delta,
        dst_exists,
        &checkpoint_of,
        &mut report.tables,
    )
    .await?;
    let copied = table::run_workers(queue, snap, dst_url, db, &journal, loading).await?;
    report.tables.extend(copied);
    schema::create_objects(&mut dst_ctl, &source.objects).await?;
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
    /// Account name and the statements that recreate it (with its password hash).
    users: Vec<(String, Vec<String>)>,
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
    for (_, stmts) in &source.users {
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

/// Compares every table's checksum on both sides; returns the tables that differ, with both.
pub async fn verify_database(src_url: &Opts, dst_url: &Opts, db: &str) -> Result<Vec<String>> {
    let mut s = session(src_url, Side::Source, None).await?;
    let mut d = session(dst_url, Side::Destination, None).await?;
    let src_tables = schema::tables(&mut s, Side::Source, db).await?;
    let dst_tables = schema::tables(&mut d, Side::Destination, db).await?;
    let mut diffs = Vec::new();
    for t in &src_tables {
        if !dst_tables.iter().any(|x| x.name == t.name) {
            diffs.push(format!("table `{}`: only on source", t.name));
            continue;
        }
        let a = schema::table_checksum(&mut s, Side::Source, db, t).await?;
        let b = schema::table_checksum(&mut d, Side::Destination, db, t).await?;
        if a != b {
            diffs.push(format!(
                "table `{}`: checksum source {a} vs destination {b} (rows:sum:xor)",
                t.name
            ));
        }
    }
    for t in &dst_tables {
        if !src_tables.iter().any(|x| x.name == t.name) {
            diffs.push(format!("table `{}`: only on destination", t.name));
        }
    }
    Ok(diffs)
}
