//! Issue 20: a site's staged artifacts enabled and disabled on the new web server over a real
//! sshd on loopback (host key checked), as the switch and the rollback do with `new_web_host`.

use migrator::artifacts::install;
use migrator::site_spec::{sample, WebHostSpec};
use std::path::Path;
use testkit::Sshd;

#[test]
fn artifacts_are_enabled_and_disabled_over_ssh() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let sshd = Sshd::start().unwrap();
    let mut spec = sample("shop");
    let mut a = migrator::artifacts::sample("shop");
    std::fs::create_dir_all(d.join("php/8.2/fpm")).unwrap();
    a.php.as_mut().unwrap().fpm_root = Some(d.join("php").display().to_string());
    let stage = d.join("stage").display().to_string();
    a.stage_dir = Some(stage.clone());
    spec.artifacts = a;
    let w = WebHostSpec {
        ssh: format!("{}@127.0.0.1", sshd.user()),
        port: sshd.port(),
        known_hosts: sshd.known_hosts().unwrap(),
        identity: sshd.client_key(),
        nginx_map: d.join("map.conf"),
        nginx_reload: "true".into(),
        php_reload: None,
        server_name: "shop.lab.test".into(),
        document_root: d.join("www"),
    };
    install::stage_locally("shop", &stage, &spec.artifacts).unwrap();
    let active = Path::new(&stage).join("shop/active/crontab");

    migrator::web_host::activate_artifacts(&spec, &w, true).unwrap();
    let cron = std::fs::read_to_string(&active).unwrap();
    assert!(
        cron.lines()
            .any(|l| l.starts_with("*/10 * * * * * www-data migrator cron-run --site shop")),
        "{cron}"
    );
    // Twice (a resume): the same.
    migrator::web_host::activate_artifacts(&spec, &w, true).unwrap();
    assert_eq!(std::fs::read_to_string(&active).unwrap(), cron);

    migrator::web_host::activate_artifacts(&spec, &w, false).unwrap();
    assert!(!active.exists());
    assert!(Path::new(&stage)
        .join("shop/active.disabled/crontab")
        .exists());

    // A wrong host key: refused, naming the server, nothing changed.
    let bad = WebHostSpec {
        known_hosts: sshd.known_hosts_with_wrong_key().unwrap(),
        ..w
    };
    let err = migrator::web_host::activate_artifacts(&spec, &bad, true).unwrap_err();
    assert!(
        err.to_string().contains("enabling the artifacts of shop"),
        "{err}"
    );
    assert!(!active.exists());
}
