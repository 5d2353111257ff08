//! Issue 18, finding 1: clients that never authenticate must not exhaust the proxy. Against the
//! real `sql-proxy` binary: a login packet over `max_login_packet_bytes` (plain, and as the
//! auth-switch answer of a client asking for another plugin, which went through the unlimited
//! reader) is refused at its header; a client that sends nothing or trickles its login is cut
//! off at `handshake_timeout_ms`; connections over `max_connections_per_ip` and
//! `max_connections` get error 1040 before any greeting. Each is counted in `/metrics`.

mod common;

use std::time::{Duration, Instant};

use common::daemon::Setup;
use common::raw::{
    closed_within, connect_from, first_packet, greeting, login_packet, metric, metric_reaches,
    pour, read_packet, write_packet, First,
};
use drivers::http::Method;

const LIMITS: &str = "[limits]\nmax_login_packet_bytes = 4096\nhandshake_timeout_ms = 1500\n\
                      max_connections = 8\nmax_connections_per_ip = 5\n\
                      login_failure_delay_ms = 10\n";

fn setup() -> (testkit::MariaDb, Setup) {
    let db = common::backend();
    let s = Setup::new(&db, None, LIMITS);
    s.init();
    (db, s)
}

fn metrics(s: &Setup) -> String {
    let (code, v) = s.admin(Method::Get, "/metrics", "");
    assert_eq!(code, 200);
    v.as_str().unwrap().to_string()
}

#[test]
fn oversized_login_packets_are_refused_at_their_header() {
    let (_db, s) = setup();
    let _d = s.start();
    // Plain: a header announcing 16 MiB - 2, then payload. The proxy must close at once,
    // long before the 16 MiB could arrive (it used to wait for all of it).
    let mut c = connect_from([127, 0, 0, 1], s.addr());
    greeting(&mut c);
    use std::io::Write;
    c.write_all(&[0xFE, 0xFF, 0xFF, 1]).unwrap();
    let sent = pour(&mut c, 64 << 10, 4096);
    assert!(
        closed_within(&mut c, Duration::from_secs(3)),
        "the proxy kept reading an oversized login packet ({sent} bytes sent)"
    );
    // Another plugin: the answer to the auth switch went through the reader without a limit
    // (frames of 0xFFFFFF joined until the client stopped). Now refused at the first header.
    let mut c = connect_from([127, 0, 0, 1], s.addr());
    let g = greeting(&mut c);
    let mut login = sql_proxy::protocol::HandshakeResponse::parse(&login_packet(
        common::APP_USER,
        common::APP_PASSWORD,
        Some("shop"),
        &g.scramble,
    ))
    .unwrap();
    login.auth_plugin = Some("caching_sha2_password".into());
    write_packet(&mut c, 1, &login.build()).unwrap();
    let (seq, switch) = read_packet(&mut c).unwrap();
    assert_eq!(switch.first(), Some(&0xFE), "auth switch expected");
    c.write_all(&[0xFF, 0xFF, 0xFF, seq.wrapping_add(1)])
        .unwrap();
    let sent = pour(&mut c, 256 << 10, 8192);
    assert!(
        closed_within(&mut c, Duration::from_secs(3)),
        "the proxy kept buffering an oversized auth-switch answer ({sent} bytes sent)"
    );
    let m = metric_reaches(
        || metrics(&s),
        "sqlproxy_oversized_login_packets_total",
        2.0,
    );
    assert_eq!(
        metric(&m, "sqlproxy_oversized_login_packets_total"),
        Some(2.0),
        "{m}"
    );
    // A normal login still works.
    let (r, _) = common::raw::login(
        [127, 0, 0, 1],
        s.addr(),
        common::APP_USER,
        common::APP_PASSWORD,
        Some("shop"),
    );
    assert!(r.is_ok(), "{:?}", r.err().map(|e| e.message));
}

#[test]
fn silent_and_trickling_logins_are_cut_off_at_the_handshake_deadline() {
    let (_db, s) = setup();
    let _d = s.start();
    let started = Instant::now();
    let mut silent = connect_from([127, 0, 0, 1], s.addr());
    greeting(&mut silent);
    let mut slow = connect_from([127, 0, 0, 1], s.addr());
    let g = greeting(&mut slow);
    // The login packet a byte every 100 ms: never complete before the deadline.
    let login = login_packet(common::APP_USER, common::APP_PASSWORD, None, &g.scramble);
    let mut frame = bytes::BytesMut::new();
    sql_proxy::wire::encode_packet(&mut frame, 1, &login);
    let trickler = std::thread::spawn(move || {
        use std::io::Write;
        for b in frame.iter() {
            if slow.write_all(&[*b]).is_err() {
                return (slow, true);
            }
            std::thread::sleep(Duration::from_millis(100));
            if started.elapsed() > Duration::from_secs(6) {
                break;
            }
        }
        (slow, false)
    });
    assert!(
        closed_within(&mut silent, Duration::from_secs(5)),
        "a client that sent nothing was still connected after 5 s"
    );
    let cut = started.elapsed();
    assert!(
        cut >= Duration::from_millis(1400),
        "cut off too early: {cut:?}"
    );
    let (mut slow, write_failed) = trickler.join().unwrap();
    assert!(
        write_failed || closed_within(&mut slow, Duration::from_millis(500)),
        "a client trickling its login was still connected after 6 s"
    );
    let m = metric_reaches(|| metrics(&s), "sqlproxy_handshake_timeouts_total", 2.0);
    assert_eq!(
        metric(&m, "sqlproxy_handshake_timeouts_total"),
        Some(2.0),
        "{m}"
    );
}

#[test]
fn connections_over_the_limits_get_1040_before_a_greeting() {
    let (_db, s) = setup();
    let _d = s.start();
    let mut held = Vec::new();
    for _ in 0..5 {
        let mut c = connect_from([127, 0, 0, 1], s.addr());
        greeting(&mut c);
        held.push(c);
    }
    // The sixth from the same address.
    let mut c = connect_from([127, 0, 0, 1], s.addr());
    let First::Err(e) = first_packet(&mut c) else {
        panic!("a sixth connection from one address was greeted (max_connections_per_ip = 5)");
    };
    assert_eq!(e.code, 1040, "{}", e.message);
    assert!(
        e.message.contains("max_connections_per_ip"),
        "{}",
        e.message
    );
    // Other addresses fill the global limit of 8.
    for _ in 0..3 {
        let mut c = connect_from([127, 0, 0, 2], s.addr());
        greeting(&mut c);
        held.push(c);
    }
    let mut c = connect_from([127, 0, 0, 3], s.addr());
    let First::Err(e) = first_packet(&mut c) else {
        panic!("a ninth connection was greeted (max_connections = 8)");
    };
    assert_eq!(e.code, 1040, "{}", e.message);
    assert!(e.message.contains("max_connections"), "{}", e.message);
    // A closed connection frees its slot.
    drop(held.pop());
    let ok = (0..50).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        let mut c = connect_from([127, 0, 0, 3], s.addr());
        matches!(first_packet(&mut c), First::Greeting(_))
    });
    assert!(ok, "a freed slot was never reused");
    let m = metrics(&s);
    assert_eq!(
        metric(
            &m,
            "sqlproxy_connections_refused_total{reason=\"max_connections_per_ip\"}"
        ),
        Some(1.0),
        "{m}"
    );
    assert!(
        metric(
            &m,
            "sqlproxy_connections_refused_total{reason=\"max_connections\"}"
        )
        .unwrap()
            >= 1.0,
        "{m}"
    );
}
