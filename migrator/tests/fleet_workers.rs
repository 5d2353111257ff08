//! Three `migrator worker` processes (the real binary) share one wave through a real MariaDB
//! journal: `migrator wave start` writes the move groups, the workers claim them
//! (`SELECT … FOR UPDATE SKIP LOCKED` and a claim lease), one worker is SIGKILLed (by its PID)
//! while it holds a group, and the others take that group over once its claim runs out. Every
//! site ends live, switched exactly once. The sites are real: file homes copied, two real
//! HAProxies switched (as in `wave_cli.rs`); no databases.

mod shop_support;

use migrator::fleet::Fleet;
use migrator::journal::{open_journal_at, JournalStore, SiteState};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use testkit::mariadb::ADMIN_PASSWORD;
use testkit::{Haproxy as HaproxyServer, MariaDb, TinyHttp};

/// Workers SIGKILLed (by their PIDs) when the test ends, whatever happened.
struct Workers(Vec<Option<Child>>);

impl Drop for Workers {
    fn drop(&mut self) {
        for c in self.0.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn ok(c: &mut Command) -> std::process::Output {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The sites of wave 1 of a generated plan, each with a home and a backend on both HAProxies;
/// returns the sites, the plan and the spec file.
fn world(
    d: &Path,
    old: &TinyHttp,
    new: &TinyHttp,
) -> (Vec<String>, PathBuf, PathBuf, Vec<HaproxyServer>) {
    let bin = env!("CARGO_BIN_EXE_migrator");
    ok(Command::new(bin)
        .args(["inventory", "generate", "--sites", "40", "--out"])
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
    assert!(sites.len() >= 4, "{sites:?}");
    let (old_hp, new_hp) = shop_support::many_sites(d, &sites, old, new);
    (
        sites,
        d.join("plan.json"),
        d.join("sites.json"),
        vec![old_hp, new_hp],
    )
}

#[test]
fn workers_share_a_wave_and_take_over_a_killed_workers_group() {
    let server = MariaDb::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let pw = d.join("journal.pw");
    std::fs::write(&pw, format!("{ADMIN_PASSWORD}\n")).unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    let url = format!(
        "mysql://admin@127.0.0.1:{}/fleet?password_file={}",
        server.port(),
        pw.display()
    );
    let old = TinyHttp::start("x").unwrap();
    let new = TinyHttp::start("x").unwrap();
    let (sites, plan, spec_file, _haproxies) = world(d, &old, &new);
    let bin = env!("CARGO_BIN_EXE_migrator");

    // A worker refuses a wave nobody started.
    let out = Command::new(bin)
        .args(["worker", "1", "--sites"])
        .arg(&spec_file)
        .env("HOSTMOVE_JOURNAL", &url)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("wave 1 is not started"));

    let out = ok(Command::new(bin)
        .args(["wave", "start", "1", "--plan"])
        .arg(&plan)
        .arg("--sites")
        .arg(&spec_file)
        .args(["--journal", &url]));
    assert!(String::from_utf8_lossy(&out.stdout).contains("wave 1 started"));

    let spawn = |i: usize| {
        Command::new(bin)
            .args([
                "worker",
                "1",
                "--claim-lease",
                "3",
                "--poll",
                "100",
                "--sites",
            ])
            .arg(&spec_file)
            .args(["--journal", &url])
            // Issue 19: each live site's bundle, captured by the worker that moved it.
            .arg("--bundle-store")
            .arg(d.join("bundles"))
            .arg("--bundle-key")
            .arg(d.join("bundle.key"))
            // Each site waits after its sync: the kill lands while a group is held.
            .env("MIGRATOR_DRILL_PAUSE_AFTER", "sync=1500")
            .stdout(std::fs::File::create(d.join(format!("w{i}.out"))).unwrap())
            .stderr(std::fs::File::create(d.join(format!("w{i}.err"))).unwrap())
            .stdin(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut w = Workers((0..3).map(|i| Some(spawn(i))).collect());

    // The victim: worker 0, once it holds a group.
    let victim_pid = w.0[0].as_ref().unwrap().id();
    let t0 = Instant::now();
    let held = loop {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "worker 0 never claimed"
        );
        let owners = server
            .exec("SELECT grp, owner FROM fleet.wave_groups WHERE state = 'claimed'")
            .unwrap_or_default();
        let mine: Vec<u32> = owners
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .filter(|(_, o)| o.split(':').nth(1) == Some(&victim_pid.to_string()))
            .map(|(g, _)| g.parse().unwrap())
            .collect();
        if let Some(g) = mine.first() {
            break *g;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut victim = w.0[0].take().unwrap();
    victim.kill().unwrap();
    victim.wait().unwrap();

    // The others finish the wave, the victim's group included.
    for (i, c) in w.0.iter_mut().enumerate().skip(1) {
        let t = Instant::now();
        let status = loop {
            if let Some(s) = c.as_mut().unwrap().try_wait().unwrap() {
                break s;
            }
            assert!(
                t.elapsed() < Duration::from_secs(180),
                "worker {i} did not end"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        let err = std::fs::read_to_string(d.join(format!("w{i}.err"))).unwrap();
        assert!(status.success(), "worker {i}: {err}");
        *c = None;
    }
    let logs: String = (1..3)
        .map(|i| std::fs::read_to_string(d.join(format!("w{i}.err"))).unwrap())
        .collect();
    assert!(
        logs.contains(&format!("group {held} (")) && logs.contains("taken over (claim 2)"),
        "{logs}"
    );
    let progress = Fleet::open(Path::new(&url)).unwrap().progress(1).unwrap();
    // `wave status` shows the fleet's groups from any host.
    let out =
        ok(Command::new(bin).args(["wave", "status", "--wave", "1", "--json", "--journal", &url]));
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["groups"]["done"], progress.done, "{st}");
    assert_eq!(st["groups"]["claimed"], 0, "{st}");
    assert!(progress.finished() && progress.done > 0, "{progress:?}");
    let attempts = server
        .exec(&format!(
            "SELECT attempts FROM fleet.wave_groups WHERE grp = {held}"
        ))
        .unwrap();
    assert_eq!(attempts.trim(), "2");

    // Every site live, on the new side, switched exactly once.
    let j = open_journal_at(Path::new(&url)).unwrap();
    for s in &sites {
        assert_eq!(j.site_state(s).unwrap(), Some(SiteState::Live), "{s}");
        assert!(d.join("new").join(s).join("index.php").exists(), "{s}");
        let switched = j
            .steps(s)
            .unwrap()
            .iter()
            .filter(|st| st.phase == "switch" && st.status.name() == "done")
            .count();
        assert_eq!(switched, 1, "{s}");
        // Its bundle, captured (by the worker that moved it) before that worker ended.
        let b = migrator::bundle::state::get(&*j, s).unwrap().unwrap();
        assert_eq!(b.stage, migrator::bundle::state::Stage::Captured, "{s}");
        let store = migrator::bundle::store::LocalStore::new(&d.join("bundles"));
        let r = migrator::bundle::store::BundleRef::parse(&b.bundle).unwrap();
        migrator::bundle::check::manifest(&store, &r).unwrap();
    }
}
