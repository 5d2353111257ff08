//! The databases' part of the local data mover ([`crate::systems::DataMover`]): each database
//! of a site follows its source by change capture when the old server allows it
//! ([`crate::db::follow`]), else it is copied as before (delta copies, the freeze copying every
//! changed table again). It owns the runtime its connections live in, so the new side's state
//! pinned inside the freeze (a consistent snapshot per followed database) is still open after
//! the switch, when those databases are verified.

use crate::db::capture;
use crate::db::copy::{self, CopyOptions};
use crate::db::follow;
use crate::db::progress::Journal;
use crate::db::schema::{ctx, Side};
use crate::db::session::session;
use crate::journal::{open_journal_at, JournalStore};
use crate::systems::{Dc, Direction, SysResult, SystemError};
use mysql_async::prelude::*;
use mysql_async::{Conn, Opts};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

/// Tables copied in parallel per database.
const THREADS: usize = 2;

/// The copy rate a predicted freeze assumes (the bulk copy's measured rate, BENCHMARKS.md:
/// ~1 GB in 12.5 s with 2 threads).
const COPY_BYTES_PER_SEC: f64 = 80.0 * (1 << 20) as f64;

/// See the module documentation.
pub struct DbMover {
    journal: PathBuf,
    runtime: OnceLock<tokio::runtime::Runtime>,
    /// Databases whose freeze tail ran in this process (verified after the switch).
    tailed: Mutex<BTreeSet<String>>,
    /// The new side pinned in the freeze: one session per database, inside a consistent
    /// snapshot taken before the switch.
    pinned: Mutex<BTreeMap<String, Conn>>,
}

impl DbMover {
    pub fn new(journal: PathBuf) -> DbMover {
        DbMover {
            journal,
            runtime: OnceLock::new(),
            tailed: Mutex::new(BTreeSet::new()),
            pinned: Mutex::new(BTreeMap::new()),
        }
    }

    fn rt(&self, dc: Dc) -> SysResult<&tokio::runtime::Runtime> {
        if let Some(rt) = self.runtime.get() {
            return Ok(rt);
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| SystemError::new("mariadb", dc, e.to_string()))?;
        Ok(self.runtime.get_or_init(|| rt))
    }

    fn journal(&self, dc: Dc) -> SysResult<Journal> {
        let j = open_journal_at(&self.journal)
            .map_err(|e| SystemError::new("journal", dc, e.to_string()))?;
        Ok(Arc::new(Mutex::new(j)) as Arc<Mutex<dyn JournalStore + Send>>)
    }

    /// Copies `dbs` in `dir`. Forward, on a source whose changes can be captured: the first
    /// pass is the bulk copy, later ones apply the captured changes ([`follow::sync`]).
    /// Otherwise a copy (`delta`: only changed tables). Returns the bytes moved.
    pub fn copy(
        &self,
        urls: (Opts, Opts),
        dbs: &[String],
        dir: Direction,
        delta: bool,
    ) -> SysResult<u64> {
        if dbs.is_empty() {
            return Ok(0);
        }
        let (old, new) = urls;
        let (src, dst, dc) = match dir {
            Direction::Forward => (old, new, Dc::New),
            Direction::Back => (new, old, Dc::Old),
        };
        let j = self.journal(dc)?;
        let rt = self.rt(dc)?;
        let follows = dir == Direction::Forward && self.capturable(rt, &src)?.is_none();
        let mut bytes = 0;
        for db in dbs {
            let err = |e: crate::db::schema::DbError| {
                SystemError::new("mariadb", dc, format!("copy {db}: {e}"))
            };
            if follows {
                let r = rt
                    .block_on(follow::sync(&src, &dst, db, j.clone(), THREADS))
                    .map_err(err)?;
                bytes += r.bytes;
                continue;
            }
            if dir == Direction::Back {
                // The new side is the source now: a later move starts its capture afresh.
                capture::clear_state(&j, db).map_err(err)?;
            }
            bytes += rt
                .block_on(copy_old_way(&src, &dst, db, &j, delta))
                .map_err(err)?;
        }
        Ok(bytes)
    }

    /// Why the old server's changes cannot be captured (`None`: they can).
    fn capturable(&self, rt: &tokio::runtime::Runtime, src: &Opts) -> SysResult<Option<String>> {
        rt.block_on(follow::capturable(src))
            .map_err(|e| SystemError::new("mariadb", Dc::Old, e.to_string()))
    }

    /// What `prepare` says about the site's databases before anything moves: databases copied
    /// rather than followed (the old server's changes cannot be captured, and why), or tables
    /// of followed databases copied again inside the freeze (no primary key, say), each with
    /// the freeze it predicts (`None`: every table followed).
    pub fn capture_note(&self, urls: &(Opts, Opts), dbs: &[String]) -> SysResult<Option<String>> {
        if dbs.is_empty() {
            return Ok(None);
        }
        let rt = self.rt(Dc::Old)?;
        let why_not = self.capturable(rt, &urls.0)?;
        let err =
            |e: crate::db::schema::DbError| SystemError::new("mariadb", Dc::Old, e.to_string());
        let sizes = rt.block_on(table_sizes(&urls.0, dbs)).map_err(err)?;
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        let secs = |b: u64| b as f64 / COPY_BYTES_PER_SEC;
        if let Some(why) = why_not {
            let largest = sizes.iter().max_by_key(|t| t.2);
            let total: u64 = sizes.iter().map(|t| t.2).sum();
            let worst = largest
                .map(|(db, t, b)| {
                    format!(
                        "; its largest table, {db}.{t} ({:.0} MiB), alone takes ~{:.1} s",
                        mib(*b),
                        secs(*b)
                    )
                })
                .unwrap_or_default();
            return Ok(Some(format!(
                "databases {} are copied, not followed: the old server's changes cannot be \
                 captured ({why}); the freeze copies every table changed since the last pass \
                 again: up to {:.0} MiB, ~{:.1} s at {:.0} MiB/s{worst}",
                dbs.join(", "),
                mib(total),
                secs(total),
                mib(COPY_BYTES_PER_SEC as u64)
            )));
        }
        let mut uncaptured = Vec::new();
        let mut bytes = 0;
        for db in dbs {
            let metas = rt
                .block_on(async {
                    let mut c = session(&urls.0, Side::Source, None).await?;
                    let m = capture::values::table_metas(&mut c, db).await;
                    let _ = c.disconnect().await;
                    m
                })
                .map_err(err)?;
            for m in metas {
                if let Some(why) = m.uncapturable() {
                    let b = sizes
                        .iter()
                        .find(|(d, t, _)| d == db && *t == m.name)
                        .map(|t| t.2)
                        .unwrap_or(0);
                    bytes += b;
                    uncaptured.push(format!("{db}.{} ({:.1} MiB: {why})", m.name, mib(b)));
                }
            }
        }
        if uncaptured.is_empty() {
            return Ok(None);
        }
        Ok(Some(format!(
            "tables copied again inside the freeze, not followed: {}; they add ~{:.1} s to the \
             freeze at {:.0} MiB/s",
            uncaptured.join(", "),
            secs(bytes),
            mib(COPY_BYTES_PER_SEC as u64)
        )))
    }

    /// The freeze's copy of `dbs`: the captured tail for followed databases, else a delta
    /// copy.
    pub fn tail(&self, urls: (Opts, Opts), dbs: &[String]) -> SysResult<u64> {
        let (src, dst) = urls;
        let dc = Dc::New;
        let j = self.journal(dc)?;
        let rt = self.rt(dc)?;
        let mut bytes = 0;
        for db in dbs {
            let err = |e: crate::db::schema::DbError| {
                SystemError::new("mariadb", dc, format!("final copy {db}: {e}"))
            };
            if capture::load_state(&j, db).map_err(err)?.is_some() {
                let r = rt
                    .block_on(follow::tail(&src, &dst, db, j.clone(), THREADS))
                    .map_err(err)?;
                self.tailed.lock().expect("tailed lock").insert(db.clone());
                bytes += r.bytes;
            } else {
                // Not followed (copied the old way before): the changed tables copied again.
                bytes += rt
                    .block_on(copy_old_way(&src, &dst, db, &j, true))
                    .map_err(err)?;
            }
        }
        Ok(bytes)
    }

    /// Verifies `dbs` inside the freeze: databases copied the old way are compared now;
    /// followed ones have the new side pinned (a consistent snapshot, the destination taking
    /// no writes before the switch) for [`DbMover::verify_after_switch`].
    pub fn verify(&self, urls: (Opts, Opts), dbs: &[String]) -> SysResult<Vec<String>> {
        let (old, new) = urls;
        let rt = self.rt(Dc::New)?;
        let tailed = self.tailed.lock().expect("tailed lock").clone();
        let mut diffs = Vec::new();
        for db in dbs {
            let err = |e: crate::db::schema::DbError| {
                SystemError::new("mariadb", Dc::New, format!("verify {db}: {e}"))
            };
            if tailed.contains(db) {
                let conn = rt.block_on(pin(&new, db)).map_err(err)?;
                self.pinned
                    .lock()
                    .expect("pinned lock")
                    .insert(db.clone(), conn);
                continue;
            }
            let (d, sums) = rt
                .block_on(async {
                    let mut s = session(&old, Side::Source, None).await?;
                    let mut n = session(&new, Side::Destination, None).await?;
                    copy::verify_sessions_sums(&mut s, &mut n, db).await
                })
                .map_err(err)?;
            if d.is_empty() {
                // The old side is paused: these are its checksums at the switch.
                self.record_switch_sums(db, sums)?;
            }
            diffs.extend(d.into_iter().map(|x| format!("database {db}: {x}")));
        }
        Ok(diffs)
    }

    /// Journals `db`'s old-side checksums at the switch ([`crate::bundle::state`]), which a
    /// consistency-point bundle records and `bundle verify` compares a restored dump with.
    fn record_switch_sums(&self, db: &str, sums: BTreeMap<String, String>) -> SysResult<()> {
        let j = self.journal(Dc::Old)?;
        let mut j = j.lock().expect("journal lock");
        crate::bundle::state::record_switch_checksums(&mut *j, db, sums)
            .map_err(|e| SystemError::new("journal", Dc::Old, e.to_string()))
    }

    /// Whether databases are pinned for [`DbMover::verify_after_switch`].
    pub fn has_pinned(&self) -> bool {
        !self.pinned.lock().expect("pinned lock").is_empty()
    }

    /// After the switch: each pinned database compared, the old side (written no more) with
    /// the new side as pinned. The pins are released.
    pub fn verify_after_switch(&self, old: &Opts) -> SysResult<Vec<String>> {
        let pinned = std::mem::take(&mut *self.pinned.lock().expect("pinned lock"));
        self.tailed.lock().expect("tailed lock").clear();
        if pinned.is_empty() {
            return Ok(Vec::new());
        }
        let rt = self.rt(Dc::New)?;
        let mut diffs = Vec::new();
        for (db, mut conn) in pinned {
            let err = |e: crate::db::schema::DbError| {
                SystemError::new(
                    "mariadb",
                    Dc::New,
                    format!("verify {db} after the switch: {e}"),
                )
            };
            let d = rt
                .block_on(async {
                    let mut s = session(old, Side::Source, None).await?;
                    let r = copy::verify_sessions_sums(&mut s, &mut conn, &db).await;
                    let _ = s.disconnect().await;
                    let _ = conn.disconnect().await;
                    r
                })
                .map_err(err)?;
            let (d, sums) = d;
            if d.is_empty() {
                // The old side is written no more: its checksums at the switch.
                self.record_switch_sums(&db, sums)?;
            }
            diffs.extend(d.into_iter().map(|x| format!("database {db}: {x}")));
        }
        Ok(diffs)
    }
}

/// A copy of `db` (`delta`: only the tables whose checksums differ); the bytes copied.
async fn copy_old_way(
    src: &Opts,
    dst: &Opts,
    db: &str,
    j: &Journal,
    delta: bool,
) -> crate::db::schema::Result<u64> {
    let opts = CopyOptions {
        threads: THREADS,
        delta,
        ..Default::default()
    };
    let r = copy::copy_database(src, dst, db, j.clone(), &opts).await?;
    Ok(r.tables.iter().filter(|t| t.copied).map(|t| t.bytes).sum())
}

/// (database, table, bytes) of every base table of `dbs` on `src` (`DATA_LENGTH`).
async fn table_sizes(
    src: &Opts,
    dbs: &[String],
) -> crate::db::schema::Result<Vec<(String, String, u64)>> {
    let mut c = session(src, Side::Source, None).await?;
    let mut out = Vec::new();
    for db in dbs {
        let rows: Vec<(String, u64)> = c
            .exec(
                "SELECT TABLE_NAME, COALESCE(DATA_LENGTH, 0) FROM information_schema.TABLES \
                 WHERE TABLE_SCHEMA = ? AND TABLE_TYPE = 'BASE TABLE'",
                (db,),
            )
            .await
            .map_err(ctx(Side::Source, || format!("table sizes of `{db}`")))?;
        out.extend(rows.into_iter().map(|(t, b)| (db.clone(), t, b)));
    }
    let _ = c.disconnect().await;
    Ok(out)
}

/// A session on the new side inside a consistent snapshot of now.
async fn pin(new: &Opts, db: &str) -> crate::db::schema::Result<Conn> {
    let mut c = session(new, Side::Destination, None).await?;
    c.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .await
        .map_err(ctx(Side::Destination, || "isolation level".into()))?;
    c.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        .await
        .map_err(ctx(Side::Destination, || {
            format!("pinning `{db}` for the verification after the switch")
        }))?;
    Ok(c)
}
