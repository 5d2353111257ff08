//! Issue 18, findings 9 and 10 (logins), against the real `sql-proxy` binary with its default
//! limits: database names tried at failed logins are not kept as routes; a session's `SET`
//! replay text is capped; one paused database cannot take the whole hold buffer from another;
//! failed logins are throttled per user name and per address, and an unknown user is refused
//! exactly like a wrong password (same error, same time).

mod common;

use std::time::Duration;

use common::daemon::Setup;
use common::raw::{connect_from, first_packet, login, metric, metric_reaches, First};
use drivers::http::Method;
use mysql_async::prelude::Queryable;

fn metrics(s: &Setup) -> String {
    let (code, v) = s.admin(Method::Get, "/metrics", "");
    assert_eq!(code, 200);
    v.as_str().unwrap().to_string()
}

fn route_names(s: &Setup) -> Vec<String> {
    let (code, v) = s.admin(Method::Get, "/routes", "");
    assert_eq!(code, 200, "{v}");
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| r["database"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn names_tried_at_failed_logins_leave_no_route_behind() {
    let db = common::backend();
    let s = Setup::new(&db, None, "");
    s.init();
    let _d = s.start();
    // A tenant logs in with its real password, naming databases that do not exist (or that
    // it has no grant on): the backend refuses each, and each name used to stay a route.
    for i in 0..150 {
        let name = format!("nosuch_{i}");
        let (r, _) = login(
            [127, 0, 0, 1],
            s.addr(),
            common::APP_USER,
            common::APP_PASSWORD,
            Some(&name),
        );
        let e = r.expect_err("a login to a missing database succeeded");
        assert!(matches!(e.code, 1044 | 1049), "{} {}", e.code, e.message);
    }
    let (r, _) = login(
        [127, 0, 0, 1],
        s.addr(),
        common::APP_USER,
        common::APP_PASSWORD,
        Some("shop"),
    );
    assert!(r.is_ok());
    // The last refused login frees its route just after the client read its error.
    let m = metric_reaches(|| metrics(&s), "sqlproxy_routes_freed_total", 150.0);
    assert_eq!(route_names(&s), vec!["shop".to_string()]);
    assert_eq!(metric(&m, "sqlproxy_unstored_routes"), Some(0.0), "{m}");
    assert_eq!(
        metric(&m, "sqlproxy_routes_freed_total"),
        Some(150.0),
        "{m}"
    );
    assert!(!m.contains("nosuch_"), "metrics still name tried databases");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_replay_text_is_capped() {
    let db = common::backend();
    let s = Setup::new(&db, None, "");
    s.init();
    let _d = s.start();
    let mut conn = mysql_async::Conn::new(
        mysql_async::Opts::from_url(&common::url(s.addr(), "shop")).unwrap(),
    )
    .await
    .unwrap();
    // 10 KB of SET text per variable; the default cap is 1 MiB per session.
    let value = "x".repeat(10_000);
    let mut refused_at = None;
    for i in 0..120 {
        match conn.query_drop(format!("SET @v{i} = '{value}'")).await {
            Ok(()) => {}
            Err(mysql_async::Error::Server(e)) => {
                assert_eq!(e.code, 1105, "{}", e.message);
                assert!(e.message.contains("max_set_replay_bytes"), "{}", e.message);
                refused_at = Some(i);
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    let i = refused_at.expect("120 SETs of 10 KB each were all taken for replay");
    assert!((100..=105).contains(&i), "refused at SET #{i}");
    // Refused before it ran: the variable is not set, and the session still works.
    let v: Option<Option<String>> = conn.query_first(format!("SELECT @v{i}")).await.unwrap();
    assert_eq!(v, Some(None));
    let one: Option<u32> = conn.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1));
    conn.disconnect().await.unwrap();
    let m = metrics(&s);
    assert_eq!(metric(&m, "sqlproxy_set_replay_refused_total"), Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_paused_database_cannot_fill_the_hold_buffer_for_another() {
    let db = common::backend();
    db.exec(&format!(
        "CREATE DATABASE blog; GRANT ALL ON blog.* TO '{}'@'%';",
        common::APP_USER
    ))
    .unwrap();
    let s = Setup::new(&db, None, "[limits]\nhold_deadline_ms = 20000\n");
    s.init();
    let _d = s.start();
    let connect = |db: &'static str| {
        let url = common::url(s.addr(), db);
        async move {
            mysql_async::Conn::new(mysql_async::Opts::from_url(&url).unwrap())
                .await
                .unwrap()
        }
    };
    // 64 sessions of tenant `shop` and one of `blog`, connected before the pauses.
    let mut shop = Vec::new();
    for _ in 0..64 {
        shop.push(connect("shop").await);
    }
    let mut blog = connect("blog").await;
    for d in ["shop", "blog"] {
        let (code, v) = s.admin(Method::Post, &format!("/routes/{d}/pause"), "{}");
        assert_eq!(code, 200, "{v}");
    }
    // Each `shop` session sends a 1 MiB query while paused: 64 MiB, the whole default
    // buffer. Only `shop`'s share (16 MiB) may be held; the rest is refused at once.
    let big = format!("SELECT LENGTH('{}')", "y".repeat(1 << 20));
    let mut tasks = Vec::new();
    for mut c in shop {
        let q = big.clone();
        tasks.push(tokio::spawn(async move {
            let r: Result<Option<u64>, _> = c.query_first(q).await;
            (c, r)
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let m = metrics(&s);
    let shop_held = metric(&m, "sqlproxy_held_bytes_database{database=\"shop\"}").unwrap_or(0.0);
    assert!(
        shop_held <= (16 << 20) as f64,
        "shop holds {shop_held} bytes"
    );
    // `blog`'s 1.5 MiB query (more than the ~1 MiB `shop` left of the whole buffer without
    // the share) is held, not refused for a full buffer, and runs at its resume.
    let blog_sql = format!("SELECT LENGTH('{}')", "z".repeat(1536 << 10));
    let blog_q = tokio::spawn(async move {
        let r: Result<Option<u32>, _> = blog.query_first(blog_sql).await;
        r
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    for d in ["blog", "shop"] {
        let (code, v) = s.admin(Method::Post, &format!("/routes/{d}/resume"), "{}");
        assert_eq!(code, 200, "{v}");
    }
    let r = blog_q.await.unwrap();
    assert_eq!(
        r.map_err(|e| e.to_string()).unwrap(),
        Some(1536 << 10),
        "blog's held query"
    );
    let (mut ran, mut refused) = (0, 0);
    for t in tasks {
        let (_c, r) = t.await.unwrap();
        match r {
            Ok(Some(n)) => {
                assert_eq!(n, 1 << 20);
                ran += 1;
            }
            Err(mysql_async::Error::Server(e)) => {
                assert_eq!(e.code, 1040, "{}", e.message);
                assert!(e.message.contains("share"), "{}", e.message);
                refused += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(refused >= 48 && ran >= 1, "ran {ran}, refused {refused}");
    let m = metrics(&s);
    assert_eq!(
        metric(&m, "sqlproxy_hold_share_refused_total"),
        Some(refused as f64)
    );
}

#[test]
fn failed_logins_are_throttled_and_unknown_users_look_like_wrong_passwords() {
    let db = common::backend();
    db.exec("CREATE USER 'app2'@'%' IDENTIFIED BY 'pw2'; GRANT ALL ON shop.* TO 'app2'@'%';")
        .unwrap();
    let s = Setup::new(&db, None, "");
    s.init();
    let _d = s.start();
    let to = s.addr();
    // Same error and same time for an unknown user and a wrong password (each from its own
    // address, so the per-address limit of 50 stays out of the way).
    let mut unknown = Vec::new();
    let mut wrong = Vec::new();
    for i in 0..10u8 {
        let (r, t) = login(
            [127, 0, 1, i],
            to,
            &format!("ghost{i}"),
            "guess",
            Some("shop"),
        );
        let e = r.err().unwrap();
        assert_eq!((e.code, e.sqlstate.as_str()), (1045, "28000"));
        assert_eq!(
            e.message,
            format!("Access denied for user 'ghost{i}'@'127.0.1.{i}' (using password: YES)")
        );
        unknown.push(t);
        let (r, t) = login([127, 0, 2, i], to, "app", "guess", Some("shop"));
        let e = r.err().unwrap();
        assert_eq!((e.code, e.sqlstate.as_str()), (1045, "28000"));
        assert_eq!(
            e.message,
            format!("Access denied for user 'app'@'127.0.2.{i}' (using password: YES)")
        );
        wrong.push(t);
    }
    unknown.sort();
    wrong.sort();
    let (mu, mw) = (unknown[5], wrong[5]);
    let delay = Duration::from_millis(200);
    assert!(
        mu >= delay && mw >= delay,
        "refusals not held to login_failure_delay_ms: {mu:?} {mw:?}"
    );
    let diff = mu.abs_diff(mw);
    assert!(
        diff < Duration::from_millis(20),
        "median refusal of an unknown user {mu:?} vs a wrong password {mw:?}"
    );
    // Per user: `app` has 10 failures; 10 more (default limit 20) and its logins are refused
    // without checking the password, even the right one, from any address.
    for i in 10..20u8 {
        let (r, _) = login([127, 0, 2, i], to, "app", "guess", Some("shop"));
        assert_eq!(r.err().unwrap().code, 1045);
    }
    let (r, _) = login(
        [127, 0, 3, 1],
        to,
        "app",
        common::APP_PASSWORD,
        Some("shop"),
    );
    let e = r.expect_err("app logged in while throttled");
    assert_eq!(e.code, 1045);
    assert!(
        e.message.contains("too many failed logins"),
        "{}",
        e.message
    );
    // ... and an unknown name is treated the same (no existence oracle).
    for _ in 0..20 {
        let (r, _) = login([127, 0, 4, 1], to, "ghost-x", "guess", None);
        assert_eq!(r.err().unwrap().code, 1045);
    }
    let (r, _) = login([127, 0, 5, 1], to, "ghost-x", "guess", None);
    assert!(r.err().unwrap().message.contains("too many failed logins"));
    // Per address: 50 failures (default) from 127.0.6.1 in parallel, then its next
    // connection is refused before the greeting; other users from elsewhere are unaffected.
    let fails: Vec<_> = (0..50)
        .map(|i| {
            std::thread::spawn(move || {
                login([127, 0, 6, 1], to, &format!("spray{i}"), "guess", None)
                    .0
                    .err()
                    .map(|e| e.code)
            })
        })
        .collect();
    for f in fails {
        assert_eq!(f.join().unwrap(), Some(1045));
    }
    let mut c = connect_from([127, 0, 6, 1], to);
    let First::Err(e) = first_packet(&mut c) else {
        panic!("an address with 50 failed logins was still greeted");
    };
    assert_eq!(e.code, 1129, "{}", e.message);
    let (r, _) = login([127, 0, 7, 1], to, "app2", "pw2", Some("shop"));
    assert!(r.is_ok(), "{:?}", r.err().map(|e| e.message));
    let m = metrics(&s);
    assert!(
        metric(&m, "sqlproxy_login_failures_total").unwrap() >= 90.0,
        "{m}"
    );
    assert!(
        metric(&m, "sqlproxy_logins_throttled_total").unwrap() >= 2.0,
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "sqlproxy_connections_refused_total{reason=\"login_failures\"}"
        ),
        Some(1.0)
    );
}
