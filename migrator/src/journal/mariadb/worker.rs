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
}

pub(super) enum Startup {
    Runtime(std::io::Error),
    Connect(mysql_async::Error),
}

/// The journal's thread: a current-thread runtime and one connection, serving requests until
/// the journal is dropped.
pub(super) fn serve(
    opts: Opts,
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
    let mut conn = match rt.block_on(connect(&opts)) {
        Ok(c) => Some(c),
        Err(e) => {
            let _ = ready.send(Err(Startup::Connect(e)));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    // Inside a transaction the caller opened (`START TRANSACTION` … `COMMIT`/`ROLLBACK`), a
    // deadlock rolled the whole transaction back: the statement is not retried alone.
    let mut in_tx = false;
    for req in rx {
        if let Op::Text(sql) = &req.op {
            let head = sql.trim_start().to_ascii_uppercase();
            if head.starts_with("START TRANSACTION") || head.starts_with("BEGIN") {
                in_tx = true;
            } else if head.starts_with("COMMIT") || head.starts_with("ROLLBACK") {
                in_tx = false;
            }
        }
        let r = rt.block_on(run(&mut conn, &opts, &req.op, in_tx));
        let _ = req.reply.send(r);
    }
    if let Some(c) = conn.take() {
        let _ = rt.block_on(c.disconnect());
    }
}

/// Connects; a missing database is created first (as the SQLite journal creates its file).
async fn connect(opts: &Opts) -> std::result::Result<Conn, mysql_async::Error> {
    match Conn::new(opts.clone()).await {
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
            Conn::new(opts.clone()).await
        }
        other => other,
    }
}

/// Runs one operation, reconnecting first when the last one lost the connection, and retrying
/// a statement the server rolled back for a deadlock or a certification conflict.
async fn run(
    conn: &mut Option<Conn>,
    opts: &Opts,
    op: &Op,
    in_tx: bool,
) -> std::result::Result<Reply, mysql_async::Error> {
    let mut attempt = 0;
    loop {
        let c = match conn {
            Some(c) => c,
            None => conn.insert(connect(opts).await?),
        };
        match once(c, op).await {
            Err(mysql_async::Error::Server(e))
                if e.code == ER_LOCK_DEADLOCK && attempt < CONFLICT_RETRIES && !in_tx =>
            {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(5 << attempt)).await;
            }
            Err(e @ mysql_async::Error::Server(_)) => return Err(e),
            Err(e) => {
                // The connection may be broken: the next call opens a new one.
                *conn = None;
                return Err(e);
            }
            Ok(r) => return Ok(r),
        }
    }
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
                rows: Vec::new(),
            })
        }
        Op::Query(sql, params) => Ok(Reply {
            rows: c.exec(sql.as_ref(), params.clone()).await?,
            ..Reply::default()
        }),
    }
}
