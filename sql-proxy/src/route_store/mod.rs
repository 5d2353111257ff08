//! The durable route store: which side serves each database, its mode, and the epoch of its
//! last change, in one SQLite file (WAL mode, `synchronous=FULL`) next to the user store.
//!
//! Why it exists: routes used to live only in memory, so a restarted proxy fell back to the
//! config's `[databases]` and `default_side` and sent every database already switched to the
//! new side back to the old one (split brain). Every change of a route or mode is now committed
//! here **before** it takes effect for clients or the admin API answers; on start the proxy
//! restores every stored route as it was last committed (a database paused mid-switch comes
//! back paused).
//!
//! Why SQLite rather than a log of our own: a commit is atomic and durable when it returns
//! (one `fsync` of the WAL per change with `synchronous=FULL`), a torn write at a crash is
//! rolled back by SQLite itself, `PRAGMA quick_check` detects a damaged file, readers
//! (`sql-proxy routes list|export`) work while the proxy writes, the file is readable with the
//! stock `sqlite3` tool at 3 a.m., and the migrator already ships the same engine.
//!
//! Fail closed: a missing, unreadable, foreign, damaged or half-initialised store is an error
//! naming the file, never an empty table. A new store is created only by `routes init`, built
//! under a temporary name and renamed into place once complete, so a crash during `init` leaves
//! no half-made store behind. One process at a time uses a store for writing (`*.lock`, an
//! exclusive `flock` holding the owner's PID).

use std::fs::File;
use std::io::Read as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::mode::Mode;

mod handle;
mod import;
mod lock;
pub mod mariadb;
#[cfg(test)]
mod tests;

pub use handle::Store;
pub use import::{Export, ImportAction, ImportChange};
use lock::LockFile;
pub use mariadb::{Committed, InstanceRow, SharedStore};

/// `PRAGMA application_id` of a route store ("SQPR"): tells our file from any other SQLite file.
const APPLICATION_ID: i64 = 0x5351_5052;
/// `PRAGMA user_version`: the schema of this file.
const FORMAT: i64 = 1;
/// Format tag of `routes export` files.
pub const EXPORT_FORMAT: &str = "sql-proxy-routes/1";

/// One database's stored route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredRoute {
    pub database: String,
    pub side: String,
    pub mode: Mode,
    /// The mode a paused database returns to when it is resumed (its own mode otherwise).
    pub resume_mode: Mode,
    /// Store-wide counter value at this route's last change: only ever grows.
    pub epoch: u64,
}

impl StoredRoute {
    /// A route as a store's row holds it (mode names, a signed epoch), checked: both stores
    /// read rows this way. The error says what is wrong, for the store to name itself.
    pub(crate) fn from_row(
        database: String,
        side: String,
        mode: &str,
        resume: &str,
        epoch: i64,
    ) -> Result<StoredRoute, String> {
        let bad = |what: String| format!("route of database {database:?}: {what}");
        let mode = Mode::parse(mode).ok_or_else(|| bad(format!("mode {mode:?}")))?;
        let resume_mode = Mode::parse(resume)
            .filter(|m| *m != Mode::Paused)
            .ok_or_else(|| bad(format!("resume_mode {resume:?}")))?;
        if side.is_empty() || epoch <= 0 {
            return Err(bad(format!("side {side:?}, epoch {epoch}")));
        }
        Ok(StoredRoute {
            database,
            side,
            mode,
            resume_mode,
            epoch: epoch as u64,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "route store {path} does not exist. The proxy does not serve without its stored routes: \
         starting empty would send every database already switched back to default_side. \
         If this host never ran the proxy, create it once with: \
         sql-proxy routes init --config <CONFIG> --from-config \
         (to restore an export, add: sql-proxy routes import --config <CONFIG> FILE)"
    )]
    Missing { path: PathBuf },
    #[error("route store {path} cannot be read: {source}")]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "route store {path} is damaged or not a route store ({what}); the proxy will not serve \
         from it. Restore the file from a copy, or create a new store and import the last \
         export (sql-proxy routes init, then routes import); never just delete it"
    )]
    Corrupt { path: PathBuf, what: String },
    #[error("route store {path}: {what}: {source}")]
    Sqlite {
        path: PathBuf,
        what: &'static str,
        source: rusqlite::Error,
    },
    #[error(
        "route store {path} is in use by another process (pid {pid}, lock {lock}): \
         only one sql-proxy may use a store; stop it first"
    )]
    Locked {
        path: PathBuf,
        lock: PathBuf,
        pid: String,
    },
    #[error(
        "route store {path} already exists; init never overwrites a store (routes list shows it)"
    )]
    Exists { path: PathBuf },
    #[error("route store {path}: {what}: {source}")]
    Io {
        path: PathBuf,
        what: &'static str,
        source: std::io::Error,
    },
    /// The shared store (MariaDB) refused or could not be reached. `store` never holds a
    /// password.
    #[error("shared route store {store}: {what}: {source}")]
    Shared {
        store: String,
        what: &'static str,
        source: mysql_async::Error,
    },
    #[error("shared route store {store}: {what}: no answer within {ms} ms")]
    SharedTimeout {
        store: String,
        what: &'static str,
        ms: u64,
    },
    #[error(
        "shared route store {store} is damaged or not a route store ({what}); the proxy will \
         not serve from it"
    )]
    SharedCorrupt { store: String, what: String },
    #[error(
        "shared route store {store} has no route table for this fleet. The proxy does not \
         serve without its stored routes. Create it once (from one instance) with: \
         sql-proxy routes init --config <CONFIG> --from-config"
    )]
    NoFleet { store: String },
    #[error("shared route store {store} already has this fleet; init never overwrites it (routes list shows it)")]
    FleetExists { store: String },
    /// Another instance changed the route since this one last saw it: nothing was written.
    #[error(
        "database {database}: the shared route changed meanwhile (stored epoch {current}, this \
         instance had {expected}); nothing written, retry"
    )]
    Conflict {
        database: String,
        expected: u64,
        current: u64,
    },
    /// This instance's lease is not confirmed: it changes nothing (and serves nothing).
    #[error(
        "this instance has not confirmed its routes with the shared store for {ms} ms (lease \
         not renewed): it is fenced, serves no database and changes no route until it has"
    )]
    Fenced { ms: u64 },
}

/// Whether a store is opened for the proxy (writes, exclusive) or for a look (read-only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Exclusive: takes the lock file; commits allowed.
    Write,
    /// Shared: `routes list|export` while the proxy runs.
    Read,
}

/// The open store. Commits are serialised by the connection's mutex.
pub struct RouteStore {
    path: PathBuf,
    conn: Mutex<Connection>,
    /// Held for as long as the store is open for writing.
    _lock: Option<LockFile>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl RouteStore {
    /// The default store path: `routes.sqlite` beside the user store.
    pub fn default_path(users_file: &Path) -> PathBuf {
        users_file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .join("routes.sqlite")
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn sqlite(&self, what: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError + '_ {
        move |source| StoreError::Sqlite {
            path: self.path.clone(),
            what,
            source,
        }
    }

    /// Creates a new store holding `seed` (epochs 1..), under a temporary name renamed into
    /// place when complete. Refuses an existing store.
    pub fn create(path: &Path, seed: &[(String, String, Mode)]) -> Result<RouteStore, StoreError> {
        let lock = LockFile::acquire(path)?;
        if path.exists() {
            return Err(StoreError::Exists { path: path.into() });
        }
        let io = |what| {
            move |source| StoreError::Io {
                path: path.into(),
                what,
                source,
            }
        };
        let tmp = tmp_path(path);
        let _ = std::fs::remove_file(&tmp);
        let sq = |what| {
            let tmp = tmp.clone();
            move |source| StoreError::Sqlite {
                path: tmp,
                what,
                source,
            }
        };
        {
            // Created 0600: the file names every customer database.
            File::options()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io("creating"))?;
            let conn = Connection::open_with_flags(&tmp, OpenFlags::SQLITE_OPEN_READ_WRITE)
                .map_err(sq("opening new store"))?;
            conn.execute_batch(&format!(
                "PRAGMA journal_mode=DELETE; PRAGMA synchronous=FULL;
                 BEGIN;
                 PRAGMA application_id={APPLICATION_ID};
                 PRAGMA user_version={FORMAT};
                 CREATE TABLE meta (
                     id INTEGER PRIMARY KEY CHECK (id = 1),
                     last_epoch INTEGER NOT NULL,
                     created_at_ms INTEGER NOT NULL);
                 CREATE TABLE routes (
                     database TEXT PRIMARY KEY NOT NULL,
                     side TEXT NOT NULL CHECK (side <> ''),
                     mode TEXT NOT NULL CHECK (mode IN ('open','read_only','paused')),
                     resume_mode TEXT NOT NULL CHECK (resume_mode IN ('open','read_only')),
                     epoch INTEGER NOT NULL CHECK (epoch > 0),
                     updated_at_ms INTEGER NOT NULL);"
            ))
            .map_err(sq("creating schema"))?;
            let now = now_ms();
            let mut epoch = 0u64;
            for (db, side, mode) in seed {
                epoch += 1;
                let resume = if *mode == Mode::Paused {
                    Mode::Open
                } else {
                    *mode
                };
                conn.execute(
                    "INSERT INTO routes VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![db, side, mode.as_str(), resume.as_str(), epoch as i64, now],
                )
                .map_err(sq("seeding routes"))?;
            }
            conn.execute(
                "INSERT INTO meta VALUES (1, ?1, ?2)",
                params![epoch as i64, now],
            )
            .map_err(sq("seeding routes"))?;
            conn.execute_batch("COMMIT; PRAGMA journal_mode=WAL;")
                .map_err(sq("committing new store"))?;
        }
        File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io("syncing"))?;
        std::fs::rename(&tmp, path).map_err(io("renaming into place"))?;
        sync_parent(path).map_err(io("syncing its directory"))?;
        // The lock taken for the creation stays held: dropping and re-taking it would race a
        // fork in another thread that briefly holds a copy of the descriptor.
        Self::open_with(path, Access::Write, Some(lock))
    }

    /// Opens an existing store, refusing anything that is not a complete, undamaged store.
    pub fn open(path: &Path, access: Access) -> Result<RouteStore, StoreError> {
        Self::open_with(path, access, None)
    }

    fn open_with(
        path: &Path,
        access: Access,
        held: Option<LockFile>,
    ) -> Result<RouteStore, StoreError> {
        let corrupt = |what: String| StoreError::Corrupt {
            path: path.into(),
            what,
        };
        match std::fs::metadata(path) {
            Ok(md) if md.is_file() => {}
            Ok(_) => return Err(corrupt("not a regular file".into())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::Missing { path: path.into() })
            }
            Err(source) => {
                return Err(StoreError::Unreadable {
                    path: path.into(),
                    source,
                })
            }
        }
        // SQLite reports a permission problem vaguely: read a byte ourselves first.
        File::open(path)
            .and_then(|mut f| f.read(&mut [0u8; 1]))
            .map_err(|source| StoreError::Unreadable {
                path: path.into(),
                source,
            })?;
        let lock = match (access, held) {
            (Access::Write, Some(l)) => Some(l),
            (Access::Write, None) => Some(LockFile::acquire(path)?),
            (Access::Read, _) => None,
        };
        let flags = match access {
            Access::Write => OpenFlags::SQLITE_OPEN_READ_WRITE,
            Access::Read => OpenFlags::SQLITE_OPEN_READ_ONLY,
        } | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(|e| corrupt(e.to_string()))?;
        let store = RouteStore {
            path: path.into(),
            conn: Mutex::new(conn),
            _lock: lock,
        };
        store.check(access)?;
        Ok(store)
    }

    /// Header, integrity and schema checks, then the connection's durability settings.
    fn check(&self, access: Access) -> Result<(), StoreError> {
        let conn = self.conn.lock().expect("route store lock");
        let corrupt = |what: String| StoreError::Corrupt {
            path: self.path.clone(),
            what,
        };
        let pragma = |name: &str| -> Result<i64, StoreError> {
            conn.query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
                .map_err(|e| corrupt(e.to_string()))
        };
        let app = pragma("application_id")?;
        if app != APPLICATION_ID {
            return Err(corrupt(format!(
                "application_id is {app:#x}, not {APPLICATION_ID:#x}: an empty file, another \
                 program's SQLite file, or a store whose init never finished"
            )));
        }
        let version = pragma("user_version")?;
        if version != FORMAT {
            return Err(corrupt(format!(
                "format {version}, this sql-proxy reads format {FORMAT}"
            )));
        }
        let verdict: Vec<String> = conn
            .prepare("PRAGMA quick_check")
            .and_then(|mut s| {
                s.query_map([], |r| r.get::<_, String>(0))?
                    .collect::<Result<_, _>>()
            })
            .map_err(|e| corrupt(e.to_string()))?;
        if verdict != ["ok"] {
            return Err(corrupt(format!("integrity check: {}", verdict.join("; "))));
        }
        let last: Option<i64> = conn
            .query_row("SELECT last_epoch FROM meta WHERE id = 1", [], |r| r.get(0))
            .optional()
            .map_err(|e| corrupt(format!("meta table: {e}")))?;
        let Some(last) = last else {
            return Err(corrupt("meta row missing".into()));
        };
        let max: Option<i64> = conn
            .query_row("SELECT max(epoch) FROM routes", [], |r| r.get(0))
            .map_err(|e| corrupt(format!("routes table: {e}")))?;
        if max.unwrap_or(0) > last {
            return Err(corrupt(format!(
                "a route has epoch {} above the store's last epoch {last}",
                max.unwrap_or(0)
            )));
        }
        if access == Access::Write {
            conn.execute_batch(
                "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA busy_timeout=5000;",
            )
            .map_err(|source| StoreError::Sqlite {
                path: self.path.clone(),
                what: "setting WAL and synchronous=FULL",
                source,
            })?;
        } else {
            conn.execute_batch("PRAGMA busy_timeout=5000;")
                .map_err(|e| corrupt(e.to_string()))?;
        }
        Ok(())
    }

    /// Every stored route, by database name; a row that does not parse is an error naming it.
    pub fn load(&self) -> Result<Vec<StoredRoute>, StoreError> {
        let conn = self.conn.lock().expect("route store lock");
        let rows: Vec<(String, String, String, String, i64)> = conn
            .prepare(
                "SELECT database, side, mode, resume_mode, epoch FROM routes ORDER BY database",
            )
            .and_then(|mut s| {
                s.query_map([], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })?
                .collect::<Result<_, _>>()
            })
            .map_err(|e| StoreError::Corrupt {
                path: self.path.clone(),
                what: format!("reading routes: {e}"),
            })?;
        rows.into_iter()
            .map(|(database, side, mode, resume, epoch)| {
                StoredRoute::from_row(database, side, &mode, &resume, epoch).map_err(|what| {
                    StoreError::Corrupt {
                        path: self.path.clone(),
                        what,
                    }
                })
            })
            .collect()
    }

    /// The highest epoch handed out.
    pub fn last_epoch(&self) -> Result<u64, StoreError> {
        let conn = self.conn.lock().expect("route store lock");
        conn.query_row("SELECT last_epoch FROM meta WHERE id = 1", [], |r| {
            r.get::<_, i64>(0)
        })
        .map(|e| e as u64)
        .map_err(self.sqlite("reading last epoch"))
    }

    /// Commits one database's route under the next epoch, durably, and returns that epoch.
    pub fn commit(
        &self,
        database: &str,
        side: &str,
        mode: Mode,
        resume_mode: Mode,
    ) -> Result<u64, StoreError> {
        let mut conn = self.conn.lock().expect("route store lock");
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(self.sqlite("beginning a commit"))?;
        let epoch: i64 = tx
            .query_row("SELECT last_epoch FROM meta WHERE id = 1", [], |r| r.get(0))
            .map_err(self.sqlite("reading last epoch"))?;
        let epoch = epoch + 1;
        upsert(&tx, database, side, mode, resume_mode, epoch).map_err(self.sqlite("writing"))?;
        tx.commit().map_err(self.sqlite("committing"))?;
        Ok(epoch as u64)
    }

    /// Adds the routes of databases the store has never seen (the config's `[databases]`);
    /// returns the ones added.
    pub fn seed_missing(
        &self,
        seed: &[(String, String, Mode)],
    ) -> Result<Vec<StoredRoute>, StoreError> {
        let known: std::collections::HashSet<String> =
            self.load()?.into_iter().map(|r| r.database).collect();
        let mut added = Vec::new();
        for (db, side, mode) in seed.iter().filter(|(db, ..)| !known.contains(db)) {
            let resume = if *mode == Mode::Paused {
                Mode::Open
            } else {
                *mode
            };
            let epoch = self.commit(db, side, *mode, resume)?;
            added.push(StoredRoute {
                database: db.clone(),
                side: side.clone(),
                mode: *mode,
                resume_mode: resume,
                epoch,
            });
        }
        Ok(added)
    }

    /// Everything, as `routes export` writes it.
    pub fn export(&self) -> Result<Export, StoreError> {
        Ok(Export {
            format: EXPORT_FORMAT.into(),
            last_epoch: self.last_epoch()?,
            routes: self.load()?,
        })
    }
}

/// Writes a route and raises `last_epoch` to `epoch` (never lowers it).
pub(super) fn upsert(
    tx: &rusqlite::Transaction<'_>,
    database: &str,
    side: &str,
    mode: Mode,
    resume_mode: Mode,
    epoch: i64,
) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO routes (database, side, mode, resume_mode, epoch, updated_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (database) DO UPDATE SET side = ?2, mode = ?3, resume_mode = ?4,
             epoch = ?5, updated_at_ms = ?6",
        params![
            database,
            side,
            mode.as_str(),
            resume_mode.as_str(),
            epoch,
            now_ms()
        ],
    )?;
    tx.execute(
        "UPDATE meta SET last_epoch = max(last_epoch, ?1) WHERE id = 1",
        [epoch],
    )?;
    Ok(())
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".init-tmp");
    PathBuf::from(s)
}

fn sync_parent(path: &Path) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    File::open(dir)?.sync_all()
}
