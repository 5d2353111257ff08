//! Bundles in an SSH destination (issue 19) through a real `sshd` (testkit): a host whose key
//! does not match known_hosts is refused before anything is sent; a site captured into the
//! SSH store (parts written under a temporary name and renamed there), listed, verified by
//! restoring its dump from it into a scratch database, a tampered part named, expired.

mod bundle_support;

use bundle_support::{migrator, text, Bed};
use migrator::bundle::capture::{capture, CaptureOptions};
use migrator::bundle::check;
use migrator::bundle::store::{self, BundleStore};
use migrator::bundle::store_ssh::SshStore;
use migrator::journal::SqliteJournal;
use migrator::site_spec::SpecFile;
use testkit::Sshd;

#[test]
fn a_bundle_in_an_ssh_store_is_captured_verified_and_expired() {
    let sshd = Sshd::start().unwrap();
    let bed = Bed::start(
        &[("far", &["far_db"])],
        "CREATE DATABASE far_db; CREATE TABLE far_db.t (id INT PRIMARY KEY, v TEXT); \
         INSERT INTO far_db.t VALUES (1, 'one'), (2, 'two');",
    );
    let d = bed.d();
    bed.switch("far", &["far_db"]);
    let root = d.join("far-store");
    let url = format!(
        "ssh://{}@127.0.0.1:{}{}",
        sshd.user(),
        sshd.port(),
        root.display()
    );

    // A changed host key: refused, naming known_hosts.
    let e = SshStore::connect(
        &url,
        &sshd.known_hosts_with_wrong_key().unwrap(),
        &sshd.client_key(),
    )
    .err()
    .expect("a wrong host key is refused")
    .to_string();
    assert!(e.contains("does NOT match"), "{e}");
    assert!(!root.exists(), "nothing was written");

    let st = SshStore::connect(&url, &sshd.known_hosts().unwrap(), &sshd.client_key()).unwrap();
    assert!(st.describe().starts_with("ssh://"), "{}", st.describe());
    assert!(st.list(None).unwrap().is_empty());
    let file = SpecFile::load(&d.join("sites.json")).unwrap();
    let spec = file.site("far").unwrap();
    let key = migrator::bundle::sign::load_or_create(&d.join("keys/bundle.key")).unwrap();
    let mut j = SqliteJournal::open(&d.join("j.sqlite")).unwrap();
    let opts = CaptureOptions {
        keep_days: 0,
        ..Default::default()
    };
    let r = capture(&mut j, spec, &st, &key, &opts).unwrap();
    assert_eq!(r.written.len(), 2, "dump and file manifest: {r:?}");
    let b = store::BundleRef::parse(&r.bundle).unwrap();
    assert_eq!(st.list(None).unwrap(), vec![b.clone()]);
    assert_eq!(st.list(Some("far")).unwrap(), vec![b.clone()]);
    // On the far host: the parts, the manifest and its signature, no temporary left.
    let dir = root.join("far").join(b.switch_ms.to_string());
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.starts_with(".tmp.")), "{names:?}");
    assert!(names.contains(&"manifest.sig".to_string()), "{names:?}");
    let local: u64 = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert_eq!(st.size(&b).unwrap(), local);

    // Verified from the SSH store: the dump read back over SSH and restored.
    let scratch: mysql_async::Opts = bed.new.admin_url().parse().unwrap();
    let v = check::verify(&st, &b, &key.verifying_key(), Some(&scratch)).unwrap();
    assert!(v.ok, "{:?}", v.problems());
    assert_eq!(v.databases[0].tables, 1, "{v:?}");

    // The CLI on the same store: listed, checked (dry run) over SSH; an ssh:// store without
    // its known_hosts is refused with what to give.
    let kh = sshd.known_hosts().unwrap();
    let id = sshd.client_key();
    let ssh = [
        "--store",
        url.as_str(),
        "--ssh-known-hosts",
        kh.to_str().unwrap(),
        "--ssh-identity",
        id.to_str().unwrap(),
    ];
    let o = migrator(d, &[&["bundle", "list", "--json"], &ssh[..]].concat());
    assert!(o.status.success(), "{}", text(&o));
    let l: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(l[0]["bundle"], r.bundle.as_str(), "{l}");
    assert_eq!(l[0]["complete"], true, "{l}");
    let o = migrator(
        d,
        &[&["bundle", "verify", &r.bundle, "--dry-run"], &ssh[..]].concat(),
    );
    assert!(
        o.status.success() && text(&o).contains("intact"),
        "{}",
        text(&o)
    );
    let o = migrator(d, &["bundle", "list", "--store", &url]);
    assert!(
        !o.status.success() && text(&o).contains("--ssh-known-hosts"),
        "{}",
        text(&o)
    );

    // Tampered on the far host: named.
    let (m, _, _) = check::manifest(&st, &b).unwrap();
    let part = &m.databases[0].part;
    let mut bytes = std::fs::read(dir.join(part)).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(dir.join(part), bytes).unwrap();
    let v = check::verify(&st, &b, &key.verifying_key(), None).unwrap();
    assert!(!v.ok);
    assert!(
        v.problems().iter().any(|p| p.contains(part.as_str())),
        "{:?}",
        v.problems()
    );

    // Expired (kept 0 days): deleted there.
    let gone = store::expire(&st, i64::MAX, false).unwrap();
    assert_eq!(gone.len(), 1, "{gone:?}");
    assert!(!dir.exists());
    assert!(st.list(None).unwrap().is_empty());
}
