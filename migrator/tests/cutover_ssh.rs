//! The engine with an `ssh://` destination home: a real sshd on loopback (host key checked),
//! `migrator receive` on the far side, two real HAProxies. A wrong host key stops the site
//! before its freeze; the right one takes it live; a rollback is refused before any freeze
//! (the far side can only receive).

mod shop_support;

use drivers::lb::{AdminState, Haproxy, LoadBalancer};
use migrator::cutover::rollback::rollback_site;
use migrator::cutover::{Engine, EngineOptions};
use migrator::dry_run::Recorder;
use migrator::journal::{JournalStore, SiteState, SqliteJournal};
use migrator::real_systems::LocalData;
use migrator::site_spec::{SiteSpec, SpecFile};
use migrator::systems::Systems;
use shop_support::Shop;
use std::path::Path;
use std::sync::Arc;
use testkit::Sshd;

fn spec_with(d: &Path, new_home: &str, shop: &Shop) -> SiteSpec {
    let json = shop.spec_json(d, new_home.into());
    let f = SpecFile::parse(&json.to_string(), &d.join("sites.json")).unwrap();
    f.sites[0].clone()
}

#[test]
fn home_over_ssh_goes_live_after_a_refused_host_key_and_rollback_is_refused_up_front() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sshd = Sshd::start().unwrap();
    let shop = Shop::start();
    let (old, new, old_lb) = (&shop.old, &shop.new, &shop.old_lb);
    std::fs::create_dir_all(d.join("old/shop/www/uploads")).unwrap();
    std::fs::write(d.join("old/shop/www/index.php"), "<?php echo 1;").unwrap();
    std::fs::write(d.join("old/shop/www/uploads/a.txt"), "upload").unwrap();
    let far = d.join("far/homez.9/shop");
    let url = |kh: &Path| {
        format!(
            "ssh://{}@127.0.0.1:{}{}?known_hosts={}&identity={}&migrator={}",
            sshd.user(),
            sshd.port(),
            far.display(),
            kh.display(),
            sshd.client_key().display(),
            env!("CARGO_BIN_EXE_migrator")
        )
    };
    let jp = d.join("j.sqlite");
    let rec = Recorder::for_site(&spec_with(d, "/x", &shop), false);
    let sys = Systems {
        lb_old: Arc::new(Haproxy::new(shop.old_hp.socket())),
        lb_new: Arc::new(Haproxy::new(shop.new_hp.socket())),
        dns: None,
        proxy: rec.systems(&spec_with(d, "/x", &shop)).proxy,
        tunnel: None,
        data: Arc::new(LocalData::new(&jp)),
    };
    let o = EngineOptions::default();

    // A changed host key: refused before authentication, the site never freezes.
    let bad = spec_with(d, &url(&sshd.known_hosts_with_wrong_key().unwrap()), &shop);
    let mut j = SqliteJournal::open(&jp).unwrap();
    let err = Engine::new(&bad, &sys, &mut j, &o).migrate().unwrap_err();
    assert!(err.to_string().contains("sync"), "{err}");
    assert_eq!(j.site_state("shop").unwrap(), Some(SiteState::Prepared));
    let s = old_lb.server_state("be_shop", "srv").unwrap();
    assert_eq!((s.addr, s.admin), (old.addr, AdminState::Ready));
    assert!(!far.exists());

    // The right key: live, the files on the far side.
    let good = spec_with(d, &url(&sshd.known_hosts().unwrap()), &shop);
    let r = Engine::new(&good, &sys, &mut j, &o).migrate().unwrap();
    assert_eq!(r.state, SiteState::Live);
    assert_eq!(
        std::fs::read_to_string(far.join("www/uploads/a.txt")).unwrap(),
        "upload"
    );
    let s = old_lb.server_state("be_shop", "srv").unwrap();
    assert_eq!((s.addr, s.admin), (new.addr, AdminState::Ready));
    assert!(
        !Path::new("ssh:").exists(),
        "no local directory named after the URL"
    );

    // Rollback cannot copy back from a receive-only far side: refused, nothing frozen.
    let err = rollback_site(Engine::new(&good, &sys, &mut j, &o)).unwrap_err();
    assert!(err.to_string().contains("not supported"), "{err}");
    assert_eq!(
        old_lb.server_state("be_shop", "srv").unwrap().admin,
        AdminState::Ready
    );
    assert_eq!(j.site_state("shop").unwrap(), Some(SiteState::Live));
}
