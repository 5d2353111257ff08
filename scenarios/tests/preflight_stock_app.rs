//! Pre-flight (issue 21) on the lab's stock PHP application (`scenarios::php_app`): as the lab
//! writes it (DB host name served by the SQL proxy, absolute paths inside the site's own home)
//! it scans clean; pointed at an old DB IP nothing serves, or at another filer, it does not.

use migrator::preflight::code::{Scanner, Served};
use migrator::preflight::rules::RuleTable;
use migrator::preflight::walk::{scan_home, WalkLimits};
use migrator::preflight::PreflightConfig;
use scenarios::php_app::{config_php, index_php};
use std::path::Path;

fn site(home: &Path, abs_home: &str, db_host: &str, upload: &str) {
    std::fs::create_dir_all(home.join("www/uploads")).unwrap();
    std::fs::write(
        home.join("www/config.php"),
        config_php("site0001", db_host, "u1", "pw", "db1", upload),
    )
    .unwrap();
    std::fs::write(
        home.join("www/index.php"),
        index_php(&format!("{abs_home}/www/config.php")),
    )
    .unwrap();
}

#[test]
fn the_stock_php_app_scans_clean_and_its_breakage_is_found() {
    let config = PreflightConfig::parse(
        "old_networks = [\"10.30.0.0/16\"]\nold_domains = [\"dc1.example\"]\n",
        "test settings",
    )
    .unwrap();
    let mut served = Served::default();
    served.hosts.insert("sql1.dc1.example".into());
    served.ips.insert("10.30.0.10".parse().unwrap());
    let scanner = Scanner::new(&config, RuleTable::builtin().unwrap(), served).unwrap();
    let limits = WalkLimits::from_config(&config);
    let abs = "/homez.1/site0001";
    let compat = vec![abs.to_string()];
    let upload = format!("{abs}/www/uploads");

    for host in ["sql1.dc1.example", "10.30.0.10"] {
        let dir = tempfile::tempdir().unwrap();
        site(dir.path(), abs, host, &upload);
        let scan = scan_home(&scanner, &limits, dir.path(), &compat).unwrap();
        assert!(scan.findings.is_empty(), "{host}: {:#?}", scan.findings);
        assert_eq!(scan.counts.files, 2);
    }

    let dir = tempfile::tempdir().unwrap();
    site(
        dir.path(),
        abs,
        "10.30.0.99",
        "/homez.2/site0001/www/uploads",
    );
    let scan = scan_home(&scanner, &limits, dir.path(), &compat).unwrap();
    let got: Vec<(String, String)> = scan
        .findings
        .iter()
        .map(|f| (f.rule.clone(), f.at.to_string()))
        .collect();
    assert_eq!(
        got,
        [
            ("net.old_ip".to_string(), "www/config.php:3".to_string()),
            ("path.foreign".to_string(), "www/config.php:8".to_string()),
        ]
    );
}
