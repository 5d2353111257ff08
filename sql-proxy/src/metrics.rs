//! `GET /metrics`: the proxy's figures in Prometheus text format 0.0.4.
//!
//! Conventions (checked by `promtool check metrics` in `tests/metrics_promtool.rs`): HELP and
//! TYPE on every metric, `_total` counters, durations as histograms in seconds, base units.
//! Label cardinality is bounded: one proxy answers for up to 2,500 databases and a platform
//! has 800,000, so per-database series are opt-in (`[admin] per_database_metrics = true`); by
//! default commands, errors, holds and sessions are labelled by `side` only (`old`/`new`),
//! and pauses are one histogram. The one per-database series always exported,
//! `sqlproxy_held_bytes_database`, exists only while a database is paused (a wave's freeze
//! concurrency bounds it).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use crate::route::{Counters, Shared};

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

type Get = fn(&Counters) -> u64;

const SERIES: [(&str, &str, &str, Get); 5] = [
    (
        "sqlproxy_queries_total",
        "counter",
        "Commands relayed",
        |c| c.queries.load(Ordering::Relaxed),
    ),
    (
        "sqlproxy_errors_total",
        "counter",
        "Commands answered with an error",
        |c| c.errors.load(Ordering::Relaxed),
    ),
    (
        "sqlproxy_held_queries_total",
        "counter",
        "Commands held while paused",
        |c| c.held.load(Ordering::Relaxed),
    ),
    (
        "sqlproxy_hold_timeouts_total",
        "counter",
        "Held commands that hit their deadline",
        |c| c.hold_timeouts.load(Ordering::Relaxed),
    ),
    ("sqlproxy_sessions", "gauge", "Open client sessions", |c| {
        c.sessions.load(Ordering::Relaxed)
    }),
];

/// Everything `/metrics` answers.
pub fn render(shared: &Shared, per_database: bool) -> String {
    let mut out = String::new();
    let counters = shared.counters.lock().expect("counters lock").clone();
    let mut keys: Vec<_> = counters.keys().cloned().collect();
    keys.sort();
    for (name, kind, help, get) in SERIES {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        if per_database {
            for k in &keys {
                let _ = writeln!(
                    out,
                    "{name}{{database=\"{}\",side=\"{}\"}} {}",
                    esc(&k.0),
                    esc(&k.1),
                    get(&counters[k])
                );
            }
        } else {
            let mut by_side: BTreeMap<&str, u64> = BTreeMap::new();
            for k in &keys {
                *by_side.entry(k.1.as_str()).or_default() += get(&counters[k]);
            }
            for (side, v) in by_side {
                let _ = writeln!(out, "{name}{{side=\"{}\"}} {v}", esc(side));
            }
        }
    }
    shared.pause_seconds.write(
        &mut out,
        "sqlproxy_pause_seconds",
        "Pauses seen by clients during switches, all databases",
    );
    if per_database {
        per_database_pauses(shared, &mut out);
    }
    let _ = writeln!(
        out,
        "# HELP sqlproxy_held_bytes Bytes of commands held (paused databases), all databases\n\
         # TYPE sqlproxy_held_bytes gauge\nsqlproxy_held_bytes {}",
        shared.held_bytes.load(Ordering::Relaxed)
    );
    let sc = &shared.store_counters;
    let _ = writeln!(
        out,
        "# HELP sqlproxy_route_store_commits_total Route changes committed to the route store\n\
         # TYPE sqlproxy_route_store_commits_total counter\n\
         sqlproxy_route_store_commits_total {}\n\
         # HELP sqlproxy_route_store_errors_total Route changes refused because the store could not commit them\n\
         # TYPE sqlproxy_route_store_errors_total counter\n\
         sqlproxy_route_store_errors_total {}",
        sc.commits.load(Ordering::Relaxed),
        sc.errors.load(Ordering::Relaxed),
    );
    sc.commit_seconds.write(
        &mut out,
        "sqlproxy_route_store_commit_seconds",
        "Time to commit one route change (fsync or shared store round trip included)",
    );
    if let Some(f) = &shared.fleet {
        let held: u64 = counters
            .values()
            .map(|c| c.held.load(Ordering::Relaxed))
            .sum();
        let _ = writeln!(
            out,
            "# HELP sqlproxy_fleet_lease_age_seconds Since the start of the last round that renewed the lease and read the shared table\n\
             # TYPE sqlproxy_fleet_lease_age_seconds gauge\n\
             sqlproxy_fleet_lease_age_seconds {}\n\
             # HELP sqlproxy_fleet_fenced 1 while the lease is not confirmed and every database is held\n\
             # TYPE sqlproxy_fleet_fenced gauge\n\
             sqlproxy_fleet_fenced {}\n\
             # HELP sqlproxy_fleet_fences_total Times this instance fenced itself\n\
             # TYPE sqlproxy_fleet_fences_total counter\n\
             sqlproxy_fleet_fences_total {}\n\
             # HELP sqlproxy_fleet_applied_epoch Shared store epoch the live table equals\n\
             # TYPE sqlproxy_fleet_applied_epoch gauge\n\
             sqlproxy_fleet_applied_epoch {}\n\
             # HELP sqlproxy_fleet_acked_epoch Epoch this instance acknowledged in the store\n\
             # TYPE sqlproxy_fleet_acked_epoch gauge\n\
             sqlproxy_fleet_acked_epoch {}\n\
             # HELP sqlproxy_fleet_round_errors_total Lease/follow rounds that failed\n\
             # TYPE sqlproxy_fleet_round_errors_total counter\n\
             sqlproxy_fleet_round_errors_total {}\n\
             # HELP sqlproxy_fleet_held_queries_total Commands held (paused or fenced), all databases\n\
             # TYPE sqlproxy_fleet_held_queries_total counter\n\
             sqlproxy_fleet_held_queries_total {held}",
            f.lease_age().as_secs_f64(),
            u8::from(shared.fenced.load(Ordering::SeqCst)),
            f.fences.load(Ordering::Relaxed),
            f.applied.load(Ordering::Relaxed),
            f.acked.load(Ordering::Relaxed),
            f.errors.load(Ordering::Relaxed),
        );
    }
    crate::limits::write_metrics(&mut out, shared);
    out
}

/// Opt-in: pauses per database (count, total and longest).
fn per_database_pauses(shared: &Shared, out: &mut String) {
    let pauses = shared.pauses.lock().expect("pauses lock").clone();
    let metrics: [(&str, &str, &str); 3] = [
        (
            "sqlproxy_database_pauses_total",
            "counter",
            "Pauses seen by clients during switches, per database",
        ),
        (
            "sqlproxy_database_pause_seconds_total",
            "counter",
            "Time paused during switches, per database",
        ),
        (
            "sqlproxy_database_pause_longest_seconds",
            "gauge",
            "Longest pause during a switch, per database",
        ),
    ];
    for (i, (name, kind, help)) in metrics.iter().enumerate() {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (db, (n, sum, max)) in &pauses {
            let v = match i {
                0 => *n as f64,
                1 => sum / 1e3,
                _ => max / 1e3,
            };
            let _ = writeln!(out, "{name}{{database=\"{}\"}} {v}", esc(db));
        }
    }
}
