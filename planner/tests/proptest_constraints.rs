//! Property test: over random small inventories and settings, every plan respects every
//! constraint (groups whole, caps, budgets, windows, destination capacity, pins, exclusions)
//! and planning is deterministic.

mod common;

use common::{check_plan, db, site, Small};
use planner::model::Pin;
use planner::plan::Plan;
use planner::settings::WaveWindow;
use planner::window::Window;
use planner::write_inventory::SitesFormat;
use planner::{plan_dir, LoadOptions, Settings};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Case {
    inv: Small,
    settings: Settings,
}

fn windows() -> Vec<Window> {
    vec![
        Window::new("22:00", "06:00", "UTC"),
        Window::new("01:00", "05:00", "+01:00"),
        Window::new("12:00", "14:00", "UTC"),
        Window::new("20:00", "08:00", "-02:00"),
    ]
}

fn wave_windows() -> Vec<WaveWindow> {
    let w = |name: &str, start: &str, end: &str, tz: &str| WaveWindow {
        name: name.into(),
        start: start.into(),
        end: end.into(),
        tz: tz.into(),
    };
    vec![
        w("night", "22:00", "06:00", "UTC"),
        w("late", "00:00", "04:00", "UTC"),
        w("short", "02:00", "03:00", "UTC"),
    ]
}

prop_compose! {
    fn case()(
        n_sites in 1usize..50,
        n_dbs in 0usize..25,
        seeds in proptest::collection::vec(any::<u64>(), 50),
        dests in proptest::collection::vec((1u64..20_000, 1u64..40), 1..4),
        dsql in proptest::collection::vec((1u64..20_000, 1u32..30), 0..3),
        max_sites in 1u32..25,
        max_dbs in 1u32..12,
        bw in 1u64..10,
        headroom in 0u32..50,
        ramp in proptest::collection::vec(1u32..8, 0..3),
        nwin in 1usize..4,
        lookahead in 1u32..20,
    ) -> Case {
        let dbs: Vec<_> = (0..n_dbs).map(|d| db(&format!("db{d}"), 1 + (seeds[d % 50] % 500))).collect();
        let wins = windows();
        let mut sites = Vec::new();
        for i in 0..n_sites {
            let r = seeds[i % 50].rotate_left(i as u32 * 7) ^ (i as u64 * 0x9e37_79b9);
            let login = format!("l{}", r % (n_sites as u64 + 3));
            let mut used = Vec::new();
            if n_dbs > 0 {
                for k in 0..(r >> 8) % 3 {
                    let d = format!("db{}", (r >> (12 + k * 5)) % n_dbs as u64);
                    if !used.contains(&d) {
                        used.push(d);
                    }
                }
            }
            let refs: Vec<&str> = used.iter().map(|s| s.as_str()).collect();
            let bytes = 1 + ((r >> 20) % 100) * ((r >> 30) % 50 + 1);
            let mut s = site(&format!("s{i}"), &login, bytes, &refs);
            if (r >> 40).is_multiple_of(2) {
                s.filer = "2".into();
                s.cluster = "web2".into();
                s.home = format!("/homez.2/{login}");
            }
            if (r >> 42).is_multiple_of(4) {
                s.window = Some(wins[((r >> 44) % wins.len() as u64) as usize].clone());
            }
            match (r >> 48) % 16 {
                0 => s.pin = Some(Pin::Last),
                1 => s.pin = Some(Pin::Wave(1 + ((r >> 52) % 6) as u32)),
                2 => s.excluded = true,
                _ => {}
            }
            sites.push(s);
        }
        let settings = Settings {
            bandwidth: format!("{bw}B/s"),
            efficiency: 0.05,
            max_sites_per_wave: max_sites,
            max_databases_per_wave: max_dbs,
            headroom_percent: headroom as f64,
            canary_ramp: ramp,
            canary_max_bytes: 2000,
            windows: wave_windows().into_iter().take(nwin).collect(),
            lookahead,
            ..Settings::default()
        };
        Case { inv: Small { dest_clusters: dests, dest_sql: dsql, sites, dbs }, settings }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
    #[test]
    fn every_plan_respects_every_constraint(c in case()) {
        let t = tempfile::tempdir().unwrap();
        c.inv.write(t.path(), SitesFormat::Jsonl);
        let p1 = plan_dir(t.path(), &c.settings, &LoadOptions::default()).unwrap();
        let bytes = p1.to_bytes();
        let p2 = plan_dir(t.path(), &c.settings, &LoadOptions::default()).unwrap();
        prop_assert_eq!(&bytes, &p2.to_bytes());
        let plan: Plan = serde_json::from_slice(&bytes).unwrap();
        let dest: Vec<_> = c.inv.dest_clusters.iter().enumerate()
            .map(|(i, &(d, s))| (format!("new{i}"), d, s)).collect();
        let dest_sql: Vec<_> = c.inv.dest_sql.iter().enumerate()
            .map(|(i, &(d, s))| (format!("newsql{i}"), d, s as u64)).collect();
        check_plan(&plan, &c.inv.sites, &c.inv.dbs, &dest, &dest_sql, &c.settings);
        // A site is placed unless something stops it: nothing is lost silently.
        let accounted = plan.summary.sites_planned + plan.summary.sites_unplaced + plan.summary.sites_excluded;
        prop_assert_eq!(accounted, c.inv.sites.len() as u64);
    }
}
