//! Customers' maintenance windows in IANA zones across daylight-saving changes (issue 22): a
//! dated campaign (`campaign_start`) keeps every Paris customer inside 01:00–05:00 Paris time
//! before and after the March and October changes. The check converts each wave's planned
//! instants back to Paris time with jiff directly (not the planner's calendar code).

mod common;

use common::{site, Small};
use jiff::tz::TimeZone;
use jiff::Timestamp;

use planner::plan::Plan;
use planner::settings::WaveWindow;
use planner::window::Window;
use planner::write_inventory::SitesFormat;
use planner::{plan_dir, LoadOptions, Settings};

fn window(name: &str, start: &str, end: &str, tz: &str) -> WaveWindow {
    WaveWindow {
        name: name.into(),
        start: start.into(),
        end: end.into(),
        tz: tz.into(),
    }
}

/// `n` sites of 1000 bytes, each with maintenance window `window`, on one roomy destination.
fn inventory(dir: &std::path::Path, n: usize, window: Option<Window>) {
    let sites = (0..n)
        .map(|i| {
            let mut s = site(&format!("s{i:02}"), &format!("l{i:02}"), 1000, &[]);
            s.window = window.clone();
            s
        })
        .collect();
    Small {
        dest_clusters: vec![(1 << 40, 1000)],
        dest_sql: vec![],
        sites,
        dbs: vec![],
    }
    .write(dir, SitesFormat::Jsonl);
}

/// 30 sites, each with a 01:00–05:00 Europe/Paris maintenance window.
fn paris_inventory(dir: &std::path::Path) {
    inventory(dir, 30, Some(Window::new("01:00", "05:00", "Europe/Paris")));
}

/// Two UTC wave windows: in winter only `late` lies inside 01:00–05:00 Paris (00:00–04:00
/// UTC), in summer only `early` (23:00–03:00 UTC).
fn settings(start: &str) -> Settings {
    Settings {
        bandwidth: "10Gbit/s".into(),
        canary_ramp: vec![],
        max_sites_per_wave: 2,
        windows: vec![
            window("late", "00:00", "04:00", "UTC"),
            window("early", "23:00", "03:00", "UTC"),
        ],
        campaign_start: Some(start.into()),
        ..Settings::default()
    }
}

fn plan(dir: &std::path::Path, s: &Settings) -> Plan {
    let planned = plan_dir(dir, s, &LoadOptions::default()).unwrap();
    serde_json::from_slice(&planned.to_bytes()).unwrap()
}

fn paris_hm(rfc3339: &str) -> (String, i32) {
    let ts: Timestamp = rfc3339.parse().unwrap();
    let z = ts.to_zoned(TimeZone::get("Europe/Paris").unwrap());
    (
        z.date().to_string(),
        z.hour() as i32 * 60 + z.minute() as i32,
    )
}

/// Every wave lies inside 01:00–05:00 Paris time on its night; returns (date, window) per wave.
fn check_inside_paris_window(p: &Plan) -> Vec<(String, String)> {
    assert_eq!(p.summary.sites_planned, 30, "every site planned");
    assert!(p.tzdb.as_deref().is_some_and(|v| !v.is_empty()));
    let mut out = Vec::new();
    for w in &p.waves {
        let (a, b) = (
            w.starts_at.as_deref().unwrap(),
            w.ends_at.as_deref().unwrap(),
        );
        let ((da, ma), (db, mb)) = (paris_hm(a), paris_hm(b));
        assert_eq!(
            da, db,
            "wave {} crosses a Paris midnight: {a} {b}",
            w.number
        );
        assert!(
            ma >= 60 && mb <= 5 * 60,
            "wave {} ({}, {a} to {b}) is {}:{:02}-{}:{:02} Paris time, outside 01:00-05:00",
            w.number,
            w.window,
            ma / 60,
            ma % 60,
            mb / 60,
            mb % 60
        );
        out.push((w.date.clone().unwrap(), w.window.clone()));
    }
    out
}

/// Each night's wave window is the one `expected` names for its date.
fn expect_windows(nights: &[(String, String)], expected: impl Fn(&str) -> &'static str) {
    for (date, win) in nights {
        assert_eq!(win, expected(date), "night {date}: {nights:?}");
    }
}

#[test]
fn march_change_keeps_paris_customers_in_their_local_window() {
    let t = tempfile::tempdir().unwrap();
    paris_inventory(t.path());
    let p = plan(t.path(), &settings("2027-03-20"));
    let nights = check_inside_paris_window(&p);
    // Before the change (CET) the `late` window, after it (CEST) the `early` one.
    expect_windows(
        &nights,
        |date| if date < "2027-03-28" { "late" } else { "early" },
    );
    assert!(nights.iter().any(|(_, w)| w == "late") && nights.iter().any(|(_, w)| w == "early"));
    // The `early` wave of the night dated 28 March (UTC) runs 01:00-05:00 CEST on the 29th.
    let w = p
        .waves
        .iter()
        .find(|w| w.date.as_deref() == Some("2027-03-28"))
        .unwrap();
    assert_eq!(w.starts_at.as_deref(), Some("2027-03-28T23:00:00Z"));
    // Dates follow one another, one wave a night.
    assert_eq!(nights[0].0, "2027-03-20");
    assert_eq!(p.waves.len(), 15);
}

#[test]
fn october_change_keeps_paris_customers_in_their_local_window() {
    let t = tempfile::tempdir().unwrap();
    paris_inventory(t.path());
    let p = plan(t.path(), &settings("2027-10-24"));
    let nights = check_inside_paris_window(&p);
    // Summer until the night of 30 to 31 October (the `early` window starts on the 30th at
    // 23:00 UTC = 01:00 CEST on the 31st), winter after.
    expect_windows(&nights, |date| {
        if date <= "2027-10-30" {
            "early"
        } else {
            "late"
        }
    });
}

#[test]
fn nights_no_window_suits_are_skipped_until_one_does() {
    // Only the winter window: from 28 March no night suits Paris customers until the night of
    // 31 October (00:00-04:00 UTC = 02:00 CEST-05:00 CET): those nights are skipped, not
    // filled with empty waves, and no site is lost.
    let t = tempfile::tempdir().unwrap();
    paris_inventory(t.path());
    let mut s = settings("2027-03-21");
    s.windows.truncate(1);
    let p = plan(t.path(), &s);
    let nights = check_inside_paris_window(&p);
    let dates: Vec<String> = nights.iter().map(|(d, _)| d.clone()).collect();
    // Seven winter nights in March, then the next eight from 31 October.
    let mut want = consecutive_nights("2027-03-21", 7);
    want.extend(consecutive_nights("2027-10-31", 8));
    assert_eq!(dates, want);
}

/// `n` dates one after another from `start` (computed by jiff, not by the planner).
fn consecutive_nights(start: &str, n: i64) -> Vec<String> {
    let d: jiff::civil::Date = start.parse().unwrap();
    (0..n)
        .map(|k| {
            d.checked_add(jiff::Span::new().days(k))
                .unwrap()
                .to_string()
        })
        .collect()
}

#[test]
fn a_named_zone_needs_dates_and_the_error_names_the_site() {
    let t = tempfile::tempdir().unwrap();
    paris_inventory(t.path());
    let mut s = settings("2027-03-20");
    s.campaign_start = None;
    let err = plan_dir(t.path(), &s, &LoadOptions::default())
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("campaign_start"), "{err}");
    assert!(err.contains("s00") && err.contains("Europe/Paris"), "{err}");
    let mut s = settings("2027-02-30");
    s.windows[0].tz = "Europe/Paris".into();
    let err = plan_dir(t.path(), &s, &LoadOptions::default())
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains("campaign_start") && err.contains("2027-02-30"),
        "{err}"
    );
}

#[test]
fn a_wave_window_in_paris_is_shorter_on_the_spring_night() {
    let t = tempfile::tempdir().unwrap();
    inventory(t.path(), 6, None);
    let s = Settings {
        bandwidth: "8bit/s".into(),
        efficiency: 1.0,
        canary_ramp: vec![],
        max_sites_per_wave: 2,
        windows: vec![window("night", "22:00", "06:00", "Europe/Paris")],
        campaign_start: Some("2027-03-26".into()),
        ..Settings::default()
    };
    let p = plan(t.path(), &s);
    let by_date: Vec<(String, u64, String)> = p
        .waves
        .iter()
        .map(|w| {
            (
                w.date.clone().unwrap(),
                w.budget_bytes,
                w.window_utc.clone(),
            )
        })
        .collect();
    // 1 B/s: 8 h = 28,800 bytes, the night of the change 7 h.
    assert_eq!(
        by_date,
        vec![
            ("2027-03-26".into(), 28_800, "21:00-05:00 UTC".into()),
            ("2027-03-27".into(), 25_200, "21:00-04:00 UTC".into()),
            ("2027-03-28".into(), 28_800, "20:00-04:00 UTC".into()),
        ]
    );
}
