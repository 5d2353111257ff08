//! Acceptance tests of the planner: groups never split, no capacity or budget exceeded, the
//! same seed and settings give a byte-identical plan, malformed rows name line and field.

mod common;

use common::{check_plan, db, site, Small};
use planner::generate::{generate, GenerateOptions};
use planner::plan::{Plan, Reason};
use planner::write_inventory::SitesFormat;
use planner::{load, plan_dir, InventoryError, LoadOptions, Settings};

/// `(id, disk bytes, slots)` of each destination.
type Dests = Vec<(String, u64, u64)>;

fn dest_of(inv: &planner::Inventory) -> (Dests, Dests) {
    let c = (0..inv.clusters.len())
        .filter(|&i| inv.cluster_is_destination(i))
        .map(|i| {
            (
                inv.clusters[i].id.clone(),
                inv.clusters[i].disk_bytes,
                inv.clusters[i].site_slots,
            )
        })
        .collect();
    let s = (0..inv.sql_servers.len())
        .filter(|&i| inv.sql_is_destination(i))
        .map(|i| {
            let q = &inv.sql_servers[i];
            (q.id.clone(), q.disk_bytes, q.max_databases as u64)
        })
        .collect();
    (c, s)
}

/// Plans `dir` and checks every constraint against the loaded inventory.
fn plan_and_check(dir: &std::path::Path, s: &Settings) -> (Plan, Vec<u8>) {
    let planned = plan_dir(dir, s, &LoadOptions::default()).unwrap();
    let bytes = planned.to_bytes();
    let plan: Plan = serde_json::from_slice(&bytes).unwrap();
    let inv = &planned.inventory;
    let sites: Vec<_> = (0..inv.site_count()).map(|i| inv.site(i)).collect();
    let dbs: Vec<_> = (0..inv.database_count()).map(|d| inv.database(d)).collect();
    let (dc, ds) = dest_of(inv);
    check_plan(&plan, &sites, &dbs, &dc, &ds, s);
    (plan, bytes)
}

#[test]
fn generated_inventory_plans_within_every_constraint_and_deterministically() {
    let t = tempfile::tempdir().unwrap();
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    let opts = GenerateOptions {
        sites: 20_000,
        seed: 7,
        format: SitesFormat::Jsonl,
    };
    generate(&a, &opts).unwrap();
    generate(&b, &opts).unwrap();
    for f in [
        "sites.jsonl",
        "databases.jsonl",
        "clusters.jsonl",
        "sql_servers.jsonl",
    ] {
        assert_eq!(
            std::fs::read(a.join(f)).unwrap(),
            std::fs::read(b.join(f)).unwrap(),
            "{f} differs"
        );
    }
    let s = Settings {
        max_sites_per_wave: 3000,
        max_databases_per_wave: 700,
        ..Settings::default()
    };
    let (plan, bytes1) = plan_and_check(&a, &s);
    let (_, bytes2) = plan_and_check(&b, &s);
    assert_eq!(
        bytes1, bytes2,
        "same seed and settings give a byte-identical plan"
    );
    assert!(plan.waves.len() >= 8, "{} waves", plan.waves.len());
    assert_eq!(plan.waves[0].sites, 10);
    assert_eq!(plan.waves[1].sites, 100);
    assert_eq!(plan.waves[2].sites, 1000);
    assert!(plan.summary.sites_planned > 19_900);
    assert!(
        plan.waves.iter().any(|w| !w.retires.sql_servers.is_empty()),
        "draining retires servers"
    );
    // The multi-site groups carry their links.
    assert!(plan
        .all_groups()
        .any(|(_, g)| g.links.iter().any(|l| l.via == "database")));

    // The same inventory as CSV gives the same waves.
    let c = t.path().join("c");
    generate(
        &c,
        &GenerateOptions {
            format: SitesFormat::Csv,
            ..opts
        },
    )
    .unwrap();
    let (plan_csv, _) = plan_and_check(&c, &s);
    assert_eq!(plan_csv.waves, plan.waves);
}

#[test]
fn a_group_sharing_a_database_never_splits() {
    let t = tempfile::tempdir().unwrap();
    // Sites a, b, c share db1 (a chain through db2 as well); caps make splitting tempting.
    let inv = Small {
        dest_clusters: vec![(1 << 40, 1000)],
        dest_sql: vec![(1 << 40, 100)],
        sites: vec![
            site("a", "la", 10, &["db1"]),
            site("x", "lx", 10, &[]),
            site("b", "lb", 10, &["db1", "db2"]),
            site("y", "ly", 10, &[]),
            site("c", "lc", 10, &["db2"]),
            site("d", "lc", 10, &[]), // shares c's login
        ],
        dbs: vec![db("db1", 5), db("db2", 5)],
    };
    inv.write(t.path(), SitesFormat::Jsonl);
    let s = Settings {
        max_sites_per_wave: 4,
        canary_ramp: vec![1],
        ..Settings::default()
    };
    let (plan, _) = plan_and_check(t.path(), &s);
    let (w, g) = plan.locate("a").unwrap();
    assert!(w.is_some());
    let mut members = g.sites.clone();
    members.sort();
    assert_eq!(members, ["a", "b", "c", "d"]);
    assert_eq!(plan.locate("d").unwrap().0, w);
    assert_eq!(g.databases, ["db1", "db2"]);
}

#[test]
fn destination_capacity_and_budget_leave_groups_unplaced_not_overfilled() {
    let t = tempfile::tempdir().unwrap();
    let mut sites = Vec::new();
    for i in 0..30 {
        sites.push(site(&format!("s{i}"), &format!("l{i}"), 100 + i, &[]));
    }
    sites.push(site("huge", "lh", 1 << 40, &[]));
    let inv = Small {
        dest_clusters: vec![(2000, 100), (1000, 5)],
        dest_sql: vec![],
        sites,
        dbs: vec![],
    };
    inv.write(t.path(), SitesFormat::Jsonl);
    let s = Settings {
        headroom_percent: 10.0,
        canary_ramp: vec![],
        bandwidth: "1B/s".into(),
        efficiency: 0.1,
        windows: vec![planner::settings::WaveWindow {
            name: "n".into(),
            start: "00:00".into(),
            end: "01:00".into(),
            tz: "UTC".into(),
        }],
        ..Settings::default()
    };
    // Budget: 1 B/s × 3600 s × 0.1 = 360 bytes per wave.
    let (plan, _) = plan_and_check(t.path(), &s);
    assert!(plan.waves.iter().all(|w| w.bytes <= 360));
    let (w, g) = plan.locate("huge").unwrap();
    assert_eq!(w, None);
    assert!(matches!(g.reason, Reason::Unplaced { .. }));
    // 1800 + 900 usable bytes: not all 30 sites (~3,400 bytes) fit.
    assert!(plan.summary.sites_unplaced > 1);
}

fn write_lines(dir: &std::path::Path, name: &str, lines: &[&str]) {
    std::fs::write(dir.join(name), lines.join("\n") + "\n").unwrap();
}

#[test]
fn malformed_rows_name_file_line_and_field() {
    let t = tempfile::tempdir().unwrap();
    let inv = Small {
        dest_clusters: vec![(1 << 40, 10)],
        dest_sql: vec![(1 << 40, 10)],
        sites: vec![site("a", "la", 1, &["db1"])],
        dbs: vec![db("db1", 1)],
    };
    inv.write(t.path(), SitesFormat::Jsonl);
    let good = std::fs::read_to_string(t.path().join("sites.jsonl")).unwrap();
    let good = good.trim();
    write_lines(
        t.path(),
        "sites.jsonl",
        &[
            good,
            &good
                .replace("\"bytes\":1", "\"bytes\":\"big\"")
                .replace("\"a\"", "\"b\"")
                .replace("a.example", "b.example"),
            &good
                .replace("\"id\":\"a\"", "\"id\":\"c\"")
                .replace("a.example", "c.example")
                .replace("\"db1\"", "\"nope\""),
            "{not json",
            &good
                .replace("/homez.1/la", "/home/la")
                .replace("\"id\":\"a\"", "\"id\":\"e\"")
                .replace("a.example", "e.example"),
            "",
            good,
        ],
    );
    let err = load(t.path(), &LoadOptions::default()).unwrap_err();
    let InventoryError::Invalid { errors, truncated } = err else {
        panic!("expected row errors, got {err}")
    };
    assert!(!truncated);
    let got: Vec<(u64, Option<&str>)> = errors
        .iter()
        .map(|e| (e.line, e.field.as_deref()))
        .collect();
    assert_eq!(
        got,
        vec![
            (2, Some("bytes")),
            (3, Some("databases")),
            (4, None),
            (5, Some("home"))
        ],
        "{errors:#?}"
    );
    assert!(errors.iter().all(|e| e.file == "sites.jsonl"));
    assert!(errors[1].message.contains("nope"));
    let shown = InventoryError::Invalid {
        errors: errors.clone(),
        truncated: false,
    }
    .to_string();
    assert!(shown.contains("sites.jsonl:2: field `bytes`"), "{shown}");

    // Duplicates are reported at the second occurrence, naming the first; and the error limit.
    write_lines(t.path(), "sites.jsonl", &[good, good, good]);
    let err = load(t.path(), &LoadOptions { max_errors: 2 }).unwrap_err();
    let InventoryError::Invalid { errors, .. } = err else {
        panic!()
    };
    assert_eq!(errors[0].line, 2);
    assert_eq!(errors[0].field.as_deref(), Some("id"));
    assert!(errors[0].message.contains("first at line 1"));

    // Limit: stop after N problems.
    let bad: Vec<String> = (0..50).map(|_| "{".to_string()).collect();
    let bad: Vec<&str> = bad.iter().map(|s| s.as_str()).collect();
    write_lines(t.path(), "sites.jsonl", &bad);
    let err = load(t.path(), &LoadOptions { max_errors: 5 }).unwrap_err();
    let InventoryError::Invalid { errors, truncated } = err else {
        panic!()
    };
    assert_eq!(errors.len(), 5);
    assert!(truncated);

    // A database on an unknown server, and a bad window time zone.
    write_lines(t.path(), "sites.jsonl", &[good]);
    write_lines(
        t.path(),
        "databases.jsonl",
        &[r#"{"name":"db1","user":"u","sql_server":"sql9","bytes":1}"#],
    );
    let err = load(t.path(), &LoadOptions::default()).unwrap_err();
    let InventoryError::Invalid { errors, .. } = err else {
        panic!()
    };
    assert_eq!(
        (
            errors[0].file.as_str(),
            errors[0].line,
            errors[0].field.as_deref()
        ),
        ("databases.jsonl", 1, Some("sql_server"))
    );
}

#[test]
fn malformed_csv_rows_name_line_and_column() {
    let t = tempfile::tempdir().unwrap();
    let inv = Small {
        dest_clusters: vec![(1 << 40, 10)],
        dest_sql: vec![],
        sites: vec![site("a", "la", 1, &[])],
        dbs: vec![],
    };
    inv.write(t.path(), SitesFormat::Csv);
    let text = std::fs::read_to_string(t.path().join("sites.csv")).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines.push(
        lines[1]
            .replace("a,la,a.example", "b,lb,b.example")
            .replace("/homez.1/la", "/homez.1/lb")
            .replace(",1,10,", ",-1,10,"),
    );
    lines.push(
        lines[1]
            .replace("a,la,a.example", "c,lc,c.example")
            .replace("/homez.1/la", "/homez.1/lc")
            .replace("true,1,,,,,,", "true,1,,22:00,06:00,Mars/Olympus,,"),
    );
    std::fs::write(t.path().join("sites.csv"), lines.join("\n")).unwrap();
    let err = load(t.path(), &LoadOptions::default()).unwrap_err();
    let InventoryError::Invalid { errors, .. } = err else {
        panic!("{err}")
    };
    let got: Vec<(u64, Option<&str>)> = errors
        .iter()
        .map(|e| (e.line, e.field.as_deref()))
        .collect();
    assert_eq!(
        got,
        vec![(3, Some("bytes")), (4, Some("window.tz"))],
        "{errors:#?}"
    );
}

#[test]
fn pins_and_exclusions_from_settings() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("inv");
    generate(
        &dir,
        &GenerateOptions {
            sites: 3000,
            seed: 1,
            format: SitesFormat::Jsonl,
        },
    )
    .unwrap();
    let last: Vec<String> = (100..140).map(|i| format!("s{i:07}")).collect();
    let s = Settings {
        max_sites_per_wave: 500,
        pin_last: last.clone(),
        pin_wave: [("s0002999".to_string(), 2)].into_iter().collect(),
        exclude: vec!["s0000007".into()],
        ..Settings::default()
    };
    let (plan, _) = plan_and_check(&dir, &s);
    // Final waves hold exactly the pinned sites (more than one when windows differ).
    for id in &last {
        let w = plan.locate(id).unwrap().0.unwrap();
        assert_eq!(
            plan.waves[w as usize - 1].kind,
            planner::waves::WaveKind::Final,
            "{id} pinned last"
        );
    }
    let in_final: u64 = plan
        .waves
        .iter()
        .filter(|w| w.kind == planner::waves::WaveKind::Final)
        .map(|w| w.sites)
        .sum();
    assert!(in_final >= 40, "groups move whole: {in_final}");
    assert_eq!(plan.locate("s0002999").unwrap().0, Some(2));
    assert_eq!(plan.locate("s0000007").unwrap().0, None);
    // Unknown ids in pins are refused, naming the setting.
    let bad = Settings {
        pin_last: vec!["nope".into()],
        ..Settings::default()
    };
    let err = plan_dir(&dir, &bad, &LoadOptions::default()).err().unwrap();
    assert!(
        err.to_string().contains("pin_last") && err.to_string().contains("nope"),
        "{err}"
    );
    // explain and diff read the plan back.
    let plain = plan_dir(
        &dir,
        &Settings {
            max_sites_per_wave: 500,
            ..Settings::default()
        },
        &LoadOptions::default(),
    )
    .unwrap();
    let plain: Plan = serde_json::from_slice(&plain.to_bytes()).unwrap();
    let d = planner::explain::diff(&plain, &plan);
    assert!(d.moved.iter().any(|m| m.site == last[0]));
    assert!(d.settings_changed.contains(&"pin_last".to_string()));
    let e = planner::explain::explain(&plan, &last[0]).unwrap();
    assert!(
        e.text
            .iter()
            .any(|l| l.contains("pinned to the final wave")),
        "{:?}",
        e.text
    );
}

/// Issue 18 (10): sizes near `u64::MAX` used to wrap the group, wave and plan byte totals (or
/// panic in a debug build); the inventory is now refused at the row where the total overflows.
#[test]
fn byte_totals_near_u64_max_are_refused_naming_the_row_not_wrapped() {
    let t = tempfile::tempdir().unwrap();
    let inv = Small {
        dest_clusters: vec![(u64::MAX, 100)],
        dest_sql: vec![(u64::MAX, 100)],
        sites: vec![
            site("a", "la", u64::MAX - 10, &["db1"]),
            site("b", "lb", 5, &[]),
            site("c", "lc", u64::MAX / 2, &[]),
        ],
        dbs: vec![db("db1", 20)],
    };
    inv.write(t.path(), SitesFormat::Jsonl);
    let err = load(t.path(), &LoadOptions::default()).unwrap_err();
    let InventoryError::Invalid { errors, .. } = &err else {
        panic!("expected a row error, got {err}");
    };
    // db1 (20) + a (MAX - 10) passes u64::MAX at a, on line 1 of sites.jsonl.
    assert_eq!(errors.len(), 1, "{err}");
    assert_eq!(errors[0].file, "sites.jsonl");
    assert_eq!(errors[0].line, 1);
    assert_eq!(errors[0].field.as_deref(), Some("bytes"));

    // Just under the limit: loads, and the plan's totals are exact.
    let inv = Small {
        sites: vec![
            site("a", "la", u64::MAX - 30, &["db1"]),
            site("b", "lb", 5, &[]),
        ],
        ..inv
    };
    inv.write(t.path(), SitesFormat::Jsonl);
    let s = Settings {
        canary_ramp: vec![],
        ..Settings::default()
    };
    let (plan, _) = plan_and_check(t.path(), &s);
    let (_, g) = plan.locate("a").unwrap();
    assert_eq!(g.bytes, u64::MAX - 10);
    assert_eq!(plan.inventory.bytes, u64::MAX - 5);
}
