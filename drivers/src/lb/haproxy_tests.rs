//! Unit tests of the HAProxy driver: answers parsed, commands refused, and the certificate
//! calls against a fake admin socket.

use super::*;

const SAMPLE: &str = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n3 site1 1 srv 127.0.0.1 2 0 1 1 12 1 0 0 0 0 0 0 - 8081 - 0 0 - - 0\n3 site1 2 spare 10.0.0.5 0 1 7 1 12 1 0 0 0 0 0 0 - 80 - 0 0 - - 0\n";

#[test]
fn parses_servers_state() {
    let s = parse_servers_state(SAMPLE).unwrap();
    assert_eq!(s.len(), 2);
    assert_eq!(s[0].server, "srv");
    assert_eq!(s[0].addr, "127.0.0.1:8081".parse().unwrap());
    assert_eq!(s[0].admin, AdminState::Ready);
    assert_eq!(s[0].op_state, 2);
    assert_eq!(s[1].admin, AdminState::Maint);
    assert_eq!(s[1].weight, 7);
}

#[test]
fn rejects_garbage_answers_without_panicking() {
    for bad in [
        "",
        "Unknown command\n",
        "1\n",
        "1\n# be_name\nx\n",
        "2\n# a b\n",
    ] {
        assert!(parse_servers_state(bad).is_err(), "{bad:?} accepted");
    }
    let short =
        "1\n# be_name srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_port\nb s\n";
    assert!(matches!(
        parse_servers_state(short),
        Err(DriverError::Protocol(_))
    ));
}

#[test]
fn in_flight_reads_current_and_queued_sessions() {
    let csv = "# pxname,svname,qcur,qmax,scur,smax\nbe_a,web,1,0,2,5\nbe_a,BACKEND,0,0,3,5\nbe_b,web,0,0,0,1\n";
    assert_eq!(parse_in_flight(csv, "be_a", "web"), 3);
    assert_eq!(parse_in_flight(csv, "be_b", "web"), 0);
    assert_eq!(parse_in_flight(csv, "be_c", "web"), 0);
    assert_eq!(parse_in_flight("garbage", "be_a", "web"), 0);
}

#[test]
fn refuses_command_injection() {
    let h = Haproxy::new("/nonexistent");
    assert!(matches!(
        h.command("show info\nshutdown frontend web"),
        Err(DriverError::InvalidInput(_))
    ));
    assert!(matches!(
        h.set_server_addr("b;x", "s", "127.0.0.1:1".parse().unwrap()),
        Err(DriverError::InvalidInput(_))
    ));
}

/// A fake admin socket answering one scripted reply per connection (in order) and
/// recording what each connection sent (a payload command up to its empty line).
fn fake_socket(
    replies: Vec<String>,
) -> (
    tempfile::TempDir,
    PathBuf,
    std::thread::JoinHandle<Vec<String>>,
) {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("admin.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let h = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for reply in replies {
            let (mut conn, _) = listener.accept().unwrap();
            let mut r = std::io::BufReader::new(conn.try_clone().unwrap());
            let mut got = String::new();
            r.read_line(&mut got).unwrap();
            if got.trim_end().ends_with("<<") {
                loop {
                    let mut l = String::new();
                    if r.read_line(&mut l).unwrap() == 0 || l == "\n" {
                        break;
                    }
                    got.push_str(&l);
                }
            }
            conn.write_all(reply.as_bytes()).unwrap();
            seen.push(got);
        }
        seen
    });
    (dir, path, h)
}

fn site_pem() -> (tempfile::TempDir, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let t = testkit::TlsFiles::create(dir.path()).unwrap();
    let cert = std::fs::read_to_string(&t.cert).unwrap();
    let key = std::fs::read_to_string(&t.key).unwrap();
    let fp = pem_fingerprint(&cert).unwrap();
    (dir, format!("{cert}\n\n{key}"), fp)
}

const LIST: &str = "/etc/haproxy/crt-list";
const FILE: &str = "/etc/haproxy/certs/a.lab.test.pem";

fn show_cert(fp: &str) -> String {
    format!("Filename: {FILE}\nStatus: Used\nSHA1 FingerPrint: {fp}\nSubject: /CN=x\n\n")
}

#[test]
fn installs_a_certificate_then_reads_it_back() {
    let (_d, pem, fp) = site_pem();
    let (_s, sock, h) = fake_socket(vec![
        "Can't display the certificate: Not found or the certificate is a bundle!\n".into(),
        format!("New empty certificate store '{FILE}'!\n"),
        format!("Transaction created for certificate {FILE}!\n"),
        format!("Committing {FILE}\nSuccess!\n"),
        format!("# {LIST}\n/etc/haproxy/default.pem\n"),
        format!("Inserting certificate '{FILE}' in crt-list '{LIST}'.\nSuccess!\n"),
        show_cert(&fp),
        format!("# {LIST}\n/etc/haproxy/default.pem\n{FILE}\n"),
    ]);
    let change = Haproxy::new(&sock)
        .install_ssl_cert(LIST, FILE, &pem)
        .unwrap();
    assert_eq!(
        change,
        SslCertChange {
            created: true,
            updated: true,
            listed: true
        }
    );
    let seen = h.join().unwrap();
    let first_lines: Vec<&str> = seen.iter().map(|c| c.lines().next().unwrap()).collect();
    assert_eq!(
        first_lines,
        [
            format!("show ssl cert {FILE}"),
            format!("new ssl cert {FILE}"),
            format!("set ssl cert {FILE} <<"),
            format!("commit ssl cert {FILE}"),
            format!("show ssl crt-list {LIST}"),
            format!("add ssl crt-list {LIST} {FILE}"),
            format!("show ssl cert {FILE}"),
            format!("show ssl crt-list {LIST}"),
        ]
    );
    // The payload is the chain and the key, blank lines dropped (one would end it).
    let payload = &seen[2];
    assert!(payload.contains("BEGIN CERTIFICATE") && payload.contains("PRIVATE KEY"));
    assert!(!payload.contains("\n\n"), "{payload}");
}

#[test]
fn a_second_install_changes_nothing() {
    let (_d, pem, fp) = site_pem();
    let listed = format!("# {LIST}\n{FILE}\n");
    let (_s, sock, h) = fake_socket(vec![show_cert(&fp), listed.clone(), show_cert(&fp), listed]);
    let change = Haproxy::new(&sock)
        .install_ssl_cert(LIST, FILE, &pem)
        .unwrap();
    assert_eq!(change, SslCertChange::default());
    assert!(h.join().unwrap().iter().all(|c| c.starts_with("show ")));
}

/// HAProxy does one certificate operation at a time: a `currently locked` answer (another
/// migrator's install in progress, seen in the lab's wave-artifacts with 3 sites at once) is
/// retried, not a failed prepare.
#[test]
fn a_locked_certificate_store_is_retried() {
    let (_d, pem, fp) = site_pem();
    let (_s, sock, h) = fake_socket(vec![
        "Can't display the certificate: Not found or the certificate is a bundle!\n".into(),
        "Can't create a new certificate store!\nOperations on certificates are currently locked!\n"
            .into(),
        "Can't display the certificate: Not found or the certificate is a bundle!\n".into(),
        format!("New empty certificate store '{FILE}'!\n"),
        format!("Transaction created for certificate {FILE}!\n"),
        format!("Committing {FILE}\nSuccess!\n"),
        format!("# {LIST}\n"),
        "Can't add an entry to the crt-list!\nOperations on certificates are currently locked!\n"
            .into(),
        show_cert(&fp),
        format!("# {LIST}\n"),
        format!("Inserting certificate '{FILE}' in crt-list '{LIST}'.\nSuccess!\n"),
        show_cert(&fp),
        format!("# {LIST}\n{FILE}\n"),
    ]);
    let change = Haproxy::new(&sock)
        .install_ssl_cert(LIST, FILE, &pem)
        .unwrap();
    assert!(change.listed, "{change:?}");
    assert_eq!(h.join().unwrap().len(), 13);
}

#[test]
fn a_refused_certificate_is_aborted_and_the_key_never_quoted() {
    let (_d, pem, _) = site_pem();
    let (_s, sock, h) = fake_socket(vec![
        show_cert("00"),
        format!("unable to load the private key in '{FILE}'\n"),
        format!("Transaction aborted for certificate '{FILE}'!\n"),
    ]);
    let e = Haproxy::new(&sock)
        .install_ssl_cert(LIST, FILE, &pem)
        .unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, DriverError::Rejected { .. }), "{text}");
    assert!(text.contains("unable to load the private key"), "{text}");
    assert!(
        !text.contains("PRIVATE KEY") && !text.contains("MII"),
        "{text}"
    );
    let seen = h.join().unwrap();
    assert_eq!(seen[2].trim(), format!("abort ssl cert {FILE}"));
}

#[test]
fn refuses_bad_paths_and_a_pem_without_key() {
    let (_d, pem, _) = site_pem();
    let h = Haproxy::new("/nonexistent");
    for bad in ["relative.pem", "/a b.pem", "/x/../y.pem", "/a;b"] {
        assert!(matches!(
            h.install_ssl_cert(LIST, bad, &pem),
            Err(DriverError::InvalidInput(_))
        ));
        assert!(matches!(
            h.install_ssl_cert(bad, FILE, &pem),
            Err(DriverError::InvalidInput(_))
        ));
    }
    let cert_only = pem.split("-----BEGIN PRIVATE").next().unwrap();
    assert!(matches!(
        h.install_ssl_cert(LIST, FILE, cert_only),
        Err(DriverError::InvalidInput(_))
    ));
}

/// The CI's wave-artifacts run: a store left empty (created, never committed) answered
/// "Status: Empty" without a fingerprint, and every later install of that site failed on it
/// ("no fingerprint"). An empty store is filled by the next install.
#[test]
fn an_empty_store_left_by_an_interrupted_install_is_filled() {
    let (_d, pem, fp) = site_pem();
    let (_s, sock, h) = fake_socket(vec![
        format!("Filename: {FILE}\nStatus: Empty\nOCSP Response Key:\n\n"),
        format!("Certificate store '{FILE}' already exists!\n"),
        format!("Transaction created for certificate {FILE}!\n"),
        format!("Committing {FILE}\nSuccess!\n"),
        format!("# {LIST}\n/etc/haproxy/default.pem\n{FILE}\n"),
        show_cert(&fp),
        format!("# {LIST}\n/etc/haproxy/default.pem\n{FILE}\n"),
    ]);
    let change = Haproxy::new(&sock)
        .install_ssl_cert(LIST, FILE, &pem)
        .unwrap();
    assert!(change.updated && !change.listed, "{change:?}");
    let seen = h.join().unwrap();
    assert_eq!(
        seen[3].lines().next().unwrap(),
        format!("commit ssl cert {FILE}")
    );
}
