//! Modes and switches against real MariaDB instances: read_only, paused with deadline, a
//! database moved back and forth under concurrent load, a long transaction aborted at the
//! switch deadline, and the admin API.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use mysql_async::prelude::*;
use sql_proxy::config::Limits;
use sql_proxy::route::Mode;
use sql_proxy::switch;

fn server_code(e: &mysql_async::Error) -> Option<u16> {
    match e {
        mysql_async::Error::Server(s) => Some(s.code),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_refuses_writes_with_1290() {
    let db = backend();
    let p = proxy(&db, None, Limits::default()).await;
    let mut conn = mysql_async::Conn::from_url(url(p.addr, "shop"))
        .await
        .unwrap();
    conn.query_drop("CREATE TABLE t (id INT PRIMARY KEY)")
        .await
        .unwrap();
    conn.query_drop("INSERT INTO t VALUES (1)").await.unwrap();
    let ins = conn.prep("INSERT INTO t VALUES (?)").await.unwrap();
    p.shared
        .set_route("shop", None, Some(Mode::ReadOnly))
        .await
        .unwrap();
    let n: Option<i64> = conn.query_first("SELECT COUNT(*) FROM t").await.unwrap();
    assert_eq!(n, Some(1));
    let v: Option<i64> = conn
        .exec_first("SELECT id FROM t WHERE id = ?", (1,))
        .await
        .unwrap();
    assert_eq!(v, Some(1));
    conn.query_drop("SET @x = 1").await.unwrap();
    for write in [
        "INSERT INTO t VALUES (2)",
        "SELECT 1; DELETE FROM t",
        "FROB THE TABLE",
    ] {
        let e = conn.query_drop(write).await.unwrap_err();
        assert_eq!(server_code(&e), Some(1290), "{write}: {e}");
    }
    let e = conn.exec_drop(&ins, (3,)).await.unwrap_err();
    assert_eq!(server_code(&e), Some(1290));
    let e = conn.prep("UPDATE t SET id = 5").await.unwrap_err();
    assert_eq!(server_code(&e), Some(1290));
    p.shared
        .set_route("shop", None, Some(Mode::Open))
        .await
        .unwrap();
    conn.exec_drop(&ins, (4,)).await.unwrap();
    let n: Option<i64> = conn.query_first("SELECT COUNT(*) FROM t").await.unwrap();
    assert_eq!(n, Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_queries_wait_then_fail_clearly_after_the_deadline() {
    let db = backend();
    let limits = Limits {
        hold_deadline_ms: 300,
        ..Limits::default()
    };
    let p = proxy(&db, None, limits).await;
    let mut conn = mysql_async::Conn::from_url(url(p.addr, "shop"))
        .await
        .unwrap();
    let shared = p.shared.clone();
    switch::pause(
        &shared,
        "shop",
        Duration::from_secs(1),
        Duration::from_secs(1),
    )
    .await
    .unwrap();
    // Resumed in time: the query waits and succeeds. `t` is taken before the resumer starts
    // its 100 ms (on another worker thread it may start before this task goes on).
    let s2 = shared.clone();
    let t = Instant::now();
    let resumer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        switch::resume(&s2, "shop", None).await.unwrap()
    });
    let v: Option<i64> = conn.query_first("SELECT 7").await.unwrap();
    assert_eq!(v, Some(7));
    assert!(
        t.elapsed() >= Duration::from_millis(80),
        "query was not held"
    );
    let report = resumer.await.unwrap();
    assert!(report.pause_ms >= 80.0, "{report:?}");
    // Not resumed: a clear error after the deadline, and the session still works afterwards.
    switch::pause(
        &shared,
        "shop",
        Duration::from_secs(1),
        Duration::from_secs(1),
    )
    .await
    .unwrap();
    let e = conn.query_drop("SELECT 8").await.unwrap_err();
    assert!(
        e.to_string()
            .contains("stayed paused for a move longer than 300 ms"),
        "{e}"
    );
    switch::resume(&shared, "shop", None).await.unwrap();
    let v: Option<i64> = conn.query_first("SELECT 9").await.unwrap();
    assert_eq!(v, Some(9));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switch_under_load_keeps_sessions_statements_and_rows() {
    let a = backend();
    let b = backend();
    let p = proxy(&a, Some(&b), Limits::default()).await;
    a.exec("CREATE TABLE shop.orders (id INT AUTO_INCREMENT PRIMARY KEY, worker INT, n INT, note VARCHAR(40))").unwrap();
    let committed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..6 {
        let (committed, stop, u) = (committed.clone(), stop.clone(), url(p.addr, "shop"));
        workers.push(tokio::spawn(async move {
            let mut conn = mysql_async::Conn::from_url(u).await.unwrap();
            conn.query_drop("SET time_zone = '+03:00', @worker = 'w'").await.unwrap();
            conn.query_drop(format!("SET @me = {w}")).await.unwrap();
            conn.query_drop("SET NAMES latin1").await.unwrap();
            let ins = conn.prep("INSERT INTO orders (worker, n, note) VALUES (@me, ?, CONCAT(@worker, @@session.time_zone))").await.unwrap();
            let check = conn.prep("SELECT @me, @@session.time_zone, @@character_set_client").await.unwrap();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let mut tx = conn.start_transaction(Default::default()).await.unwrap();
                tx.exec_drop(&ins, (n,)).await.unwrap();
                tx.exec_drop(&ins, (n + 1,)).await.unwrap();
                tx.commit().await.unwrap();
                committed.fetch_add(2, Ordering::Relaxed);
                n += 2;
                let (me, tz, cs): (i64, String, String) = conn.exec_first(&check, ()).await.unwrap().unwrap();
                assert_eq!((me, tz.as_str(), cs.as_str()), (w, "+03:00", "latin1"));
            }
            n
        }));
    }
    let mut pauses = Vec::new();
    let mut on_a = true;
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let r = switch::pause(
            &p.shared,
            "shop",
            Duration::from_secs(5),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert_eq!(r.aborted_transactions, 0);
        let (from, to, side) = if on_a {
            (&a, &b, "new")
        } else {
            (&b, &a, "old")
        };
        tokio::task::block_in_place(|| from.copy_database_to("shop", to).unwrap());
        let r = switch::resume(&p.shared, "shop", Some(side)).await.unwrap();
        pauses.push(r.pause_ms);
        on_a = !on_a;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for w in workers {
        total += w.await.expect("worker failed");
    }
    let final_db = if on_a { &a } else { &b };
    let rows = final_db
        .exec("SELECT COUNT(*), COUNT(DISTINCT worker), MIN(note) FROM shop.orders")
        .unwrap();
    assert_eq!(rows.trim(), format!("{total}\t6\tw+03:00"));
    assert_eq!(committed.load(Ordering::Relaxed), total as u64);
    assert!(total > 0);
    eprintln!("switch pauses (ms): {pauses:?}, rows: {total}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_transaction_is_aborted_at_the_switch_deadline_others_continue() {
    let a = backend();
    let b = backend();
    let p = proxy(&a, Some(&b), Limits::default()).await;
    a.exec("CREATE TABLE shop.t (id INT PRIMARY KEY)").unwrap();
    b.exec("CREATE TABLE shop.t (id INT PRIMARY KEY)").unwrap();
    let mut long = mysql_async::Conn::from_url(url(p.addr, "shop"))
        .await
        .unwrap();
    let mut other = mysql_async::Conn::from_url(url(p.addr, "shop"))
        .await
        .unwrap();
    long.query_drop("BEGIN").await.unwrap();
    long.query_drop("INSERT INTO t VALUES (1)").await.unwrap();
    let t = Instant::now();
    let r = switch::switch(
        &p.shared,
        "shop",
        "new",
        Duration::from_millis(300),
        Duration::from_secs(2),
    )
    .await
    .unwrap();
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert_eq!(r.pause.aborted_transactions, 1);
    // The aborted session is told clearly, once; nothing of its transaction was committed.
    let e = long
        .query_drop("INSERT INTO t VALUES (2)")
        .await
        .unwrap_err();
    assert_eq!(server_code(&e), Some(1317), "{e}");
    assert!(e.to_string().contains("transaction was rolled back"), "{e}");
    assert_eq!(a.exec("SELECT COUNT(*) FROM shop.t").unwrap().trim(), "0");
    long.query_drop("ROLLBACK").await.unwrap();
    long.query_drop("INSERT INTO t VALUES (3)").await.unwrap();
    let v: Option<i64> = other.query_first("SELECT COUNT(*) FROM t").await.unwrap();
    assert_eq!(v, Some(1));
    assert_eq!(b.exec("SELECT id FROM shop.t").unwrap().trim(), "3");
}
