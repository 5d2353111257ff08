//! The journal on a real MariaDB server (`testkit::MariaDb`): every case of
//! `src/journal/suite.rs` (the same ones `cargo test -p migrator --lib journal` runs on SQLite),
//! then what only the MariaDB journal has: its schema version, errors that name the server but
//! never the password, use from inside a tokio runtime (a database copy calls the journal
//! there), and the CLI with `--journal mysql://…?password_file=…`.

/// The cases, written against `super::` items: the imports below.
#[path = "../src/journal/suite.rs"]
mod suite;

use migrator::journal::{
    open_journal, JournalError, JournalExt, JournalLocation, JournalStore, MariaDbJournal,
    SiteState, StepOutcome, StepStatus, MARIADB_SCHEMA_VERSION,
};
use mysql_async::{Opts, OptsBuilder};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use suite::Backend;
use testkit::mariadb::ADMIN_PASSWORD;
use testkit::MariaDb;

/// One database of the shared server, created by the first open.
struct Database<'a> {
    server: &'a MariaDb,
    db: String,
}

impl Database<'_> {
    fn opts(&self) -> Opts {
        Opts::from_url(&self.server.admin_url_db(&self.db)).unwrap()
    }
}

impl Backend for Database<'_> {
    fn open(&self) -> Box<dyn JournalStore + Send> {
        Box::new(MariaDbJournal::open(self.opts()).unwrap())
    }

    fn write_raw_state(&self, site: &str, state: &str) {
        self.server
            .exec(&format!(
                "UPDATE `{}`.sites SET state = '{state}' WHERE site = '{site}'",
                self.db
            ))
            .unwrap();
    }
}

#[test]
fn every_case_on_mariadb() {
    let server = MariaDb::start().unwrap();
    suite::run_all("mariadb", |case| Database {
        server: &server,
        db: format!("journal_{case}"),
    });
}

#[test]
fn mariadb_schema_errors_runtime_and_cli() {
    let server = MariaDb::start().unwrap();
    let port = server.port();
    let d = Database {
        server: &server,
        db: "campaign".into(),
    };

    // The schema carries its version; a newer one is refused, a damaged one named.
    drop(d.open());
    let meta = |sql: &str| server.exec(&format!("USE campaign; {sql}")).unwrap();
    assert_eq!(
        meta("SELECT v FROM meta WHERE k = 'schema_version'").trim(),
        MARIADB_SCHEMA_VERSION.to_string()
    );
    meta("UPDATE meta SET v = '99' WHERE k = 'schema_version'");
    let err = MariaDbJournal::open(d.opts()).err().unwrap();
    assert!(
        matches!(err, JournalError::SchemaTooNew { found: 99, .. }),
        "{err}"
    );
    let name = format!("mysql://127.0.0.1:{port}/campaign");
    assert!(err.to_string().contains(&name), "{err}");
    meta("UPDATE meta SET v = 'one' WHERE k = 'schema_version'");
    let err = MariaDbJournal::open(d.opts()).err().unwrap();
    assert!(
        err.to_string().contains("\"one\" is not a version"),
        "{err}"
    );
    meta(&format!(
        "UPDATE meta SET v = '{MARIADB_SCHEMA_VERSION}' WHERE k = 'schema_version'"
    ));

    // A refused login names the server and database, never the password.
    let wrong = OptsBuilder::from_opts(d.opts()).pass(Some("wrong-pw-0xdead"));
    let err = MariaDbJournal::open(wrong.into())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains(&name), "{err}");
    assert!(!err.contains("wrong-pw-0xdead"), "{err}");
    let nodb = OptsBuilder::from_opts(d.opts()).db_name(None::<String>);
    let err = MariaDbJournal::open(nodb.into()).err().unwrap();
    assert!(matches!(err, JournalError::NoDatabase { .. }), "{err}");

    // A database copy calls the journal from async code on a multi-thread runtime.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut j = d.open();
    let id = rt.block_on(async {
        let id = j.begin_step("shop", "copy-db").unwrap();
        j.put_checkpoint_raw("copy-db:shop", "orders", "{}")
            .unwrap();
        tokio::task::yield_now().await;
        j.finish_step(id, &StepOutcome::default()).unwrap();
        id
    });
    j.set_site_state("shop", SiteState::Live).unwrap();
    drop(rt);
    drop(j);

    // The CLI: the password from a 0600 file named in the URL.
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("journal.pw");
    std::fs::write(&pw, format!("{ADMIN_PASSWORD}\n")).unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    let url = format!(
        "mariadb://admin@127.0.0.1:{port}/campaign?password_file={}",
        pw.display()
    );
    let loc = JournalLocation::parse(std::path::Path::new(&url)).unwrap();
    assert_eq!(loc.to_string(), name);
    assert_eq!(
        open_journal(&loc).unwrap().site_state("shop").unwrap(),
        Some(SiteState::Live)
    );
    let bin = env!("CARGO_BIN_EXE_migrator");
    let out = Command::new(bin)
        .args(["journal", "--journal", &url, "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let sites: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        sites,
        serde_json::json!([{"site": "shop", "state": "live"}])
    );
    let out = Command::new(bin)
        .args(["journal", "shop", "--journal", &url, "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let steps: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(steps[0]["id"], id);
    assert_eq!(steps[0]["status"], "done");

    // A password in the URL itself is refused, and not echoed.
    let inline = format!("mysql://admin:{ADMIN_PASSWORD}@127.0.0.1:{port}/campaign");
    let out = Command::new(bin)
        .args(["journal", "--journal", &inline])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("password_file"), "{stderr}");
    assert!(!stderr.contains(ADMIN_PASSWORD), "{stderr}");
}

/// Commands that still read the journal file with SQLite say so instead of failing obscurely.
#[test]
fn sqlite_only_commands_refuse_a_mariadb_url_clearly() {
    let bin = env!("CARGO_BIN_EXE_migrator");
    let url = "mysql://admin:s3cret@127.0.0.1:1/campaign";
    let cases: [&[&str]; 3] = [
        &["serve", "--journal", url],
        &["wave", "status", "--journal", url],
        &["status", "--journal", url],
    ];
    for args in cases {
        let out = Command::new(bin).args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("SQLite only") && stderr.contains("not supported by this command"),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains("s3cret"), "{args:?}: {stderr}");
    }
}
