//! The consistent snapshot of a database copy: a short `LOCK TABLES … READ` on the control
//! connection while every worker opens `START TRANSACTION WITH CONSISTENT SNAPSHOT`, so all
//! workers read the same instant, and each table's `SHOW CREATE TABLE` as of that instant.

use crate::db::capture::position::snapshot_position;
use crate::db::capture::BinlogPos;
use crate::db::schema::{ctx, ident, Result, Side, TableInfo};
use crate::db::session::session;
use mysql_async::prelude::*;
use mysql_async::{Conn, Opts};

/// Sessions reading one instant of the source.
pub(super) struct Snapshot {
    pub tables: Vec<TableInfo>,
    /// `SHOW CREATE TABLE` of each table (same order), AUTO_INCREMENT included.
    pub ddl: Vec<String>,
    /// One per worker: streams rows.
    pub workers: Vec<Conn>,
    /// One per worker: checksums a table while its worker streams the next one.
    pub checkers: Vec<Conn>,
    /// The snapshot's binary log position, when asked for.
    pub position: Option<BinlogPos>,
}

/// Opens `threads` pairs of snapshot sessions on `db` (writes held for the moment they open).
pub(super) async fn open(
    ctl: &mut Conn,
    src_url: &Opts,
    db: &str,
    tables: Vec<TableInfo>,
    threads: usize,
    with_position: bool,
) -> Result<Snapshot> {
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
    // Read inside a snapshot's transaction while the tables are still locked: the position of
    // the instant every worker reads.
    let position = match (with_position, workers.first_mut()) {
        (true, Some(w)) => Some(snapshot_position(w).await?),
        _ => None,
    };
    let checkers = workers.split_off(threads);
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
    Ok(Snapshot {
        tables,
        ddl,
        workers,
        checkers,
        position,
    })
}
