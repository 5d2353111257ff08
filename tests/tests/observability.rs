//! The shipped monitoring (packaging/prometheus/hostmove-alerts.yml, packaging/grafana/
//! hostmove-dashboard.json) only queries metrics the components really export: every metric
//! name in an alert expression or a dashboard query is written by one of the renderers
//! (a renamed metric would silently turn an alert off). `promtool check rules` accepts the
//! rules; the dashboard is valid JSON with a query per panel.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Metric names (`migrator_…`, `sqlproxy_…`, `tunnel_…`) in `text`, histogram suffixes off.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let at_word = i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_');
        let rest = &text[i..];
        if at_word
            && ["migrator_", "sqlproxy_", "tunnel_"]
                .iter()
                .any(|p| rest.starts_with(p))
        {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            let mut name = &rest[..end];
            for suffix in ["_bucket", "_sum", "_count"] {
                if let Some(base) = name.strip_suffix(suffix) {
                    name = base;
                }
            }
            out.insert(name.to_string());
            i += end;
        } else {
            i += 1;
        }
    }
    out
}

/// Source of every `/metrics` renderer.
fn renderers() -> String {
    [
        "migrator/src/serve/metrics.rs",
        "sql-proxy/src/metrics.rs",
        "sql-proxy/src/limits.rs",
        "tunnel/src/textfile.rs",
    ]
    .iter()
    .map(|f| read(f))
    .collect()
}

fn assert_exported(what: &str, names: &BTreeSet<String>) {
    let src = renderers();
    assert!(!names.is_empty(), "{what}: no metric found");
    let missing: Vec<_> = names
        .iter()
        .filter(|n| !src.contains(&format!("\"{n}")) && !src.contains(&format!("{n} ")))
        .collect();
    assert!(
        missing.is_empty(),
        "{what} queries metrics no component exports: {missing:?}"
    );
}

#[test]
fn alert_rules_pass_promtool_and_query_exported_metrics() {
    let rules = root().join("packaging/prometheus/hostmove-alerts.yml");
    let report = testkit::promtool::check_rules(&rules).unwrap();
    assert!(report.contains("SUCCESS"), "{report}");
    let names = metric_names(&read("packaging/prometheus/hostmove-alerts.yml"));
    for must in [
        "migrator_route_mismatches",
        "migrator_write_unavailability_seconds",
        "migrator_sync_lag_seconds_max",
        "tunnel_healthy",
        "sqlproxy_held_queries_total",
    ] {
        assert!(names.contains(must), "the rules alert on {must}: {names:?}");
    }
    assert_exported("alert rules", &names);
}

#[test]
fn grafana_dashboard_is_json_and_queries_exported_metrics() {
    let text = read("packaging/grafana/hostmove-dashboard.json");
    let d: serde_json::Value = serde_json::from_str(&text).expect("dashboard JSON");
    let panels = d["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10);
    let mut exprs = String::new();
    for p in panels {
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {} has no query", p["title"]);
        for t in targets {
            exprs += t["expr"].as_str().expect("expr");
            exprs.push('\n');
        }
    }
    assert_exported("Grafana dashboard", &metric_names(&exprs));
}

#[test]
fn the_name_scanner_finds_names_and_drops_histogram_suffixes() {
    let n = metric_names("rate(sqlproxy_pause_seconds_bucket[5m]) + tunnel_healthy x_migrator_y");
    assert_eq!(
        n.into_iter().collect::<Vec<_>>(),
        ["sqlproxy_pause_seconds", "tunnel_healthy"]
    );
}
