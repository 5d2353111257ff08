//! Fixtures of the bundle tests (issue 19): a [`Bed`] of two real MariaDB servers with the
//! URL files, sites file and journal of a site switched from one to the other, and the
//! `migrator` binary run against it.

// Each test binary uses its own part of the fixture.
#![allow(dead_code)]

use migrator::journal::{JournalStore, SiteState, SqliteJournal, StepOutcome};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use testkit::MariaDb;

/// The `migrator` binary with this test's journal, store and keys in `d`.
pub fn cmd(d: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_migrator"));
    c.args(args)
        .env("HOSTMOVE_JOURNAL", d.join("j.sqlite"))
        .env("MIGRATOR_BUNDLE_STORE", d.join("store"))
        .env("MIGRATOR_BUNDLE_KEY", d.join("keys/bundle.key"))
        .env("MIGRATOR_BUNDLE_PUBLIC_KEY", d.join("keys/bundle.key.pub"));
    c
}

pub fn migrator(d: &Path, args: &[&str]) -> Output {
    cmd(d, args).output().unwrap()
}

/// `bundle capture SITE --sites d/sites.json` and `extra`, to spawn or run.
pub fn capture_cmd(d: &Path, site: &str, extra: &[&str]) -> Command {
    let sites = d.join("sites.json");
    let mut args = vec![
        "bundle",
        "capture",
        site,
        "--sites",
        sites.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    cmd(d, &args)
}

/// [`capture_cmd`], run to its end.
pub fn capture(d: &Path, site: &str, extra: &[&str]) -> Output {
    capture_cmd(d, site, extra).output().unwrap()
}

/// A test bed: an old and a new MariaDB server, `old.url` (the sites' old SQL server) and
/// `scratch.url` (the new server, for verify and restore) in a temporary directory, the
/// sites file, the journal. No `new.url`: a capture needs only the old side.
pub struct Bed {
    pub dir: tempfile::TempDir,
    pub old: MariaDb,
    pub new: MariaDb,
}

impl Bed {
    /// `sites` (name, databases); `sql` run on the old server.
    pub fn start(sites: &[(&str, &[&str])], sql: &str) -> Bed {
        let dir = tempfile::tempdir().unwrap();
        let (old, new) = (MariaDb::start().unwrap(), MariaDb::start().unwrap());
        let d = dir.path();
        url_file(d, "old.url", &old);
        url_file(d, "scratch.url", &new);
        write_sites(d, sites);
        old.exec(sql).unwrap();
        SqliteJournal::open(&d.join("j.sqlite")).unwrap();
        Bed { dir, old, new }
    }
    pub fn d(&self) -> &Path {
        self.dir.path()
    }
    pub fn scratch(&self) -> String {
        self.d().join("scratch.url").to_str().unwrap().to_string()
    }
    /// [`switch`] of `site` from this bed's old server to its new one.
    pub fn switch(&self, site: &str, dbs: &[&str]) {
        switch(self.d(), &self.old, &self.new, site, dbs)
    }
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The one report of a `bundle capture SITE --json`.
pub fn only(o: &Output) -> serde_json::Value {
    let v: serde_json::Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(o)));
    assert_eq!(v.as_array().map(|a| a.len()), Some(1), "{v}");
    v[0].clone()
}

pub fn url_file(d: &Path, name: &str, db: &MariaDb) -> PathBuf {
    let p = d.join(name);
    std::fs::write(&p, db.admin_url()).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

/// A sites file with `sites` (name, databases), their old homes under `d/old/<site>`.
pub fn write_sites(d: &Path, sites: &[(&str, &[&str])]) {
    let token = d.join("token");
    std::fs::write(&token, "t").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let specs: Vec<_> = sites
        .iter()
        .map(|(site, dbs)| {
            let home = d.join("old").join(site);
            std::fs::create_dir_all(home.join("www")).unwrap();
            std::fs::write(home.join("www/index.php"), format!("<?php echo '{site}';")).unwrap();
            serde_json::json!({
                "site": site,
                "old_vip": "127.0.0.1", "new_vip": "127.0.0.2",
                "old_lb": {"socket": d.join("none.sock"), "backend": "be", "server": "srv"},
                "new_lb": {"socket": d.join("none.sock"), "backend": "be", "server": "srv"},
                "old_web": "127.0.0.1:9", "new_web": "127.0.0.1:9",
                "homes": [{"old": home, "new": d.join("new").join(site)}],
                "databases": dbs,
                "old_db_url_file": d.join("old.url"), "new_db_url_file": d.join("new.url"),
                "proxy": {"admin": "127.0.0.1:9", "token_file": token},
            })
        })
        .collect();
    std::fs::write(
        d.join("sites.json"),
        serde_json::json!({ "sites": specs }).to_string(),
    )
    .unwrap();
}

/// The cutover's end for `site` as the journal sees it: the databases copied to the new side
/// and verified there by the engine's mover (which journals the old side's checksums), a
/// finished `switch` step, the site live.
pub fn switch(d: &Path, old: &MariaDb, new: &MariaDb, site: &str, dbs: &[&str]) {
    for db in dbs {
        old.copy_database_to(db, new).unwrap();
    }
    let mover = migrator::db::mover::DbMover::new(d.join("j.sqlite"));
    let urls = (
        old.admin_url().parse().unwrap(),
        new.admin_url().parse().unwrap(),
    );
    let names: Vec<String> = dbs.iter().map(|s| s.to_string()).collect();
    let diffs = mover.verify(urls, &names).unwrap();
    assert!(diffs.is_empty(), "{diffs:?}");
    let mut j = SqliteJournal::open(&d.join("j.sqlite")).unwrap();
    let id = j.begin_step(site, "switch").unwrap();
    j.finish_step(id, &StepOutcome::default()).unwrap();
    j.set_site_state(site, SiteState::Live).unwrap();
}

pub fn rows(db: &MariaDb, sql: &str) -> String {
    db.exec(sql).unwrap()
}
