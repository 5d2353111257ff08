//! Issue 18 (5): the standalone `sync-files`, `copy-db` and `follow-db` hold the site's lease
//! for their whole run, like the cutover engine's phases, against real MariaDBs, real
//! HAProxies and real homes. They used to take no lease and look at no state: a second
//! operator's `copy-db` on a site that had switched dropped and overwrote the live new
//! database, and a `sync-files` deleted what the live site had written to its new home.
//! Now each is refused, naming the site and why, while another migrator holds the site and
//! once the site switched; a run leaves no lease behind.

mod shop_support;

use migrator::journal::SiteState;
use migrator::journal::SqliteJournal;
use shop_support::{bin, migrate_stalled_after, state, Shop};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use testkit::MariaDb;

/// Runs `migrator ARGS --journal d/j.sqlite`.
fn migrator(d: &Path, args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .arg("--journal")
        .arg(d.join("j.sqlite"))
        .output()
        .unwrap()
}

fn sync_files(d: &Path) -> Output {
    let (src, dst) = (d.join("old/shop"), d.join("new/shop"));
    migrator(
        d,
        &[
            "sync-files",
            "shop",
            "--src",
            src.to_str().unwrap(),
            "--dst",
            dst.to_str().unwrap(),
        ],
    )
}

/// `copy-db` or `follow-db` of `shop_db` (with `--site shop` unless `site` is `None`).
fn db_command(d: &Path, command: &str, site: Option<&str>) -> Output {
    let (src, dst) = (d.join("src.url"), d.join("dst.url"));
    let mut args = vec![
        command,
        "shop_db",
        "--src-url-file",
        src.to_str().unwrap(),
        "--dst-url-file",
        dst.to_str().unwrap(),
    ];
    if let Some(s) = site {
        args.extend(["--site", s]);
    }
    migrator(d, &args)
}

fn url_file(path: &Path, url: &str) {
    std::fs::write(path, url).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn no_lease(d: &Path) -> bool {
    let j = SqliteJournal::open(&d.join("j.sqlite")).unwrap();
    migrator::cutover::lease::get(&j, "shop").unwrap().is_none()
}

#[test]
fn standalone_sync_and_copies_hold_the_lease_and_refuse_a_switched_site() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let shop = Shop::start();
    shop.write_local_site(d);
    let (old_db, new_db) = (MariaDb::start().unwrap(), MariaDb::start().unwrap());
    old_db
        .exec(
            "CREATE DATABASE shop_db; CREATE TABLE shop_db.t (id INT PRIMARY KEY, v TEXT);
             INSERT INTO shop_db.t VALUES (1, 'from old');",
        )
        .unwrap();
    url_file(&d.join("src.url"), &old_db.admin_url());
    url_file(&d.join("dst.url"), &new_db.admin_url());

    // Before any switch: both copy, and leave no lease behind.
    let out = db_command(d, "copy-db", Some("shop"));
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        new_db.exec("SELECT v FROM shop_db.t").unwrap(),
        "from old\n"
    );
    let out = sync_files(d);
    assert!(out.status.success(), "{}", text(&out));
    assert!(d.join("new/shop/www/index.php").exists());
    assert!(no_lease(d));

    // Another migrator holds the site (stalled after prepare): every command is refused,
    // naming it.
    let mut first = migrate_stalled_after(d, "prepare", SiteState::Prepared);
    let pid = first.0.id();
    for out in [
        sync_files(d),
        db_command(d, "copy-db", Some("shop")),
        db_command(d, "follow-db", Some("shop")),
    ] {
        let t = text(&out);
        assert!(!out.status.success(), "went ahead: {t}");
        assert!(
            t.contains(&format!("site shop is leased by pid {pid}")),
            "{t}"
        );
    }
    let _ = first.0.kill();
    let _ = first.0.wait();

    // The site goes live; the new side takes writes (in its database and its home).
    let out = Command::new(bin())
        .args(["site", "migrate", "shop", "--sites"])
        .arg(d.join("sites.json"))
        .arg("--journal")
        .arg(d.join("j.sqlite"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(state(d), Some(SiteState::Live));
    new_db
        .exec("INSERT INTO shop_db.t VALUES (2, 'live write')")
        .unwrap();
    std::fs::write(
        d.join("new/shop/www/upload.jpg"),
        "written by the live site",
    )
    .unwrap();
    std::fs::write(d.join("old/shop/www/late.php"), "stale").unwrap();

    // A second operator's commands are refused, and nothing of the live side moves.
    for out in [
        sync_files(d),
        db_command(d, "copy-db", Some("shop")),
        db_command(d, "follow-db", Some("shop")),
    ] {
        let t = text(&out);
        assert_eq!(out.status.code(), Some(2), "{t}");
        assert!(t.contains("site shop is live"), "{t}");
        assert!(t.contains("refusing"), "{t}");
    }
    // Without --site, a journal that tracks sites asks which one the database belongs to.
    let out = db_command(d, "copy-db", None);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("--site NAME") && t.contains("(shop)"), "{t}");
    assert_eq!(
        new_db
            .exec("SELECT id, v FROM shop_db.t ORDER BY id")
            .unwrap(),
        "1\tfrom old\n2\tlive write\n",
        "the live database was overwritten"
    );
    assert!(
        d.join("new/shop/www/upload.jpg").exists(),
        "live upload deleted"
    );
    assert!(
        !d.join("new/shop/www/late.php").exists(),
        "synced over the live home"
    );
    assert!(no_lease(d));
}
