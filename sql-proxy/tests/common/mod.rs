//! Shared test setup: real MariaDB instances (testkit), an account `app` with a database
//! `shop`, and the proxy running in-process on a free loopback port.
#![allow(dead_code)]

pub mod daemon;
pub mod fleet;
pub mod raw;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use sql_proxy::config::{Config, Limits};
use sql_proxy::route::Shared;
use sql_proxy::route_store::RouteStore;
use testkit::{MariaDb, MariaDbOptions};

pub const APP_USER: &str = "app";
pub const APP_PASSWORD: &str = "app-secret-pw";

/// A MariaDB with the app account and database.
pub fn backend() -> MariaDb {
    let db = MariaDb::start_with(MariaDbOptions {
        extra_args: vec!["--local-infile=1".into()],
        ..Default::default()
    })
    .expect("start mariadb");
    db.exec(&format!(
        "CREATE DATABASE shop; CREATE USER '{APP_USER}'@'%' IDENTIFIED BY '{APP_PASSWORD}'; \
         GRANT ALL ON shop.* TO '{APP_USER}'@'%'; \
         CREATE USER 'other'@'%' IDENTIFIED VIA unix_socket; FLUSH PRIVILEGES;"
    ))
    .expect("create app account");
    db
}

pub fn addr(db: &MariaDb) -> SocketAddr {
    format!("127.0.0.1:{}", db.port()).parse().unwrap()
}

pub struct Proxy {
    pub addr: SocketAddr,
    pub shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Holds the route store.
    _dir: tempfile::TempDir,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Starts the proxy with sides `old` (and `new` if given); users synced from `old`.
pub async fn proxy(old: &MariaDb, new: Option<&MariaDb>, limits: Limits) -> Proxy {
    proxy_tls(old, new, limits, None).await
}

/// As [`proxy`], offering TLS to clients when an acceptor is given.
pub async fn proxy_tls(
    old: &MariaDb,
    new: Option<&MariaDb>,
    limits: Limits,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> Proxy {
    let mut backends = BTreeMap::new();
    backends.insert("old".to_string(), addr(old));
    if let Some(n) = new {
        backends.insert("new".to_string(), addr(n));
    }
    let cfg = Config {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        users_file: "unused".into(),
        route_store: None,
        default_side: "old".into(),
        backends,
        backend_sockets: BTreeMap::new(),
        databases: BTreeMap::new(),
        limits,
        admin: None,
        tls: None,
        server_version: "5.5.5-10.11.0-MariaDB-sql-proxy".into(),
        fleet: None,
    };
    let users = sql_proxy::sync::load_users(
        addr(old),
        testkit::mariadb::ADMIN_USER,
        testkit::mariadb::ADMIN_PASSWORD,
    )
    .await
    .expect("sync users");
    let dir = tempfile::tempdir().unwrap();
    let store = RouteStore::create(&dir.path().join("routes.sqlite"), &[]).expect("route store");
    let shared = Shared::new(&cfg, users, tls, Arc::new(store)).expect("routes restored");
    let (bound, tasks) = sql_proxy::server::listen(shared.clone(), &cfg.listen)
        .await
        .unwrap();
    Proxy {
        addr: bound[0],
        shared,
        tasks,
        _dir: dir,
    }
}

/// Runs the `mariadb` CLI against the proxy.
pub fn cli(proxy: SocketAddr, user: &str, password: &str, args: &[&str], sql: &str) -> Output {
    Command::new("mariadb")
        .args([
            "--no-defaults",
            "--protocol=TCP",
            "-h",
            "127.0.0.1",
            "--batch",
            "--skip-column-names",
        ])
        .arg(format!("--port={}", proxy.port()))
        .arg(format!("--user={user}"))
        .arg(format!("--password={password}"))
        .args(args)
        .args(["-e", sql])
        .stdin(Stdio::null())
        .output()
        .expect("run mariadb client")
}

/// prefer_socket=false is no longer needed (the proxy answers `@@socket` with NULL; see
/// `prefer_socket_clients_on_the_backend_host_stay_on_the_proxy`); it keeps logins short.
pub fn url(proxy: SocketAddr, db: &str) -> String {
    format!(
        "mysql://{APP_USER}:{APP_PASSWORD}@127.0.0.1:{}/{db}?prefer_socket=false",
        proxy.port()
    )
}
