//! Pre-flight (issue 21) on the real lab: the acceptance's planted findings on some of the
//! lab's sites (a raw IP of the old MariaDB, which nothing serves after the move; a unix
//! socket path; a path on another filer; a removed PHP function; an account with the old
//! password hash; a table without a primary key), `migrator preflight` run in the old DC
//! (its network and mount namespaces: homes at their real `/homez.N` paths, the old MariaDB
//! at its address) over the lab's inventory. Each finding at its file:line or object with
//! the right verdict; every other site, the lab's stock PHP app as the lab writes it, is `ok`.

use scenarios::dc_services::{mariadb_admin_url, mariadb_exec};
use scenarios::lab::{LabConfig, LabGuard};
use scenarios::process::in_ns;
use scenarios::sites::SiteSpec;
use scenarios::state::SiteState;
use serde_json::Value;
use std::collections::BTreeMap;

fn is_root() -> bool {
    let root = nix::unistd::geteuid().is_root();
    if root {
        // The lab runs our sql-proxy daemon; pre-flight is the migrator's.
        for bin in ["sql-proxy", "migrator"] {
            scenarios::tools::find_or_build(bin).expect(bin);
        }
    }
    root
}

/// Writes `text` as `www/<name>` of `site`'s home (the old filer, seen from the host).
fn plant(filer_backing: &std::path::Path, site: &SiteState, name: &str, text: &str) {
    std::fs::write(filer_backing.join(&site.login).join("www").join(name), text).unwrap();
}

/// (rule, severity, where) of a finding.
type Seen = (String, String, String);

/// (rule, severity, where) of each finding of a report line.
fn findings(r: &Value) -> Vec<Seen> {
    r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let w = &f["where"];
            let at = match w["kind"].as_str().unwrap() {
                "file" => format!("{}:{}", w["path"].as_str().unwrap(), w["line"]),
                "db" => w["object"].as_str().unwrap().to_string(),
                _ => w.to_string(),
            };
            (
                f["rule"].as_str().unwrap().to_string(),
                f["severity"].as_str().unwrap().to_string(),
                at,
            )
        })
        .collect()
}

fn one(rule: &str, severity: &str, at: &str) -> Vec<Seen> {
    vec![(rule.into(), severity.into(), at.into())]
}

#[test]
fn preflight_on_the_lab_reports_each_planted_finding_and_clean_sites_ok() {
    if !is_root() {
        eprintln!("skipped: the lab needs root (namespaces, mounts, daemons); CI runs as root");
        return;
    }
    // Removed on drop, after the lab (declared first): the URL file holds a password.
    let tmp = tempfile::Builder::new()
        .prefix("hostmove-preflight-lab-")
        .tempdir()
        .unwrap();
    let root = tmp.path();
    let mut cfg = LabConfig::new("pflt", root, 7);
    cfg.spec = SiteSpec {
        small_files: 20,
        large_files: 1,
        large_file_kib: 128,
        rows: 50,
        db_mib: Vec::new(),
    };
    cfg.tunnel = false;
    let guard = LabGuard::up(&cfg).expect("lab up");
    let st = guard.state.clone();

    // Sites with a database of their own take the database plants (nobody else is affected);
    // three others take the code plants.
    let (own, shared): (Vec<&SiteState>, Vec<&SiteState>) = st.sites.iter().partition(|s| {
        !st.sites
            .iter()
            .any(|o| o.login != s.login && o.database == s.database)
    });
    assert!(own.len() >= 3, "need 3 sites with their own database");
    let (old_pw, no_pk) = (own[0], own[1]);
    let rest: Vec<&SiteState> = own[2..].iter().chain(shared.iter()).copied().collect();
    let (raw_ip, socket, code) = (rest[0], rest[1], rest[2]);
    let filer = &st.old.filer.backing_dir;
    let old_db_ip = st.old.mariadb_addr().to_string();
    plant(
        filer,
        raw_ip,
        "legacy.php",
        &format!("<?php\n$link = mysqli_connect('{old_db_ip}', $u, $p, 'shop');\n"),
    );
    plant(
        filer,
        socket,
        "db.php",
        "<?php\nini_set('mysqli.default_socket', '/var/run/mysqld/mysqld.sock');\n",
    );
    // Another login's home on another filer: the finding names that home (`path_pattern`).
    let foreign = format!("/homez.{}/{}", st.new.filer.number, raw_ip.login);
    plant(
        filer,
        code,
        "inc.php",
        &format!("<?php\nrequire '{foreign}/lib/common.php';\n$r = mysql_query('SELECT 1');\n"),
    );
    mariadb_exec(
        &st.old,
        &format!(
            "CREATE USER 'legacy'@'%' IDENTIFIED VIA mysql_old_password USING '378b243e220ca493';
             GRANT SELECT ON `{}`.* TO 'legacy'@'%';
             CREATE TABLE `{}`.audit_log (at INT, msg TEXT) ENGINE=InnoDB;",
            old_pw.database, no_pk.database
        ),
    )
    .unwrap();

    let dir = root.join("preflight");
    std::fs::create_dir_all(&dir).unwrap();
    let url_file = dir.join("sql1-old.url");
    scenarios::secrets::write_secret(&url_file, mariadb_admin_url(&st.old).unwrap().as_bytes())
        .unwrap();
    let domain = st.old.sql_hostname.split_once('.').unwrap().1;
    std::fs::write(
        dir.join("settings.toml"),
        format!(
            "old_networks = [\"{}\"]\nold_domains = [\"{domain}\"]\nwrite_sample_s = 1.0\n",
            st.old.lan_cidr
        ),
    )
    .unwrap();
    let migrator = scenarios::tools::find("migrator").unwrap();
    let out = in_ns(
        Some(&st.old.mount_ns),
        &st.old.netns,
        &migrator.to_string_lossy(),
    )
    .arg("preflight")
    .arg("--inventory")
    .arg(st.inventory_dir.as_ref().unwrap())
    .arg("--settings")
    .arg(dir.join("settings.toml"))
    .arg("--db-url-file")
    .arg(format!("sql1-old={}", url_file.display()))
    .arg("--out")
    .arg(dir.join("p.jsonl"))
    .arg("--html")
    .arg(dir.join("p.html"))
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(3), "a blocked site exits 3");
    let reports: BTreeMap<String, Value> = std::fs::read_to_string(dir.join("p.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (v["site"].as_str().unwrap().to_string(), v)
        })
        .collect();
    assert_eq!(reports.len(), st.sites.len());

    let expect: Vec<(&SiteState, &str, Vec<Seen>)> = vec![
        (
            raw_ip,
            "blocked",
            one("net.old_ip", "blocked", "www/legacy.php:2"),
        ),
        (
            socket,
            "blocked",
            one("db.socket", "blocked", "www/db.php:2"),
        ),
        (
            code,
            "blocked",
            vec![
                (
                    "path.foreign".into(),
                    "blocked".into(),
                    "www/inc.php:2".into(),
                ),
                (
                    "php.mysql_ext".into(),
                    "blocked".into(),
                    "www/inc.php:3".into(),
                ),
            ],
        ),
        (
            old_pw,
            "blocked",
            one("db.auth_plugin", "blocked", "'legacy'@'%'"),
        ),
        (
            no_pk,
            "warn",
            one("db.no_pk", "warn", &format!("{}.audit_log", no_pk.database)),
        ),
    ];
    for (site, verdict, want) in &expect {
        let r = &reports[&site.login];
        assert_eq!(r["verdict"], *verdict, "{}: {r:#}", site.login);
        assert_eq!(&findings(r), want, "{}", site.login);
    }
    assert_eq!(
        reports[&raw_ip.login]["findings"][0]["found"], old_db_ip,
        "the raw IP is named"
    );
    assert_eq!(reports[&code.login]["findings"][0]["found"], foreign);
    assert_eq!(
        reports[&old_pw.login]["findings"][0]["found"],
        "mysql_old_password"
    );
    let planted: Vec<&str> = expect.iter().map(|e| e.0.login.as_str()).collect();
    let clean: Vec<&String> = reports
        .keys()
        .filter(|k| !planted.contains(&k.as_str()))
        .collect();
    assert!(clean.len() >= 2, "{clean:?}");
    for s in clean {
        let r = &reports[s];
        assert_eq!(r["verdict"], "ok", "{s}: {r:#}");
        assert!(
            r["files"]["files"].as_u64().unwrap() >= 20,
            "{s}: its home was read"
        );
        assert!(r["databases"][0]["write_rate_measured"].as_bool().unwrap());
    }
    assert!(
        stdout.contains(&format!(
            "{} sites: {} ok, 1 warn, 4 blocked",
            st.sites.len(),
            st.sites.len() - 5
        )),
        "{stdout}"
    );
    let html = std::fs::read_to_string(dir.join("p.html")).unwrap();
    assert!(html.contains("www/legacy.php:2") && html.contains(&old_pw.login));
    drop(guard);
}
