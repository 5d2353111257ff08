//! `lab-bench`: times `lab up` and `lab down` for given site counts, several runs each,
//! alternating sizes (50, 1000, 50, 1000, …) so both meet the same machine noise.
//! Prints median and min–max of `up`, `down` and each step of `up`.
//!
//! `cargo run --release -p scenarios --bin lab-bench -- [--runs 3] [--sizes 50,1000]`

use anyhow::Context;
use scenarios::lab::{self, LabConfig};
use std::collections::BTreeMap;
use std::time::Instant;

/// Per size: `lab up` seconds, `lab down` seconds, and each step of `up`.
type Timings = (Vec<f64>, Vec<f64>, BTreeMap<String, Vec<f64>>);

fn stats(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let get = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let runs: usize = get("--runs").map(|r| r.parse()).transpose()?.unwrap_or(3);
    let sizes: Vec<usize> = get("--sizes")
        .unwrap_or_else(|| "50,1000".into())
        .split(',')
        .map(|s| {
            s.trim()
                .parse()
                .context("--sizes: comma-separated site counts")
        })
        .collect::<anyhow::Result<_>>()?;
    let root = std::env::temp_dir().join(format!("hostmove-lab-bench-{}", std::process::id()));
    std::fs::create_dir_all(&root)?;
    let mut results: BTreeMap<usize, Timings> = BTreeMap::new();
    // Warm-up (page cache, binaries), not counted.
    let warm = LabConfig::new("warmup", &root, sizes[0]);
    lab::up(&warm)?;
    lab::down("warmup", &root)?;
    for run in 0..runs {
        for &n in &sizes {
            let name = format!("bench{n}-{run}");
            let cfg = LabConfig::new(&name, &root, n);
            let t = Instant::now();
            let st = lab::up(&cfg).with_context(|| format!("lab up {n} sites"))?;
            let up = t.elapsed().as_secs_f64();
            let t = Instant::now();
            let report = lab::down(&name, &root)?;
            let down = t.elapsed().as_secs_f64();
            anyhow::ensure!(report.leftovers.is_empty(), "left: {:?}", report.leftovers);
            eprintln!("run {run}: {n} sites: up {up:.1} s, down {down:.1} s");
            let e = results.entry(n).or_default();
            e.0.push(up);
            e.1.push(down);
            for (step, secs) in st.step_secs {
                e.2.entry(step).or_default().push(secs);
            }
        }
    }
    for (n, (mut ups, mut downs, steps)) in results {
        let (m, lo, hi) = stats(&mut ups);
        println!("{n} sites: lab up median {m:.1} s (min {lo:.1}, max {hi:.1}), {runs} runs");
        let (m, lo, hi) = stats(&mut downs);
        println!("{n} sites: lab down median {m:.1} s (min {lo:.1}, max {hi:.1})");
        for (step, mut v) in steps {
            let (m, lo, hi) = stats(&mut v);
            println!("    {step}: median {m:.2} s ({lo:.2}–{hi:.2})");
        }
    }
    std::fs::remove_dir_all(&root)?;
    Ok(())
}
