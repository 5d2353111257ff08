//! The shared route store: the route table of a *fleet* of `sql-proxy` instances (every
//! instance answering the same old SQL endpoint) in one MariaDB schema, on the server or Galera
//! cluster the migrator's journal uses.
//!
//! Tables (in the database the URL names; created by `sql-proxy routes init`):
//! - `sqlproxy_fleets`: one row per fleet, its `last_epoch` (the fleet's change counter; the
//!   row is locked by every commit, so epochs are handed out one at a time, also on Galera
//!   where a concurrent commit on another node fails certification instead).
//! - `sqlproxy_routes`: per (fleet, database) side, mode, resume mode and the epoch of its
//!   last change.
//! - `sqlproxy_instances`: per (fleet, instance) the endpoints it serves, its lease expiry
//!   (the store server's clock) and the last epoch it acknowledged.
//!
//! Every call runs under a timeout; a call that fails or times out drops its connection (a
//! half-done transaction is rolled back by the server) and the next call reconnects. When the
//! URL names several nodes (a Galera cluster), the next call starts at the node after the one
//! that broke or stalled and takes the first that answers ([`crate::store_nodes`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts};
use serde::Serialize;

use super::{StoreError, StoredRoute};
use crate::mode::Mode;

/// `ER_LOCK_DEADLOCK`: a Galera certification failure or an InnoDB deadlock; the commit is
/// retried once.
const ER_LOCK_DEADLOCK: u16 = 1213;

/// Schema of the shared store (`sqlproxy_schema.format`).
pub const SHARED_FORMAT: i64 = 1;

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS sqlproxy_schema (
        id TINYINT PRIMARY KEY, format INT NOT NULL) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS sqlproxy_fleets (
        fleet VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin PRIMARY KEY,
        last_epoch BIGINT NOT NULL,
        created_at DATETIME(6) NOT NULL) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS sqlproxy_routes (
        fleet VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
        db VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
        side VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
        mode VARCHAR(16) NOT NULL,
        resume_mode VARCHAR(16) NOT NULL,
        epoch BIGINT NOT NULL,
        updated_at DATETIME(6) NOT NULL,
        PRIMARY KEY (fleet, db),
        KEY by_epoch (fleet, epoch)) ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS sqlproxy_instances (
        fleet VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
        instance VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
        endpoints TEXT NOT NULL,
        pid INT NOT NULL,
        lease_expires DATETIME(6) NOT NULL,
        acked_epoch BIGINT NOT NULL,
        renewed_at DATETIME(6) NOT NULL,
        started_at DATETIME(6) NOT NULL,
        PRIMARY KEY (fleet, instance)) ENGINE=InnoDB",
    "INSERT IGNORE INTO sqlproxy_schema VALUES (1, 1)",
];

/// One instance as the store has it (`GET /fleet`, the switch's wait for acknowledgements).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceRow {
    pub instance: String,
    pub endpoints: String,
    pub pid: u32,
    pub acked_epoch: u64,
    /// Whether its lease is still running by the store's clock.
    pub live: bool,
    /// Lease time left (negative: expired that long ago), ms.
    pub lease_left_ms: i64,
}

/// The fleet's table as of one consistent read.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub last_epoch: u64,
    /// Routes changed after the epoch asked for, in epoch order.
    pub changed: Vec<StoredRoute>,
}

/// How a commit's optimistic check ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Committed {
    Done(u64),
    /// The stored route changed since the caller last saw it (another instance committed):
    /// nothing written; this is the route as stored now (None: not stored at all).
    Conflict(Option<StoredRoute>),
}

/// One node's connection with the session the store needs: on a Galera node, reads and
/// updates first wait for write sets committed through other nodes, so another instance's
/// lease or acknowledgement is never read stale. A server without Galera support has no such
/// variable (1193).
async fn session(opts: &Opts) -> Result<Conn, mysql_async::Error> {
    let mut c = Conn::new(opts.clone()).await?;
    match c.query_drop("SET SESSION wsrep_sync_wait = 3").await {
        Err(mysql_async::Error::Server(e)) if e.code == 1193 => {}
        other => other?,
    }
    Ok(c)
}

type OpFuture<'c, T> = Pin<Box<dyn Future<Output = Result<T, mysql_async::Error>> + Send + 'c>>;

/// A handle on the shared store with one connection of its own.
pub struct SharedStore {
    /// One server, or the nodes of one Galera cluster (never empty), in the URL's order.
    nodes: Vec<Opts>,
    /// The node tried first at the next connect: the one connected to last, or the next one
    /// once its connection broke or timed out (a dead or stalled node is not tried first).
    current: AtomicUsize,
    /// `mysql://host:port/db` (never a password): what messages and logs show.
    name: String,
    fleet: String,
    timeout: Duration,
    conn: tokio::sync::Mutex<Option<Conn>>,
}

impl SharedStore {
    /// A handle (not connected yet) on the store at `nodes` (one server, or the nodes of one
    /// Galera cluster; [`crate::store_nodes`]), each carrying the password read from its file.
    pub fn new(nodes: Vec<Opts>, fleet: &str, timeout: Duration) -> SharedStore {
        assert!(!nodes.is_empty(), "a shared store names at least one node");
        SharedStore {
            name: crate::store_nodes::name(&nodes),
            nodes,
            current: AtomicUsize::new(0),
            fleet: fleet.to_string(),
            timeout,
            conn: tokio::sync::Mutex::new(None),
        }
    }

    /// Another handle on the same store and fleet, with its own connection (the follower and
    /// the admin API must not wait on each other's calls).
    pub fn another(&self) -> SharedStore {
        SharedStore::new(self.nodes.clone(), &self.fleet, self.timeout)
    }

    /// `mysql://host:port/db fleet NAME`.
    pub fn describe(&self) -> String {
        format!("{} fleet {}", self.name, self.fleet)
    }

    pub fn fleet(&self) -> &str {
        &self.fleet
    }

    fn err(&self, what: &'static str) -> impl FnOnce(mysql_async::Error) -> StoreError + '_ {
        move |source| StoreError::Shared {
            store: self.describe(),
            what,
            source,
        }
    }

    fn corrupt(&self, what: String) -> StoreError {
        StoreError::SharedCorrupt {
            store: self.describe(),
            what,
        }
    }

    /// Runs `op` on this handle's connection (connecting first if needed) within the timeout;
    /// any failure drops the connection.
    async fn run<T>(
        &self,
        what: &'static str,
        op: impl for<'c> FnOnce(&'c mut Conn) -> OpFuture<'c, T>,
    ) -> Result<T, StoreError> {
        let mut slot = self.conn.lock().await;
        let res = tokio::time::timeout(self.timeout, async {
            if slot.is_none() {
                let start = self.current.load(Ordering::SeqCst);
                let (i, c) = crate::store_nodes::connect_first(&self.nodes, start, session).await?;
                self.current.store(i, Ordering::SeqCst);
                *slot = Some(c);
            }
            op(slot.as_mut().expect("connected")).await
        })
        .await;
        // A broken or stalled connection: its node is tried last next time. A server's
        // refusal (a statement's error) says nothing about the node.
        let move_on = || {
            let next = (self.current.load(Ordering::SeqCst) + 1) % self.nodes.len();
            self.current.store(next, Ordering::SeqCst);
        };
        match res {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                *slot = None;
                if !matches!(e, mysql_async::Error::Server(_)) {
                    move_on();
                }
                Err(self.err(what)(e))
            }
            Err(_) => {
                *slot = None;
                move_on();
                Err(StoreError::SharedTimeout {
                    store: self.describe(),
                    what,
                    ms: self.timeout.as_millis() as u64,
                })
            }
        }
    }

    /// Creates the tables if missing and this fleet's row with `seed` (epochs 1..); refuses a
    /// fleet that exists (`routes init` never overwrites).
    pub async fn create(&self, seed: &[(String, String, Mode)]) -> Result<u64, StoreError> {
        let fleet = self.fleet.clone();
        let seed = seed.to_vec();
        let made = self
            .run("creating the fleet", move |c| {
                Box::pin(async move {
                    for sql in SCHEMA {
                        c.query_drop(*sql).await?;
                    }
                    c.query_drop("BEGIN").await?;
                    let exists: Option<i64> = c
                        .exec_first(
                            "SELECT last_epoch FROM sqlproxy_fleets WHERE fleet = ? FOR UPDATE",
                            (&fleet,),
                        )
                        .await?;
                    if exists.is_some() {
                        c.query_drop("ROLLBACK").await?;
                        return Ok(None);
                    }
                    let mut epoch = 0i64;
                    for (db, side, mode) in &seed {
                        epoch += 1;
                        let resume = if *mode == Mode::Paused {
                            Mode::Open
                        } else {
                            *mode
                        };
                        c.exec_drop(
                            "INSERT INTO sqlproxy_routes VALUES (?, ?, ?, ?, ?, ?, NOW(6))",
                            (&fleet, db, side, mode.as_str(), resume.as_str(), epoch),
                        )
                        .await?;
                    }
                    c.exec_drop(
                        "INSERT INTO sqlproxy_fleets VALUES (?, ?, NOW(6))",
                        (&fleet, epoch),
                    )
                    .await?;
                    c.query_drop("COMMIT").await?;
                    Ok(Some(epoch as u64))
                })
            })
            .await?;
        made.ok_or_else(|| StoreError::FleetExists {
            store: self.describe(),
        })
    }

    /// Fails closed: the schema must be ours and the fleet must exist.
    pub async fn check(&self) -> Result<(), StoreError> {
        let fleet = self.fleet.clone();
        let (format, fleet_row) = self
            .run("checking the schema", move |c| {
                Box::pin(async move {
                    let tables: Option<i64> = c
                        .query_first(
                            "SELECT COUNT(*) FROM information_schema.tables \
                             WHERE table_schema = DATABASE() AND table_name = 'sqlproxy_schema'",
                        )
                        .await?;
                    if tables != Some(1) {
                        return Ok((None, None));
                    }
                    let format: Option<i64> = c
                        .query_first("SELECT format FROM sqlproxy_schema WHERE id = 1")
                        .await?;
                    let row: Option<i64> = c
                        .exec_first(
                            "SELECT last_epoch FROM sqlproxy_fleets WHERE fleet = ?",
                            (&fleet,),
                        )
                        .await?;
                    Ok((format, row))
                })
            })
            .await?;
        match format {
            Some(SHARED_FORMAT) => {}
            Some(f) => {
                return Err(self.corrupt(format!(
                    "schema format {f}, this sql-proxy reads format {SHARED_FORMAT}"
                )))
            }
            None => {
                return Err(StoreError::NoFleet {
                    store: self.describe(),
                })
            }
        }
        if fleet_row.is_none() {
            return Err(StoreError::NoFleet {
                store: self.describe(),
            });
        }
        Ok(())
    }

    fn parse_row(
        &self,
        row: (String, String, String, String, i64),
    ) -> Result<StoredRoute, StoreError> {
        let (database, side, mode, resume, epoch) = row;
        StoredRoute::from_row(database, side, &mode, &resume, epoch)
            .map_err(|what| self.corrupt(what))
    }

    /// The fleet's last epoch and every route changed after `since`, in one consistent read.
    pub async fn changes_since(&self, since: u64) -> Result<Snapshot, StoreError> {
        let fleet = self.fleet.clone();
        let (last, rows) = self
            .run("reading routes", move |c| {
                Box::pin(async move {
                    c.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
                        .await?;
                    let last: Option<i64> = c
                        .exec_first(
                            "SELECT last_epoch FROM sqlproxy_fleets WHERE fleet = ?",
                            (&fleet,),
                        )
                        .await?;
                    let rows: Vec<(String, String, String, String, i64)> = c
                        .exec(
                            "SELECT db, side, mode, resume_mode, epoch FROM sqlproxy_routes \
                             WHERE fleet = ? AND epoch > ? ORDER BY epoch",
                            (&fleet, since as i64),
                        )
                        .await?;
                    c.query_drop("COMMIT").await?;
                    Ok((last, rows))
                })
            })
            .await?;
        let Some(last) = last else {
            return Err(StoreError::NoFleet {
                store: self.describe(),
            });
        };
        let changed = rows
            .into_iter()
            .map(|r| self.parse_row(r))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(r) = changed.iter().find(|r| r.epoch as i64 > last) {
            return Err(self.corrupt(format!(
                "database {:?} has epoch {} above the fleet's last epoch {last}",
                r.database, r.epoch
            )));
        }
        Ok(Snapshot {
            last_epoch: last as u64,
            changed,
        })
    }

    /// Every stored route of the fleet.
    pub async fn load(&self) -> Result<Vec<StoredRoute>, StoreError> {
        let mut routes = self.changes_since(0).await?.changed;
        routes.sort_by(|a, b| a.database.cmp(&b.database));
        Ok(routes)
    }

    /// Commits one route under the fleet's next epoch if the stored route still has epoch
    /// `expected` (0: not stored yet). Retries once on a deadlock or certification failure.
    pub async fn commit(
        &self,
        database: &str,
        expected: u64,
        side: &str,
        mode: Mode,
        resume_mode: Mode,
    ) -> Result<Committed, StoreError> {
        for attempt in 0..2 {
            let (fleet, db, side) = (self.fleet.clone(), database.to_string(), side.to_string());
            let res = self
                .run("committing a route", move |c| {
                    Box::pin(async move {
                        c.query_drop("BEGIN").await?;
                        let last: Option<i64> = c
                            .exec_first(
                                "SELECT last_epoch FROM sqlproxy_fleets WHERE fleet = ? FOR UPDATE",
                                (&fleet,),
                            )
                            .await?;
                        let Some(last) = last else {
                            c.query_drop("ROLLBACK").await?;
                            return Ok(None);
                        };
                        let cur: Option<(String, String, String, String, i64)> = c
                            .exec_first(
                                "SELECT db, side, mode, resume_mode, epoch FROM sqlproxy_routes \
                                 WHERE fleet = ? AND db = ? FOR UPDATE",
                                (&fleet, &db),
                            )
                            .await?;
                        if cur.as_ref().map_or(0, |r| r.4) != expected as i64 {
                            c.query_drop("ROLLBACK").await?;
                            return Ok(Some(Err(cur)));
                        }
                        let epoch = last + 1;
                        c.exec_drop(
                            "INSERT INTO sqlproxy_routes VALUES (?, ?, ?, ?, ?, ?, NOW(6)) \
                             ON DUPLICATE KEY UPDATE side = VALUES(side), mode = VALUES(mode), \
                             resume_mode = VALUES(resume_mode), epoch = VALUES(epoch), \
                             updated_at = VALUES(updated_at)",
                            (
                                &fleet,
                                &db,
                                &side,
                                mode.as_str(),
                                resume_mode.as_str(),
                                epoch,
                            ),
                        )
                        .await?;
                        c.exec_drop(
                            "UPDATE sqlproxy_fleets SET last_epoch = ? WHERE fleet = ?",
                            (epoch, &fleet),
                        )
                        .await?;
                        c.query_drop("COMMIT").await?;
                        Ok(Some(Ok(epoch as u64)))
                    })
                })
                .await;
            match res {
                Ok(None) => {
                    return Err(StoreError::NoFleet {
                        store: self.describe(),
                    })
                }
                Ok(Some(Ok(epoch))) => return Ok(Committed::Done(epoch)),
                Ok(Some(Err(cur))) => {
                    return Ok(Committed::Conflict(
                        cur.map(|r| self.parse_row(r)).transpose()?,
                    ))
                }
                Err(StoreError::Shared {
                    source: mysql_async::Error::Server(ref e),
                    ..
                }) if e.code == ER_LOCK_DEADLOCK && attempt == 0 => continue,
                Err(e) => return Err(e),
            }
        }
        unreachable!("the loop returns on its second attempt")
    }

    /// Registers or renews this instance's lease (`lease` from now, by the store's clock) and
    /// records the epoch it acknowledges. Also forgets instances expired for a day.
    pub async fn renew(
        &self,
        instance: &str,
        endpoints: &str,
        lease: Duration,
        acked: u64,
    ) -> Result<(), StoreError> {
        let (fleet, instance, endpoints) = (
            self.fleet.clone(),
            instance.to_string(),
            endpoints.to_string(),
        );
        let micros = lease.as_micros() as i64;
        self.run("renewing the lease", move |c| {
            Box::pin(async move {
                c.exec_drop(
                    format!(
                        "INSERT INTO sqlproxy_instances VALUES (?, ?, ?, ?, \
                         NOW(6) + INTERVAL {micros} MICROSECOND, ?, NOW(6), NOW(6)) \
                         ON DUPLICATE KEY UPDATE endpoints = VALUES(endpoints), pid = VALUES(pid), \
                         lease_expires = VALUES(lease_expires), \
                         acked_epoch = GREATEST(acked_epoch, VALUES(acked_epoch)), \
                         renewed_at = VALUES(renewed_at)"
                    ),
                    (
                        &fleet,
                        &instance,
                        &endpoints,
                        std::process::id(),
                        acked as i64,
                    ),
                )
                .await
            })
        })
        .await
    }

    /// Records the epoch this instance acknowledges (never lowers it).
    pub async fn ack(&self, instance: &str, acked: u64) -> Result<(), StoreError> {
        let (fleet, instance) = (self.fleet.clone(), instance.to_string());
        self.run("acknowledging an epoch", move |c| {
            Box::pin(async move {
                c.exec_drop(
                    "UPDATE sqlproxy_instances SET acked_epoch = GREATEST(acked_epoch, ?) \
                     WHERE fleet = ? AND instance = ?",
                    (acked as i64, &fleet, &instance),
                )
                .await
            })
        })
        .await
    }

    /// Removes this instance (a clean stop: a switch stops waiting for it at once).
    pub async fn deregister(&self, instance: &str) -> Result<(), StoreError> {
        let (fleet, instance) = (self.fleet.clone(), instance.to_string());
        self.run("deregistering", move |c| {
            Box::pin(async move {
                c.exec_drop(
                    "DELETE FROM sqlproxy_instances WHERE fleet = ? AND instance = ?",
                    (&fleet, &instance),
                )
                .await
            })
        })
        .await
    }

    /// Forgets instances whose lease ran out a day ago (at each start).
    pub async fn forget_expired(&self) -> Result<(), StoreError> {
        let fleet = self.fleet.clone();
        self.run("forgetting expired instances", move |c| {
            Box::pin(async move {
                c.exec_drop(
                    "DELETE FROM sqlproxy_instances WHERE fleet = ? \
                     AND lease_expires < NOW(6) - INTERVAL 1 DAY",
                    (&fleet,),
                )
                .await
            })
        })
        .await
    }

    /// Every instance of the fleet, live or not.
    pub async fn instances(&self) -> Result<Vec<InstanceRow>, StoreError> {
        let fleet = self.fleet.clone();
        let rows: Vec<(String, String, u32, i64, i64)> = self
            .run("reading instances", move |c| {
                Box::pin(async move {
                    c.exec(
                        "SELECT instance, endpoints, pid, acked_epoch, \
                         TIMESTAMPDIFF(MICROSECOND, NOW(6), lease_expires) \
                         FROM sqlproxy_instances WHERE fleet = ? ORDER BY instance",
                        (&fleet,),
                    )
                    .await
                })
            })
            .await?;
        Ok(rows
            .into_iter()
            .map(|(instance, endpoints, pid, acked, left)| InstanceRow {
                instance,
                endpoints,
                pid,
                acked_epoch: acked.max(0) as u64,
                live: left > 0,
                lease_left_ms: left / 1000,
            })
            .collect())
    }
}
