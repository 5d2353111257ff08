//! Change capture from a real MariaDB's row-based binary log into a real destination: after
//! the bulk copy, inserts, updates (the primary key changed too), deletes, blobs, utf8mb4,
//! NULLs, FLOAT/DECIMAL/INET6/JSON and the other types whose log form differs from their
//! statement form, multi-statement and rolled-back transactions, DDL in the middle, a purged
//! binary log and a capture cut off in the middle all end with the destination equal to the
//! source by the verifier; triggers reach the destination only at the freeze's tail.

use migrator::db::copy::verify_database;
use migrator::db::follow::{self, FollowReport};
use migrator::journal::{JournalStore, SqliteJournal};
use std::sync::{Arc, Mutex};
use testkit::{MariaDb, MariaDbOptions};

type Journal = Arc<Mutex<dyn JournalStore + Send>>;

struct Lab {
    src: MariaDb,
    dst: MariaDb,
    j: Journal,
    _tmp: tempfile::TempDir,
}

impl Lab {
    fn start() -> Lab {
        let src = MariaDb::start_with(MariaDbOptions {
            binlog_server_id: Some(1),
            ..Default::default()
        })
        .unwrap();
        let dst = MariaDb::start().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let j: Journal = Arc::new(Mutex::new(
            SqliteJournal::open(&tmp.path().join("j.sqlite")).unwrap(),
        ));
        Lab {
            src,
            dst,
            j,
            _tmp: tmp,
        }
    }
    fn urls(&self) -> (mysql_async::Opts, mysql_async::Opts) {
        (
            self.src.admin_url().parse().unwrap(),
            self.dst.admin_url().parse().unwrap(),
        )
    }
    async fn sync(&self, db: &str) -> FollowReport {
        let (s, d) = self.urls();
        follow::sync(&s, &d, db, self.j.clone(), 2).await.unwrap()
    }
    async fn tail(&self, db: &str) -> FollowReport {
        let (s, d) = self.urls();
        follow::tail(&s, &d, db, self.j.clone(), 2).await.unwrap()
    }
    async fn assert_equal(&self, db: &str) {
        let (s, d) = self.urls();
        let diffs = verify_database(&s, &d, db).await.unwrap();
        assert!(diffs.is_empty(), "{diffs:?}");
    }
}

const SCHEMA: &str = "CREATE DATABASE cap CHARACTER SET utf8mb4; SET SESSION sql_mode = ''; \
    CREATE TABLE cap.t (id BIGINT UNSIGNED PRIMARY KEY, name VARCHAR(40), body MEDIUMBLOB, \
      f FLOAT, d DOUBLE, dec1 DECIMAL(20,6), ip INET6, u UUID, js JSON, ts TIMESTAMP(3) NULL, \
      dt DATETIME(6), da DATE, tm TIME(6), y YEAR, e ENUM('a','b','c'), st SET('x','y','z'), \
      b BIT(12), ti TINYINT UNSIGNED, si SMALLINT, mi MEDIUMINT UNSIGNED, ii INT UNSIGNED, \
      ch CHAR(4), bin BINARY(3), gen INT AS (ti + 1) VIRTUAL, per INT AS (si * 2) PERSISTENT); \
    CREATE TABLE cap.parent (a INT, b VARCHAR(10), v INT, PRIMARY KEY (a, b)); \
    CREATE TABLE cap.nokey (x INT, y VARCHAR(10)); \
    CREATE TABLE cap.times (id INT PRIMARY KEY, tm TIME(2)); \
    CREATE TABLE cap.log (n INT AUTO_INCREMENT PRIMARY KEY, what VARCHAR(20)); \
    CREATE TRIGGER cap.t_ins AFTER INSERT ON cap.t FOR EACH ROW INSERT INTO cap.log (what) VALUES ('ins');";

fn row(id: u64) -> String {
    format!(
        "({id}, 'nom-{id} é 😀', REPEAT(UNHEX('00FF10'), {len}), 1/{id}e0, {id}/3e0, {id}.123456, \
         '2001:db8::{id:x}', UUID(), JSON_OBJECT('k', {id}, 's', 'ü'), \
         FROM_UNIXTIME(1600000000 + {id} + 0.5), NOW(6), '2024-02-29', '-12:30:00.5', 0, 'b', 'x,z', \
         b'101010101010', 255, -32768, 16777215, 4294967295, 'ab', 'x', DEFAULT, DEFAULT)",
        len = id * 1000 % 70000
    )
}

fn insert(ids: impl Iterator<Item = u64>) -> String {
    let rows: Vec<String> = ids.map(row).collect();
    format!(
        "INSERT INTO cap.t (id,name,body,f,d,dec1,ip,u,js,ts,dt,da,tm,y,e,st,b,ti,si,mi,ii,ch,bin,gen,per) VALUES {};",
        rows.join(",")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_change_reaches_the_destination_in_order() {
    let lab = Lab::start();
    lab.src.exec(SCHEMA).unwrap();
    lab.src
        .exec(&format!(
            "SET SESSION sql_mode = ''; {} INSERT INTO cap.parent VALUES (1,'a',1),(2,'b',2); \
             INSERT INTO cap.nokey VALUES (1,'a'),(2,NULL); INSERT INTO cap.times VALUES (1,'-12:30:00.5'); \
             INSERT INTO cap.t (id) VALUES (18446744073709551615);",
            insert(1..=50)
        ))
        .unwrap();
    let first = lab.sync("cap").await;
    assert!(first.copied.iter().any(|(t, _)| t == "t"), "{first:?}");
    let uncaptured: Vec<&str> = first.uncaptured.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(uncaptured, ["nokey", "times"], "{first:?}");
    assert!(
        first.uncaptured[0].1.contains("no primary key"),
        "{first:?}"
    );
    assert!(first.uncaptured[1].1.contains("TIME(2)"), "{first:?}");
    // The trigger waits for the tail: the destination has none while captured into.
    assert_eq!(
        lab.dst
            .exec("SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA='cap'")
            .unwrap()
            .trim(),
        "0"
    );
    lab.src
        .exec(&format!(
            "SET SESSION sql_mode = ''; {} \
             UPDATE cap.t SET name = NULL, body = NULL, js = NULL, f = 3.5 WHERE id = 2; \
             UPDATE cap.t SET id = 1000 WHERE id = 3; \
             UPDATE cap.parent SET b = 'z' WHERE a = 1; \
             DELETE FROM cap.t WHERE id IN (4, 5); \
             START TRANSACTION; UPDATE cap.t SET ti = 7 WHERE id = 6; INSERT INTO cap.parent VALUES (3,'c',3); \
               DELETE FROM cap.t WHERE id = 7; COMMIT; \
             START TRANSACTION; DELETE FROM cap.t; ROLLBACK; \
             UPDATE cap.t SET id = id + 100000 WHERE id BETWEEN 10 AND 20; \
             INSERT INTO cap.nokey VALUES (3,'c'); INSERT INTO cap.times VALUES (2,'-00:00:01.25'); \
             UPDATE cap.t SET ip = '2001:db8::2800', u = '00000000-0000-0000-0000-000000000000', \
               ch = 'a  ', bin = 'a' WHERE id = 8;",
            insert(51..=80)
        ))
        .unwrap();
    let second = lab.sync("cap").await;
    assert!(second.rows_applied > 0, "{second:?}");
    assert!(
        second.copied.is_empty(),
        "nothing is copied when nothing needs it: {second:?}"
    );
    // nokey and times are not captured: they differ until the tail copies them again.
    let (s, d) = lab.urls();
    let diffs = verify_database(&s, &d, "cap").await.unwrap();
    assert_eq!(diffs.len(), 2, "{diffs:?}");
    assert!(
        diffs[0].contains("nokey") && diffs[1].contains("times"),
        "{diffs:?}"
    );
    lab.src
        .exec(
            "UPDATE cap.t SET name = 'last' WHERE id = 1000; INSERT INTO cap.nokey VALUES (4,'d');",
        )
        .unwrap();
    let tail = lab.tail("cap").await;
    assert!(tail.copied.iter().any(|(t, _)| t == "nokey"), "{tail:?}");
    lab.assert_equal("cap").await;
    assert_eq!(
        lab.dst
            .exec("SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA='cap'")
            .unwrap()
            .trim(),
        "1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_mid_capture_copies_the_table_again_and_new_tables_are_copied() {
    let lab = Lab::start();
    lab.src.exec(SCHEMA).unwrap();
    lab.src
        .exec(&format!("SET SESSION sql_mode = ''; {}", insert(1..=20)))
        .unwrap();
    lab.sync("cap").await;
    lab.src
        .exec(&format!(
            "SET SESSION sql_mode = ''; {} ALTER TABLE cap.parent ADD COLUMN extra INT DEFAULT 7; \
             INSERT INTO cap.parent VALUES (9,'n',9,1); \
             CREATE TABLE cap.fresh (k INT PRIMARY KEY, v TEXT); INSERT INTO cap.fresh VALUES (1,'x'); \
             DROP TABLE cap.log;",
            insert(21..=30)
        ))
        .unwrap();
    let r = lab.sync("cap").await;
    let copied: Vec<&str> = r.copied.iter().map(|(t, _)| t.as_str()).collect();
    assert!(copied.contains(&"parent"), "{r:?}");
    assert!(copied.contains(&"fresh"), "{r:?}");
    assert!(!copied.contains(&"t"), "t had no DDL: {r:?}");
    lab.assert_equal("cap").await;
    // Followed from its new copy on.
    lab.src
        .exec("INSERT INTO cap.parent VALUES (10,'m',10,2); UPDATE cap.fresh SET v = 'y';")
        .unwrap();
    let r = lab.sync("cap").await;
    assert!(r.copied.is_empty(), "{r:?}");
    lab.tail("cap").await;
    lab.assert_equal("cap").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purged_binary_log_means_a_new_copy_and_a_cut_capture_resumes() {
    let lab = Lab::start();
    lab.src.exec(SCHEMA).unwrap();
    lab.src
        .exec(&format!("SET SESSION sql_mode = ''; {}", insert(1..=20)))
        .unwrap();
    lab.sync("cap").await;
    // Changes, then the logs holding them purged before the capture read them.
    lab.src
        .exec(&format!(
            "SET SESSION sql_mode = ''; {} DELETE FROM cap.t WHERE id = 1; FLUSH BINARY LOGS;",
            insert(21..=30)
        ))
        .unwrap();
    // A file is purged once no reader is attached and the server's binlog checkpoint has
    // moved past it (MariaDB keeps it for crash recovery until then): flush and retry.
    let mut logs = String::new();
    for _ in 0..100 {
        lab.src.exec("FLUSH BINARY LOGS").unwrap();
        let last = lab
            .src
            .exec("SHOW MASTER STATUS")
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_string();
        logs = lab
            .src
            .exec(&format!(
                "PURGE BINARY LOGS TO '{last}'; SHOW WARNINGS; SHOW BINARY LOGS"
            ))
            .unwrap();
        if !logs.contains("binlog.000001") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(!logs.contains("binlog.000001"), "{logs}");
    let r = lab.sync("cap").await;
    assert!(
        r.copied.iter().any(|(_, why)| why.contains("binary log")),
        "{r:?}"
    );
    lab.assert_equal("cap").await;

    // Many transactions, the capture cut off after a moment (its task dropped, as a kill
    // would: the open destination transaction is rolled back with the connection), then run
    // again from the journaled position.
    let (s, d) = lab.urls();
    {
        use mysql_async::prelude::*;
        let mut c = mysql_async::Conn::new(s.clone()).await.unwrap();
        c.query_drop("SET SESSION sql_mode = ''").await.unwrap();
        for i in 0..300u64 {
            c.query_drop(insert(10_000 + i..=10_000 + i)).await.unwrap();
            c.query_drop(format!(
                "UPDATE cap.t SET name = 'u{i}' WHERE id = {}",
                10_000 + i / 2
            ))
            .await
            .unwrap();
        }
        c.disconnect().await.unwrap();
    }
    let cut = tokio::time::timeout(
        std::time::Duration::from_millis(150),
        follow::sync(&s, &d, "cap", lab.j.clone(), 2),
    )
    .await;
    assert!(
        cut.is_err(),
        "the capture finished before it could be cut off"
    );
    lab.sync("cap").await;
    lab.tail("cap").await;
    lab.assert_equal("cap").await;
}

/// What `prepare` says before anything moves: a server without a ROW binary log has its
/// databases copied (the setting to change and the predicted freeze named); on one with it,
/// the tables that cannot be followed are named with their share of the freeze.
#[test]
fn prepare_says_what_is_not_followed_and_what_the_freeze_will_copy() {
    use migrator::db::mover::DbMover;
    let plain = MariaDb::start().unwrap();
    plain.exec(SCHEMA).unwrap();
    let lab = Lab::start();
    lab.src.exec(SCHEMA).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let mover = DbMover::new(tmp.path().join("j.sqlite"));
    let dbs = vec!["cap".to_string()];

    let (_, d) = lab.urls();
    let p: mysql_async::Opts = plain.admin_url().parse().unwrap();
    let note = mover.capture_note(&(p, d.clone()), &dbs).unwrap().unwrap();
    assert!(note.contains("copied, not followed"), "{note}");
    assert!(note.contains("binary log is off"), "{note}");
    assert!(note.contains("MiB/s"), "{note}");

    let (s, d) = lab.urls();
    let note = mover.capture_note(&(s, d), &dbs).unwrap().unwrap();
    assert!(
        note.contains("cap.nokey") && note.contains("no primary key"),
        "{note}"
    );
    assert!(
        note.contains("cap.times") && note.contains("TIME(2)"),
        "{note}"
    );
    assert!(!note.contains("cap.t "), "{note}");
}
