//! The same DNS cutover against every provider, each a real server on loopback: RFC 2136 to
//! Knot (TSIG updates only) and the PowerDNS HTTP API. Built from the site spec's `dns` section
//! ([`DnsConfig`]) the way the migrator builds it, then: TTL lowering, switch (replace confirmed
//! on every server), a stale belief refused, a multi-address set, rollback (replace back).
//! Then what each provider must refuse clearly.

use std::net::{IpAddr, SocketAddr};

use drivers::dns::powerdns::PowerDnsConfig;
use drivers::dns::probe::{self, parse_name, Answer};
use drivers::dns::rfc2136::Rfc2136Config;
use drivers::dns::{Dns, DnsConfig, DnsError};
use hickory_proto::rr::RecordType;
use testkit::{Knot, Pdns};

/// Documentation addresses (RFC 5737): record data only, never contacted.
const RECORDS: &str = "www 300 A 192.0.2.10\nshop 300 A 192.0.2.10\nshop 300 A 192.0.2.11\n\
                       v6 300 AAAA 2001:db8::10";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// What `server` answers for `name` (plain DNS, like a resolver).
fn ask(server: SocketAddr, name: &str, rtype: RecordType) -> Answer {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(probe::query(
        server,
        &parse_name("name", name).unwrap(),
        rtype,
    ))
    .unwrap()
}

/// Every server answers exactly `want` for `name`.
fn everywhere(servers: &[SocketAddr], name: &str, rtype: RecordType, want: &[&str]) -> Vec<u32> {
    let want: Vec<IpAddr> = want.iter().map(|s| ip(s)).collect();
    servers
        .iter()
        .map(|s| {
            let a = ask(*s, name, rtype);
            assert_eq!(a.addrs, want, "{name} at {s}");
            a.ttl.unwrap()
        })
        .collect()
}

/// The cutover every provider must pass.
fn cutover(dns: &dyn Dns, servers: &[SocketAddr]) {
    let www = "www.lab.example";
    assert_eq!(dns.current(www).unwrap(), vec![ip("192.0.2.10")]);
    assert_eq!(
        everywhere(servers, www, RecordType::A, &["192.0.2.10"]),
        [300]
    );

    // prepare: lower the TTL ahead of the wave (same records).
    dns.set_ttl(www, &[ip("192.0.2.10")], 5).unwrap();
    assert_eq!(
        everywhere(servers, www, RecordType::A, &["192.0.2.10"]),
        [5]
    );

    // switch: replaced in place, confirmed on every server before it returns.
    dns.replace_confirmed(www, &[ip("192.0.2.10")], &[ip("192.0.2.20")], 5)
        .unwrap();
    assert_eq!(
        everywhere(servers, www, RecordType::A, &["192.0.2.20"]),
        [5]
    );
    assert_eq!(dns.current(www).unwrap(), vec![ip("192.0.2.20")]);

    // A stale belief about the current set is refused, and nothing changes.
    let e = dns
        .replace_confirmed(www, &[ip("192.0.2.10")], &[ip("192.0.2.30")], 5)
        .unwrap_err();
    assert!(matches!(e, DnsError::Refused { .. }), "{e}");
    assert!(!e.is_retryable(), "{e}");
    everywhere(servers, www, RecordType::A, &["192.0.2.20"]);

    // A multi-address set moves as a whole (the order we are told does not matter).
    dns.replace_confirmed(
        "shop.lab.example",
        &[ip("192.0.2.11"), ip("192.0.2.10")],
        &[ip("192.0.2.21")],
        60,
    )
    .unwrap();
    everywhere(servers, "shop.lab.example", RecordType::A, &["192.0.2.21"]);

    // IPv6 sets too; `current` falls back to AAAA when there is no A.
    let v6 = "v6.lab.example";
    assert_eq!(dns.current(v6).unwrap(), vec![ip("2001:db8::10")]);
    dns.replace_confirmed(v6, &[ip("2001:db8::10")], &[ip("2001:db8::20")], 30)
        .unwrap();
    everywhere(servers, v6, RecordType::AAAA, &["2001:db8::20"]);

    // rollback: replace back, confirmed everywhere.
    dns.replace_confirmed(www, &[ip("192.0.2.20")], &[ip("192.0.2.10")], 5)
        .unwrap();
    assert_eq!(
        everywhere(servers, www, RecordType::A, &["192.0.2.10"]),
        [5]
    );
    assert_eq!(dns.current(www).unwrap(), vec![ip("192.0.2.10")]);

    // Bad input is refused before anything is sent.
    for e in [
        dns.replace_confirmed(
            "www.other.example",
            &[ip("192.0.2.10")],
            &[ip("192.0.2.1")],
            5,
        ),
        dns.replace_confirmed(www, &[ip("192.0.2.10")], &[ip("192.0.2.1"), ip("::1")], 5),
        dns.replace_confirmed(www, &[ip("192.0.2.10")], &[], 5),
    ] {
        let e = e.unwrap_err();
        assert!(matches!(e, DnsError::Invalid(_)), "{e}");
    }
    everywhere(servers, www, RecordType::A, &["192.0.2.10"]);
}

fn knot_config(knot: &Knot) -> Rfc2136Config {
    let server: SocketAddr = ([127, 0, 0, 1], knot.port()).into();
    Rfc2136Config {
        name: "www.lab.example".into(),
        zone: "lab.example".into(),
        primary: server,
        servers: vec![server],
        tsig_key_file: knot.key_file(),
        low_ttl: 5,
    }
}

fn pdns_config(pdns: &Pdns) -> PowerDnsConfig {
    PowerDnsConfig {
        name: "www.lab.example".into(),
        zone: "lab.example".into(),
        api: pdns.api_url(),
        api_key_file: pdns.api_key_file(),
        server_id: "localhost".into(),
        servers: vec![([127, 0, 0, 1], pdns.dns_port()).into()],
        low_ttl: 5,
    }
}

#[test]
fn rfc2136_to_knot_passes_the_cutover() {
    let knot = Knot::start("lab.example.", RECORDS, "migrator-key").unwrap();
    let config = DnsConfig::Rfc2136(knot_config(&knot));
    let dns = config.connect().unwrap();
    assert_eq!(dns.provider(), "rfc2136");
    cutover(dns.as_ref(), config.target().servers);
}

#[test]
fn powerdns_api_passes_the_cutover() {
    let pdns = Pdns::start("lab.example.", RECORDS).unwrap();
    let config = DnsConfig::Powerdns(pdns_config(&pdns));
    let dns = config.connect().unwrap();
    assert_eq!(dns.provider(), "powerdns");
    cutover(dns.as_ref(), config.target().servers);
}

#[test]
fn powerdns_refuses_bad_keys_and_unknown_zones_clearly() {
    use std::os::unix::fs::PermissionsExt;
    let pdns = Pdns::start("lab.example.", RECORDS).unwrap();
    let www = "www.lab.example";
    let dir = tempfile::tempdir().unwrap();

    // Missing, unreadable (a directory) and world-readable key files: refused at connect,
    // naming the field and the file, never showing the key.
    let missing = dir.path().join("missing.key");
    let unreadable = dir.path().join("a-directory.key");
    std::fs::create_dir(&unreadable).unwrap();
    std::fs::set_permissions(&unreadable, std::fs::Permissions::from_mode(0o700)).unwrap();
    let open = dir.path().join("open.key");
    std::fs::write(&open, pdns.api_key()).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
    for (file, says) in [
        (&missing, "cannot read"),
        (&unreadable, "cannot read"),
        (&open, "chmod 600"),
    ] {
        let c = DnsConfig::Powerdns(PowerDnsConfig {
            api_key_file: file.clone(),
            ..pdns_config(&pdns)
        });
        let e = c.connect().err().unwrap();
        let text = e.to_string();
        assert!(matches!(e, DnsError::Invalid(_)), "{text}");
        assert!(text.contains("dns.api_key_file"), "{text}");
        assert!(text.contains(&file.display().to_string()), "{text}");
        assert!(text.contains(says), "{text}");
        assert!(!text.contains(pdns.api_key()), "{text}");
    }

    // A wrong key: the server's 401, with a hint, not retryable, the key nowhere.
    let wrong = dir.path().join("wrong.key");
    std::fs::write(&wrong, "not-the-key\n").unwrap();
    std::fs::set_permissions(&wrong, std::fs::Permissions::from_mode(0o600)).unwrap();
    let dns = DnsConfig::Powerdns(PowerDnsConfig {
        api_key_file: wrong,
        ..pdns_config(&pdns)
    })
    .connect()
    .unwrap();
    let e = dns
        .replace_confirmed(www, &[ip("192.0.2.10")], &[ip("192.0.2.99")], 5)
        .unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, DnsError::Refused { .. }), "{text}");
    assert!(!e.is_retryable(), "{text}");
    assert!(
        text.contains("401") && text.contains("dns.api_key_file"),
        "{text}"
    );
    assert_eq!(e.server(), Some(pdns.api_url().as_str()));
    assert!(!text.contains("not-the-key"), "{text}");

    // A zone the server does not have: 404, naming the zone.
    let dns = DnsConfig::Powerdns(PowerDnsConfig {
        name: "www.nope.example".into(),
        zone: "nope.example".into(),
        ..pdns_config(&pdns)
    })
    .connect()
    .unwrap();
    let e = dns.current("www.nope.example").unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, DnsError::Refused { .. }), "{text}");
    assert!(
        text.contains("404") && text.contains("nope.example"),
        "{text}"
    );

    // Nothing changed through any of that.
    let server: SocketAddr = ([127, 0, 0, 1], pdns.dns_port()).into();
    everywhere(&[server], www, RecordType::A, &["192.0.2.10"]);

    // An API nobody answers on: no answer, worth retrying. A port from `free_port`, which no
    // other test of this process is handed afterwards (a port bound to 0 and dropped here
    // could be, and a server started on it would answer).
    let port = testkit::free_port().unwrap();
    let dns = DnsConfig::Powerdns(PowerDnsConfig {
        api: format!("http://127.0.0.1:{port}"),
        ..pdns_config(&pdns)
    })
    .connect()
    .unwrap();
    let e = dns.current(www).unwrap_err();
    assert!(matches!(e, DnsError::Unreachable { .. }), "{e}");
    assert!(e.is_retryable(), "{e}");
}

#[test]
fn a_server_that_misses_the_change_is_named() {
    // Two authoritative servers listed, one of them a different Knot that never receives the
    // update: the switch is applied on the primary but not confirmed, naming the laggard.
    let knot = Knot::start("lab.example.", RECORDS, "migrator-key").unwrap();
    let other = Knot::start("lab.example.", RECORDS, "other-key").unwrap();
    let laggard: SocketAddr = ([127, 0, 0, 1], other.port()).into();
    let mut c = knot_config(&knot);
    c.servers.push(laggard);
    let dns = DnsConfig::Rfc2136(c).connect().unwrap();
    let e = dns
        .replace_confirmed(
            "www.lab.example",
            &[ip("192.0.2.10")],
            &[ip("192.0.2.20")],
            5,
        )
        .unwrap_err();
    assert!(e.is_retryable(), "{e}");
    let DnsError::NotConfirmed { wrong, .. } = &e else {
        panic!("{e}")
    };
    assert_eq!(wrong.len(), 1, "{e}");
    assert!(wrong[0].starts_with(&laggard.to_string()), "{e}");
}
