//! A fleet of `sql-proxy` instances on a real 3-node Galera cluster as their shared route
//! store (issue 17): a switch across nodes, an instance whose only store node dies fences
//! itself, and an instance given every node keeps its lease and serves through the loss of the
//! node it was using.

mod common;

use std::time::{Duration, Instant};

use common::fleet::*;
use drivers::http::Method;
use drivers::proxy::SqlProxy;

/// The store on a real 3-node Galera cluster, each instance on its own node: a switch through
/// A (node 1) is acknowledged by B (node 2) and moves both; then B's node is SIGKILLed: B
/// fences (it cannot confirm its routes), the cluster carries on with two nodes, and once A
/// confirmed its own lease again (its store calls stalled until the eviction) the next switch
/// through A waits at most B's lease, with no write reaching the old side.
#[test]
fn a_fleet_on_a_galera_store_switches_across_nodes_and_survives_node_loss() {
    let (a, b) = sides();
    let (mut g, pw) = galera_store(3);
    let node = |i: usize| format!("127.0.0.1:{}", g.port(i));
    let sa = instance_with(&a, &b, pw.path(), &node(0), "proxy-a", LEASE_MS);
    let sb = instance_with(&a, &b, pw.path(), &node(1), "proxy-b", LEASE_MS);
    let _logs = LogsOnFailure::of(&[&sa, &sb]);
    let (_da, _db) = start_two(&sa, &sb);
    write(&sb, "shop", "before").unwrap();
    assert_eq!(count(&a, "shop.t", "before"), 1);

    let pa = proxy_client(&sa);
    pa.pause("shop").unwrap();
    a.copy_database_to("shop", &b).unwrap();
    pa.resume("shop", Some("new")).unwrap();
    write(&sb, "shop", "after-b").unwrap();
    write(&sa, "shop", "after-a").unwrap();
    assert_eq!(
        count(&b, "shop.t", "after-%"),
        2,
        "B did not follow A's switch"
    );
    assert_eq!(
        count(&a, "shop.t", "after-%"),
        0,
        "a write reached the old side"
    );

    // B's own node dies: B cannot confirm its routes and must stop serving them within its
    // lease; once the two other nodes have evicted the dead one (Galera stalls commits until
    // then), a switch through A waits at most B's lease.
    g.kill(1).unwrap();
    let evicted = Instant::now();
    while g.cluster_size(0).ok() != Some(2) {
        assert!(
            evicted.elapsed() < Duration::from_secs(30),
            "the cluster never evicted node 2"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A's store calls stalled too, usually for longer than half its lease: A fenced itself
    // and refuses route changes (503, fenced) until a round renews its lease and reads the
    // table again, which can come a store timeout (a quarter lease) plus a poll after the
    // eviction. The wait bounded below is the one for B, so the switch starts once A has
    // confirmed its lease again.
    let recovered = Instant::now();
    loop {
        let (code, v) = sa.admin(Method::Get, "/fleet", "");
        assert_eq!(code, 200, "{v}");
        if v["fenced"] == false && v["lease_age_ms"].as_u64().unwrap() < LEASE_MS / 4 {
            break;
        }
        assert!(
            recovered.elapsed() < Duration::from_millis(LEASE_MS),
            "A did not confirm its lease within {LEASE_MS} ms of the eviction: {v}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let t = Instant::now();
    pa.pause("shop").unwrap();
    let waited = t.elapsed();
    assert!(
        waited <= Duration::from_millis(LEASE_MS + 2000),
        "the pause waited {waited:?}"
    );
    std::thread::sleep(Duration::from_millis(LEASE_MS / 2));
    assert!(
        write(&sb, "shop", "fenced-b").is_err(),
        "B served a database after losing its store node"
    );
    assert_eq!(count(&a, "shop.t", "fenced-b"), 0);
    assert_eq!(count(&b, "shop.t", "fenced-b"), 0);
    pa.resume("shop", None).unwrap();
    write(&sa, "shop", "end-a").unwrap();
    assert_eq!(count(&b, "shop.t", "end-a"), 1);
}

/// The store connections of `user` on node `i` (its process list).
fn connections(g: &testkit::Galera, i: usize) -> u64 {
    g.exec(
        i,
        &format!("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = '{STORE_USER}'"),
    )
    .unwrap()
    .trim()
    .parse()
    .unwrap()
}

/// Issue 17: the store URL names every node (`host:port,host:port,host:port`), as the
/// migrator's journal does. The node the instance uses is SIGKILLed: the instance reconnects
/// to another node, renews its lease there and never fences; writes through it succeed
/// throughout and a switch through it completes afterwards. (With one node named, as before,
/// it fences: the test above, instance B.) The lease is longer than the cluster's stall
/// until it evicts the dead node (≤ 4 s here): no lease can be confirmed during that stall.
#[test]
fn an_instance_given_every_node_keeps_its_lease_and_serves_through_the_loss_of_its_node() {
    const LONG_LEASE_MS: u64 = 12_000;
    let (a, b) = sides();
    let (mut g, pw) = galera_store(3);
    let all: Vec<String> = (0..3).map(|i| format!("127.0.0.1:{}", g.port(i))).collect();
    let sa = instance_with(&a, &b, pw.path(), &all.join(","), "proxy-a", LONG_LEASE_MS);
    let _logs = LogsOnFailure::of(&[&sa]);
    sa.init();
    let _da = sa.start();
    write(&sa, "shop", "before").unwrap();
    // It uses the first node named, and only that one.
    let t = Instant::now();
    while connections(&g, 0) == 0 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "no store connection on node 1"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!((connections(&g, 1), connections(&g, 2)), (0, 0));

    g.kill(0).unwrap();
    let killed = Instant::now();
    let (mut writes, mut samples) = (0, 0);
    // 10 s after the kill (past the cluster's stall until it evicts the node), and at least
    // 20 samples however slow each one is on a loaded machine.
    while killed.elapsed() < Duration::from_secs(10) || samples < 20 {
        let (code, v) = sa.admin(Method::Get, "/fleet", "");
        assert_eq!(code, 200, "{v}");
        assert_eq!(
            v["fenced"],
            false,
            "fenced {:?} after its store node was killed: {v}",
            killed.elapsed()
        );
        samples += 1;
        write(&sa, "shop", &format!("during-{writes}")).unwrap_or_else(|e| {
            panic!("a write failed {:?} after the kill: {e}", killed.elapsed())
        });
        writes += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(count(&a, "shop.t", "during-%"), writes);
    // Its lease lives on another node now, renewed after the kill.
    assert_eq!(g.cluster_size(1).unwrap(), 2);
    assert!(connections(&g, 1) + connections(&g, 2) > 0);
    let (_, v) = sa.admin(Method::Get, "/fleet", "");
    let me = v["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["instance"] == "proxy-a")
        .unwrap_or_else(|| panic!("{v}"))
        .clone();
    assert_eq!(me["live"], true, "{v}");
    assert!(
        v["lease_age_ms"].as_u64().unwrap() < LONG_LEASE_MS / 2,
        "{v}"
    );
    // A switch through it commits in the store through a surviving node.
    let pa = proxy_client(&sa);
    pa.pause("shop").unwrap();
    a.copy_database_to("shop", &b).unwrap();
    pa.resume("shop", Some("new")).unwrap();
    write(&sa, "shop", "after").unwrap();
    assert_eq!(count(&b, "shop.t", "after"), 1);
    assert_eq!(count(&a, "shop.t", "after"), 0);
}
