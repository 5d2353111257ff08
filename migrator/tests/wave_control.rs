//! A running wave steered through its real control socket and the journal: pause, throttle,
//! resume; throttling with a visible reason while the tunnel is down; the stop rule; shared
//! freeze of sites that share a database. The outside systems are the recording world
//! (`dry_run::Recorder`); the socket, the journal and the wave's threads are the real ones.

use migrator::control::{self, Action, Controls};
use migrator::control_socket::{self, Command, ControlServer};
use migrator::cutover::EngineOptions;
use migrator::dry_run::Recorder;
use migrator::journal::{JournalStore, SiteState, SqliteJournal};
use migrator::site_spec::{sample, SiteSpec};
use migrator::systems::Dc;
use migrator::wave::{new_monitor, run_wave_with, WaveOptions, WaveReport};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn world(n: usize) -> (Vec<SiteSpec>, Recorder) {
    let specs: Vec<SiteSpec> = (0..n).map(|i| sample(&format!("w{i}"))).collect();
    let rec = Recorder::for_site(&specs[0], false);
    for s in &specs[1..] {
        rec.add_site(s);
    }
    (specs, rec)
}

fn engine_opts(gate_wait: Duration) -> EngineOptions {
    EngineOptions {
        gate_wait,
        gate_poll: Duration::from_millis(20),
        ..Default::default()
    }
}

/// Options of wave `wave` that look at their controls every 50 ms.
fn wave_opts(wave: u32) -> WaveOptions {
    WaveOptions {
        wave,
        control_poll: Duration::from_millis(50),
        ..Default::default()
    }
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn sock_cmd(sock: &Path, cmd: &str, value: Option<u32>) -> control_socket::Answer {
    control_socket::send(
        sock,
        &Command {
            cmd: cmd.into(),
            value,
            who: Some("night-operator".into()),
            note: None,
        },
    )
    .unwrap()
}

/// Runs the wave on a thread with a control socket; returns the socket path and the handle.
fn start(
    jp: &Path,
    specs: Vec<SiteSpec>,
    rec: Recorder,
    o: WaveOptions,
    eo: EngineOptions,
) -> (PathBuf, std::thread::JoinHandle<WaveReport>) {
    let sock = control_socket::default_path(jp);
    let monitor = Arc::new(new_monitor(jp, &specs, &o));
    let m = monitor.clone();
    let server = ControlServer::start(&sock, o.wave, jp, Arc::new(move || m.snapshot())).unwrap();
    let jp = jp.to_path_buf();
    let h = std::thread::spawn(move || {
        let _server = server;
        let build = |s: &SiteSpec| Ok(rec.systems(s));
        run_wave_with(&jp, &specs, &build, &o, &eo, &monitor, &|_| {})
    });
    (sock, h)
}

fn serving_new(spec: &SiteSpec, rec: &Recorder) -> bool {
    rec.route(&spec.databases[0]).unwrap().side == "new"
        && rec
            .server(Dc::Old, &spec.old_lb.backend, &spec.old_lb.server)
            .unwrap()
            .addr
            == spec.new_web
}

#[test]
fn pause_throttle_and_resume_steer_a_running_wave() {
    let dir = tempfile::tempdir().unwrap();
    let jp = dir.path().join("j.sqlite");
    let (specs, rec) = world(6);
    // An operator paused wave 9 before it started: it waits, it does not run.
    control::request(&jp, 9, Action::Pause, "lead", "cli").unwrap();
    let o = WaveOptions {
        concurrency: 3,
        ..wave_opts(9)
    };
    let (sock, h) = start(
        &jp,
        specs.clone(),
        rec.clone(),
        o,
        engine_opts(Duration::from_secs(30)),
    );
    // The wave's thread reads its controls when it starts, and its control thread publishes
    // the status in the journal (what the dashboard reads): waited for, not slept for.
    wait_for("the wave to see the pause", Duration::from_secs(20), || {
        sock_cmd(&sock, "status", None)
            .status
            .unwrap()
            .control
            .paused
    });
    let status = || Controls::open(&jp).unwrap().status(Some(9)).unwrap();
    wait_for("the status in the journal", Duration::from_secs(20), || {
        status().is_some()
    });
    assert_eq!(status().unwrap().total, 6);
    // Paused for a while: nothing runs.
    std::thread::sleep(Duration::from_millis(400));
    let st = sock_cmd(&sock, "status", None).status.unwrap();
    assert!(st.control.paused, "{st:?}");
    assert!(st.running.is_empty() && st.ended == 0, "{st:?}");
    assert!(rec.log().is_empty(), "nothing ran while paused");

    // One site at a time, then resume through the socket.
    assert!(sock_cmd(&sock, "throttle", Some(1)).ok);
    let a = sock_cmd(&sock, "resume", None);
    assert!(!a.status.unwrap().control.paused);
    let mut max_running = 0;
    let c = Controls::open(&jp).unwrap();
    while !h.is_finished() {
        if let Some(s) = c.status(Some(9)).unwrap() {
            max_running = max_running.max(s.running.len());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let report = h.join().unwrap();
    assert_eq!(report.live, 6, "{report:?}");
    assert!(
        max_running <= 1,
        "throttle 1 was obeyed (saw {max_running})"
    );
    for s in &specs {
        assert!(serving_new(s, &rec), "{}", s.site);
    }
    // Every control is recorded with who, where from and when.
    let h = c.history(9).unwrap();
    let who: Vec<(&str, &str)> = h
        .iter()
        .map(|r| (r.who.as_str(), r.action.name()))
        .collect();
    assert_eq!(
        who,
        [
            ("lead", "pause"),
            ("night-operator", "throttle"),
            ("night-operator", "resume")
        ]
    );
    assert!(h[1].source.starts_with("socket uid="));
    let last = c.status(Some(9)).unwrap().unwrap();
    assert!(
        last.finished && last.states[&SiteState::Live] == 6,
        "{last:?}"
    );
}

#[test]
fn a_tunnel_outage_holds_freezes_with_a_reason_until_it_heals() {
    let dir = tempfile::tempdir().unwrap();
    let jp = dir.path().join("j.sqlite");
    let (specs, rec) = world(4);
    rec.set_tunnel_healthy(false);
    let o = WaveOptions {
        concurrency: 2,
        ..wave_opts(2)
    };
    let (sock, h) = start(
        &jp,
        specs.clone(),
        rec.clone(),
        o,
        engine_opts(Duration::from_secs(60)),
    );
    wait_for(
        "sites waiting on the tunnel",
        Duration::from_secs(20),
        || {
            let st = sock_cmd(&sock, "status", None).status.unwrap();
            st.waiting.len() == 2
                && st
                    .waiting
                    .values()
                    .all(|r| r.starts_with("tunnel unhealthy"))
        },
    );
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !rec.log().iter().any(|l| l.starts_with("haproxy.maint")),
        "nothing is frozen while the tunnel is down"
    );
    rec.set_tunnel_healthy(true);
    let report = h.join().unwrap();
    assert_eq!(report.live, 4, "{report:?}");
    let ev = Controls::open(&jp).unwrap().events(2).unwrap();
    assert!(ev
        .iter()
        .any(|e| e.kind == "throttle" && e.message.starts_with("tunnel unhealthy")));
    assert!(ev.iter().any(|e| e.kind == "go"));
    // The wait shows in the site's timeline as a gate step.
    let j = SqliteJournal::open(&jp).unwrap();
    assert!(j.steps("w0").unwrap().iter().any(|s| s.phase == "gate"));
}

#[test]
fn a_tunnel_that_stays_down_leaves_sites_on_old_and_the_stop_rule_pauses_the_wave() {
    let dir = tempfile::tempdir().unwrap();
    let jp = dir.path().join("j.sqlite");
    let (specs, rec) = world(5);
    rec.set_tunnel_healthy(false);
    let o = WaveOptions {
        concurrency: 1,
        max_failures: 1,
        errors: migrator::monitor::ErrorRate {
            max_recent: 0,
            ..Default::default()
        },
        ..wave_opts(3)
    };
    let (_sock, h) = start(
        &jp,
        specs.clone(),
        rec.clone(),
        o,
        engine_opts(Duration::from_millis(150)),
    );
    let report = h.join().unwrap();
    assert_eq!(report.failed, 2, "{report:?}");
    assert_eq!(report.not_started.len(), 3);
    assert!(report.stopped.unwrap().contains("more than the limit of 1"));
    let j = SqliteJournal::open(&jp).unwrap();
    for s in &specs[..2] {
        assert_eq!(j.site_state(&s.site).unwrap(), Some(SiteState::Synced));
    }
    assert!(!rec.log().iter().any(|l| l.starts_with("haproxy.maint")));
    // The stop rule's pause is a recorded control; the next run of the wave lifts it.
    let st = control::current(&jp, 3).unwrap();
    assert!(st.paused && st.stopped_by_rule, "{st:?}");
    rec.set_tunnel_healthy(true);
    let (_sock, h) = start(
        &jp,
        specs,
        rec,
        wave_opts(3),
        engine_opts(Duration::from_secs(5)),
    );
    assert_eq!(h.join().unwrap().live, 5);
}

#[test]
fn sites_sharing_a_database_freeze_and_switch_together() {
    let dir = tempfile::tempdir().unwrap();
    let jp = dir.path().join("j.sqlite");
    let a = sample("ga");
    let mut b = sample("gb");
    b.databases = a.databases.clone();
    let c = sample("gc");
    let rec = Recorder::for_site(&a, false);
    rec.add_site(&b);
    rec.add_site(&c);
    let all = [a.clone(), c.clone(), b.clone()];
    let groups = migrator::wave::move_groups(&all);
    assert_eq!(groups.len(), 2);
    assert_eq!(
        groups[0]
            .iter()
            .map(|s| s.site.as_str())
            .collect::<Vec<_>>(),
        ["ga", "gb"]
    );
    let o = WaveOptions {
        concurrency: 1,
        ..wave_opts(4)
    };
    let (_s, h) = start(
        &jp,
        vec![a.clone(), b.clone()],
        rec.clone(),
        o.clone(),
        engine_opts(Duration::from_secs(5)),
    );
    let report = h.join().unwrap();
    assert_eq!(report.live, 2, "{report:?}");
    let log = rec.log();
    let pos = |pred: &dyn Fn(&String) -> bool| log.iter().position(pred).unwrap();
    let rpos = |pred: &dyn Fn(&String) -> bool| log.iter().rposition(pred).unwrap();
    let maint_b = rpos(&|l| l.starts_with("haproxy.maint") && l.contains("be_gb"));
    let first_switch = pos(&|l| l.starts_with("dns.replace") || l.starts_with("proxy.resume"));
    let first_ready = pos(&|l| l.starts_with("haproxy.ready"));
    let last_replace = rpos(&|l| l.starts_with("dns.replace"));
    // One freeze window: both frozen before anything switches, both switched before either
    // is unfrozen; the shared database is paused and resumed once.
    assert!(maint_b < first_switch, "{log:#?}");
    assert!(last_replace < first_ready, "{log:#?}");
    assert_eq!(
        log.iter().filter(|l| l.starts_with("proxy.pause")).count(),
        1
    );
    assert_eq!(
        log.iter().filter(|l| l.starts_with("proxy.resume")).count(),
        1
    );
    assert!(serving_new(&a, &rec) && serving_new(&b, &rec));

    // A verification failure of the group aborts both members to the old side.
    let dir = tempfile::tempdir().unwrap();
    let jp = dir.path().join("j.sqlite");
    let rec = Recorder::for_site(&a, false);
    rec.add_site(&b);
    rec.set_verify_diffs(vec!["table `t`: checksums differ".into()]);
    let (_s, h) = start(
        &jp,
        vec![a.clone(), b.clone()],
        rec.clone(),
        o,
        engine_opts(Duration::from_secs(5)),
    );
    let report = h.join().unwrap();
    assert_eq!(report.failed, 2, "{report:?}");
    let j = SqliteJournal::open(&jp).unwrap();
    for s in [&a, &b] {
        assert_eq!(j.site_state(&s.site).unwrap(), Some(SiteState::Aborted));
        let r = rec.route(&s.databases[0]).unwrap();
        assert_eq!((r.side.as_str(), r.paused()), ("old", false));
    }
}

#[test]
fn the_cli_steers_through_the_journal_or_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let jp = dir.path().join("j.sqlite");
    let bin = env!("CARGO_BIN_EXE_migrator");
    let c = Controls::open(&jp).unwrap();
    c.publish(&control::WaveStatus {
        wave: 5,
        total: 3,
        ..Default::default()
    })
    .unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(bin)
            .args(args)
            .env("USER", "cli-operator")
            .env_remove("SUDO_USER")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let j = jp.to_str().unwrap();
    let (code, out, err) = run(&["wave", "pause", "--journal", j, "--note", "db slow"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("pause recorded for wave 5"), "{out}");
    assert!(
        out.contains("PAUSED: paused by cli-operator (cli)"),
        "{out}"
    );
    let st = control::current(&jp, 5).unwrap();
    let last = st.last.unwrap();
    assert_eq!(
        (
            last.who.as_str(),
            last.source.as_str(),
            last.note.as_deref()
        ),
        ("cli-operator", "cli", Some("db slow"))
    );

    // Through a running wave's socket (served here by the library's server).
    let sock = control_socket::default_path(&jp);
    let _server = ControlServer::start(
        &sock,
        5,
        &jp,
        Arc::new(|| control::WaveStatus {
            wave: 5,
            total: 3,
            ..Default::default()
        }),
    )
    .unwrap();
    let s = sock.to_str().unwrap();
    let (code, out, err) = run(&["wave", "throttle", "2", "--socket", s, "--json"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["control"]["concurrency_limit"], 2);
    assert_eq!(v["control"]["paused"], true);
    let (code, out, _) = run(&["wave", "resume", "--socket", s]);
    assert_eq!(code, Some(0));
    assert!(!out.contains("PAUSED"), "{out}");
    assert_eq!(c.history(5).unwrap().len(), 3);

    // No target: a clear error, not a guess.
    let (code, _, err) = run(&["wave", "status"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--socket PATH"), "{err}");
}
