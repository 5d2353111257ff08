//! What a database is besides rows: its charset and collation, its users (with the *same*
//! password hash, never a plaintext password), tables' DDL, views, triggers, routines and
//! events, read from the source and replayed on the destination. Also per-table checksums.

use mysql_async::prelude::*;
use mysql_async::{Conn, Row};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("{side} server: {context}: {source}")]
    Sql {
        side: Side,
        context: String,
        #[source]
        source: mysql_async::Error,
    },
    #[error("database `{db}` does not exist on the source server")]
    NoSuchDatabase { db: String },
    #[error("table `{table}`: checksum after copy differs: source {src}, destination {dst}")]
    ChecksumMismatch {
        table: String,
        src: String,
        dst: String,
    },
    #[error("views that could not be created (circular or missing dependencies): {0}")]
    Views(String),
    #[error("journal: {0}")]
    Journal(#[from] crate::journal::JournalError),
    #[error("destination server: load method `{method}` is not available: {why}")]
    LoadMethod { method: String, why: String },
    #[error("change capture of `{db}`: {reason}")]
    Capture { db: String, reason: String },
    #[error(
        "change capture of `{db}`: the source no longer has its binary log at {at} ({message}); \
         the database is copied again"
    )]
    BinlogGone {
        db: String,
        /// The position asked for (`file:offset`).
        at: String,
        message: String,
    },
}

/// Which server an error comes from: the operator needs to know where to look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Source,
    Destination,
}

impl std::fmt::Display for Side {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Side::Source => "source",
            Side::Destination => "destination",
        })
    }
}

pub type Result<T> = std::result::Result<T, DbError>;

/// Adds side and context to a mysql_async error.
pub fn ctx(
    side: Side,
    context: impl FnOnce() -> String,
) -> impl FnOnce(mysql_async::Error) -> DbError {
    move |source| DbError::Sql {
        side,
        context: context(),
        source,
    }
}

/// Quotes an identifier with backticks.
pub fn ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

/// Quotes a string literal (for account names in SHOW CREATE USER and the like).
pub fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// A table's column list (without generated columns) and primary key.
#[derive(Debug, Clone, PartialEq)]
pub struct TableInfo {
    pub name: String,
    pub columns: Vec<String>,
    /// Whether each of `columns` may hold NULL.
    pub nullable: Vec<bool>,
    /// Each column's `DATA_TYPE` (lower case: `int`, `float`, `varchar`, …).
    pub types: Vec<String>,
    /// InnoDB: reads see the copy's snapshot. MyISAM, Aria and the like have none: a
    /// write during the copy can land between the stream and a later read.
    pub snapshot_reads: bool,
    /// Primary key columns in key order; empty when the table has none.
    pub pk: Vec<String>,
    /// Estimated bytes (information_schema), for dry runs and progress.
    pub approx_bytes: u64,
    pub approx_rows: u64,
}

impl TableInfo {
    /// What each column is read as, by a copy and by [`table_checksum`]: the column itself,
    /// except
    /// - `FLOAT`, whose text form keeps only 6 significant digits (a copy through it would
    ///   round the value, and a checksum over it would not see that): read as a `DOUBLE`
    ///   (`col + 0e0`, exact for every float), whose text form round-trips, and stored back
    ///   into the FLOAT column as the same value;
    /// - MariaDB's `INET6`/`INET4`/`UUID`: the copy writes with a binary client charset, and
    ///   these types take a binary string as their packed form, not their text: read packed.
    pub fn read_exprs(&self) -> Vec<String> {
        self.columns
            .iter()
            .zip(&self.types)
            .map(|(c, ty)| match ty.as_str() {
                "float" => format!("({} + 0e0)", ident(c)),
                "inet6" | "uuid" => format!("CAST({} AS BINARY(16))", ident(c)),
                "inet4" => format!("CAST({} AS BINARY(4))", ident(c)),
                _ => ident(c),
            })
            .collect()
    }
}

/// Base tables of `db` with their columns and primary keys.
pub async fn tables(conn: &mut Conn, side: Side, db: &str) -> Result<Vec<TableInfo>> {
    let rows: Vec<(String, u64, u64, Option<String>)> = conn
        .exec(
            "SELECT TABLE_NAME, COALESCE(DATA_LENGTH, 0), COALESCE(TABLE_ROWS, 0), ENGINE
             FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_TYPE = 'BASE TABLE'
             ORDER BY TABLE_NAME",
            (db,),
        )
        .await
        .map_err(ctx(side, || format!("listing tables of `{db}`")))?;
    let cols: Vec<(String, String, String, String, String)> = conn
        .exec(
            "SELECT TABLE_NAME, COLUMN_NAME, EXTRA, IS_NULLABLE, DATA_TYPE FROM information_schema.COLUMNS
             WHERE TABLE_SCHEMA = ? ORDER BY TABLE_NAME, ORDINAL_POSITION",
            (db,),
        )
        .await
        .map_err(ctx(side, || format!("listing columns of `{db}`")))?;
    let pks: Vec<(String, String)> = conn
        .exec(
            "SELECT TABLE_NAME, COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE
             WHERE TABLE_SCHEMA = ? AND CONSTRAINT_NAME = 'PRIMARY'
             ORDER BY TABLE_NAME, ORDINAL_POSITION",
            (db,),
        )
        .await
        .map_err(ctx(side, || format!("listing primary keys of `{db}`")))?;
    Ok(rows
        .into_iter()
        .map(|(name, bytes, nrows, engine)| {
            let stored: Vec<_> = cols
                .iter()
                .filter(|(t, _, extra, _, _)| {
                    let e = extra.to_ascii_uppercase();
                    *t == name
                        && !e.contains("GENERATED")
                        && !e.contains("PERSISTENT")
                        && !e.contains("VIRTUAL")
                })
                .collect();
            TableInfo {
                columns: stored.iter().map(|(_, c, _, _, _)| c.clone()).collect(),
                nullable: stored.iter().map(|(_, _, _, n, _)| n != "NO").collect(),
                types: stored
                    .iter()
                    .map(|(_, _, _, _, ty)| ty.to_ascii_lowercase())
                    .collect(),
                snapshot_reads: engine.is_some_and(|e| e.eq_ignore_ascii_case("InnoDB")),
                pk: pks
                    .iter()
                    .filter(|(t, _)| *t == name)
                    .map(|(_, c)| c.clone())
                    .collect(),
                name,
                approx_bytes: bytes,
                approx_rows: nrows,
            }
        })
        .collect())
}

/// A checksum of a table's content, independent of row order and storage format:
/// row count, sum and xor of a per-row CRC32 over all (non-generated) columns:
/// `CRC32(CONCAT_WS(0x1f, c1, …, cn, CONCAT(ISNULL(n1), …)))`, the NULL flags only of the
/// columns that may hold NULL (`CONCAT_WS` skips NULLs; the flags tell where they were).
pub async fn table_checksum(
    conn: &mut Conn,
    side: Side,
    db: &str,
    t: &TableInfo,
) -> Result<String> {
    let cols = t.read_exprs();
    let nulls: Vec<String> = cols
        .iter()
        .zip(&t.nullable)
        .filter(|(_, n)| **n)
        .map(|(c, _)| format!("ISNULL({c})"))
        .collect();
    let flags = match nulls.is_empty() {
        true => String::new(),
        false => format!(", CONCAT({})", nulls.join(", ")),
    };
    let row = format!("CRC32(CONCAT_WS(0x1f, {}{flags}))", cols.join(", "));
    let sql = format!(
        "SELECT COUNT(*), COALESCE(SUM({row}), 0), COALESCE(BIT_XOR({row}), 0) FROM {}.{}",
        ident(db),
        ident(&t.name)
    );
    let r: Option<(u64, String, u64)> = conn
        .query_first(sql)
        .await
        .map_err(ctx(side, || format!("checksum of `{}`", t.name)))?;
    let (n, sum, xor) = r.unwrap_or((0, "0".into(), 0));
    Ok(format!("{n}:{sum}:{xor:08x}"))
}

/// [`table_checksum`] computed in the client over rows read with `character_set_results =
/// binary` (the text protocol's bytes are what `CONCAT_WS` with the binary separator sees, so
/// the two agree for the usual types). A copy feeds it the rows it streams anyway, which
/// spares the source server a second full scan; when the two could disagree (a value whose
/// text form differs from its string form), the caller falls back to [`table_checksum`].
#[derive(Debug, Clone)]
pub struct StreamChecksum {
    rows: u64,
    sum: u128,
    xor: u32,
    /// [`TableInfo::nullable`]: the columns whose NULL flag is part of the row.
    nullable: Vec<bool>,
    row: Vec<u8>,
    flags: Vec<u8>,
}

impl StreamChecksum {
    pub fn new(t: &TableInfo) -> StreamChecksum {
        StreamChecksum {
            rows: 0,
            sum: 0,
            xor: 0,
            nullable: t.nullable.clone(),
            row: Vec::new(),
            flags: Vec::new(),
        }
    }

    /// One row, its values in column order (`None` for NULL).
    pub fn add_row<'a>(&mut self, values: impl Iterator<Item = Option<&'a [u8]>>) {
        // CONCAT_WS(0x1f, v1, …, vn[, flags]): NULLs skipped, parts joined by 0x1f.
        self.row.clear();
        self.flags.clear();
        let mut parts = 0;
        for (i, v) in values.enumerate() {
            if let Some(b) = v {
                if parts > 0 {
                    self.row.push(0x1f);
                }
                self.row.extend_from_slice(b);
                parts += 1;
            }
            if self.nullable.get(i).copied().unwrap_or(true) {
                self.flags.push(if v.is_some() { b'0' } else { b'1' });
            }
        }
        if !self.flags.is_empty() {
            if parts > 0 {
                self.row.push(0x1f);
            }
            self.row.extend_from_slice(&self.flags);
        }
        let crc = crc32fast::hash(&self.row);
        self.rows += 1;
        self.sum += u128::from(crc);
        self.xor ^= crc;
    }

    /// The same text as [`table_checksum`].
    pub fn render(&self) -> String {
        format!("{}:{}:{:08x}", self.rows, self.sum, self.xor)
    }
}

/// Charset and collation of a database; `None` when it does not exist.
pub async fn schema_charset(
    conn: &mut Conn,
    side: Side,
    db: &str,
) -> Result<Option<(String, String)>> {
    conn.exec_first(
        "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME
         FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
        (db,),
    )
    .await
    .map_err(ctx(side, || format!("reading charset of `{db}`")))
}

/// The accounts a copy recreates, and what it left out.
#[derive(Debug, Clone, Default)]
pub struct UserCopy {
    /// `user@host` and the statements recreating it: `CREATE USER IF NOT EXISTS` as the
    /// server shows it (same hash, same host, `REQUIRE`, `ACCOUNT LOCK`, limits), the account
    /// line and the grants on the copied database.
    pub accounts: Vec<(String, Vec<String>)>,
    /// What was not replayed, and why (grants on other databases or global ones, roles,
    /// accounts without a password reachable from the network, accounts for host names).
    /// Never holds a hash.
    pub skipped: Vec<String>,
}

/// A host part that reaches only the server's own machine.
fn local_only(host: &str) -> bool {
    matches!(host, "localhost" | "127.0.0.1" | "::1")
}

/// Reads the accounts that have privileges on `db` ([`UserCopy`]): each account as
/// `SHOW CREATE USER` gives it (the host part, the hash, `REQUIRE SSL`, `ACCOUNT LOCK` kept),
/// and of `SHOW GRANTS` only the account line and the grants on `db` ([`super::grants`]).
/// An account without a password that the network could reach is not created.
pub async fn user_statements(conn: &mut Conn, db: &str) -> Result<UserCopy> {
    let escaped = db.replace('_', "\\_");
    let users: Vec<(String, String)> = conn
        .exec(
            "SELECT DISTINCT User, Host FROM mysql.db WHERE Db = ? OR Db = ?",
            (db, escaped.as_str()),
        )
        .await
        .map_err(ctx(Side::Source, || format!("listing users of `{db}`")))?;
    let mut out = UserCopy::default();
    for (user, host) in users {
        let account = format!("{}@{}", literal(&user), literal(&host));
        let name = format!("{user}@{host}");
        let create: Option<String> = conn
            .query_first(format!("SHOW CREATE USER {account}"))
            .await
            .map_err(ctx(Side::Source, || format!("SHOW CREATE USER {account}")))?;
        let grants: Vec<String> = conn
            .query(format!("SHOW GRANTS FOR {account}"))
            .await
            .map_err(ctx(Side::Source, || format!("SHOW GRANTS FOR {account}")))?;
        let Some(create) = create else { continue };
        if let Err(u @ sql_proxy::hosts::Unusable::HostName) =
            sql_proxy::hosts::usable_through_proxy(&host)
        {
            // Its clients reach the new side through the SQL proxy, which refuses it (it does
            // not resolve client names): fail closed on both sides, and say so.
            out.skipped.push(format!(
                "{name}: {}: not created (the SQL proxy refuses it too)",
                u.why()
            ));
            continue;
        }
        if !create.contains(" IDENTIFIED ") && !local_only(&host) {
            out.skipped.push(format!(
                "{name}: account without a password reachable from the network: not created"
            ));
            continue;
        }
        // Idempotent on re-run: an existing account keeps its hash, which is the same one.
        let mut stmts = vec![create.replacen("CREATE USER", "CREATE USER IF NOT EXISTS", 1)];
        for g in grants {
            match super::grants::classify(&g) {
                super::grants::Grant::Account => stmts.push(g),
                super::grants::Grant::Database(d) if super::grants::names_database(&d, db) => {
                    stmts.push(g)
                }
                _ => out.skipped.push(super::grants::describe(&name, &g)),
            }
        }
        out.accounts.push((name, stmts));
    }
    Ok(out)
}

/// Views, triggers, routines and events of `db`, as statements to replay on the destination
/// (each preceded by the sql_mode it was created with).
#[derive(Debug, Default, Clone)]
pub struct Objects {
    /// (name, CREATE statement)
    pub views: Vec<(String, String)>,
    /// (kind, name, sql_mode, CREATE statement)
    pub others: Vec<(&'static str, String, String, String)>,
}

pub async fn objects(conn: &mut Conn, db: &str) -> Result<Objects> {
    let src = Side::Source;
    let mut o = Objects::default();
    let views: Vec<String> = conn
        .exec(
            "SELECT TABLE_NAME FROM information_schema.VIEWS WHERE TABLE_SCHEMA = ?",
            (db,),
        )
        .await
        .map_err(ctx(src, || format!("listing views of `{db}`")))?;
    for v in views {
        let row: Option<Row> = conn
            .query_first(format!("SHOW CREATE VIEW {}.{}", ident(db), ident(&v)))
            .await
            .map_err(ctx(src, || format!("SHOW CREATE VIEW `{v}`")))?;
        if let Some(create) = row.and_then(|mut r| r.take::<String, _>(1)) {
            o.views.push((v, create));
        }
    }
    let mut named: Vec<(&'static str, String)> = Vec::new();
    let triggers: Vec<String> = conn
        .exec(
            "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = ?",
            (db,),
        )
        .await
        .map_err(ctx(src, || format!("listing triggers of `{db}`")))?;
    named.extend(triggers.into_iter().map(|t| ("TRIGGER", t)));
    let routines: Vec<(String, String)> = conn
        .exec(
            "SELECT ROUTINE_TYPE, ROUTINE_NAME FROM information_schema.ROUTINES
             WHERE ROUTINE_SCHEMA = ?",
            (db,),
        )
        .await
        .map_err(ctx(src, || format!("listing routines of `{db}`")))?;
    for (kind, name) in routines {
        named.push((
            if kind == "FUNCTION" {
                "FUNCTION"
            } else {
                "PROCEDURE"
            },
            name,
        ));
    }
    let events: Vec<String> = conn
        .exec(
            "SELECT EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA = ?",
            (db,),
        )
        .await
        .map_err(ctx(src, || format!("listing events of `{db}`")))?;
    named.extend(events.into_iter().map(|e| ("EVENT", e)));
    for (kind, name) in named {
        let row: Option<Row> = conn
            .query_first(format!("SHOW CREATE {kind} {}.{}", ident(db), ident(&name)))
            .await
            .map_err(ctx(src, || format!("SHOW CREATE {kind} `{name}`")))?;
        let Some(mut row) = row else { continue };
        // Column layout: TRIGGER (name, sql_mode, statement, …); PROCEDURE/FUNCTION (name,
        // sql_mode, statement, …); EVENT (name, sql_mode, time_zone, statement, …).
        let stmt_idx = if kind == "EVENT" { 3 } else { 2 };
        let sql_mode: String = row.take(1).unwrap_or_default();
        let Some(stmt) = row.take::<Option<String>, _>(stmt_idx).flatten() else {
            continue; // no privilege to see the body: nothing faithful to replay
        };
        o.others.push((kind, name, sql_mode, stmt));
    }
    Ok(o)
}

/// Replays views (retrying until dependencies resolve) and the other objects on `dst`, which
/// must have `db` as its current database.
pub async fn create_objects(dst: &mut Conn, o: &Objects) -> Result<()> {
    let d = Side::Destination;
    let mut pending: Vec<&(String, String)> = o.views.iter().collect();
    while !pending.is_empty() {
        let mut failed = Vec::new();
        let mut last_err = None;
        for v in &pending {
            let stmt = v.1.replacen("CREATE ", "CREATE OR REPLACE ", 1);
            if let Err(e) = dst.query_drop(stmt).await {
                last_err = Some(e);
                failed.push(*v);
            }
        }
        if failed.len() == pending.len() {
            let names: Vec<_> = failed.iter().map(|v| v.0.as_str()).collect();
            return Err(DbError::Views(format!(
                "{}: {}",
                names.join(", "),
                last_err.map(|e| e.to_string()).unwrap_or_default()
            )));
        }
        pending = failed;
    }
    for (kind, name, sql_mode, stmt) in &o.others {
        dst.query_drop(format!("DROP {kind} IF EXISTS {}", ident(name)))
            .await
            .map_err(ctx(d, || format!("DROP {kind} `{name}`")))?;
        dst.query_drop(format!("SET SESSION sql_mode = {}", literal(sql_mode)))
            .await
            .map_err(ctx(d, || format!("sql_mode for {kind} `{name}`")))?;
        dst.query_drop(stmt.as_str())
            .await
            .map_err(ctx(d, || format!("creating {kind} `{name}`")))?;
    }
    dst.query_drop("SET SESSION sql_mode = 'NO_AUTO_VALUE_ON_ZERO'")
        .await
        .map_err(ctx(d, || "restoring sql_mode".into()))?;
    Ok(())
}
