//! `migrator wave run` end to end as an operator runs it: a plan made by `migrator plan` from a
//! generated inventory, ten sites behind two real HAProxies, real file copies; while it runs,
//! `migrator wave status --socket` answers from the wave's control socket; plain progress lines
//! on stderr (not a terminal); every site live; the socket removed at the end.

mod shop_support;

use migrator::journal::{JournalStore, SiteState, SqliteJournal};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use testkit::TinyHttp;

/// Kills the wave (SIGKILL, by its PID) if the test fails before it ends.
struct Killer(Option<std::process::Child>);

impl Drop for Killer {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn wave_run_with_a_live_control_socket_and_plain_progress() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let bin = env!("CARGO_BIN_EXE_migrator");
    let ok = |c: &mut Command| {
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    };
    ok(Command::new(bin)
        .args(["inventory", "generate", "--sites", "30", "--out"])
        .arg(d.join("inv")));
    ok(Command::new(bin)
        .args(["plan", "--inventory"])
        .arg(d.join("inv"))
        .arg("--out")
        .arg(d.join("plan.json")));
    let plan = planner::Plan::read(&d.join("plan.json")).unwrap();
    let sites: Vec<String> = plan.waves[0]
        .groups
        .iter()
        .flat_map(|g| g.sites.iter().cloned())
        .collect();
    assert!(sites.len() >= 2, "{sites:?}");

    let old = TinyHttp::start("x").unwrap();
    let new = TinyHttp::start("x").unwrap();
    // Kept alive until the test ends: the wave switches them.
    let _haproxies = shop_support::many_sites(d, &sites, &old, &new);

    let jp = d.join("j.sqlite");
    let sock = d.join("j.sqlite.wave.sock");
    let child = Command::new(bin)
        .args(["wave", "run", "1", "--concurrency", "2", "--plan"])
        .arg(d.join("plan.json"))
        .arg("--sites")
        .arg(d.join("sites.json"))
        .arg("--journal")
        .arg(&jp)
        // Issue 19: each site's bundle as soon as it is live, while the wave goes on.
        .arg("--bundle-store")
        .arg(d.join("bundles"))
        .arg("--bundle-key")
        .arg(d.join("bundle.key"))
        // Slow each site down a little so the wave is still running when we ask.
        .env("MIGRATOR_DRILL_PAUSE_AFTER", "sync=400")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut k = Killer(Some(child));
    let t0 = Instant::now();
    let status = loop {
        assert!(t0.elapsed() < Duration::from_secs(60), "no socket");
        if sock.exists() {
            let out = Command::new(bin)
                .args(["wave", "status", "--json", "--socket"])
                .arg(&sock)
                .output()
                .unwrap();
            if out.status.success() {
                break serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap();
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status["wave"], 1);
    assert_eq!(status["total"], sites.len());
    assert_eq!(status["finished"], false);
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let child = k.0.take().unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let n = sites.len();
    assert!(
        stdout.contains(&format!("wave 1: {n} live, 0 failed, 0 not started")),
        "{stdout}"
    );
    assert!(stderr.contains(&format!("[{n}/{n}]")), "{stderr}");
    assert!(stderr.contains("control: migrator wave status|pause|resume|throttle N --socket"));
    assert!(
        stderr.contains(&format!("wave 1: 0/{n} sites")),
        "plain progress line: {stderr}"
    );
    assert!(!sock.exists(), "the socket is removed when the wave ends");
    let j = SqliteJournal::open(&jp).unwrap();
    // (switch instant, capture end) of every site's bundle.
    let mut times = Vec::new();
    for s in &sites {
        assert_eq!(j.site_state(s).unwrap(), Some(SiteState::Live), "{s}");
        assert!(d.join("new").join(s).join("index.php").exists());
        let b = migrator::bundle::state::get(&j, s).unwrap().unwrap();
        assert_eq!(b.stage, migrator::bundle::state::Stage::Captured, "{s}");
        assert!(
            stdout.contains(&format!("{}: captured", b.bundle)),
            "{stdout}"
        );
        let store = migrator::bundle::store::LocalStore::new(&d.join("bundles"));
        let r = migrator::bundle::store::BundleRef::parse(&b.bundle).unwrap();
        let (m, _, _) = migrator::bundle::check::manifest(&store, &r).unwrap();
        assert_eq!(m.homes[0].files, 2, "{s}: the home and its index.php");
        assert!(
            m.captured_ms > m.switch_ms,
            "{s}: captured after its switch"
        );
        times.push((m.switch_ms, m.captured_ms));
    }
    // Captured while the wave ran, not after it: the first bundle was complete before the
    // last site switched.
    let first_captured = times.iter().map(|t| t.1).min().unwrap();
    let last_switch = times.iter().map(|t| t.0).max().unwrap();
    assert!(
        first_captured < last_switch,
        "first bundle at {first_captured} ms, last switch at {last_switch} ms: {times:?}"
    );
    // The published status is the final one.
    let st = migrator::control::Controls::open(&jp)
        .unwrap()
        .status(Some(1))
        .unwrap()
        .unwrap();
    assert!(st.finished && st.ended == n, "{st:?}");
}
