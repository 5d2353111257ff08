//! A site's database moves through a real sql-proxy (in-process, admin API over HTTP with a
//! token) between two real MariaDB servers while a client keeps writing through the proxy's
//! old endpoint; then it is rolled back while the writes continue. Every acknowledged write
//! must be on the side that owns the data at the end, and the client sees no error.
//!
//! Three ways: the old server without a binary log (the database copied, the freeze copying
//! changed tables again); with a ROW binary log (followed by change capture, verified after
//! the switch against the new side pinned in the freeze); and the same with a write landing on
//! the old side behind the proxy's back after the freeze, which the verification after the
//! switch finds and answers with an automatic rollback, the new writes carried back.

use migrator::cutover::rollback::rollback_site;
use migrator::cutover::{Engine, EngineOptions};
use migrator::dry_run::Recorder;
use migrator::journal::{JournalStore, SiteState, SqliteJournal};
use migrator::real_systems::{self, LocalData};
use migrator::site_spec::{Budget, HomeSpec, LbSpec, ProxySpec, SiteSpec};
use migrator::systems::{DataMover, Direction, ProxyControl, SysResult, Systems};
use mysql_async::prelude::*;
use sql_proxy::config::Config;
use sql_proxy::route::Shared;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use testkit::{MariaDb, MariaDbOptions};

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
    run(Way::Copied);
}

#[test]
fn a_followed_database_moves_and_rolls_back_under_writes_with_nothing_lost() {
    run(Way::Followed);
}

#[test]
fn a_difference_found_after_the_switch_rolls_the_site_back_with_its_writes() {
    run(Way::Tampered);
}

#[derive(Clone, Copy, PartialEq)]
enum Way {
    Copied,
    Followed,
    Tampered,
}

/// The real data mover, with a write on the old side behind the proxy's back just before the
/// verification after the switch (a change the capture could not have seen).
struct Tampering {
    inner: LocalData,
    old_url: String,
}

impl DataMover for Tampering {
    fn prepare(&self, spec: &SiteSpec) -> SysResult<()> {
        self.inner.prepare(spec)
    }
    fn sync_files(&self, spec: &SiteSpec, dir: Direction) -> SysResult<u64> {
        self.inner.sync_files(spec, dir)
    }
    fn copy_dbs(
        &self,
        spec: &SiteSpec,
        dbs: &[String],
        dir: Direction,
        delta: bool,
    ) -> SysResult<u64> {
        self.inner.copy_dbs(spec, dbs, dir, delta)
    }
    fn tail_dbs(&self, spec: &SiteSpec, dbs: &[String]) -> SysResult<u64> {
        self.inner.tail_dbs(spec, dbs)
    }
    fn verify(&self, spec: &SiteSpec, dbs: &[String]) -> SysResult<Vec<String>> {
        self.inner.verify(spec, dbs)
    }
    fn verifies_after_switch(&self, spec: &SiteSpec) -> bool {
        self.inner.verifies_after_switch(spec)
    }
    fn verify_after_switch(&self, spec: &SiteSpec) -> SysResult<Vec<String>> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut c = mysql_async::Conn::new(mysql_async::Opts::from_url(&self.old_url).unwrap())
                .await
                .unwrap();
            c.query_drop("UPDATE shop.t SET v = -1 WHERE id = 1")
                .await
                .unwrap();
            c.disconnect().await.unwrap();
        });
        self.inner.verify_after_switch(spec)
    }
    fn fingerprint(&self, spec: &SiteSpec) -> SysResult<Option<String>> {
        self.inner.fingerprint(spec)
    }
}

fn run(way: Way) {
    let old = match way {
        Way::Copied => MariaDb::start().unwrap(),
        _ => MariaDb::start_with(MariaDbOptions {
            binlog_server_id: Some(1),
            ..Default::default()
        })
        .unwrap(),
    };
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
        fleet: None,
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
            per_database_metrics: false,
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
            tls: None,
        },
        new_lb: LbSpec {
            socket: d.join("new.sock"),
            backend: "be_shop".into(),
            server: "web".into(),
            tls: None,
        },
        old_web: "127.0.0.1:8001".parse().unwrap(),
        new_web: "127.0.0.1:8002".parse().unwrap(),
        homes: vec![HomeSpec {
            old: d.join("old/shop"),
            new: d.join("new/shop"),
            compat_link: None,
            compat_target: None,
            feed: None,
            owner_map: None,
        }],
        new_web_host: None,
        databases: vec!["shop".into()],
        old_db_url_file: d.join("old.url"),
        new_db_url_file: d.join("new.url"),
        proxy: ProxySpec {
            admin: admin_addr,
            token_file: d.join("token"),
            ca_file: None,
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
        artifacts: Default::default(),
    };
    let jp = d.join("journal.sqlite");
    let proxy = real_systems::proxy(&spec.proxy).unwrap();
    // HAProxy is simulated here (it has its own real test); the proxy and data are real.
    let rec = Recorder::for_site(&spec, false);
    let fake = rec.systems(&spec);
    let sys = Systems {
        lb_old: fake.lb_old,
        lb_new: fake.lb_new,
        dns: None,
        proxy: Arc::new(real_systems::proxy(&spec.proxy).unwrap()),
        tunnel: None,
        data: match way {
            Way::Tampered => Arc::new(Tampering {
                inner: LocalData::new(&jp),
                old_url: old.admin_url(),
            }),
            _ => Arc::new(LocalData::new(&jp)),
        },
    };
    let opts = EngineOptions::default();
    let mut j = SqliteJournal::open(&jp).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let migrated = Engine::new(&spec, &sys, &mut j, &opts).migrate();
    let phases: Vec<String> = j
        .steps("shop")
        .unwrap()
        .into_iter()
        .map(|s| format!("{}:{}", s.phase, s.status.name()))
        .collect();
    if way == Way::Tampered {
        let err = migrated.unwrap_err().to_string();
        assert!(err.contains("after the switch"), "{err}");
        assert!(err.contains("`t`"), "{err}");
        assert!(
            phases.contains(&"post-verify:failed".to_string()),
            "{phases:?}"
        );
        assert_eq!(proxy.route("shop").unwrap().side, "old");
        assert_eq!(j.site_state("shop").unwrap(), Some(SiteState::RolledBack));
        std::thread::sleep(std::time::Duration::from_millis(300));
        stop.store(true, Ordering::SeqCst);
        rt.block_on(writer).unwrap();
        assert_eq!(errors.load(Ordering::SeqCst), 0, "the client saw errors");
        // Every acknowledged write, those made on the new side after the switch included, is
        // on the old side again.
        assert_eq!(count(&old), 3 + acked.load(Ordering::SeqCst));
        return;
    }
    let report = migrated.unwrap();
    assert_eq!(report.state, SiteState::Live);
    assert_eq!(proxy.route("shop").unwrap().side, "new");
    eprintln!(
        "freeze {:?} ms, phases {:?}",
        report.freeze_ms, report.phases
    );
    let post_verified = phases.contains(&"post-verify:done".to_string());
    assert_eq!(post_verified, way == Way::Followed, "{phases:?}");
    // Issue 19: the old side's checksums at the switch are journaled by the verification
    // (inside the freeze when copied, at post-verify when followed); nothing writes on the
    // old side since, so their row count is its row count now.
    let at_switch = migrator::bundle::state::switch_checksums(&j, "shop")
        .unwrap()
        .expect("switch checksums journaled");
    let rows_at_switch = count(&old);
    assert!(
        at_switch.tables["t"].starts_with(&format!("{rows_at_switch}:")),
        "{at_switch:?} vs {rows_at_switch} rows"
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
