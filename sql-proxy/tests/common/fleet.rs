//! The fleet tests' shared setup (`fleet.rs`, `fleet_galera.rs`): instances of one fleet on
//! a shared route store, two backends, writes through an instance counted on each backend.

use std::io::Write;

use super::daemon::{Daemon, Setup};
use super::*;
use drivers::http::Method;
use drivers::proxy::HttpProxy;

pub const LEASE_MS: u64 = 3000;
pub const STORE_USER: &str = "sqlproxy";
pub const STORE_PASSWORD: &str = "store-secret-pw-42";

/// An instance's config: the fleet through the store at `store_hosts` (`host:port`, or the
/// nodes of a Galera cluster: `host:port,host:port,…`), the password in `pw_file`, a lease
/// of `lease_ms`; holds long enough for a copy.
pub fn instance_with(
    old: &testkit::MariaDb,
    new: &testkit::MariaDb,
    pw_file: &std::path::Path,
    store_hosts: &str,
    name: &str,
    lease_ms: u64,
) -> Setup {
    Setup::new(
        old,
        Some(new),
        &format!(
            "[limits]\nhold_deadline_ms = 8000\nswitch_txn_deadline_ms = 500\n\
             switch_statement_grace_ms = 500\n\
             [fleet]\nname = \"old-db1\"\ninstance = \"{name}\"\n\
             store = \"mysql://{STORE_USER}@{store_hosts}/sqlproxy\"\n\
             password_file = \"{}\"\nlease_ms = {lease_ms}\npoll_ms = 100\n",
            pw_file.display()
        ),
    )
}

pub fn sides() -> (testkit::MariaDb, testkit::MariaDb) {
    let a = backend();
    let b = backend();
    for db in [&a, &b] {
        db.exec(
            "CREATE TABLE shop.t (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(64)); \
             CREATE DATABASE blog; GRANT ALL ON blog.* TO 'app'@'%'; \
             CREATE TABLE blog.t (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(64))",
        )
        .unwrap();
    }
    (a, b)
}

pub fn count(db: &testkit::MariaDb, table: &str, v: &str) -> u64 {
    db.exec(&format!("SELECT COUNT(*) FROM {table} WHERE v LIKE '{v}'"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// One write through an instance; Ok when the client saw success.
pub fn write(s: &Setup, db: &str, v: &str) -> Result<(), String> {
    let out = cli(
        s.addr(),
        APP_USER,
        APP_PASSWORD,
        &[db],
        &format!("INSERT INTO t (v) VALUES ('{v}')"),
    );
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

pub fn proxy_client(s: &Setup) -> HttpProxy {
    HttpProxy::new(s.admin, &s.dir.path().join("token")).unwrap()
}

/// Prints the instances' logs when the test fails (dropped while panicking): a failure on CI
/// then shows what each instance did (fenced, refused, followed) and when. Declare it after
/// the daemons' [`Setup`]s, so it is dropped before their directories are removed.
pub struct LogsOnFailure(pub Vec<std::path::PathBuf>);

impl LogsOnFailure {
    pub fn of(setups: &[&Setup]) -> LogsOnFailure {
        LogsOnFailure(setups.iter().map(|s| s.log.clone()).collect())
    }
}

impl Drop for LogsOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for log in &self.0 {
                let text = std::fs::read_to_string(log).unwrap_or_else(|e| format!("({e})"));
                eprintln!("==== {}\n{text}", log.display());
            }
        }
    }
}

/// Both instances up and registered; the route table created once through `a`.
pub fn start_two(sa: &Setup, sb: &Setup) -> (Daemon, Daemon) {
    sa.init();
    let (da, db) = (sa.start(), sb.start());
    let (code, v) = sa.admin(Method::Get, "/fleet", "");
    assert_eq!(code, 200, "{v}");
    let live = v["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["live"] == true)
        .count();
    assert_eq!(live, 2, "{v}");
    (da, db)
}

/// A Galera cluster of `n` nodes on loopback with the store's database and account, and the
/// account's password in a 0600 file.
pub fn galera_store(n: usize) -> (testkit::Galera, tempfile::NamedTempFile) {
    let g = testkit::Galera::start(n).expect("start a Galera cluster");
    g.exec(
        0,
        &format!(
            "CREATE DATABASE sqlproxy; CREATE USER '{STORE_USER}'@'%' IDENTIFIED BY \
             '{STORE_PASSWORD}'; GRANT ALL ON sqlproxy.* TO '{STORE_USER}'@'%';"
        ),
    )
    .unwrap();
    let mut pw = tempfile::NamedTempFile::new().unwrap();
    writeln!(pw, "{STORE_PASSWORD}").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(pw.path(), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    (g, pw)
}
