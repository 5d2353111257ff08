//! The per-session state a switch must carry to the new backend: current database, character
//! set (from the login and SET NAMES / SET CHARACTER SET), session variables (collation,
//! sql_mode, time_zone, autocommit, ...) and user variables. SET and USE statements are parsed
//! with sqlparser after a cheap keyword check, and recorded only when the server accepted them.

use sqlparser::ast::{ContextModifier, Expr, Set, Statement, Use};
use sqlparser::dialect::MySqlDialect;
use sqlparser::parser::Parser;

use crate::classify::first_keyword;

/// One change a statement makes, applied once the server answered OK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Database(String),
    /// A replayable assignment: key (normalized variable name) and the `SET` text.
    Set {
        key: String,
        sql: String,
    },
}

/// What a session has set so far, in the order it was set.
#[derive(Debug, Clone, Default)]
pub struct SessionState {
    pub database: Option<String>,
    /// Character set id from the login packet (the backend login uses it too).
    pub charset: u8,
    /// Replayable `SET` statements keyed by variable, latest last.
    sets: Vec<(String, String)>,
}

const NAMES_KEYS: [&str; 4] = [
    "character_set_client",
    "character_set_connection",
    "character_set_results",
    "collation_connection",
];

impl SessionState {
    pub fn new(database: Option<String>, charset: u8) -> Self {
        Self {
            database,
            charset,
            sets: Vec::new(),
        }
    }

    pub fn apply(&mut self, changes: Vec<Change>) {
        for c in changes {
            match c {
                Change::Database(db) => self.database = Some(db),
                Change::Set { key, sql } => {
                    if key == "names" || key == "character set" {
                        self.sets.retain(|(k, _)| !NAMES_KEYS.contains(&k.as_str()));
                        self.sets
                            .retain(|(k, _)| k != "names" && k != "character set");
                    }
                    self.sets.retain(|(k, _)| *k != key);
                    self.sets.push((key, sql));
                }
            }
        }
    }

    /// Statements that rebuild this state on a fresh connection (the database is selected at
    /// login, so it is not among them).
    pub fn replay(&self) -> Vec<String> {
        self.sets.iter().map(|(_, s)| s.clone()).collect()
    }

    /// The `SET` text the session last ran for `key` (e.g. "session transaction").
    pub fn setting(&self, key: &str) -> Option<&str> {
        self.sets
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, s)| s.as_str())
    }

    /// Forget everything but the login (COM_RESET_CONNECTION, COM_CHANGE_USER).
    pub fn reset(&mut self) {
        self.sets.clear();
    }

    /// Names of the tracked variables (for the admin API).
    pub fn tracked(&self) -> Vec<String> {
        self.sets.iter().map(|(k, _)| k.clone()).collect()
    }
}

/// The state changes a COM_QUERY would make if it succeeds. Cheap for the common case: a
/// statement that does not start with SET or USE and has no second statement is not parsed.
pub fn changes_of(sql: &[u8]) -> Vec<Change> {
    let interesting = starts_with_set_or_use(sql)
        || (sql.contains(&b';') && {
            let s = String::from_utf8_lossy(sql).to_ascii_uppercase();
            s.contains("SET") || s.contains("USE")
        });
    if !interesting {
        return Vec::new();
    }
    let text = String::from_utf8_lossy(sql);
    let Ok(stmts) = Parser::parse_sql(&MySqlDialect {}, &text) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for s in &stmts {
        match s {
            Statement::Use(Use::Object(n) | Use::Database(n) | Use::Schema(n)) => {
                out.push(Change::Database(unquote(&n.to_string())));
            }
            Statement::Set(set) => set_changes(set, &mut out),
            _ => {}
        }
    }
    out
}

/// `first_keyword` is SET or USE; without allocating for the common plain statement.
fn starts_with_set_or_use(sql: &[u8]) -> bool {
    let head = sql
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .map_or(&sql[..0], |i| &sql[i..]);
    match head.first() {
        Some(b'/' | b'#' | b'-' | b'(') => {
            matches!(first_keyword(sql).as_deref(), Some("SET") | Some("USE"))
        }
        _ => {
            head.len() >= 4
                && (head[..3].eq_ignore_ascii_case(b"SET")
                    || head[..3].eq_ignore_ascii_case(b"USE"))
                && !head[3].is_ascii_alphanumeric()
                && head[3] != b'_'
        }
    }
}

fn unquote(s: &str) -> String {
    s.trim_matches('`').to_string()
}

fn set_changes(set: &Set, out: &mut Vec<Change>) {
    match set {
        Set::SingleAssignment {
            scope,
            variable,
            values,
            ..
        } if *scope != Some(ContextModifier::Global) && values.len() == 1 => {
            push_assignment(&variable.to_string(), &values[0], out);
        }
        Set::MultipleAssignments { assignments } => {
            for a in assignments {
                if a.scope != Some(ContextModifier::Global) {
                    push_assignment(&a.name.to_string(), &a.value, out);
                }
            }
        }
        Set::SetNames {
            charset_name,
            collation_name,
        } => {
            let mut sql = format!("SET NAMES {charset_name}");
            if let Some(c) = collation_name {
                sql.push_str(&format!(" COLLATE {c}"));
            }
            out.push(Change::Set {
                key: "names".into(),
                sql,
            });
        }
        Set::SetNamesDefault {} => out.push(Change::Set {
            key: "names".into(),
            sql: "SET NAMES DEFAULT".into(),
        }),
        Set::SetTimeZone { value, .. } => out.push(Change::Set {
            key: "time_zone".into(),
            sql: format!("SET time_zone = {value}"),
        }),
        Set::SetTransaction {
            modes,
            session: true,
            ..
        } => {
            let modes: Vec<String> = modes.iter().map(|m| m.to_string()).collect();
            out.push(Change::Set {
                key: "session transaction".into(),
                sql: format!("SET SESSION TRANSACTION {}", modes.join(", ")),
            });
        }
        _ => {}
    }
}

fn push_assignment(name: &str, value: &Expr, out: &mut Vec<Change>) {
    let lower = name.to_ascii_lowercase();
    if lower.starts_with("@@global.") {
        return;
    }
    let key = if lower.starts_with('@') && !lower.starts_with("@@") {
        lower.clone()
    } else {
        lower
            .trim_start_matches("@@")
            .trim_start_matches("session.")
            .trim_start_matches("local.")
            .to_string()
    };
    if key == "character set" || key == "charset" {
        out.push(Change::Set {
            key: "character set".into(),
            sql: format!("SET CHARACTER SET {value}"),
        });
        return;
    }
    let target = if key.starts_with('@') {
        name.to_string()
    } else {
        format!("@@session.{key}")
    };
    out.push(Change::Set {
        key,
        sql: format!("SET {target} = {value}"),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn track(stmts: &[&str]) -> SessionState {
        let mut st = SessionState::default();
        for s in stmts {
            st.apply(changes_of(s.as_bytes()));
        }
        st
    }

    #[test]
    fn plain_queries_are_not_parsed_and_change_nothing() {
        assert!(changes_of(b"SELECT c FROM sbtest1 WHERE id = 5").is_empty());
        assert!(changes_of(b"INSERT INTO t VALUES ('SET')").is_empty());
        assert!(changes_of(b"SETTINGS").is_empty());
        assert!(starts_with_set_or_use(b"  set @a = 1"));
        assert!(starts_with_set_or_use(b"/* c */ USE x"));
        assert!(!starts_with_set_or_use(b"USER()"));
        assert_eq!(changes_of(b"\tuse shop").len(), 1);
    }

    #[test]
    fn set_and_use_are_tracked_latest_wins() {
        let st = track(&[
            "USE shop",
            "SET sql_mode = 'ANSI_QUOTES'",
            "SET @@session.time_zone = '+02:00', @cart = 42",
            "SET NAMES latin1",
            "SET @@sql_mode = 'TRADITIONAL'",
            "set autocommit=0",
            "SET GLOBAL max_connections = 5",
        ]);
        assert_eq!(st.database.as_deref(), Some("shop"));
        assert_eq!(
            st.replay(),
            vec![
                "SET @@session.time_zone = '+02:00'",
                "SET @cart = 42",
                "SET NAMES latin1",
                "SET @@session.sql_mode = 'TRADITIONAL'",
                "SET @@session.autocommit = 0",
            ]
        );
    }

    #[test]
    fn set_names_replaces_charset_variables() {
        let st = track(&[
            "SET character_set_client = 'latin1'",
            "SET NAMES utf8mb4 COLLATE utf8mb4_bin",
        ]);
        assert_eq!(st.replay(), vec!["SET NAMES utf8mb4 COLLATE utf8mb4_bin"]);
    }

    #[test]
    fn multi_statement_changes_are_seen() {
        let st = track(&["SELECT 1; USE `other`; SET @x = 'a'"]);
        assert_eq!(st.database.as_deref(), Some("other"));
        assert_eq!(st.replay(), vec!["SET @x = 'a'"]);
    }
}
