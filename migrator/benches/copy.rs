//! Benchmarks of file sync and database copy against what an operator would otherwise use,
//! run alternately in one process (A B A B …) after a warm-up; medians, min–max and ratios.
//!
//! `cargo bench -p migrator --bench copy -- files [FILES] [PAIRS] [DIR]`
//! `cargo bench -p migrator --bench copy -- db [ROWS_PER_TABLE] [PAIRS]`
//!
//! Files: first sync of a generated home (FILES files of 1–20 KiB in dirs of 50) with
//! `migrator sync-files` vs `rsync -a` vs `cp -a` (each into a fresh directory, deletions at the
//! end: the disk trap of shared/BENCHMARKS.md; later pairs' copies are removed as soon as they
//! are timed, so the run needs ~4 copies of disk), then a no-change pass vs `rsync -a` (ours
//! with the destination manifest cached in the journal by the first pass).
//! DB: a sysbench-shaped database (8 tables) copied between two private MariaDB instances
//! with `migrator copy-db` vs `mariadb-dump --single-transaction | mariadb` vs
//! `mydumper`/`myloader` (2 threads each).
//!
//! Without `--bench` (as under `cargo test --all-targets`) it does nothing.

use migrator::fixtures::{generate_home, HomeSpec};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

const BIN: &str = env!("CARGO_BIN_EXE_migrator");

fn run(cmd: &mut Command) -> f64 {
    // Every run starts with no dirty pages left by the previous one (ours ends with syncfs
    // and would otherwise pay for the alternative's writeback).
    let _ = Command::new("sync").status();
    let t = Instant::now();
    let out = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    t.elapsed().as_secs_f64()
}

fn sh(script: &str) -> f64 {
    run(Command::new("bash").args(["-o", "pipefail", "-c", script]))
}

fn stats(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    (s[s.len() / 2], s[0], s[s.len() - 1])
}

fn report(name: &str, ours: &[f64], theirs: &[f64]) {
    let (om, olo, ohi) = stats(ours);
    let (tm, tlo, thi) = stats(theirs);
    println!(
        "{name}: ours median {om:.2}s (min {olo:.2}, max {ohi:.2}) | theirs median {tm:.2}s \
         (min {tlo:.2}, max {thi:.2}) | ratio theirs/ours {:.2}x",
        tm / om
    );
}

fn files(n: usize, pairs: usize, dir: &Path) {
    let src = dir.join("src");
    if !src.join(".generated").exists() {
        let spec = HomeSpec {
            files: n,
            files_per_dir: 50,
            min_size: 1024,
            max_size: 20 * 1024,
            big_file: None,
            odd_entries: false,
            seed: 7,
        };
        let bytes = generate_home(&src, &spec).expect("generate");
        std::fs::write(src.join(".generated"), bytes.to_string()).expect("marker");
        println!("generated {n} files, {bytes} bytes in {}", src.display());
    }
    let journal = dir.join("journal.sqlite");
    let ours = |d: &Path| {
        run(Command::new(BIN).args([
            "sync-files".as_ref(),
            "bench".as_ref(),
            "--src".as_ref(),
            src.as_os_str(),
            "--dst".as_ref(),
            d.as_os_str(),
            "--journal".as_ref(),
            journal.as_os_str(),
        ]))
    };
    let rsync = |d: &Path| {
        let s = format!("{}/", src.display());
        run(Command::new("rsync").arg("-a").arg(s).arg(d))
    };
    let cp = |d: &Path| run(Command::new("cp").arg("-a").arg(&src).arg(d));
    // Warm-up: page cache and binaries.
    ours(&dir.join("warm-ours"));
    rsync(&dir.join("warm-rsync"));
    std::fs::remove_dir_all(dir.join("warm-ours")).expect("clean up");
    std::fs::remove_dir_all(dir.join("warm-rsync")).expect("clean up");
    let (mut o, mut r, mut c) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..pairs {
        o.push(ours(&dir.join(format!("ours-{i}"))));
        r.push(rsync(&dir.join(format!("rsync-{i}"))));
        c.push(cp(&dir.join(format!("cp-{i}"))));
        println!(
            "pair {i}: ours {:.2}s rsync {:.2}s cp {:.2}s",
            o[i], r[i], c[i]
        );
        // Disk space: keep only the first copies (the no-change pass uses them).
        if i > 0 {
            for d in ["ours", "rsync", "cp"] {
                std::fs::remove_dir_all(dir.join(format!("{d}-{i}"))).expect("clean up");
            }
        }
    }
    report("first sync vs rsync -a", &o, &r);
    report("first sync vs cp -a", &o, &c);
    let (mut o2, mut r2) = (Vec::new(), Vec::new());
    for _ in 0..pairs {
        o2.push(ours(&dir.join("ours-0")));
        r2.push(rsync(&dir.join("rsync-0")));
    }
    report("no-change pass vs rsync -a", &o2, &r2);
    std::fs::remove_dir_all(dir).expect("clean up");
}

fn db(rows: usize, pairs: usize) {
    let src = testkit::MariaDb::start().expect("source mariadb");
    let dst = testkit::MariaDb::start().expect("destination mariadb");
    let sock = |m: &testkit::MariaDb| m.socket().display().to_string();
    src.exec("CREATE DATABASE sbtest").expect("create");
    sh(&format!(
        "sysbench oltp_read_write --db-driver=mysql --mysql-socket={} --mysql-user=root \
         --mysql-db=sbtest --tables=8 --table-size={rows} --threads=2 prepare",
        sock(&src)
    ));
    let size = src
        .exec("SELECT SUM(DATA_LENGTH + INDEX_LENGTH) FROM information_schema.TABLES WHERE TABLE_SCHEMA='sbtest'")
        .expect("size");
    println!(
        "sbtest: 8 tables x {rows} rows, {} bytes on disk",
        size.trim()
    );
    let tmp = tempfile::tempdir().expect("tmp");
    let journal = tmp.path().join("j.sqlite");
    let ours = || {
        dst.exec("DROP DATABASE IF EXISTS sbtest").expect("drop");
        let _ = std::fs::remove_file(&journal);
        run(Command::new(BIN)
            .args(["copy-db", "sbtest", "--threads", "2", "--journal"])
            .arg(&journal)
            .env("MIGRATOR_SRC_DB_URL", src.admin_url())
            .env("MIGRATOR_DST_DB_URL", dst.admin_url()))
    };
    let dump = || {
        dst.exec("DROP DATABASE IF EXISTS sbtest; CREATE DATABASE sbtest")
            .expect("drop");
        sh(&format!(
            "mariadb-dump --no-defaults --socket={} -uroot --single-transaction sbtest | \
             mariadb --no-defaults --socket={} -uroot sbtest",
            sock(&src),
            sock(&dst)
        ))
    };
    let mydumper = |i: usize| {
        dst.exec("DROP DATABASE IF EXISTS sbtest").expect("drop");
        let out = tmp.path().join(format!("dump-{i}"));
        sh(&format!(
            "mydumper --socket={s} -u root -B sbtest -t 2 -o {o} && \
             myloader --socket={d} -u root -B sbtest -t 2 -d {o} && rm -rf {o}",
            s = sock(&src),
            d = sock(&dst),
            o = out.display()
        ))
    };
    ours();
    dump();
    let (mut o, mut m, mut y) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..pairs {
        o.push(ours());
        m.push(dump());
        y.push(mydumper(i));
        println!(
            "pair {i}: ours {:.2}s mariadb-dump|mariadb {:.2}s mydumper+myloader {:.2}s",
            o[i], m[i], y[i]
        );
    }
    report("db copy vs mariadb-dump | mariadb", &o, &m);
    report("db copy vs mydumper/myloader", &o, &y);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        return; // built by `cargo test --all-targets`: not a test
    }
    let rest: Vec<&String> = args
        .iter()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let num = |i: usize, d: usize| rest.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    match rest.first().map(|s| s.as_str()) {
        Some("files") => {
            let dir = rest
                .get(3)
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/var/tmp/migrator-bench"));
            files(num(1, 100_000), num(2, 5), &dir)
        }
        Some("db") => db(num(1, 560_000), num(2, 5)),
        _ => eprintln!("usage: cargo bench -p migrator --bench copy -- files|db [N] [PAIRS]"),
    }
}
