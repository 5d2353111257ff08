//! The cutover engine with real hosted DNS, once per provider: the site spec's `dns` section
//! names Knot (RFC 2136 + TSIG) or PowerDNS (HTTP API), the migrator builds the driver from it
//! (`real_systems::dns`), and a migrate then a rollback move the record with everything else:
//! TTL lowered in prepare, the new VIP on every server after the switch, the old VIP again
//! after the rollback. Real HAProxies and real file copies around it, as in `cutover.rs`.

use drivers::dns::powerdns::PowerDnsConfig;
use drivers::dns::probe::{self, parse_name};
use drivers::dns::rfc2136::Rfc2136Config;
use drivers::dns::DnsConfig;
use drivers::lb::{AdminState, Haproxy, LoadBalancer};
use migrator::cutover::rollback::rollback_site;
use migrator::cutover::{Engine, EngineOptions};
use migrator::dry_run::Recorder;
use migrator::journal::{SiteState, SqliteJournal};
use migrator::real_systems::{self, LocalData};
use migrator::site_spec::{Budget, HomeSpec, LbSpec, ProxySpec, SiteSpec};
use migrator::systems::Systems;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use testkit::{Backend, Haproxy as HaproxyServer, Knot, Pdns, TinyHttp};

const OLD_VIP: &str = "127.0.0.1";
const NEW_VIP: &str = "127.0.0.2";
const NAME: &str = "shop.lab.example";

/// What `server` answers for the site's name: (addresses, TTL).
fn answer(server: SocketAddr) -> (Vec<IpAddr>, Option<u32>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let a = rt
        .block_on(probe::addresses(server, &parse_name("name", NAME).unwrap()))
        .unwrap();
    (a.addrs, a.ttl)
}

/// Migrates then rolls back one site whose DNS is `dns`, served by `servers`.
fn migrate_and_roll_back(dns: DnsConfig) {
    let servers = dns.target().servers.to_vec();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let old = TinyHttp::start("shop front page").unwrap();
    let new = TinyHttp::start("shop front page").unwrap();
    let be = |addr: SocketAddr| {
        vec![Backend {
            name: "be_shop".into(),
            addr: addr.to_string(),
        }]
    };
    let old_hp = HaproxyServer::start(&be(old.addr)).unwrap();
    let new_hp = HaproxyServer::start(&be(new.addr)).unwrap();
    Haproxy::new(new_hp.socket())
        .set_server_admin("be_shop", "srv", AdminState::Maint)
        .unwrap();
    let spec = SiteSpec {
        site: "shop".into(),
        dns: Some(dns),
        old_vip: OLD_VIP.parse().unwrap(),
        new_vip: NEW_VIP.parse().unwrap(),
        old_lb: LbSpec {
            socket: old_hp.socket().to_path_buf(),
            backend: "be_shop".into(),
            server: "srv".into(),
            tls: None,
        },
        new_lb: LbSpec {
            socket: new_hp.socket().to_path_buf(),
            backend: "be_shop".into(),
            server: "srv".into(),
            tls: None,
        },
        old_web: old.addr,
        new_web: new.addr,
        homes: vec![HomeSpec {
            old: d.join("old/homez.1/shop"),
            new: d.join("new/homez.9/shop"),
            compat_link: None,
            compat_target: None,
            feed: None,
            owner_map: None,
        }],
        new_web_host: None,
        databases: vec![],
        old_db_url_file: d.join("old.url"),
        new_db_url_file: d.join("new.url"),
        proxy: ProxySpec {
            admin: "127.0.0.1:9".parse().unwrap(),
            token_file: d.join("token"),
            ca_file: None,
            old_side: "old".into(),
            new_side: "new".into(),
        },
        tunnel: None,
        fingerprint: None,
        budget: Budget::default(),
        artifacts: Default::default(),
    };
    std::fs::create_dir_all(spec.homes[0].old.join("www")).unwrap();
    std::fs::write(spec.homes[0].old.join("www/index.php"), "<?php echo 1;").unwrap();

    let jp = d.join("journal.sqlite");
    // No database, so the proxy is never called; DNS is the driver the spec names.
    let rec = Recorder::for_site(&spec, false);
    let sys = Systems {
        lb_old: Arc::new(Haproxy::new(old_hp.socket())),
        lb_new: Arc::new(Haproxy::new(new_hp.socket())),
        dns: real_systems::dns(&spec).unwrap(),
        proxy: rec.systems(&spec).proxy,
        tunnel: None,
        data: Arc::new(LocalData::new(&jp)),
    };
    for s in &servers {
        assert_eq!(answer(*s), (vec![OLD_VIP.parse().unwrap()], Some(300)));
    }

    let opts = EngineOptions::default();
    let mut j = SqliteJournal::open(&jp).unwrap();
    let report = Engine::new(&spec, &sys, &mut j, &opts).migrate().unwrap();
    assert_eq!(report.state, SiteState::Live);
    for s in &servers {
        // Switched, with the TTL lowered in prepare.
        assert_eq!(answer(*s), (vec![NEW_VIP.parse().unwrap()], Some(5)), "{s}");
    }
    let st = Haproxy::new(old_hp.socket())
        .server_state("be_shop", "srv")
        .unwrap();
    assert_eq!((st.addr, st.admin), (new.addr, AdminState::Ready));

    let report = rollback_site(Engine::new(&spec, &sys, &mut j, &opts)).unwrap();
    assert_eq!(report.state, SiteState::RolledBack);
    for s in &servers {
        assert_eq!(answer(*s), (vec![OLD_VIP.parse().unwrap()], Some(5)), "{s}");
    }
    let st = Haproxy::new(old_hp.socket())
        .server_state("be_shop", "srv")
        .unwrap();
    assert_eq!((st.addr, st.admin), (old.addr, AdminState::Ready));
}

const RECORDS: &str = "shop 300 A 127.0.0.1";

#[test]
fn a_site_on_rfc2136_dns_moves_and_rolls_back() {
    let knot = Knot::start("lab.example.", RECORDS, "migrator-key").unwrap();
    let server: SocketAddr = ([127, 0, 0, 1], knot.port()).into();
    migrate_and_roll_back(DnsConfig::Rfc2136(Rfc2136Config {
        name: NAME.into(),
        zone: "lab.example".into(),
        primary: server,
        servers: vec![server],
        tsig_key_file: knot.key_file(),
        low_ttl: 5,
    }));
}

#[test]
fn a_site_on_powerdns_moves_and_rolls_back() {
    let pdns = Pdns::start("lab.example.", RECORDS).unwrap();
    migrate_and_roll_back(DnsConfig::Powerdns(PowerDnsConfig {
        name: NAME.into(),
        zone: "lab.example".into(),
        api: pdns.api_url(),
        api_key_file: pdns.api_key_file(),
        server_id: "localhost".into(),
        servers: vec![([127, 0, 0, 1], pdns.dns_port()).into()],
        low_ttl: 5,
    }));
}
