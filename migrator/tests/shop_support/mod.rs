//! A one-site fixture shared by the engine's integration tests: the site `shop` with a real
//! web server on each side and a real HAProxy in front of each (backend `be_shop`, server
//! `srv`), the new side's server in maintenance, and the site's spec as JSON.

// Each test binary uses its own part of the fixture.
#![allow(dead_code)]

use drivers::lb::{AdminState, Haproxy, LoadBalancer};
use std::path::Path;
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
