//! The MariaDB journal's connection thread: a current-thread tokio runtime and one connection,
//! serving one statement at a time for the synchronous store (why: `mod.rs`).

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder, Params, Row};
use std::borrow::Cow;
use std::sync::mpsc;
use std::time::Duration;

const ER_BAD_DB_ERROR: u16 = 1049;
pub(super) const ER_DUP_ENTRY: u16 = 1062;
const ER_LOCK_DEADLOCK: u16 = 1213;
const ER_UNKNOWN_SYSTEM_VARIABLE: u16 = 1193;
/// Attempts after a deadlock or certification conflict (the statement was rolled back).
const CONFLICT_RETRIES: u32 = 4;

pub(super) struct Request {
    pub op: Op,
    pub reply: mpsc::SyncSender<std::result::Result<Reply, mysql_async::Error>>,
}

pub(super) enum Op {
    /// Statements without parameters over the text protocol (DDL, `;`-separated).
    Text(Cow<'static, str>),
    /// A prepared statement: rows changed (matched) and the last insert id.
    Exec(Cow<'static, str>, Params),
    /// A prepared statement: the rows it returns.
    Query(Cow<'static, str>, Params),
}

#[derive(Default)]
pub(super) struct Reply {
    pub affected: u64,
    pub last_id: Option<u64>,
    pub rows: Vec<Row>,
    /// The connection broke during the statement and it ran again on another node: the first
    /// attempt may have been applied.
    pub reconnected: bool,
}

pub(super) enum Startup {
    Runtime(std::io::Error),
    Connect(mysql_async::Error),
}

/// The journal's thread: a current-thread runtime and one connection (to the first of `nodes`
/// that answers), serving requests until the journal is dropped.
pub(super) fn serve(
    nodes: Vec<Opts>,
    rx: mpsc::Receiver<Request>,
    ready: mpsc::SyncSender<std::result::Result<(), Startup>>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(Startup::Runtime(e)));
            return;
        }
    };
    let mut link = Link {
        nodes,
        current: 0,
        conn: None,
    };
    if let Err(e) = rt.block_on(link.connect()) {
        let _ = ready.send(Err(Startup::Connect(e)));
        return;
    }
    let _ = ready.send(Ok(()));
    // Inside a transaction the caller opened (`START TRANSACTION` … `COMMIT`/`ROLLBACK`), a
    // deadlock rolled the whole transaction back: the statement is not retried alone. The
    // `COMMIT` itself belongs to the transaction: a Galera certification failure at commit
    // must reach the caller (run again, a bare `COMMIT` would succeed on nothing and report a
    // rolled-back transaction as committed).
    let mut in_tx = false;
    for req in rx {
        let mut ends_tx = false;
        if let Op::Text(sql) = &req.op {
            let head = sql.trim_start().to_ascii_uppercase();
            if head.starts_with("START TRANSACTION") || head.starts_with("BEGIN") {
                in_tx = true;
            } else if head.starts_with("COMMIT") || head.starts_with("ROLLBACK") {
                ends_tx = true;
            }
        }
        let r = rt.block_on(link.run(&req.op, in_tx));
        if ends_tx {
            in_tx = false;
        }
        let _ = req.reply.send(r);
    }
    if let Some(c) = link.conn.take() {
        let _ = rt.block_on(c.disconnect());
    }
}

/// The connection and the nodes it may be made to: one server, or the nodes of one Galera
/// cluster (same database and account on each).
struct Link {
    nodes: Vec<Opts>,
    /// The node connected to last (tried first next time).
    current: usize,
    conn: Option<Conn>,
}

impl Link {
    /// Connects to the first node that answers, starting with the current one.
    /// (A refused login or a bad database is the same on every node: said at once.)
    async fn connect(&mut self) -> std::result::Result<&mut Conn, mysql_async::Error> {
        let (i, c) =
            sql_proxy::store_nodes::connect_first(&self.nodes, self.current, connect).await?;
        self.current = i;
        Ok(self.conn.insert(c))
    }

    /// Runs one operation: reconnects first when the last one lost the connection; retries a
    /// statement the server rolled back for a deadlock or a certification conflict; and, when
    /// the connection breaks during the statement and other nodes are named, runs it once more
    /// on the next node that answers ([`Reply::reconnected`] tells the caller, for whom "not
    /// applied" may then mean "applied by the first attempt").
    /// Inside a transaction the caller opened (`in_tx`) neither retry applies: a deadlock or a
    /// lost connection ended the whole transaction, which the caller must redo.
    async fn run(
        &mut self,
        op: &Op,
        in_tx: bool,
    ) -> std::result::Result<Reply, mysql_async::Error> {
        let mut conflicts = 0;
        let mut failovers = 0;
        loop {
            let c = match self.conn {
                Some(ref mut c) => c,
                None => self.connect().await?,
            };
            match once(c, op).await {
                Err(mysql_async::Error::Server(e))
                    if e.code == ER_LOCK_DEADLOCK && conflicts < CONFLICT_RETRIES && !in_tx =>
                {
                    conflicts += 1;
                    tokio::time::sleep(Duration::from_millis(5 << conflicts)).await;
                }
                Err(e @ mysql_async::Error::Server(_)) => return Err(e),
                Err(e) => {
                    // The connection is broken: the next attempt opens a new one.
                    self.conn = None;
                    if in_tx || failovers + 1 >= self.nodes.len() {
                        return Err(e);
                    }
                    failovers += 1;
                    self.current = (self.current + 1) % self.nodes.len();
                }
                Ok(mut r) => {
                    r.reconnected = failovers > 0;
                    return Ok(r);
                }
            }
        }
    }
}

/// Connects; a missing database is created first (as the SQLite journal creates its file).
/// On a Galera node the session waits for the cluster before reads and updates
/// (`wsrep_sync_wait`): a value committed through another node is never read stale.
async fn connect(opts: &Opts) -> std::result::Result<Conn, mysql_async::Error> {
    let mut c = match Conn::new(opts.clone()).await {
        Err(mysql_async::Error::Server(e)) if e.code == ER_BAD_DB_ERROR => {
            let db = opts.db_name().unwrap_or_default();
            let mut bare =
                Conn::new(OptsBuilder::from_opts(opts.clone()).db_name(None::<String>)).await?;
            bare.query_drop(format!(
                "CREATE DATABASE IF NOT EXISTS `{}` CHARACTER SET utf8mb4",
                db.replace('`', "``")
            ))
            .await?;
            bare.disconnect().await?;
            Conn::new(opts.clone()).await?
        }
        other => other?,
    };
    match c.query_drop("SET SESSION wsrep_sync_wait = 3").await {
        // A server built without Galera support has no such variable: nothing to wait for.
        Err(mysql_async::Error::Server(e)) if e.code == ER_UNKNOWN_SYSTEM_VARIABLE => {}
        other => other?,
    }
    Ok(c)
}

async fn once(c: &mut Conn, op: &Op) -> std::result::Result<Reply, mysql_async::Error> {
    match op {
        Op::Text(sql) => {
            c.query_drop(sql.as_ref()).await?;
            Ok(Reply::default())
        }
        Op::Exec(sql, params) => {
            c.exec_drop(sql.as_ref(), params.clone()).await?;
            Ok(Reply {
                affected: c.affected_rows(),
                last_id: c.last_insert_id(),
                ..Reply::default()
            })
        }
        Op::Query(sql, params) => Ok(Reply {
            rows: c.exec(sql.as_ref(), params.clone()).await?,
            ..Reply::default()
        }),
    }
}
