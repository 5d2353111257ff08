//! A site's database moves through a real sql-proxy (in-process, admin API over HTTP with a
//! token) between two real MariaDB servers while a client keeps writing through the proxy's
//! old endpoint; then it is rolled back while the writes continue. Every acknowledged write
//! must be on the side that owns the data at the end, and the client sees no error.

use migrator::cutover::rollback::rollback_site;
use migrator::cutover::{Engine, EngineOptions};
use migrator::dry_run::Recorder;
use migrator::journal::{SiteState, SqliteJournal};
use migrator::real_systems::{HttpProxy, LocalData};
use migrator::site_spec::{Budget, HomeSpec, LbSpec, ProxySpec, SiteSpec};
use migrator::systems::{ProxyControl, Systems};
use mysql_async::prelude::*;
use sql_proxy::config::Config;
use sql_proxy::route::Shared;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use testkit::MariaDb;

const TOKEN: &str = "cutover-test-token-0123456789";

fn addr(db: &MariaDb) -> SocketAddr {
    format!("127.0.0.1:{}", db.port()).parse().unwrap()
}

fn secret(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn count(db: &MariaDb) -> u64 {
    db.exec("SELECT COUNT(*) FROM shop.t")
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn database_moves_and_rolls_back_under_writes_with_nothing_lost() {
    let old = MariaDb::start().unwrap();
    let new = MariaDb::start().unwrap();
    old.exec(
        "CREATE DATABASE shop; CREATE USER 'app'@'%' IDENTIFIED BY 'app-pw'; \
         GRANT ALL ON shop.* TO 'app'@'%'; \
         CREATE TABLE shop.t (id INT AUTO_INCREMENT PRIMARY KEY, v INT NOT NULL); \
         INSERT INTO shop.t (v) VALUES (1),(2),(3); FLUSH PRIVILEGES;",
    )
    .unwrap();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut backends = BTreeMap::new();
    backends.insert("old".to_string(), addr(&old));
    backends.insert("new".to_string(), addr(&new));
    let cfg = Config {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        users_file: "unused".into(),
        route_store: None,
        default_side: "old".into(),
        backends,
        backend_sockets: BTreeMap::new(),
        databases: BTreeMap::new(),
        limits: Default::default(),
        admin: None,
        tls: None,
        server_version: "5.5.5-10.11.0-MariaDB-sql-proxy".into(),
    };
    let store_dir = tempfile::tempdir().unwrap();
    let (proxy_addr, admin_addr) = rt.block_on(async {
        let users = sql_proxy::sync::load_users(
            addr(&old),
            testkit::mariadb::ADMIN_USER,
            testkit::mariadb::ADMIN_PASSWORD,
        )
        .await
        .unwrap();
        let store = sql_proxy::route_store::RouteStore::create(
            &store_dir.path().join("routes.sqlite"),
            &[],
        )
        .unwrap();
        let shared: Arc<Shared> = Shared::new(&cfg, users, None, Arc::new(store)).unwrap();
        let (bound, _tasks) = sql_proxy::server::listen(shared.clone(), &cfg.listen)
            .await
            .unwrap();
        let app = sql_proxy::admin::router(sql_proxy::admin::AdminState {
            shared,
            token: Arc::from(TOKEN),
            users_file: "/nonexistent/users.json".into(),
        });
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        (bound[0], admin)
    });

    // A customer's code writing through the OLD endpoint (the proxy) the whole time.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, acked, errors) = (stop.clone(), acked.clone(), errors.clone());
        // prefer_socket=false: otherwise mysql_async asks for @@socket and bypasses the proxy.
        let url = format!("mysql://app:app-pw@{proxy_addr}/shop?prefer_socket=false");
        rt.spawn(async move {
            let pool = mysql_async::Pool::new(url.as_str());
            let mut conn = pool.get_conn().await.unwrap();
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) && n < 100_000 {
                n += 1;
                match conn
                    .query_drop(format!("INSERT INTO t (v) VALUES ({n})"))
                    .await
                {
                    Ok(()) => {
                        acked.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => {
                        eprintln!("write error: {e}");
                        errors.fetch_add(1, Ordering::SeqCst);
                        conn = pool.get_conn().await.unwrap();
                    }
                }
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
            drop(conn);
            pool.disconnect().await.ok();
        })
    };

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    secret(&d.join("token"), TOKEN);
    secret(&d.join("old.url"), &old.admin_url());
    secret(&d.join("new.url"), &new.admin_url());
    std::fs::create_dir_all(d.join("old/shop")).unwrap();
    std::fs::write(d.join("old/shop/index.php"), "<?php").unwrap();
    let spec = SiteSpec {
        site: "shop".into(),
        dns: None,
        old_vip: "127.0.0.1".parse().unwrap(),
        new_vip: "127.0.0.2".parse().unwrap(),
        old_lb: LbSpec {
            socket: d.join("old.sock"),
            backend: "be_shop".into(),
            server: "web".into(),
        },
        new_lb: LbSpec {
            socket: d.join("new.sock"),
            backend: "be_shop".into(),
            server: "web".into(),
        },
        old_web: "127.0.0.1:8001".parse().unwrap(),
        new_web: "127.0.0.1:8002".parse().unwrap(),
        homes: vec![HomeSpec {
            old: d.join("old/shop"),
            new: d.join("new/shop"),
            compat_link: None,
            compat_target: None,
        }],
        new_web_host: None,
        databases: vec!["shop".into()],
        old_db_url_file: d.join("old.url"),
        new_db_url_file: d.join("new.url"),
        proxy: ProxySpec {
            admin: admin_addr,
            token_file: d.join("token"),
            old_side: "old".into(),
            new_side: "new".into(),
        },
        tunnel: None,
        fingerprint: None,
        budget: Budget {
            max_delta_bytes: 1 << 30,
            max_sync_passes: 3,
            max_lag_ms: 60_000,
        },
    };
    let jp = d.join("journal.sqlite");
    let proxy = HttpProxy::new(&spec.proxy).unwrap();
    // HAProxy is simulated here (it has its own real test); the proxy and data are real.
    let rec = Recorder::for_site(&spec, false);
    let fake = rec.systems(&spec);
    let sys = Systems {
        lb_old: fake.lb_old,
        lb_new: fake.lb_new,
        dns: None,
        proxy: Arc::new(HttpProxy::new(&spec.proxy).unwrap()),
        tunnel: None,
        data: Arc::new(LocalData {
            journal: jp.clone(),
        }),
    };
    let opts = EngineOptions::default();
    let mut j = SqliteJournal::open(&jp).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let report = Engine::new(&spec, &sys, &mut j, &opts).migrate().unwrap();
    assert_eq!(report.state, SiteState::Live);
    assert_eq!(proxy.route("shop").unwrap().side, "new");
    eprintln!(
        "freeze {:?} ms, phases {:?}",
        report.freeze_ms, report.phases
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    let after_switch = acked.load(Ordering::SeqCst);

    let report = rollback_site(Engine::new(&spec, &sys, &mut j, &opts)).unwrap();
    assert_eq!(report.state, SiteState::RolledBack);
    assert_eq!(proxy.route("shop").unwrap().side, "old");
    std::thread::sleep(std::time::Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    rt.block_on(writer).unwrap();

    let total = acked.load(Ordering::SeqCst);
    assert!(
        after_switch > 0 && total > after_switch,
        "the writer made progress"
    );
    assert_eq!(errors.load(Ordering::SeqCst), 0, "the client saw errors");
    // Every acknowledged write (3 seed rows + the writer's) is on the old side, which owns
    // the data again, including those made on the new side between switch and rollback.
    assert_eq!(count(&old), 3 + total);
}
