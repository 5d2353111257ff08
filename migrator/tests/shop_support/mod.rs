//! Fixtures shared by the engine's integration tests: the site `shop` with a real web server
//! on each side and a real HAProxy in front of each (backend `be_shop`, server `srv`), the new
//! side's server in maintenance, and the site's spec as JSON; and [`many_sites`], the same for
//! every site of a generated plan's wave.

// Each test binary uses its own part of the fixture.
#![allow(dead_code)]

use drivers::lb::{AdminState, Haproxy, LoadBalancer};
use migrator::journal::{JournalStore, SiteState, SqliteJournal};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use testkit::{Backend, Haproxy as HaproxyServer, TinyHttp};

pub struct Shop {
    pub old: TinyHttp,
    pub new: TinyHttp,
    pub old_hp: HaproxyServer,
    pub new_hp: HaproxyServer,
    pub old_lb: Haproxy,
    pub new_lb: Haproxy,
}

impl Shop {
    /// Starts both web servers and both HAProxies; the new side's server is put in maintenance.
    pub fn start() -> Shop {
        let old = TinyHttp::start("shop").unwrap();
        let new = TinyHttp::start("shop").unwrap();
        let be = |a: std::net::SocketAddr| {
            vec![Backend {
                name: "be_shop".into(),
                addr: a.to_string(),
            }]
        };
        let old_hp = HaproxyServer::start(&be(old.addr)).unwrap();
        let new_hp = HaproxyServer::start(&be(new.addr)).unwrap();
        let (old_lb, new_lb) = (Haproxy::new(old_hp.socket()), Haproxy::new(new_hp.socket()));
        new_lb
            .set_server_admin("be_shop", "srv", AdminState::Maint)
            .unwrap();
        Shop {
            old,
            new,
            old_hp,
            new_hp,
            old_lb,
            new_lb,
        }
    }

    /// The proxy token, `shop`'s old home with an index page, and `d/sites.json` with its new
    /// home under `d/new/shop`: a site ready for `migrator site migrate`.
    pub fn write_local_site(&self, d: &Path) {
        write_token(d);
        std::fs::create_dir_all(d.join("old/shop/www")).unwrap();
        std::fs::write(d.join("old/shop/www/index.php"), "<?php echo 1;").unwrap();
        let spec = self.spec_json(d, d.join("new/shop").to_str().unwrap().into());
        std::fs::write(d.join("sites.json"), spec.to_string()).unwrap();
    }

    /// The sites file (as JSON, not from the struct, so new optional spec fields do not break
    /// it) for `shop` with its old home under `d/old/shop` and its new home at `new_home`.
    pub fn spec_json(&self, d: &Path, new_home: serde_json::Value) -> serde_json::Value {
        let token = d.join("token");
        serde_json::json!({"sites": [{
            "site": "shop",
            "old_vip": "127.0.0.1", "new_vip": "127.0.0.2",
            "old_lb": {"socket": self.old_hp.socket(), "backend": "be_shop", "server": "srv"},
            "new_lb": {"socket": self.new_hp.socket(), "backend": "be_shop", "server": "srv"},
            "old_web": self.old.addr, "new_web": self.new.addr,
            "homes": [{"old": d.join("old/shop"), "new": new_home}],
            "old_db_url_file": d.join("old.url"), "new_db_url_file": d.join("new.url"),
            "proxy": {"admin": "127.0.0.1:9", "token_file": token},
        }]})
    }
}

/// The proxy token file the specs name, `d/token` (0600).
pub fn write_token(d: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let token = d.join("token");
    std::fs::write(&token, "t").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// Like [`Shop`] for many sites: one HAProxy in front of each web server with a backend
/// `be_<site>` per site (the new side's servers in maintenance), a home with an index page
/// under `d/old/<site>`, and the sites file `d/sites.json`. Returns the two HAProxies: keep
/// them alive while the sites move.
pub fn many_sites(
    d: &Path,
    sites: &[String],
    old: &TinyHttp,
    new: &TinyHttp,
) -> (HaproxyServer, HaproxyServer) {
    let be = |a: std::net::SocketAddr| -> Vec<Backend> {
        sites
            .iter()
            .map(|s| Backend {
                name: format!("be_{s}"),
                addr: a.to_string(),
            })
            .collect()
    };
    let old_hp = HaproxyServer::start(&be(old.addr)).unwrap();
    let new_hp = HaproxyServer::start(&be(new.addr)).unwrap();
    write_token(d);
    let token = d.join("token");
    let specs: Vec<serde_json::Value> = sites
        .iter()
        .map(|s| {
            let home = d.join("old").join(s);
            std::fs::create_dir_all(&home).unwrap();
            std::fs::write(home.join("index.php"), s.as_bytes()).unwrap();
            Haproxy::new(new_hp.socket())
                .set_server_admin(&format!("be_{s}"), "srv", AdminState::Maint)
                .unwrap();
            serde_json::json!({
                "site": s,
                "old_vip": "127.0.0.1", "new_vip": "127.0.0.2",
                "old_lb": {"socket": old_hp.socket(), "backend": format!("be_{s}"), "server": "srv"},
                "new_lb": {"socket": new_hp.socket(), "backend": format!("be_{s}"), "server": "srv"},
                "old_web": old.addr, "new_web": new.addr,
                "homes": [{"old": home, "new": d.join("new").join(s)}],
                "old_db_url_file": d.join("old.url"), "new_db_url_file": d.join("new.url"),
                "proxy": {"admin": "127.0.0.1:9", "token_file": token},
            })
        })
        .collect();
    std::fs::write(
        d.join("sites.json"),
        serde_json::json!({ "sites": specs }).to_string(),
    )
    .unwrap();
    (old_hp, new_hp)
}

/// The `migrator` binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_migrator")
}

/// `shop`'s state in the journal `d/j.sqlite`.
pub fn state(d: &Path) -> Option<SiteState> {
    let j = SqliteJournal::open(&d.join("j.sqlite")).ok()?;
    j.site_state("shop").ok().flatten()
}

/// Kills the child (SIGKILL, by its PID) if a test fails before it does.
pub struct Killer(pub Child);

impl Drop for Killer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `site migrate shop` (sites file and journal under `d`) stalled for a minute after
/// `phase` (a crash drill), and waits until the journal shows the site in `reached`.
pub fn migrate_stalled_after(d: &Path, phase: &str, reached: SiteState) -> Killer {
    let child = Command::new(bin())
        .args(["site", "migrate", "shop", "--sites"])
        .arg(d.join("sites.json"))
        .args(["--journal"])
        .arg(d.join("j.sqlite"))
        .env("MIGRATOR_DRILL_PAUSE_AFTER", format!("{phase}=60000"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut k = Killer(child);
    let t0 = Instant::now();
    while state(d) != Some(reached) {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "never reached {reached:?} (state {:?})",
            state(d)
        );
        assert!(
            k.0.try_wait().unwrap().is_none(),
            "the migrator exited early"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    k
}
