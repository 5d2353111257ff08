//! Two `sql-proxy` processes answering the same endpoint share their routes in a real MariaDB
//! store (issue 17, shared routes with fencing): a switch through one instance's admin API
//! moves both; an instance cut off from the store (a loopback forwarder that stops passing
//! bytes, as a partition does) holds every database before its lease runs out and no write
//! reaches the old side after the switch; a SIGKILLed instance delays a switch by at most its
//! lease. Every write is checked on both backends directly.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::daemon::Setup;
use common::fleet::*;
use common::*;
use drivers::http::Method;
use drivers::proxy::SqlProxy;

/// A loopback TCP forwarder that can be frozen: bytes stop flowing both ways (connections stay
/// open, new ones are accepted and never answered), as when a network partition drops packets.
struct Forwarder {
    addr: SocketAddr,
    frozen: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Forwarder {
    fn start(to: SocketAddr) -> Forwarder {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let frozen = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        l.set_nonblocking(true).unwrap();
        let (fz, st) = (frozen.clone(), stop.clone());
        std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((c, _)) => {
                        c.set_nonblocking(false).unwrap();
                        let Ok(s) = TcpStream::connect(to) else {
                            continue;
                        };
                        for (mut from, mut into) in
                            [(c.try_clone().unwrap(), s.try_clone().unwrap()), (s, c)]
                        {
                            let (fz, st) = (fz.clone(), st.clone());
                            from.set_read_timeout(Some(Duration::from_millis(50)))
                                .unwrap();
                            std::thread::spawn(move || {
                                let mut buf = [0u8; 16384];
                                while !st.load(Ordering::SeqCst) {
                                    if fz.load(Ordering::SeqCst) {
                                        std::thread::sleep(Duration::from_millis(20));
                                        continue;
                                    }
                                    match from.read(&mut buf) {
                                        Ok(0) => break,
                                        Ok(n) => {
                                            // Read while frozen: held back until thawed.
                                            while fz.load(Ordering::SeqCst)
                                                && !st.load(Ordering::SeqCst)
                                            {
                                                std::thread::sleep(Duration::from_millis(20));
                                            }
                                            if into.write_all(&buf[..n]).is_err() {
                                                break;
                                            }
                                        }
                                        Err(e)
                                            if matches!(
                                                e.kind(),
                                                std::io::ErrorKind::WouldBlock
                                                    | std::io::ErrorKind::TimedOut
                                            ) => {}
                                        Err(_) => break,
                                    }
                                }
                                let _ = into.shutdown(std::net::Shutdown::Both);
                            });
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Forwarder { addr, frozen, stop }
    }

    fn freeze(&self, on: bool) {
        self.frozen.store(on, Ordering::SeqCst);
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The store server with its schema and account; the password in a 0600 file.
struct Store {
    db: testkit::MariaDb,
    pw_file: tempfile::NamedTempFile,
}

fn store() -> Store {
    let db = testkit::MariaDb::start().expect("start the store's mariadb");
    db.exec(&format!(
        "CREATE DATABASE sqlproxy; CREATE USER '{STORE_USER}'@'%' IDENTIFIED BY '{STORE_PASSWORD}'; \
         GRANT ALL ON sqlproxy.* TO '{STORE_USER}'@'%'; FLUSH PRIVILEGES;"
    ))
    .unwrap();
    let mut pw_file = tempfile::NamedTempFile::new().unwrap();
    writeln!(pw_file, "{STORE_PASSWORD}").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(pw_file.path(), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    Store { db, pw_file }
}

/// An instance's config: the fleet through `store_port`, holds long enough for a copy.
fn instance(
    old: &testkit::MariaDb,
    new: &testkit::MariaDb,
    st: &Store,
    store_port: u16,
    name: &str,
) -> Setup {
    instance_with(
        old,
        new,
        st.pw_file.path(),
        &format!("127.0.0.1:{store_port}"),
        name,
        LEASE_MS,
    )
}

fn metric(s: &Setup, name: &str) -> f64 {
    let (code, v) = s.admin(Method::Get, "/metrics", "");
    assert_eq!(code, 200);
    let text = v.as_str().unwrap().to_string();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} not in {text}"))
        .parse()
        .unwrap()
}

#[test]
fn a_switch_through_one_instance_moves_both_and_a_cut_off_instance_fences_itself() {
    let (a, b) = sides();
    let st = store();
    let fwd = Forwarder::start(SocketAddr::from(([127, 0, 0, 1], st.db.port())));
    let sa = instance(&a, &b, &st, st.db.port(), "proxy-a");
    let sb = instance(&a, &b, &st, fwd.addr.port(), "proxy-b");
    let (_da, _db) = start_two(&sa, &sb);
    // The password is in no log and no config.
    for s in [&sa, &sb] {
        let cfg = std::fs::read_to_string(&s.cfg).unwrap();
        assert!(!cfg.contains(STORE_PASSWORD));
    }

    write(&sa, "shop", "before-a").unwrap();
    write(&sb, "shop", "before-b").unwrap();
    assert_eq!(count(&a, "shop.t", "before-%"), 2);

    // 1. The migrator's switch through A's admin API (the SqlProxy trait): pause holds B's
    // clients too, the resume moves both.
    let pa = proxy_client(&sa);
    pa.pause("shop").unwrap();
    let held = {
        let addr = sb.addr();
        std::thread::spawn(move || {
            let out = cli(
                addr,
                APP_USER,
                APP_PASSWORD,
                &["shop"],
                "INSERT INTO t (v) VALUES ('held-b')",
            );
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stderr).to_string(),
            )
        })
    };
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        count(&a, "shop.t", "held-b"),
        0,
        "B served a paused database"
    );
    a.copy_database_to("shop", &b).unwrap();
    pa.resume("shop", Some("new")).unwrap();
    // No wait: when the resume returns, both instances route to the new side.
    write(&sb, "shop", "after-b").unwrap();
    write(&sa, "shop", "after-a").unwrap();
    let (ok, err) = held.join().unwrap();
    assert!(ok, "{err}");
    assert_eq!(count(&a, "shop.t", "after-%"), 0);
    assert_eq!(count(&a, "shop.t", "held-b"), 0);
    assert_eq!(count(&b, "shop.t", "after-%"), 2);
    assert_eq!(count(&b, "shop.t", "held-b"), 1);
    let rb = proxy_client(&sb).route("shop").unwrap();
    assert_eq!(rb.side, "new");
    let epoch = rb.epoch.unwrap();
    assert!(metric(&sb, "sqlproxy_fleet_acked_epoch") >= epoch as f64);
    assert!(metric(&sb, "sqlproxy_fleet_held_queries_total") >= 1.0);

    // 2. B is cut off from the store while a client writes to blog through it.
    write(&sb, "blog", "b-before-cut").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(Vec::<(Instant, bool)>::new()));
    let writer = {
        let (addr, stop, log) = (sb.addr(), stop.clone(), log.clone());
        std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) && i < 400 {
                i += 1;
                // When the write began: its client's exit and reaping after B answered can
                // lag by a good part of a second on a loaded machine.
                let began = Instant::now();
                let out = cli(
                    addr,
                    APP_USER,
                    APP_PASSWORD,
                    &["--connect-timeout=2", "blog"],
                    &format!("INSERT INTO t (v) VALUES ('bg-{i}')"),
                );
                log.lock().unwrap().push((began, out.status.success()));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let cut = Instant::now();
    fwd.freeze(true);
    // The switch through A: the pause completes once B's lease has run out, not before B
    // stopped serving, and never waits much longer.
    let t = Instant::now();
    let (code, v) = sa.admin(Method::Post, "/routes/blog/pause", "{}");
    let paused_after = t.elapsed();
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["instances"], serde_json::json!(["proxy-a"]), "{v}");
    assert!(
        paused_after <= Duration::from_millis(LEASE_MS + 2000),
        "{paused_after:?}"
    );
    assert!(
        paused_after >= Duration::from_millis(LEASE_MS / 2),
        "the pause did not wait for B's lease: {paused_after:?}"
    );
    let old_rows_at_pause = count(&a, "blog.t", "%");
    a.copy_database_to("blog", &b).unwrap();
    let (code, v) = sa.admin(Method::Post, "/routes/blog/resume", r#"{"side":"new"}"#);
    assert_eq!(code, 200, "{v}");
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    // Nothing reached the old side after the pause committed; B served no write begun from
    // half a lease after the cut (its watchdog fences within a few tens of ms of that; writes
    // begun before may finish after it).
    assert_eq!(count(&a, "blog.t", "%"), old_rows_at_pause);
    let fenced_by = cut + Duration::from_millis(LEASE_MS / 2 + 300);
    let served_late: Vec<_> = log
        .lock()
        .unwrap()
        .iter()
        .filter(|(at, ok)| *ok && *at > fenced_by)
        .map(|(at, _)| at.duration_since(cut))
        .collect();
    assert!(
        served_late.is_empty(),
        "B served writes begun this long after the cut: {served_late:?}"
    );
    // The new side has what the copy took from the old one, and nothing through B since.
    assert_eq!(count(&b, "blog.t", "bg-%"), count(&a, "blog.t", "bg-%"));
    assert_eq!(metric(&sb, "sqlproxy_fleet_fenced"), 1.0);
    let (code, v) = sb.admin(Method::Get, "/routes/blog", "");
    assert_eq!((code, v["fenced"].as_bool()), (200, Some(true)), "{v}");
    let e = write(&sb, "blog", "fenced").unwrap_err();
    assert!(e.contains("paused"), "{e}");
    assert_eq!(
        count(&a, "blog.t", "fenced") + count(&b, "blog.t", "fenced"),
        0
    );

    // 3. The store comes back: B renews, applies the switch it missed, serves again.
    fwd.freeze(false);
    let back = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        metric(&sb, "sqlproxy_fleet_fenced") == 0.0
    });
    assert!(back, "B did not come back");
    write(&sb, "blog", "b-after").unwrap();
    assert_eq!(count(&b, "blog.t", "b-after"), 1);
    assert_eq!(count(&a, "blog.t", "b-after"), 0);
    assert!(metric(&sb, "sqlproxy_fleet_fences_total") >= 1.0);
    let log_b = std::fs::read_to_string(&sb.log).unwrap();
    assert!(log_b.contains("FENCED"), "{log_b}");
    for s in [&sa, &sb] {
        assert!(!std::fs::read_to_string(&s.log)
            .unwrap()
            .contains(STORE_PASSWORD));
    }
}

#[test]
fn a_sigkilled_instance_delays_a_switch_by_at_most_its_lease() {
    let (a, b) = sides();
    let st = store();
    let sa = instance(&a, &b, &st, st.db.port(), "proxy-a");
    let sb = instance(&a, &b, &st, st.db.port(), "proxy-b");
    let (_da, db) = start_two(&sa, &sb);
    write(&sb, "shop", "b").unwrap();
    db.kill9();
    let t = Instant::now();
    let pa = proxy_client(&sa);
    pa.pause("shop").unwrap();
    let waited = t.elapsed();
    assert!(
        waited <= Duration::from_millis(LEASE_MS + 2000),
        "{waited:?}"
    );
    assert!(
        waited >= Duration::from_millis(LEASE_MS / 2),
        "the pause did not wait for B's lease at all: {waited:?}"
    );
    a.copy_database_to("shop", &b).unwrap();
    pa.resume("shop", Some("new")).unwrap();
    write(&sa, "shop", "after").unwrap();
    assert_eq!(count(&b, "shop.t", "after"), 1);
    assert_eq!(count(&a, "shop.t", "after"), 0);
    // A clean stop leaves the fleet at once: the next switch does not wait.
    let sc = instance(&a, &b, &st, st.db.port(), "proxy-c");
    let dc = sc.start();
    dc.term();
    let t = Instant::now();
    pa.pause("shop").unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(LEASE_MS / 2),
        "{:?}",
        t.elapsed()
    );
    pa.resume("shop", None).unwrap();
}

#[test]
fn a_pause_the_fleet_cannot_drain_is_undone_with_a_clear_error_within_a_bounded_time() {
    let (a, b) = sides();
    let st = store();
    let sa = instance(&a, &b, &st, st.db.port(), "proxy-a");
    let sb = instance(&a, &b, &st, st.db.port(), "proxy-b");
    let (_da, _db) = start_two(&sa, &sb);
    // A statement that outlives every deadline, through B.
    let addr = sb.addr();
    let _slow = std::thread::spawn(move || {
        cli(addr, APP_USER, APP_PASSWORD, &["shop"], "SELECT SLEEP(12)")
    });
    std::thread::sleep(Duration::from_millis(700));
    let t = Instant::now();
    let (code, v) = sa.admin(Method::Post, "/routes/shop/pause", "{}");
    let waited = t.elapsed();
    assert_eq!(code, 504, "{v}");
    let e = v["error"].as_str().unwrap();
    assert!(
        e.contains("pause undone") && e.contains("proxy-b") && !e.contains("proxy-a"),
        "{e}"
    );
    // A lease plus the drain deadlines plus two rounds, and the undo's round trip.
    assert!(
        waited <= Duration::from_millis(LEASE_MS + 1000 + 2000),
        "{waited:?}"
    );
    assert!(waited >= Duration::from_millis(LEASE_MS), "{waited:?}");
    for s in [&sa, &sb] {
        let (_, r) = s.admin(Method::Get, "/routes/shop", "");
        assert_eq!(
            (r["side"].as_str(), r["mode"].as_str()),
            (Some("old"), Some("open")),
            "{r}"
        );
    }
    write(&sb, "shop", "after-undo").unwrap();
    assert_eq!(count(&a, "shop.t", "after-undo"), 1);
}

#[test]
fn shared_store_commits_are_checked_against_the_epoch_and_a_missing_fleet_is_refused() {
    use sql_proxy::route::Mode;
    use sql_proxy::route_store::{Committed, SharedStore, StoreError};
    let st = store();
    let opts = s_opts(&st);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let s = SharedStore::new(vec![opts], "old-db1", Duration::from_secs(5));
        assert!(matches!(s.check().await, Err(StoreError::NoFleet { .. })));
        let seed = vec![("shop".to_string(), "old".to_string(), Mode::Open)];
        assert_eq!(s.create(&seed).await.unwrap(), 1);
        assert!(matches!(
            s.create(&seed).await,
            Err(StoreError::FleetExists { .. })
        ));
        s.check().await.unwrap();
        // Another fleet in the same schema is separate.
        let other = SharedStore::new(vec![s_opts(&st)], "old-db2", Duration::from_secs(5));
        assert!(matches!(
            other.check().await,
            Err(StoreError::NoFleet { .. })
        ));

        let c = s
            .commit("shop", 1, "new", Mode::Paused, Mode::Open)
            .await
            .unwrap();
        assert_eq!(c, Committed::Done(2));
        // A writer that had not seen epoch 2: refused, shown what is stored.
        let Committed::Conflict(Some(cur)) = s
            .commit("shop", 1, "old", Mode::Open, Mode::Open)
            .await
            .unwrap()
        else {
            panic!("a stale commit went through");
        };
        assert_eq!(
            (cur.side.as_str(), cur.mode, cur.epoch),
            ("new", Mode::Paused, 2)
        );
        // Two writers of a database never stored: one wins.
        assert_eq!(
            s.commit("Blog", 0, "old", Mode::Open, Mode::Open)
                .await
                .unwrap(),
            Committed::Done(3)
        );
        assert!(matches!(
            s.commit("Blog", 0, "new", Mode::Open, Mode::Open)
                .await
                .unwrap(),
            Committed::Conflict(Some(_))
        ));
        // Names are case-sensitive, as MariaDB's database names are on Linux.
        assert_eq!(
            s.commit("blog", 0, "new", Mode::Open, Mode::Open)
                .await
                .unwrap(),
            Committed::Done(4)
        );
        let snap = s.changes_since(2).await.unwrap();
        assert_eq!(snap.last_epoch, 4);
        let names: Vec<_> = snap.changed.iter().map(|r| r.database.as_str()).collect();
        assert_eq!(names, ["Blog", "blog"]);

        // Leases by the store's clock: live, then expired; acks never go down. The lease
        // outlasts the ack and the read after the renewal by far, on a loaded machine too.
        s.renew("i1", "127.0.0.1:1", Duration::from_millis(2000), 3)
            .await
            .unwrap();
        s.ack("i1", 2).await.unwrap();
        let i = s.instances().await.unwrap();
        assert_eq!((i.len(), i[0].live, i[0].acked_epoch), (1, true, 3));
        tokio::time::sleep(Duration::from_millis(2200)).await;
        let i = s.instances().await.unwrap();
        assert!(!i[0].live && i[0].lease_left_ms < 0, "{i:?}");
        s.deregister("i1").await.unwrap();
        assert!(s.instances().await.unwrap().is_empty());
    });
}

fn s_opts(st: &Store) -> mysql_async::Opts {
    mysql_async::OptsBuilder::default()
        .ip_or_hostname("127.0.0.1")
        .tcp_port(st.db.port())
        .user(Some(STORE_USER))
        .pass(Some(STORE_PASSWORD))
        .db_name(Some("sqlproxy"))
        .prefer_socket(false)
        .into()
}
