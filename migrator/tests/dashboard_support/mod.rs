//! Helpers of the dashboard tests: the loopback HTTP client and WebDriver session of
//! `testkit::webdriver` (re-exported), a child guard, and a journal with a wave in it.

#![allow(dead_code)]

pub use testkit::webdriver::*;

/// A child process killed (by its PID) and reaped on drop.
pub struct Child(pub std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    // testkit's: never the same port twice in one process (two dashboards started before
    // either binds could otherwise be given one port).
    testkit::free_port().unwrap()
}

/// Writes a plan file with `waves` (number, sites), in the planner's format (only the fields
/// the dashboard reads are filled).
pub fn write_plan(path: &std::path::Path, waves: &[(u32, Vec<String>)]) {
    let waves: Vec<serde_json::Value> = waves
        .iter()
        .map(|(n, sites)| {
            serde_json::json!({
                "number": n, "kind": "regular", "window_utc": "22:00-06:00 UTC",
                "bytes": 0, "est_seconds": 0.0,
                "groups": sites.iter().map(|s| serde_json::json!({ "sites": [s] }))
                    .collect::<Vec<_>>(),
            })
        })
        .collect();
    let plan = serde_json::json!({
        "format": planner::PLAN_FORMAT, "version": planner::PLAN_VERSION, "waves": waves,
    });
    std::fs::write(path, plan.to_string()).unwrap();
}

/// Moves `site` through `phases` in the journal as the engine does (step before and after,
/// state on success); a phase named `!x` fails with an error.
pub fn journal_site(j: &mut migrator::journal::SqliteJournal, site: &str, phases: &[&str]) {
    use migrator::journal::{JournalStore, SiteState, StepOutcome};
    for p in phases {
        if let Some(p) = p.strip_prefix('!') {
            let id = j.begin_step(site, p).unwrap();
            j.fail_step(id, &format!("{p} failed on purpose")).unwrap();
            j.set_site_state(site, SiteState::Failed).unwrap();
            continue;
        }
        let id = j.begin_step(site, p).unwrap();
        j.finish_step(
            id,
            &StepOutcome {
                bytes: 1000,
                checksum: None,
            },
        )
        .unwrap();
        let st = match *p {
            "prepare" => SiteState::Prepared,
            "sync" => SiteState::Synced,
            "freeze" => SiteState::Frozen,
            "final-sync" => SiteState::FinalSynced,
            "verify" => SiteState::Verified,
            "switch" => SiteState::Switched,
            "unfreeze" => {
                j.put_checkpoint_raw("cutover", &format!("{site}.freeze_ms"), "420.0")
                    .unwrap();
                SiteState::Live
            }
            _ => continue,
        };
        j.set_site_state(site, st).unwrap();
    }
}

pub const ALL_PHASES: [&str; 7] = [
    "prepare",
    "sync",
    "freeze",
    "final-sync",
    "verify",
    "switch",
    "unfreeze",
];

/// A route check that found `shop_db` of site `shop` (live) served from the old side.
pub fn route_mismatch_report() -> migrator::route_check::RouteReport {
    use migrator::route_check::{Mismatch, Problem, RouteReport};
    RouteReport {
        checked_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64,
        sites: 1,
        databases: 1,
        mismatches: vec![Mismatch {
            site: "shop".into(),
            database: "shop_db".into(),
            journal_state: migrator::journal::SiteState::Live,
            expected_side: "new".into(),
            proxy_side: "old".into(),
            proxy_mode: migrator::systems::Mode::Open,
            epoch: Some(7),
            sessions: Some(2),
            problem: Problem::WrongSide,
            proxy: "127.0.0.1:9".parse().unwrap(),
            not_repairable: None,
        }],
        ..Default::default()
    }
}
