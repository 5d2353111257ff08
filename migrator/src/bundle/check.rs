//! Checking and using a bundle: [`verify`] (the signature against the operator's public key,
//! every part's size and BLAKE3, then each dump restored into a scratch database and its
//! table checksums compared with those recorded at the switch) and the restores (a database
//! under a name the operator chooses, a home into a directory). A restore checks the
//! signature and the part's hash first: a tampered bundle is never loaded.

use super::part::{spawn_reading_stderr, tail, ClientOptions};
use super::store::{self, BundleRef, BundleStore};
use super::{BundleError, BundleManifest, DbRecord, Result};
use crate::db::schema::{ident, Side};
use ed25519_dalek::VerifyingKey;
use mysql_async::prelude::*;
use mysql_async::Opts;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A part that is not what the manifest says.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BadPart {
    pub name: String,
    pub problem: String,
}

/// A dump restored into a scratch database and compared with the switch's checksums.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DbCheck {
    pub database: String,
    pub tables: usize,
    /// Empty: every table equal to the switch's checksum.
    pub differences: Vec<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct VerifyReport {
    pub bundle: String,
    pub signature_ok: bool,
    pub parts_checked: usize,
    pub bad_parts: Vec<BadPart>,
    /// Empty when no scratch server was given (or the bundle failed before).
    pub databases: Vec<DbCheck>,
    pub ok: bool,
}

impl VerifyReport {
    /// One line per problem, for the operator and the journal.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !self.signature_ok {
            out.push(
                "signature does not verify: the manifest was altered or signed by another key"
                    .to_string(),
            );
        }
        out.extend(
            self.bad_parts
                .iter()
                .map(|p| format!("part {}: {}", p.name, p.problem)),
        );
        for d in &self.databases {
            out.extend(
                d.differences
                    .iter()
                    .map(|x| format!("database {}: {x}", d.database)),
            );
        }
        out
    }
}

/// A complete bundle's manifest, or an error saying it is incomplete.
pub fn manifest(
    store: &dyn BundleStore,
    b: &BundleRef,
) -> Result<(BundleManifest, Vec<u8>, String)> {
    store::read_manifest(store, b)?.ok_or_else(|| BundleError::Invalid {
        bundle: b.id(),
        message: format!(
            "incomplete: no {} in {} (capture not finished: rerun `migrator bundle capture`)",
            store::SIGNATURE,
            store.describe()
        ),
    })
}

/// Checks `b`: signature, every part, and with `scratch` every dump restored and compared.
pub fn verify(
    store: &dyn BundleStore,
    b: &BundleRef,
    public: &VerifyingKey,
    scratch: Option<&Opts>,
) -> Result<VerifyReport> {
    let (m, bytes, sig) = manifest(store, b)?;
    let signature_ok = super::sign::verify(public, &bytes, &sig);
    let bad_parts = check_parts(store, b, &m)?;
    let mut report = VerifyReport {
        bundle: b.id(),
        signature_ok,
        parts_checked: m.parts.len(),
        bad_parts,
        databases: Vec::new(),
        ok: false,
    };
    if signature_ok && report.bad_parts.is_empty() {
        if let Some(url) = scratch {
            for db in &m.databases {
                report.databases.push(check_dump(store, b, db, url)?);
            }
        }
    }
    report.ok = report.problems().is_empty();
    Ok(report)
}

fn check_parts(store: &dyn BundleStore, b: &BundleRef, m: &BundleManifest) -> Result<Vec<BadPart>> {
    let mut bad = Vec::new();
    for p in &m.parts {
        let problem = match store::hash_part(store, b, &p.name)? {
            None => "missing".to_string(),
            Some((n, h)) if n != p.bytes || h != p.blake3 => format!(
                "altered: {n} bytes, BLAKE3 {}…; the manifest says {} bytes, BLAKE3 {}…",
                &h[..16],
                p.bytes,
                &p.blake3[..16.min(p.blake3.len())]
            ),
            Some(_) => continue,
        };
        bad.push(BadPart {
            name: p.name.clone(),
            problem,
        });
    }
    Ok(bad)
}

/// Refuses unless the signature and the named parts are intact.
fn require_intact(
    store: &dyn BundleStore,
    b: &BundleRef,
    public: &VerifyingKey,
    parts: &[&str],
) -> Result<BundleManifest> {
    let (m, bytes, sig) = manifest(store, b)?;
    let invalid = |message: String| BundleError::Invalid {
        bundle: b.id(),
        message,
    };
    if !super::sign::verify(public, &bytes, &sig) {
        return Err(invalid(
            "signature does not verify: the manifest was altered or signed by another key; \
             nothing restored"
                .into(),
        ));
    }
    for p in check_parts(store, b, &m)? {
        if parts.contains(&p.name.as_str()) {
            return Err(invalid(format!(
                "part {}: {}; nothing restored",
                p.name, p.problem
            )));
        }
    }
    Ok(m)
}

/// A scratch database name, unique per call.
fn scratch_name(db: &str) -> String {
    let mut r = [0u8; 4];
    // SAFETY: valid buffer of its length.
    unsafe { libc::getrandom(r.as_mut_ptr().cast(), r.len(), 0) };
    let safe: String = db
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(30)
        .collect();
    format!("bundle_verify_{safe}_{}", hex::encode(r))
}

fn db_err(db: &str) -> impl Fn(String) -> BundleError + '_ {
    move |message| BundleError::Database {
        db: db.to_string(),
        message,
    }
}

/// Runs `sql` statements on `url` (a short-lived runtime: the bundle code is synchronous).
fn admin<T: Send + 'static>(
    url: &Opts,
    db: &str,
    f: impl for<'c> FnOnce(
        &'c mut mysql_async::Conn,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = std::result::Result<T, String>> + Send + 'c>,
    >,
) -> Result<T> {
    let fail = db_err(db);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(e.to_string()))?;
    rt.block_on(async {
        let mut c = crate::db::session::session(url, Side::Destination, None)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let r = f(&mut c).await.map_err(&fail);
        let _ = c.disconnect().await;
        r
    })
}

fn check_dump(
    store: &dyn BundleStore,
    b: &BundleRef,
    db: &DbRecord,
    url: &Opts,
) -> Result<DbCheck> {
    let scratch = scratch_name(&db.name);
    create_db(url, &scratch, db)?;
    let res = load_dump(store, b, db, url, &scratch).and_then(|_| {
        let s2 = scratch.clone();
        admin(url, &scratch, move |c| {
            Box::pin(async move {
                super::capture::checksums(c, &s2)
                    .await
                    .map_err(|e| e.to_string())
            })
        })
    });
    let dropped = drop_db(url, &scratch);
    let restored = res?;
    dropped?;
    let mut differences = Vec::new();
    for (t, want) in &db.checksums {
        match restored.get(t) {
            None => differences.push(format!("table `{t}`: missing from the dump")),
            Some(got) if got != want => differences.push(format!(
                "table `{t}`: restored {got}, at the switch {want} (rows:sum:xor)"
            )),
            Some(_) => {}
        }
    }
    for t in restored.keys() {
        if !db.checksums.contains_key(t) {
            differences.push(format!("table `{t}`: in the dump, not at the switch"));
        }
    }
    Ok(DbCheck {
        database: db.name.clone(),
        tables: restored.len(),
        differences,
    })
}

fn create_db(url: &Opts, name: &str, db: &DbRecord) -> Result<()> {
    let sql = format!(
        "CREATE DATABASE {} CHARACTER SET {} COLLATE {}",
        ident(name),
        db.charset,
        db.collation
    );
    admin(url, name, move |c| {
        Box::pin(async move { c.query_drop(sql).await.map_err(|e| e.to_string()) })
    })
}

/// Streams `db`'s dump, decompressed, into the stock `mariadb` client on database `into`.
fn load_dump(
    store: &dyn BundleStore,
    b: &BundleRef,
    db: &DbRecord,
    url: &Opts,
    into: &str,
) -> Result<()> {
    let cnf = ClientOptions::new(url)?;
    let mut cmd = cnf.command("mariadb");
    cmd.arg("--batch").arg("--").arg(into);
    feed(
        store,
        b,
        &db.part,
        cmd,
        &format!("restore of {} into {into}", db.name),
    )
}

/// Decompresses part `name` into `cmd`'s standard input.
fn feed(
    store: &dyn BundleStore,
    b: &BundleRef,
    name: &str,
    mut cmd: Command,
    what: &str,
) -> Result<()> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let fail = |message: String| BundleError::Program {
        program: program.clone(),
        what: what.to_string(),
        message,
    };
    let src = store.open(b, name)?.ok_or_else(|| BundleError::Invalid {
        bundle: b.id(),
        message: format!("part {name}: missing"),
    })?;
    let mut dec = zstd::Decoder::new(src).map_err(BundleError::io(name))?;
    let (mut child, errs) = spawn_reading_stderr(&mut cmd, Stdio::piped(), Stdio::null())
        .map_err(|e| fail(format!("cannot start it: {e}")))?;
    let mut stdin = child.stdin.take().expect("stdin piped");
    let copied = std::io::copy(&mut dec, &mut stdin).and_then(|_| stdin.flush());
    drop(stdin);
    let status = child.wait().map_err(|e| fail(e.to_string()))?;
    let said = errs.join().unwrap_or_default();
    if !status.success() {
        return Err(fail(format!("{status}: {}", tail(&said))));
    }
    copied.map_err(|e| fail(format!("reading part {name}: {e}")))?;
    Ok(())
}

/// Recreates database `db` of bundle `b` on `url` as `as_name` (which must not exist there).
pub fn restore_db(
    store: &dyn BundleStore,
    b: &BundleRef,
    public: &VerifyingKey,
    db: &str,
    url: &Opts,
    as_name: &str,
) -> Result<()> {
    let (m, _, _) = manifest(store, b)?;
    let rec = m
        .databases
        .iter()
        .find(|d| d.name == db)
        .ok_or_else(|| BundleError::Invalid {
            bundle: b.id(),
            message: format!(
                "no database {db} in it (it holds: {})",
                m.databases
                    .iter()
                    .map(|d| d.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })?
        .clone();
    require_intact(store, b, public, &[&rec.part])?;
    let name = as_name.to_string();
    let exists = admin(url, as_name, move |c| {
        Box::pin(async move {
            let r: Option<String> = c
                .exec_first(
                    "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
                    (name,),
                )
                .await
                .map_err(|e| e.to_string())?;
            Ok(r.is_some())
        })
    })?;
    if exists {
        return Err(db_err(as_name)(
            "already exists on the target server: choose another name (a restore never \
             overwrites)"
                .into(),
        ));
    }
    create_db(url, as_name, &rec)?;
    let loaded = load_dump(store, b, &rec, url, as_name);
    if loaded.is_err() {
        // Never leave a half-loaded database under the operator's name.
        let _ = drop_db(url, as_name);
    }
    loaded
}

fn drop_db(url: &Opts, name: &str) -> Result<()> {
    let sql = format!("DROP DATABASE IF EXISTS {}", ident(name));
    admin(url, name, move |c| {
        Box::pin(async move { c.query_drop(sql).await.map_err(|e| e.to_string()) })
    })
}

/// Extracts the tar of the home captured from `home` (its old path) into `into`, which must
/// not exist or be empty. Owners and modes are kept (when run as root).
pub fn restore_home(
    store: &dyn BundleStore,
    b: &BundleRef,
    public: &VerifyingKey,
    home: &Path,
    into: &Path,
) -> Result<PathBuf> {
    let (m, _, _) = manifest(store, b)?;
    let invalid = |message: String| BundleError::Invalid {
        bundle: b.id(),
        message,
    };
    let rec = m
        .homes
        .iter()
        .find(|h| h.path == home)
        .ok_or_else(|| invalid(format!("no home {} in it", home.display())))?;
    let tar = rec.tar_part.clone().ok_or_else(|| {
        invalid(format!(
            "home {} was captured without a tar (only its manifest): capture with --tar",
            home.display()
        ))
    })?;
    require_intact(store, b, public, &[&tar])?;
    if std::fs::read_dir(into)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false)
    {
        return Err(BundleError::Io {
            path: into.to_path_buf(),
            source: std::io::Error::other("not empty: a restore never overwrites"),
        });
    }
    std::fs::create_dir_all(into).map_err(BundleError::io(into))?;
    let mut cmd = Command::new("tar");
    cmd.arg("-x")
        .arg("-C")
        .arg(into)
        .args(["--numeric-owner", "-p", "-f", "-"]);
    feed(
        store,
        b,
        &tar,
        cmd,
        &format!("restore of {}", home.display()),
    )?;
    Ok(into.to_path_buf())
}
