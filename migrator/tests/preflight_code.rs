//! Pre-flight's code scan (issue 21) on real trees: a home with planted findings (each at its
//! file and line, media, binaries and large files skipped), and a copy of Debian's WordPress,
//! which must scan clean of anything that blocks apart from what was planted in it.

use migrator::preflight::code::{Scanner, Served};
use migrator::preflight::rules::RuleTable;
use migrator::preflight::walk::{scan_home, stamp_home, WalkLimits};
use migrator::preflight::{PreflightConfig, Severity, Where};
use std::path::Path;

fn config() -> PreflightConfig {
    PreflightConfig::parse(
        "old_networks = [\"10.20.0.0/16\"]\nold_domains = [\"dc1.example\"]\n\
         max_file_bytes = 100000\n",
        "test settings",
    )
    .unwrap()
}

fn scanner(config: &PreflightConfig) -> Scanner {
    let mut served = Served::default();
    served.ips.insert("10.20.0.7".parse().unwrap());
    served.hosts.insert("sql7.dc1.example".into());
    Scanner::new(config, RuleTable::builtin().unwrap(), served).unwrap()
}

fn write(home: &Path, rel: &str, data: &[u8]) {
    let p = home.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
}

fn located(f: &migrator::preflight::Finding) -> (String, String, u64) {
    match &f.at {
        Where::File { path, line } => (f.rule.clone(), path.clone(), *line),
        other => panic!("not a file finding: {other:?}"),
    }
}

#[test]
fn planted_findings_are_reported_at_their_line_and_the_rest_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("alice");
    write(
        &home,
        "www/config.php",
        b"<?php\ndefine('DB_HOST', 'sql7.dc1.example');\ndefine('DB_OLD', '10.20.4.4');\n",
    );
    write(
        &home,
        "www/lib/db.php",
        b"<?php\n$c = new mysqli('localhost', 'u', 'p', 'd', 3306,\n  '/var/run/mysqld/mysqld.sock');\n",
    );
    write(
        &home,
        "www/lib/shared.php",
        b"<?php\nrequire '/homez.3/alice/www/config.php';\ninclude '/homez.9/common/lib.php';\n",
    );
    write(&home, "www/old.php", b"<?php\n\n$r = ereg('^a', $s);\n");
    write(&home, "www/img/logo.png", b"10.20.4.4 mysql.sock");
    let mut bin = b"10.20.4.4\0".to_vec();
    bin.extend_from_slice(b"mysql_connect(");
    write(&home, "www/data.bin.dat", &bin);
    write(&home, "backups/big.sql", &vec![b'x'; 200_000]);
    std::os::unix::fs::symlink("/usr/share/wordpress", home.join("www/wp")).unwrap();

    let config = config();
    let limits = WalkLimits::from_config(&config);
    let compat = vec!["/homez.3/alice".to_string()];
    let scan = scan_home(&scanner(&config), &limits, &home, &compat).unwrap();
    let got: Vec<_> = scan.findings.iter().map(located).collect();
    let want = vec![
        ("db.socket", "www/lib/db.php", 3),
        ("path.foreign", "www/lib/shared.php", 3),
        ("php.ereg", "www/old.php", 3),
        ("net.old_ip", "www/config.php", 3),
    ];
    let mut want: Vec<(String, String, u64)> = want
        .into_iter()
        .map(|(r, p, l)| (r.to_string(), p.to_string(), l))
        .collect();
    want.sort_by(|a, b| (&a.1, a.2).cmp(&(&b.1, b.2)));
    assert_eq!(got, want);
    assert!(scan
        .findings
        .iter()
        .all(|f| f.severity == Severity::Blocked));
    assert_eq!(scan.counts.files, 4);
    assert_eq!(scan.counts.skipped_media, 1);
    assert_eq!(scan.counts.skipped_binary, 1);
    assert_eq!(scan.counts.skipped_large, 1);

    // The stamp: the same without reading, changed by an edit.
    assert_eq!(stamp_home(&limits, &home).unwrap(), scan.stamp);
    std::thread::sleep(std::time::Duration::from_millis(20));
    write(
        &home,
        "www/old.php",
        b"<?php\n$r = preg_match('/^a/', $s);\n",
    );
    assert_ne!(stamp_home(&limits, &home).unwrap(), scan.stamp);

    // A home that does not exist is an error naming it.
    let e = scan_home(
        &scanner(&config),
        &limits,
        &dir.path().join("nobody"),
        &compat,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("nobody"), "{e}");
}

/// Debian's `wordpress` package (scripts/install-deps.sh). Its only findings are the
/// access rules of Akismet's `.htaccess` (`Deny from all` / `Require all denied`), which
/// nginx does not enforce: true findings, `warn`. Nothing blocks.
#[test]
fn debian_wordpress_blocks_only_on_what_was_planted_in_it() {
    let wp = Path::new("/usr/share/wordpress");
    if !wp.join("wp-includes").is_dir() {
        eprintln!("SKIPPED: Debian package wordpress is not installed (scripts/install-deps.sh)");
        return;
    }
    // A copy (symbolic links kept as links, as in the package), with two findings planted
    // at the end of wp-load.php: all that may block is what was planted.
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("wordpress");
    let cp = std::process::Command::new("cp")
        .arg("-a")
        .arg(wp)
        .arg(&home)
        .status()
        .unwrap();
    assert!(cp.success());
    let load = home.join("wp-load.php");
    let mut text = std::fs::read_to_string(&load).unwrap();
    let line = text.lines().count() as u64 + 1;
    text.push_str("$legacy = mysql_connect('10.20.3.3', 'wp', 'pw');\n");
    std::fs::write(&load, text).unwrap();

    let config = config();
    let limits = WalkLimits::from_config(&config);
    let scan = scan_home(
        &scanner(&config),
        &limits,
        &home,
        &[home.display().to_string()],
    )
    .unwrap();
    for f in &scan.findings {
        eprintln!("{} {:?} {} {}", f.rule, f.severity, f.at, f.found);
    }
    assert!(scan.counts.files > 1000, "{:?}", scan.counts);
    let blocked: Vec<_> = scan
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Blocked)
        .map(located)
        .collect();
    assert_eq!(
        blocked,
        [
            ("net.old_ip".to_string(), "wp-load.php".to_string(), line),
            ("php.mysql_ext".to_string(), "wp-load.php".to_string(), line),
        ]
    );
    for f in scan
        .findings
        .iter()
        .filter(|f| f.severity != Severity::Blocked)
    {
        let (rule, path, _) = located(f);
        assert_eq!(rule, "htaccess.access", "{f:?}");
        assert_eq!(path, "wp-content/plugins/akismet/.htaccess", "{f:?}");
    }
}
