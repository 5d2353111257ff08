//! A database and its source server read over MariaDB's own tables (`mysql.user`,
//! `mysql.db`, `information_schema`), with an account that can read them.
//!
//! Per database ([`scan_database`]):
//! - `db.auth_plugin` (blocked): an account of the database (its user, or any account with a
//!   grant on it) whose authentication plugin the SQL proxy cannot carry: it authenticates
//!   `mysql_native_password` from the stored hash, so `mysql_old_password`,
//!   `caching_sha2_password`, `ed25519`, `unix_socket` ... cannot log in through it;
//! - `db.no_pk` (warn): a table without a primary key: changes cannot be applied by key, the
//!   table is copied again inside the freeze;
//! - `db.no_snapshot` (warn): a table whose engine has no consistent snapshot (MyISAM, Aria,
//!   MEMORY ...): copied again inside the freeze;
//! - `db.definer` (blocked): a view, routine, trigger or event whose definer does not exist on
//!   the destination (it fails there with "The user specified as a definer does not exist");
//!   without a destination to ask, a definer other than the database's own account is a warn.
//!
//! Per source server ([`scan_server`]): `server.no_binlog`, `server.binlog_format`,
//! `server.binlog_row_image`, `server.server_id` (warn): change capture needs a ROW binary log
//! with FULL row images and a server id; without it, databases are copied again table by table
//! where their checksum changed (a longer freeze).

use super::{Finding, PreflightError, Result, Severity, Where};
use mysql_async::prelude::*;
use mysql_async::{Conn, Opts};
use serde::{Deserialize, Serialize};

/// Plugins the SQL proxy can authenticate through.
const PROXY_PLUGINS: &[&str] = &["", "mysql_native_password"];

/// A database to scan, as the inventory knows it.
#[derive(Debug, Clone)]
pub struct DbTarget {
    /// The source SQL server's id (inventory).
    pub server: String,
    pub database: String,
    /// The database's one account (inventory).
    pub user: String,
    /// Average write rate, bytes per second (inventory; 0 when unknown).
    pub write_rate: f64,
}

/// One database's scan.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DbScan {
    pub database: String,
    pub server: String,
    pub tables: u64,
    /// Data and indexes.
    pub bytes: u64,
    /// Bytes of the tables copied again inside the freeze (no key, no snapshot).
    pub recopy_bytes: u64,
    /// Bytes per second: measured on the server's binary log when `write_rate_measured`,
    /// else the inventory's figure.
    pub write_rate: f64,
    #[serde(default)]
    pub write_rate_measured: bool,
    pub findings: Vec<Finding>,
}

/// One source server's change-capture settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerScan {
    pub server: String,
    pub log_bin: bool,
    pub binlog_format: String,
    pub binlog_row_image: String,
    pub server_id: u64,
    /// Whether change capture can follow its databases.
    pub capture: bool,
    pub findings: Vec<Finding>,
}

fn db_err(
    server: &str,
    what: impl Into<String>,
) -> impl FnOnce(mysql_async::Error) -> PreflightError {
    let (server, what) = (server.to_string(), what.into());
    move |source| PreflightError::Db {
        server,
        what,
        source,
    }
}

/// Connects to a server (`id` names it in errors).
pub async fn connect(id: &str, opts: &Opts) -> Result<Conn> {
    Conn::new(opts.clone())
        .await
        .map_err(db_err(id, "connecting"))
}

/// Reads a source server's binary log settings (see the file's documentation).
pub async fn scan_server(id: &str, conn: &mut Conn) -> Result<ServerScan> {
    let row: Option<(u64, Option<String>, Option<String>, u64)> = conn
        .query_first("SELECT @@log_bin, @@binlog_format, @@binlog_row_image, @@server_id")
        .await
        .map_err(db_err(id, "reading the binary log settings"))?;
    let (log_bin, format, image, server_id) = row.unwrap_or_default();
    let (format, image) = (format.unwrap_or_default(), image.unwrap_or_default());
    let mut s = ServerScan {
        server: id.to_string(),
        log_bin: log_bin != 0,
        binlog_format: format.clone(),
        binlog_row_image: image.clone(),
        server_id,
        capture: false,
        findings: Vec::new(),
    };
    let fallback = "without change capture its databases are copied again table by table where \
                    their checksum changed, inside the freeze";
    let mut warn = |rule: &str, found: String, fix: &str| {
        s.findings.push(Finding {
            rule: rule.into(),
            severity: Severity::Warn,
            at: Where::Server { server: id.into() },
            found,
            fix: format!("{fix}; {fallback}"),
        })
    };
    if !s.log_bin {
        warn(
            "server.no_binlog",
            "log_bin=OFF".into(),
            "enable the binary log (log_bin, binlog_format=ROW, a server_id; a restart)",
        );
    } else {
        if !format.eq_ignore_ascii_case("ROW") {
            warn(
                "server.binlog_format",
                format!("binlog_format={format}"),
                "SET GLOBAL binlog_format = 'ROW' (and in the server's configuration)",
            );
        }
        if !image.eq_ignore_ascii_case("FULL") {
            warn(
                "server.binlog_row_image",
                format!("binlog_row_image={image}"),
                "SET GLOBAL binlog_row_image = 'FULL' (and in the server's configuration)",
            );
        }
        if server_id == 0 {
            warn(
                "server.server_id",
                "server_id=0".into(),
                "give the server a non-zero server_id (replicas are refused without one)",
            );
        }
    }
    s.capture = s.findings.is_empty();
    Ok(s)
}

/// Scans one database on its source (`src`); definers are looked up on `dest` when given.
pub async fn scan_database(
    src: &mut Conn,
    dest: Option<&mut Conn>,
    t: &DbTarget,
) -> Result<DbScan> {
    let id = t.server.as_str();
    let db = t.database.as_str();
    let mut out = DbScan {
        database: db.into(),
        server: id.into(),
        write_rate: t.write_rate,
        ..DbScan::default()
    };
    let obj = |o: String| Where::Db { object: o };

    // Accounts: the database's user, and every account with a grant on it.
    let escaped = db.replace('_', "\\_");
    let accounts: Vec<(String, String, String)> = src
        .exec(
            "SELECT DISTINCT u.User, u.Host, u.plugin FROM mysql.user u
              WHERE u.User = ? OR EXISTS (SELECT 1 FROM mysql.db d
                     WHERE d.User = u.User AND d.Host = u.Host AND (d.Db = ? OR d.Db = ?))
              ORDER BY u.User, u.Host",
            (&t.user, db, &escaped),
        )
        .await
        .map_err(db_err(id, format!("reading the accounts of {db}")))?;
    for (user, host, plugin) in accounts {
        if PROXY_PLUGINS.contains(&plugin.as_str()) {
            continue;
        }
        out.findings.push(Finding {
            rule: "db.auth_plugin".into(),
            severity: Severity::Blocked,
            at: obj(format!("'{user}'@'{host}'")),
            found: plugin,
            fix: "the SQL proxy authenticates mysql_native_password only: set the account's \
                  password again with it (ALTER USER ... IDENTIFIED VIA mysql_native_password \
                  USING PASSWORD('...')), with the customer"
                .into(),
        });
    }

    // Tables: engines, primary keys, sizes.
    let tables: Vec<(String, Option<String>, u64, u8)> = src
        .exec(
            "SELECT t.TABLE_NAME, t.ENGINE,
                    CAST(COALESCE(t.DATA_LENGTH, 0) + COALESCE(t.INDEX_LENGTH, 0) AS UNSIGNED),
                    EXISTS (SELECT 1 FROM information_schema.TABLE_CONSTRAINTS c
                             WHERE c.TABLE_SCHEMA = t.TABLE_SCHEMA AND c.TABLE_NAME = t.TABLE_NAME
                               AND c.CONSTRAINT_TYPE = 'PRIMARY KEY')
               FROM information_schema.TABLES t
              WHERE t.TABLE_SCHEMA = ? AND t.TABLE_TYPE = 'BASE TABLE'
              ORDER BY t.TABLE_NAME",
            (db,),
        )
        .await
        .map_err(db_err(id, format!("reading the tables of {db}")))?;
    for (table, engine, bytes, has_pk) in tables {
        out.tables += 1;
        out.bytes += bytes;
        let engine = engine.unwrap_or_default();
        let mut recopy = false;
        if !engine.eq_ignore_ascii_case("InnoDB") {
            recopy = true;
            out.findings.push(Finding {
                rule: "db.no_snapshot".into(),
                severity: Severity::Warn,
                at: obj(format!("{db}.{table}")),
                found: format!("ENGINE={engine}"),
                fix: "no consistent snapshot: the table is copied again inside the freeze; \
                      ALTER TABLE ... ENGINE=InnoDB before the wave"
                    .into(),
            });
        }
        if has_pk == 0 {
            recopy = true;
            out.findings.push(Finding {
                rule: "db.no_pk".into(),
                severity: Severity::Warn,
                at: obj(format!("{db}.{table}")),
                found: "no PRIMARY KEY".into(),
                fix: "changes cannot be applied by key: the table is copied again inside the \
                      freeze; add a primary key (ALTER TABLE ... ADD PRIMARY KEY)"
                    .into(),
            });
        }
        if recopy {
            out.recopy_bytes += bytes;
        }
    }

    // Definers of views, routines, triggers and events.
    let definers: Vec<(String, String, String)> = src
        .exec(
            "SELECT 'view', TABLE_NAME, DEFINER FROM information_schema.VIEWS WHERE TABLE_SCHEMA = ?
             UNION ALL SELECT LOWER(ROUTINE_TYPE), ROUTINE_NAME, DEFINER
               FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = ?
             UNION ALL SELECT 'trigger', TRIGGER_NAME, DEFINER
               FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = ?
             UNION ALL SELECT 'event', EVENT_NAME, DEFINER
               FROM information_schema.EVENTS WHERE EVENT_SCHEMA = ?
             ORDER BY 1, 2",
            (db, db, db, db),
        )
        .await
        .map_err(db_err(id, format!("reading the definers of {db}")))?;
    let mut dest = dest;
    for (kind, name, definer) in definers {
        let (user, host) = definer.rsplit_once('@').unwrap_or((definer.as_str(), "%"));
        let severity = match dest.as_deref_mut() {
            // The database's own account is created on the destination by prepare.
            _ if user == t.user => continue,
            Some(d) => {
                let n: Option<u64> = d
                    .exec_first(
                        "SELECT COUNT(*) FROM mysql.user WHERE User = ? AND Host = ?",
                        (user, host),
                    )
                    .await
                    .map_err(db_err(
                        "destination",
                        format!("looking up definer {definer}"),
                    ))?;
                if n.unwrap_or(0) > 0 {
                    continue;
                }
                Severity::Blocked
            }
            None => Severity::Warn,
        };
        out.findings.push(Finding {
            rule: "db.definer".into(),
            severity,
            at: obj(format!("{kind} {db}.{name}")),
            found: format!("DEFINER='{user}'@'{host}'"),
            fix: if severity == Severity::Blocked {
                "the definer does not exist on the destination: create that account there, or \
                 redefine the object with the database's own account as definer"
                    .into()
            } else {
                "the definer is not the database's own account: make sure it exists on the \
                 destination (no destination server was given to check)"
                    .into()
            },
        });
    }
    Ok(out)
}
