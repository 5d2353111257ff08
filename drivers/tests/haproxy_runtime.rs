//! The HAProxy driver against a real HAProxy: switch a site's backend server between two real
//! HTTP servers through the runtime API, and hold it with maint (503) and release it.

use std::net::SocketAddr;
use std::time::Duration;

use drivers::http::{HttpClient, Method};
use drivers::lb::{AdminState, Haproxy, LoadBalancer};
use drivers::DriverError;
use testkit::{Backend, Haproxy as HaproxyServer, TinyHttp};

/// `GET /` through HAProxy's frontend on `port` for the site `host` (HAProxy picks the
/// backend by the `Host` header): status and body.
fn get(port: u16, host: &str) -> (u16, String) {
    let a = HttpClient::for_addr(
        SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(10),
    )
    .unwrap()
    .request(Method::Get, "/")
    .header("Host", host)
    .send()
    .unwrap();
    (a.status, a.text())
}

#[test]
fn switch_hold_and_release_a_site_backend() {
    let old = TinyHttp::start("served-by-old").unwrap();
    let new = TinyHttp::start("served-by-new").unwrap();
    let hp = HaproxyServer::start(&[
        Backend {
            name: "site1".into(),
            addr: old.addr.to_string(),
        },
        Backend {
            name: "site2".into(),
            addr: old.addr.to_string(),
        },
    ])
    .unwrap();
    let lb = Haproxy::new(hp.socket());

    let st = lb.server_state("site1", "srv").unwrap();
    assert_eq!(st.addr, old.addr);
    assert_eq!(st.admin, AdminState::Ready);
    assert_eq!(get(hp.port(), "site1"), (200, "served-by-old".into()));

    // Freeze: maint → HAProxy answers 503 for this site only.
    lb.set_server_admin("site1", "srv", AdminState::Maint)
        .unwrap();
    assert_eq!(get(hp.port(), "site1").0, 503);
    assert_eq!(get(hp.port(), "site2"), (200, "served-by-old".into()));

    // Switch while held, then release: the site now serves from the new side.
    lb.set_server_addr("site1", "srv", new.addr).unwrap();
    lb.set_server_admin("site1", "srv", AdminState::Ready)
        .unwrap();
    assert_eq!(get(hp.port(), "site1"), (200, "served-by-new".into()));
    assert_eq!(get(hp.port(), "site2"), (200, "served-by-old".into()));
    assert_eq!(lb.server_state("site1", "srv").unwrap().addr, new.addr);

    lb.set_server_weight("site1", "srv", 50).unwrap();
    assert_eq!(lb.server_state("site1", "srv").unwrap().weight, 50);

    // Unknown names are HAProxy's refusals, carried as such.
    match lb.set_server_admin("nosuch", "srv", AdminState::Ready) {
        Err(DriverError::Rejected { answer, .. }) => {
            assert!(!answer.is_empty())
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(matches!(
        lb.server_state("site1", "nosuch"),
        Err(DriverError::NotFound(_))
    ));
}

#[test]
fn a_missing_socket_is_a_clear_io_error() {
    let lb = Haproxy::new("/nonexistent/haproxy.sock");
    let e = lb.server_state("b", "s").unwrap_err();
    assert!(e.is_retryable());
    assert!(e.to_string().contains("/nonexistent/haproxy.sock"), "{e}");
}
