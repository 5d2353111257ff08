//! The RFC 2136 updater itself against a real Knot server that accepts only TSIG-signed
//! updates: what is particular to TSIG (the cutover every provider passes is in
//! `dns_cutover.rs`).

use std::net::{IpAddr, SocketAddr};

use drivers::dns::rfc2136::{Rfc2136Updater, TsigKey};
use drivers::dns::DnsError;
use hickory_proto::rr::RecordType;
use testkit::Knot;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The A records `server` answers for `name`, sorted.
async fn a_records(dns: &Rfc2136Updater, server: SocketAddr, name: &str) -> Vec<IpAddr> {
    dns.query(server, name, RecordType::A).await.unwrap().addrs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_replace_is_atomic_checked_and_visible() {
    // Documentation addresses (RFC 5737): record data only, never contacted.
    let knot = Knot::start(
        "lab.example.",
        "www 300 A 192.0.2.10\nshop 300 A 192.0.2.10\nshop 300 A 192.0.2.11",
        "migrator-key",
    )
    .unwrap();
    let server: SocketAddr = ([127, 0, 0, 1], knot.port()).into();
    let key = TsigKey::new(knot.key_name(), "hmac-sha256", knot.key_secret()).unwrap();
    let dns = Rfc2136Updater::new(server, "lab.example", key).unwrap();

    let before = dns
        .query(server, "www.lab.example", RecordType::A)
        .await
        .unwrap();
    assert_eq!(before.addrs, vec![ip("192.0.2.10")]);
    assert_eq!(before.ttl, Some(300));

    // Lower the TTL ahead of the wave, then replace in place.
    dns.set_ttl("www.lab.example", &[ip("192.0.2.10")], 5)
        .await
        .unwrap();
    assert_eq!(
        dns.query(server, "www.lab.example", RecordType::A)
            .await
            .unwrap()
            .ttl,
        Some(5)
    );
    dns.replace_addresses(
        "www.lab.example",
        &[ip("192.0.2.10")],
        &[ip("192.0.2.20")],
        5,
    )
    .await
    .unwrap();
    dns.verify_everywhere(&[server], "www.lab.example", &[ip("192.0.2.20")])
        .await
        .unwrap();

    // A stale belief about the current set is refused, and nothing changes.
    let e = dns
        .replace_addresses(
            "www.lab.example",
            &[ip("192.0.2.10")],
            &[ip("192.0.2.30")],
            5,
        )
        .await
        .unwrap_err();
    assert!(matches!(e, DnsError::Refused { .. }), "{e}");
    assert_eq!(
        a_records(&dns, server, "www.lab.example").await,
        vec![ip("192.0.2.20")]
    );

    // A multi-address set moves as a whole.
    dns.replace_addresses(
        "shop.lab.example",
        &[ip("192.0.2.11"), ip("192.0.2.10")],
        &[ip("192.0.2.21")],
        60,
    )
    .await
    .unwrap();
    let e = dns
        .verify_everywhere(&[server], "shop.lab.example", &[ip("192.0.2.10")])
        .await
        .unwrap_err();
    assert!(matches!(e, DnsError::NotConfirmed { .. }), "{e}");

    // An update signed with the wrong secret is refused by the server.
    let wrong = TsigKey::new(
        knot.key_name(),
        "hmac-sha256",
        "d3JvbmdzZWNyZXR3cm9uZ3NlY3JldA==",
    )
    .unwrap();
    let bad = Rfc2136Updater::new(server, "lab.example", wrong).unwrap();
    let e = bad
        .replace_addresses(
            "www.lab.example",
            &[ip("192.0.2.20")],
            &[ip("192.0.2.99")],
            5,
        )
        .await
        .unwrap_err();
    assert!(matches!(e, DnsError::Refused { .. }), "{e}");
    assert_eq!(
        a_records(&dns, server, "www.lab.example").await,
        vec![ip("192.0.2.20")]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_updates_are_refused_by_the_lab_server() {
    // knsupdate without a key: Knot must refuse it (this is what makes TSIG mandatory).
    let knot = Knot::start("lab.example.", "www 300 A 192.0.2.10", "k1").unwrap();
    let script = format!(
        "server 127.0.0.1 {}\nzone lab.example.\nupdate delete www.lab.example. A\nsend\n",
        knot.port()
    );
    let mut child = std::process::Command::new("knsupdate")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "unsigned update accepted: {text}");
    assert!(
        text.contains("NOTAUTH") || text.contains("REFUSED"),
        "{text}"
    );
    let server: SocketAddr = ([127, 0, 0, 1], knot.port()).into();
    let key = TsigKey::new(knot.key_name(), "hmac-sha256", knot.key_secret()).unwrap();
    let dns = Rfc2136Updater::new(server, "lab.example", key).unwrap();
    let still = dns
        .query(server, "www.lab.example", RecordType::A)
        .await
        .unwrap();
    assert_eq!(still.addrs, vec![ip("192.0.2.10")]);
}
