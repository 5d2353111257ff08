//! One table's copy inside a database copy: the plan of each table (skip, resume or copy
//! afresh), the rows from the worker's snapshot with committed checkpoints, the finish
//! (deferred indexes, destination checksum, the stream checksum confirmed), and the workers
//! that take tables from a shared queue, largest first.

use crate::db::ddl::{add_missing_indexes, recreate, split_secondary_indexes, SplitDdl};
use crate::db::progress::{scope, Journal, TableCheckpoint, TableReport};
use crate::db::rows::{copy_rows, pk_after, Committed, Loading, Rows};
use crate::db::schema::{self, ctx, ident, DbError, Result, Side, StreamChecksum, TableInfo};
use crate::db::session::session;
use crate::db::snapshot::Snapshot;
use mysql_async::prelude::*;
use mysql_async::{Conn, Opts};
use std::sync::{Arc, Mutex};

/// How one table is (re)created on the destination.
#[derive(Debug, Clone)]
pub(super) struct TablePlan {
    info: TableInfo,
    /// `SHOW CREATE TABLE` on the source, as of the snapshot.
    create: String,
    /// The same without the secondary indexes built after the load, when that applies.
    split: Option<SplitDdl>,
    resume: Option<TableCheckpoint>,
    exists: bool,
}

pub(super) fn save(journal: &Journal, db: &str, table: &str, cp: &TableCheckpoint) -> Result<()> {
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

/// Decides per table: skip (done, or unchanged in delta mode), resume from its checkpoint, or
/// copy afresh; the reports of skipped tables go to `report`.
#[allow(clippy::too_many_arguments)]
pub(super) async fn plan_tables(
    snap: &mut Snapshot,
    ctl: &mut Conn,
    dst_ctl: &mut Conn,
    db: &str,
    delta: bool,
    dst_exists: bool,
    checkpoint_of: &dyn Fn(&str) -> Option<TableCheckpoint>,
    report: &mut Vec<TableReport>,
) -> Result<Vec<TablePlan>> {
    let d = Side::Destination;
    // Tables other tables' foreign keys point at keep their indexes during the load.
    let fk_parents: Vec<String> = ctl
        .exec(
            "SELECT DISTINCT REFERENCED_TABLE_NAME FROM information_schema.REFERENTIAL_CONSTRAINTS \
             WHERE UNIQUE_CONSTRAINT_SCHEMA = ?",
            (db,),
        )
        .await
        .map_err(ctx(Side::Source, || format!("listing foreign keys into `{db}`")))?;
    let mut queue = Vec::new();
    for (t, create) in snap.tables.iter().zip(&snap.ddl) {
        let cp = checkpoint_of(&t.name);
        if cp.as_ref().is_some_and(|c| c.done) {
            report.push(TableReport {
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
        if exists.is_some() && delta && cp.is_none() && dst_exists {
            let s = schema::table_checksum(&mut snap.workers[0], Side::Source, db, t).await?;
            let x = schema::table_checksum(dst_ctl, d, db, t).await?;
            if s == x {
                report.push(TableReport {
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
    Ok(queue)
}

/// Runs the planned tables on the snapshot's workers, largest first; each worker finishes a
/// table (indexes, destination checksum) on a second connection while it copies the next.
pub(super) async fn run_workers(
    mut queue: Vec<TablePlan>,
    snap: Snapshot,
    dst_url: &Opts,
    db: &str,
    journal: &Journal,
    loading: Loading,
) -> Result<Vec<TableReport>> {
    // Ascending: workers `pop` from the end, so the largest tables start first.
    queue.sort_by_key(|q| q.info.approx_bytes);
    let queue = Arc::new(Mutex::new(queue));
    let Snapshot {
        workers,
        mut checkers,
        ..
    } = snap;
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
    let mut reports = Vec::new();
    for task in tasks {
        reports.extend(task.await.expect("copy worker panicked")?);
    }
    Ok(reports)
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
