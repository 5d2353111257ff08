//! The journal on a real MariaDB server (`testkit::MariaDb`): every case of
//! `src/journal/suite.rs` (the same ones `cargo test -p migrator --lib journal` runs on SQLite),
//! then what only the MariaDB journal has: its schema version, errors that name the server but
//! never the password, use from inside a tokio runtime (a database copy calls the journal
//! there), and the CLI with `--journal mysql://…?password_file=…`.

/// The cases, written against `super::` items: the imports below.
#[path = "../src/journal/suite.rs"]
mod suite;
#[path = "../src/journal/suite_store.rs"]
mod suite_store;

use migrator::control::Controls;
use migrator::journal::open_journal_at;
use migrator::journal::{
    open_journal, JournalError, JournalExt, JournalLocation, JournalStore, MariaDbJournal,
    SiteState, StepOutcome, StepStatus, MARIADB_SCHEMA_VERSION,
};
use migrator::{bundle, control, fleet, journal, preflight, route_check, serve};
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

/// The journal's other tables (controls, route checks, the dashboard's summary) on MariaDB:
/// the cases of `src/journal/suite_store.rs`, through `--journal` URLs.
#[test]
fn every_store_case_on_mariadb() {
    let server = MariaDb::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pw = password_file(dir.path());
    suite_store::run_all_store("mariadb", |case| {
        Url(url(&server, &format!("store_{case}"), &pw))
    });
}

/// The commands that read the wave's controls, the journal and the route history take a
/// MariaDB URL too (`--journal` or `HOSTMOVE_JOURNAL`), and never show its password.
#[test]
fn commands_steer_a_wave_through_a_mariadb_journal() {
    let server = MariaDb::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pw = password_file(dir.path());
    let url = url(&server, "fleet", &pw);
    open_journal_at(std::path::Path::new(&url))
        .unwrap()
        .set_site_state("shop", SiteState::Synced)
        .unwrap();
    let bin = env!("CARGO_BIN_EXE_migrator");
    let run = |args: &[&str], env: bool| {
        let mut c = Command::new(bin);
        c.args(args);
        if env {
            c.env("HOSTMOVE_JOURNAL", &url);
        } else {
            c.args(["--journal", &url]);
        }
        let out = c.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{args:?}: {stderr}");
        assert!(!stderr.contains(ADMIN_PASSWORD), "{stderr}");
        String::from_utf8(out.stdout).unwrap()
    };
    run(
        &["wave", "pause", "--wave", "3", "--note", "disk check"],
        false,
    );
    run(&["wave", "throttle", "2", "--wave", "3"], false);
    let st: serde_json::Value =
        serde_json::from_str(&run(&["wave", "status", "--wave", "3", "--json"], false)).unwrap();
    assert_eq!(st["control"]["paused"], true, "{st}");
    assert_eq!(st["control"]["concurrency_limit"], 2, "{st}");
    // Another connection (another host's dashboard or wave) folds the same controls.
    let c = Controls::open(std::path::Path::new(&url)).unwrap();
    assert!(c
        .current(3)
        .unwrap()
        .reason
        .unwrap()
        .ends_with(": disk check"));
    // `status` reads the sites through the store, the journal from the environment.
    let out = run(&["status"], true);
    assert!(out.contains("shop") && out.contains("synced"), "{out}");

    // The dashboard on the MariaDB journal: its summary (MariaDB triggers), its API, /metrics.
    let out = Command::new(bin)
        .args(["serve", "--journal", &url])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("--token-file"),
        "{stderr}"
    );
    let opts = serve::ServeOptions {
        journal: url.clone().into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        token_file: dir.path().join("dashboard.token"),
        plan: None,
        sites: None,
    };
    let (app, token, _) = serve::build(&opts, None).unwrap();
    let srv = serve::Background::start(app, opts.listen).unwrap();
    let bearer = format!("Bearer {}", token.value);
    let auth = [("Authorization", bearer.as_str())];
    let o = testkit::http::get(srv.addr, "/api/overview", &auth).json();
    assert_eq!(o["overview"]["total_sites"], 1, "{o}");
    // The pause sent from the CLI above, read by the dashboard from the shared journal.
    let w = testkit::http::get(srv.addr, "/api/wave/3", &auth).json();
    assert_eq!(w["control"]["paused"], true, "{w}");
    // A write after the dashboard started reaches it through the triggers.
    open_journal_at(std::path::Path::new(&url))
        .unwrap()
        .set_site_state("blog", SiteState::Live)
        .unwrap();
    let m = testkit::http::get(srv.addr, "/metrics", &auth).text();
    for line in [
        "migrator_sites{state=\"synced\"} 1",
        "migrator_sites{state=\"live\"} 1",
    ] {
        assert!(m.lines().any(|l| l == line), "{line}:\n{m}");
    }
}

/// A `--journal` URL for database `db` of `server`, the password in `pw`.
fn url(server: &MariaDb, db: &str, pw: &std::path::Path) -> String {
    format!(
        "mysql://admin@127.0.0.1:{}/{db}?password_file={}",
        server.port(),
        pw.display()
    )
}

/// The admin password in a 0600 file under `dir`.
fn password_file(dir: &std::path::Path) -> std::path::PathBuf {
    let pw = dir.join("journal.pw");
    std::fs::write(&pw, format!("{ADMIN_PASSWORD}\n")).unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    pw
}

struct Url(String);

impl suite_store::StoreBackend for Url {
    fn journal(&self) -> std::path::PathBuf {
        self.0.clone().into()
    }
}
