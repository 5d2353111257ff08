//! Issue 20 against the real lab brought up with artifacts (2 sites, real nginx, php-fpm,
//! HAProxy, sshd and the real `migrator`): every site's web rules (a redirect, a header) and
//! PHP pool (its own settings, read back through `/?op=phpinfo`) are served by old-dc from
//! the start; one site's switch moves them to new-dc (staged by prepare over SSH, enabled at
//! the switch, both sides' nginx and php-fpm reloaded), its pool leaves old-dc's php-fpm; its
//! rollback brings them back on old-dc. The other site stays on old-dc throughout, untouched.
//! Root only (CI runs as root).

use migrator::journal::{JournalStore, SiteState as Journaled};
use scenarios::lab::{LabConfig, LabGuard};
use scenarios::migration::{MigrationSection, Migrator};
use scenarios::sites::SiteSpec;
use scenarios::state::{DcState, LabState, SiteState};
use scenarios::web_artifacts::{check_served, pool_socket};
use std::net::SocketAddr;
use std::path::Path;

/// The site as `addr` serves it, asked from the lab's client namespace.
fn served(st: &LabState, addr: SocketAddr, site: &SiteState) -> Vec<String> {
    let s = site.clone();
    scenarios::topology::in_netns(&st.client.netns, move || check_served(addr, &s))
        .expect("client namespace")
}

/// Whether `site`'s own pool listens on `dc`'s php-fpm.
fn pool_listens(dc: &DcState, site: &SiteState) -> bool {
    let sock = pool_socket(dc, &site.login).expect("a lab with artifacts");
    std::os::unix::net::UnixStream::connect(sock).is_ok()
}

/// The traffic generator's `web_rules` op alone for a moment (the `scenarios` binary in the
/// client namespace, every site through its DNS name): its records, every one checked.
fn web_rules_traffic(st: &LabState, log: &Path) -> Vec<scenarios::traffic::LogRecord> {
    let spec = serde_json::json!({
        "duration_secs": 2, "max_requests": 30, "concurrency": 2, "http_read": 0,
        "http_write": 0, "http_verify": 0, "sql_read": 0, "sql_write": 0, "web_rules": 1
    });
    let exe = env!("CARGO_BIN_EXE_scenarios");
    let out = scenarios::process::in_ns(None, &st.client.netns, exe)
        .arg("traffic")
        .arg("--state-dir")
        .arg(&st.state_dir)
        .arg("--out")
        .arg(log)
        .arg("--spec")
        .arg(spec.to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "traffic: {out:?}");
    let records = scenarios::check::read_log(log).unwrap();
    assert!(!records.is_empty());
    assert!(records
        .iter()
        .all(|r| r.op == scenarios::traffic::Op::WebRules));
    records
}

fn failures(records: &[scenarios::traffic::LogRecord]) -> Vec<String> {
    records
        .iter()
        .filter(|r| !r.ok)
        .map(|r| format!("{}: {:?}", r.site, r.error))
        .collect()
}

fn log_of(m: &Migrator) -> String {
    std::fs::read_to_string(&m.log).unwrap_or_default()
}

#[test]
fn web_rules_and_php_pools_move_with_the_switch_and_come_back_with_the_rollback() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: the lab needs root (namespaces, mounts, daemons); CI runs as root");
        return;
    }
    for bin in ["sql-proxy", "migrator"] {
        scenarios::tools::find_or_build(bin).expect(bin);
    }
    let root = std::env::temp_dir().join(format!("hm-webphp-{}", std::process::id()));
    std::fs::create_dir_all(&root).unwrap();
    let mut cfg = LabConfig::new(&format!("webphp-{}", std::process::id()), &root, 2);
    cfg.artifacts = true;
    cfg.spec = SiteSpec {
        small_files: 5,
        large_files: 0,
        large_file_kib: 0,
        rows: 20,
        db_mib: Vec::new(),
    };
    // Torn down on drop, failed assertions included.
    let lab = LabGuard::up(&cfg).expect("lab up --artifacts");
    let st = lab.state.clone();
    let old_vip = SocketAddr::from((st.old.vip, 80));
    let new_vip = SocketAddr::from((st.new.vip, 80));
    let old_web = SocketAddr::from((st.old.web_addr, 80));

    // Before: old-dc serves each site with its own rules and pool.
    for s in &st.sites {
        assert_eq!(served(&st, old_vip, s), Vec::<String>::new(), "{}", s.login);
        assert!(pool_listens(&st.old, s), "{}: no pool on old-dc", s.login);
        assert!(!pool_listens(&st.new, s), "{}: a pool on new-dc", s.login);
    }
    let r = web_rules_traffic(&st, &root.join("traffic-before.jsonl"));
    assert_eq!(failures(&r), Vec::<String>::new());
    // The check sees a mix-up: site0001 answered with site0002's settings and header.
    let mut mixed = st.sites[0].clone();
    mixed.php = st.sites[1].php.clone();
    mixed.web_rules = st.sites[1].web_rules.clone();
    let d = served(&st, old_vip, &mixed);
    assert!(
        d.iter().any(|l| l.starts_with("header X-Site"))
            && d.iter().any(|l| l.starts_with("php: memory_limit")),
        "{d:?}"
    );

    // One site's switch (the plan's wave 1 holds one site), with the runbook's commands.
    let m = Migrator::setup(&st, &root.join("migration"), 1).expect("specs and plan");
    let sec: MigrationSection = toml::from_str("kind = \"wave\"\nsites = 1").unwrap();
    let mut code = m.wave(&sec).status().unwrap().code();
    if code != Some(0) {
        // The runbook's answer to an aborted site: the same command again.
        code = m.wave(&sec).status().unwrap().code();
    }
    assert_eq!(code, Some(0), "wave run: {}", log_of(&m));
    let j = migrator::journal::open_journal_at(&m.journal).unwrap();
    let live: Vec<String> = j
        .sites()
        .unwrap()
        .into_iter()
        .filter(|(_, s)| *s == Journaled::Live)
        .map(|(site, _)| site)
        .collect();
    assert_eq!(live.len(), 1, "{live:?}");
    let moved = st
        .sites
        .iter()
        .find(|s| s.login == live[0])
        .unwrap()
        .clone();
    let stayed = st
        .sites
        .iter()
        .find(|s| s.login != live[0])
        .unwrap()
        .clone();

    // After: new-dc serves the moved site with the same rules and fingerprint (through its
    // VIP, and the old VIP that now forwards there); old-dc's php-fpm has no pool for it, and
    // old-dc's nginx would serve it without its rules and pool.
    assert_eq!(served(&st, new_vip, &moved), Vec::<String>::new());
    assert_eq!(served(&st, old_vip, &moved), Vec::<String>::new());
    assert!(pool_listens(&st.new, &moved), "no pool for it on new-dc");
    assert!(
        !pool_listens(&st.old, &moved),
        "its pool still listens on old-dc"
    );
    let at_old = served(&st, old_web, &moved);
    assert!(
        at_old.iter().any(|l| l.starts_with("header X-Site")),
        "old-dc's nginx still has its rules: {at_old:?}"
    );
    // The other site is where it was, as it was.
    assert_eq!(served(&st, old_vip, &stayed), Vec::<String>::new());
    assert!(pool_listens(&st.old, &stayed) && !pool_listens(&st.new, &stayed));
    // The traffic (through DNS, now at new-dc's VIP for the moved site) sees it all.
    let r = web_rules_traffic(&st, &root.join("traffic-after.jsonl"));
    assert_eq!(failures(&r), Vec::<String>::new());

    // The rollback: old-dc serves the site again with its rules and pool; new-dc's is gone.
    let exe = scenarios::tools::find("migrator").unwrap();
    let out = scenarios::process::in_ns(None, &st.client.netns, &exe.to_string_lossy())
        .args(["rollback", &moved.login, "--sites"])
        .arg(&m.sites_file)
        .arg("--journal")
        .arg(&m.journal)
        .output()
        .unwrap();
    assert!(out.status.success(), "rollback: {out:?}\n{}", log_of(&m));
    assert_eq!(served(&st, old_vip, &moved), Vec::<String>::new());
    assert!(
        pool_listens(&st.old, &moved),
        "no pool on old-dc after the rollback"
    );
    assert!(
        !pool_listens(&st.new, &moved),
        "its pool still listens on new-dc"
    );
    assert_eq!(served(&st, old_vip, &stayed), Vec::<String>::new());
    let r = web_rules_traffic(&st, &root.join("traffic-rolled-back.jsonl"));
    assert_eq!(failures(&r), Vec::<String>::new());

    // The switch's post-check ran (the spec has `verify_served`: a difference in what
    // new-dc served would have rolled the site back, and it was live).
    let steps: Vec<String> = j
        .steps(&moved.login)
        .unwrap()
        .iter()
        .map(|s| s.phase.clone())
        .collect();
    eprintln!("{}: {steps:?}", moved.login);
    assert!(steps.iter().any(|p| p == "post-check"), "{steps:?}");
    drop(lab);
    let _ = std::fs::remove_dir_all(Path::new(&root));
}
