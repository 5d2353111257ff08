//! The shipped systemd unit (`dist/sql-proxy.service`): restarted always, never runs
//! `routes init`, writes only to the store's directory, no privileges; and `systemd-analyze
//! verify` accepts it where systemd is installed.

use std::collections::BTreeMap;
use std::path::PathBuf;

fn unit_text() -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("dist/sql-proxy.service");
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// `Key=value` lines of the unit (comments skipped); repeated keys keep every value.
fn directives(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.starts_with('[') {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            out.entry(k.to_string()).or_default().push(v.to_string());
        }
    }
    out
}

#[test]
fn unit_restarts_always_and_is_locked_down() {
    let d = directives(&unit_text());
    let one = |k: &str| -> &str {
        let v = d.get(k).unwrap_or_else(|| panic!("{k}= missing"));
        assert_eq!(v.len(), 1, "{k}= given {} times", v.len());
        &v[0]
    };
    assert_eq!(one("Restart"), "always");
    assert_eq!(one("RestartSec"), "1s");
    let exec = one("ExecStart");
    assert!(
        exec.ends_with("sql-proxy run --config /etc/sql-proxy/proxy.toml"),
        "{exec}"
    );
    assert!(
        !d.values().flatten().any(|v| v.contains("routes init")),
        "a start must never create the route store"
    );
    assert_eq!(one("ProtectSystem"), "strict");
    // The default store (routes.sqlite beside users_file) and its -wal/-shm/.lock companions.
    assert_eq!(one("ReadWritePaths"), "/var/lib/sql-proxy");
    assert_eq!(one("StateDirectory"), "sql-proxy");
    assert_eq!(one("NoNewPrivileges"), "yes");
    assert_eq!(one("PrivateTmp"), "yes");
    // 3306 and 9090 are above 1024: no capability at all.
    assert_eq!(one("CapabilityBoundingSet"), "");
    assert_eq!(one("AmbientCapabilities"), "");
    assert_eq!(one("User"), "sql-proxy");
    assert!(one("StartLimitBurst").parse::<u32>().unwrap() >= 3);
}

#[test]
fn systemd_analyze_verify_accepts_the_unit() {
    let Ok(out) = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
    else {
        eprintln!("skipped: systemd-analyze is not installed");
        return;
    };
    assert!(out.status.success());
    // verify checks that ExecStart's binary exists: point it at the one cargo built.
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("sql-proxy.service");
    let text = unit_text().replace(
        "/usr/local/bin/sql-proxy run",
        &format!("{} run", env!("CARGO_BIN_EXE_sql-proxy")),
    );
    std::fs::write(&unit, text).unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    // Only what it says about our unit (other units of the host are not ours to judge).
    let ours: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("sql-proxy.service"))
        .collect();
    assert!(out.status.success() && ours.is_empty(), "{err}");
}
