//! The admin API over TLS (issue 22): with `[admin] tls_cert`/`tls_key` the real daemon
//! speaks HTTPS only and refuses plain HTTP before reading the request; the migrator's client
//! (`drivers::proxy::HttpProxy::new_tls`) verifies the proxy's certificate against the CA it
//! is given, and refuses a proxy whose certificate another CA signed. (A `tls_cert` without
//! `tls_key` is refused by the config check: `config::tests`.)

mod common;

use std::time::Duration;

use common::daemon::{Setup, TOKEN};
use common::*;
use drivers::http::{HttpClient, Method};
use drivers::proxy::{HttpProxy, SqlProxy};

#[test]
fn admin_api_over_tls_refuses_plain_http_and_is_verified_by_the_migrator_client() {
    let db = backend();
    let s = Setup::new(&db, None, "[databases.shop]\nside = \"old\"\n");
    let pki_dir = s.dir.path().join("pki");
    std::fs::create_dir(&pki_dir).unwrap();
    let pki = testkit::TlsFiles::create(&pki_dir).unwrap();
    // [admin] is the config's last table: its TLS keys go at the end.
    let mut cfg = std::fs::read_to_string(&s.cfg).unwrap();
    cfg += &format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"\n",
        pki.cert.display(),
        pki.key.display()
    );
    std::fs::write(&s.cfg, cfg).unwrap();
    s.init();
    let _daemon = s.start();
    let token_file = s.dir.path().join("token");

    // Plain HTTP, even with the right token: refused, nothing served.
    let plain = HttpClient::for_addr(s.admin, Duration::from_secs(5))
        .unwrap()
        .with_secret_header("Authorization", &format!("Bearer {TOKEN}"));
    let a = (0..100)
        .find_map(|_| {
            let r = plain.request(Method::Get, "/routes").send();
            if r.is_err() {
                std::thread::sleep(Duration::from_millis(50));
            }
            r.ok()
        })
        .expect("admin API answers");
    assert_eq!(a.status, 400, "{}", a.text());
    assert!(a.text().contains("HTTPS only"), "{}", a.text());
    assert!(!a.text().contains("shop"), "no route leaked: {}", a.text());
    // The plain client of the migrator fails the same way (a refusal, not a route list).
    let e = HttpProxy::new(s.admin, &token_file)
        .unwrap()
        .routes()
        .unwrap_err();
    assert!(e.to_string().contains("HTTPS only"), "{e}");

    // The migrator's TLS client, trusting the proxy's CA: the API works.
    let p = HttpProxy::new_tls(s.admin, &token_file, &pki.ca).unwrap();
    let routes = p.routes().unwrap();
    assert!(routes.iter().any(|r| r.database == "shop"), "{routes:?}");
    let r = p.route("shop").unwrap();
    assert_eq!(r.side, "old");

    // A certificate signed by another CA (a rogue proxy, a man in the middle): refused before
    // the token is sent.
    let other_dir = tempfile::tempdir().unwrap();
    let other = testkit::TlsFiles::create(other_dir.path()).unwrap();
    let e = HttpProxy::new_tls(s.admin, &token_file, &other.ca)
        .unwrap()
        .routes()
        .unwrap_err();
    let msg = e.to_string().to_lowercase();
    assert!(msg.contains("certificate") || msg.contains("issuer"), "{e}");
    // A CA file that is not one is named.
    let e = HttpProxy::new_tls(s.admin, &token_file, &token_file)
        .err()
        .expect("not a CA file");
    assert!(e.to_string().contains("no PEM certificate"), "{e}");
}
