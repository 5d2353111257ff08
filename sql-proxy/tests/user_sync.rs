//! Issue 18 (4): `sync-users` and the `sql-proxy` binary against a real MariaDB. An account is
//! never more reachable through the proxy than on the server: a passwordless
//! `'nopw'@'localhost'` (or `'open'@'%'`) is not usable by network clients, a locked account
//! stays locked, an account restricted to other hosts is refused from this client's address,
//! an account defined for host names only is left out and refused (the proxy does not resolve
//! client names; `sync-users`, the log and `/metrics` say so), and a `REQUIRE SSL` account is
//! refused on a plain connection (by the proxy itself) and admitted over TLS end to end.

mod common;

use common::daemon::Setup;
use common::*;

#[test]
fn host_parts_locks_and_require_ssl_survive_user_sync() {
    let db = backend();
    db.exec(
        "CREATE USER 'nopw'@'localhost'; GRANT ALL ON shop.* TO 'nopw'@'localhost';
         CREATE USER 'open'@'%'; GRANT ALL ON shop.* TO 'open'@'%';
         CREATE USER 'lk'@'%' IDENTIFIED BY 'lk-secret-pw' ACCOUNT LOCK;
         GRANT ALL ON shop.* TO 'lk'@'%';
         CREATE USER 'sec'@'%' IDENTIFIED BY 'sec-secret-pw' REQUIRE SSL;
         GRANT ALL ON shop.* TO 'sec'@'%';
         CREATE USER 'net'@'10.9.9.%' IDENTIFIED BY 'net-secret-pw';
         GRANT ALL ON shop.* TO 'net'@'10.9.9.%';
         CREATE USER 'lo'@'127.0.0.%' IDENTIFIED BY 'lo-secret-pw';
         GRANT ALL ON shop.* TO 'lo'@'127.0.0.%';
         CREATE USER 'named'@'web1.example.com' IDENTIFIED BY 'named-secret-pw';
         GRANT ALL ON shop.* TO 'named'@'web1.example.com';
         CREATE USER 'named'@'%.example.com' IDENTIFIED BY 'named-secret-pw';
         GRANT ALL ON shop.* TO 'named'@'%.example.com';",
    )
    .unwrap();
    // Host names: `sync-users` says it leaves them out, and why (never with a hash).
    let listed = tempfile::tempdir().unwrap();
    let (_, out) =
        common::daemon::sync_users_with(&db, listed.path(), testkit::mariadb::ADMIN_PASSWORD);
    let listing = String::from_utf8_lossy(&out.stdout);
    for host in ["web1.example.com", "%.example.com"] {
        assert!(
            listing.contains(&format!(
                "skipped 'named'@'{host}' (host_name): a host name (or name pattern): the proxy \
                 does not resolve client names"
            )),
            "{listing}"
        );
    }
    assert!(!listing.contains('*'), "a hash listed: {listing}");
    let s = Setup::new(&db, None, "");
    let store: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(s.dir.path().join("users.json")).unwrap())
            .unwrap();
    s.init();
    let daemon = s.start();
    let addr = s.addr();
    let login = |user: &str, pw: &str| {
        let out = cli(addr, user, pw, &["shop"], "SELECT CONCAT('o', 'k')");
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for (user, pw) in [
        ("nopw", ""),
        ("open", ""),
        ("lk", "lk-secret-pw"),
        ("sec", "sec-secret-pw"),
        ("net", "net-secret-pw"),
        ("named", "named-secret-pw"),
    ] {
        let (out, err) = login(user, pw);
        assert_eq!(out, "", "{user} logged in through the proxy");
        assert!(err.contains("ERROR 1045 (28000)"), "{user}: {err}");
    }
    for (user, pw) in [("lo", "lo-secret-pw"), (APP_USER, APP_PASSWORD)] {
        let (out, err) = login(user, pw);
        assert_eq!(out, "ok\n", "{user}: {err}");
    }
    let (code, metrics) = s.admin(drivers::http::Method::Get, "/metrics", "");
    assert_eq!(code, 200);
    // nopw, open, lk and named: left out; sec and net: stored, refused by host or TLS.
    assert!(
        metrics
            .as_str()
            .unwrap()
            .lines()
            .any(|l| l == "sqlproxy_logins_left_out_total 4"),
        "{metrics}"
    );
    drop(daemon);
    // Refused by the proxy itself (not by the backend after a proxy login).
    let log = strip_colours(&std::fs::read_to_string(&s.log).unwrap());
    assert!(
        log.lines()
            .any(|l| l.contains("login refused: the account was left out")
                && l.contains("user=named ")
                && l.contains("reason=\"host_name\"")),
        "{log}"
    );
    assert!(!log.contains("named-secret-pw"), "a password in the log");
    for user in ["sec", "net", "open", "nopw", "lk", "named"] {
        assert!(
            log.lines()
                .any(|l| l.contains("login refused") && l.contains(&format!("user={user} "))),
            "{user}: {log}"
        );
    }
    // What the store keeps: none of those accounts, host parts and the TLS requirement.
    let users = &store["users"];
    for gone in ["nopw", "open", "lk", "named"] {
        assert!(users.get(gone).is_none(), "{gone} stored: {store}");
    }
    let skipped = |user: &str, host: &str, reason: &str| {
        store["skipped"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s == &serde_json::json!({"user": user, "host": host, "reason": reason}))
    };
    assert!(skipped("named", "web1.example.com", "host_name"), "{store}");
    assert!(skipped("named", "%.example.com", "host_name"), "{store}");
    assert!(skipped("nopw", "localhost", "local_only"), "{store}");
    assert!(skipped("lk", "%", "locked"), "{store}");
    assert_eq!(users["sec"]["require_tls"], true, "{store}");
    assert_eq!(users["net"]["hosts"], serde_json::json!(["10.9.9.%"]));
    assert_eq!(users["lo"]["hosts"], serde_json::json!(["127.0.0.%"]));
    assert_eq!(users["app"]["hosts"], serde_json::json!(["%"]));
}

/// Issue 18 (4): a `REQUIRE SSL` account logs in through the proxy over TLS, end to end: the
/// proxy reaches the server over TLS too (the server's certificate checked against
/// `backend_ca_file`), so the server, which refuses that account in plain text, admits it.
/// It used to fail there (the proxy's backend leg was always plain). Over plain TCP the proxy
/// refuses it; without a backend CA the proxy refuses it too, saying why, rather than carry
/// its traffic to the server in plain text.
#[test]
fn a_require_ssl_account_logs_in_over_tls_end_to_end_and_never_in_plain_text() {
    let dir = tempfile::tempdir().unwrap();
    let tls = testkit::TlsFiles::create(dir.path()).unwrap();
    let db = testkit::MariaDb::start_with(testkit::MariaDbOptions {
        extra_args: tls.mariadb_args(),
        ..Default::default()
    })
    .unwrap();
    db.exec(
        "CREATE DATABASE shop; CREATE TABLE shop.t (v TEXT); INSERT INTO shop.t VALUES ('ok');
         CREATE USER 'sec'@'%' IDENTIFIED BY 'sec-secret-pw' REQUIRE SSL;
         GRANT ALL ON shop.* TO 'sec'@'%';",
    )
    .unwrap();
    let ca = format!("--ssl-ca={}", tls.ca.display());
    let config = |backend_ca: bool| {
        let mut t = format!(
            "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            tls.cert.display(),
            tls.key.display()
        );
        if backend_ca {
            t.push_str(&format!("backend_ca_file = \"{}\"\n", tls.ca.display()));
        }
        t
    };
    let login = |addr, args: &[&str], sql: &str| {
        let out = cli(addr, "sec", "sec-secret-pw", args, sql);
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let s = Setup::new(&db, None, &config(true));
    s.init();
    let daemon = s.start();
    let (out, err) = login(s.addr(), &["shop", "--ssl", &ca], "SELECT v FROM t");
    assert_eq!(out, "ok\n", "{err}");
    // The server's own view of the session: TLS, with a cipher.
    let (out, err) = login(
        s.addr(),
        &["shop", "--ssl", &ca],
        "SELECT VARIABLE_VALUE FROM information_schema.SESSION_STATUS \
         WHERE VARIABLE_NAME = 'Ssl_cipher'",
    );
    assert!(
        !out.trim().is_empty() && err.is_empty(),
        "no cipher: {out}{err}"
    );
    let (out, err) = login(s.addr(), &["shop", "--skip-ssl"], "SELECT v FROM t");
    assert_eq!(out, "", "logged in in plain text");
    assert!(err.contains("ERROR 1045 (28000)"), "{err}");
    drop(daemon);

    let s = Setup::new(&db, None, &config(false));
    s.init();
    let _daemon = s.start();
    let (out, err) = login(s.addr(), &["shop", "--ssl", &ca], "SELECT v FROM t");
    assert_eq!(out, "", "reached the server in plain text");
    assert!(err.contains("ERROR 1045 (28000)"), "{err}");
    assert!(
        err.contains("requires TLS and no [tls] backend_ca_file is configured"),
        "{err}"
    );
}

/// The log without its ANSI colour sequences (`ESC [ … m`).
fn strip_colours(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
