//! The `sql-proxy` binary end to end: `sync-users` writes a 0600 store with hashes only, `run`
//! serves clients from a config file (sessions spread over worker threads, backends over TCP
//! or their unix socket), and nothing secret reaches its logs.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::daemon::start;
use common::*;

/// `routes init --from-config` for `cfg` (the daemon refuses to start without a store).
fn init(cfg: &std::path::Path) {
    let out = common::daemon::run(&[
        "routes",
        "init",
        "--from-config",
        "--config",
        cfg.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn sync_users_and_run_serve_clients_without_logging_secrets() {
    let db = backend();
    let dir = tempfile::tempdir().unwrap();
    // The password file ends with a newline, as an editor leaves it.
    let (users, out) = common::daemon::sync_users_with(
        &db,
        dir.path(),
        &format!("{}\n", testkit::mariadb::ADMIN_PASSWORD),
    );
    let store = std::fs::read_to_string(&users).unwrap();
    let mode = std::fs::metadata(&users).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let hash = db
        .exec(&format!("SELECT PASSWORD('{APP_PASSWORD}')"))
        .unwrap()
        .trim()
        .to_string();
    assert!(store.contains(&hash), "{store}");
    assert!(!store.contains(APP_PASSWORD) && !store.contains(testkit::mariadb::ADMIN_PASSWORD));
    assert!(String::from_utf8_lossy(&out.stdout).contains("app\tmysql_native_password\tshop"));

    let port = testkit::free_port().unwrap();
    let admin_port = testkit::free_port().unwrap();
    let token = "daemon-test-token-0123456789";
    std::fs::write(dir.path().join("token"), token).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        let p = std::fs::Permissions::from_mode(0o600);
        std::fs::set_permissions(dir.path().join("token"), p).unwrap();
    }
    let cfg = dir.path().join("proxy.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = [\"127.0.0.1:{port}\"]\nusers_file = \"{}\"\ndefault_side = \"old\"\n\
             [backends]\nold = \"127.0.0.1:{}\"\n[admin]\nlisten = \"127.0.0.1:{admin_port}\"\n\
             token_file = \"{}\"\n",
            users.display(),
            db.port(),
            dir.path().join("token").display()
        ),
    )
    .unwrap();
    let log = dir.path().join("proxy.log");
    init(&cfg);
    let daemon = start(&cfg, &log, ("RUST_LOG", "debug"), port);
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let ok = cli(
        addr,
        APP_USER,
        APP_PASSWORD,
        &["shop"],
        "SELECT CONCAT('o', 'k')",
    );
    assert_eq!(
        String::from_utf8_lossy(&ok.stdout),
        "ok\n",
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let bad = cli(addr, APP_USER, "wrong-secret-pw", &[], "SELECT 1");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("ERROR 1045 (28000)"));
    drop(daemon);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("login refused"), "{text}");
    for secret in [
        APP_PASSWORD,
        "wrong-secret-pw",
        &hash,
        &hash[1..],
        token,
        testkit::mariadb::ADMIN_PASSWORD,
    ] {
        assert!(!text.contains(secret), "log contains a secret: {text}");
    }
}

/// `[backend_sockets]`: the daemon reaches the side through the server's unix socket (the
/// server sees the proxy's logins from `localhost`), sessions spread over two worker threads.
#[test]
fn backend_reached_through_its_unix_socket_from_worker_threads() {
    let db = backend();
    let dir = tempfile::tempdir().unwrap();
    let users = common::daemon::sync_users(&db, dir.path());
    let port = testkit::free_port().unwrap();
    let cfg = dir.path().join("proxy.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = [\"127.0.0.1:{port}\"]\nusers_file = \"{}\"\ndefault_side = \"old\"\n\
             [backends]\nold = \"127.0.0.1:{}\"\n[backend_sockets]\nold = \"{}\"\n",
            users.display(),
            db.port(),
            db.socket().display()
        ),
    )
    .unwrap();
    let log = dir.path().join("proxy.log");
    init(&cfg);
    let _daemon = start(&cfg, &log, ("SQL_PROXY_WORKER_THREADS", "2"), port);
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    // Several sessions (round-robin over the workers), each through the socket.
    for i in 0..4 {
        let out = cli(
            addr,
            APP_USER,
            APP_PASSWORD,
            &["shop"],
            &format!("SELECT USER(), {i}"),
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("app@localhost\t{i}\n"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
