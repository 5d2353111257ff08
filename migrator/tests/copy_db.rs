//! Database copy between two real MariaDB instances: 13 tables (one without a primary key,
//! one of assorted column types, utf8mb4 text, blobs), a view, a trigger, a routine, an account with a password; verified by
//! checksums; a delta pass after writes re-copies only the changed tables; a resume from a
//! checkpoint continues a table instead of starting it over.

use migrator::db::copy::{copy_database, verify_database, CopyOptions, TableCheckpoint};
use migrator::db::rows::LoadMethod;
use migrator::db::schema::DbError;
use migrator::journal::{JournalStore, SqliteJournal};
use std::sync::{Arc, Mutex};
use testkit::MariaDb;

fn setup(src: &MariaDb) {
    let mut sql = String::from(
        "CREATE DATABASE shop CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci; USE shop;
         CREATE USER 'shop'@'%' IDENTIFIED BY 's3cret-pw'; GRANT ALL ON shop.* TO 'shop'@'%';
         CREATE TABLE nopk (a INT, b VARCHAR(20));
         INSERT INTO nopk VALUES (1,'x'),(1,'x'),(2,NULL);
         CREATE TABLE blobs (id INT PRIMARY KEY AUTO_INCREMENT, data LONGBLOB, note TEXT) AUTO_INCREMENT=500;
         CREATE TABLE audit (id INT PRIMARY KEY AUTO_INCREMENT, what VARCHAR(50));
         CREATE TRIGGER t1_ins AFTER INSERT ON t1 FOR EACH ROW INSERT INTO audit(what) VALUES (CONCAT('t1 ', NEW.id));
         CREATE FUNCTION twice(x INT) RETURNS INT DETERMINISTIC RETURN x * 2;
         ",
    );
    // The trigger needs t1 first: create t1..t7 before it.
    let mut tables = String::new();
    for i in 1..=7 {
        tables.push_str(&format!(
            "CREATE TABLE t{i} (id INT PRIMARY KEY, name VARCHAR(100) CHARACTER SET utf8mb4, v DOUBLE, \
             k2 INT, ts TIMESTAMP NULL, UNIQUE KEY (k2)) ENGINE=InnoDB;"
        ));
    }
    sql = sql.replacen("CREATE TRIGGER", &format!("{tables} CREATE TRIGGER"), 1);
    sql.push_str("CREATE TABLE composite (a INT, b VARCHAR(10), c TEXT, PRIMARY KEY (a, b));");
    // latin1 keys beyond ASCII, rows big enough for several load buffers (resume points).
    sql.push_str(
        "CREATE TABLE latin (k VARCHAR(20) CHARACTER SET latin1 PRIMARY KEY, n INT, \
         pad TEXT CHARACTER SET latin1, KEY n (n)) DEFAULT CHARSET=latin1;",
    );
    // Column types whose text form the stream checksum must see as the server does.
    sql.push_str(
        "CREATE TABLE types (id INT PRIMARY KEY, f FLOAT, d DOUBLE, dc DECIMAL(12,4), \
         dt DATETIME(6), tm TIME(3), da DATE, y YEAR, bt BIT(13), e ENUM('a','b'), \
         st SET('x','y','z'), j JSON, bn BINARY(4), vb VARBINARY(10), ub BIGINT UNSIGNED, \
         ti TINYINT, g POINT, l1 VARCHAR(10) CHARACTER SET latin1) DEFAULT CHARSET=utf8mb4;",
    );
    sql.push_str("CREATE VIEW big_t1 AS SELECT id, name FROM t1 WHERE id > 10;");
    src.exec(&sql).unwrap();
    // Rows: t1 gets 45,000 rows (three chunks), others a few hundred.
    src.exec(
        "SET NAMES utf8mb4; USE shop;
         INSERT INTO t1 SELECT seq, CONCAT('näme ✓ ', seq, ' 🚀'), seq / 3, seq, '2024-01-02 03:04:05'
           FROM seq_1_to_45000;
         INSERT INTO t2 SELECT id, CONCAT('it''s \\\\ \"q\" ', id), v, k2, ts FROM t1 WHERE id <= 300;
         INSERT INTO t3 SELECT id, NULL, NULL, NULL, NULL FROM t1 WHERE id <= 200;
         INSERT INTO t4 SELECT id, name, v, k2, ts FROM t1 WHERE id <= 100;
         INSERT INTO t5 VALUES (0, 'zero id', 0, 0, NULL);
         INSERT INTO blobs(data, note) VALUES (UNHEX('00FF27225C0A0D1A'), 'bin'), (REPEAT(UNHEX('DEADBEEF'), 100000), 'big'), ('', 'empty'), (NULL, 'null');
         INSERT INTO composite VALUES (1, 'a', 'x'), (1, 'b', 'y'), (2, 'a', NULL);
         INSERT INTO types SELECT seq, seq / 7, seq / 3, seq / 11, NOW(6) - INTERVAL seq SECOND, \
           SEC_TO_TIME(seq / 3), '2020-02-29' + INTERVAL seq DAY, 1901 + seq % 200, seq, \
           IF(seq % 2, 'a', 'b'), 'x,z', JSON_OBJECT('k', seq, 'é', 1.5e-7), UNHEX('00FF0A09'), \
           UNHEX(HEX(seq)), 18446744073709551615 - seq, -seq % 128, POINT(seq, -seq), 'ñ' \
           FROM seq_1_to_500;
         INSERT INTO types (id, f, d) VALUES (1000, 3.40282e38, -1.7976931348623157e308), \
           (1001, 1e-45, 5e-324), (1002, NULL, 0.1), (1003, -0, 123456789012345680000);
         INSERT INTO latin SELECT CONCAT('é', LPAD(seq, 6, '0'), 'ß'), seq % 7, REPEAT('ü\\t\\n', 700)
           FROM seq_1_to_3000;",
    )
    .unwrap();
}

fn opts() -> CopyOptions {
    CopyOptions {
        threads: 3,
        delta: false,
        dry_run: false,
        load_method: None,
        ..Default::default()
    }
}

type Journal = Arc<Mutex<dyn JournalStore + Send>>;

/// A fresh journal (in the returned temporary directory) and both servers' admin URLs.
fn journal_and_urls(
    src: &MariaDb,
    dst: &MariaDb,
) -> (
    tempfile::TempDir,
    Journal,
    mysql_async::Opts,
    mysql_async::Opts,
) {
    let tmp = tempfile::tempdir().unwrap();
    let j: Journal = Arc::new(Mutex::new(
        SqliteJournal::open(&tmp.path().join("j.sqlite")).unwrap(),
    ));
    (
        tmp,
        j,
        src.admin_url().parse().unwrap(),
        dst.admin_url().parse().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_verifies_and_delta_copies_only_changed_tables() {
    let src = MariaDb::start().unwrap();
    let dst = MariaDb::start().unwrap();
    setup(&src);
    let (_tmp, j, su, du) = journal_and_urls(&src, &dst);

    let dry = copy_database(
        &su,
        &du,
        "shop",
        j.clone(),
        &CopyOptions {
            dry_run: true,
            ..opts()
        },
    )
    .await
    .unwrap();
    assert_eq!(dry.tables.len(), 13);
    assert!(dry.tables.iter().all(|t| t.action == "would copy"));
    assert_eq!(dst.exec("SHOW DATABASES LIKE 'shop'").unwrap().trim(), "");

    let r = copy_database(&su, &du, "shop", j.clone(), &opts())
        .await
        .unwrap();
    assert_eq!(r.tables.len(), 13);
    assert!(r.tables.iter().all(|t| t.copied), "{r:?}");
    // MariaDB: rows went as bulk INSERTs.
    assert_eq!(r.load_method, Some(LoadMethod::Bulk));
    // Each table read whole: its source checksum came from the stream and matched the
    // destination's checksum query (so the server's own source checksum, which verify runs
    // next, agrees with it).
    for t in &r.tables {
        assert_eq!(t.source_checksum_from, "stream", "{}", t.table);
    }
    assert_eq!(r.users, vec!["shop@%".to_string()]);
    assert!(verify_database(&su, &du, "shop").await.unwrap().is_empty());

    // Secondary indexes built after the load: the tables end up exactly as on the source.
    for t in ["t1", "t2", "blobs", "composite", "nopk", "latin"] {
        let show = format!("SHOW CREATE TABLE shop.{t}");
        assert_eq!(src.exec(&show).unwrap(), dst.exec(&show).unwrap(), "{t}");
    }
    // Same password hash, collation, AUTO_INCREMENT, objects; the trigger did not double audit.
    let hash = "SELECT authentication_string FROM mysql.user WHERE User='shop'";
    let q = "SELECT PASSWORD('s3cret-pw')";
    assert_eq!(src.exec(q).unwrap(), dst.exec(q).unwrap());
    assert_eq!(src.exec(hash).unwrap(), dst.exec(hash).unwrap());
    let ddl =
        "SELECT DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME='shop'";
    assert_eq!(dst.exec(ddl).unwrap().trim(), "utf8mb4_unicode_ci");
    let ai = "SELECT AUTO_INCREMENT FROM information_schema.TABLES WHERE TABLE_SCHEMA='shop' AND TABLE_NAME='blobs'";
    assert_eq!(src.exec(ai).unwrap(), dst.exec(ai).unwrap());
    assert_eq!(dst.exec("SELECT shop.twice(21)").unwrap().trim(), "42");
    assert_eq!(
        dst.exec("SELECT COUNT(*) FROM shop.big_t1").unwrap().trim(),
        "44990"
    );
    // The source trigger wrote 45,000 audit rows; the copy must not have fired it again.
    let audit = "SELECT COUNT(*) FROM shop.audit";
    assert_eq!(dst.exec(audit).unwrap(), src.exec(audit).unwrap());
    assert_eq!(
        dst.exec("SET NAMES utf8mb4; SELECT name FROM shop.t1 WHERE id = 7")
            .unwrap()
            .trim(),
        "näme ✓ 7 🚀"
    );
    assert_eq!(
        dst.exec("SELECT HEX(data) FROM shop.blobs WHERE note='bin'")
            .unwrap()
            .trim(),
        "00FF27225C0A0D1A"
    );
    assert_eq!(
        dst.exec("SELECT COUNT(*) FROM shop.nopk").unwrap().trim(),
        "3"
    );
    assert_eq!(
        dst.exec("SELECT name FROM shop.t5 WHERE id = 0")
            .unwrap()
            .trim(),
        "zero id"
    );
    // The trigger works on the destination.
    dst.exec("INSERT INTO shop.t1 VALUES (99999, 'n', 1, 99999, NULL)")
        .unwrap();
    let fired = "SELECT COUNT(*) FROM shop.audit WHERE what = 't1 99999'";
    assert_eq!(dst.exec(fired).unwrap().trim(), "1");
    dst.exec(
        "DELETE FROM shop.t1 WHERE id = 99999; DELETE FROM shop.audit WHERE what = 't1 99999'",
    )
    .unwrap();

    // Writes on the source touch t2 and nopk; the delta pass re-copies exactly those.
    src.exec(
        "UPDATE shop.t2 SET name = 'changed' WHERE id = 5; INSERT INTO shop.nopk VALUES (3, 'y')",
    )
    .unwrap();
    let diffs = verify_database(&su, &du, "shop").await.unwrap();
    assert_eq!(diffs.len(), 2, "{diffs:?}");
    let delta = copy_database(
        &su,
        &du,
        "shop",
        j.clone(),
        &CopyOptions {
            delta: true,
            ..opts()
        },
    )
    .await
    .unwrap();
    let copied: Vec<_> = delta
        .tables
        .iter()
        .filter(|t| t.copied)
        .map(|t| t.table.as_str())
        .collect();
    assert_eq!(copied, ["nopk", "t2"]);
    assert!(verify_database(&su, &du, "shop").await.unwrap().is_empty());

    // Resume: a checkpoint says t1 was copied up to id 20000 in an interrupted run; rows past
    // it on the destination (a partial chunk) are removed and the copy continues from there.
    dst.exec("DELETE FROM shop.t1 WHERE id > 25000").unwrap();
    dst.exec("UPDATE shop.t1 SET name = 'kept' WHERE id = 1")
        .unwrap();
    let cp = TableCheckpoint {
        last_pk: Some(vec![Some("20000".into())]),
        rows: 20000,
        ..Default::default()
    };
    j.lock()
        .unwrap()
        .put_checkpoint_raw("copy-db:shop", "t1", &serde_json::to_string(&cp).unwrap())
        .unwrap();
    let done = TableCheckpoint {
        last_pk: None,
        rows: 300,
        done: true,
        checksum: Some("x".into()),
        ..Default::default()
    };
    j.lock()
        .unwrap()
        .put_checkpoint_raw("copy-db:shop", "t2", &serde_json::to_string(&done).unwrap())
        .unwrap();
    let err = copy_database(&su, &du, "shop", j.clone(), &opts())
        .await
        .unwrap_err();
    // Row 1 was before the checkpoint: committed work, not redone, so the edit we made on the
    // destination is still there, and the checksum after the copy catches it.
    assert!(
        matches!(&err, migrator::db::schema::DbError::ChecksumMismatch { table, .. } if table == "t1"),
        "{err}"
    );
    assert_eq!(
        dst.exec("SELECT name FROM shop.t1 WHERE id = 1")
            .unwrap()
            .trim(),
        "kept"
    );
    assert_eq!(
        dst.exec("SELECT COUNT(*) FROM shop.t1").unwrap().trim(),
        "45000"
    );
    // The failed table starts over on the next run; the table marked done is not redone.
    let again = copy_database(&su, &du, "shop", j.clone(), &opts())
        .await
        .unwrap();
    let t1 = again.tables.iter().find(|t| t.table == "t1").unwrap();
    assert_eq!((t1.action.as_str(), t1.rows), ("copied", 45000));
    let t2 = again.tables.iter().find(|t| t.table == "t2").unwrap();
    assert_eq!(t2.action, "already done");
    assert!(verify_database(&su, &du, "shop").await.unwrap().is_empty());
    assert!(j
        .lock()
        .unwrap()
        .checkpoints("copy-db:shop")
        .unwrap()
        .is_empty());
}

/// Every load method lands the same bytes (blobs, utf8mb4, latin1 beyond ASCII, assorted
/// types): `insert` on a destination that refuses `LOAD DATA LOCAL` (`local_infile=0`), where
/// a forced `load-data` is refused before anything is written; then `load-data` once the
/// server allows it. (`bulk`, the default on MariaDB, is the main test's.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_load_method_lands_the_same_bytes() {
    let src = MariaDb::start().unwrap();
    let dst = MariaDb::start_with(testkit::MariaDbOptions {
        extra_args: vec!["--local-infile=0".into()],
        ..Default::default()
    })
    .unwrap();
    assert_eq!(
        dst.exec("SELECT @@GLOBAL.local_infile").unwrap().trim(),
        "0"
    );
    setup(&src);
    let (_tmp, j, su, du) = journal_and_urls(&src, &dst);
    let with = |m: LoadMethod| CopyOptions {
        load_method: Some(m),
        ..opts()
    };
    let refused = copy_database(&su, &du, "shop", j.clone(), &with(LoadMethod::LoadData))
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, DbError::LoadMethod { method, .. } if method == "load-data"),
        "{refused}"
    );
    assert_eq!(dst.exec("SHOW DATABASES LIKE 'shop'").unwrap().trim(), "");

    for m in [LoadMethod::Insert, LoadMethod::LoadData] {
        if m == LoadMethod::LoadData {
            dst.exec("DROP DATABASE shop; SET GLOBAL local_infile = 1")
                .unwrap();
        }
        let r = copy_database(&su, &du, "shop", j.clone(), &with(m))
            .await
            .unwrap();
        assert_eq!(r.load_method, Some(m));
        assert_eq!(r.tables.len(), 13);
        assert!(r.tables.iter().all(|t| t.copied), "{r:?}");
        assert!(r
            .tables
            .iter()
            .all(|t| t.source_checksum == t.destination_checksum));
        assert!(verify_database(&su, &du, "shop").await.unwrap().is_empty());
        for q in [
            "SELECT HEX(data) FROM shop.blobs WHERE note='bin'",
            "SELECT MD5(data) FROM shop.blobs WHERE note='big'",
            "SELECT HEX(name) FROM shop.t1 WHERE id = 7",
            "SELECT HEX(k), HEX(pad) FROM shop.latin WHERE n = 3 ORDER BY k LIMIT 1",
            "SELECT COUNT(*), SUM(n) FROM shop.latin",
            "SELECT HEX(bt), HEX(g), j, f, d FROM shop.types ORDER BY id LIMIT 3",
            "SHOW CREATE TABLE shop.latin",
        ] {
            assert_eq!(src.exec(q).unwrap(), dst.exec(q).unwrap(), "{m:?}: {q}");
        }
    }
}
