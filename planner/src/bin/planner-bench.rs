//! Planner benchmark: generate an inventory (once), then alternate a bare parse of the same
//! files (the limit: every JSON line tokenized on all cores, nothing kept) and the full plan
//! (parse + validate, group, waves, write the plan file). Prints medians, min–max and the ratio.
//!
//! `cargo run --release -p planner --bin planner-bench -- --sites 3000000 --pairs 5`
//! Peak memory of a single plan: `/usr/bin/time -v target/release/migrator plan …`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use planner::generate::{generate, GenerateOptions};
use planner::write_inventory::SitesFormat;
use planner::{plan_dir, LoadOptions, Settings};
use rayon::prelude::*;

struct Args {
    sites: u64,
    seed: u64,
    dir: PathBuf,
    pairs: usize,
}

const USAGE: &str = "usage: planner-bench [--sites N] [--seed S] [--pairs P] [--dir DIR]\n\
     Generates DIR/inventory (default target/planner-bench-N) unless present, \
     then alternates bare parse and full plan P times after a warm-up.";

/// Why the command line was not used (printed, exit 2); `--help` is one of them.
#[derive(Debug, thiserror::Error)]
enum ArgsError {
    #[error("{0} needs a value")]
    MissingValue(String),
    #[error("{0}: a number")]
    NotANumber(&'static str),
    #[error("{USAGE}")]
    Help,
    #[error("unknown argument {0} (try --help)")]
    Unknown(String),
}

fn parse_args() -> Result<Args, ArgsError> {
    let mut a = Args {
        sites: 3_000_000,
        seed: 42,
        dir: PathBuf::new(),
        pairs: 5,
    };
    let mut dir = None;
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut v = || it.next().ok_or_else(|| ArgsError::MissingValue(k.clone()));
        let num = |flag| move |_| ArgsError::NotANumber(flag);
        match k.as_str() {
            "--sites" => a.sites = v()?.parse().map_err(num("--sites"))?,
            "--seed" => a.seed = v()?.parse().map_err(num("--seed"))?,
            "--pairs" => a.pairs = v()?.parse().map_err(num("--pairs"))?,
            "--dir" => dir = Some(PathBuf::from(v()?)),
            "-h" | "--help" => return Err(ArgsError::Help),
            _ => return Err(ArgsError::Unknown(k)),
        }
    }
    a.dir = dir.unwrap_or_else(|| PathBuf::from(format!("target/planner-bench-{}", a.sites)));
    Ok(a)
}

/// The limit: read every inventory file and tokenize every line, keeping nothing.
fn bare_parse(inv: &Path) -> std::io::Result<u64> {
    use std::io::Read;
    let mut lines = 0u64;
    let mut names: Vec<PathBuf> = std::fs::read_dir(inv)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    names.sort();
    for p in names {
        let mut f = std::fs::File::open(&p)?;
        let mut buf: Vec<u8> = Vec::new();
        let mut carry: Vec<u8> = Vec::new();
        loop {
            buf.clear();
            buf.extend_from_slice(&carry);
            let start = buf.len();
            buf.resize(start + (16 << 20), 0);
            let n = f.read(&mut buf[start..])?;
            buf.truncate(start + n);
            let end = if n == 0 {
                buf.len()
            } else {
                memchr::memrchr(b'\n', &buf).map(|i| i + 1).unwrap_or(0)
            };
            carry = buf[end..].to_vec();
            let body = &buf[..end];
            let mut chunks = Vec::new();
            let mut rest = body;
            while !rest.is_empty() {
                let cut = if rest.len() <= 256 << 10 {
                    rest.len()
                } else {
                    memchr::memchr(b'\n', &rest[256 << 10..])
                        .map(|i| (256 << 10) + i + 1)
                        .unwrap_or(rest.len())
                };
                chunks.push(&rest[..cut]);
                rest = &rest[cut..];
            }
            lines += chunks
                .par_iter()
                .map(|c| {
                    c.split(|&b| b == b'\n')
                        .filter(|l| !l.is_empty())
                        .map(|l| {
                            serde_json::from_slice::<serde::de::IgnoredAny>(l)
                                .map(|_| 1u64)
                                .unwrap_or(0)
                        })
                        .sum::<u64>()
                })
                .sum::<u64>();
            if n == 0 {
                break;
            }
        }
    }
    Ok(lines)
}

fn stats(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    (s[s.len() / 2], s[0], s[s.len() - 1])
}

/// CPU seconds (user + system) this process has used: on a shared, busy machine the CPU ratio
/// is steadier than the wall-clock ratio.
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<f64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    // Fields 14 and 15 of stat (utime, stime) are 12 and 13 after the command name.
    (f.get(11).unwrap_or(&0.0) + f.get(12).unwrap_or(&0.0)) / 100.0
}

fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn main() {
    let a = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let inv = a.dir.join("inventory");
    if !inv.join("sites.jsonl").exists() {
        let t = Instant::now();
        let g = generate(
            &inv,
            &GenerateOptions {
                sites: a.sites,
                seed: a.seed,
                format: SitesFormat::Jsonl,
            },
        )
        .unwrap_or_else(|e| {
            eprintln!("generate: {e}");
            std::process::exit(1)
        });
        println!(
            "generated {} sites, {} databases in {:.1}s into {}",
            g.sites,
            g.databases,
            t.elapsed().as_secs_f64(),
            inv.display()
        );
    }
    let size: u64 = std::fs::read_dir(&inv)
        .map(|d| {
            d.filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    let out = a.dir.join("plan.json");
    let settings = Settings::default();
    let run_plan = || -> (f64, f64) {
        let t = Instant::now();
        let c = cpu_secs();
        let mut p = plan_dir(&inv, &settings, &LoadOptions::default()).unwrap_or_else(|e| {
            eprintln!("plan: {e}");
            std::process::exit(1)
        });
        p.write_file(&out).unwrap_or_else(|e| {
            eprintln!("plan: {e}");
            std::process::exit(1)
        });
        let el = t.elapsed().as_secs_f64();
        let cpu = cpu_secs() - c;
        let tm = &p.timings;
        println!(
            "  plan  {el:.3}s wall, {cpu:.2}s CPU (load {:.3}, group {:.3}, waves {:.3}, write {:.3}; {} waves)",
            tm.load.as_secs_f64(),
            tm.group.as_secs_f64(),
            tm.waves.as_secs_f64(),
            tm.write.as_secs_f64(),
            p.overview.summary.waves
        );
        (el, cpu)
    };
    let run_parse = || -> (f64, f64) {
        let t = Instant::now();
        let c = cpu_secs();
        let n = bare_parse(&inv).unwrap_or_else(|e| {
            eprintln!("parse: {e}");
            std::process::exit(1)
        });
        let el = t.elapsed().as_secs_f64();
        let cpu = cpu_secs() - c;
        println!("  parse {el:.3}s wall, {cpu:.2}s CPU ({n} lines)");
        (el, cpu)
    };
    println!(
        "inventory {} ({:.0} MiB), {} threads; warm-up:",
        inv.display(),
        size as f64 / (1 << 20) as f64,
        rayon::current_num_threads()
    );
    run_parse();
    run_plan();
    let (mut parse, mut plan, mut parse_cpu, mut plan_cpu) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..a.pairs {
        println!("pair {}:", i + 1);
        let (w, c) = run_parse();
        parse.push(w);
        parse_cpu.push(c);
        let (w, c) = run_plan();
        plan.push(w);
        plan_cpu.push(c);
    }
    let (pm, pmin, pmax) = stats(&parse);
    let (lm, lmin, lmax) = stats(&plan);
    println!("bare parse: median {pm:.3}s (min {pmin:.3}, max {pmax:.3})");
    println!("full plan:  median {lm:.3}s (min {lmin:.3}, max {lmax:.3})");
    println!("ratio plan/parse (medians): {:.2}", lm / pm);
    let (pc, pcmin, pcmax) = stats(&parse_cpu);
    let (lc, lcmin, lcmax) = stats(&plan_cpu);
    println!(
        "CPU seconds: parse median {pc:.2} ({pcmin:.2}-{pcmax:.2}), plan median {lc:.2} \
         ({lcmin:.2}-{lcmax:.2}), ratio {:.2}",
        lc / pc
    );
    if let Some(m) = peak_rss_mib() {
        println!("peak RSS of this process: {m:.0} MiB");
    }
    println!(
        "plan file: {} ({:.0} MiB)",
        out.display(),
        std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0) as f64 / (1 << 20) as f64
    );
}
