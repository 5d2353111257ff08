//! A migrator process SIGKILLed (by PID) while a site is frozen, against two real HAProxies and
//! real file copies: the freeze lease names the dead owner, and `migrator lease-watch --once`
//! unfreezes the site on the side that owns its data (old before the commit point, new after
//! it). Then `migrator finalize` ends reversibility and `migrator rollback` refuses, saying why.

mod shop_support;

use drivers::lb::{AdminState, Haproxy, LoadBalancer};
use migrator::journal::{SiteState, SqliteJournal};
use shop_support::{bin, migrate_stalled_after, state, Shop};
use std::path::Path;
use std::process::{Command, Output};

fn run(args: &[&str], d: &Path) -> Output {
    Command::new(bin())
        .args(args)
        .args(["--sites"])
        .arg(d.join("sites.json"))
        .args(["--journal"])
        .arg(d.join("j.sqlite"))
        .output()
        .unwrap()
}

/// Starts `site migrate` with a drill pause after `phase`, waits until the journal shows the
/// site in `reached`, then SIGKILLs the process by PID.
fn kill_after(d: &Path, phase: &str, reached: SiteState) {
    let mut k = migrate_stalled_after(d, phase, reached);
    let pid = k.0.id();
    // SAFETY: kill(2) on the PID of our own child, which has not been reaped yet.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) }, 0);
    let _ = k.0.wait();
    let j = SqliteJournal::open(&d.join("j.sqlite")).unwrap();
    let lease = migrator::cutover::lease::get(&j, "shop")
        .unwrap()
        .expect("a lease");
    assert_eq!(lease.pid, pid, "the lease names the killed migrator");
}

#[test]
fn sigkilled_while_frozen_then_the_lease_watchdog_unfreezes_on_the_owning_side() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let shop = Shop::start();
    let (old, new, old_lb, new_lb) = (&shop.old, &shop.new, &shop.old_lb, &shop.new_lb);
    shop.write_local_site(d);
    let srv = |lb: &Haproxy| lb.server_state("be_shop", "srv").unwrap();

    // Killed inside the freeze, before the commit point: frozen on old, and it stays so.
    kill_after(d, "final-sync", SiteState::FinalSynced);
    assert_eq!(srv(old_lb).admin, AdminState::Maint, "frozen when killed");
    let show = Command::new(bin())
        .args(["site", "show", "shop", "--journal"])
        .arg(d.join("j.sqlite"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(text.contains("FROZEN under a lease of pid"), "{text}");
    let out = run(&["lease-watch", "--once"], d);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("recovered, now aborted"), "{text}");
    let s = srv(old_lb);
    assert_eq!(
        (s.addr, s.admin),
        (old.addr, AdminState::Ready),
        "serves from old"
    );
    assert_eq!(srv(new_lb).admin, AdminState::Maint);
    let j = SqliteJournal::open(&d.join("j.sqlite")).unwrap();
    assert!(migrator::cutover::lease::get(&j, "shop").unwrap().is_none());
    drop(j);
    // Nothing left to recover: a second look does nothing.
    let out = run(&["lease-watch", "--once"], d);
    assert!(out.status.success() && out.stdout.is_empty());

    // Killed after the switch (the commit point): the watchdog completes on the new side.
    kill_after(d, "switch", SiteState::Switched);
    assert_eq!(srv(old_lb).admin, AdminState::Maint, "frozen when killed");
    let out = run(&["lease-watch", "--once"], d);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("recovered, now live"), "{text}");
    let s = srv(old_lb);
    assert_eq!(
        (s.addr, s.admin),
        (new.addr, AdminState::Ready),
        "old VIP → new web"
    );
    assert_eq!(srv(new_lb).admin, AdminState::Ready);
    assert!(d.join("new/shop/www/index.php").exists());

    // Finalize: refused without a verified bundle of the state at the switch (issue 19),
    // allowed with a reason; after it rollback is refused with the reason.
    let out = run(&["finalize", "shop"], d);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("no bundle") && err.contains("--override-reason"),
        "{err}"
    );
    assert_eq!(state(d), Some(SiteState::Live));
    let out = run(
        &[
            "finalize",
            "shop",
            "--override-reason",
            "drill: no bundle store",
        ],
        d,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("shop: finalized"), "{text}");
    assert_eq!(state(d), Some(SiteState::Finalized));
    let out = run(&["rollback", "shop"], d);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("finalized: rollback is refused"), "{err}");
    assert_eq!(srv(old_lb).addr, new.addr, "nothing moved");
}

/// Issue 18 (5): two `migrator` processes on one site. The first holds the site's sync lease
/// from prepare on (here stalled right after prepare); the second is refused and touches
/// nothing, where it used to freeze and switch the site under the first one's sync. Once the
/// first is gone (SIGKILL, by PID), the second takes the site over and moves it.
#[test]
fn a_second_migrator_is_refused_while_the_first_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let shop = Shop::start();
    let (old, new, old_lb, new_lb) = (&shop.old, &shop.new, &shop.old_lb, &shop.new_lb);
    shop.write_local_site(d);
    let srv = |lb: &Haproxy| lb.server_state("be_shop", "srv").unwrap();

    let mut first = migrate_stalled_after(d, "prepare", SiteState::Prepared);
    let pid = first.0.id();

    let out = run(&["site", "migrate", "shop"], d);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the second migrator went ahead: {err}"
    );
    assert!(err.contains(&format!("leased by pid {pid}")), "{err}");
    assert_eq!(state(d), Some(SiteState::Prepared), "nothing moved");
    let s = srv(old_lb);
    assert_eq!(
        (s.addr, s.admin),
        (old.addr, AdminState::Ready),
        "old serves"
    );
    assert_eq!(srv(new_lb).admin, AdminState::Maint);
    assert!(!d.join("new/shop/www/index.php").exists(), "no file synced");

    // The first one dies: its sync lease frees the site at once on this host.
    // SAFETY: kill(2) on the PID of our own child, which has not been reaped yet.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) }, 0);
    let _ = first.0.wait();
    let out = run(&["site", "migrate", "shop"], d);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(state(d), Some(SiteState::Live));
    assert_eq!(srv(old_lb).addr, new.addr);
    assert!(d.join("new/shop/www/index.php").exists());
    let j = SqliteJournal::open(&d.join("j.sqlite")).unwrap();
    assert!(migrator::cutover::lease::get(&j, "shop").unwrap().is_none());
}
