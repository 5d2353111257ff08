//! The no-change pass with the change feed (`migrator watch` + `sync-files --feed`) against
//! `rsync -a`, alternately in one run (A B A B …) after a warm-up; medians, min–max, ratio.
//!
//! `cargo bench -p migrator --bench feed -- [FILES] [PAIRS] [DIR]` (default 100000 5
//! /var/tmp/migrator-feed-bench)
//!
//! Generates the home of `benches/copy.rs` (FILES files of 1–20 KiB in dirs of 50), syncs it
//! once with ours and once with rsync (each into its own copy), starts `migrator watch` on the
//! source, makes two feed passes (the first re-arms the chain, the second must stat nothing),
//! then times no-change passes: ours with `--feed`, `sync` before each, vs `rsync -a` over its
//! own up-to-date copy. Last, one pass after changing a few files shows they are copied.
//! As root with `/dev/loop-control`, everything lives on a tmpfs-backed loop ext4 (COMMON.md:
//! no disk trap), unmounted when done.
//!
//! Without `--bench` (as under `cargo test --all-targets`) it does nothing.

mod common;

use common::{bench_home, num, positional_args, run_timed, stats};
use migrator::fixtures::generate_home;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use testkit::loopfs::{can_loop_mount, LoopFs};

const BIN: &str = env!("CARGO_BIN_EXE_migrator");

fn run(cmd: &mut Command) -> (f64, String) {
    run_timed(cmd)
}

/// The running watcher, stopped by its PID on drop.
struct Watcher(Child);

impl Drop for Watcher {
    fn drop(&mut self) {
        // SAFETY: signalling the child we spawned.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).expect("sync-files --json")
}

fn bench(n: usize, pairs: usize, dir: &Path) {
    std::fs::create_dir_all(dir).expect("bench directory");
    let spec = bench_home(n);
    let data = (n as u64) * (spec.max_size + spec.min_size) as u64 / 2;
    let root = can_loop_mount();
    // Source, our copy and rsync's copy: ~3 x data at ext4 block rounding.
    let gib = data * 3 * 14 / 10 / (1 << 30) + 1;
    let fs = if root {
        match LoopFs::create(dir, "feed", gib, (n as u64) * 3 + 30_000) {
            Ok(fs) => Some(fs),
            Err(e) => {
                println!(
                    "cannot make a loop file system ({e}); using {}",
                    dir.display()
                );
                None
            }
        }
    } else {
        println!(
            "WARNING: not root: working under {} (disk trap possible)",
            dir.display()
        );
        None
    };
    let base = fs
        .as_ref()
        .map(|f| f.path())
        .unwrap_or_else(|| dir.join(format!("feed-{}", std::process::id())));
    let (src, ours_dst, rsync_dst) = (base.join("src"), base.join("ours"), base.join("rsync"));
    let journal = base.join("journal.sqlite");
    let socket = base.join("feed.sock");
    let bytes = generate_home(&src, &spec).expect("generate");
    println!("generated {n} files, {bytes} bytes in {}", src.display());

    let ours = |feed: bool| {
        let mut c = Command::new(BIN);
        c.arg("sync-files")
            .arg("bench")
            .arg("--json")
            .arg("--src")
            .arg(&src)
            .arg("--dst")
            .arg(&ours_dst)
            .arg("--journal")
            .arg(&journal);
        if feed {
            c.arg("--feed").arg(&socket);
        }
        let (t, out) = run(&mut c);
        (t, json(&out))
    };
    let rsync = || {
        run(Command::new("rsync")
            .arg("-a")
            .arg(format!("{}/", src.display()))
            .arg(&rsync_dst))
        .0
    };
    let (t, _) = ours(false);
    println!("first sync, ours: {t:.2}s");
    println!("first sync, rsync -a: {:.2}s", rsync());
    let (t, r) = ours(false);
    println!(
        "no-change pass without the feed (for reference): {t:.3}s, {} entries stat'ed",
        r["source_entries_statted"]
    );

    let child = Command::new(BIN)
        .arg("watch")
        .arg(&src)
        .arg("--socket")
        .arg(&socket)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn migrator watch");
    let _watcher = Watcher(child);
    let t = Instant::now();
    while !socket.exists() {
        assert!(t.elapsed() < Duration::from_secs(60), "watcher not ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("watcher ready in {:.2}s", t.elapsed().as_secs_f64());
    let (_, r) = ours(true);
    println!(
        "first feed pass (arms the chain): walked {}",
        r["source_walked"]
    );
    // Warm-up of the measured pair.
    let (_, r) = ours(true);
    assert_eq!(r["source_walked"], false, "{r}");
    rsync();

    let (mut a, mut b) = (Vec::new(), Vec::new());
    for i in 0..pairs {
        let (t, r) = ours(true);
        assert_eq!(r["source_walked"], false, "{r}");
        assert_eq!(r["source_entries_statted"], 0, "{r}");
        assert_eq!(r["files_written"], 0, "{r}");
        a.push(t);
        b.push(rsync());
        println!("pair {i}: ours {:.3}s, rsync -a {:.3}s", a[i], b[i]);
    }
    let (om, olo, ohi) = stats(&a);
    let (tm, tlo, thi) = stats(&b);
    println!(
        "no-change pass with --feed, {n} files: ours median {om:.3}s (min {olo:.3}, max {ohi:.3}) \
         | rsync -a median {tm:.3}s (min {tlo:.3}, max {thi:.3}) | ratio rsync/ours {:.2}x",
        tm / om
    );

    // A few changed files are caught and copied without a walk.
    for i in [0usize, n / 3, n / 2, n - 1] {
        let d = i / 50;
        let p = src.join(format!("d{:03}/s{:04}/f{i:06}.dat", d / 50, d));
        std::fs::write(&p, format!("changed {i}")).expect("change a file");
    }
    let (t, r) = ours(true);
    println!(
        "pass after changing 4 files: {t:.3}s, walked {}, {} entries stat'ed, {} files written",
        r["source_walked"], r["source_entries_statted"], r["files_written"]
    );
    assert_eq!(r["files_written"], 4, "{r}");
    drop(_watcher);
    if fs.is_none() {
        let _ = std::fs::remove_dir_all(&base);
    }
    drop(fs);
    let _ = std::fs::remove_dir(dir); // only if empty: never someone else's files
}

fn main() {
    let Some(rest) = positional_args() else {
        return; // built by `cargo test --all-targets`: not a test
    };
    let num = |i: usize, d: usize| num(&rest, i, d);
    let dir = rest
        .get(2)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/migrator-feed-bench"));
    bench(num(0, 100_000), num(1, 5).max(1), &dir);
}
