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

use crate::db::ddl::{add_missing_indexes, recreate, split_secondary_indexes, SplitDdl};
use crate::db::rows::{copy_rows, load_method, pk_after, Committed, LoadMethod, Loading, Rows};
use crate::db::schema::{self, ctx, ident, DbError, Result, Side, StreamChecksum, TableInfo};
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
    fn last_pk_bytes(&self) -> Option<Vec<Option<Vec<u8>>>> {
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

type Journal = Arc<Mutex<dyn JournalStore + Send>>;

fn scope(db: &str) -> String {
    format!("copy-db:{db}")
}

async fn session(url: &Opts, side: Side, db: Option<&str>) -> Result<Conn> {
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

/// How one table is (re)created on the destination.
#[derive(Debug, Clone)]
struct TablePlan {
    info: TableInfo,
    /// `SHOW CREATE TABLE` on the source, as of the snapshot.
    create: String,
    /// The same without the secondary indexes built after the load, when that applies.
    split: Option<SplitDdl>,
    resume: Option<TableCheckpoint>,
    exists: bool,
}

fn save(journal: &Journal, db: &str, table: &str, cp: &TableCheckpoint) -> Result<()> {
    let json = serde_json::to_string(cp).expect("checkpoint serializes");
    journal
        .lock()
        .expect("journal lock")
        .put_checkpoint_raw(&scope(db), table, &json)?;
    Ok(())
}

/// Copies one table's rows from the worker's snapshot, honouring and writing checkpoints;
/// `finish_table` does the rest.
async fn copy_table(
    src: &mut Conn,
    dst: &mut Conn,
    db: &str,
    p: &TablePlan,
    journal: &Journal,
    loading: Loading,
) -> Result<Copied> {
    let t = &p.info;
    let t_copy = std::time::Instant::now();
    let mut report = TableReport {
        table: t.name.clone(),
        copied: true,
        action: "copied".into(),
        ..Default::default()
    };
    let q = ident(db) + "." + &ident(&t.name);
    let cols = t.read_exprs();
    let resume_at = p
        .resume
        .as_ref()
        .filter(|_| p.exists && !t.pk.is_empty())
        .and_then(|cp| cp.last_pk_bytes());
    let mut cp = match (&resume_at, &p.resume) {
        (Some(last), Some(cp)) => {
            // Rows past the checkpoint may be a partial chunk: remove them, then continue.
            dst.query_drop(format!("DELETE FROM {q} WHERE {}", pk_after(t, last)))
                .await
                .map_err(ctx(Side::Destination, || format!("trimming `{}`", t.name)))?;
            report.action = "resumed".into();
            cp.clone()
        }
        _ => {
            recreate(dst, db, &t.name, &p.create, p.split.as_ref(), p.exists).await?;
            TableCheckpoint::default()
        }
    };
    let select = if t.pk.is_empty() {
        format!("SELECT {} FROM {q}", cols.join(","))
    } else {
        let order = t.pk.iter().map(|c| ident(c)).collect::<Vec<_>>().join(",");
        let filter = match &resume_at {
            Some(v) => format!("WHERE {}", pk_after(t, v)),
            None => String::new(),
        };
        format!(
            "SELECT {} FROM {q} {filter} ORDER BY {order}",
            cols.join(",")
        )
    };
    let has_pk = !t.pk.is_empty();
    let mut on_commit = |c: &Committed| -> Result<()> {
        cp.rows += c.rows;
        if !has_pk {
            return Ok(());
        }
        // The buffer is committed on the destination (autocommit): now record it.
        cp.last_pk = c.last_pk.as_ref().map(|v| {
            v.iter()
                .map(|x| x.as_ref().map(hex::encode))
                .collect::<Vec<_>>()
        });
        cp.pk_hex = true;
        save(journal, db, &t.name, &cp)
    };
    // A table read whole from the snapshot is checksummed on the way; a resumed one is not,
    // nor one without snapshot reads (MyISAM, Aria: the source server's checksum, read later,
    // also sees writes made during the stream).
    let whole = resume_at.is_none() && t.snapshot_reads;
    let mut stream_sum = whole.then(|| StreamChecksum::new(t));
    let rows = Rows {
        db,
        table: t,
        select,
        loading,
    };
    let (n, bytes) = copy_rows(src, dst, rows, &mut on_commit, &mut stream_sum).await?;
    report.rows = n;
    report.bytes = bytes;
    report.copy_seconds = t_copy.elapsed().as_secs_f64();
    Ok(Copied {
        report,
        cp,
        plan: p.clone(),
        stream_checksum: stream_sum.map(|s| s.render()),
    })
}

/// A table whose rows are in; the deferred indexes and both checksums are still to come (they
/// run while the worker copies the next table).
struct Copied {
    report: TableReport,
    cp: TableCheckpoint,
    plan: TablePlan,
    /// The source checksum computed over the streamed rows, when the table was read whole.
    stream_checksum: Option<String>,
}

/// Builds the destination's deferred indexes and checksums it; compares with the source's
/// checksum taken from the stream or, failing that, from a second session on the same
/// snapshot (run while the destination works); marks the table done.
async fn finish_table(
    src: &mut Conn,
    dst: &mut Conn,
    db: &str,
    c: Copied,
    journal: &Journal,
) -> Result<TableReport> {
    let Copied {
        mut report,
        mut cp,
        plan,
        stream_checksum,
    } = c;
    let t = &plan.info;
    let t_verify = std::time::Instant::now();
    let streamed = stream_checksum.is_some();
    let source = async {
        match stream_checksum {
            Some(s) => Ok(s),
            None => schema::table_checksum(src, Side::Source, db, t).await,
        }
    };
    // The source (its snapshot) and the destination at once. The destination's checksum
    // first, while the rows just loaded are still in its buffer pool; then the indexes.
    let (sc, dc) = tokio::join!(source, async {
        let sum = schema::table_checksum(dst, Side::Destination, db, t).await?;
        add_missing_indexes(dst, db, &t.name, plan.split.as_ref())
            .await
            .inspect_err(|_| {
                // Rows that break a unique index (a resume across two snapshots can bring a
                // value twice): the next run copies this table from scratch.
                let _ = save(journal, db, &t.name, &TableCheckpoint::default());
            })?;
        Ok::<_, DbError>(sum)
    });
    report.destination_checksum = dc?;
    let (sc, from) = match sc? {
        s if streamed => {
            confirm_stream_checksum(src, db, t, s, &report.destination_checksum).await?
        }
        s => (s, "server"),
    };
    report.source_checksum = sc;
    report.source_checksum_from = from.into();
    report.verify_seconds = t_verify.elapsed().as_secs_f64();
    if report.source_checksum != report.destination_checksum {
        // Whatever the cause, the next run must copy this table from scratch.
        save(journal, db, &t.name, &TableCheckpoint::default())?;
        return Err(DbError::ChecksumMismatch {
            table: t.name.clone(),
            src: report.source_checksum.clone(),
            dst: report.destination_checksum.clone(),
        });
    }
    cp.done = true;
    cp.checksum = Some(report.source_checksum.clone());
    save(journal, db, &t.name, &cp)?;
    Ok(report)
}

/// The source checksum to compare with `destination`: the stream's when it matches, else the
/// source server's on the same snapshot (a value whose text form is not its string form would
/// make the stream's differ; a real difference shows in both).
async fn confirm_stream_checksum(
    src: &mut Conn,
    db: &str,
    t: &TableInfo,
    stream: String,
    destination: &str,
) -> Result<(String, &'static str)> {
    if stream == destination {
        return Ok((stream, "stream"));
    }
    let server = schema::table_checksum(src, Side::Source, db, t).await?;
    Ok((server, "server"))
}

/// Copies database `db` from `src` to `dst` (see the module documentation).
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
    let (charset, collation) = schema::schema_charset(&mut ctl, Side::Source, db)
        .await?
        .ok_or_else(|| DbError::NoSuchDatabase { db: db.to_string() })?;
    let tables = schema::tables(&mut ctl, Side::Source, db).await?;
    let users = schema::user_statements(&mut ctl, db).await?;
    let objects = schema::objects(&mut ctl, db).await?;
    report.users = users.iter().map(|(u, _)| u.clone()).collect();
    report.views = objects.views.len();
    report.other_objects = objects.others.len();
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
        for t in &tables {
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
    let d = Side::Destination;
    for (_, stmts) in &users {
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
            charset,
            collation
        ))
        .await
        .map_err(ctx(d, || format!("creating database `{db}`")))?;
    dst_ctl
        .query_drop(format!("USE {}", ident(db)))
        .await
        .map_err(ctx(d, || format!("USE `{db}`")))?;

    // Triggers left on the destination by an earlier run would fire on copied rows: drop them
    // now, they are recreated at the end (the destination takes no writes before cutover).
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

    // Snapshot: writes held for the moment every worker opens its snapshot.
    let threads = opts.threads.max(1).min(tables.len().max(1));
    if !tables.is_empty() {
        let locks: Vec<String> = tables
            .iter()
            .map(|t| format!("{}.{} READ", ident(db), ident(&t.name)))
            .collect();
        ctl.query_drop(format!("LOCK TABLES {}", locks.join(", ")))
            .await
            .map_err(ctx(Side::Source, || {
                "LOCK TABLES … READ for the snapshot".into()
            }))?;
    }
    // Two snapshot sessions per worker: one streams rows, the other checksums the table before
    // while the first streams the next one.
    let mut workers = Vec::new();
    for _ in 0..2 * threads {
        let mut s = session(src_url, Side::Source, Some(db)).await?;
        s.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            .await
            .map_err(ctx(Side::Source, || "isolation level".into()))?;
        s.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
            .await
            .map_err(ctx(Side::Source, || {
                "START TRANSACTION WITH CONSISTENT SNAPSHOT".into()
            }))?;
        // Values as stored, each in its column's charset: no conversion on either side.
        s.query_drop("SET character_set_results = binary")
            .await
            .map_err(ctx(Side::Source, || "binary results".into()))?;
        workers.push(s);
    }
    let mut checkers = workers.split_off(threads);
    // DDL as of the snapshot (AUTO_INCREMENT included).
    let mut ddl = Vec::new();
    for t in &tables {
        let row: Option<(String, String)> = ctl
            .query_first(format!(
                "SHOW CREATE TABLE {}.{}",
                ident(db),
                ident(&t.name)
            ))
            .await
            .map_err(ctx(Side::Source, || {
                format!("SHOW CREATE TABLE `{}`", t.name)
            }))?;
        ddl.push(row.map(|r| r.1).unwrap_or_default());
    }
    if !tables.is_empty() {
        ctl.query_drop("UNLOCK TABLES")
            .await
            .map_err(ctx(Side::Source, || "UNLOCK TABLES".into()))?;
    }

    // Tables other tables' foreign keys point at keep their indexes during the load.
    let fk_parents: Vec<String> = ctl
        .exec(
            "SELECT DISTINCT REFERENCED_TABLE_NAME FROM information_schema.REFERENTIAL_CONSTRAINTS \
             WHERE UNIQUE_CONSTRAINT_SCHEMA = ?",
            (db,),
        )
        .await
        .map_err(ctx(Side::Source, || format!("listing foreign keys into `{db}`")))?;
    // Decide per table: skip (done / unchanged), resume, or copy afresh.
    let mut queue = Vec::new();
    for (t, create) in tables.iter().zip(&ddl) {
        let cp = checkpoint_of(&t.name);
        if cp.as_ref().is_some_and(|c| c.done) {
            report.tables.push(TableReport {
                table: t.name.clone(),
                action: "already done".into(),
                source_checksum: cp.and_then(|c| c.checksum).unwrap_or_default(),
                ..Default::default()
            });
            continue;
        }
        let exists: Option<String> = dst_ctl
            .exec_first(
                "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                (db, t.name.as_str()),
            )
            .await
            .map_err(ctx(d, || format!("looking for `{}`", t.name)))?;
        if exists.is_some() && opts.delta && cp.is_none() && dst_exists {
            let s = schema::table_checksum(&mut workers[0], Side::Source, db, t).await?;
            let x = schema::table_checksum(&mut dst_ctl, d, db, t).await?;
            if s == x {
                report.tables.push(TableReport {
                    table: t.name.clone(),
                    action: "unchanged".into(),
                    source_checksum: s,
                    destination_checksum: x,
                    ..Default::default()
                });
                continue;
            }
        }
        // Secondary indexes are built after the load, unless foreign keys are involved.
        let split = (!t.pk.is_empty() && !fk_parents.contains(&t.name))
            .then(|| split_secondary_indexes(create))
            .flatten();
        queue.push(TablePlan {
            info: t.clone(),
            create: create.clone(),
            split,
            resume: cp,
            exists: exists.is_some(),
        });
    }

    // Workers take tables from a shared queue, largest first.
    // Ascending: workers `pop` from the end, so the largest tables start first.
    queue.sort_by_key(|q| q.info.approx_bytes);
    let queue = Arc::new(Mutex::new(queue));
    let mut tasks = Vec::new();
    for mut src in workers {
        let mut check = checkers.pop();
        let queue = queue.clone();
        let journal = journal.clone();
        let dst_url = dst_url.clone();
        let db = db.to_string();
        tasks.push(tokio::spawn(async move {
            let mut dst = session(&dst_url, Side::Destination, Some(&db)).await?;
            let mut done = Vec::new();
            // At most one table finishing (indexes, destination checksum) on a second
            // destination connection while this worker copies the next one.
            type Finishing = tokio::task::JoinHandle<(Conn, Result<TableReport>)>;
            let mut finishing: Option<Finishing> = None;
            loop {
                let next = queue.lock().expect("queue lock").pop();
                let Some(plan) = next else { break };
                let copied = copy_table(&mut src, &mut dst, &db, &plan, &journal, loading).await?;
                if let Some(f) = finishing.take() {
                    let (c, r) = f.await.expect("finishing task panicked");
                    check = Some(c);
                    done.push(r?);
                }
                let mut c = check.take().expect("checksum session is back");
                let (dst_url, db, journal) = (dst_url.clone(), db.clone(), journal.clone());
                finishing = Some(tokio::spawn(async move {
                    let r = async {
                        let mut d = session(&dst_url, Side::Destination, Some(&db)).await?;
                        finish_table(&mut c, &mut d, &db, copied, &journal).await
                    }
                    .await;
                    (c, r)
                }));
            }
            if let Some(f) = finishing.take() {
                let (_, r) = f.await.expect("finishing task panicked");
                done.push(r?);
            }
            let _ = src.query_drop("COMMIT").await;
            Ok::<_, DbError>(done)
        }));
    }
    for task in tasks {
        let r = task.await.expect("copy worker panicked")?;
        report.tables.extend(r);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The stream checksum equals the server's for the rows streamed (NULLs, binary bytes,
    /// an empty table, NOT NULL columns without flags, rows of NULLs only), and a stream checksum that does not match the destination is replaced
    /// by the source server's own.
    #[tokio::test]
    async fn stream_checksum_agrees_with_the_server_and_falls_back_to_it() {
        let m = testkit::MariaDb::start().unwrap();
        m.exec(
            "CREATE DATABASE d; CREATE TABLE d.t (id INT PRIMARY KEY, a VARBINARY(8), b TEXT, \
             c DOUBLE); INSERT INTO d.t VALUES (1, UNHEX('001F0A'), 'x', NULL), \
             (2, NULL, NULL, NULL), (3, '', 'é', 2.5); CREATE TABLE d.empty (id INT); \
             CREATE TABLE d.notnull (a INT NOT NULL, b VARCHAR(5) NOT NULL); \
             INSERT INTO d.notnull VALUES (1, ''), (2, 'x'); CREATE TABLE d.nulls (a INT, b INT); \
             INSERT INTO d.nulls VALUES (NULL, NULL), (NULL, 1), (1, NULL);",
        )
        .unwrap();
        let mut c = Conn::new(Opts::from_url(&m.admin_url()).unwrap())
            .await
            .unwrap();
        c.query_drop("SET character_set_results = binary")
            .await
            .unwrap();
        for t in schema::tables(&mut c, Side::Source, "d").await.unwrap() {
            let server = schema::table_checksum(&mut c, Side::Source, "d", &t)
                .await
                .unwrap();
            let rows: Vec<mysql_async::Row> = c
                .query(format!("SELECT * FROM d.{}", ident(&t.name)))
                .await
                .unwrap();
            let mut sum = StreamChecksum::new(&t);
            for r in rows {
                let vals = r.unwrap();
                sum.add_row(vals.iter().map(|v| match v {
                    mysql_async::Value::Bytes(b) => Some(b.as_slice()),
                    _ => None,
                }));
            }
            assert_eq!(sum.render(), server, "{}", t.name);
            let ok = confirm_stream_checksum(&mut c, "d", &t, sum.render(), &server);
            assert_eq!(ok.await.unwrap(), (server.clone(), "stream"));
            let bad = confirm_stream_checksum(&mut c, "d", &t, "1:1:1".into(), &server);
            assert_eq!(bad.await.unwrap(), (server, "server"));
        }
        c.disconnect().await.unwrap();
    }
}
