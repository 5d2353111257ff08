//! Session state that lives in one backend connection and cannot be carried to another:
//! temporary tables, `GET_LOCK` locks, SQL-level prepared statements (`PREPARE s FROM …`) and
//! `LOCK TABLES`. (`LAST_INSERT_ID()` is carried: read on the old backend, set on the new one;
//! `SET` variables are replayed, see `session_state.rs`.)
//!
//! The rule (issue 18, finding 10): a session holding such state keeps its backend like a
//! session inside a transaction does. It is not held while its database is paused, a pause
//! waits for it to release the state, and at the switch deadline its backend connection is
//! closed and its next command gets `ERROR 1317` naming what was lost (never a silent loss).
//! A session holding it cannot `USE` a database on another server (a clear error instead).
//!
//! Tracked from the statements' text (`scope.rs`): a state taken inside a stored routine is
//! not seen. A statement that failed still counts what it would have taken (never what it
//! would have released), so the proxy may think a state is held a little longer than it is.

use std::collections::BTreeSet;

use crate::scope::Pin;

/// What this session holds on its backend.
#[derive(Debug, Clone, Default)]
pub struct Pinned {
    temp_tables: BTreeSet<String>,
    locks: BTreeSet<String>,
    /// A lock taken under a name computed at run time (`GET_LOCK(@x, …)`): held until
    /// `RELEASE_ALL_LOCKS()`.
    unnamed_locks: bool,
    prepared: BTreeSet<String>,
    lock_tables: bool,
}

impl Pinned {
    pub fn is_empty(&self) -> bool {
        self.temp_tables.is_empty()
            && self.locks.is_empty()
            && !self.unnamed_locks
            && self.prepared.is_empty()
            && !self.lock_tables
    }

    /// Records what a statement did; `ok`: it succeeded (releases count only then).
    pub fn apply(&mut self, pins: &[Pin], ok: bool) {
        for p in pins {
            match p {
                Pin::TempTable(t) => {
                    self.temp_tables.insert(t.clone());
                }
                Pin::Lock(Some(l)) => {
                    self.locks.insert(l.clone());
                }
                Pin::Lock(None) => self.unnamed_locks = true,
                Pin::Prepare(s) => {
                    self.prepared.insert(s.clone());
                }
                Pin::LockTables => self.lock_tables = true,
                _ if !ok => {}
                Pin::DropTables(ts) => {
                    for t in ts {
                        self.temp_tables.remove(t);
                    }
                }
                Pin::Unlock(l) => {
                    self.locks.remove(l);
                }
                Pin::UnlockAll => {
                    self.locks.clear();
                    self.unnamed_locks = false;
                }
                Pin::Deallocate(s) => {
                    self.prepared.remove(s);
                }
                Pin::UnlockTables => self.lock_tables = false,
            }
        }
    }

    pub fn clear(&mut self) {
        *self = Pinned::default();
    }

    /// For an operator and a client: "temporary tables tmp1; GET_LOCK locks l1".
    pub fn describe(&self) -> String {
        let list = |s: &BTreeSet<String>| s.iter().cloned().collect::<Vec<_>>().join(", ");
        let mut parts = Vec::new();
        if !self.temp_tables.is_empty() {
            parts.push(format!("temporary tables {}", list(&self.temp_tables)));
        }
        if !self.locks.is_empty() || self.unnamed_locks {
            let mut l = list(&self.locks);
            if self.unnamed_locks {
                if !l.is_empty() {
                    l.push_str(", ");
                }
                l.push_str("locks with computed names");
            }
            parts.push(format!("GET_LOCK locks {l}"));
        }
        if !self.prepared.is_empty() {
            parts.push(format!("prepared statements {}", list(&self.prepared)));
        }
        if self.lock_tables {
            parts.push("LOCK TABLES".into());
        }
        parts.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scope::Scope;

    fn run(p: &mut Pinned, sql: &str, ok: bool) {
        p.apply(&Scope::of(sql.as_bytes()).pins, ok);
    }

    #[test]
    fn taken_and_released() {
        let mut p = Pinned::default();
        run(&mut p, "CREATE TEMPORARY TABLE t1 (a int)", true);
        run(&mut p, "SELECT GET_LOCK('k', 1)", true);
        run(&mut p, "PREPARE s FROM 'SELECT 1'", true);
        assert_eq!(
            p.describe(),
            "temporary tables t1; GET_LOCK locks k; prepared statements s"
        );
        run(&mut p, "DROP TABLE t1", false);
        assert!(
            p.describe().contains("t1"),
            "a failed DROP releases nothing"
        );
        run(&mut p, "DROP TEMPORARY TABLE IF EXISTS t1", true);
        run(&mut p, "DO RELEASE_LOCK('k')", true);
        run(&mut p, "DEALLOCATE PREPARE s", true);
        assert!(p.is_empty(), "{}", p.describe());
        run(&mut p, "SELECT GET_LOCK(CONCAT('a', 1), 0)", true);
        assert!(!p.is_empty());
        run(&mut p, "SELECT RELEASE_ALL_LOCKS()", true);
        run(&mut p, "LOCK TABLES t READ", true);
        assert_eq!(p.describe(), "LOCK TABLES");
        run(&mut p, "UNLOCK TABLES", true);
        assert!(p.is_empty());
    }
}
