//! The journal on a real 3-node Galera cluster (`testkit::Galera`), the shared control store of
//! a fleet (issue 17):
//! - every case of `src/journal/suite.rs`, each connection of a case opened on the next node in
//!   turn, so a value written through one node is read back through another;
//! - compare-and-set races between connections on different nodes lose no update (Galera's
//!   certification conflicts are retried, never taken for success);
//! - a journal URL naming every node keeps working when the node it is connected to is killed.

#[path = "../src/journal/suite.rs"]
mod suite;

use migrator::fleet::Fleet;
#[allow(unused_imports)]
use migrator::journal::{
    open_journal, JournalError, JournalExt, JournalLocation, JournalStore, MariaDbJournal,
    SiteState, StepOutcome, StepStatus,
};
use mysql_async::Opts;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use suite::Backend;
use testkit::mariadb::ADMIN_PASSWORD;
use testkit::Galera;

/// One database of the cluster; each open goes to the next node.
struct Database<'a> {
    cluster: &'a Galera,
    db: String,
    next: AtomicUsize,
}

impl Database<'_> {
    fn opts(&self, node: usize) -> Opts {
        Opts::from_url(&format!("{}/{}", self.cluster.admin_url(node), self.db)).unwrap()
    }
}

impl Backend for Database<'_> {
    fn open(&self) -> Box<dyn JournalStore + Send> {
        let node = self.next.fetch_add(1, Ordering::Relaxed) % self.cluster.len();
        Box::new(MariaDbJournal::open(self.opts(node)).unwrap())
    }

    fn write_raw_state(&self, site: &str, state: &str) {
        self.cluster
            .exec(
                0,
                &format!(
                    "UPDATE `{}`.sites SET state = '{state}' WHERE site = '{site}'",
                    self.db
                ),
            )
            .unwrap();
    }
}

#[test]
fn galera_cluster_as_the_journal() {
    let mut cluster = Galera::start(3).unwrap();

    // 1. Every case of the suite, its connections spread over the three nodes.
    suite::run_all("galera", |case| Database {
        cluster: &cluster,
        db: format!("journal_{case}"),
        next: AtomicUsize::new(0),
    });

    // 2. Counter increments by compare-and-set from two nodes at once: none is lost.
    let race = Database {
        cluster: &cluster,
        db: "race".into(),
        next: AtomicUsize::new(0),
    };
    race.open().put_checkpoint_raw("counter", "n", "0").unwrap();
    let per_thread = 60;
    let wins: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|node| {
                let opts = race.opts(node);
                s.spawn(move || {
                    let mut j = MariaDbJournal::open(opts).unwrap();
                    let mut won = 0;
                    for _ in 0..per_thread {
                        loop {
                            let cur = j.checkpoint_raw("counter", "n").unwrap().unwrap();
                            let next = (cur.parse::<u64>().unwrap() + 1).to_string();
                            if j.swap_checkpoint_raw("counter", "n", Some(&cur), &next)
                                .unwrap()
                            {
                                won += 1;
                                break;
                            }
                        }
                    }
                    won
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(wins, 2 * per_thread);
    let total = race.open().checkpoint_raw("counter", "n").unwrap().unwrap();
    assert_eq!(total, (2 * per_thread).to_string(), "an increment was lost");

    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("store.pw");
    std::fs::write(&pw, format!("{ADMIN_PASSWORD}\n")).unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();

    // 3. Workers on the three nodes claim one wave's groups at once (the fleet lab's
    // `fleet-wave` saw a worker die of this): a claim that loses a certification conflict
    // runs again instead of failing, and no group is claimed twice (a COMMIT refused by
    // certification was once retried alone by the connection thread, "succeeded" on nothing,
    // and the worker believed it held a group another node's worker then claimed).
    let node_url = |i: usize| {
        format!(
            "mysql://admin@127.0.0.1:{}/claims?password_file={}",
            cluster.port(i),
            pw.display()
        )
    };
    let groups: Vec<Vec<String>> = (0..45).map(|g| vec![format!("site{g}")]).collect();
    Fleet::open(std::path::Path::new(&node_url(0)))
        .unwrap()
        .start_wave(1, "plan#wave1", &groups, "test")
        .unwrap();
    let claimed: Vec<(u32, usize, bool)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..3)
            .map(|node| {
                let url = node_url(node);
                s.spawn(move || {
                    let fleet = Fleet::open(std::path::Path::new(&url)).unwrap();
                    let mut mine = Vec::new();
                    while let Some(c) = fleet
                        .claim(1, &format!("worker{node}"), 60_000)
                        .unwrap_or_else(|e| panic!("a claim on node {} failed: {e}", node + 1))
                    {
                        let finished = fleet.finish(&c).unwrap();
                        mine.push((c.group, node, finished));
                    }
                    mine
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let mut unique: Vec<u32> = claimed.iter().map(|c| c.0).collect();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 45, "{claimed:?}");
    assert_eq!(claimed.len(), 45, "a group was claimed twice: {claimed:?}");
    assert!(
        claimed.iter().all(|c| c.2),
        "a claim was not its owner's at finish: {claimed:?}"
    );

    // 4. A URL naming every node: the journal moves to another node when its node dies.
    let hosts: Vec<String> = (0..3)
        .map(|i| format!("127.0.0.1:{}", cluster.port(i)))
        .collect();
    let url = format!(
        "mysql://admin@{}/fleet?password_file={}",
        hosts.join(","),
        pw.display()
    );
    let loc = JournalLocation::parse(std::path::Path::new(&url)).unwrap();
    let mut j = open_journal(&loc).unwrap();
    j.set_site_state("shop", SiteState::Synced).unwrap();
    // The journal connects to the first node that answers: node 1. Kill it.
    cluster.kill(0).unwrap();
    j.set_site_state("shop", SiteState::Live)
        .expect("the journal carries on through another node");
    assert_eq!(j.site_state("shop").unwrap(), Some(SiteState::Live));
    let seen = cluster
        .exec(1, "SELECT state FROM fleet.sites WHERE site = 'shop'")
        .unwrap();
    assert_eq!(seen.trim(), "live");
}
