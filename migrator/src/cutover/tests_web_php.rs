//! Issue 20's web half through the engine with the recording systems (`--dry-run`): each
//! commit point's move of a site's artifacts names the reloads that follow it on each side,
//! and with `verify_served` the post-check compares what the new side serves.

use super::*;

fn web_shop() -> (tempfile::TempDir, PathBuf, SiteSpec, Recorder) {
    let (dir, jp, mut spec, rec) = shop();
    let mut a = crate::artifacts::sample("shop");
    a.cron.clear();
    a.old_stage_dir = Some("/srv/old-artifacts".into());
    a.old_nginx_reload = Some("systemctl reload nginx".into());
    a.old_php_reload = Some("systemctl reload php7.4-fpm".into());
    a.php.as_mut().unwrap().probe = Some("/phpinfo.php".into());
    spec.artifacts = a;
    spec.new_web_host = Some(crate::site_spec::WebHostSpec {
        ssh: "root@10.2.0.22".into(),
        port: 22,
        known_hosts: "/etc/hostmove/known_hosts".into(),
        identity: "/etc/hostmove/id".into(),
        nginx_map: "/etc/nginx/sites.map".into(),
        nginx_reload: "nginx -s reload".into(),
        php_reload: Some("systemctl reload php8.2-fpm".into()),
        server_name: "shop.example".into(),
        document_root: "/homez.1/shop/www".into(),
    });
    (dir, jp, spec, rec)
}

fn lines<'a>(log: &'a [String], prefix: &str) -> Vec<&'a String> {
    log.iter().filter(|l| l.starts_with(prefix)).collect()
}

#[test]
fn each_move_names_the_reloads_of_its_side_and_the_rollback_too() {
    let (_dir, jp, spec, rec) = web_shop();
    assert_eq!(migrate(&spec, &rec, &jp).unwrap(), SiteState::Live);
    let log = rec.log();
    let moves = lines(&log, "data.activate_artifacts");
    assert_eq!(moves.len(), 2, "{log:?}");
    assert!(
        moves[0].contains("disable /srv/old-artifacts/shop/active")
            && moves[0].contains("then reload nginx: `systemctl reload nginx`")
            && moves[0].contains("then reload php-fpm: `systemctl reload php7.4-fpm`"),
        "{}",
        moves[0]
    );
    assert!(
        moves[1].contains("enable /var/lib/hostmove/artifacts/shop/active")
            && moves[1].contains("then reload nginx: `nginx -s reload`")
            && moves[1].contains("then reload php-fpm: `systemctl reload php8.2-fpm`"),
        "{}",
        moves[1]
    );
    let n = log.len();
    assert_eq!(rollback(&spec, &rec, &jp).unwrap(), SiteState::RolledBack);
    let log = rec.log();
    let moves = lines(&log[n..], "data.activate_artifacts");
    assert!(
        moves[0].contains("disable /var/lib/hostmove/artifacts/shop/active")
            && moves[0].contains("systemctl reload php8.2-fpm"),
        "{moves:?}"
    );
    assert!(
        moves[1].contains("enable /srv/old-artifacts/shop/active")
            && moves[1].contains("systemctl reload php7.4-fpm"),
        "{moves:?}"
    );
}

#[test]
fn verify_served_checks_the_new_side_after_the_switch_and_only_then() {
    let (_dir, jp, mut spec, rec) = web_shop();
    spec.artifacts.verify_served = true;
    assert_eq!(migrate(&spec, &rec, &jp).unwrap(), SiteState::Live);
    let log = rec.log();
    let checks = lines(&log, "http.served_artifacts");
    assert_eq!(checks.len(), 1, "{log:?}");
    let c = checks[0];
    for what in [
        "for shop.example",
        "GET /old -> 301 https://shop.lab.test/new",
        "X-Site: shop",
        "GET /phpinfo.php: the PHP settings",
    ] {
        assert!(c.contains(what), "{what}: {c}");
    }
    // After the switch's commit point.
    let switch = log
        .iter()
        .position(|l| l.contains("enable /var/lib/hostmove/artifacts/shop/active"))
        .unwrap();
    assert!(log.iter().position(|l| l == c).unwrap() > switch);

    let (_dir, jp, spec, rec) = web_shop();
    assert_eq!(migrate(&spec, &rec, &jp).unwrap(), SiteState::Live);
    assert!(lines(&rec.log(), "http.served_artifacts").is_empty());
}
