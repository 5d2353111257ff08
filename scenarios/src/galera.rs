//! The fleet lab's control store (`lab up --fleet`, issue 17): a 3-node Galera cluster (real
//! `mariadbd` with `wsrep`, Debian's `galera-4`) in its own network namespace `hm<run>-ctl`,
//! one address per node on the lab's internet bridge (172.31.0.61–63:3306), reachable from the
//! client namespace (where the migrator workers run) and from old-dc (both proxies); nothing
//! routes out of the lab. Its data lives under the lab's data tmpfs.
//!
//! It starts the way `testkit::galera` does (and with its `mariadbd` arguments): node 1 is
//! bootstrapped alone, gets the store account and databases, and is shut down cleanly; its
//! data directory is copied to the others; node 1 bootstraps again and the others join one
//! after the other with a short IST, never an SST (why: the comment of `testkit::galera`).
//! Every node is a lab daemon recorded by PID (`ctl/galera-nodeN`); `lab down` stops them.

use crate::error::{LabError, Result};
use crate::process::{self, in_ns, spawn_daemon, ProcRecord};
use crate::secrets::{password, write_secret};
use crate::state::{FleetState, GaleraNode, LabState};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// The store account of proxies and workers.
pub const USER: &str = "fleet";
const PORT: u16 = 3306;
const GCOMM: u16 = 4567;
const IST: u16 = 4568;
const SST: u16 = 4444;
/// A proxy instance's lease in the store (sql-proxy's default): a cut-off instance fences
/// after half of it, and the evictions of a killed Galera node (by 4 s, tightened failure
/// detector) stall renewals for less than that.
pub const PROXY_LEASE_MS: u64 = 10_000;
const SYNCED: Duration = Duration::from_secs(60);

/// The fleet part of a new lab's state (nothing created yet).
pub fn skeleton(run: &str, state_dir: &Path) -> FleetState {
    let root = state_dir.join("data").join("galera");
    FleetState {
        netns: format!("hm{run}-ctl"),
        nodes: (1..=3u8)
            .map(|i| GaleraNode {
                service: format!("ctl/galera-node{i}"),
                addr: Ipv4Addr::new(172, 31, 0, 60 + i),
                port: PORT,
                dir: root.join(format!("node{i}")),
            })
            .collect(),
        user: USER.into(),
        password_file: state_dir.join("private").join("fleet-store.pw"),
        routes_db: "sqlproxy".into(),
        journal_db: "journal".into(),
        proxy_lease_ms: PROXY_LEASE_MS,
        proxy2: None,
    }
}

/// SQL as root over node `n`'s unix socket (from the host: no network needed); stdout.
pub fn exec(n: &GaleraNode, sql: &str) -> Result<String> {
    process::run(
        Command::new("mariadb")
            .arg("--no-defaults")
            .arg(format!("--socket={}", n.socket().display()))
            .args(["--user=root", "--batch", "--skip-column-names", "-e", sql]),
    )
}

/// `wsrep_local_state_comment` and `wsrep_cluster_size` as node `n` sees them.
pub fn node_state(n: &GaleraNode) -> Result<(String, usize)> {
    let out = exec(
        n,
        "SHOW STATUS WHERE Variable_name IN ('wsrep_local_state_comment','wsrep_cluster_size')",
    )?;
    let mut state = String::new();
    let mut size = 0;
    for l in out.lines() {
        match l.split_once('\t') {
            Some(("wsrep_local_state_comment", v)) => state = v.trim().to_string(),
            Some(("wsrep_cluster_size", v)) => size = v.trim().parse().unwrap_or(0),
            _ => {}
        }
    }
    Ok((state, size))
}

fn start_node(f: &FleetState, i: usize, bootstrap: bool) -> Result<ProcRecord> {
    let n = &f.nodes[i];
    let peers: Vec<String> = f
        .nodes
        .iter()
        .map(|g| format!("{}:{GCOMM}", g.addr))
        .collect();
    let addr = n.addr.to_string();
    let name = format!("node{}", i + 1);
    let args = testkit::galera::mariadbd_args(&testkit::galera::NodeArgs {
        dir: &n.dir,
        addr: &addr,
        port: n.port,
        gcomm: GCOMM,
        ist: IST,
        sst: SST,
        cluster: &f.netns,
        peers: &peers,
        node_name: &name,
        bootstrap,
    })
    .map_err(|e| LabError::Internal(format!("galera {name}: {}", e.0)))?;
    let mut cmd = in_ns(None, &f.netns, "mariadbd");
    cmd.args(args);
    spawn_daemon(&n.service, cmd, &n.dir.join("stdout.log"))
}

/// Starts of a joining node before its failure to sync is the lab's.
const NODE_STARTS: u32 = 3;

fn wait_synced(f: &FleetState, i: usize, rec: &ProcRecord) -> Result<()> {
    let n = &f.nodes[i];
    process::wait_until(SYNCED, || {
        if !process::alive(rec) {
            let log = n.dir.join("error.log");
            let errors: Vec<String> = std::fs::read_to_string(&log)
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains("[ERROR]"))
                .map(str::to_string)
                .collect();
            let last = errors[errors.len().saturating_sub(3)..].join(" | ");
            return Err(format!("exited (see {}): {last}", log.display()));
        }
        match node_state(n) {
            Ok((s, _)) if s == "Synced" => Ok(()),
            Ok((s, _)) => Err(format!("state {s:?}")),
            Err(e) => Err(e.to_string()),
        }
    })
    .map_err(|detail| LabError::NotReady {
        service: n.service.clone(),
        namespace: f.netns.clone(),
        address: SocketAddr::from((n.addr, n.port)).to_string(),
        secs: SYNCED.as_secs(),
        detail,
    })
}

/// Builds and starts the cluster (its namespace exists, on the bridge); records every node.
pub fn start(st: &mut LabState) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let f = st
        .fleet
        .clone()
        .ok_or_else(|| LabError::Internal("galera::start without a fleet".into()))?;
    let te = |e: testkit::Error| LabError::Internal(format!("galera: {}", e.0));
    for n in &f.nodes {
        let tmp = n.dir.join("tmp");
        std::fs::create_dir_all(&tmp).map_err(LabError::io("creating galera dir", &tmp))?;
        // The IST "bypass" step runs as `nobody`: it must reach the data directories.
        for d in [n.dir.as_path(), n.dir.parent().unwrap_or(&n.dir)] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o711))
                .map_err(LabError::io("chmod galera dir", d))?;
        }
    }
    let pw = password(24)?;
    write_secret(&f.password_file, format!("{pw}\n").as_bytes())?;
    testkit::galera::install_datadir(&f.nodes[0].dir).map_err(te)?;
    // The seed: node 1 alone, with the account and databases, then a clean shutdown.
    let seed = start_node(&f, 0, true)?;
    st.processes.push(seed.clone());
    st.save()?;
    wait_synced(&f, 0, &seed)?;
    exec(
        &f.nodes[0],
        &format!(
            "CREATE DATABASE {r}; CREATE DATABASE {j}; \
             CREATE USER '{u}'@'%' IDENTIFIED BY '{pw}'; \
             GRANT ALL ON {r}.* TO '{u}'@'%'; GRANT ALL ON {j}.* TO '{u}'@'%';",
            r = f.routes_db,
            j = f.journal_db,
            u = f.user
        ),
    )?;
    process::stop(&seed, Duration::from_secs(60));
    st.processes
        .retain(|p| !(p.pid == seed.pid && p.service == seed.service));
    st.save()?;
    let others: Vec<_> = f.nodes[1..].iter().map(|n| n.dir.clone()).collect();
    testkit::galera::clone_seed(&f.nodes[0].dir, &others).map_err(te)?;
    for i in 0..f.nodes.len() {
        // A joiner that gives up (e.g. it did not reach the primary view in time on a loaded
        // machine: seen once in CI, node 3 exited) is started again: its data directory is the
        // seed's clone, and a restarted joiner asks for the state again.
        let mut attempt = 1;
        loop {
            let rec = start_node(&f, i, i == 0)?;
            st.processes.push(rec.clone());
            st.save()?;
            match wait_synced(&f, i, &rec) {
                Ok(()) => break,
                Err(e) if i > 0 && attempt < NODE_STARTS && !process::alive(&rec) => {
                    eprintln!("galera node{}: {e}; starting it again", i + 1);
                    st.processes
                        .retain(|p| p.pid != rec.pid || p.service != rec.service);
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// The recorded process of node `i` (0-based), when it runs.
pub fn node_process(st: &LabState, i: usize) -> Option<ProcRecord> {
    let n = st.fleet.as_ref()?.nodes.get(i)?;
    st.processes
        .iter()
        .rev()
        .find(|p| p.service == n.service)
        .filter(|p| process::alive(p))
        .cloned()
}
