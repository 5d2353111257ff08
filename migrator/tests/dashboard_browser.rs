//! The dashboard in a real headless Chromium (Debian `chromium` + `chromium-driver`, driven over
//! WebDriver): log in, watch the overview during a running wave (the engine's `run_wave` with
//! the recording systems of `dry_run`, each file pass slowed so the wave takes seconds), see
//! the counts change, pause the wave from the page, see the wave pause (the page says so, the
//! journal records who, and no new site starts), then resume it from the page and let it
//! finish. A screenshot is saved under the test's target tmp dir (path printed), and copied to
//! `$DASHBOARD_SCREENSHOT` when that is set (the README's picture).
//!
//! Skips, saying why, only when chromium or chromedriver is not installed
//! (`scripts/install-deps.sh` installs both).

mod dashboard_support;

use dashboard_support::*;
use migrator::control;
use migrator::cutover::EngineOptions;
use migrator::dry_run::Recorder;
use migrator::journal::{JournalStore, SqliteJournal};
use migrator::serve::{self, ServeOptions};
use migrator::site_spec::{sample, SiteSpec};
use migrator::systems::{DataMover, Direction, SysResult, Systems};
use migrator::wave::{run_wave, WaveOptions};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The recording data mover, with each file pass taking `delay` (a real copy takes time).
struct Slow {
    inner: Arc<dyn DataMover>,
    delay: Duration,
}

impl DataMover for Slow {
    fn prepare(&self, spec: &SiteSpec) -> SysResult<()> {
        self.inner.prepare(spec)
    }
    fn sync_files(&self, spec: &SiteSpec, dir: Direction) -> SysResult<u64> {
        std::thread::sleep(self.delay);
        self.inner.sync_files(spec, dir).map(|b| b + 5_000_000)
    }
    fn copy_dbs(
        &self,
        spec: &SiteSpec,
        dbs: &[String],
        dir: Direction,
        delta: bool,
    ) -> SysResult<u64> {
        self.inner.copy_dbs(spec, dbs, dir, delta)
    }
    fn verify(&self, spec: &SiteSpec, dbs: &[String]) -> SysResult<Vec<String>> {
        self.inner.verify(spec, dbs)
    }
    fn fingerprint(&self, spec: &SiteSpec) -> SysResult<Option<String>> {
        self.inner.fingerprint(spec)
    }
}

/// A script returning `expr` over `n`, the live count in wave 1's row of the overview.
fn live_js(expr: &str) -> String {
    format!(
        "const r = document.querySelector('#waves tr[data-wave=\"1\"]'); \
         if (!r) return null; const n = parseInt(r.children[4].textContent); return {expr};"
    )
}

fn journaled_sites(j: &std::path::Path) -> usize {
    SqliteJournal::open(j).unwrap().sites().unwrap().len()
}

#[test]
fn overview_during_a_wave_then_pause_it_from_the_page() {
    let Some((chromium, driver)) = find_browser() else {
        println!(
            "SKIPPED: chromium and/or chromedriver not installed (Debian packages `chromium` \
             `chromium-driver`; scripts/install-deps.sh installs them)"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal.sqlite");
    let plan = dir.path().join("plan.json");
    let names: Vec<String> = (0..24).map(|i| format!("site{i:02}")).collect();
    write_plan(&plan, &[(1, names.clone()), (2, vec!["later".into()])]);
    {
        let mut j = SqliteJournal::open(&journal).unwrap();
        j.set_plan(&format!("{}#wave1", plan.display())).unwrap();
    }
    let specs: Vec<SiteSpec> = names.iter().map(|n| sample(n)).collect();
    let rec = Recorder::for_site(&specs[0], false);
    for s in &specs[1..] {
        rec.add_site(s);
    }

    let opts = ServeOptions {
        journal: journal.clone(),
        listen: "127.0.0.1:0".parse().unwrap(),
        token_file: dir.path().join("token"),
        plan: None,
        sites: None,
    };
    let (app, token, _) = serve::build(&opts, None).unwrap();
    let srv = serve::Background::start(app, opts.listen).unwrap();
    let base = format!("http://{}", srv.addr);

    let cd = Chromedriver::start(&driver);
    let wd = WebDriver::new_session(cd.addr, &chromium);

    // The wave runs in the background the whole time.
    let engine = EngineOptions {
        gate_wait: Duration::from_millis(100),
        gate_poll: Duration::from_millis(20),
        ..Default::default()
    };
    let interrupt = engine.interrupt.clone();
    let wave_journal = journal.clone();
    let wave = std::thread::spawn(move || {
        let build = |s: &SiteSpec| {
            let mut sys: Systems = rec.systems(s);
            sys.data = Arc::new(Slow {
                inner: sys.data.clone(),
                delay: Duration::from_millis(350),
            });
            Ok(sys)
        };
        let w = WaveOptions {
            wave: 1,
            concurrency: 2,
            ..Default::default()
        };
        run_wave(&wave_journal, &specs, &build, &w, &engine, &|_| {})
    });
    // Whatever happens below, the wave thread stops starting sites at the end.
    struct StopWave(Arc<std::sync::atomic::AtomicBool>);
    impl Drop for StopWave {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
    let _stop = StopWave(interrupt);

    // Log in through the form, as an operator would.
    wd.goto(&format!("{base}/"));
    assert!(wd
        .exec("return document.title")
        .as_str()
        .unwrap()
        .contains("Log in"));
    wd.type_into("#token", &token.value);
    wd.type_into("#who", "browser-test");
    wd.click("#login");
    wd.wait_for(
        "the overview",
        20,
        "return document.body.dataset.page === 'overview'",
    );
    assert!(
        !wd.url().contains("token="),
        "the token never stays in the address"
    );

    // Counts change while the wave runs.
    wd.wait_for(
        "wave 1 in the table",
        20,
        "return !!document.querySelector('#waves tr[data-wave=\"1\"]')",
    );
    let first = wd.exec(&live_js("n")).as_i64().unwrap();
    wd.wait_for(
        "the live count of wave 1 to change",
        60,
        &live_js(&format!("n > {first}")),
    );
    let seen = wd.exec(&live_js("n")).as_i64().unwrap();
    assert!(seen > first && seen < 24, "live {first} → {seen} of 24");

    // Pause from the page: the in-page confirmation, then the page and the journal say paused.
    wd.click("button.pause[data-wave=\"1\"]");
    wd.wait_for(
        "the confirmation",
        5,
        "return !document.getElementById('confirm').hidden",
    );
    wd.click("#confirm-ok");
    wd.wait_for(
        "the page to show wave 1 paused",
        20,
        "const c = document.querySelector('[data-control=\"1\"]'); \
         return !!c && c.textContent.includes('PAUSED');",
    );
    let st = control::current(&journal, 1).unwrap();
    assert!(st.paused);
    let last = st.last.unwrap();
    assert_eq!(
        (last.who.as_str(), last.source.as_str()),
        ("browser-test", "dashboard")
    );

    // The wave obeys: after the sites already started finish, no new site starts.
    std::thread::sleep(Duration::from_secs(3));
    let a = journaled_sites(&journal);
    std::thread::sleep(Duration::from_secs(3));
    let b = journaled_sites(&journal);
    assert_eq!(a, b, "a site started while the wave was paused");
    assert!(b < 24, "the wave finished before the pause could be seen");
    let published = control::Controls::open(&journal)
        .unwrap()
        .status(Some(1))
        .unwrap()
        .expect("the running wave publishes its status");
    assert!(
        published.control.paused,
        "the running wave reports itself paused"
    );

    let png = wd.screenshot();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-overview.png");
    std::fs::write(&shot, &png).unwrap();
    println!("screenshot: {}", shot.display());
    if let Some(dest) = std::env::var_os("DASHBOARD_SCREENSHOT") {
        std::fs::write(&dest, &png).unwrap();
        println!("screenshot copied to {}", dest.to_string_lossy());
    }

    // Resume from the page; the wave finishes.
    wd.click("button.resume[data-wave=\"1\"]");
    wd.wait_for(
        "the confirmation",
        5,
        "return !document.getElementById('confirm').hidden",
    );
    wd.click("#confirm-ok");
    let t0 = Instant::now();
    while !wave.is_finished() {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "the wave did not finish after the resume"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let report = wave.join().unwrap();
    assert_eq!(report.live, 24, "{:?}", report.stopped);
    wd.wait_for("the page to show wave 1 done", 20, &live_js("n === 24"));

    // The route check (lease-watch records one every round): a banner while the proxy
    // disagrees with the journal, gone once a check is clean again.
    let banner = "const b = document.getElementById('routes-banner'); \
                  return !!b && !b.hidden && b.textContent.includes('disagrees with the journal') \
                  && !!b.querySelector('li[data-database=\"shop_db\"]');";
    assert_eq!(
        wd.exec(&format!("{{ {banner} }}")),
        serde_json::Value::Bool(false)
    );
    migrator::route_check::store::record(&journal, &route_mismatch_report()).unwrap();
    wd.wait_for("the route mismatch banner", 20, banner);
    migrator::route_check::store::record(&journal, &Default::default()).unwrap();
    wd.wait_for(
        "the banner to go once the check is clean",
        20,
        "return document.getElementById('routes-banner').hidden",
    );
    drop(wd);
    drop(srv);
}
