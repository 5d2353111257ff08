//! Certificates loaded into a real HAProxy through its runtime API (`new/set/commit ssl
//! cert`, `add ssl crt-list`): served at once for their name over TLS, the default one for
//! any other name, idempotent, and replaced in place when the certificate changes.

use std::net::SocketAddr;
use std::time::Duration;

use drivers::lb::haproxy::{pem_fingerprint, SslCertChange};
use drivers::lb::Haproxy;
use drivers::tls_probe::presented_chain;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use testkit::{Backend, Haproxy as HaproxyServer, TinyHttp, TlsFiles};

fn leaf_der(cert: &std::path::Path) -> Vec<u8> {
    CertificateDer::pem_file_iter(cert)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .as_ref()
        .to_vec()
}

fn served(port: u16, name: &str) -> Vec<u8> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    presented_chain(addr, name, Duration::from_secs(5)).unwrap()[0]
        .as_ref()
        .to_vec()
}

fn read(p: &std::path::Path) -> String {
    std::fs::read_to_string(p).unwrap()
}

/// A real HAProxy terminating TLS for `name` (one backend), started with only the default
/// certificate (the lab CA's localhost leaf) in its crt-list.
struct TlsLab {
    dir: tempfile::TempDir,
    pki: TlsFiles,
    crt_list: std::path::PathBuf,
    port: u16,
    hp: HaproxyServer,
    _web: TinyHttp,
}

impl TlsLab {
    fn start(name: &str) -> TlsLab {
        let dir = tempfile::tempdir().unwrap();
        let pki = TlsFiles::create(dir.path()).unwrap();
        let default_pem = dir.path().join("default-bundle.pem");
        std::fs::write(&default_pem, read(&pki.cert) + &read(&pki.key)).unwrap();
        let crt_list = dir.path().join("crt-list");
        std::fs::write(&crt_list, format!("{}\n", default_pem.display())).unwrap();
        let web = TinyHttp::start("served").unwrap();
        let hp = HaproxyServer::start_tls(
            &[Backend {
                name: name.into(),
                addr: web.addr.to_string(),
            }],
            &crt_list,
        )
        .unwrap();
        let port = hp.tls_port().unwrap();
        TlsLab {
            dir,
            pki,
            crt_list,
            port,
            hp,
            _web: web,
        }
    }
}

#[test]
fn a_certificate_loaded_at_runtime_is_served_for_its_name() {
    let t = TlsLab::start("a.lab.test");
    let (dir, pki, port) = (&t.dir, &t.pki, t.port);
    let lb = Haproxy::new(t.hp.socket());
    let list = t.crt_list.to_str().unwrap();

    let (cert, key) = pki.leaf("site-a", "a.lab.test").unwrap();
    assert_eq!(served(port, "a.lab.test"), leaf_der(&pki.cert));

    let file = dir.path().join("certs").join("a.lab.test.pem");
    let file = file.to_str().unwrap();
    let pem = read(&cert) + &read(&key);
    let change = lb.install_ssl_cert(list, file, &pem).unwrap();
    assert_eq!(
        change,
        SslCertChange {
            created: true,
            updated: true,
            listed: true
        }
    );
    assert_eq!(served(port, "a.lab.test"), leaf_der(&cert));
    assert_eq!(served(port, "other.lab.test"), leaf_der(&pki.cert));
    assert_eq!(
        lb.ssl_cert_fingerprint(file).unwrap(),
        Some(pem_fingerprint(&pem).unwrap())
    );

    // Again (prepare after a crash): nothing to do, one crt-list line.
    assert_eq!(
        lb.install_ssl_cert(list, file, &pem).unwrap(),
        SslCertChange::default()
    );
    let files = lb.crt_list_files(list).unwrap();
    assert_eq!(files.iter().filter(|f| *f == file).count(), 1, "{files:?}");

    // A renewed certificate replaces the served one in place.
    let (cert2, key2) = pki.leaf("site-a2", "a.lab.test").unwrap();
    let pem2 = read(&cert2) + &read(&key2);
    let change = lb.install_ssl_cert(list, file, &pem2).unwrap();
    assert!(
        change.updated && !change.created && !change.listed,
        "{change:?}"
    );
    assert_eq!(served(port, "a.lab.test"), leaf_der(&cert2));

    // A key that is not the certificate's is refused by HAProxy; what was served stays.
    let mismatched = read(&cert) + &read(&key2);
    let e = lb.install_ssl_cert(list, file, &mismatched).unwrap_err();
    assert!(matches!(e, drivers::DriverError::Rejected { .. }), "{e}");
    assert!(!e.to_string().contains("PRIVATE KEY"), "{e}");
    assert_eq!(served(port, "a.lab.test"), leaf_der(&cert2));
}

/// The CI's wave-artifacts run: prepares of one wave install their sites' certificates from
/// several threads at once; one read back another's fingerprint and one left an empty store
/// that failed every later install. Six threads install six certificates into one real
/// HAProxy at once: each is served for its name and reads back as itself. Then a store created
/// and never committed (an interrupted install) is filled by the next install.
#[test]
fn concurrent_installs_each_serve_their_own_certificate_and_an_empty_store_is_filled() {
    let t = TlsLab::start("s0.lab.test");
    let (dir, pki, port, hp) = (&t.dir, &t.pki, t.port, &t.hp);
    let list = t.crt_list.to_str().unwrap().to_string();
    let sites: Vec<(String, String, Vec<u8>)> = (0..6)
        .map(|i| {
            let name = format!("s{i}.lab.test");
            let (cert, key) = pki.leaf(&format!("site-{i}"), &name).unwrap();
            let file = dir.path().join("certs").join(format!("{name}.pem"));
            let pem = read(&cert) + &read(&key);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            (file.to_str().unwrap().to_string(), pem, leaf_der(&cert))
        })
        .collect();
    std::thread::scope(|s| {
        for (file, pem, _) in &sites {
            let (sock, list) = (hp.socket(), &list);
            s.spawn(move || {
                Haproxy::new(sock)
                    .install_ssl_cert(list, file, pem)
                    .unwrap()
            });
        }
    });
    let lb = Haproxy::new(hp.socket());
    for (i, (file, pem, der)) in sites.iter().enumerate() {
        assert_eq!(
            lb.ssl_cert_fingerprint(file).unwrap(),
            Some(pem_fingerprint(pem).unwrap()),
            "{file}"
        );
        assert_eq!(&served(port, &format!("s{i}.lab.test")), der, "{file}");
    }
    // An empty store (created, never committed), then the install.
    let (cert, key) = pki.leaf("site-e", "e.lab.test").unwrap();
    let file = dir.path().join("certs").join("e.lab.test.pem");
    let file = file.to_str().unwrap();
    let pem = read(&cert) + &read(&key);
    let sock = hp.socket();
    let ask = |cmd: &str| {
        use std::io::{Read, Write};
        let mut c = std::os::unix::net::UnixStream::connect(sock).unwrap();
        c.write_all(format!("{cmd}\n").as_bytes()).unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        out
    };
    assert!(ask(&format!("new ssl cert {file}")).contains("New empty certificate store"));
    assert_eq!(lb.ssl_cert_fingerprint(file).unwrap(), None);
    let change = lb.install_ssl_cert(&list, file, &pem).unwrap();
    assert!(change.updated && change.listed, "{change:?}");
    assert_eq!(served(port, "e.lab.test"), leaf_der(&cert));
}
