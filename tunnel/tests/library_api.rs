//! The Rust API as the lab and the migrator use it: sides in network namespaces, the health
//! gate with its reasons, idempotent `up`, and `down` leaving foreign things alone.
//! Needs root (CI runs as root).

mod common;

use common::*;
use tunnel::{Config, Error, Side};

fn side(lab: &Lab, s: &str) -> Side {
    Side::new(Lab::side_name(s))
        .in_netns(lab.ns(s))
        .with_state_dir(&lab.state_dir)
}

#[test]
fn health_gate_follows_the_tunnel() {
    let lab = Lab::new("wgapi0");
    lab.keys();
    let cfg_a = Config::load(lab.config("a")).unwrap();
    let cfg_b = Config::load(lab.config("b")).unwrap();
    let (a, b) = (side(&lab, "a"), side(&lab, "b"));

    let h = tunnel::health(&cfg_a, &a);
    assert!(!h.healthy);
    assert!(
        h.reason.contains("tunnel is not up on old-dc"),
        "{}",
        h.reason
    );

    assert!(!tunnel::up(&cfg_a, &a).unwrap().is_empty());
    // Only one side up: the peer cannot answer.
    let h = tunnel::health(&cfg_a, &a);
    assert!(!h.healthy);
    assert!(h.reason.contains("does not answer"), "{}", h.reason);
    let q = tunnel::health_quick(&cfg_a, &a);
    assert!(!q.healthy, "quick check must see the silent peer too");
    assert!(q.reason.contains("does not answer"), "{}", q.reason);

    assert!(!tunnel::up(&cfg_b, &b).unwrap().is_empty());
    assert!(
        tunnel::up(&cfg_a, &a).unwrap().is_empty(),
        "second up is a no-op"
    );
    assert!(tunnel::plan(&cfg_b, &b).unwrap().is_empty());
    let h = tunnel::health(&cfg_a, &a);
    assert!(h.healthy, "{}", h.reason);
    assert_eq!(h.probes.len(), 1);
    assert_eq!(h.probes[0].sent, 5);
    assert!(h.probes[0].received >= 4);
    // The in-freeze confirmation: 2 probes 10 ms apart, well under the 5-probe gate's ~0.4 s.
    let t = std::time::Instant::now();
    let q = tunnel::health_quick(&cfg_a, &a);
    let took = t.elapsed();
    assert!(q.healthy, "{}", q.reason);
    assert_eq!(q.probes[0].sent, 2);
    assert!(q.probes[0].received >= 1);
    eprintln!("quick tunnel check took {took:?}");

    let st = tunnel::status(&cfg_b, &b).unwrap();
    assert_eq!(st.peers.len(), 1);
    assert_eq!(st.peers[0].name.as_deref(), Some("old-dc"));
    assert!(st.peers[0].last_handshake_age_secs.is_some());

    // Drift is planned and repaired: an extra address on the interface and a lost route.
    sh(&[
        "ip",
        "-n",
        &lab.ns_a,
        "addr",
        "add",
        "10.99.0.77/24",
        "dev",
        "wgapi0",
    ]);
    sh(&[
        "ip", "-n", &lab.ns_a, "route", "del", B_PREFIX, "dev", "wgapi0",
    ]);
    let plan = tunnel::plan(&cfg_a, &a).unwrap();
    let text = plan.to_string();
    assert!(text.contains("- address 10.99.0.77/24"), "{text}");
    assert!(text.contains("+ route 10.30.0.0/24"), "{text}");
    assert_eq!(plan.changes.len(), 2, "{text}");
    tunnel::up(&cfg_a, &a).unwrap();
    assert!(tunnel::plan(&cfg_a, &a).unwrap().is_empty());

    // Daemon gone: the gate closes with the PID in the reason.
    let pid = tunnel::status(&cfg_b, &b).unwrap().daemon_pid.unwrap();
    kill_and_wait(pid, libc::SIGKILL);
    let h = tunnel::health(&cfg_b, &b);
    assert!(!h.healthy);
    assert!(
        h.reason
            .contains(&format!("wireguard-go daemon (pid {pid}) is not running")),
        "{}",
        h.reason
    );
    assert!(!tunnel::health_quick(&cfg_b, &b).healthy);
    tunnel::up(&cfg_b, &b).unwrap();
    let h = tunnel::health(&cfg_b, &b);
    assert!(h.healthy, "{}", h.reason);

    let rep = tunnel::down(&cfg_a, &a).unwrap();
    assert!(rep
        .removed
        .iter()
        .any(|r| r.contains("wireguard-go process")));
    tunnel::down(&cfg_b, &b).unwrap();
    assert!(!tunnel::health(&cfg_b, &b).healthy);
}

#[test]
fn foreign_interface_is_never_adopted_nor_removed() {
    let lab = Lab::new("wgforeign0");
    lab.keys();
    let cfg = Config::load(lab.config("a")).unwrap();
    let a = side(&lab, "a");
    // Someone else's interface with our name (veth: this kernel has no dummy module).
    sh(&[
        "ip",
        "-n",
        &lab.ns_a,
        "link",
        "add",
        "wgforeign0",
        "type",
        "veth",
        "peer",
        "name",
        "wgforeign0p",
    ]);
    match tunnel::up(&cfg, &a) {
        Err(Error::ForeignInterface { interface, .. }) => assert_eq!(interface, "wgforeign0"),
        other => panic!("expected ForeignInterface, got {other:?}"),
    }
    let rep = tunnel::down(&cfg, &a).unwrap();
    assert!(rep.removed.is_empty(), "{:?}", rep.removed);
    let links = String::from_utf8_lossy(&sh(&["ip", "-n", &lab.ns_a, "link"]).stdout).into_owned();
    assert!(
        links.contains("wgforeign0"),
        "foreign interface must survive down"
    );
}

#[test]
fn concurrent_ups_start_one_daemon() {
    let lab = Lab::new("wgconc0");
    lab.keys();
    let cfg = Config::load(lab.config("a")).unwrap();
    let a = side(&lab, "a");
    let results: Vec<_> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..3).map(|_| s.spawn(|| tunnel::up(&cfg, &a))).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let changed = results
        .iter()
        .filter(|r| !r.as_ref().expect("up").is_empty())
        .count();
    assert_eq!(changed, 1, "exactly one of the concurrent ups did the work");
    assert_eq!(lab.recorded_pids().len(), 1);
    // Count wireguard-go processes living in this lab's namespace (other test processes may
    // run their own elsewhere).
    use std::os::unix::fs::MetadataExt;
    let ns_ino = std::fs::metadata(format!("/run/netns/{}", lab.ns_a))
        .unwrap()
        .ino();
    let daemons = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            let ino = std::fs::metadata(format!("/proc/{pid}/ns/net")).map(|m| m.ino());
            comm.trim() == "wireguard-go" && pid_alive(*pid) && ino.ok() == Some(ns_ino)
        })
        .count();
    assert_eq!(daemons, 1);
    tunnel::down(&cfg, &a).unwrap();
}

#[test]
fn down_after_daemon_death_spares_a_same_named_newcomer() {
    let lab = Lab::new("wgnew0");
    lab.keys();
    let cfg = Config::load(lab.config("a")).unwrap();
    let a = side(&lab, "a");
    tunnel::up(&cfg, &a).unwrap();
    let pid = tunnel::status(&cfg, &a).unwrap().daemon_pid.unwrap();
    kill_and_wait(pid, libc::SIGKILL);
    wait_link_gone(&lab.ns_a, "wgnew0");
    // Someone else now creates an interface with that name: not ours to remove.
    sh(&[
        "ip", "-n", &lab.ns_a, "link", "add", "wgnew0", "type", "veth", "peer", "name", "wgnew0p",
    ]);
    let rep = tunnel::down(&cfg, &a).unwrap();
    assert!(
        !rep.removed.iter().any(|r| r.starts_with("interface")),
        "{:?}",
        rep.removed
    );
    assert!(rep.removed.iter().any(|r| r.starts_with("state")));
    let links = String::from_utf8_lossy(&sh(&["ip", "-n", &lab.ns_a, "link"]).stdout).into_owned();
    assert!(links.contains("wgnew0"), "the newcomer survives down");
}

#[test]
fn orphaned_daemon_is_named_not_adopted() {
    let lab = Lab::new("wgorph0");
    lab.keys();
    let cfg = Config::load(lab.config("a")).unwrap();
    let a = side(&lab, "a");
    tunnel::up(&cfg, &a).unwrap();
    let pid = tunnel::status(&cfg, &a).unwrap().daemon_pid.unwrap();
    // The state file is lost (kept under another name so the Drop guard still kills the PID).
    let state = lab.state_dir.join(format!(
        "{}.json",
        tunnel::side::alias(Some(&lab.ns_a), "wgorph0")
    ));
    std::fs::rename(&state, lab.state_dir.join("orphan-backup.json")).unwrap();
    match tunnel::up(&cfg, &a) {
        Err(e @ Error::ForeignInterface { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(&format!("pid {pid}")), "{msg}");
            assert!(msg.contains("state file is gone"), "{msg}");
        }
        other => panic!("expected ForeignInterface, got {other:?}"),
    }
    // The operator stops it by PID as told; up then works again.
    kill_and_wait(pid, libc::SIGTERM);
    wait_link_gone(&lab.ns_a, "wgorph0");
    assert!(!tunnel::up(&cfg, &a).unwrap().is_empty());
    tunnel::down(&cfg, &a).unwrap();
}
