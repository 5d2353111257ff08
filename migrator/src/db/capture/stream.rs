//! The capture loop: the source's binary log read as a replica (a `server_id` of our own)
//! from the journaled position; the row events of the captured database's tables applied on
//! the destination in order; the position journaled after each destination commit, always at
//! a source transaction boundary. Runs until a target position (the source's position when
//! a step began, or the freeze's tail) is applied.

use crate::db::capture::apply::{Applier, Unfit};
use crate::db::capture::position::BinlogPos;
use crate::db::capture::values::{table_metas, TableMeta};
use crate::db::capture::{load_state, save_state, CaptureState};
use crate::db::progress::Journal;
use crate::db::schema::{ctx, DbError, Result, Side};
use futures_util::StreamExt;
use mysql_async::binlog::events::EventData;
use mysql_async::{BinlogStreamRequest, Conn, Opts};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long changes may wait in an open destination transaction.
const COMMIT_EVERY: Duration = Duration::from_millis(50);
/// How often an idle stream journals a position that moved on other databases' events.
const JOURNAL_IDLE_EVERY: Duration = Duration::from_secs(1);
/// MySQL's error for a binary log position the server no longer has.
const ER_MASTER_FATAL_ERROR_READING_BINLOG: u16 = 1236;

/// What a capture did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Status {
    /// Applied on the destination (and journaled) up to here.
    pub applied: BinlogPos,
    pub rows: u64,
    /// Binary log bytes of the database's row events applied.
    pub bytes: u64,
}

/// Whether the capture is done: `applied` reached `target` at a transaction boundary.
fn done(applied: &BinlogPos, in_txn: bool, target: &BinlogPos) -> bool {
    !in_txn && applied >= target
}

/// Runs the capture of `db` from its journaled state (see the module documentation). Returns
/// the final status; an error leaves the journaled position where the last commit put it, so
/// a new run resumes there.
pub async fn run(
    src: &Opts,
    dst: &Opts,
    db: &str,
    journal: Journal,
    target: &BinlogPos,
) -> Result<Status> {
    let mut state = load_state(&journal, db)?.ok_or_else(|| DbError::Capture {
        db: db.to_string(),
        reason: "no capture position in the journal: copy the database first".into(),
    })?;
    let mut meta_conn = Conn::new(src.clone())
        .await
        .map_err(ctx(Side::Source, || "connecting".into()))?;
    let metas: HashMap<String, TableMeta> = table_metas(&mut meta_conn, db)
        .await?
        .into_iter()
        .map(|m| (m.name.clone(), m))
        .collect();
    let mut applier = Applier::open(dst, db).await?;
    let binlog_conn = Conn::new(src.clone()).await.map_err(ctx(Side::Source, || {
        "connecting the binary log reader".into()
    }))?;
    let start = state.applied.clone();
    let request = BinlogStreamRequest::new(replica_id(db))
        .with_filename(start.file.as_bytes())
        .with_pos(start.pos);
    let mut stream = binlog_conn
        .get_binlog_stream(request)
        .await
        .map_err(|e| read_error(db, &start, e))?;
    let mut status = Status {
        applied: start.clone(),
        ..Default::default()
    };
    let mut file = start.file.clone();
    let mut in_txn = false;
    // The position after the last transaction boundary read, applied or not yet committed.
    let mut boundary = start.clone();
    let mut last_commit = Instant::now();
    let mut last_journal = Instant::now();
    let result: Result<()> = async {
        loop {
            if done(&status.applied, in_txn, target) {
                break;
            }
            let next = tokio::time::timeout(Duration::from_millis(50), stream.next()).await;
            let idle = next.is_err();
            let ev = match next {
                Err(_) => None, // idle
                Ok(None) => {
                    return Err(DbError::Capture {
                        db: db.to_string(),
                        reason: "the source ended the binary log stream".into(),
                    })
                }
                Ok(Some(Err(e))) => return Err(read_error(db, &boundary, e)),
                Ok(Some(Ok(ev))) => Some(ev),
            };
            if let Some(ev) = ev {
                let h = ev.header();
                let log_pos = h.log_pos() as u64;
                let data = ev.read_data().map_err(|e| DbError::Capture {
                    db: db.to_string(),
                    reason: format!("undecodable event at {file}:{log_pos}: {e}"),
                })?;
                let mut ends_txn = false;
                match data {
                    Some(EventData::RotateEvent(r)) if log_pos != 0 => {
                        // A real rotation (the artificial one at the stream's start and at
                        // each new file repeats what we know, its name with a checksum).
                        file = String::from_utf8_lossy(r.name_raw()).to_string();
                        boundary = BinlogPos::new(file.clone(), r.position());
                        continue;
                    }
                    Some(EventData::QueryEvent(q)) => {
                        let sql = q.query().to_string();
                        let head = sql.trim_start().to_ascii_uppercase();
                        if head == "BEGIN" || head.starts_with("XA START") {
                            in_txn = true;
                        } else if head.starts_with("COMMIT") || head.starts_with("ROLLBACK") {
                            ends_txn = true;
                        } else if head.starts_with('#') {
                            // A dummy event standing in for one a replica need not see.
                        } else {
                            // A statement logged as text: DDL (or an account change).
                            ends_txn = true;
                            let schema = q.schema().to_string();
                            let hit = ddl_tables(&sql, &schema, db, &state);
                            for (t, why) in hit {
                                mark_recopy(&mut state, &t, why);
                            }
                        }
                    }
                    Some(EventData::XidEvent(_)) => ends_txn = true,
                    Some(EventData::RowsEvent(r)) => {
                        let Some(tme) = stream.get_tme(r.table_id()) else {
                            return Err(DbError::Capture {
                                db: db.to_string(),
                                reason: format!(
                                    "rows event at {file}:{log_pos} without its table map"
                                ),
                            });
                        };
                        if tme.database_name() == db {
                            let table = tme.table_name().to_string();
                            let captured =
                                state.tables.get(&table).is_some_and(|from| {
                                    BinlogPos::new(file.clone(), log_pos) > *from
                                }) && !state.recopy.contains_key(&table);
                            if captured {
                                match metas.get(&table) {
                                    None => mark_recopy(
                                        &mut state,
                                        &table,
                                        "a table unknown when the capture started".into(),
                                    ),
                                    Some(m) => match applier.apply(m, &r, tme).await? {
                                        Ok(n) => {
                                            status.rows += n;
                                            status.bytes += h.event_size() as u64;
                                        }
                                        Err(Unfit(why)) => mark_recopy(&mut state, &table, why),
                                    },
                                }
                            } else if !state.tables.contains_key(&table)
                                && !state.uncaptured.contains_key(&table)
                                && !state.recopy.contains_key(&table)
                            {
                                mark_recopy(
                                    &mut state,
                                    &table,
                                    "written but not in the copy (created after it)".into(),
                                );
                            }
                        }
                    }
                    _ => {}
                }
                if log_pos != 0 && (ends_txn || !in_txn) {
                    in_txn = false;
                    boundary = BinlogPos::new(file.clone(), log_pos);
                }
            }
            // Commit and journal at a boundary: when changes waited long enough, when idle,
            // or when the target is reached.
            if !in_txn && boundary > status.applied {
                let pending = applier.pending_rows > 0;
                if (pending && (idle || last_commit.elapsed() >= COMMIT_EVERY))
                    || (!pending && last_journal.elapsed() >= JOURNAL_IDLE_EVERY)
                    || done(&boundary, false, target)
                {
                    applier.commit().await?;
                    state.applied = boundary.clone();
                    save_state(&journal, db, &state)?;
                    status.applied = boundary.clone();
                    last_commit = Instant::now();
                    last_journal = Instant::now();
                }
            }
        }
        Ok(())
    }
    .await;
    if result.is_ok() && !in_txn && boundary > status.applied {
        applier.commit().await?;
        state.applied = boundary.clone();
        save_state(&journal, db, &state)?;
        status.applied = boundary;
    }
    applier.close().await;
    let _ = stream.close().await;
    let _ = meta_conn.disconnect().await;
    result.map(|_| status)
}

/// Flags `table` to be copied again (the first reason is kept); journaled with the state.
fn mark_recopy(state: &mut CaptureState, table: &str, why: String) {
    state.recopy.entry(table.to_string()).or_insert(why);
}

/// The tables of `db` a statement logged as text may have changed: every captured or
/// uncaptured table it names when it runs in `db` or names `db`; a statement that names the
/// database but none of its tables (a table created, say) marks the table list as changed.
fn ddl_tables(sql: &str, schema: &str, db: &str, state: &CaptureState) -> Vec<(String, String)> {
    let lower = sql.to_ascii_lowercase();
    let names_db = lower.contains(&db.to_ascii_lowercase());
    if schema != db && !names_db {
        return Vec::new();
    }
    let words: Vec<&str> = lower
        .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
        .filter(|w| !w.is_empty())
        .collect();
    let short: String = sql.chars().take(120).collect();
    let mut hit: Vec<(String, String)> = state
        .tables
        .keys()
        .chain(state.uncaptured.keys())
        .filter(|t| words.contains(&t.to_ascii_lowercase().as_str()))
        .map(|t| (t.clone(), format!("statement in the log: {short}")))
        .collect();
    if hit.is_empty() {
        hit.push((
            super::TABLE_LIST.to_string(),
            format!("statement in the log: {short}"),
        ));
    }
    hit
}

/// A replica id for this reader: distinct per run, so two captures from one source (other
/// databases, other migrators) never share one (the server would drop the older stream).
fn replica_id(db: &str) -> u32 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    db.hash(&mut h);
    std::process::id().hash(&mut h);
    std::time::SystemTime::now().hash(&mut h);
    // High range: far from the small ids operators give real servers.
    0x4000_0000 | (h.finish() as u32 & 0x3fff_ffff)
}

fn read_error(db: &str, at: &BinlogPos, e: mysql_async::Error) -> DbError {
    if let mysql_async::Error::Server(s) = &e {
        if s.code == ER_MASTER_FATAL_ERROR_READING_BINLOG {
            return DbError::BinlogGone {
                db: db.to_string(),
                at: at.to_string(),
                message: s.message.clone(),
            };
        }
    }
    DbError::Sql {
        side: Side::Source,
        context: format!("reading the binary log of `{db}` at {at}"),
        source: e,
    }
}
