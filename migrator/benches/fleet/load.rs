//! The fleet bench's store: a private MariaDB server (testkit) holding the 3M-site journal,
//! bulk-loaded with `LOAD DATA INFILE` from tab-separated files of the shared generator
//! ([`journal_gen`]); and the server's counters, read before and after each run.

use crate::common::journal_gen::{journal_sites, Site};
use migrator::journal::{open_journal_at, open_sql_at, SqlConn};
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;
use testkit::mariadb::{MariaDbOptions, ADMIN_PASSWORD};
use testkit::MariaDb;

/// The server and the journal's `--journal` URL.
pub struct Store {
    pub server: MariaDb,
    pub url: String,
}

impl Store {
    /// Starts the server: InnoDB's buffer pool big enough for the whole journal (the
    /// summary's indexes included) and a redo log that does not throttle the bulk load.
    /// testkit's server writes its redo log at each commit and syncs it once a second
    /// (`innodb_flush_log_at_trx_commit = 2`), as Galera nodes are usually run.
    pub fn start(dir: &Path) -> Store {
        let server = MariaDb::start_with(MariaDbOptions {
            binlog_server_id: None,
            extra_args: vec![
                "--innodb-buffer-pool-size=3G".into(),
                "--innodb-log-file-size=1G".into(),
                "--max-prepared-stmt-count=100000".into(),
            ],
        })
        .expect("start mariadbd");
        let pw = dir.join("journal.pw");
        std::fs::write(&pw, format!("{ADMIN_PASSWORD}\n")).unwrap();
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
        let url = format!(
            "mysql://admin@127.0.0.1:{}/journal?password_file={}",
            server.port(),
            pw.display()
        );
        Store { server, url }
    }

    pub fn path(&self) -> &Path {
        Path::new(&self.url)
    }

    pub fn sql(&self) -> Box<dyn SqlConn> {
        open_sql_at(self.path()).expect("open the MariaDB journal")
    }

    /// The journal of [`journal_sites`] (`done` waves done), loaded in bulk; prints what it
    /// loaded and how long each table took.
    pub fn load(&self, sites: usize, done: usize, plan_ref: &str) {
        let mut j = open_journal_at(self.path()).expect("create the journal's schema");
        j.set_plan(plan_ref).unwrap();
        drop(j);
        let dir = self.server.dir().join("load");
        std::fs::create_dir_all(&dir).unwrap();
        let t = Instant::now();
        let files = write_tsv(&dir, sites, done);
        println!(
            "generated {} sites, {} steps, {} freeze times as TSV in {:.1} s",
            files.counts[0],
            files.counts[1],
            files.counts[2],
            t.elapsed().as_secs_f64()
        );
        let db = self.sql();
        for (table, cols, file) in [
            ("sites", "(site, state, updated_ms)", &files.sites),
            (
                "steps",
                "(site, phase, status, started_ms, ended_ms, bytes, error)",
                &files.steps,
            ),
            (
                "checkpoints",
                "(scope, k, value, updated_ms)",
                &files.checkpoints,
            ),
        ] {
            let t = Instant::now();
            db.batch(&format!(
                "LOAD DATA INFILE '{}' INTO TABLE {table} {cols}",
                file.display()
            ))
            .unwrap_or_else(|e| panic!("load {table}: {e}"));
            println!("  LOAD DATA {table}: {:.1} s", t.elapsed().as_secs_f64());
            let _ = std::fs::remove_file(file);
        }
    }

    /// The server's counters ([`COUNTERS`]).
    pub fn status(&self, db: &dyn SqlConn) -> BTreeMap<String, i64> {
        let names: Vec<String> = COUNTERS.iter().map(|c| format!("'{c}'")).collect();
        db.query(
            &format!(
                "SELECT VARIABLE_NAME, VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS
                  WHERE VARIABLE_NAME IN ({})",
                names.join(",")
            ),
            &[],
        )
        .unwrap()
        .into_iter()
        .map(|r| {
            let v = r.text(1).unwrap();
            (r.text(0).unwrap(), v.parse().unwrap_or(0))
        })
        .collect()
    }

    /// Waits (at most `max`) until the server is idle: under 5 % of a CPU over a second (the
    /// purge of a bulk load or rebuild done). Returns the seconds waited.
    pub fn settle(&self, max: std::time::Duration) -> f64 {
        let t = Instant::now();
        while t.elapsed() < max {
            let c = self.cpu_secs();
            std::thread::sleep(std::time::Duration::from_secs(1));
            if self.cpu_secs() - c < 0.05 {
                break;
            }
        }
        t.elapsed().as_secs_f64()
    }

    /// CPU seconds `mariadbd` used so far (user + system).
    pub fn cpu_secs(&self) -> f64 {
        proc_cpu_secs(self.server.pid().expect("mariadbd runs"))
    }
}

/// Server counters of a run (`SHOW GLOBAL STATUS` names).
pub const COUNTERS: &[&str] = &[
    "QUESTIONS",
    "CONNECTIONS",
    "COM_INSERT",
    "COM_UPDATE",
    "COM_DELETE",
    "COM_INSERT_SELECT",
    "COM_SELECT",
    "COM_STMT_PREPARE",
    "COM_STMT_EXECUTE",
    "HANDLER_WRITE",
    "HANDLER_UPDATE",
    "HANDLER_DELETE",
    "HANDLER_READ_KEY",
    "HANDLER_READ_NEXT",
    "HANDLER_READ_RND_NEXT",
    "INNODB_ROW_LOCK_WAITS",
    "INNODB_ROW_LOCK_TIME",
    "INNODB_DEADLOCKS",
];

/// CPU seconds (user + system) of process `pid` so far.
pub fn proc_cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| f.get(i).and_then(|v| v.parse::<f64>().ok()))
        .sum();
    // SAFETY: sysconf has no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

struct Tsv {
    sites: PathBuf,
    steps: PathBuf,
    checkpoints: PathBuf,
    /// Sites, steps, checkpoints.
    counts: [usize; 3],
}

/// The generated journal as three tab-separated files (`\N`: NULL).
fn write_tsv(dir: &Path, sites: usize, done: usize) -> Tsv {
    let open = |n: &str| {
        let p = dir.join(n);
        (
            std::io::BufWriter::new(std::fs::File::create(&p).unwrap()),
            p,
        )
    };
    let (mut s, sites_p) = open("sites.tsv");
    let (mut st, steps_p) = open("steps.tsv");
    let (mut cp, cp_p) = open("checkpoints.tsv");
    let mut counts = [0; 3];
    journal_sites(sites, done, |site: Site| {
        writeln!(s, "{}\t{}\t{}", site.name, site.state, site.updated_ms).unwrap();
        counts[0] += 1;
        for p in &site.steps {
            writeln!(
                st,
                "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                site.name,
                p.phase,
                if p.failed { "failed" } else { "done" },
                p.started_ms,
                p.ended_ms,
                p.bytes,
                p.error.as_deref().unwrap_or("\\N")
            )
            .unwrap();
            counts[1] += 1;
        }
        if let Some(f) = &site.freeze_ms {
            writeln!(
                cp,
                "cutover\t{}.freeze_ms\t{f}\t{}",
                site.name, site.updated_ms
            )
            .unwrap();
            counts[2] += 1;
        }
    });
    for w in [&mut s, &mut st, &mut cp] {
        w.flush().unwrap();
    }
    Tsv {
        sites: sites_p,
        steps: steps_p,
        checkpoints: cp_p,
        counts,
    }
}
