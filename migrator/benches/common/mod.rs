//! What the bench binaries share: their arguments, timed runs, and median/min/max.
//! (A directory with `mod.rs` and no `main.rs` is not a bench target of its own.)

#![allow(dead_code)] // each bench uses its own subset

pub mod journal_gen;

use migrator::fixtures::HomeSpec;
use std::process::{Command, Stdio};
use std::time::Instant;

/// The positional arguments after the bench's name, or `None` when the binary was not started
/// by `cargo bench` (as under `cargo test --all-targets`: then it is not a test and does
/// nothing).
pub fn positional_args() -> Option<Vec<String>> {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        return None;
    }
    Some(
        args.into_iter()
            .skip(1)
            .filter(|a| !a.starts_with("--"))
            .collect(),
    )
}

/// Argument `i` as a number, `default` when missing or not a number.
pub fn num(args: &[String], i: usize, default: usize) -> usize {
    args.get(i).and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// Median, min and max.
pub fn stats(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    (s[s.len() / 2], s[0], s[s.len() - 1])
}

/// Runs `cmd` after `sync` (no dirty pages left by the previous run: ours ends with `syncfs`
/// and would otherwise pay for the alternative's writeback); its wall time and stdout. Panics
/// with its stderr when it fails.
pub fn run_timed(cmd: &mut Command) -> (f64, String) {
    let _ = Command::new("sync").status();
    let t = Instant::now();
    let out = cmd.stderr(Stdio::piped()).output().expect("spawn");
    let secs = t.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (secs, String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The generated home of the file benches: `n` files of 1–20 KiB in directories of 50.
pub fn bench_home(n: usize) -> HomeSpec {
    HomeSpec {
        files: n,
        files_per_dir: 50,
        min_size: 1024,
        max_size: 20 * 1024,
        big_file: None,
        odd_entries: false,
        seed: 7,
    }
}
