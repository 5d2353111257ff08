//! The cases every journal backend must pass, written against the trait only.
//!
//! `tests.rs` runs them on SQLite; `migrator/tests/journal_backends.rs` includes this file
//! (`#[path]`, its crate root importing what `super::` names here) and runs them on a real
//! MariaDB server. Each case gets a fresh, not yet created store from its [`Backend`].

use super::{JournalError, JournalExt, JournalStore, SiteState, StepOutcome, StepStatus};
use serde::{Deserialize, Serialize};
use std::sync::Barrier;

/// One fresh store for one case.
pub trait Backend: Sync {
    /// A new connection to the case's store (created by the first open).
    fn open(&self) -> Box<dyn JournalStore + Send>;
    /// Overwrites a site's stored state text behind the journal's back (a damaged journal, or
    /// one written by a newer migrator).
    fn write_raw_state(&self, site: &str, state: &str);
}

pub type Case = fn(&dyn Backend);

/// Every case, by name.
pub const CASES: &[(&str, Case)] = &[
    ("plan_and_site_states", plan_and_site_states),
    (
        "steps_and_checkpoints_survive_reopen",
        steps_and_checkpoints_survive_reopen,
    ),
    ("failed_and_unknown_steps", failed_and_unknown_steps),
    (
        "bad_checkpoint_json_names_the_key",
        bad_checkpoint_json_names_the_key,
    ),
    (
        "checkpoints_are_exact_and_scoped",
        checkpoints_are_exact_and_scoped,
    ),
    ("swap_is_compare_and_set", swap_is_compare_and_set),
    ("caches_hold_bytes", caches_hold_bytes),
    ("unknown_state_names_it", unknown_state_names_it),
    ("one_of_two_racing_swaps_wins", one_of_two_racing_swaps_wins),
    (
        "swap_counter_loses_no_increment",
        swap_counter_loses_no_increment,
    ),
    (
        "racing_openers_create_one_store",
        racing_openers_create_one_store,
    ),
];

/// Runs every case, each on a store from `fresh`, saying which one runs.
pub fn run_all<B: Backend>(kind: &str, fresh: impl Fn(&str) -> B) {
    for (name, case) in CASES {
        eprintln!("journal case {name} on {kind}");
        case(&fresh(name));
    }
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Progress {
    table: String,
    last_pk: Vec<String>,
}

pub fn plan_and_site_states(b: &dyn Backend) {
    let mut j = b.open();
    assert_eq!(j.plan().unwrap(), None);
    j.set_plan("plan.json@v1").unwrap();
    j.set_plan("plan.json@v2").unwrap();
    assert_eq!(j.plan().unwrap().as_deref(), Some("plan.json@v2"));
    assert_eq!(j.site_state("shop").unwrap(), None);
    for st in SiteState::ALL {
        j.set_site_state("shop", st).unwrap();
        assert_eq!(j.site_state("shop").unwrap(), Some(st));
    }
    // Names are exact: case, trailing spaces and non-ASCII make different sites.
    j.set_site_state("Shop", SiteState::Live).unwrap();
    j.set_site_state("shop ", SiteState::Synced).unwrap();
    j.set_site_state("shöp", SiteState::Frozen).unwrap();
    j.set_site_state("blog", SiteState::Prepared).unwrap();
    let sites = j.sites().unwrap();
    let want = [
        ("Shop", SiteState::Live),
        ("blog", SiteState::Prepared),
        ("shop", SiteState::RolledBack),
        ("shop ", SiteState::Synced),
        ("shöp", SiteState::Frozen),
    ];
    let got: Vec<(&str, SiteState)> = sites.iter().map(|(s, st)| (s.as_str(), *st)).collect();
    assert_eq!(got, want, "sites in byte order");
}

pub fn steps_and_checkpoints_survive_reopen(b: &dyn Backend) {
    let (a, killed) = {
        let mut j = b.open();
        j.set_plan("plan.json@v3").unwrap();
        j.set_site_state("shop", SiteState::Prepared).unwrap();
        let a = j.begin_step("shop", "sync-files").unwrap();
        j.finish_step(
            a,
            &StepOutcome {
                bytes: 1 << 40,
                checksum: Some("abc".into()),
            },
        )
        .unwrap();
        let killed = j.begin_step("shop", "copy-db").unwrap();
        j.put_checkpoint(
            "copy-db:shop",
            "orders",
            &Progress {
                table: "orders".into(),
                last_pk: vec!["17".into()],
            },
        )
        .unwrap();
        // `killed` is never finished: as if the process died during the step.
        (a, killed)
    };
    let j = b.open();
    assert_eq!(j.plan().unwrap().as_deref(), Some("plan.json@v3"));
    assert_eq!(j.site_state("shop").unwrap(), Some(SiteState::Prepared));
    assert_eq!(j.site_state("other").unwrap(), None);
    let steps = j.steps("shop").unwrap();
    assert_eq!(steps.len(), 2);
    assert_eq!((steps[0].id, steps[1].id), (a, killed));
    assert!(a < killed, "step ids grow");
    assert_eq!(steps[0].site, "shop");
    assert_eq!(steps[0].phase, "sync-files");
    assert_eq!(steps[0].status, StepStatus::Done);
    assert_eq!(steps[0].bytes, 1 << 40);
    assert_eq!(steps[0].checksum.as_deref(), Some("abc"));
    assert!(steps[0].ended_ms.unwrap() >= steps[0].started_ms);
    assert_eq!(steps[1].status, StepStatus::Started);
    assert_eq!(steps[1].ended_ms, None);
    assert_eq!(steps[1].error, None);
    let p: Progress = j.checkpoint("copy-db:shop", "orders").unwrap().unwrap();
    assert_eq!(p.last_pk, vec!["17".to_string()]);
    assert!(j.steps("other").unwrap().is_empty());
}

pub fn failed_and_unknown_steps(b: &dyn Backend) {
    let mut j = b.open();
    let id = j.begin_step("s", "verify").unwrap();
    j.fail_step(id, "table t differs: «ü» 🙂").unwrap();
    let steps = j.steps("s").unwrap();
    assert_eq!(steps[0].status, StepStatus::Failed);
    assert_eq!(steps[0].error.as_deref(), Some("table t differs: «ü» 🙂"));
    // Finishing the same step again with the same outcome still finds it.
    j.finish_step(id, &StepOutcome::default()).unwrap();
    j.finish_step(id, &StepOutcome::default()).unwrap();
    for err in [
        j.finish_step(999_999, &StepOutcome::default()).unwrap_err(),
        j.fail_step(999_999, "x").unwrap_err(),
    ] {
        assert!(
            matches!(err, JournalError::NoSuchStep { id: 999_999, .. }),
            "{err}"
        );
        assert!(err.to_string().contains(j.name()), "names the store: {err}");
    }
}

pub fn bad_checkpoint_json_names_the_key(b: &dyn Backend) {
    let mut j = b.open();
    j.put_checkpoint_raw("scope", "k", "{\"nope\": 1}").unwrap();
    let err = j.checkpoint::<Progress>("scope", "k").unwrap_err();
    assert!(
        matches!(err, JournalError::Checkpoint { ref key, .. } if key == "k"),
        "{err}"
    );
    assert!(err.to_string().contains(j.name()), "{err}");
    j.clear_checkpoints("scope").unwrap();
    assert!(j.checkpoint::<Progress>("scope", "k").unwrap().is_none());
}

pub fn checkpoints_are_exact_and_scoped(b: &dyn Backend) {
    let mut j = b.open();
    for (k, v) in [("orders", "1"), ("Orders", "2"), ("orders ", "3")] {
        j.put_checkpoint_raw("copy-db:a", k, v).unwrap();
    }
    j.put_checkpoint_raw("copy-db:a", "orders", "4").unwrap();
    j.put_checkpoint_raw("copy-db:b", "orders", "5").unwrap();
    let long_key = "k".repeat(1000);
    let big = format!("\"{}\"", "ü🙂 ".repeat(100_000));
    j.put_checkpoint_raw("big", &long_key, &big).unwrap();
    let a = j.checkpoints("copy-db:a").unwrap();
    let want = [("Orders", "2"), ("orders", "4"), ("orders ", "3")];
    let got: Vec<(&str, &str)> = a.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(got, want);
    assert_eq!(
        j.checkpoint_raw("big", &long_key).unwrap().as_deref(),
        Some(big.as_str())
    );
    assert_eq!(j.checkpoint_raw("copy-db:a", "ORDERS").unwrap(), None);
    j.clear_checkpoints("copy-db:a").unwrap();
    assert!(j.checkpoints("copy-db:a").unwrap().is_empty());
    assert_eq!(
        j.checkpoints("copy-db:b").unwrap(),
        vec![("orders".to_string(), "5".to_string())]
    );
}

pub fn swap_is_compare_and_set(b: &dyn Backend) {
    let mut j = b.open();
    let get = |j: &dyn JournalStore| j.checkpoint_raw("lease", "shop").unwrap();
    assert!(j.swap_checkpoint_raw("lease", "shop", None, "abc").unwrap());
    assert!(!j.swap_checkpoint_raw("lease", "shop", None, "x").unwrap());
    assert_eq!(get(&*j).as_deref(), Some("abc"));
    for wrong in ["x", "ABC", "abc ", "ab", ""] {
        assert!(
            !j.swap_checkpoint_raw("lease", "shop", Some(wrong), "x")
                .unwrap(),
            "expected {wrong:?} must not match \"abc\""
        );
    }
    assert_eq!(get(&*j).as_deref(), Some("abc"));
    // Storing the value it already holds is a successful swap.
    assert!(j
        .swap_checkpoint_raw("lease", "shop", Some("abc"), "abc")
        .unwrap());
    assert!(j
        .swap_checkpoint_raw("lease", "shop", Some("abc"), "déf")
        .unwrap());
    assert_eq!(get(&*j).as_deref(), Some("déf"));
    assert!(!j
        .swap_checkpoint_raw("lease", "other", Some("déf"), "x")
        .unwrap());
    assert_eq!(j.checkpoint_raw("lease", "other").unwrap(), None);
}

pub fn caches_hold_bytes(b: &dyn Backend) {
    let mut j = b.open();
    assert_eq!(j.cache("m").unwrap(), None);
    j.put_cache("m", &[0, 255, 1, 2, 0xc3]).unwrap();
    assert_eq!(j.cache("m").unwrap(), Some(vec![0, 255, 1, 2, 0xc3]));
    j.put_cache("m", &[]).unwrap();
    assert_eq!(j.cache("m").unwrap(), Some(vec![]));
    let big: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
    j.put_cache("M", &big).unwrap();
    drop(j);
    let mut j = b.open();
    assert_eq!(j.cache("M").unwrap().as_deref(), Some(&big[..]));
    j.drop_cache("m").unwrap();
    j.drop_cache("never there").unwrap();
    assert_eq!(j.cache("m").unwrap(), None);
    assert!(j.cache("M").unwrap().is_some());
}

/// The stored states are their names; a name this migrator does not know is an error naming
/// the store, the site and the value, never a silent default.
pub fn unknown_state_names_it(b: &dyn Backend) {
    let mut j = b.open();
    j.set_site_state("shop", SiteState::RolledBack).unwrap();
    b.write_raw_state("shop", "teleported");
    for err in [j.site_state("shop").unwrap_err(), j.sites().unwrap_err()] {
        let text = err.to_string();
        assert!(
            matches!(&err, JournalError::UnknownState { site, state, .. }
                if site == "shop" && state == "teleported"),
            "{text}"
        );
        assert!(
            text.contains("site shop has unknown state \"teleported\""),
            "{text}"
        );
        assert!(text.contains(j.name()), "{text}");
    }
}

/// Two connections swap the same key at the same moment: exactly one wins, and the stored
/// value is the winner's.
pub fn one_of_two_racing_swaps_wins(b: &dyn Backend) {
    let mut x = b.open();
    let mut y = b.open();
    for round in 0..15 {
        let key = format!("k{round}");
        let mut expected: Option<String> = None;
        for step in 0..3 {
            let barrier = Barrier::new(2);
            let (vx, vy) = (format!("x{step}"), format!("y{step}"));
            let exp = expected.as_deref();
            let (wx, wy) = std::thread::scope(|s| {
                let tx = s.spawn(|| {
                    barrier.wait();
                    x.swap_checkpoint_raw("race", &key, exp, &vx).unwrap()
                });
                let ty = s.spawn(|| {
                    barrier.wait();
                    y.swap_checkpoint_raw("race", &key, exp, &vy).unwrap()
                });
                (tx.join().unwrap(), ty.join().unwrap())
            });
            assert!(wx ^ wy, "round {round} step {step}: x won {wx}, y won {wy}");
            let winner = if wx { vx } else { vy };
            let stored = x.checkpoint_raw("race", &key).unwrap();
            assert_eq!(stored.as_deref(), Some(winner.as_str()));
            expected = Some(winner);
        }
    }
}

/// Read, add one, swap; retry on a lost race. Two connections doing that concurrently never
/// lose an increment.
pub fn swap_counter_loses_no_increment(b: &dyn Backend) {
    const EACH: u32 = 40;
    let bump = |j: &mut Box<dyn JournalStore + Send>| {
        for _ in 0..EACH {
            loop {
                let cur = j.checkpoint_raw("counter", "n").unwrap();
                let n: u32 = cur.as_deref().map_or(0, |s| s.parse().unwrap());
                let next = (n + 1).to_string();
                if j.swap_checkpoint_raw("counter", "n", cur.as_deref(), &next)
                    .unwrap()
                {
                    break;
                }
            }
        }
    };
    let (mut x, mut y) = (b.open(), b.open());
    std::thread::scope(|s| {
        s.spawn(|| bump(&mut x));
        s.spawn(|| bump(&mut y));
    });
    let n = x.checkpoint_raw("counter", "n").unwrap();
    assert_eq!(n, Some((2 * EACH).to_string()));
}

/// Several processes start on a journal that does not exist yet: every one opens it, and they
/// all write to the same store.
pub fn racing_openers_create_one_store(b: &dyn Backend) {
    const N: usize = 4;
    let barrier = Barrier::new(N);
    let ids: Vec<i64> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..N)
            .map(|i| {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    let mut j = b.open();
                    j.begin_step("s", &format!("p{i}")).unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut unique = ids.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), N, "distinct step ids: {ids:?}");
    assert_eq!(b.open().steps("s").unwrap().len(), N);
}
