//! HTTPS in the lab (`artifacts = true`, issue 20) with the real `migrator`: old-dc's VIP
//! serves every site's certificate from `lab up`, new-dc's only the default one; after the
//! migrator moved one site, the new VIP serves that site's certificate (chained to the lab
//! CA) and still the default one for any other name; a spec whose certificate is expired or
//! whose key does not match is refused at prepare, naming the field, with nothing loaded into
//! new-dc's HAProxy. The traffic generator's `https_read` goes through DNS before and after.
//! Root only (CI runs as root).

use drivers::lb::Haproxy;
use drivers::tls_probe::presented_chain;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use scenarios::lab::{LabConfig, LabGuard};
use scenarios::sites::SiteSpec;
use scenarios::state::LabState;
use scenarios::topology;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn leaf(path: &Path) -> Vec<u8> {
    CertificateDer::pem_file_iter(path)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .as_ref()
        .to_vec()
}

/// The leaf certificate `vip:port` presents for `name`, seen from the client namespace.
fn served(st: &LabState, vip: std::net::Ipv4Addr, name: &str) -> Vec<u8> {
    let addr = SocketAddr::new(IpAddr::V4(vip), st.tls.as_ref().unwrap().port);
    let name = name.to_string();
    topology::in_netns(&st.client.netns, move || {
        presented_chain(addr, &name, Duration::from_secs(5))
    })
    .unwrap()
    .unwrap()[0]
        .as_ref()
        .to_vec()
}

/// `migrator ARGS` in the client namespace: (success, stdout + stderr).
fn migrator(st: &LabState, args: &[&str]) -> (bool, String) {
    let exe = scenarios::tools::find("migrator").unwrap();
    let out = Command::new("ip")
        .args(["netns", "exec", &st.client.netns])
        .arg(exe)
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// `https_read` only, `n` requests, through the lab's DNS: the traffic summary.
fn https_traffic(st: &LabState, dir: &Path, n: u64) -> serde_json::Value {
    let spec = serde_json::json!({
        "http_read": 0, "http_write": 0, "http_verify": 0, "sql_read": 0, "sql_write": 0,
        "https_read": 1, "max_requests": n, "concurrency": 2, "duration_secs": 30
    });
    let log = dir.join(format!("https-{n}.jsonl"));
    let out = Command::new("ip")
        .args(["netns", "exec", &st.client.netns])
        .arg(env!("CARGO_BIN_EXE_scenarios"))
        .arg("traffic")
        .arg("--state-dir")
        .arg(&st.state_dir)
        .arg("--out")
        .arg(&log)
        .arg("--spec")
        .arg(spec.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let failed = summary["failed"].as_u64().unwrap();
    assert_eq!(
        failed,
        0,
        "{summary}\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    summary
}

/// `sites.json` with site `login`'s first certificate changed by `f`.
fn spec_with(sites: &Path, login: &str, out: &Path, f: impl Fn(&mut serde_json::Value)) {
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sites).unwrap()).unwrap();
    let site = v["sites"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|s| s["site"] == login)
        .unwrap();
    f(&mut site["artifacts"]["tls"][0]);
    std::fs::write(out, v.to_string()).unwrap();
}

#[test]
fn https_certificates_follow_the_site_to_the_new_vip() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: the lab needs root (namespaces, mounts, daemons); CI runs as root");
        return;
    }
    for bin in ["sql-proxy", "migrator"] {
        scenarios::tools::find_or_build(bin).expect(bin);
    }
    let root = std::env::temp_dir().join(format!("hm-tls-{}", std::process::id()));
    std::fs::create_dir_all(&root).unwrap();
    let mut cfg = LabConfig::new(&format!("tls{}", std::process::id()), &root, 2);
    cfg.artifacts = true;
    cfg.spec = SiteSpec {
        small_files: 10,
        large_files: 1,
        large_file_kib: 64,
        rows: 20,
        db_mib: Vec::new(),
    };
    let guard = LabGuard::up(&cfg).expect("lab up");
    let st = guard.state.clone();
    let tls = st.tls.clone().expect("a lab with artifacts has HTTPS");
    let (a, b) = (&tls.sites[0], &tls.sites[1]);
    let default = leaf(&tls.default_cert);
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&tls.ca_key), 0o600);
    assert_eq!(mode(&a.key), 0o600);

    // Before: old-dc serves each site's certificate, new-dc only the default one.
    assert_eq!(served(&st, st.old.vip, &a.domain), leaf(&a.cert));
    assert_eq!(served(&st, st.old.vip, &b.domain), leaf(&b.cert));
    assert_eq!(served(&st, st.old.vip, "nosuch.lab.test"), default);
    assert_eq!(served(&st, st.new.vip, &a.domain), default);
    let work = root.join("migration");
    https_traffic(&st, &root, 10);

    let m = scenarios::migration::Migrator::setup(&st, &work, 0).expect("specs and plan");
    let sites = m.sites_file.to_str().unwrap().to_string();
    let new_lb = Haproxy::new(&st.new.haproxy_admin_socket);
    let b_pem = tls.new_cert_dir.join(format!("{}.pem", b.domain));
    let b_pem_s = b_pem.to_str().unwrap();
    let list = tls.new_crt_list.to_str().unwrap();

    // Refused at prepare, the field named, nothing loaded: a key that is not the cert's …
    let bad = work.join("sites-mismatch.json");
    let a_key = a.key.to_str().unwrap().to_string();
    spec_with(&m.sites_file, &b.login, &bad, |t| {
        t["key"] = a_key.clone().into()
    });
    let j = work.join("journal-bad1.sqlite");
    let (ok, text) = migrator(
        &st,
        &[
            "site",
            "migrate",
            "--sites",
            bad.to_str().unwrap(),
            "--journal",
            j.to_str().unwrap(),
            &b.login,
        ],
    );
    assert!(!ok && text.contains("artifacts.tls[0].key"), "{text}");
    assert!(!text.contains("PRIVATE KEY"), "{text}");
    // … and an expired certificate (signed by the lab CA, ended yesterday).
    let expired = work.join("expired.pem");
    let csr = work.join("b.csr");
    let ext = work.join("b.ext");
    std::fs::write(&ext, format!("subjectAltName=DNS:{}\n", b.domain)).unwrap();
    for args in [
        vec![
            "req".to_string(),
            "-new".into(),
            "-key".into(),
            b.key.display().to_string(),
            "-subj".into(),
            format!("/CN={}", b.domain),
            "-out".into(),
            csr.display().to_string(),
        ],
        vec![
            "x509".into(),
            "-req".into(),
            "-in".into(),
            csr.display().to_string(),
            "-CA".into(),
            tls.ca.display().to_string(),
            "-CAkey".into(),
            tls.ca_key.display().to_string(),
            "-CAcreateserial".into(),
            "-CAserial".into(),
            work.join("ca.srl").display().to_string(),
            "-extfile".into(),
            ext.display().to_string(),
            "-days".into(),
            "-1".into(),
            "-out".into(),
            expired.display().to_string(),
        ],
    ] {
        let o = Command::new("openssl").args(&args).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let bad = work.join("sites-expired.json");
    let exp = expired.to_str().unwrap().to_string();
    spec_with(&m.sites_file, &b.login, &bad, |t| {
        t["cert"] = exp.clone().into()
    });
    let j = work.join("journal-bad2.sqlite");
    let (ok, text) = migrator(
        &st,
        &[
            "site",
            "migrate",
            "--sites",
            bad.to_str().unwrap(),
            "--journal",
            j.to_str().unwrap(),
            &b.login,
        ],
    );
    assert!(
        !ok && text.contains("artifacts.tls[0].cert") && text.contains("expired"),
        "{text}"
    );
    assert_eq!(new_lb.ssl_cert_fingerprint(b_pem_s).unwrap(), None);
    assert!(!new_lb
        .crt_list_files(list)
        .unwrap()
        .iter()
        .any(|f| f == b_pem_s));
    assert!(!b_pem.exists());
    assert!(!std::fs::read_to_string(&tls.new_crt_list)
        .unwrap()
        .contains(&b.domain));

    // The dry run says what prepare loads into the balancer.
    let j = m.journal.to_str().unwrap().to_string();
    let (ok, text) = migrator(
        &st,
        &[
            "site",
            "migrate",
            "--sites",
            &sites,
            "--journal",
            &j,
            "--dry-run",
            &a.login,
        ],
    );
    assert!(ok, "{text}");
    assert!(
        text.contains(&format!("load the certificate of {}", a.domain)) && text.contains(list),
        "{text}"
    );

    // Site a moves: prepare loads its certificate, verify sees it served, the switch.
    let (ok, text) = migrator(
        &st,
        &[
            "site",
            "migrate",
            "--sites",
            &sites,
            "--journal",
            &j,
            &a.login,
        ],
    );
    assert!(ok, "{text}");
    assert_eq!(served(&st, st.new.vip, &a.domain), leaf(&a.cert));
    assert_eq!(served(&st, st.new.vip, "nosuch.lab.test"), default);
    assert_eq!(served(&st, st.new.vip, &b.domain), default);
    assert_eq!(served(&st, st.old.vip, &b.domain), leaf(&b.cert));
    // Kept for a restart: the bundle (0600) and its crt-list line.
    let a_pem = tls.new_cert_dir.join(format!("{}.pem", a.domain));
    assert_eq!(mode(&a_pem), 0o600);
    let listed = std::fs::read_to_string(&tls.new_crt_list).unwrap();
    assert_eq!(
        listed
            .lines()
            .filter(|l| *l == a_pem.to_str().unwrap())
            .count(),
        1,
        "{listed}"
    );
    // HTTPS through DNS reaches both sites (a on new-dc now) with the right certificates.
    https_traffic(&st, &root, 10);

    drop(guard);
    let _ = std::fs::remove_dir_all(&root);
}
