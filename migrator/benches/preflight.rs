//! Pre-flight's code scan (issue 21) against ripgrep with the same patterns over the same tree,
//! alternately (A B A B …) after a warm-up read of the tree; medians, min–max, the ratio.
//!
//! `cargo bench -p migrator --bench preflight -- [FILES] [PAIRS] [DIR]` (default 100000 5
//! /var/tmp/migrator-preflight-bench)
//!
//! The tree: FILES code files (PHP, JS, CSS, HTML, `.htaccess` every 500th) of 1–16 KiB in
//! directories of 50, generated once (kept in DIR for the next run), with one planted finding
//! per 1,000 files. Ours: `scan_home` in this process (rayon, every core); `rg --no-ignore
//! --hidden -c -e P …` with every pattern of the scanner (rules and detectors). Both are
//! asked to find the same planted lines: the bench checks ours reported each.
//!
//! Without `--bench` (as under `cargo test --all-targets`) it does nothing.

mod common;

use common::{num, positional_args, run_timed, stats};
use migrator::preflight::code::{Scanner, Served};
use migrator::preflight::rules::RuleTable;
use migrator::preflight::walk::{scan_home, WalkLimits};
use migrator::preflight::PreflightConfig;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

const PHP: &str = "<?php\n/**\n * Renders a list of posts.\n * @param array $posts the posts\n */\nfunction render_posts(array $posts, $db) {\n    foreach ($posts as $i => $post) {\n        $title = htmlspecialchars($post['title'], ENT_QUOTES, 'UTF-8');\n        $rows = $db->query(\"SELECT id, name FROM wp_terms WHERE post = \" . (int)$post['id']);\n        echo '<li class=\"post-' . $i . '\">' . $title . '</li>';\n        $parts = explode(',', $post['tags'] ?? '');\n        $cache = Cache::get('post:' . $post['id']) ?: [];\n    }\n}\n";
const JS: &str = "(function ($) {\n  'use strict';\n  var items = document.querySelectorAll('.menu a');\n  $.each(items, function (i, el) {\n    el.addEventListener('click', function (e) { var p = el.href.split('#'); console.log(p[0], 12.5, '1.2.3'); });\n  });\n  var t = '12:30:45'; var v = 'v2.10.4.1';\n})(jQuery);\n";
const CSS: &str = ".menu a:hover { color: #a0b0c0; margin: 0 0 1.5em 0; }\n.post-list li::before { content: '\\2022'; padding: 0 4px; }\n@media (max-width: 600px) { .menu { display: none; } }\n";
const HTML: &str = "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Shop</title></head>\n<body><div id=\"app\" data-time=\"10:15:00\">Welcome</div></body></html>\n";
const PLANTED: &[&str] = &[
    "$db = mysql_connect('10.20.4.4', 'u', 'p');\n",
    "require '/homez.9/bob/www/lib.php';\n",
    "$h = 'sql9.dc1.example';\n",
    "ini_set('mysqli.default_socket', '/run/mysqld/mysqld.sock');\n",
];

fn config() -> PreflightConfig {
    PreflightConfig::parse(
        "old_networks = [\"10.20.0.0/16\", \"2001:db8:20::/48\"]\nold_domains = [\"dc1.example\"]\n",
        "bench",
    )
    .expect("bench settings")
}

/// Generates the tree; returns (files, bytes, planted).
fn generate(root: &Path, files: usize) -> (usize, u64, usize) {
    let done = root.join(".generated");
    if let Ok(s) = std::fs::read_to_string(&done) {
        let v: Vec<u64> = s
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        if v.len() == 3 && v[0] as usize == files {
            return (files, v[1], v[2] as usize);
        }
    }
    let _ = std::fs::remove_dir_all(root);
    let mut seed = 0x9e3779b97f4a7c15u64;
    let mut rnd = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let (mut bytes, mut planted) = (0u64, 0usize);
    for i in 0..files {
        let dir = root.join(format!("d{:03}/e{:03}", i / 5000, (i / 50) % 100));
        if i % 50 == 0 {
            std::fs::create_dir_all(&dir).expect("mkdir");
        }
        let (name, unit) = match i % 10 {
            _ if i % 500 == 499 => (".htaccess".to_string(), "RewriteEngine On\n"),
            0..=4 => (format!("f{i}.php"), PHP),
            5..=6 => (format!("f{i}.js"), JS),
            7..=8 => (format!("f{i}.css"), CSS),
            _ => (format!("f{i}.html"), HTML),
        };
        let size = 1024 + (rnd() % (15 * 1024)) as usize;
        let mut data = Vec::with_capacity(size + 512);
        while data.len() < size {
            data.extend_from_slice(unit.as_bytes());
        }
        if i % 1000 == 500 && name.ends_with(".php") {
            data.extend_from_slice(PLANTED[(i / 1000) % PLANTED.len()].as_bytes());
            planted += 1;
        }
        bytes += data.len() as u64;
        std::fs::File::create(dir.join(name))
            .and_then(|mut f| f.write_all(&data))
            .expect("write");
    }
    std::fs::write(&done, format!("{files} {bytes} {planted}")).expect("marker");
    (files, bytes, planted)
}

fn main() {
    let Some(args) = positional_args() else {
        return;
    };
    let files = num(&args, 0, 100_000);
    let pairs = num(&args, 1, 5);
    let root = Path::new(
        args.get(2)
            .map(String::as_str)
            .unwrap_or("/var/tmp/migrator-preflight-bench"),
    )
    .to_path_buf();
    let t = Instant::now();
    let (files, bytes, planted) = generate(&root, files);
    eprintln!(
        "tree: {files} files, {:.1} MiB, {planted} planted findings ({:.1} s)",
        bytes as f64 / 1048576.0,
        t.elapsed().as_secs_f64()
    );
    let config = config();
    let scanner = Scanner::new(
        &config,
        RuleTable::builtin().expect("rules"),
        Served::default(),
    )
    .expect("scanner");
    let limits = WalkLimits::from_config(&config);
    let compat = vec!["/homez.1/alice".to_string()];
    let mut rg = Command::new("rg");
    rg.args(["--no-ignore", "--hidden", "--no-messages", "-c"]);
    for p in scanner.patterns() {
        rg.arg("-e").arg(p);
    }
    rg.arg(&root);
    // Warm-up: both read the whole tree once (page cache).
    let warm = scan_home(&scanner, &limits, &root, &compat).expect("scan");
    let (_, rg_out) = run_timed(&mut rg);
    let found = warm
        .findings
        .iter()
        .filter(|f| f.rule != "htaccess.rewrite")
        .count();
    let rg_files = rg_out.lines().count();
    eprintln!(
        "ours: {} findings ({} files read); rg: {rg_files} files matched",
        found, warm.counts.files
    );
    assert!(
        found >= planted,
        "every planted finding must be reported: {found} < {planted}"
    );
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..pairs {
        let t = Instant::now();
        let s = scan_home(&scanner, &limits, &root, &compat).expect("scan");
        ours.push(t.elapsed().as_secs_f64());
        assert!(s.counts.files as usize >= files, "{:?}", s.counts);
        theirs.push(run_timed(&mut rg).0);
    }
    let (om, olo, ohi) = stats(&ours);
    let (rm, rlo, rhi) = stats(&theirs);
    let mib = bytes as f64 / 1048576.0;
    println!(
        "preflight scan of {files} files ({mib:.1} MiB), {pairs} pairs, {} threads",
        rayon::current_num_threads()
    );
    println!(
        "ours: median {om:.3} s (min {olo:.3}, max {ohi:.3}) = {:.0} files/s, {:.1} MiB/s",
        files as f64 / om,
        mib / om
    );
    println!(
        "rg:   median {rm:.3} s (min {rlo:.3}, max {rhi:.3}) = {:.0} files/s, {:.1} MiB/s",
        files as f64 / rm,
        mib / rm
    );
    println!("ratio (ours/rg throughput): {:.2}x", rm / om);
}
