//! Benchmarks of file sync and database copy against what an operator would otherwise use,
//! run alternately in one process (A B A B …) after a warm-up; medians, min–max and ratios.
//!
//! `cargo bench -p migrator --bench copy -- files [FILES] [PAIRS] [DIR]`
//! `cargo bench -p migrator --bench copy -- db [ROWS_PER_TABLE] [PAIRS]`
//!
//! Files: first sync of a generated home (FILES files of 1–20 KiB in dirs of 50) with
//! `migrator sync-files` vs `rsync -a` vs `cp -a` (neither ends durable), and `migrator
//! sync-files --sync` vs `rsync -a` + `sync -f` (both end with `syncfs`); then a no-change pass
//! vs `rsync -a` (ours with the destination manifest cached in the journal by the first pass). Run as root where
//! loop devices exist, the source and every timed copy get a file system of their own (ext4 on
//! a loop device over a private tmpfs, made fresh for that copy and removed after it), so no
//! tool pays for another's deletes (the disk trap of shared/BENCHMARKS.md) and the disk is not
//! what is measured; memory: ~2x the home per file system alive (the source, the first pair's
//! copies, the copy being timed). Otherwise every copy goes to a fresh directory under DIR
//! (default /var/tmp/migrator-bench) and the run says its figures may suffer the disk trap.
//! DB: a sysbench-shaped database (8 tables) copied between two private MariaDB instances
//! with `migrator copy-db` vs `mariadb-dump --single-transaction | mariadb` vs
//! `mydumper`/`myloader` (2 threads each).
//!
//! Without `--bench` (as under `cargo test --all-targets`) it does nothing.

mod common;

use common::{bench_home, num, positional_args, run_timed, stats};
use migrator::fixtures::generate_home;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use testkit::loopfs::{can_loop_mount, LoopFs};

const BIN: &str = env!("CARGO_BIN_EXE_migrator");

fn run(cmd: &mut Command) -> f64 {
    run_timed(cmd.stdout(Stdio::null())).0
}

fn sh(script: &str) -> f64 {
    run(Command::new("bash").args(["-o", "pipefail", "-c", script]))
}

/// `syncfs` of the file system holding `p`, outside any timing.
fn settle(p: &Path) {
    let _ = Command::new("sync").arg("-f").arg(p).status();
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

/// Where the timed copies land: a fresh [`LoopFs`] each (root with loop devices), or fresh
/// directories under the bench directory (the figures may then suffer the disk trap).
struct Targets {
    base: PathBuf,
    /// `Some((GiB, inodes))`: a fresh file system of that size per copy.
    fresh: Option<(u64, u64)>,
}

/// One copy's destination directory (does not exist yet); its file system or directory goes
/// away on drop.
struct Target {
    path: PathBuf,
    _fs: Option<LoopFs>,
}

impl Drop for Target {
    fn drop(&mut self) {
        if self._fs.is_none() && self.path.exists() {
            std::fs::remove_dir_all(&self.path).expect("clean up");
        }
    }
}

impl Targets {
    fn get(&self, name: &str) -> Target {
        match self.fresh {
            Some((gib, inodes)) => {
                let fs = LoopFs::create(&self.base, name, gib, inodes).expect("fresh file system");
                Target {
                    path: fs.path().join(name),
                    _fs: Some(fs),
                }
            }
            None => Target {
                path: self.base.join(name),
                _fs: None,
            },
        }
    }
}

fn files(n: usize, pairs: usize, dir: &Path) {
    std::fs::create_dir_all(dir).expect("bench directory");
    // Sizes for a file system holding one copy: data at ~1.3x (block rounding), one inode
    // per file and per directory of 50, plus room.
    let gib_for = |bytes: u64| bytes * 13 / 10 / (1 << 30) + 1;
    let inodes = (n as u64) * 2 + 20_000;
    let spec = bench_home(n);
    let expected = (n as u64) * (spec.max_size + spec.min_size) as u64 / 2;
    let src_fs = if can_loop_mount() {
        match LoopFs::create(dir, "src", gib_for(expected), inodes) {
            Ok(fs) => Some(fs),
            Err(e) => {
                println!("cannot make a loop file system ({e})");
                None
            }
        }
    } else {
        None
    };
    let targets = Targets {
        base: dir.to_path_buf(),
        fresh: src_fs.as_ref().map(|_| (gib_for(expected), inodes)),
    };
    if targets.fresh.is_some() {
        println!(
            "every timed copy gets a fresh tmpfs-backed loop ext4 ({} GiB, {inodes} inodes)",
            gib_for(expected)
        );
    } else {
        println!(
            "WARNING: not root or no /dev/loop-control: copies go to fresh directories under {}; \
             the figures may suffer the disk trap (shared/BENCHMARKS.md)",
            dir.display()
        );
    }
    let src = match &src_fs {
        Some(fs) => fs.path().join("src"),
        None => dir.join("src"),
    };
    let bytes = generate_home(&src, &spec).expect("generate");
    println!("generated {n} files, {bytes} bytes in {}", src.display());
    let journal = dir.join(format!("journal-{}.sqlite", std::process::id()));
    // `sync`: end with syncfs (`--sync`); by default, like rsync, durability is left to the
    // kernel's writeback (the cached manifest then holds only under the same boot id).
    let ours_with = |d: &Path, sync: bool| {
        let mut cmd = Command::new(BIN);
        cmd.args([
            "sync-files".as_ref(),
            "bench".as_ref(),
            "--src".as_ref(),
            src.as_os_str(),
            "--dst".as_ref(),
            d.as_os_str(),
            "--journal".as_ref(),
            journal.as_os_str(),
        ]);
        if sync {
            cmd.arg("--sync");
        }
        run(&mut cmd)
    };
    let ours = |d: &Path| ours_with(d, false);
    let rsync = |d: &Path| {
        let s = format!("{}/", src.display());
        run(Command::new("rsync").arg("-a").arg(s).arg(d))
    };
    let cp = |d: &Path| run(Command::new("cp").arg("-a").arg(&src).arg(d));
    // rsync with the durability of ours with `--sync`: `syncfs` of the destination's file
    // system (`sync -f`) inside the timing.
    let rsync_durable = |d: &Path| {
        sh(&format!(
            "rsync -a '{}/' '{}' && sync -f '{}'",
            src.display(),
            d.display(),
            d.display()
        ))
    };
    // Warm-up: page cache and binaries.
    ours(&targets.get("warm-ours").path);
    rsync(&targets.get("warm-rsync").path);
    let (mut o, mut r, mut c) = (Vec::new(), Vec::new(), Vec::new());
    let (mut od, mut rd) = (Vec::new(), Vec::new());
    // The first pair's copies stay for the no-change pass; later ones go once timed.
    let mut kept = Vec::new();
    for i in 0..pairs {
        let (to, tr, tc) = (
            targets.get(&format!("ours-{i}")),
            targets.get(&format!("rsync-{i}")),
            targets.get(&format!("cp-{i}")),
        );
        // A copy that does not end durable leaves its data dirty; it is flushed untimed right
        // after, so its writeback never lands in the next tool's timing.
        o.push(ours(&to.path));
        settle(&to.path);
        r.push(rsync(&tr.path));
        settle(&tr.path);
        c.push(cp(&tc.path));
        settle(&tc.path);
        od.push(ours_with(
            &targets.get(&format!("ours-sync-{i}")).path,
            true,
        ));
        rd.push(rsync_durable(&targets.get(&format!("rsync-sync-{i}")).path));
        println!(
            "pair {i}: ours {:.2}s rsync {:.2}s cp {:.2}s ours --sync {:.2}s rsync+syncfs {:.2}s",
            o[i], r[i], c[i], od[i], rd[i]
        );
        if i == 0 {
            kept.push(to);
            kept.push(tr);
        }
    }
    report("first sync vs rsync -a", &o, &r);
    report("first sync vs cp -a", &o, &c);
    report(
        "first sync --sync vs rsync -a + syncfs (both durable)",
        &od,
        &rd,
    );
    if let [ours0, rsync0] = kept.as_slice() {
        let (mut o2, mut r2) = (Vec::new(), Vec::new());
        for _ in 0..pairs {
            o2.push(ours(&ours0.path));
            r2.push(rsync(&rsync0.path));
        }
        report("no-change pass vs rsync -a", &o2, &r2);
    }
    drop(kept);
    drop(src_fs);
    let _ = std::fs::remove_file(&journal);
    let _ = std::fs::remove_file(journal.with_extension("sqlite-wal"));
    let _ = std::fs::remove_file(journal.with_extension("sqlite-shm"));
    if src.exists() {
        std::fs::remove_dir_all(&src).expect("clean up");
    }
    let _ = std::fs::remove_dir(dir); // only if empty: never someone else's files
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
    let Some(rest) = positional_args() else {
        return; // built by `cargo test --all-targets`: not a test
    };
    let num = |i: usize, d: usize| num(&rest, i, d);
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
