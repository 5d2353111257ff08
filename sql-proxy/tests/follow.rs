//! Issue 18, findings 2, 7 and 10 (first item), against the real `sql-proxy` binary and a
//! real MariaDB on each side, every write checked on both backends directly:
//! - a session follows the database it acts on (`USE`, `COM_INIT_DB`, a `USE` in a batch, a
//!   login without database), obeys that database's side and mode, and names of other
//!   databases (`other.t`) on another side or in a stricter mode are refused;
//! - `read_only` holds against executable comments, stored functions in a SELECT (and one
//!   that turns the session read-write) and statement id 0xFFFFFFFF;
//! - state bound to a backend (temporary tables, GET_LOCK) keeps the session on its backend
//!   until released, else the client is told it was lost; LAST_INSERT_ID() is carried.

mod common;

use std::time::{Duration, Instant};

use common::daemon::Setup;
use common::*;
use drivers::http::Method;
use mysql_async::prelude::*;
use sql_proxy::backend::{BackendConn, Login};
use sql_proxy::protocol::{cap, ErrPacket};

const MULTI_USER: &str = "multi";
const MULTI_PASSWORD: &str = "multi-secret-pw";

/// Two sides, each with databases `shop` and `blog` (table `t`), the `app` user (grant on
/// `shop`) and `multi` (grants on `blog` and `shop`); a function `shop.fw(v)` that inserts
/// into `shop.t` and `shop.unlock_rw()` that makes the session's transactions read-write.
fn two_sides() -> (testkit::MariaDb, testkit::MariaDb) {
    let a = backend();
    let b = backend();
    for db in [&a, &b] {
        db.exec(&format!(
            "CREATE DATABASE blog; \
             CREATE TABLE shop.t (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(32)); \
             CREATE TABLE blog.t (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(32)); \
             CREATE USER '{MULTI_USER}'@'%' IDENTIFIED BY '{MULTI_PASSWORD}'; \
             GRANT ALL ON blog.* TO '{MULTI_USER}'@'%'; GRANT ALL ON shop.* TO '{MULTI_USER}'@'%'; \
             FLUSH PRIVILEGES;"
        ))
        .unwrap();
        db.exec(
            "DELIMITER ;;\n\
             CREATE FUNCTION shop.fw(x VARCHAR(32)) RETURNS INT MODIFIES SQL DATA \
               BEGIN INSERT INTO shop.t (v) VALUES (x); RETURN 1; END;;\n\
             CREATE FUNCTION shop.unlock_rw() RETURNS INT \
               BEGIN SET SESSION TRANSACTION READ WRITE; RETURN 1; END;;\n\
             DELIMITER ;\n",
        )
        .unwrap();
    }
    (a, b)
}

/// Rows of `db.t` with value `v` on a backend, read directly.
fn rows(side: &testkit::MariaDb, db: &str, v: &str) -> String {
    side.exec(&format!("SELECT COUNT(*) FROM {db}.t WHERE v = '{v}'"))
        .unwrap()
        .trim()
        .to_string()
}

/// Where rows with `v` landed: (old, new).
fn landed(a: &testkit::MariaDb, b: &testkit::MariaDb, db: &str, v: &str) -> (String, String) {
    (rows(a, db, v), rows(b, db, v))
}

fn set_route(s: &Setup, db: &str, body: &str) {
    let (code, v) = s.admin(Method::Put, &format!("/routes/{db}"), body);
    assert_eq!(code, 200, "{v}");
}

fn url_as(s: &Setup, user: &str, pw: &str, db: &str) -> String {
    format!(
        "mysql://{user}:{pw}@127.0.0.1:{}/{db}?prefer_socket=false",
        s.port
    )
}

fn code(e: &mysql_async::Error) -> Option<u16> {
    match e {
        mysql_async::Error::Server(s) => Some(s.code),
        _ => None,
    }
}

/// A raw protocol client (the proxy's own backend login code, pointed at the proxy).
async fn raw(s: &Setup, user: &str, pw: &str, db: Option<&str>) -> BackendConn {
    let login = Login {
        user: user.into(),
        stage1: Some(sql_proxy::auth::stage1_of(pw)),
        database: db.map(str::to_string),
        capabilities: cap::PROTOCOL_41
            | cap::LONG_PASSWORD
            | cap::TRANSACTIONS
            | cap::MULTI_RESULTS
            | cap::MULTI_STATEMENTS
            | cap::SECURE_CONNECTION
            | cap::PLUGIN_AUTH,
        charset: 45,
        max_packet: 1 << 24,
        tls: Default::default(),
    };
    BackendConn::connect("proxy", s.addr(), &login, Duration::from_secs(10))
        .await
        .unwrap()
}

/// One command on a raw client; Ok(payload of an OK) or the error packet.
async fn command(c: &mut BackendConn, payload: &[u8]) -> Result<Vec<u8>, ErrPacket> {
    c.write_packet(0, payload).await.unwrap();
    let p = c.read_packet().await.unwrap();
    if <[u8]>::first(&p.payload) == Some(&0xFF) {
        return Err(ErrPacket::parse(&p.payload).unwrap());
    }
    Ok(p.payload)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn a_session_follows_the_database_it_selects_to_that_database_s_side() {
    let (a, b) = two_sides();
    let s = Setup::new(&a, Some(&b), "");
    s.init();
    let _d = s.start();
    set_route(&s, "blog", r#"{"side":"new"}"#);
    rt().block_on(async {
        // Logged in to shop (old), then USE blog (switched to new): its writes go to new.
        let mut c = mysql_async::Conn::from_url(url_as(&s, MULTI_USER, MULTI_PASSWORD, "shop"))
            .await
            .unwrap();
        c.query_drop("INSERT INTO t (v) VALUES ('shop-1')")
            .await
            .unwrap();
        c.query_drop("USE blog").await.unwrap();
        c.query_drop("INSERT INTO t (v) VALUES ('use')")
            .await
            .unwrap();
        // Back to shop, then a batch that changes database before it writes.
        c.query_drop("USE shop").await.unwrap();
        c.query_drop("INSERT INTO t (v) VALUES ('shop-2')")
            .await
            .unwrap();
        c.query_drop("USE `blog`; INSERT INTO t (v) VALUES ('batch')")
            .await
            .unwrap();
        let db: Option<String> = c.query_first("SELECT DATABASE()").await.unwrap();
        assert_eq!(db.as_deref(), Some("blog"));
        // A batch that writes shop (old) and then USEs blog (new) cannot run on one server.
        c.query_drop("USE shop").await.unwrap();
        let e = c
            .query_drop("INSERT INTO t (v) VALUES ('split'); USE blog")
            .await
            .unwrap_err();
        assert_eq!(code(&e), Some(1105), "{e}");
        // A qualified name of a database on the other side is refused, never sent.
        let e = c
            .query_drop("INSERT INTO blog.t (v) VALUES ('qualified')")
            .await
            .unwrap_err();
        assert_eq!(code(&e), Some(1105), "{e}");
        assert!(e.to_string().contains("served by another server"), "{e}");
        let e = c
            .query_drop("INSERT INTO `blog` . `t` (v) VALUES ('qualified')")
            .await
            .unwrap_err();
        assert_eq!(code(&e), Some(1105), "{e}");
        // An alias that is not a database is not refused.
        let n: Option<i64> = c
            .query_first("SELECT COUNT(blog.id) FROM t AS blog")
            .await
            .unwrap();
        assert_eq!(n, Some(2));
        // On the side that is not the default, a query sqlparser cannot parse (MariaDB's
        // LIMIT ROWS EXAMINED) with a table alias before a dot still runs.
        c.query_drop("USE blog").await.unwrap();
        let ids: Vec<i64> = c
            .query("SELECT wp.id FROM t AS wp LIMIT ROWS EXAMINED 1000")
            .await
            .unwrap();
        assert_eq!(ids.len(), 2);

        // COM_INIT_DB (what mysqli_select_db sends) from a raw client.
        let mut r = raw(&s, MULTI_USER, MULTI_PASSWORD, Some("shop")).await;
        command(&mut r, b"\x02blog").await.unwrap();
        command(&mut r, b"\x03INSERT INTO t (v) VALUES ('init-db')")
            .await
            .unwrap();
    });
    // The mariadb CLI's `use` (COM_INIT_DB too).
    let out = cli(
        s.addr(),
        MULTI_USER,
        MULTI_PASSWORD,
        &["shop"],
        "use blog; INSERT INTO t (v) VALUES ('cli')",
    );
    assert!(out.status.success(), "{out:?}");
    for (db, v, want) in [
        ("shop", "shop-1", ("1", "0")),
        ("shop", "shop-2", ("1", "0")),
        ("blog", "use", ("0", "1")),
        ("blog", "batch", ("0", "1")),
        ("blog", "init-db", ("0", "1")),
        ("blog", "cli", ("0", "1")),
        ("shop", "split", ("0", "0")),
        ("blog", "qualified", ("0", "0")),
    ] {
        let got = landed(&a, &b, db, v);
        assert_eq!((got.0.as_str(), got.1.as_str()), want, "{db}.t '{v}'");
    }
}

#[test]
fn a_client_without_database_is_held_when_it_selects_a_paused_one() {
    let (a, b) = two_sides();
    let s = Setup::new(&a, Some(&b), "[limits]\nhold_deadline_ms = 10000");
    s.init();
    let _d = s.start();
    rt().block_on(async {
        // Logged in without a database: two grants (blog, shop), so no side is guessed.
        let mut r = raw(&s, MULTI_USER, MULTI_PASSWORD, None).await;
        assert_eq!(r.query("SELECT 1").await.unwrap().len(), 1);
        let (code, v) = s.admin(Method::Post, "/routes/shop/pause", "{}");
        assert_eq!(code, 200, "{v}");
        let s_admin = s.admin;
        // Taken before the resumer starts its 600 ms: the resume cannot come sooner after it.
        let t = Instant::now();
        let resumer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(600));
            common::daemon::admin_call(
                s_admin,
                Method::Post,
                "/routes/shop/resume",
                r#"{"side":"new"}"#,
            )
        });
        command(&mut r, b"\x02shop").await.unwrap();
        let held = t.elapsed();
        let (code, v) = resumer.join().unwrap();
        assert_eq!(code, 200, "{v}");
        assert!(held >= Duration::from_millis(500), "not held: {held:?}");
        command(&mut r, b"\x03INSERT INTO t (v) VALUES ('after-pause')")
            .await
            .unwrap();
        // A single-grant user without a database is routed by that grant (shop, now new).
        let mut app = raw(&s, APP_USER, APP_PASSWORD, None).await;
        command(
            &mut app,
            b"\x03INSERT INTO shop.t (v) VALUES ('single-grant')",
        )
        .await
        .unwrap();
    });
    assert_eq!(
        landed(&a, &b, "shop", "after-pause"),
        ("0".into(), "1".into())
    );
    assert_eq!(
        landed(&a, &b, "shop", "single-grant"),
        ("0".into(), "1".into())
    );
}

#[test]
fn other_databases_named_in_a_statement_obey_their_mode() {
    let (a, b) = two_sides();
    let s = Setup::new(&a, Some(&b), "[limits]\nhold_deadline_ms = 300");
    s.init();
    let _d = s.start();
    rt().block_on(async {
        let mut c = mysql_async::Conn::from_url(url_as(&s, MULTI_USER, MULTI_PASSWORD, "shop"))
            .await
            .unwrap();
        c.query_drop("INSERT INTO blog.t (v) VALUES ('open')")
            .await
            .unwrap();
        set_route(&s, "blog", r#"{"mode":"read_only"}"#);
        for write in [
            "INSERT INTO blog.t (v) VALUES ('ro')",
            "INSERT INTO `blog`.t (v) VALUES ('ro')",
            "UPDATE t JOIN blog.t AS bt ON bt.id = t.id SET bt.v = 'ro'",
        ] {
            let e = c.query_drop(write).await.unwrap_err();
            assert_eq!(code(&e), Some(1290), "{write}: {e}");
        }
        let n: Option<i64> = c.query_first("SELECT COUNT(*) FROM blog.t").await.unwrap();
        assert_eq!(n, Some(1));
        // A prepared write naming blog, prepared while open, refused at execute.
        set_route(&s, "blog", r#"{"mode":"open"}"#);
        let ins = c.prep("INSERT INTO blog.t (v) VALUES (?)").await.unwrap();
        set_route(&s, "blog", r#"{"mode":"read_only"}"#);
        let e = c.exec_drop(&ins, ("ro",)).await.unwrap_err();
        assert_eq!(code(&e), Some(1290), "{e}");
        // Paused: refused at once with a clear error (the pause waits for nobody here).
        let (code_, v) = s.admin(Method::Post, "/routes/blog/pause", "{}");
        assert_eq!(code_, 200, "{v}");
        let e = c
            .query_drop("SELECT COUNT(*) FROM blog.t")
            .await
            .unwrap_err();
        assert!(e.to_string().contains("paused"), "{e}");
        c.query_drop("INSERT INTO t (v) VALUES ('shop-open')")
            .await
            .unwrap();
    });
    assert_eq!(rows(&a, "blog", "open"), "1");
    assert_eq!(rows(&a, "blog", "ro"), "0");
    assert_eq!(rows(&a, "shop", "shop-open"), "1");
}

#[test]
fn read_only_holds_against_comments_functions_and_the_last_statement_id() {
    let (a, b) = two_sides();
    let s = Setup::new(&a, Some(&b), "");
    s.init();
    let _d = s.start();
    rt().block_on(async {
        let mut c = mysql_async::Conn::from_url(url_as(&s, APP_USER, APP_PASSWORD, "shop"))
            .await
            .unwrap();
        let mut r = raw(&s, APP_USER, APP_PASSWORD, Some("shop")).await;
        // Prepared while open (as the last statement), executed by id 0xFFFFFFFF later.
        let id = r
            .prepare(b"INSERT INTO t (v) VALUES ('last-id')")
            .await
            .unwrap();
        assert_ne!(id, u32::MAX);
        set_route(&s, "shop", r#"{"mode":"read_only"}"#);
        for write in [
            // The server runs these as INSERT … SELECT.
            "/*M! INSERT t (v) */ SELECT 'comment'",
            "/*!50001 INSERT t (v) */ SELECT 'comment'",
            "/*M!100100 INSERT INTO t (v) */ SELECT 'comment'",
            "SET SESSION TRANSACTION READ WRITE",
            "SELECT unlock_rw(); SELECT fw('two-step')",
        ] {
            let e = c.query_drop(write).await.unwrap_err();
            assert_eq!(code(&e), Some(1290), "{write}: {e}");
        }
        // A stored function that writes, called in a SELECT: the server refuses it.
        let e = c.query_drop("SELECT fw('function')").await.unwrap_err();
        assert_eq!(code(&e), Some(1792), "{e}");
        // One that turns the session read-write, then the writing one: still refused.
        let one: Option<i64> = c.query_first("SELECT unlock_rw()").await.unwrap();
        assert_eq!(one, Some(1));
        let e = c.query_drop("SELECT fw('after-unlock')").await.unwrap_err();
        assert_eq!(code(&e), Some(1792), "{e}");
        let n: Option<i64> = c.query_first("SELECT COUNT(*) FROM t").await.unwrap();
        assert_eq!(n, Some(0));
        // COM_STMT_EXECUTE of "the statement prepared last": checked like its own id.
        let mut exec = vec![0x17];
        exec.extend_from_slice(&u32::MAX.to_le_bytes());
        exec.extend_from_slice(&[0, 1, 0, 0, 0]);
        let e = command(&mut r, &exec).await.unwrap_err();
        assert_eq!(e.code, 1290, "{e:?}");
        // Open again: everything works, the session is read-write again.
        set_route(&s, "shop", r#"{"mode":"open"}"#);
        command(&mut r, &exec).await.unwrap();
        c.query_drop("SELECT fw('open')").await.unwrap();
    });
    for v in ["comment", "two-step", "function", "after-unlock"] {
        assert_eq!(rows(&a, "shop", v), "0", "{v}");
    }
    assert_eq!(rows(&a, "shop", "last-id"), "1");
    assert_eq!(rows(&a, "shop", "open"), "1");
}

#[test]
fn state_bound_to_a_backend_keeps_it_until_released_or_the_client_is_told() {
    let (a, b) = two_sides();
    let s = Setup::new(&a, Some(&b), "");
    s.init();
    let _d = s.start();
    rt().block_on(async {
        let mut tmp = mysql_async::Conn::from_url(url_as(&s, APP_USER, APP_PASSWORD, "shop"))
            .await
            .unwrap();
        let mut lock = mysql_async::Conn::from_url(url_as(&s, APP_USER, APP_PASSWORD, "shop"))
            .await
            .unwrap();
        tmp.query_drop("CREATE TEMPORARY TABLE tmp (a INT)")
            .await
            .unwrap();
        tmp.query_drop("INSERT INTO t (v) VALUES ('before')")
            .await
            .unwrap();
        let got: Option<i64> = lock.query_first("SELECT GET_LOCK('k', 0)").await.unwrap();
        assert_eq!(got, Some(1));
        // The switch waits for both; the lock is released in time, the temporary table not.
        let admin = s.admin;
        let switch = std::thread::spawn(move || {
            common::daemon::admin_call(
                admin,
                Method::Post,
                "/routes/shop/switch",
                r#"{"to":"new","txn_deadline_ms":800}"#,
            )
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Not held while paused: it still runs on its backend, and releases its lock.
        let released: Option<i64> = lock.query_first("SELECT RELEASE_LOCK('k')").await.unwrap();
        assert_eq!(released, Some(1));
        let (code_, v) = switch.join().unwrap();
        assert_eq!(code_, 200, "{v}");
        assert_eq!(v["pause"]["aborted_transactions"], 1, "{v}");
        // The temporary table's session is told what it lost, once; then it runs on new.
        let e = tmp.query_drop("SELECT * FROM tmp").await.unwrap_err();
        assert_eq!(code(&e), Some(1317), "{e}");
        assert!(e.to_string().contains("temporary tables tmp"), "{e}");
        tmp.query_drop("INSERT INTO t (v) VALUES ('after-tmp')")
            .await
            .unwrap();
        lock.query_drop("INSERT INTO t (v) VALUES ('after-lock')")
            .await
            .unwrap();
        // LAST_INSERT_ID() survives a move.
        let mut plain = mysql_async::Conn::from_url(url_as(&s, APP_USER, APP_PASSWORD, "shop"))
            .await
            .unwrap();
        plain
            .query_drop("INSERT INTO t (v) VALUES ('id-1'), ('id-2')")
            .await
            .unwrap();
        let id: Option<u64> = plain.query_first("SELECT LAST_INSERT_ID()").await.unwrap();
        assert!(id.is_some_and(|i| i > 0), "{id:?}");
        let (code_, v) = s.admin(Method::Post, "/routes/shop/switch", r#"{"to":"old"}"#);
        assert_eq!(code_, 200, "{v}");
        let after: Option<u64> = plain.query_first("SELECT LAST_INSERT_ID()").await.unwrap();
        assert_eq!(after, id);
    });
    assert_eq!(
        landed(&a, &b, "shop", "after-tmp"),
        ("0".into(), "1".into())
    );
    assert_eq!(
        landed(&a, &b, "shop", "after-lock"),
        ("0".into(), "1".into())
    );
}
