//! Unit tests of the route store on real SQLite files.

use super::*;
use rusqlite::Connection;

fn seed() -> Vec<(String, String, Mode)> {
    vec![
        ("shop".into(), "old".into(), Mode::Open),
        ("blog".into(), "new".into(), Mode::ReadOnly),
    ]
}

#[test]
fn commits_survive_reopening_and_epochs_only_grow() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routes.sqlite");
    let s = RouteStore::create(&path, &seed()).unwrap();
    assert_eq!(s.last_epoch().unwrap(), 2);
    let e1 = s.commit("shop", "old", Mode::Paused, Mode::Open).unwrap();
    let e2 = s.commit("shop", "new", Mode::Open, Mode::Open).unwrap();
    assert!(e2 > e1 && e1 > 2);
    drop(s);
    let s = RouteStore::open(&path, Access::Write).unwrap();
    let routes = s.load().unwrap();
    assert_eq!(
        routes,
        vec![
            StoredRoute {
                database: "blog".into(),
                side: "new".into(),
                mode: Mode::ReadOnly,
                resume_mode: Mode::ReadOnly,
                epoch: 2
            },
            StoredRoute {
                database: "shop".into(),
                side: "new".into(),
                mode: Mode::Open,
                resume_mode: Mode::Open,
                epoch: e2
            },
        ]
    );
    let mode = std::fs::metadata(&path).unwrap().permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o600
    );
}

#[test]
fn a_second_writer_is_refused_but_readers_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routes.sqlite");
    let s = RouteStore::create(&path, &seed()).unwrap();
    let e = RouteStore::open(&path, Access::Write).err().unwrap();
    assert!(matches!(e, StoreError::Locked { .. }), "{e}");
    assert!(
        e.to_string().contains(&std::process::id().to_string()),
        "{e}"
    );
    let r = RouteStore::open(&path, Access::Read).unwrap();
    assert_eq!(r.load().unwrap().len(), 2);
    drop(s);
    RouteStore::open(&path, Access::Write).unwrap();
}

#[test]
fn missing_empty_foreign_and_damaged_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routes.sqlite");
    let e = RouteStore::open(&path, Access::Write).err().unwrap();
    assert!(matches!(e, StoreError::Missing { .. }), "{e}");
    assert!(e.to_string().contains("routes init"), "{e}");

    std::fs::write(&path, b"").unwrap();
    let e = RouteStore::open(&path, Access::Write).err().unwrap();
    assert!(matches!(e, StoreError::Corrupt { .. }), "{e}");

    std::fs::write(&path, b"not a database at all, just some text").unwrap();
    let e = RouteStore::open(&path, Access::Write).err().unwrap();
    assert!(matches!(e, StoreError::Corrupt { .. }), "{e}");

    std::fs::remove_file(&path).unwrap();
    let other = Connection::open(&path).unwrap();
    other.execute_batch("CREATE TABLE t (x)").unwrap();
    drop(other);
    let e = RouteStore::open(&path, Access::Write).err().unwrap();
    assert!(e.to_string().contains("application_id"), "{e}");

    std::fs::remove_file(&path).unwrap();
    std::fs::create_dir(&path).unwrap();
    let e = RouteStore::open(&path, Access::Write).err().unwrap();
    assert!(e.to_string().contains("not a regular file"), "{e}");
}

#[test]
fn a_truncated_or_overwritten_store_is_an_error_not_an_empty_table() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routes.sqlite");
    let many: Vec<_> = (0..3000)
        .map(|i| (format!("db_{i:05}"), "old".to_string(), Mode::Open))
        .collect();
    drop(RouteStore::create(&path, &many).unwrap());
    let good = std::fs::read(&path).unwrap();
    assert!(good.len() > 64 * 1024, "{}", good.len());
    // Half-written: the file cut in the middle.
    std::fs::write(&path, &good[..good.len() / 2]).unwrap();
    let e = RouteStore::open(&path, Access::Write).err().unwrap();
    assert!(matches!(e, StoreError::Corrupt { .. }), "{e}");
    // Garbage over a page in the middle.
    let mut bad = good.clone();
    let mid = (bad.len() / 2) & !4095;
    bad[mid..mid + 4096].fill(0xA5);
    std::fs::write(&path, &bad).unwrap();
    let e = RouteStore::open(&path, Access::Write).err().unwrap();
    assert!(matches!(e, StoreError::Corrupt { .. }), "{e}");
}

#[test]
fn init_refuses_an_existing_store_and_seeding_adds_only_unknown_databases() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routes.sqlite");
    let s = RouteStore::create(&path, &seed()).unwrap();
    drop(s);
    let e = RouteStore::create(&path, &seed()).err().unwrap();
    assert!(matches!(e, StoreError::Exists { .. }), "{e}");
    let s = RouteStore::open(&path, Access::Write).unwrap();
    s.commit("shop", "new", Mode::Open, Mode::Open).unwrap();
    let added = s
        .seed_missing(&[
            ("shop".into(), "old".into(), Mode::Open),
            ("wiki".into(), "old".into(), Mode::Open),
        ])
        .unwrap();
    assert_eq!(added.len(), 1);
    assert_eq!(added[0].database, "wiki");
    let shop = s
        .load()
        .unwrap()
        .into_iter()
        .find(|r| r.database == "shop")
        .unwrap();
    assert_eq!(shop.side, "new", "the config must not move a stored route");
}

#[test]
fn import_refuses_going_back_in_epoch_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routes.sqlite");
    let s = RouteStore::create(&path, &seed()).unwrap();
    let old_export = s.export().unwrap();
    s.commit("shop", "new", Mode::Open, Mode::Open).unwrap();
    // The older export would move shop back to old.
    let mut plan = s.plan_import(&old_export.routes, false).unwrap();
    let shop = plan.iter().find(|c| c.database == "shop").unwrap();
    assert_eq!(shop.action, ImportAction::RefusedBackwards);
    s.apply_import(&mut plan).unwrap();
    assert_eq!(
        s.load()
            .unwrap()
            .iter()
            .find(|r| r.database == "shop")
            .unwrap()
            .side,
        "new",
        "a refused import applies nothing"
    );
    // A newer export (another store further ahead) is applied with its epochs.
    let mut newer = old_export.routes.clone();
    newer[1].side = "new".into(); // shop
    newer[1].epoch = 50;
    newer.push(StoredRoute {
        database: "wiki".into(),
        side: "old".into(),
        mode: Mode::Open,
        resume_mode: Mode::Open,
        epoch: 51,
    });
    let mut plan = s.plan_import(&newer, false).unwrap();
    let actions: Vec<_> = plan.iter().map(|c| c.action).collect();
    assert_eq!(
        actions,
        [
            ImportAction::Unchanged,
            ImportAction::Update,
            ImportAction::Add
        ]
    );
    s.apply_import(&mut plan).unwrap();
    assert_eq!(s.last_epoch().unwrap(), 51);
    // Re-importing the same file changes nothing.
    let plan = s.plan_import(&newer, false).unwrap();
    assert!(plan.iter().all(|c| c.action == ImportAction::Unchanged));
    // Forced: the old export wins with fresh epochs.
    let mut plan = s.plan_import(&old_export.routes, true).unwrap();
    s.apply_import(&mut plan).unwrap();
    let shop = s
        .load()
        .unwrap()
        .into_iter()
        .find(|r| r.database == "shop")
        .unwrap();
    assert_eq!(shop.side, "old");
    assert!(shop.epoch > 51);
}
