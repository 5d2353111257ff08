//! `wave_bundles`: after the wave captured each site's consistency-point bundle
//! (`wave run --bundle-store`) and the traffic went on writing on the new side, the bundles are
//! checked against the lab with the operator's commands (`migrator bundle …`, client
//! namespace):
//! - every site's bundle verifies (`bundle verify --json`: signature, parts, dumps restored into
//!   scratch databases on the old side's MariaDB and compared with the switch's checksums);
//! - two sites with a write on the new side after their switch: the database restored under a
//!   new name on the old side's MariaDB equals the old side (nothing writes there after the
//!   switch), and that later write is absent from it;
//! - one byte of one bundle's dump flipped: `verify` fails naming that part;
//! - `bundle expire --now-ms` at the earliest expiry deletes that bundle and no other.
//!
//! Every finding is a violation of the report; never panics.

use super::{MigrationReport, Migrator};
use crate::dc_services::mariadb_exec;
use crate::state::{LabState, Side};
use serde_json::Value;
use std::path::PathBuf;

/// Sites whose restore is compared with the old side.
const RESTORED: usize = 2;

/// One `migrator bundle …` run: exit code, stdout, stderr.
fn bundle(m: &Migrator, args: &[&str]) -> Result<(i32, String, String), String> {
    let store = m.bundle_store();
    let mut all = vec![
        "bundle",
        args[0],
        "--store",
        store.to_str().unwrap_or_default(),
    ];
    all.extend(&args[1..]);
    let o = m
        .cmd(&all)
        .output()
        .map_err(|e| format!("migrator bundle {}: could not start: {e}", args[0]))?;
    Ok((
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    ))
}

/// `migrator bundle … --json` that must succeed, its output parsed.
fn bundle_json(m: &Migrator, args: &[&str]) -> Result<Value, String> {
    let (code, out, err) = bundle(m, args)?;
    if code != 0 {
        return Err(format!(
            "migrator bundle {}: exit {code}: {out}{err}",
            args.join(" ")
        ));
    }
    serde_json::from_str(&out).map_err(|e| format!("migrator bundle {}: {e}: {out}", args[0]))
}

/// Checks the wave's bundles; findings go to `r.violations`, what was proven to `r.events`.
pub(super) fn check(st: &LabState, m: &Migrator, r: &mut MigrationReport) {
    if let Err(e) = check_all(st, m, r) {
        r.violations.push(format!("bundles: {e}"));
    }
}

fn check_all(st: &LabState, m: &Migrator, r: &mut MigrationReport) -> Result<(), String> {
    let public = PathBuf::from(format!("{}.pub", m.bundle_key().display()));
    let (public, url) = (public.to_string_lossy(), m.dir.join("secrets/old-db.url"));
    let url = url.to_string_lossy();
    let journal = m.journal.to_string_lossy();
    let list = bundle_json(m, &["list", "--json"])?;
    let list = list.as_array().cloned().unwrap_or_default();
    // One complete bundle per site of the wave (the whole lab).
    let mut ids = Vec::new();
    for s in &st.sites {
        let mine: Vec<&Value> = list
            .iter()
            .filter(|b| b["bundle"].as_str().unwrap_or("").split('/').next() == Some(&s.login))
            .collect();
        match mine.as_slice() {
            [b] if b["complete"] == true => {
                ids.push(b["bundle"].as_str().unwrap_or("").to_string())
            }
            _ => r.violations.push(format!(
                "{}: expected one complete bundle, the store has {mine:?}",
                s.login
            )),
        }
    }
    // Every bundle verifies (restored into scratch databases, compared with the switch).
    for id in &ids {
        let v = bundle_json(
            m,
            &[
                "verify",
                id,
                "--public-key",
                &public,
                "--scratch-url-file",
                &url,
                "--journal",
                &journal,
                "--json",
            ],
        );
        match v {
            Ok(v) if v["ok"] == true && !v["databases"].as_array().is_none_or(|d| d.is_empty()) => {
            }
            Ok(v) => r.violations.push(format!("{id}: verify: {v}")),
            Err(e) => r.violations.push(e),
        }
    }
    r.events.push(format!("{} bundles verified", ids.len()));
    let restored = restores(st, m, &ids, &public, &url, r)?;
    if restored < RESTORED {
        r.violations.push(format!(
            "only {restored} sites had a write on the new side after their switch to prove a \
             restore with (want {RESTORED})"
        ));
    }
    tamper(m, ids.last().map(String::as_str), &public, r)?;
    expire(m, r)
}

/// The bundle's manifest (`bundle show --json`).
fn manifest(m: &Migrator, id: &str) -> Result<Value, String> {
    bundle_json(m, &["show", id, "--json"])
}

/// Every table of `db` on `side`, its rows in primary-key order, as the client prints them.
fn contents(st: &LabState, side: Side, db: &str) -> Result<String, String> {
    let tables = mariadb_exec(
        st.dc(side),
        &format!("SELECT table_name FROM information_schema.tables WHERE table_schema = '{db}' ORDER BY 1;"),
    )
    .map_err(|e| format!("{db}: listing tables: {e}"))?;
    let mut out = String::new();
    for t in tables.lines().map(str::trim).filter(|t| !t.is_empty()) {
        out.push_str(&format!("-- {t}\n"));
        out.push_str(
            &mariadb_exec(
                st.dc(side),
                &format!("SELECT * FROM `{db}`.`{t}` ORDER BY 1;"),
            )
            .map_err(|e| format!("{db}.{t}: {e}"))?,
        );
    }
    Ok(out)
}

/// Restores the database of up to [`RESTORED`] sites having a write on the new side after
/// their switch; returns how many were restored and compared.
fn restores(
    st: &LabState,
    m: &Migrator,
    ids: &[String],
    public: &str,
    url: &str,
    r: &mut MigrationReport,
) -> Result<usize, String> {
    let mut done = 0;
    for id in ids {
        if done == RESTORED {
            break;
        }
        let man = manifest(m, id)?;
        let switch_ms = man["switch_ms"]
            .as_i64()
            .ok_or(format!("{id}: no switch_ms"))?;
        let Some(db) = man["databases"][0]["name"].as_str().map(str::to_string) else {
            continue;
        };
        // A write acknowledged on the new side after the switch.
        let later = mariadb_exec(
            st.dc(Side::New),
            &format!(
                "SELECT token FROM `{db}`.events WHERE UNIX_TIMESTAMP(created_at) * 1000 > {switch_ms} \
                 ORDER BY id DESC LIMIT 1;"
            ),
        )
        .map_err(|e| format!("{db} on new-dc: {e}"))?;
        let Some(token) = later
            .lines()
            .next()
            .map(str::trim)
            .filter(|t| !t.is_empty())
        else {
            continue;
        };
        let as_name = format!("{db}_at_switch");
        bundle_json(
            m,
            &[
                "restore",
                id,
                "--public-key",
                public,
                "--db",
                &db,
                "--as",
                &as_name,
                "--url-file",
                url,
                "--json",
            ],
        )?;
        let (old, back) = (
            contents(st, Side::Old, &db)?,
            contents(st, Side::Old, &as_name)?,
        );
        if old != back || !old.contains(" events\n") {
            r.violations.push(format!(
                "{id}: {as_name} restored on old-dc differs from {db} on old-dc (the switch)"
            ));
        }
        let found = mariadb_exec(
            st.dc(Side::Old),
            &format!("SELECT COUNT(*) FROM `{as_name}`.events WHERE token = '{token}';"),
        )
        .map_err(|e| format!("{as_name}: {e}"))?;
        if found.trim() != "0" {
            r.violations.push(format!(
                "{id}: {as_name} holds {token}, written on new-dc after the switch"
            ));
        }
        let new_has = mariadb_exec(
            st.dc(Side::New),
            &format!("SELECT COUNT(*) FROM `{db}`.events WHERE token = '{token}';"),
        )
        .map_err(|e| format!("{db} on new-dc: {e}"))?;
        if new_has.trim() != "1" {
            r.violations.push(format!("{db}: {token} not on new-dc"));
        }
        let _ = mariadb_exec(st.dc(Side::Old), &format!("DROP DATABASE `{as_name}`;"));
        r.events.push(format!(
            "{id}: {db} restored as {as_name} equals old-dc at the switch, without {token} \
             (on new-dc after the switch)"
        ));
        done += 1;
    }
    Ok(done)
}

/// Flips one byte in the middle of `id`'s dump: `verify` must fail naming that part.
fn tamper(
    m: &Migrator,
    id: Option<&str>,
    public: &str,
    r: &mut MigrationReport,
) -> Result<(), String> {
    let id = id.ok_or("no bundle to tamper with")?;
    let man = manifest(m, id)?;
    let part = man["databases"][0]["part"]
        .as_str()
        .ok_or(format!("{id}: no database part"))?;
    let path = m.bundle_store().join(id).join(part);
    let mut bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&path, bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    let (code, out, err) = bundle(
        m,
        &[
            "verify",
            id,
            "--public-key",
            public,
            "--no-restore",
            "--json",
        ],
    )?;
    let v: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
    let named = v["bad_parts"]
        .as_array()
        .is_some_and(|b| b.len() == 1 && b[0]["name"] == part);
    if code != 1 || v["ok"] != false || !named {
        r.violations.push(format!(
            "{id}: a flipped byte in {part}: verify exit {code}, expected 1 naming it: {out}{err}"
        ));
    } else {
        r.events
            .push(format!("{id}: tampered {part} named by verify (exit 1)"));
    }
    Ok(())
}

/// `bundle expire --now-ms` at the earliest expiry: exactly that bundle goes.
fn expire(m: &Migrator, r: &mut MigrationReport) -> Result<(), String> {
    let before = bundle_json(m, &["list", "--json"])?;
    let mut exp: Vec<(i64, String)> = before
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|b| Some((b["expires_ms"].as_i64()?, b["bundle"].as_str()?.to_string())))
        .collect();
    exp.sort();
    let [(first, id), (second, _), ..] = exp.as_slice() else {
        return Err(format!("fewer than 2 bundles to expire: {before}"));
    };
    if first == second {
        return Err(format!("two bundles expire at the same ms: {exp:?}"));
    }
    let now = first.to_string();
    let gone = bundle_json(m, &["expire", "--now-ms", &now, "--json"])?;
    let gone: Vec<&str> = gone
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|g| g["bundle"].as_str())
        .collect();
    let after = bundle_json(m, &["list", "--json"])?;
    let left: Vec<&str> = after
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|b| b["bundle"].as_str())
        .collect();
    let kept = exp.iter().skip(1).all(|(_, b)| left.contains(&b.as_str()));
    if gone != [id.as_str()] || left.contains(&id.as_str()) || !kept || left.len() != exp.len() - 1
    {
        r.violations.push(format!(
            "expire --now-ms {now} (earliest expiry, {id}): deleted {gone:?}, left {left:?}"
        ));
    } else {
        r.events.push(format!(
            "expire --now-ms {now}: deleted {id} only, {} kept",
            left.len()
        ));
    }
    Ok(())
}
