//! Real clients through the proxy against a real MariaDB: the `mariadb` CLI and `mysql_async`.

mod common;

use common::*;
use mysql_async::prelude::*;

async fn run_cli(
    p: std::net::SocketAddr,
    user: &'static str,
    pw: &'static str,
    args: Vec<&'static str>,
    sql: String,
) -> std::process::Output {
    tokio::task::spawn_blocking(move || cli(p, user, pw, &args, &sql))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_cli_queries_multi_results_and_load_data_local() {
    let db = backend();
    let p = proxy(&db, None, Default::default()).await;
    let out = run_cli(
        p.addr,
        APP_USER,
        APP_PASSWORD,
        vec!["shop"],
        "SELECT 1+1; SELECT 'a' UNION SELECT 'b'; SELECT DATABASE()".into(),
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2\na\nb\nshop\n");

    // A stored procedure returning two result sets (multi-results).
    db.exec("DELIMITER //\nCREATE PROCEDURE shop.two() BEGIN SELECT 10; SELECT 20; END//")
        .unwrap();
    let out = run_cli(
        p.addr,
        APP_USER,
        APP_PASSWORD,
        vec!["shop"],
        "CALL two(); SELECT 30".into(),
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "10\n20\n30\n");

    // LOAD DATA LOCAL INFILE.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rows.csv");
    let rows: String = (1..=5000).map(|i| format!("{i},name-{i}\n")).collect();
    std::fs::write(&file, rows).unwrap();
    let sql = format!(
        "CREATE TABLE t (id INT PRIMARY KEY, name VARCHAR(32)); \
         LOAD DATA LOCAL INFILE '{}' INTO TABLE t FIELDS TERMINATED BY ','; \
         SELECT COUNT(*), SUM(id) FROM t",
        file.display()
    );
    let out = run_cli(
        p.addr,
        APP_USER,
        APP_PASSWORD,
        vec!["shop", "--local-infile=1"],
        sql,
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "5000\t12502500\n");

    // COM_FIELD_LIST (what the CLI's auto-rehash sends), spoken with the crate's own client.
    let login = sql_proxy::backend::Login {
        user: APP_USER.into(),
        stage1: Some(sql_proxy::auth::stage1_of(APP_PASSWORD)),
        database: Some("shop".into()),
        capabilities: sql_proxy::protocol::cap::PROXY_OFFER,
        charset: 45,
        max_packet: 1 << 24,
        tls: Default::default(),
    };
    let mut c = sql_proxy::backend::BackendConn::connect(
        "proxy",
        p.addr,
        &login,
        std::time::Duration::from_secs(5),
    )
    .await
    .unwrap();
    c.write_packet(0, b"\x04t\x00").await.unwrap();
    let mut names = Vec::new();
    loop {
        let pk = c.read_packet().await.unwrap();
        if sql_proxy::protocol::is_eof(&pk.payload) {
            break;
        }
        assert_ne!(pk.payload[0], 0xFF, "field list failed");
        let mut r = sql_proxy::wire::Reader::new(&pk.payload);
        for _ in 0..4 {
            r.lenenc_bytes("skip").unwrap();
        }
        names.push(String::from_utf8_lossy(r.lenenc_bytes("name").unwrap().unwrap()).into_owned());
    }
    assert_eq!(names, vec!["id", "name"]);
    // A server-side cursor: COM_STMT_EXECUTE with CURSOR_TYPE_READ_ONLY, then COM_STMT_FETCH.
    let id = c
        .prepare(b"SELECT id FROM t WHERE id <= 3 ORDER BY id")
        .await
        .unwrap();
    let mut exec = vec![0x17];
    exec.extend_from_slice(&id.to_le_bytes());
    exec.push(1);
    exec.extend_from_slice(&1u32.to_le_bytes());
    c.write_packet(0, &exec).await.unwrap();
    let mut eof_status = 0;
    for _ in 0..3 {
        let pk = c.read_packet().await.unwrap();
        if sql_proxy::protocol::is_eof(&pk.payload) {
            eof_status = sql_proxy::protocol::eof_status(&pk.payload).unwrap();
        }
    }
    assert_ne!(eof_status & sql_proxy::protocol::status::CURSOR_EXISTS, 0);
    let mut fetch = vec![0x1c];
    fetch.extend_from_slice(&id.to_le_bytes());
    fetch.extend_from_slice(&2u32.to_le_bytes());
    let mut fetched = 0;
    for _ in 0..2 {
        c.write_packet(0, &fetch).await.unwrap();
        loop {
            let pk = c.read_packet().await.unwrap();
            assert_ne!(pk.payload[0], 0xFF, "fetch failed");
            if sql_proxy::protocol::is_eof(&pk.payload) {
                break;
            }
            fetched += 1;
        }
    }
    assert_eq!(fetched, 3);
    assert_eq!(
        c.query("SELECT COUNT(*) FROM t").await.unwrap(),
        vec![vec![Some("5000".to_string())]]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_unknown_user_and_other_plugins_are_refused() {
    let db = backend();
    let p = proxy(&db, None, Default::default()).await;
    for (user, pw) in [(APP_USER, "wrong"), ("nobody", "x")] {
        let out = run_cli(p.addr, user, pw, vec![], "SELECT 1".into()).await;
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("ERROR 1045 (28000): Access denied for user '{user}'@'127.0.0.1' (using password: YES)")),
            "{err}"
        );
    }
    // Same message as the server itself gives for a wrong password.
    let direct = tokio::task::spawn_blocking({
        let a = addr(&db);
        move || cli(a, APP_USER, "wrong", &[], "SELECT 1")
    })
    .await
    .unwrap();
    let direct_err = String::from_utf8_lossy(&direct.stderr);
    assert!(
        direct_err.contains("ERROR 1045 (28000): Access denied for user 'app'@'localhost'")
            || direct_err.contains("ERROR 1045 (28000): Access denied for user 'app'@'127.0.0.1'"),
        "{direct_err}"
    );
    let out = run_cli(p.addr, "other", "x", vec![], "SELECT 1".into()).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ERROR 1251 (08004): sql-proxy: account 'other' uses authentication plugin 'unix_socket'"),
        "{err}"
    );
    // Compression is refused with a clear message.
    let out = run_cli(
        p.addr,
        APP_USER,
        APP_PASSWORD,
        vec!["--compress"],
        "SELECT 1".into(),
    )
    .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() || err.contains("compression is not supported"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_async_prepared_statements_blobs_and_session_commands() {
    let db = backend();
    let p = proxy(&db, None, Default::default()).await;
    let mut conn = mysql_async::Conn::from_url(url(p.addr, "shop"))
        .await
        .unwrap();
    conn.query_drop("CREATE TABLE b (id INT PRIMARY KEY, data LONGBLOB, note VARCHAR(20))")
        .await
        .unwrap();
    // Prepared statements with binary rows, including NULLs.
    let ins = conn
        .prep("INSERT INTO b (id, data, note) VALUES (?, ?, ?)")
        .await
        .unwrap();
    for i in 0..20i32 {
        let note: Option<String> = (i % 2 == 0).then(|| format!("n{i}"));
        conn.exec_drop(&ins, (i, vec![i as u8; 100], note))
            .await
            .unwrap();
    }
    let rows: Vec<(i32, Vec<u8>, Option<String>)> = conn
        .exec(
            "SELECT id, data, note FROM b WHERE id >= ? ORDER BY id",
            (15,),
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 5);
    assert_eq!(rows[0], (15, vec![15u8; 100], None));
    assert_eq!(rows[1].2.as_deref(), Some("n16"));
    conn.close(ins).await.unwrap();

    // A 20 MiB blob both ways (packets over 16 MiB), as text query and prepared statement.
    let blob: Vec<u8> = (0..20 * 1024 * 1024).map(|i| (i % 253) as u8).collect();
    conn.exec_drop("INSERT INTO b (id, data) VALUES (100, ?)", (blob.clone(),))
        .await
        .unwrap();
    let back: Option<Vec<u8>> = conn
        .exec_first("SELECT data FROM b WHERE id = ?", (100,))
        .await
        .unwrap();
    assert!(
        back.as_deref() == Some(&blob[..]),
        "prepared 20 MiB blob differs"
    );
    let back: Option<Vec<u8>> = conn
        .query_first("SELECT data FROM b WHERE id = 100")
        .await
        .unwrap();
    assert!(
        back.as_deref() == Some(&blob[..]),
        "text 20 MiB blob differs"
    );
    let len: Option<i64> = conn
        .query_first(format!("SELECT LENGTH('{}')", "x".repeat(17 << 20)))
        .await
        .unwrap();
    assert_eq!(len, Some(17 << 20));

    // Multi-statement text query with several result sets.
    let mut res = conn
        .query_iter("SELECT 1; SELECT 2, 3; UPDATE b SET note = 'u' WHERE id = 1")
        .await
        .unwrap();
    let first: Vec<i32> = res.collect().await.unwrap();
    let second: Vec<(i32, i32)> = res.collect().await.unwrap();
    drop(res);
    assert_eq!((first, second), (vec![1], vec![(2, 3)]));

    // Ping, reset connection (clears user variables), change user.
    conn.ping().await.unwrap();
    conn.query_drop("SET @v = 5").await.unwrap();
    conn.reset().await.unwrap();
    let v: Option<Option<i32>> = conn.query_first("SELECT @v").await.unwrap();
    assert_eq!(v, Some(None));
    let opts = mysql_async::ChangeUserOpts::new()
        .with_user(Some(APP_USER.into()))
        .with_pass(Some(APP_PASSWORD.into()))
        .with_db_name(Some("shop".into()));
    conn.change_user(opts).await.unwrap();
    let n: Option<i64> = conn.query_first("SELECT COUNT(*) FROM b").await.unwrap();
    assert_eq!(n, Some(21));
    conn.disconnect().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_proxy_answers_on_several_endpoints() {
    let db = backend();
    let p = proxy(&db, None, Default::default()).await;
    let addrs: Vec<std::net::SocketAddr> = vec![
        "127.0.0.1:0".parse().unwrap(),
        "127.0.0.2:0".parse().unwrap(),
    ];
    let (bound, tasks) = sql_proxy::server::listen(p.shared.clone(), &addrs)
        .await
        .unwrap();
    assert_eq!(bound.len(), 2);
    let mut conns = Vec::new();
    for a in &bound {
        let u = format!(
            "mysql://{APP_USER}:{APP_PASSWORD}@{}:{}/shop?prefer_socket=false",
            a.ip(),
            a.port()
        );
        let mut conn = mysql_async::Conn::from_url(u).await.unwrap();
        let v: Option<String> = conn.query_first("SELECT DATABASE()").await.unwrap();
        assert_eq!(v.as_deref(), Some("shop"));
        conns.push(conn);
    }
    let open = p.shared.sessions.lock().unwrap().len();
    assert_eq!(open, 2);
    for t in tasks {
        t.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_offered_to_clients_that_ask_and_plain_clients_still_work() {
    let db = backend();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let st = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let acceptor = sql_proxy::stream::acceptor(&cert, &key).unwrap();
    let p = proxy_tls(&db, None, Default::default(), Some(acceptor)).await;
    let out = run_cli(
        p.addr,
        APP_USER,
        APP_PASSWORD,
        vec!["--ssl", "--ssl-verify-server-cert=0"],
        "status".into(),
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Cipher in use is"), "{stdout}");
    let out = run_cli(
        p.addr,
        APP_USER,
        APP_PASSWORD,
        vec!["--ssl", "--ssl-verify-server-cert=0"],
        "SELECT 6*7".into(),
    )
    .await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "42\n");
    let out = run_cli(
        p.addr,
        APP_USER,
        APP_PASSWORD,
        vec!["--skip-ssl"],
        "SELECT 6*7".into(),
    )
    .await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "42\n",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A wrong certificate file is named in the error.
    let e = sql_proxy::stream::acceptor(&key, &key).err().unwrap();
    assert!(e.to_string().contains("key.pem"), "{e}");
}

/// mysql_async with `prefer_socket=true` (its default) asks for `@@socket` after login and
/// reconnects through that unix socket if it exists on its host. The proxy answers NULL, so
/// every query keeps going through the proxy: the route's mode and the proxy's counters see it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefer_socket_clients_on_the_backend_host_stay_on_the_proxy() {
    let db = backend();
    // The hazard is real here: the backend's socket is on this host and the account works
    // through it.
    let direct = db.exec("SELECT @@socket").unwrap();
    assert!(
        std::path::Path::new(direct.trim()).exists(),
        "backend socket {direct:?}"
    );
    let p = proxy(&db, None, Default::default()).await;
    let url = format!(
        "mysql://{APP_USER}:{APP_PASSWORD}@127.0.0.1:{}/shop?prefer_socket=true",
        p.addr.port()
    );
    let mut conn = mysql_async::Conn::from_url(url).await.unwrap();
    // The settings query's other columns still come from the backend.
    let row: Option<(Option<String>, u64, u64)> = conn
        .query_first("SELECT @@socket, @@max_allowed_packet, @@wait_timeout")
        .await
        .unwrap();
    let (socket, max_packet, wait) = row.unwrap();
    assert_eq!(socket, None);
    assert!(max_packet >= 1 << 20 && wait > 0, "{max_packet} {wait}");

    let queries = || {
        p.shared
            .counters("shop", "old")
            .queries
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let before = queries();
    for i in 0..20u32 {
        let v: Option<u32> = conn.exec_first("SELECT ?", (i,)).await.unwrap();
        assert_eq!(v, Some(i));
    }
    // 20 prepares (mysql_async caches them: at least the executes) all counted by the proxy.
    assert!(queries() - before >= 20, "{} -> {}", before, queries());
    assert_eq!(p.shared.sessions.lock().unwrap().len(), 1);

    // And the proxy's routing applies to this connection: read_only refuses its writes.
    p.shared
        .set_route("shop", None, Some(sql_proxy::route::Mode::ReadOnly))
        .await
        .unwrap();
    let err = conn
        .query_drop("CREATE TABLE bypass (id INT)")
        .await
        .unwrap_err();
    match err {
        mysql_async::Error::Server(e) => assert_eq!(e.code, 1290, "{e}"),
        other => panic!("expected 1290, got {other}"),
    }
    p.shared
        .set_route("shop", None, Some(sql_proxy::route::Mode::Open))
        .await
        .unwrap();
    conn.query_drop("CREATE TABLE bypass (id INT)")
        .await
        .unwrap();
    conn.disconnect().await.unwrap();
}

/// A login the proxy cannot carry to its backend (the server is down) reaches the stock
/// client with the proxy's reason, not as "2027 malformed packet" (what libmariadb makes of a
/// client-range code such as 2013 sent during the handshake).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_whose_backend_is_down_reads_with_the_reason() {
    let mut db = backend();
    let p = proxy(&db, None, Default::default()).await;
    db.stop();
    let out = run_cli(
        p.addr,
        APP_USER,
        APP_PASSWORD,
        vec!["shop"],
        "SELECT 1".into(),
    )
    .await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ERROR 1429 (HY000): sql-proxy: database 'shop' is unreachable right now"),
        "{err}"
    );
}
