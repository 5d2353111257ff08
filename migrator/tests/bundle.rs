//! Consistency-point bundles (issue 19) against real MariaDB servers and the real `migrator`
//! binary: the old side's checksums journaled by the cutover's verification at the switch
//! (`DbMover::verify`), a write on the new side after the switch, then `bundle capture`,
//! `verify` (dumps restored into scratch databases), `restore` equal to the old side at the
//! switch and without the new side's later write; a tampered part named by `verify`; `expire`
//! deleting only expired bundles; a capture SIGKILLed (by PID) mid-part and rerun, keeping
//! the parts it had finished.

mod bundle_support;

use bundle_support::{capture, capture_cmd, migrator, only, rows, text, Bed};
use migrator::journal::SqliteJournal;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::{Duration, Instant};
use testkit::MariaDb;

const SHOP_SQL: &str = "CREATE DATABASE shop_db CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci; \
    USE shop_db; \
    CREATE TABLE orders (id INT AUTO_INCREMENT PRIMARY KEY, item VARCHAR(64) NOT NULL, \
      qty INT, price DECIMAL(10,2), note TEXT NULL, data BLOB, at DATETIME(3)) ; \
    INSERT INTO orders (item, qty, price, note, data, at) VALUES \
      ('café ☕', 2, 3.50, NULL, 0x00ff10, '2026-12-01 10:00:00.123'), \
      ('tea', NULL, 0.99, 'it''s \\\\ quoted', '', '2026-12-02 11:00:00.000'); \
    CREATE TABLE log (msg VARCHAR(32)); INSERT INTO log VALUES ('a'), ('a'), (NULL); \
    CREATE VIEW big_orders AS SELECT id, item FROM orders WHERE qty > 1;";

#[test]
fn a_bundle_restores_the_old_side_at_the_switch_and_names_a_tampered_part() {
    let bed = Bed::start(&[("shop", &["shop_db"])], SHOP_SQL);
    let (d, old, new) = (bed.d(), &bed.old, &bed.new);

    // Refused before the switch: the old side is not yet a consistency point.
    let o = capture(d, "shop", &[]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("only once the site is live"),
        "{}",
        text(&o)
    );

    bed.switch("shop", &["shop_db"]);
    // After the switch the site writes on the new side only.
    new.exec("INSERT INTO shop_db.orders (item, qty) VALUES ('after the switch', 1)")
        .unwrap();
    let at_switch = rows(old, "SELECT * FROM shop_db.orders ORDER BY id");

    let o = capture(d, "shop", &["--tar", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let r = only(&o);
    let id = r["bundle"].as_str().unwrap().to_string();
    assert_eq!(
        r["written"].as_array().unwrap().len(),
        3,
        "dump, manifest, tar: {r}"
    );
    let key = d.join("keys/bundle.key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // show: the checksums come from the journal (the cutover's verification).
    let o = migrator(d, &["bundle", "show", &id, "--json"]);
    let m: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(m["databases"][0]["checksums_from"], "journal", "{m}");
    assert_eq!(
        m["databases"][0]["checksums"].as_object().unwrap().len(),
        2,
        "{m}"
    );

    // verify: signature, parts, the dump restored into a scratch database, equal.
    let scratch = &bed.scratch();
    let o = migrator(d, &["bundle", "verify", &id, "--scratch-url-file", scratch]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("VERIFIED"), "{}", text(&o));
    let j = SqliteJournal::open(&d.join("j.sqlite")).unwrap();
    let st = migrator::bundle::state::get(&j, "shop").unwrap().unwrap();
    assert_eq!(st.stage, migrator::bundle::state::Stage::Verified);
    drop(j);
    let o = migrator(d, &["status"]);
    assert!(
        text(&o).contains(&format!("bundle {id} verified")),
        "{}",
        text(&o)
    );
    assert_eq!(
        rows(new, "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE 'bundle_verify%'"),
        "0\n",
        "scratch databases are dropped"
    );

    // restore under a new name: the old side at the switch, not the new side after it.
    let o = migrator(
        d,
        &[
            "bundle",
            "restore",
            &id,
            "--db",
            "shop_db",
            "--as",
            "shop_at_switch",
            "--url-file",
            scratch,
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (&r["database"], &r["as"], &r["dry_run"]),
        (&"shop_db".into(), &"shop_at_switch".into(), &false.into()),
        "{r}"
    );
    assert_eq!(
        rows(new, "SELECT * FROM shop_at_switch.orders ORDER BY id"),
        at_switch
    );
    assert_ne!(
        rows(new, "SELECT * FROM shop_db.orders ORDER BY id"),
        at_switch
    );
    assert_eq!(rows(new, "SELECT COUNT(*) FROM shop_at_switch.log"), "3\n");
    assert_eq!(
        rows(new, "SELECT item FROM shop_at_switch.big_orders"),
        "café ☕\n"
    );
    // Never over an existing database.
    let o = migrator(
        d,
        &[
            "bundle",
            "restore",
            &id,
            "--db",
            "shop_db",
            "--as",
            "shop_at_switch",
            "--url-file",
            scratch,
        ],
    );
    assert!(
        !o.status.success() && text(&o).contains("already exists"),
        "{}",
        text(&o)
    );
    // The home, from its tar.
    let into = d.join("restored-home");
    let home = d.join("old/shop");
    let o = migrator(
        d,
        &[
            "bundle",
            "restore",
            &id,
            "--home",
            home.to_str().unwrap(),
            "--into",
            into.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        std::fs::read(into.join("www/index.php")).unwrap(),
        std::fs::read(home.join("www/index.php")).unwrap()
    );

    // Tamper with the dump: verify fails naming it, the journal says failed, restore refuses.
    let part = m["databases"][0]["part"].as_str().unwrap();
    let (site, ms) = id.split_once('/').unwrap();
    let path = d.join("store").join(site).join(ms).join(part);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&path, bytes).unwrap();
    // A dry run names it too, and records nothing (the journal still says verified).
    let o = migrator(d, &["bundle", "verify", &id, "--dry-run", "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["report"]["bad_parts"][0]["name"], part, "{r}");
    assert_eq!(r["would_restore"], serde_json::json!(["shop_db"]), "{r}");
    let j = SqliteJournal::open(&d.join("j.sqlite")).unwrap();
    let st = migrator::bundle::state::get(&j, "shop").unwrap().unwrap();
    assert_eq!(st.stage, migrator::bundle::state::Stage::Verified);
    drop(j);
    let o = migrator(d, &["bundle", "verify", &id, "--scratch-url-file", scratch]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("part {part}: altered")),
        "{}",
        text(&o)
    );
    let j = SqliteJournal::open(&d.join("j.sqlite")).unwrap();
    let st = migrator::bundle::state::get(&j, "shop").unwrap().unwrap();
    assert_eq!(st.stage, migrator::bundle::state::Stage::Failed);
    drop(j);
    let o = migrator(
        d,
        &[
            "bundle",
            "restore",
            &id,
            "--db",
            "shop_db",
            "--as",
            "again",
            "--url-file",
            scratch,
        ],
    );
    assert!(
        !o.status.success() && text(&o).contains("nothing restored"),
        "{}",
        text(&o)
    );
    // A manifest altered after signing fails its signature.
    let mpath = d.join("store").join(site).join(ms).join("manifest.json");
    let mtext = std::fs::read_to_string(&mpath).unwrap();
    // Still valid JSON, a later expiry: only the signature can tell.
    std::fs::write(
        &mpath,
        mtext.replacen("\"expires_ms\": ", "\"expires_ms\": 9", 1),
    )
    .unwrap();
    let o = migrator(d, &["bundle", "verify", &id, "--no-restore"]);
    assert!(
        text(&o).contains("signature does not verify"),
        "{}",
        text(&o)
    );
}

#[test]
fn expire_deletes_only_expired_bundles() {
    let bed = Bed::start(
        &[("keep", &["keep_db"]), ("gone", &["gone_db"])],
        "CREATE DATABASE keep_db; CREATE TABLE keep_db.t (id INT PRIMARY KEY); \
         CREATE DATABASE gone_db; CREATE TABLE gone_db.t (id INT PRIMARY KEY);",
    );
    let d = bed.d();
    bed.switch("keep", &["keep_db"]);
    bed.switch("gone", &["gone_db"]);
    // Captured and verified in one run (the wave's post-switch step). A capture needs only
    // the old server: the sites file's new.url does not exist here.
    let scratch = &bed.scratch();
    for (site, days) in [("keep", "30"), ("gone", "0")] {
        let o = capture(
            d,
            site,
            &["--keep-days", days, "--verify-scratch-url-file", scratch],
        );
        assert!(o.status.success(), "{}", text(&o));
        assert!(text(&o).contains("VERIFIED"), "{}", text(&o));
    }
    let o = migrator(d, &["bundle", "expire", "--dry-run", "--json"]);
    let gone: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(gone.as_array().unwrap().len(), 1, "{gone}");
    assert!(d.join("store/gone").exists(), "a dry run deletes nothing");
    let o = migrator(d, &["bundle", "expire"]);
    assert!(
        o.status.success() && text(&o).contains("gone/"),
        "{}",
        text(&o)
    );
    assert!(!d.join("store/gone").exists());
    let o = migrator(d, &["bundle", "list", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["bundle"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 1);
    assert!(ids[0].starts_with("keep/"), "{ids:?}");
}

#[test]
fn a_capture_killed_mid_part_resumes_without_redoing_finished_parts() {
    // ~2 MiB of dump each: at 1 MiB/s a part takes about two seconds.
    let sql: String = ["big_a", "big_b"]
        .iter()
        .map(|db| {
            format!(
                "SET SESSION max_recursive_iterations = 100000; CREATE DATABASE {db}; \
                 CREATE TABLE {db}.t (id INT PRIMARY KEY, pad VARCHAR(300)); \
                 INSERT INTO {db}.t WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL \
                 SELECT n + 1 FROM s WHERE n < 8000) SELECT n, REPEAT(MD5(n), 8) FROM s;"
            )
        })
        .collect();
    let bed = Bed::start(&[("big", &["big_a", "big_b"])], &sql);
    let d = bed.d();
    bed.switch("big", &["big_a", "big_b"]);
    let mut child = capture_cmd(d, "big", &["--max-rate", "1"]).spawn().unwrap();
    // Wait until the first part is finished, then SIGKILL the capture while it writes the
    // second.
    let start = Instant::now();
    let progress = loop {
        let found = std::fs::read_dir(d.join("store/big"))
            .ok()
            .and_then(|mut r| r.next())
            .map(|e| e.unwrap().path().join("progress.json"))
            .filter(|p| p.exists());
        if let Some(p) = found {
            break p;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no part finished"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    std::thread::sleep(Duration::from_millis(400));
    // SAFETY: signalling our own child by its PID.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    child.wait().unwrap();
    let bundle_dir = progress.parent().unwrap().to_path_buf();
    assert!(
        !bundle_dir.join("manifest.sig").exists(),
        "killed before completion"
    );
    let done: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(&progress).unwrap()).unwrap();
    assert_eq!(done.len(), 1, "{done:?}");
    let first = done[0]["name"].as_str().unwrap().to_string();
    let inode = std::fs::metadata(bundle_dir.join(&first)).unwrap().ino();
    let tmp_left = std::fs::read_dir(&bundle_dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(".tmp.")
        })
        .count();
    assert_eq!(tmp_left, 1, "the second part was being written");
    let j = SqliteJournal::open(&d.join("j.sqlite")).unwrap();
    let st = migrator::bundle::state::get(&j, "big").unwrap().unwrap();
    assert_eq!(st.stage, migrator::bundle::state::Stage::Capturing);
    drop(j);

    let o = capture(d, "big", &["--max-rate", "0", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let r = only(&o);
    assert_eq!(r["skipped"], serde_json::json!([first]), "{r}");
    assert_eq!(
        r["written"].as_array().unwrap().len(),
        2,
        "second dump and manifest: {r}"
    );
    assert_eq!(
        std::fs::metadata(bundle_dir.join(&first)).unwrap().ino(),
        inode,
        "the finished part was not rewritten"
    );
    let id = r["bundle"].as_str().unwrap();
    let o = migrator(
        d,
        &["bundle", "verify", id, "--scratch-url-file", &bed.scratch()],
    );
    assert!(o.status.success(), "{}", text(&o));
    // A complete bundle is never rewritten.
    let r = only(&capture(d, "big", &["--json"]));
    assert_eq!(r["already"], true, "{r}");
}

/// A dump the server refuses halfway (signed and intact, but not loadable there): the restore
/// fails with the client's error and leaves no half-loaded database under the chosen name.
#[test]
fn a_failed_restore_leaves_no_database_behind() {
    use migrator::bundle::store::{BundleRef, BundleStore, LocalStore};
    use migrator::bundle::{part, sign, BundleManifest, ChecksumSource, DbRecord, PartKind};
    let d = tempfile::tempdir().unwrap();
    let d = d.path();
    let server = MariaDb::start().unwrap();
    let store = LocalStore::new(&d.join("store"));
    let b = BundleRef::parse("shop/1").unwrap();
    let sql: &[u8] =
        b"CREATE TABLE t (id INT PRIMARY KEY);\nINSERT INTO t VALUES (1);\nTHIS IS NOT SQL;\n";
    let sink = store.create(&b, "db-x.sql.zst").unwrap();
    let info = part::write_part(
        sink,
        "db-x.sql.zst",
        PartKind::Dump,
        sql,
        &mut part::Throttle::new(None),
    )
    .unwrap();
    let key = sign::load_or_create(&d.join("k")).unwrap();
    let m = BundleManifest {
        format: migrator::bundle::FORMAT,
        site: "shop".into(),
        switch_ms: 1,
        captured_ms: 2,
        expires_ms: 3,
        databases: vec![DbRecord {
            name: "x".into(),
            charset: "utf8mb4".into(),
            collation: "utf8mb4_general_ci".into(),
            part: info.name.clone(),
            checksums: Default::default(),
            checksums_from: ChecksumSource::Capture,
        }],
        homes: Vec::new(),
        parts: vec![info],
        public_key: String::new(),
    };
    let bytes = serde_json::to_vec(&m).unwrap();
    store.put_small(&b, "manifest.json", &bytes).unwrap();
    store
        .put_small(&b, "manifest.sig", sign::sign(&key, &bytes).as_bytes())
        .unwrap();
    let url: mysql_async::Opts = server.admin_url().parse().unwrap();
    let e = migrator::bundle::check::restore_db(
        &store,
        &b,
        &key.verifying_key(),
        "x",
        &url,
        "x_restored",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("mariadb") && e.contains("restore of x into x_restored"),
        "{e}"
    );
    assert_eq!(
        server
            .exec(
                "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'x_restored'"
            )
            .unwrap(),
        "0\n"
    );
}
