//! The dashboard in a real headless Chromium over a real lab wave (issue #8's acceptance): the
//! `wave-basic` scenario (10 sites, the wave at concurrency 1 so it lasts) runs the real
//! `migrator wave run` in the lab's client namespace under traffic; meanwhile `migrator serve`
//! on that journal (127.0.0.1, a free port) is opened in Chromium (Debian `chromium` +
//! `chromium-driver`, over WebDriver): log in, see wave 1's live count change, pause the wave
//! from the page, see PAUSED on the page and in `migrator wave status`, see no new site start
//! for a few seconds, resume from the page; the wave then finishes (every site live) and the
//! scenario's check holds (zero lost writes, no failure outside freezes). A screenshot of the
//! paused overview is saved under the target dir (path printed).
//!
//! Root only (the lab: namespaces, mounts, daemons; CI runs as root). Skips, saying why, when
//! chromium or chromedriver is not installed (`scripts/install-deps.sh` installs both).

use migrator::control::{self, Action};
use migrator::journal::{JournalStore, SqliteJournal};
use scenarios::scenario::{self, RunOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use testkit::webdriver::{find_browser, Chromedriver, WebDriver};

const SITES: usize = 10;

/// A child process killed (by its PID) and reaped on drop.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Removes the run's files (logs, journal) on drop; kept after a failure (the evidence).
struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept for inspection: {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

type Run = std::thread::JoinHandle<scenarios::error::Result<scenario::ScenarioReport>>;

/// The scenario's thread. If the test fails first, the wave is resumed (it may be paused) and
/// the scenario is waited for, so its lab guard takes the lab down before the process ends.
struct Scenario {
    journal: PathBuf,
    run: Option<Run>,
}

impl Scenario {
    fn finish(mut self) -> scenario::ScenarioReport {
        let run = self.run.take().unwrap();
        run.join().unwrap().expect("scenario runs")
    }
    fn ended(&self) -> bool {
        self.run.as_ref().is_none_or(|r| r.is_finished())
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        if let Some(run) = self.run.take() {
            if self.journal.exists() {
                let _ = control::request(&self.journal, 1, Action::Resume, "cleanup", "cli");
            }
            let _ = run.join();
        }
    }
}

/// `wave-basic`'s files, with the wave at concurrency 1 (sites one after the other).
fn scenario_dir(root: &Path) -> PathBuf {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("wave-basic");
    let dir = root.join("dash-wave");
    std::fs::create_dir_all(&dir).unwrap();
    let text = std::fs::read_to_string(src.join("scenario.toml")).unwrap();
    let mut sc: toml::Table = toml::from_str(&text).unwrap();
    let mig = sc["migration"].as_table_mut().unwrap();
    mig.insert("concurrency".into(), toml::Value::Integer(1));
    std::fs::write(dir.join("scenario.toml"), toml::to_string(&sc).unwrap()).unwrap();
    std::fs::copy(src.join("expect.toml"), dir.join("expect.toml")).unwrap();
    dir
}

/// `migrator wave status --journal J --wave 1 --json`.
fn wave_status(migrator: &Path, journal: &Path) -> serde_json::Value {
    let out = Command::new(migrator)
        .args(["wave", "status", "--wave", "1", "--json", "--journal"])
        .arg(journal)
        .output()
        .unwrap();
    assert!(out.status.success(), "wave status: {out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

fn journaled_sites(j: &Path) -> usize {
    SqliteJournal::open(j).unwrap().sites().unwrap().len()
}

/// A script returning `expr` over `n`, the live count in wave 1's row of the overview.
fn live_js(expr: &str) -> String {
    format!(
        "const r = document.querySelector('#waves tr[data-wave=\"1\"]'); \
         if (!r) return null; const n = parseInt(r.children[4].textContent); return {expr};"
    )
}

fn wait_until(what: &str, secs: u64, mut ok: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !ok() {
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "timed out: {what}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn confirm(wd: &WebDriver) {
    wd.wait_for(
        "the confirmation",
        5,
        "return !document.getElementById('confirm').hidden",
    );
    wd.click("#confirm-ok");
}

#[test]
fn lab_wave_seen_and_paused_from_the_dashboard_in_chromium() {
    if !nix::unistd::geteuid().is_root() {
        println!("SKIPPED: the lab needs root (namespaces, mounts, daemons); CI runs as root");
        return;
    }
    let Some((chromium, driver)) = find_browser() else {
        println!(
            "SKIPPED: chromium and/or chromedriver not installed (Debian packages `chromium` \
             `chromium-driver`; scripts/install-deps.sh installs them)"
        );
        return;
    };
    let t_start = Instant::now();
    for bin in ["sql-proxy", "migrator"] {
        scenarios::tools::find_or_build(bin).expect(bin);
    }
    let migrator = scenarios::tools::find("migrator").unwrap();
    let root = std::env::temp_dir().join(format!("hm-dash-{}", std::process::id()));
    std::fs::create_dir_all(&root).unwrap();
    let _rm = RemoveDir(root.clone());
    let dir = scenario_dir(&root);
    // Where `scenario::run_with` puts the migrator's files (`<state root>/<lab>-migration`).
    let mig_dir = root.join(format!("scn-dash-wave-{}-migration", std::process::id()));
    let journal = mig_dir.join("journal.sqlite");

    // The scenario (lab up, traffic, the real wave, the check) runs in the background.
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_scenarios"));
    let (sroot, sdir) = (root.clone(), dir.clone());
    let run = Scenario {
        journal: journal.clone(),
        run: Some(std::thread::spawn(move || {
            let opts = RunOptions { sites: Some(SITES) };
            scenario::run_with(&sdir, &sroot, &exe, &opts)
        })),
    };

    // The wave has started once it publishes its status in the journal.
    wait_until("the wave to start", 600, || {
        assert!(!run.ended(), "the scenario ended before the wave was seen");
        journal.exists() && wave_status(&migrator, &journal)["total"].as_u64() == Some(SITES as u64)
    });
    println!(
        "wave started after {:.1} s",
        t_start.elapsed().as_secs_f64()
    );

    // `migrator serve` on that journal, on the host's loopback.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let token_file = root.join("dashboard-token");
    let serve_log = std::fs::File::create(root.join("serve.log")).unwrap();
    let _serve = Guard(
        Command::new(&migrator)
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--journal",
            ])
            .arg(&journal)
            .arg("--plan")
            .arg(mig_dir.join("plan.json"))
            .arg("--token-file")
            .arg(&token_file)
            .stdin(Stdio::null())
            .stdout(serve_log.try_clone().unwrap())
            .stderr(serve_log)
            .spawn()
            .expect("start migrator serve"),
    );
    wait_until("migrator serve to listen", 60, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let token = std::fs::read_to_string(&token_file).unwrap();
    let cd = Chromedriver::start(&driver);
    let wd = WebDriver::new_session(cd.addr, &chromium);

    // Log in through the form, as an operator would.
    wd.goto(&format!("http://127.0.0.1:{port}/"));
    wd.type_into("#token", token.trim());
    wd.type_into("#who", "lab-browser-test");
    wd.click("#login");
    wd.wait_for(
        "the overview",
        20,
        "return document.body.dataset.page === 'overview'",
    );
    wd.wait_for(
        "wave 1 in the table",
        30,
        "return !!document.querySelector('#waves tr[data-wave=\"1\"]')",
    );

    // The live count changes on the page while the real wave runs.
    let first = wd.exec(&live_js("n")).as_i64().unwrap();
    println!("page: wave 1 live {first}/{SITES}");
    wd.wait_for(
        "the live count of wave 1 to change",
        300,
        &live_js(&format!("n > {first}")),
    );
    let seen = wd.exec(&live_js("n")).as_i64().unwrap();
    println!("page: wave 1 live {first} -> {seen}/{SITES}");
    assert!(
        seen > first && seen < SITES as i64,
        "live {first} -> {seen}"
    );

    // Pause from the page; the page and `migrator wave status` say paused.
    wd.click("button.pause[data-wave=\"1\"]");
    confirm(&wd);
    wd.wait_for(
        "the page to show wave 1 paused",
        20,
        "const c = document.querySelector('[data-control=\"1\"]'); \
         return !!c && c.textContent.includes('PAUSED');",
    );
    println!("page: wave 1 PAUSED");
    wait_until("the running wave to report itself paused", 30, || {
        wave_status(&migrator, &journal)["control"]["paused"] == serde_json::Value::Bool(true)
    });
    let st = wave_status(&migrator, &journal);
    let last = &st["control"]["last"];
    assert_eq!(
        (last["who"].as_str(), last["source"].as_str()),
        (Some("lab-browser-test"), Some("dashboard")),
        "{st}"
    );
    println!(
        "migrator wave status: paused={} ended={}/{}",
        st["control"]["paused"], st["ended"], st["total"]
    );

    // No new site starts while paused (the site in progress may finish its own steps).
    std::thread::sleep(Duration::from_secs(3));
    let a = journaled_sites(&journal);
    std::thread::sleep(Duration::from_secs(5));
    let b = journaled_sites(&journal);
    assert_eq!(a, b, "a site started while the wave was paused");
    assert!(
        b < SITES,
        "the wave finished before the pause could be seen"
    );
    println!("paused: {b} sites started, none new in 5 s");

    let png = wd.screenshot();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-lab-paused.png");
    std::fs::write(&shot, &png).unwrap();
    println!("screenshot: {}", shot.display());

    // Resume from the page; the wave finishes and the scenario's check holds.
    wd.click("button.resume[data-wave=\"1\"]");
    confirm(&wd);
    wd.wait_for(
        "the page to show wave 1 done",
        600,
        &live_js(&format!("n === {SITES}")),
    );
    println!("page: wave 1 live {SITES}/{SITES}");
    drop(wd);
    drop(cd);
    let report = run.finish();
    let m = report.migration.as_ref().expect("migration report");
    assert_eq!(m.states.get("live"), Some(&SITES), "{:?}", m.states);
    assert!(report.passed(), "{:?}", report.violations);
    assert!(report.check.lost_writes.is_empty(), "{:?}", report.check);
    println!(
        "scenario check: {} requests, {} lost writes; test took {:.1} s",
        report.check.requests,
        report.check.lost_writes.len(),
        t_start.elapsed().as_secs_f64()
    );
}
