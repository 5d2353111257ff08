//! The journal's cases (`suite.rs`) on SQLite files, and what is particular to SQLite.

use super::suite::{self, Backend};
use super::*;

/// A journal file in a directory of its own, created by the first open.
struct SqliteFile {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl SqliteFile {
    fn new() -> SqliteFile {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.sqlite");
        SqliteFile { _dir: dir, path }
    }
}

impl Backend for SqliteFile {
    fn open(&self) -> Box<dyn JournalStore + Send> {
        Box::new(SqliteJournal::open(&self.path).unwrap())
    }

    fn write_raw_state(&self, site: &str, state: &str) {
        let conn = rusqlite::Connection::open(&self.path).unwrap();
        conn.execute(
            "UPDATE sites SET state = ?1 WHERE site = ?2",
            rusqlite::params![state, site],
        )
        .unwrap();
    }
}

#[test]
fn every_case_on_sqlite() {
    suite::run_all("sqlite", |_| SqliteFile::new());
}

/// Through `--journal` parsing and `open_journal`, as the commands open it.
#[test]
fn a_path_opens_the_sqlite_journal() {
    let f = SqliteFile::new();
    let loc = JournalLocation::parse(&f.path).unwrap();
    assert!(matches!(&loc, JournalLocation::Sqlite(p) if *p == f.path));
    assert!(!loc.may_exist());
    let mut j = open_journal(&loc).unwrap();
    j.set_site_state("shop", SiteState::Live).unwrap();
    assert!(loc.may_exist());
    assert_eq!(j.name(), f.path.display().to_string());
    assert_eq!(loc.to_string(), f.path.display().to_string());
}

#[test]
fn state_names_round_trip() {
    for st in SiteState::ALL {
        assert_eq!(st.as_str().parse(), Ok(st));
        assert_eq!(st.to_string(), st.as_str());
        assert_eq!(serde_json::to_string(&st).unwrap(), format!("\"{st}\""));
    }
    let err = "bogus".parse::<SiteState>().unwrap_err();
    assert!(err
        .to_string()
        .starts_with("unknown site state \"bogus\" (expected one of planned, "));
    assert!(err.to_string().ends_with("rolled_back)"), "{err}");
}

/// The `sites` table holds the states' names as text (what the dashboard's SQL reads).
#[test]
fn states_are_stored_by_name() {
    let f = SqliteFile::new();
    f.open()
        .set_site_state("shop", SiteState::RolledBack)
        .unwrap();
    let conn = rusqlite::Connection::open(&f.path).unwrap();
    let raw: String = conn
        .query_row("SELECT state FROM sites WHERE site = 'shop'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(raw, "rolled_back", "the on-disk text is the journal name");
}

/// The file carries its schema version: a journal from before versions (the control tables
/// created by their module, no `user_version`) upgrades in place; a newer one is refused.
#[test]
fn sqlite_schema_is_versioned() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.sqlite");
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(
            "CREATE TABLE sites (site TEXT PRIMARY KEY, state TEXT NOT NULL,
                                 updated_ms INTEGER NOT NULL);
             INSERT INTO sites VALUES ('shop', 'live', 1);
             CREATE TABLE wave_status (wave INTEGER PRIMARY KEY, json TEXT NOT NULL,
                                       updated_ms INTEGER NOT NULL);",
        )
        .unwrap();
    }
    let j = SqliteJournal::open(&path).unwrap();
    assert_eq!(j.site_state("shop").unwrap(), Some(SiteState::Live));
    drop(j);
    let version = |p: &std::path::Path| -> u32 {
        rusqlite::Connection::open(p)
            .unwrap()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap()
    };
    assert_eq!(version(&path), crate::journal::SQLITE_SCHEMA_VERSION);
    let sql = SqliteJournal::open(&path).unwrap().into_sql();
    assert!(sql
        .query("SELECT * FROM route_checks", &[])
        .unwrap()
        .is_empty());
    drop(sql);
    rusqlite::Connection::open(&path)
        .unwrap()
        .pragma_update(None, "user_version", 99)
        .unwrap();
    let err = SqliteJournal::open(&path).err().unwrap();
    assert!(
        matches!(err, JournalError::SchemaTooNew { found: 99, .. }),
        "{err}"
    );
}
