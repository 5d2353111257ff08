//! The destination side of a capture: row changes applied in the source's order, idempotent
//! by primary key (`REPLACE` of the full after-image, `DELETE` by the before-image's key), in
//! destination transactions that end at source transaction boundaries.

pub(super) use crate::db::capture::values::Unfit;
use crate::db::capture::values::{literal, Literal, TableMeta};
use crate::db::schema::{ctx, Result, Side};
use crate::db::session::session;
use mysql_async::binlog::events::RowsEventData;
use mysql_async::binlog::row::BinlogRow;
use mysql_async::prelude::*;
use mysql_async::{Conn, Opts};

/// Rows per `REPLACE` statement.
const ROWS_PER_STATEMENT: usize = 200;

/// The destination connection of a capture, with its open transaction.
pub(super) struct Applier {
    conn: Conn,
    db: String,
    in_txn: bool,
    /// Row changes applied in the open transaction.
    pub pending_rows: u64,
}

impl Applier {
    pub async fn open(dst: &Opts, db: &str) -> Result<Applier> {
        let mut conn = session(dst, Side::Destination, Some(db)).await?;
        // Literals carry the log's bytes: no conversion; unique keys checked (REPLACE relies
        // on them); no triggers exist on the destination while it is captured into.
        conn.query_drop(
            "SET character_set_client = binary, character_set_connection = binary, \
             unique_checks = 1",
        )
        .await
        .map_err(ctx(Side::Destination, || {
            "setting up the capture session".into()
        }))?;
        Ok(Applier {
            conn,
            db: db.to_string(),
            in_txn: false,
            pending_rows: 0,
        })
    }

    async fn exec(&mut self, sql: String, what: &str) -> Result<()> {
        if !self.in_txn {
            self.conn
                .query_drop("BEGIN")
                .await
                .map_err(ctx(Side::Destination, || "BEGIN".into()))?;
            self.in_txn = true;
        }
        let what = what.to_string();
        self.conn
            .query_drop(sql)
            .await
            .map_err(ctx(Side::Destination, move || what))
    }

    /// Commits the open transaction, if any.
    pub async fn commit(&mut self) -> Result<()> {
        if self.in_txn {
            self.conn
                .query_drop("COMMIT")
                .await
                .map_err(ctx(Side::Destination, || {
                    "COMMIT of captured changes".into()
                }))?;
            self.in_txn = false;
        }
        self.pending_rows = 0;
        Ok(())
    }

    /// Applies one rows event of `t`; `Ok(Err(_))` when the images do not fit the table.
    pub async fn apply(
        &mut self,
        t: &TableMeta,
        ev: &RowsEventData<'_>,
        tme: &mysql_async::binlog::events::TableMapEvent<'_>,
    ) -> Result<std::result::Result<u64, Unfit>> {
        let mut replace: Vec<String> = Vec::new();
        let mut n = 0u64;
        let what = format!("applying captured changes to `{}`", t.name);
        for row in ev.rows(tme) {
            let (before, after) = match row {
                Ok(r) => r,
                Err(e) => return Ok(Err(Unfit(format!("undecodable row image: {e}")))),
            };
            let before = match before.map(|r| image(t, r)).transpose() {
                Ok(b) => b,
                Err(e) => return Ok(Err(e)),
            };
            let after = match after.map(|r| image(t, r)).transpose() {
                Ok(a) => a,
                Err(e) => return Ok(Err(e)),
            };
            n += 1;
            if let Some(b) = &before {
                let key_moved = after.as_ref().is_none_or(|a| !t.same_pk(b, a));
                if key_moved {
                    // A delete, or an update that changes the key: the old key goes first
                    // (queued replaces go before it, keeping the log's order).
                    self.flush_replace(t, &mut replace, &what).await?;
                    let del = match t.delete_by_pk(&self.db, b) {
                        Ok(s) => s,
                        Err(e) => return Ok(Err(e)),
                    };
                    self.exec(del, &what).await?;
                }
            }
            if let Some(a) = &after {
                match t.row_tuple(a) {
                    Ok(tuple) => replace.push(tuple),
                    Err(e) => return Ok(Err(e)),
                }
                if replace.len() >= ROWS_PER_STATEMENT {
                    self.flush_replace(t, &mut replace, &what).await?;
                }
            }
        }
        self.flush_replace(t, &mut replace, &what).await?;
        self.pending_rows += n;
        Ok(Ok(n))
    }

    async fn flush_replace(
        &mut self,
        t: &TableMeta,
        rows: &mut Vec<String>,
        what: &str,
    ) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let sql = format!("{}{}", t.replace_head(&self.db), rows.join(","));
        rows.clear();
        self.exec(sql, what).await
    }

    /// Ends the capture's connection (an open transaction is rolled back by the server).
    pub async fn close(self) {
        let _ = self.conn.disconnect().await;
    }
}

/// A row image as literals indexed by the table's columns.
fn image(t: &TableMeta, row: BinlogRow) -> std::result::Result<Vec<Option<Literal>>, Unfit> {
    let map = t.image_columns(row.len()).ok_or_else(|| {
        Unfit(format!(
            "a row image of {} columns for a table of {} (its definition changed)",
            row.len(),
            t.columns.len()
        ))
    })?;
    let mut out = vec![None; t.columns.len()];
    let values = row.unwrap();
    for (k, v) in values.into_iter().enumerate() {
        let i = map[k];
        out[i] = Some(literal(&t.columns[i], v)?);
    }
    Ok(out)
}
