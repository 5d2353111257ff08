//! One site's bundle, captured from the old side after the switch (nothing writes there any
//! more: it is the consistency point), off the critical path, throttled, resumable per part.
//!
//! Per database: a `mariadb-dump` (`--single-transaction`, routines, triggers, events, blobs
//! in hex, no `CREATE DATABASE`/`USE`, so it restores under any name with the stock client:
//! `zstd -dc PART | mariadb NEWNAME`). Why `mariadb-dump` rather than SQL text written from our
//! row reader: its output is what operators and customers already restore and trust, it
//! covers every column type, view, routine and event, and it is not the bottleneck (zstd
//! and the throttle are; BENCHMARKS.md). Per home: the file manifest (paths, sizes, modes,
//! BLAKE3) and, when asked, a tar of the home.
//!
//! Resume: after each part is renamed into place its size and hash go to `progress.json`; a
//! rerun re-hashes each listed part and skips it when it matches, so a capture killed at any
//! point redoes at most the part it was writing. The manifest and its signature come last.

use super::part::{self, ClientOptions, Throttle};
use super::pause::Gate;
use super::state::{self, BundleState, Stage};
use super::store::{self, BundleRef, BundleStore};
use super::{
    BundleError, BundleManifest, ChecksumSource, DbRecord, HomeRecord, PartInfo, PartKind, Result,
};
use crate::db::schema::{self, Side};
use crate::journal::{now_ms, JournalStore, SiteState, StepStatus};
use crate::site_spec::SiteSpec;
use ed25519_dalek::SigningKey;
use mysql_async::prelude::*;
use std::collections::BTreeMap;
use std::process::Command;

const DAY_MS: i64 = 86_400_000;

/// How to capture.
#[derive(Debug, Clone)]
pub struct CaptureOptions {
    /// Days the bundle is kept after its capture (`bundle expire` deletes it then).
    pub keep_days: u32,
    /// Bytes per second read from the old side, over all parts (`None`: no limit).
    pub rate: Option<u64>,
    /// Also store a tar of every home.
    pub tar_homes: bool,
    /// The dump program (`mariadb-dump`).
    pub dump_program: String,
}

impl Default for CaptureOptions {
    fn default() -> Self {
        CaptureOptions {
            keep_days: 30,
            rate: None,
            tar_homes: false,
            dump_program: "mariadb-dump".into(),
        }
    }
}

/// What a capture did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CaptureReport {
    pub bundle: String,
    /// Already complete before this run: nothing was written.
    pub already: bool,
    pub written: Vec<String>,
    /// Finished by an earlier run (hash checked) and kept.
    pub skipped: Vec<String>,
    pub bytes: u64,
    pub raw_bytes: u64,
    pub seconds: f64,
    /// Times the capture paused for a freeze ([`super::pause`]), and for how long in all.
    pub pauses: u64,
    pub paused_seconds: f64,
}

/// When the site's switch committed: the end of its last `switch` phase that finished.
pub fn switch_instant(journal: &dyn JournalStore, site: &str) -> Result<Option<i64>> {
    Ok(journal
        .steps(site)?
        .into_iter()
        .filter(|s| s.phase == "switch" && s.status == StepStatus::Done)
        .filter_map(|s| s.ended_ms)
        .max())
}

/// The bundle a capture of `site` would write now (`None`: not switched).
pub fn bundle_of(journal: &dyn JournalStore, site: &str) -> Result<Option<BundleRef>> {
    Ok(switch_instant(journal, site)?.map(|switch_ms| BundleRef {
        site: site.to_string(),
        switch_ms,
    }))
}

/// Captures `spec`'s site into `store`, signed with `key`. Only a site serving from the new
/// side (`live` or `finalized`), so that its old side is the state at the switch.
pub fn capture(
    journal: &mut dyn JournalStore,
    spec: &SiteSpec,
    store: &dyn BundleStore,
    key: &SigningKey,
    opts: &CaptureOptions,
) -> Result<CaptureReport> {
    let site = &spec.site;
    let refuse = |message: String| BundleError::Refused {
        site: site.clone(),
        message,
    };
    let st = journal.site_state(site)?.unwrap_or(SiteState::Planned);
    if !matches!(st, SiteState::Live | SiteState::Finalized) {
        return Err(refuse(format!(
            "state {st}: a bundle is captured only once the site is live on the new side \
             (its old side is then the state at the switch)"
        )));
    }
    let b = bundle_of(journal, site)?
        .ok_or_else(|| refuse("the journal holds no finished switch".into()))?;
    let started = std::time::Instant::now();
    if let Some((m, _, _)) = store::read_manifest(store, &b)? {
        return Ok(CaptureReport {
            bundle: b.id(),
            already: true,
            written: Vec::new(),
            skipped: m.parts.iter().map(|p| p.name.clone()).collect(),
            bytes: m.bytes(),
            raw_bytes: m.parts.iter().map(|p| p.raw_bytes).sum(),
            seconds: 0.0,
            pauses: 0,
            paused_seconds: 0.0,
        });
    }
    let mut st = BundleState {
        stage: Stage::Capturing,
        bundle: b.id(),
        store: store.describe(),
        bytes: 0,
        at_ms: now_ms(),
        error: None,
    };
    state::set(journal, site, &st)?;
    match run(journal, spec, store, key, opts, &b) {
        Ok(mut r) => {
            r.seconds = started.elapsed().as_secs_f64();
            st.stage = Stage::Captured;
            st.bytes = r.bytes;
            st.at_ms = now_ms();
            state::set(journal, site, &st)?;
            Ok(r)
        }
        Err(e) => {
            st.stage = Stage::Failed;
            st.error = Some(e.to_string());
            st.at_ms = now_ms();
            state::set(journal, site, &st)?;
            Err(e)
        }
    }
}

/// The parts already finished by an earlier run, each re-hashed: kept only if it still is
/// what `progress.json` says.
fn finished_parts(store: &dyn BundleStore, b: &BundleRef) -> Result<BTreeMap<String, PartInfo>> {
    let Some(bytes) = store.get_small(b, store::PROGRESS)? else {
        return Ok(BTreeMap::new());
    };
    let listed: Vec<PartInfo> = serde_json::from_slice(&bytes).unwrap_or_default();
    let mut out = BTreeMap::new();
    for p in listed {
        if store::hash_part(store, b, &p.name)? == Some((p.bytes, p.blake3.clone())) {
            out.insert(p.name.clone(), p);
        }
    }
    Ok(out)
}

fn run(
    journal: &mut dyn JournalStore,
    spec: &SiteSpec,
    store: &dyn BundleStore,
    key: &SigningKey,
    opts: &CaptureOptions,
    b: &BundleRef,
) -> Result<CaptureReport> {
    // Read only from here on: the journal's freeze leases (the gate) and its checksums.
    let journal: &dyn JournalStore = journal;
    let gate = Gate::new(Some(journal));
    let mut done = finished_parts(store, b)?;
    let mut report = CaptureReport {
        bundle: b.id(),
        already: false,
        written: Vec::new(),
        skipped: done.keys().cloned().collect(),
        bytes: 0,
        raw_bytes: 0,
        seconds: 0.0,
        pauses: 0,
        paused_seconds: 0.0,
    };
    let mut throttle = Throttle::with_gate(opts.rate, &gate);
    let mut order: Vec<String> = Vec::new();
    // Writes `name` unless an earlier run finished it; records it in progress.json.
    let mut part = |name: String,
                    write: &mut dyn FnMut(&mut Throttle<'_>) -> Result<PartInfo>,
                    done: &mut BTreeMap<String, PartInfo>,
                    report: &mut CaptureReport|
     -> Result<()> {
        order.push(name.clone());
        if done.contains_key(&name) {
            return Ok(());
        }
        gate.wait();
        let info = write(&mut throttle)?;
        done.insert(name.clone(), info);
        report.written.push(name);
        let list: Vec<&PartInfo> = done.values().collect();
        let json = serde_json::to_vec_pretty(&list).expect("parts serialize");
        store.put_small(b, store::PROGRESS, &json)
    };

    let mut databases = Vec::new();
    if !spec.databases.is_empty() {
        // The old side only: a capture never needs the new server.
        let fail = |message: String| BundleError::Database {
            db: spec.databases.join(","),
            message,
        };
        let f = &spec.old_db_url_file;
        let url: mysql_async::Opts = drivers::secret::read_secret_file("old_db_url_file", f)
            .map_err(|e| fail(e.to_string()))?
            .parse()
            .map_err(|_| {
                fail(format!(
                    "old_db_url_file {}: not a mysql:// URL",
                    f.display()
                ))
            })?;
        let cnf = ClientOptions::new(&url)?;
        for db in &spec.databases {
            gate.wait();
            let (charset, collation, sums) = describe_db(journal, &url, db)?;
            let name = super::part_name("db", db, ".sql.zst");
            part(
                name.clone(),
                &mut |t| {
                    let mut cmd = cnf.command(&opts.dump_program);
                    cmd.args([
                        "--single-transaction",
                        "--routines",
                        "--triggers",
                        "--events",
                        "--hex-blob",
                        "--skip-dump-date",
                        "--no-tablespaces",
                        "--default-character-set=utf8mb4",
                    ])
                    .arg("--")
                    .arg(db);
                    let sink = store.create(b, &name)?;
                    part::write_part_from_child(
                        sink,
                        &name,
                        PartKind::Dump,
                        cmd,
                        &format!("dump of {db}"),
                        t,
                    )
                },
                &mut done,
                &mut report,
            )?;
            databases.push(DbRecord {
                name: db.clone(),
                charset,
                collation,
                part: name,
                checksums: sums.0,
                checksums_from: sums.1,
            });
        }
    }

    let mut homes = Vec::new();
    for (i, h) in spec.homes.iter().enumerate() {
        let label = format!("{i}-{}", h.old.display());
        let mname = super::part_name("files", &label, ".jsonl.zst");
        let walk = crate::files::manifest::build(
            &h.old,
            &crate::files::manifest::WalkOptions {
                checksum: true,
                ..Default::default()
            },
        )
        .map_err(|e| BundleError::Io {
            path: h.old.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let (files, file_bytes) = (walk.entries.len() as u64, walk.total_bytes());
        part(
            mname.clone(),
            &mut |t| {
                let text = manifest_lines(&walk);
                let sink = store.create(b, &mname)?;
                part::write_part(sink, &mname, PartKind::FileManifest, &text[..], t)
            },
            &mut done,
            &mut report,
        )?;
        let tar_part = if opts.tar_homes {
            let tname = super::part_name("home", &label, ".tar.zst");
            part(
                tname.clone(),
                &mut |t| {
                    let mut cmd = Command::new("tar");
                    cmd.arg("-C")
                        .arg(&h.old)
                        .args(["--numeric-owner", "-cf", "-", "."]);
                    let sink = store.create(b, &tname)?;
                    let what = format!("tar of {}", h.old.display());
                    part::write_part_from_child(sink, &tname, PartKind::HomeTar, cmd, &what, t)
                },
                &mut done,
                &mut report,
            )?;
            Some(tname)
        } else {
            None
        };
        homes.push(HomeRecord {
            path: h.old.clone(),
            manifest_part: mname,
            tar_part,
            files,
            file_bytes,
        });
    }

    (report.pauses, report.paused_seconds) = {
        let (n, d) = gate.stats();
        (n, d.as_secs_f64())
    };
    let parts: Vec<PartInfo> = order.iter().filter_map(|n| done.get(n).cloned()).collect();
    report.bytes = parts.iter().map(|p| p.bytes).sum();
    report.raw_bytes = parts.iter().map(|p| p.raw_bytes).sum();
    let captured_ms = now_ms();
    let m = BundleManifest {
        format: super::FORMAT,
        site: spec.site.clone(),
        switch_ms: b.switch_ms,
        captured_ms,
        expires_ms: captured_ms + opts.keep_days as i64 * DAY_MS,
        databases,
        homes,
        parts,
        public_key: hex::encode(key.verifying_key().to_bytes()),
    };
    let bytes = serde_json::to_vec_pretty(&m).expect("manifest serializes");
    store.put_small(b, store::MANIFEST, &bytes)?;
    // Last: a signature makes the bundle complete.
    store.put_small(
        b,
        store::SIGNATURE,
        super::sign::sign(key, &bytes).as_bytes(),
    )?;
    Ok(report)
}

/// One JSON line per entry: path (or `path_hex` when not UTF-8), kind, size, mode, owner,
/// mtime, symlink target, BLAKE3.
fn manifest_lines(m: &crate::files::manifest::Manifest) -> Vec<u8> {
    let mut out = Vec::new();
    for e in &m.entries {
        let mut v = serde_json::json!({
            "kind": e.kind,
            "size": e.size,
            "mode": format!("{:o}", e.mode),
            "uid": e.uid,
            "gid": e.gid,
            "mtime_s": e.mtime_s,
        });
        match std::str::from_utf8(&e.path) {
            Ok(p) => v["path"] = p.into(),
            Err(_) => v["path_hex"] = hex::encode(&e.path).into(),
        }
        if let Some(t) = &e.link_target {
            v["link_target"] = String::from_utf8_lossy(t).into_owned().into();
        }
        if let Some(h) = &e.blake3 {
            v["blake3"] = hex::encode(h).into();
        }
        out.extend_from_slice(v.to_string().as_bytes());
        out.push(b'\n');
    }
    out
}

type Sums = (BTreeMap<String, String>, ChecksumSource);

/// A database's charset and collation, and its table checksums at the switch: the journal's,
/// else computed now from the old side (which nothing has written since the switch).
fn describe_db(
    journal: &dyn JournalStore,
    url: &mysql_async::Opts,
    db: &str,
) -> Result<(String, String, Sums)> {
    let journaled = state::switch_checksums(journal, db)?;
    let fail = |e: String| BundleError::Database {
        db: db.to_string(),
        message: e,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(e.to_string()))?;
    rt.block_on(async {
        let mut c = crate::db::session::session(url, Side::Source, None)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let row: Option<(String, String)> = c
            .exec_first(
                "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME \
                 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
                (db,),
            )
            .await
            .map_err(|e| fail(e.to_string()))?;
        let (charset, collation) = row.ok_or_else(|| fail("not on the old server".to_string()))?;
        let sums = match journaled {
            Some(j) => (j.tables, ChecksumSource::Journal),
            None => (
                checksums(&mut c, db)
                    .await
                    .map_err(|e| fail(e.to_string()))?,
                ChecksumSource::Capture,
            ),
        };
        let _ = c.disconnect().await;
        Ok((charset, collation, sums))
    })
}

/// Every base table's checksum ([`schema::table_checksum`]) of `db` on `c`'s server.
pub async fn checksums(
    c: &mut mysql_async::Conn,
    db: &str,
) -> schema::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for t in schema::tables(c, Side::Source, db).await? {
        let sum = schema::table_checksum(c, Side::Source, db, &t).await?;
        out.insert(t.name.clone(), sum);
    }
    Ok(out)
}
