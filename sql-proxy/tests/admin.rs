//! The admin API over real HTTP: token required, routes and sessions listed, switch with the
//! measured pause, metrics per database and side.

mod common;

use std::sync::Arc;

use common::*;
use drivers::http::{HttpClient, Method};
use mysql_async::prelude::*;
use sql_proxy::admin::{router, AdminState};

/// One admin API request (`drivers::http`, on tokio's blocking pool), with the token when
/// given and `body` as JSON on a POST or PUT; (status, body) whatever the status.
async fn http(
    addr: std::net::SocketAddr,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
    let mut req = HttpClient::for_addr(addr, std::time::Duration::from_secs(30))
        .unwrap()
        .request(method, path);
    if let Some(t) = token {
        req = req.header("Authorization", &format!("Bearer {t}"));
    }
    if method != Method::Get {
        req = req.body("application/json", body);
    }
    let a = tokio::task::spawn_blocking(move || req.send())
        .await
        .unwrap()
        .unwrap();
    (a.status, a.text())
}

/// The admin API of `p` on a loopback port, with `token`; its address and server task.
async fn serve_admin(
    p: &Proxy,
    token: &str,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    serve_admin_with(p, token, true).await
}

/// As [`serve_admin`], with or without the per-database series on `/metrics`.
async fn serve_admin_with(
    p: &Proxy,
    token: &str,
    per_database_metrics: bool,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let app = router(AdminState {
        shared: p.shared.clone(),
        token: Arc::from(token),
        users_file: "/nonexistent/users.json".into(),
        per_database_metrics,
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = l.local_addr().unwrap();
    (
        admin,
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_needs_a_token_lists_switches_and_reports_metrics() {
    let a = backend();
    let b = backend();
    a.exec("CREATE TABLE shop.t (id INT); INSERT INTO shop.t VALUES (1)")
        .unwrap();
    b.exec("CREATE TABLE shop.t (id INT); INSERT INTO shop.t VALUES (2)")
        .unwrap();
    let p = proxy(&a, Some(&b), Default::default()).await;
    let token = "0123456789abcdef-test-token";
    let (admin, server) = serve_admin(&p, token).await;

    for (m, path) in [
        (Method::Get, "/routes"),
        (Method::Get, "/metrics"),
        (Method::Post, "/routes/shop/switch"),
    ] {
        assert_eq!(http(admin, m, path, None, "").await.0, 401, "{m} {path}");
        assert_eq!(
            http(admin, m, path, Some("wrong-token-wrong-token-x"), "")
                .await
                .0,
            401
        );
    }

    let mut conn = mysql_async::Conn::from_url(url(p.addr, "shop"))
        .await
        .unwrap();
    let v: Option<i32> = conn.query_first("SELECT id FROM t").await.unwrap();
    assert_eq!(v, Some(1));

    let (code, body) = http(admin, Method::Get, "/routes", Some(token), "").await;
    assert_eq!(code, 200);
    let routes: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(routes[0]["database"], "shop");
    assert_eq!(routes[0]["side"], "old");
    assert_eq!(routes[0]["sessions"], 1);
    let (_, body) = http(admin, Method::Get, "/sessions", Some(token), "").await;
    let sessions: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(sessions[0]["user"], APP_USER);

    let (code, body) = http(
        admin,
        Method::Post,
        "/routes/shop/switch",
        Some(token),
        r#"{"to":"new"}"#,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(report["resume"]["pause_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(report["resume"]["side"], "new");
    let v: Option<i32> = conn.query_first("SELECT id FROM t").await.unwrap();
    assert_eq!(v, Some(2), "session did not move to the new side");

    let (code, body) = http(
        admin,
        Method::Put,
        "/routes/shop",
        Some(token),
        r#"{"mode":"read_only"}"#,
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert!(conn.query_drop("DELETE FROM t").await.is_err());
    let (code, _) = http(
        admin,
        Method::Put,
        "/routes/shop",
        Some(token),
        r#"{"side":"nowhere"}"#,
    )
    .await;
    assert_eq!(code, 400);
    let (code, _) = http(
        admin,
        Method::Post,
        "/routes/shop/switch",
        Some(token),
        r#"{"to":"nowhere"}"#,
    )
    .await;
    assert_eq!(code, 409);

    let (code, metrics) = http(admin, Method::Get, "/metrics", Some(token), "").await;
    assert_eq!(code, 200);
    assert!(
        metrics.contains("sqlproxy_queries_total{database=\"shop\",side=\"old\"} "),
        "{metrics}"
    );
    assert!(
        metrics.contains("sqlproxy_sessions{database=\"shop\",side=\"new\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sqlproxy_errors_total{database=\"shop\",side=\"new\"} 1"),
        "{metrics}"
    );
    // Per-database series (opt-in here): the pause of `shop`, as counters and a gauge.
    assert!(
        metrics.contains("sqlproxy_database_pauses_total{database=\"shop\"} 1"),
        "{metrics}"
    );
    // Every series passes the reference checker (HELP, TYPE, names, units, histograms).
    testkit::promtool::check_metrics(&metrics).unwrap();

    // By default the series are labelled by side only, and pauses are one histogram: bounded
    // cardinality whatever the number of databases.
    let (plain, plain_server) = serve_admin_with(&p, token, false).await;
    let (code, metrics) = http(plain, Method::Get, "/metrics", Some(token), "").await;
    assert_eq!(code, 200);
    assert!(!metrics.contains("database=\"shop\""), "{metrics}");
    assert!(
        metrics.contains("sqlproxy_sessions{side=\"new\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sqlproxy_errors_total{side=\"new\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sqlproxy_pause_seconds_bucket{le=\"+Inf\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sqlproxy_pause_seconds_count 1\n"),
        "{metrics}"
    );
    testkit::promtool::check_metrics(&metrics).unwrap();
    plain_server.abort();
    server.abort();
}

/// The migrator's admin client names a database as one path segment, whatever it holds: a
/// database called `a/b c` is switched as itself, never as `a` or another path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_name_with_a_slash_addresses_that_database_only() {
    use drivers::proxy::{HttpProxy, SqlProxy};
    use std::os::unix::fs::PermissionsExt;
    let a = backend();
    let b = backend();
    let p = proxy(&a, Some(&b), Default::default()).await;
    let token = "0123456789abcdef-test-token";
    let (admin, server) = serve_admin(&p, token).await;
    let dir = tempfile::tempdir().unwrap();
    let tf = dir.path().join("token");
    std::fs::write(&tf, token).unwrap();
    std::fs::set_permissions(&tf, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (set, got, all) = tokio::task::spawn_blocking(move || {
        let c = HttpProxy::new(admin, &tf).unwrap();
        let set = c.set_side("a/b c", "new").unwrap();
        let got = c.route("a/b c").unwrap();
        (set, got, c.routes().unwrap())
    })
    .await
    .unwrap();
    assert_eq!((set.database.as_str(), set.side.as_str()), ("a/b c", "new"));
    assert_eq!((got.database.as_str(), got.side.as_str()), ("a/b c", "new"));
    assert!(
        !all.iter().any(|r| r.database == "a" || r.database == "b c"),
        "{all:?}"
    );
    server.abort();
}
