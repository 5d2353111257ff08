//! Fencing on the live table (no store needed: the follower is not started).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::Fleet;
use crate::auth::UserStore;
use crate::config::Config;
use crate::route::{Mode, Shared};
use crate::route_store::{RouteStore, SharedStore, Store, StoreError, StoredRoute};

fn shared(dir: &std::path::Path) -> Arc<Shared> {
    let cfg: Config = toml::from_str(
        "listen = [\"127.0.0.1:3306\"]\nusers_file = \"u\"\ndefault_side = \"old\"\n\
         [backends]\nold = \"127.0.0.1:3307\"\nnew = \"127.0.0.1:3308\"\n",
    )
    .unwrap();
    let store = Arc::new(RouteStore::create(&dir.join("r.sqlite"), &[]).unwrap());
    let opts = mysql_async::Opts::from_url("mysql://u@127.0.0.1:9/d").unwrap();
    let fleet = Fleet::new(
        SharedStore::new(vec![opts], "f", Duration::from_millis(250)),
        "me".into(),
        "127.0.0.1:3306".into(),
        Duration::from_secs(60),
        Duration::from_millis(100),
    );
    let stored = vec![StoredRoute {
        database: "shop".into(),
        side: "old".into(),
        mode: Mode::Open,
        resume_mode: Mode::Open,
        epoch: 1,
    }];
    let users = UserStore::default();
    Shared::build(
        &cfg,
        users,
        None,
        Store::Local(store),
        stored,
        Some(Arc::new(fleet)),
    )
    .unwrap()
}

#[tokio::test]
async fn a_fenced_instance_holds_every_route_and_commits_nothing_until_unfenced() {
    let dir = tempfile::tempdir().unwrap();
    let s = shared(dir.path());
    let shop = s.lookup("shop").unwrap();
    assert_eq!(s.fenced_for_ms(), None);

    s.fence("test");
    // Clients see it paused; the committed route is kept.
    assert_eq!(shop.state.borrow().mode, Mode::Paused);
    assert_eq!(shop.current().mode, Mode::Open);
    assert!(s.fenced_for_ms().is_some());
    // A database first seen while fenced is held too, and nothing is committed.
    let blog = s.route("blog");
    assert_eq!(blog.state.borrow().mode, Mode::Paused);
    let e = s.set_route("shop", Some("new"), None).await.unwrap_err();
    assert!(matches!(e, StoreError::Fenced { .. }), "{e}");
    let e = s.ensure_stored(&blog).await.unwrap_err();
    assert!(matches!(e, StoreError::Fenced { .. }), "{e}");
    assert_eq!(shop.epoch.load(Ordering::SeqCst), 1);

    // A change followed while fenced is kept aside, served once the fence lifts.
    let moved = StoredRoute {
        side: "new".into(),
        epoch: 5,
        ..StoredRoute {
            database: "shop".into(),
            side: String::new(),
            mode: Mode::Open,
            resume_mode: Mode::Open,
            epoch: 0,
        }
    };
    assert!(s.apply_locked(&shop, &moved));
    assert_eq!(shop.state.borrow().mode, Mode::Paused);
    assert_eq!(&*shop.state.borrow().side, "old");
    // An older epoch never moves a route back.
    assert!(!s.apply_locked(
        &shop,
        &StoredRoute {
            epoch: 4,
            side: "old".into(),
            ..moved.clone()
        }
    ));
    s.unfence();
    let st = shop.state.borrow().clone();
    assert_eq!((&*st.side, st.mode), ("new", Mode::Open));
    assert_eq!(blog.state.borrow().mode, Mode::Open);
    assert_eq!(s.fleet.as_ref().unwrap().fences.load(Ordering::Relaxed), 1);
    // A side this instance does not have is not applied.
    let gone = StoredRoute {
        side: "gone".into(),
        epoch: 9,
        ..moved
    };
    assert!(!s.apply_locked(&shop, &gone));
    assert_eq!(&*shop.current().side, "new");
}
