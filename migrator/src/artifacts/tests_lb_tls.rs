//! The certificates prepare loads into a real HAProxy (`lb_tls::install`), what verify sees
//! served (`lb_tls::verify_served`), and the dry run's lines.

use super::lb_tls;
use super::test_pki::Pki;
use super::Artifacts;
use crate::site_spec::LbTlsSpec;
use std::net::SocketAddr;
use std::time::Duration;
use testkit::{Backend, Haproxy, TinyHttp};

#[test]
fn prepare_loads_the_certificates_and_verify_compares_what_is_served() {
    let pki = Pki::new();
    let default = pki.leaf("default", "default.lab.test");
    let a_cert = pki.leaf("a", "a.lab.test");
    let other = pki.leaf("b", "b.lab.test");
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("default.pem");
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap();
    std::fs::write(&bundle, read(&default.cert) + &read(&default.key)).unwrap();
    let crt_list = dir.path().join("crt-list");
    std::fs::write(&crt_list, format!("{}\n", bundle.display())).unwrap();
    let web = TinyHttp::start("ok").unwrap();
    let hp = Haproxy::start_tls(
        &[Backend {
            name: "a.lab.test".into(),
            addr: web.addr.to_string(),
        }],
        &crt_list,
    )
    .unwrap();
    let vip = SocketAddr::from(([127, 0, 0, 1], hp.tls_port().unwrap()));
    let lb = LbTlsSpec {
        crt_list: crt_list.clone(),
        cert_dir: Some(dir.path().join("certs")),
        port: vip.port(),
    };
    let a = Artifacts {
        tls: vec![a_cert.clone()],
        ..Default::default()
    };
    let t = Duration::from_secs(5);

    // Before prepare the new VIP serves its default certificate: a difference naming the
    // domain.
    let diffs = lb_tls::verify_served(vip, &a, t);
    assert_eq!(diffs.len(), 1, "{diffs:?}");
    assert!(diffs[0].starts_with("tls a.lab.test: "), "{diffs:?}");

    let lines = lb_tls::describe(&lb, &a).join("\n");
    assert!(
        lines.contains("a.lab.test") && lines.contains("crt-list"),
        "{lines}"
    );
    assert!(!lines.contains("PRIVATE KEY"), "{lines}");

    let done = lb_tls::install(hp.socket(), &lb, &a).unwrap();
    assert_eq!(done.len(), 1);
    assert!(lb_tls::verify_served(vip, &a, t).is_empty());
    // Written for a restart: the bundle (0600) and one crt-list line.
    let pem = lb_tls::pem_path(&lb, "a.lab.test");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&pem).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(read(&pem), read(&a_cert.cert) + &read(&a_cert.key));
    // Again (prepare after a crash): still one line.
    lb_tls::install(hp.socket(), &lb, &a).unwrap();
    let listed = read(&crt_list);
    let line = pem.to_str().unwrap();
    assert_eq!(listed.lines().filter(|l| *l == line).count(), 1, "{listed}");

    // A spec naming another certificate for the domain: verify tells them apart.
    let wrong = Artifacts {
        tls: vec![super::TlsSpec {
            domain: "a.lab.test".into(),
            ..other.clone()
        }],
        ..Default::default()
    };
    let diffs = lb_tls::verify_served(vip, &wrong, t);
    assert_eq!(diffs.len(), 1, "{diffs:?}");
    assert!(
        diffs[0].contains("a.lab.test") && diffs[0].contains("serves certificate"),
        "{diffs:?}"
    );

    // An unreadable key: nothing loaded, the field named.
    let missing = Artifacts {
        tls: vec![super::TlsSpec {
            domain: "b.lab.test".into(),
            key: dir.path().join("nosuch.key"),
            ..other.clone()
        }],
        ..Default::default()
    };
    let e = lb_tls::install(hp.socket(), &lb, &missing).unwrap_err();
    assert!(e.contains("artifacts.tls[0].key"), "{e}");
    assert!(!lb_tls::pem_path(&lb, "b.lab.test").exists());
    assert!(!read(&crt_list).contains("b.lab.test"));
}
