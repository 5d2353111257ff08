//! A private Galera cluster (MariaDB with `wsrep`, Debian's `galera-4`) of N nodes on loopback:
//! the shared control store of issue 17 as the lab and the tests run it.
//!
//! How it starts without a state snapshot transfer (SST): the first node is bootstrapped alone
//! (`--wsrep-new-cluster`), gets the `admin` account, and is shut down cleanly, which records
//! its position (`grastate.dat`: cluster UUID and seqno). Its data directory is copied to every
//! other node; the first node bootstraps again and the others join one after the other. Each
//! joiner already holds the cluster's history up to that seqno, so Galera sends it only the few
//! write sets since (IST from the donor's gcache). Why not a real SST: Debian's `wsrep_sst_rsync`
//! runs its receiving rsync daemon as `nobody` when started by root, which cannot write a root
//! data directory, and `mariabackup` SST logs its errors only to syslog. The one rsync step that
//! remains (the IST "bypass" marker written into the joiner's data directory) needs that
//! directory writable by `nobody`: data directories are 0777 under a 0711 parent, which is
//! acceptable for a throw-away test cluster on loopback and nothing else.
//!
//! A killed node stalls commits on the others until they evict it: the failure detector is
//! tightened for loopback (suspect after 2 s, evicted by 4 s; Galera's defaults are 5 s and
//! 15 s, which a production cluster keeps).
//!
//! A node killed with [`Galera::kill`] stays down (the cluster keeps quorum with the others);
//! restarting it would need an SST, which this harness does not do.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::mariadb::{ADMIN_PASSWORD, ADMIN_USER};
use crate::process::ChildGuard;
use crate::{err, find_program, free_port, wait_until, Result};

/// One node's addresses (all on 127.0.0.1).
struct Node {
    /// `mariadbd`, or `None` once the node was killed.
    process: Option<ChildGuard>,
    /// SQL port.
    port: u16,
    /// Group communication (gcomm) port: how the nodes find each other.
    gcomm: u16,
    /// Incremental state transfer receiver port.
    ist: u16,
    /// State snapshot transfer receiver port (the rsync daemon of the IST "bypass" step).
    sst: u16,
    dir: PathBuf,
}

impl Node {
    fn socket(&self) -> PathBuf {
        self.dir.join("mysqld.sock")
    }
}

/// A running Galera cluster; every node is stopped and the files removed on drop.
pub struct Galera {
    // Field order: the nodes stop before the directory holding their data is removed.
    nodes: Vec<Node>,
    name: String,
    dir: tempfile::TempDir,
}

impl Galera {
    /// Starts an `n`-node cluster (n ≥ 1) and waits until every node is `Synced`.
    pub fn start(n: usize) -> Result<Self> {
        if n == 0 {
            return Err(err("a Galera cluster needs at least one node"));
        }
        let mut last = String::new();
        // A port found free may be taken by the time a node binds it: retry a few times.
        for _ in 0..3 {
            match Self::try_start(n) {
                Ok(cluster) => return Ok(cluster),
                Err(e) => last = e.0,
            }
        }
        Err(err(format!(
            "the Galera cluster did not start after 3 tries: {last}"
        )))
    }

    fn try_start(n: usize) -> Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new()
            .prefix("testkit-galera-")
            .tempdir()
            .map_err(|e| err(format!("tempdir: {e}")))?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711))
            .map_err(|e| err(format!("chmod {}: {e}", dir.path().display())))?;
        let name = dir
            .path()
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "testkit-galera".into());
        let mut nodes = Vec::with_capacity(n);
        for i in 0..n {
            let node_dir = dir.path().join(format!("node{}", i + 1));
            std::fs::create_dir_all(node_dir.join("tmp"))
                .map_err(|e| err(format!("create {}: {e}", node_dir.display())))?;
            std::fs::set_permissions(&node_dir, std::fs::Permissions::from_mode(0o711))
                .map_err(|e| err(format!("chmod {}: {e}", node_dir.display())))?;
            nodes.push(Node {
                process: None,
                port: free_port()?,
                gcomm: free_port()?,
                ist: free_port()?,
                sst: free_port()?,
                dir: node_dir,
            });
        }
        let mut cluster = Self { nodes, name, dir };
        cluster.seed()?;
        for i in 0..n {
            cluster.start_node(i, i == 0)?;
            cluster.wait_synced(i, Duration::from_secs(60))?;
        }
        Ok(cluster)
    }

    /// Makes the seed data directory (node 1, with the admin account and a clean shutdown
    /// position) and copies it to every other node.
    fn seed(&mut self) -> Result<()> {
        install_datadir(&self.nodes[0].dir)?;
        self.start_node(0, true)?;
        self.wait_synced(0, Duration::from_secs(60))?;
        self.exec(
            0,
            &format!(
                "CREATE USER '{ADMIN_USER}'@'%' IDENTIFIED BY '{ADMIN_PASSWORD}'; \
                 GRANT ALL PRIVILEGES ON *.* TO '{ADMIN_USER}'@'%' WITH GRANT OPTION;"
            ),
        )?;
        if let Some(mut p) = self.nodes[0].process.take() {
            p.stop();
        }
        let others: Vec<PathBuf> = self.nodes[1..].iter().map(|n| n.dir.clone()).collect();
        clone_seed(&self.nodes[0].dir, &others)
    }

    fn start_node(&mut self, i: usize, bootstrap: bool) -> Result<()> {
        let peers: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.gcomm))
            .collect();
        let node = &self.nodes[i];
        let name = format!("node{}", i + 1);
        let args = mariadbd_args(&NodeArgs {
            dir: &node.dir,
            addr: "127.0.0.1",
            port: node.port,
            gcomm: node.gcomm,
            ist: node.ist,
            sst: node.sst,
            cluster: &self.name,
            peers: &peers,
            node_name: &name,
            bootstrap,
        })?;
        let mut cmd = Command::new(find_program("mariadbd")?);
        cmd.args(args).stdout(Stdio::null()).stderr(Stdio::null());
        let what = format!("galera node{} mariadbd on 127.0.0.1:{}", i + 1, node.port);
        self.nodes[i].process = Some(ChildGuard::spawn(what, &mut cmd)?);
        Ok(())
    }

    /// Waits until node `i` reports `wsrep_local_state_comment = Synced`.
    fn wait_synced(&mut self, i: usize, timeout: Duration) -> Result<()> {
        let mut state = String::new();
        let ok = wait_until(timeout, || {
            let exited = self.nodes[i]
                .process
                .as_mut()
                .map(|p| p.has_exited())
                .unwrap_or(true);
            if exited {
                return true;
            }
            state = self
                .exec(i, "SHOW STATUS LIKE 'wsrep_local_state_comment'")
                .unwrap_or_default();
            state.contains("Synced")
        });
        if ok && state.contains("Synced") {
            return Ok(());
        }
        let log = std::fs::read_to_string(self.nodes[i].dir.join("error.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        Err(err(format!(
            "galera node{} did not reach Synced (last state {:?}); end of its error log:\n{}",
            i + 1,
            state.trim(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )))
    }

    /// How many nodes the cluster was started with.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Always false: a cluster has at least one node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `i`'s SQL port on 127.0.0.1 (0-based).
    pub fn port(&self, i: usize) -> u16 {
        self.nodes[i].port
    }

    /// The PID of node `i`'s `mariadbd`, or `None` once it was killed.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.nodes[i].process.as_ref().and_then(|p| p.pid())
    }

    /// A `mysql://` URL for the admin account on node `i`.
    pub fn admin_url(&self, i: usize) -> String {
        format!(
            "mysql://{ADMIN_USER}:{ADMIN_PASSWORD}@127.0.0.1:{}",
            self.nodes[i].port
        )
    }

    /// The cluster's scratch directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs SQL as root on node `i` over its unix socket; returns stdout (tab-separated, no
    /// column names).
    pub fn exec(&self, i: usize, sql: &str) -> Result<String> {
        let client = find_program("mariadb")?;
        let out = Command::new(&client)
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.nodes[i].socket().display()))
            .args(["--user=root", "--batch", "--skip-column-names", "-e", sql])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| err(format!("run {}: {e}", client.display())))?;
        if !out.status.success() {
            return Err(err(format!(
                "SQL failed on galera node{}: {}\nstatement: {sql}",
                i + 1,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The cluster size node `i` sees (`wsrep_cluster_size`).
    pub fn cluster_size(&self, i: usize) -> Result<usize> {
        let out = self.exec(i, "SHOW STATUS LIKE 'wsrep_cluster_size'")?;
        out.split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| err(format!("unexpected wsrep_cluster_size answer {out:?}")))
    }

    /// Kills node `i` with SIGKILL (a crash, not a shutdown) and reaps it. It stays down.
    pub fn kill(&mut self, i: usize) -> Result<()> {
        let mut p = self.nodes[i]
            .process
            .take()
            .ok_or_else(|| err(format!("galera node{} is not running", i + 1)))?;
        p.signal(libc::SIGKILL)?;
        p.stop();
        Ok(())
    }
}

/// How one node runs, for [`mariadbd_args`]. The node's directory `dir` holds `data/`, `tmp/`,
/// `mysqld.sock`, `mysqld.pid` and `error.log`. Also used by the scenarios lab, which runs its
/// nodes as lab daemons inside a network namespace.
pub struct NodeArgs<'a> {
    pub dir: &'a Path,
    /// The address every port of the node binds.
    pub addr: &'a str,
    pub port: u16,
    /// Group communication port: how the nodes find each other.
    pub gcomm: u16,
    /// Incremental state transfer receiver port.
    pub ist: u16,
    /// State snapshot transfer receiver port (the rsync daemon of the IST "bypass" step).
    pub sst: u16,
    pub cluster: &'a str,
    /// Every node's `addr:gcomm`, this one included.
    pub peers: &'a [String],
    pub node_name: &'a str,
    /// `--wsrep-new-cluster`: the first node of a (re)started cluster.
    pub bootstrap: bool,
}

/// `mariadbd`'s arguments for one node (the provider found on this machine, the failure
/// detector tightened for a lab: see the module's comment).
pub fn mariadbd_args(a: &NodeArgs) -> Result<Vec<String>> {
    let provider = [
        "/usr/lib/galera/libgalera_smm.so",
        "/usr/lib/libgalera_smm.so",
    ]
    .into_iter()
    .find(|p| Path::new(p).is_file())
    .ok_or_else(|| err("libgalera_smm.so not found: install galera-4 (scripts/install-deps.sh)"))?;
    let d = a.dir.display();
    let mut v = vec![
        "--no-defaults".to_string(),
        format!("--datadir={d}/data"),
        format!("--port={}", a.port),
        format!("--bind-address={}", a.addr),
        format!("--socket={d}/mysqld.sock"),
        format!("--pid-file={d}/mysqld.pid"),
        format!("--log-error={d}/error.log"),
        format!("--tmpdir={d}/tmp"),
        "--user=root".into(),
        "--skip-name-resolve".into(),
        "--max-connections=2000".into(),
        "--innodb-buffer-pool-size=64M".into(),
        "--innodb-flush-log-at-trx-commit=2".into(),
        "--binlog-format=ROW".into(),
        "--default-storage-engine=InnoDB".into(),
        "--innodb-autoinc-lock-mode=2".into(),
        "--wsrep-on=ON".into(),
        format!("--wsrep-provider={provider}"),
        format!("--wsrep-cluster-name={}", a.cluster),
        format!("--wsrep-cluster-address=gcomm://{}", a.peers.join(",")),
        format!("--wsrep-node-address={}:{}", a.addr, a.gcomm),
        format!("--wsrep-node-name={}", a.node_name),
        "--wsrep-sst-method=rsync".into(),
        format!("--wsrep-sst-receive-address={}:{}", a.addr, a.sst),
        format!(
            "--wsrep-provider-options=gmcast.listen_addr=tcp://{}:{};\
             ist.recv_addr={}:{};gcache.size=64M;\
             evs.keepalive_period=PT0.5S;evs.suspect_timeout=PT2S;\
             evs.inactive_timeout=PT4S;evs.inactive_check_period=PT0.5S",
            a.addr, a.gcomm, a.addr, a.ist
        ),
    ];
    if a.bootstrap {
        v.push("--wsrep-new-cluster".into());
    }
    Ok(v)
}

/// `mariadb-install-db` into `<node_dir>/data` (the seed node's system tables).
pub fn install_datadir(node_dir: &Path) -> Result<()> {
    let install = find_program("mariadb-install-db")?;
    let out = Command::new(&install)
        .args(["--no-defaults", "--user=root", "--skip-test-db"])
        .arg("--auth-root-authentication-method=normal")
        .arg(format!("--datadir={}", node_dir.join("data").display()))
        .arg(format!("--tmpdir={}", node_dir.join("tmp").display()))
        .stdin(Stdio::null())
        .output()
        .map_err(|e| err(format!("run {}: {e}", install.display())))?;
    if !out.status.success() {
        return Err(err(format!(
            "mariadb-install-db failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
}

/// After the seed node (bootstrapped alone, accounts made) was shut down cleanly: checks that
/// it recorded its position, copies its data directory to every other node's directory and
/// makes every data directory writable by `nobody` (the IST "bypass" step; module comment).
pub fn clone_seed(seed_dir: &Path, others: &[PathBuf]) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let seed = seed_dir.join("data");
    let state = std::fs::read_to_string(seed.join("grastate.dat"))
        .map_err(|e| err(format!("read grastate.dat of the seed node: {e}")))?;
    if state.contains("seqno:   -1") {
        return Err(err(format!(
            "the seed node did not record its position at shutdown:\n{state}"
        )));
    }
    for dir in others {
        let out = Command::new("cp")
            .arg("-a")
            .arg(&seed)
            .arg(dir.join("data"))
            .output()
            .map_err(|e| err(format!("run cp: {e}")))?;
        if !out.status.success() {
            return Err(err(format!(
                "copy the seed data directory to {}: {}",
                dir.display(),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
    }
    for dir in std::iter::once(&seed_dir.to_path_buf()).chain(others) {
        let data = dir.join("data");
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o777))
            .map_err(|e| err(format!("chmod {}: {e}", data.display())))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_nodes_replicate_and_survive_the_loss_of_one() {
        let mut g = Galera::start(3).expect("start a 3-node cluster");
        assert_eq!(g.cluster_size(0).unwrap(), 3);
        g.exec(
            1,
            "CREATE DATABASE j; CREATE TABLE j.t (id INT PRIMARY KEY AUTO_INCREMENT, v INT); \
             INSERT INTO j.t (v) VALUES (1), (2)",
        )
        .unwrap();
        // Galera replication is synchronous at commit, but applying on a peer is not: wait.
        assert!(
            wait_until(Duration::from_secs(10), || g
                .exec(2, "SELECT COUNT(*) FROM j.t")
                .map(|s| s.trim() == "2")
                .unwrap_or(false)),
            "rows written on node2 never showed on node3"
        );
        let pid = g.pid(2).unwrap();
        g.kill(2).unwrap();
        // SAFETY: signal 0 only checks whether the PID exists.
        assert_ne!(unsafe { libc::kill(pid as i32, 0) }, 0, "node3 still alive");
        assert!(
            wait_until(Duration::from_secs(30), || g.cluster_size(0).ok()
                == Some(2)),
            "the cluster did not shrink to 2 nodes"
        );
        g.exec(0, "INSERT INTO j.t (v) VALUES (3)")
            .expect("the two remaining nodes keep quorum and accept writes");
        assert!(wait_until(Duration::from_secs(10), || g
            .exec(1, "SELECT COUNT(*) FROM j.t")
            .map(|s| s.trim() == "3")
            .unwrap_or(false)));
        let dir = g.dir().to_path_buf();
        let pids: Vec<u32> = (0..2).filter_map(|i| g.pid(i)).collect();
        drop(g);
        for pid in pids {
            // SAFETY: as above.
            assert_ne!(
                unsafe { libc::kill(pid as i32, 0) },
                0,
                "{pid} survived drop"
            );
        }
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
}
