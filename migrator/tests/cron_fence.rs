//! Issue 20: `migrator cron-run` as real processes on both "sides" (one journal file they
//! share), started together the way each side's cron starts them. Only the owner runs a slot;
//! a slot due while the site is frozen waits and runs once, on the side the commit point named;
//! `migrator cron-runs` lists the runs and refusals.

use migrator::artifacts::fence::{self, Side};
use migrator::artifacts::CronJob;
use migrator::journal::SqliteJournal;
use migrator::site_spec::{sample, SpecFile};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A yearly job: its slot (Jan 1st) does not change while the test runs.
fn job(name: &str) -> CronJob {
    CronJob {
        name: name.into(),
        schedule: "0 0 1 1 *".into(),
        command: "true".into(),
        user: "root".into(),
    }
}

struct Lab {
    _dir: tempfile::TempDir,
    d: PathBuf,
    journal: PathBuf,
    spec: PathBuf,
}

impl Lab {
    fn new() -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        let journal = d.join("journal.sqlite");
        SqliteJournal::open(&journal).unwrap();
        let mut site = sample("shop");
        site.artifacts.cron = vec![job("before"), job("during")];
        let spec = d.join("sites.json");
        let text = serde_json::to_string(&SpecFile { sites: vec![site] }).unwrap();
        std::fs::write(&spec, text).unwrap();
        Lab {
            _dir: dir,
            d,
            journal,
            spec,
        }
    }

    /// `cron-run` of `job` on `side`: its command appends the side's name to `out-JOB`. The
    /// journal and the spec file come from the environment, as in the crontab prepare stages
    /// (`artifacts::install::crontab`).
    fn cron_run(&self, job: &str, side: Side, max_wait: u64) -> Child {
        let out = self.d.join(format!("out-{job}"));
        Command::new(env!("CARGO_BIN_EXE_migrator"))
            .env("HOSTMOVE_JOURNAL", &self.journal)
            .env("HOSTMOVE_SITES", &self.spec)
            .arg("cron-run")
            .args(["--site", "shop", "--job", job, "--side", side.as_str()])
            .args(["--max-wait", &max_wait.to_string(), "--", "sh", "-c"])
            .arg(format!("echo {} >> {}", side.as_str(), out.display()))
            .spawn()
            .unwrap()
    }

    fn out(&self, job: &str) -> String {
        std::fs::read_to_string(self.d.join(format!("out-{job}"))).unwrap_or_default()
    }

    fn journal(&self) -> SqliteJournal {
        SqliteJournal::open(&self.journal).unwrap()
    }
}

fn wait_ok(mut c: Child) {
    let st = c.wait().unwrap();
    assert!(st.success(), "{st}");
}

#[test]
fn both_sides_cron_fire_and_only_the_owner_runs_each_slot_once() {
    let lab = Lab::new();
    // Both sides' cron fire at once, and the old side's fires twice for the same slot.
    let kids = [
        lab.cron_run("before", Side::Old, 5),
        lab.cron_run("before", Side::New, 5),
        lab.cron_run("before", Side::Old, 5),
    ];
    kids.into_iter().for_each(wait_ok);
    assert_eq!(lab.out("before"), "old\n");

    // The freeze; the slot of `during` comes due while frozen: both sides wait.
    let mut j = lab.journal();
    fence::freeze(&mut j, "shop").unwrap();
    let mut waiting = [
        lab.cron_run("during", Side::Old, 30),
        lab.cron_run("during", Side::New, 30),
    ];
    std::thread::sleep(Duration::from_millis(700));
    for c in &mut waiting {
        assert!(
            c.try_wait().unwrap().is_none(),
            "ran or gave up while frozen"
        );
    }
    assert_eq!(lab.out("during"), "");
    // The switch's commit point, then the unfreeze.
    fence::set_owner(&mut j, "shop", Side::New).unwrap();
    let t0 = Instant::now();
    fence::unfreeze(&mut j, "shop").unwrap();
    waiting.into_iter().for_each(wait_ok);
    assert!(t0.elapsed() < Duration::from_secs(10));
    assert_eq!(lab.out("during"), "new\n");

    let runs = fence::runs(&j, "shop").unwrap();
    let mut seen: Vec<(String, Side)> = runs.iter().map(|r| (r.job.clone(), r.side)).collect();
    seen.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        seen,
        [
            ("before".to_string(), Side::Old),
            ("during".to_string(), Side::New)
        ]
    );
    assert!(runs
        .iter()
        .all(|r| r.exit == Some(0) && r.ended_ms >= Some(r.started_ms)));
    // The non-owners' refusals are on record: new for `before`, old for `during`.
    let refusals = fence::refusals(&j, "shop").unwrap();
    assert!(refusals
        .iter()
        .any(|r| r.job == "before" && r.side == Side::New));
    assert!(refusals
        .iter()
        .any(|r| r.job == "during" && r.side == Side::Old));

    // The listing an operator reads.
    let out = Command::new(env!("CARGO_BIN_EXE_migrator"))
        .args(["cron-runs", "--json", "--site", "shop", "--journal"])
        .arg(&lab.journal)
        .output()
        .unwrap();
    assert!(out.status.success());
    let table = Command::new(env!("CARGO_BIN_EXE_migrator"))
        .args(["cron-runs", "--site", "shop", "--journal"])
        .arg(&lab.journal)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.starts_with("site shop: owner new, frozen false\n"),
        "{table}"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["token"]["owner"], "new");
    assert_eq!(v["token"]["frozen"], false);
    assert_eq!(v["runs"].as_array().unwrap().len(), 2);
}

/// The job learns the slot it runs for and its side (the lab's cron job names its row and file
/// by them, so a run lost or run twice can be counted).
#[test]
fn the_job_runs_with_its_slot_and_side_in_the_environment() {
    let lab = Lab::new();
    let out = lab.d.join("env-out");
    let st = Command::new(env!("CARGO_BIN_EXE_migrator"))
        .env("HOSTMOVE_JOURNAL", &lab.journal)
        .env("HOSTMOVE_SITES", &lab.spec)
        .arg("cron-run")
        .args([
            "--site", "shop", "--job", "before", "--side", "old", "--", "sh", "-c",
        ])
        .arg(format!(
            "echo \"$HOSTMOVE_CRON_SIDE $HOSTMOVE_CRON_SLOT\" > {}",
            out.display()
        ))
        .status()
        .unwrap();
    assert!(st.success(), "{st}");
    let runs = fence::runs(&lab.journal(), "shop").unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        format!("old {}\n", runs[0].slot)
    );
}

#[test]
fn an_unknown_job_or_side_is_refused_by_name() {
    let lab = Lab::new();
    let run = |job: &str, side: &str| {
        Command::new(env!("CARGO_BIN_EXE_migrator"))
            .arg("cron-run")
            .arg("--journal")
            .arg(&lab.journal)
            .arg("--spec")
            .arg(&lab.spec)
            .args(["--site", "shop", "--job", job, "--side", side])
            .output()
            .unwrap()
    };
    let out = run("nope", "old");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no cron job \"nope\"") && err.contains("sites.json"),
        "{err}"
    );
    let out = run("before", "middle");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("`old` or `new`"));
    assert!(fence::runs(&lab.journal(), "shop").unwrap().is_empty());
}

/// A yearly job with a command that takes `secs`, then writes `late` to `out-JOB`.
fn slow_lab(job_name: &str, wait_s: u64) -> (Lab, migrator::site_spec::SiteSpec) {
    let lab = Lab::new();
    let mut site = sample("shop");
    site.artifacts.cron = vec![job(job_name)];
    site.artifacts.cron_wait_s = wait_s;
    let text = serde_json::to_string(&SpecFile {
        sites: vec![site.clone()],
    })
    .unwrap();
    std::fs::write(&lab.spec, text).unwrap();
    (lab, site)
}

impl Lab {
    /// `cron-run` of `job` on the old side: appends `start` to `out-JOB`, sleeps `secs`, then
    /// appends `late`.
    fn slow_run(&self, job: &str, secs: u32) -> Child {
        let out = self.d.join(format!("out-{job}"));
        Command::new(env!("CARGO_BIN_EXE_migrator"))
            .arg("cron-run")
            .arg("--journal")
            .arg(&self.journal)
            .arg("--spec")
            .arg(&self.spec)
            .args(["--site", "shop", "--job", job, "--side", "old", "--"])
            .args(["sh", "-c"])
            .arg(format!(
                "echo start >> {o}; sleep {secs}; echo late >> {o}",
                o = out.display()
            ))
            .spawn()
            .unwrap()
    }

    /// Waits until the run is registered in the token and its job started; returns it.
    fn registered(&self, job: &str) -> fence::Running {
        let t0 = Instant::now();
        loop {
            let (_, t) = fence::token(&self.journal(), "shop").unwrap();
            if let (Some(r), "start\n") = (t.running.first(), self.out(job).as_str()) {
                return r.clone();
            }
            assert!(t0.elapsed() < Duration::from_secs(10), "never registered");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn sigkill(pid: i32) {
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
}

/// A SIGKILLed `cron-run` leaves its run in the token: the freeze checks its process (pid,
/// boot id, start time, process group) instead of waiting the whole `cron_wait_s`. An orphaned
/// job of that run still counts (it may still write); once it is gone too, the run is reaped
/// and its record ends as `lost`.
#[test]
fn a_killed_cron_run_is_reaped_by_the_freeze_not_waited_for() {
    let (lab, _) = slow_lab("slow", 30);
    let mut child = lab.slow_run("slow", 2);
    let r = lab.registered("slow");
    let p = r.process.clone().expect("cron-run records its process");
    assert_eq!(p.pid, child.id());
    assert!(p.group, "cron-run leads its process group");
    // The cron-run process alone is killed (as by the OOM killer): its job lives on.
    sigkill(child.id() as i32);
    child.wait().unwrap();
    let mut j = lab.journal();
    fence::freeze(&mut j, "shop").unwrap();
    let t0 = Instant::now();
    let s = fence::settle(&mut j, "shop", Duration::from_secs(30)).unwrap();
    let took = t0.elapsed();
    assert!(s.left.is_empty() && s.dead.len() == 1, "{s:?}");
    // Waited for the orphaned job (about 2 s), not for the 30 s of the wait.
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert_eq!(lab.out("slow"), "start\nlate\n");
    let runs = fence::runs(&j, "shop").unwrap();
    assert_eq!(runs.len(), 1);
    assert!(runs[0].ended_ms.is_some() && runs[0].exit.is_none());
    assert!(
        runs[0].lost.as_deref().unwrap().contains("died"),
        "{runs:?}"
    );

    // The whole group killed: reaped at once.
    fence::unfreeze(&mut j, "shop").unwrap();
    let (lab, _) = slow_lab("slow2", 30);
    let mut child = lab.slow_run("slow2", 30);
    lab.registered("slow2");
    sigkill(-(child.id() as i32));
    child.wait().unwrap();
    let mut j = lab.journal();
    fence::freeze(&mut j, "shop").unwrap();
    let t0 = Instant::now();
    let s = fence::settle(&mut j, "shop", Duration::from_secs(30)).unwrap();
    assert!(s.left.is_empty() && s.dead.len() == 1, "{s:?}");
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    assert_eq!(lab.out("slow2"), "start\n");
}

/// A run still going on the old side when the freeze's wait ends is stopped (its process
/// group: SIGTERM), so it cannot write after the switch; the site moves and the report says so.
#[test]
fn an_overrun_on_this_host_is_stopped_before_the_switch() {
    use migrator::cutover::{Engine, EngineOptions};
    use migrator::journal::SiteState;
    let (lab, site) = slow_lab("slow", 1);
    let mut child = lab.slow_run("slow", 4);
    let r = lab.registered("slow");
    let rec = migrator::dry_run::Recorder::for_site(&site, false);
    let sys = rec.systems(&site);
    let opts = EngineOptions::default();
    let mut j = lab.journal();
    let report = Engine::new(&site, &sys, &mut j, &opts).migrate().unwrap();
    assert_eq!(report.state, SiteState::Live);
    assert_eq!(report.cron_overruns.len(), 1, "{report:?}");
    assert!(
        report.cron_overruns[0].contains("job slow (old side")
            && report.cron_overruns[0].contains("stopped (SIGTERM)"),
        "{report:?}"
    );
    let st = child.wait().unwrap();
    assert!(!st.success(), "{st}");
    assert_eq!(
        r.process.unwrap().liveness(),
        migrator::artifacts::liveness::Liveness::Dead
    );
    // Its job would have written 4 s after it started: it never does.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(lab.out("slow"), "start\n");
    let runs = fence::runs(&j, "shop").unwrap();
    assert!(runs[0].lost.is_some(), "{runs:?}");
    assert_eq!(fence::token(&j, "shop").unwrap().1.owner, Side::New);
}

/// The real `cron-run` beats while its job runs (a second journal connection, every
/// `fence::HEARTBEAT` after a first beat at 1 s), so a migrator on another host can tell a
/// live run from a dead one; the run's entry leaves the token when the job ends.
#[test]
fn cron_run_beats_while_its_job_runs() {
    let (lab, _) = slow_lab("slow", 30);
    let mut child = lab.slow_run("slow", 8);
    let r = lab.registered("slow");
    assert_eq!(r.heartbeat_ms, None, "no beat before the first second");
    let beat = |after: i64| {
        let t0 = Instant::now();
        loop {
            let (_, t) = fence::token(&lab.journal(), "shop").unwrap();
            if let Some(h) = t.running.first().and_then(|r| r.heartbeat_ms) {
                if h > after {
                    return h;
                }
            }
            assert!(
                t0.elapsed() < Duration::from_secs(8),
                "no beat after {after}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let first = beat(r.started_ms);
    let second = beat(first);
    let gap = second - first;
    assert!(
        (4_000..7_000).contains(&gap),
        "beats {gap} ms apart, not about {:?}",
        fence::HEARTBEAT
    );
    let st = child.wait().unwrap();
    assert!(st.success(), "{st}");
    assert!(fence::token(&lab.journal(), "shop")
        .unwrap()
        .1
        .running
        .is_empty());
}
