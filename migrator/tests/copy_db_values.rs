//! Values that text forms get wrong, copied by every load method between two real MariaDB
//! instances and compared in exact forms (not the text the copy itself reads): FLOAT (6
//! significant digits in its text form), INET6 and UUID (a binary client charset takes their
//! packed form), zero dates, negative TIME, BIT, padded CHAR/BINARY; and bulk buffers on a
//! destination whose `max_allowed_packet` is smaller than a buffer, with a column NULL in every
//! row of the first packet's worth of rows. A MyISAM table (no snapshot) is checksummed by the
//! source server, not over the stream.

use migrator::db::copy::{copy_database, verify_database, CopyOptions, CopyReport};
use migrator::db::rows::LoadMethod;
use migrator::db::schema::DbError;
use migrator::journal::{JournalStore, SqliteJournal};
use std::sync::{Arc, Mutex};
use testkit::{MariaDb, MariaDbOptions};

type Journal = Arc<Mutex<dyn JournalStore + Send>>;

async fn copy(
    src: &MariaDb,
    dst: &MariaDb,
    j: &Journal,
    db: &str,
    method: Option<LoadMethod>,
) -> Result<CopyReport, DbError> {
    let su: mysql_async::Opts = src.admin_url().parse().unwrap();
    let du: mysql_async::Opts = dst.admin_url().parse().unwrap();
    let opts = CopyOptions {
        threads: 2,
        delta: false,
        dry_run: false,
        load_method: method,
        ..Default::default()
    };
    let r = copy_database(&su, &du, db, j.clone(), &opts).await?;
    assert!(verify_database(&su, &du, db).await?.is_empty());
    Ok(r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_values_by_every_load_method_and_bulk_buffers_within_one_packet() {
    let src = MariaDb::start().unwrap();
    let dst = MariaDb::start_with(MariaDbOptions {
        extra_args: vec!["--max-allowed-packet=1M".into()],
        ..Default::default()
    })
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let j: Journal = Arc::new(Mutex::new(
        SqliteJournal::open(&tmp.path().join("j.sqlite")).unwrap(),
    ));
    src.exec(
        "CREATE DATABASE vals; SET SESSION sql_mode = ''; \
         CREATE TABLE vals.t (id INT PRIMARY KEY, f FLOAT, d DOUBLE, fx FLOAT(7,2), \
         a INET6, u UUID, y YEAR, da DATE, tm TIME(2), bt BIT(3), ch CHAR(4), bin BINARY(3), \
         nn FLOAT NOT NULL DEFAULT 0); \
         INSERT INTO vals.t VALUES \
         (1, 1/7e0, 0.1e0 + 0.2e0, 12345.67, '::1', '123e4567-e89b-12d3-a456-426655440000', \
          0, '0000-00-00', '-838:59:59.99', b'101', 'a  ', 'a', 1234567.8e0), \
         (2, 1.2345678e0, 1/3e0, -1.5, '2001:db8::ff00:42:8329', NULL, 2000, '2020-02-30', \
          '00:00:00', b'0', '', '', -3.4e38), \
         (3, 16777217e0, 2/3e0, NULL, '1111:2222:3:4::5', \
          'ffffffff-ffff-ffff-ffff-fffffffffffe', 1999, NULL, NULL, NULL, NULL, NULL, 1e-40), \
         (4, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 0); \
         CREATE TABLE vals.my (id INT PRIMARY KEY, v INT) ENGINE=MyISAM; \
         INSERT INTO vals.my VALUES (1, 1), (2, NULL);",
    )
    .unwrap();
    // Exact forms: the float's every bit (as a double), the address and UUID as text.
    let exact = "SELECT id, f + 0e0, d, fx + 0e0, a, u, y + 0, HEX(da), tm, bt + 0, HEX(ch), \
                 HEX(bin), nn + 0e0 FROM vals.t ORDER BY id";
    let before = src.exec(exact).unwrap();
    for m in [None, Some(LoadMethod::LoadData), Some(LoadMethod::Insert)] {
        let r = copy(&src, &dst, &j, "vals", m)
            .await
            .unwrap_or_else(|e| panic!("{m:?}: {e}"));
        assert_eq!(r.load_method, Some(m.unwrap_or(LoadMethod::Bulk)));
        let from = |t: &str| {
            let t = r.tables.iter().find(|x| x.table == t).unwrap();
            t.source_checksum_from.clone()
        };
        // What the stream read is what the checksum query reads: no source scan needed.
        assert_eq!(from("t"), "stream", "{m:?}");
        // MyISAM has no snapshot: the source server's checksum, read after the stream.
        assert_eq!(from("my"), "server", "{m:?}");
        assert_eq!(dst.exec(exact).unwrap(), before, "{m:?}");
        dst.exec("DROP DATABASE vals").unwrap();
    }

    // 4,000 rows of ~1 KB: a 4 MiB buffer is more than the destination's 1 MiB packet. `a` and
    // `b` are NULL in the first 1,500 rows; a bulk request split by the driver would type them
    // NULL for the packets after the first.
    src.exec(
        "CREATE DATABASE np; USE np; CREATE TABLE np.t (id INT PRIMARY KEY, a VARCHAR(20), b INT, \
         pad VARCHAR(1000)); INSERT INTO np.t SELECT seq, IF(seq <= 1500, NULL, \
         CONCAT('v', seq)), IF(seq <= 1500, NULL, seq), REPEAT('x', 900) FROM seq_1_to_4000;",
    )
    .unwrap();
    let r = copy(&src, &dst, &j, "np", None).await.unwrap();
    assert_eq!(r.load_method, Some(LoadMethod::Bulk));
    let q = "SELECT COUNT(a), COUNT(b), SUM(b), MD5(GROUP_CONCAT(a ORDER BY id)), \
             MD5(GROUP_CONCAT(pad ORDER BY id)) FROM np.t";
    assert_eq!(src.exec(q).unwrap(), dst.exec(q).unwrap());
}
