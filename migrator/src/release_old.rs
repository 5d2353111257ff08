//! `migrator finalize --drop-old-copies`: once a site is finalized and its consistency-point
//! bundle verified, the old side's copies of it (its databases on the old SQL server, its old
//! homes) are dropped, journaled as the site's `release-old` step.
//!
//! Why only with a verified bundle (an `--override-reason` finalize is not enough): after the
//! drop, the bundle is the only copy of the site's state at the switch. Why only what
//! [`crate::finalize::Finalized`] lists as releasable: a database the proxy still serves from
//! the old side (shared with a site that did not move) is in use there and never dropped.
//! [`plan`] says what is there (each copy: exists or already gone) without changing anything,
//! the dry run; [`release`] drops it. Each copy is dropped at most once: a rerun finds it gone.

use crate::bundle::state;
use crate::cutover::phase::Phase;
use crate::db::schema::{ident, Side};
use crate::finalize::Finalized;
use crate::journal::{JournalError, JournalStore, SiteState, StepOutcome};
use crate::site_spec::SiteSpec;
use mysql_async::prelude::*;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("site {site}: old copies not dropped: {why}")]
    Refused { site: String, why: String },
    #[error("old SQL server ({field} {path}): database {db}: {message}")]
    Database {
        field: &'static str,
        path: PathBuf,
        db: String,
        message: String,
    },
    #[error("old home {path}: {source}")]
    Home {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One old copy of a site.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum OldCopy {
    Database { name: String },
    Home { path: PathBuf },
}

/// An old copy and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CopyState {
    #[serde(flatten)]
    pub copy: OldCopy,
    /// It was there before this call.
    pub existed: bool,
    /// This call dropped it (never in a dry run).
    pub dropped: bool,
}

/// The old copies of `f`'s site: whether each exists (nothing is changed).
pub fn plan(spec: &SiteSpec, f: &Finalized) -> Result<Vec<CopyState>, ReleaseError> {
    let mut out = Vec::new();
    let present = old_databases(spec, &f.old_databases, false)?;
    for name in &f.old_databases {
        out.push(CopyState {
            copy: OldCopy::Database { name: name.clone() },
            existed: present.contains(name),
            dropped: false,
        });
    }
    for path in &f.old_homes {
        out.push(CopyState {
            copy: OldCopy::Home { path: path.clone() },
            existed: path.exists(),
            dropped: false,
        });
    }
    Ok(out)
}

/// Drops `f`'s old copies: only a finalized site whose bundle is verified. Journaled as the
/// site's `release-old` step (its outcome: the bytes of the homes removed).
pub fn release(
    journal: &mut dyn JournalStore,
    spec: &SiteSpec,
    f: &Finalized,
) -> Result<Vec<CopyState>, ReleaseError> {
    let site = &spec.site;
    let refuse = |why: String| ReleaseError::Refused {
        site: site.clone(),
        why,
    };
    let st = journal.site_state(site)?.unwrap_or(SiteState::Planned);
    if st != SiteState::Finalized {
        return Err(refuse(format!(
            "the site is {}, not finalized",
            st.as_str()
        )));
    }
    if let Some(why) = state::finalize_blocker(journal, site)? {
        return Err(refuse(format!(
            "{why}; they are dropped only once the bundle is verified (an --override-reason \
             finalize is not enough: the bundle would be the only copy of the switch)"
        )));
    }
    let mut copies = plan(spec, f)?;
    let id = journal.begin_step(site, Phase::ReleaseOld.name())?;
    match drop_all(spec, &mut copies) {
        Ok(bytes) => {
            journal.finish_step(
                id,
                &StepOutcome {
                    bytes,
                    checksum: None,
                },
            )?;
            Ok(copies)
        }
        Err(e) => {
            journal.fail_step(id, &e.to_string())?;
            Err(e)
        }
    }
}

/// Drops every copy that exists; the bytes of the homes removed.
fn drop_all(spec: &SiteSpec, copies: &mut [CopyState]) -> Result<u64, ReleaseError> {
    let dbs: Vec<String> = copies
        .iter()
        .filter(|c| c.existed)
        .filter_map(|c| match &c.copy {
            OldCopy::Database { name } => Some(name.clone()),
            OldCopy::Home { .. } => None,
        })
        .collect();
    old_databases(spec, &dbs, true)?;
    let mut bytes = 0;
    for c in copies.iter_mut().filter(|c| c.existed) {
        if let OldCopy::Home { path } = &c.copy {
            let io = |source| ReleaseError::Home {
                path: path.clone(),
                source,
            };
            bytes += crate::files::manifest::build(path, &Default::default())
                .map(|m| m.total_bytes())
                .unwrap_or(0);
            std::fs::remove_dir_all(path).map_err(io)?;
        }
        c.dropped = true;
    }
    Ok(bytes)
}

/// Which of `names` the old SQL server holds; with `drop`, drops them.
fn old_databases(
    spec: &SiteSpec,
    names: &[String],
    drop: bool,
) -> Result<Vec<String>, ReleaseError> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let field = "old_db_url_file";
    let path = spec.old_db_url_file.clone();
    let fail = |db: &str, message: String| ReleaseError::Database {
        field,
        path: path.clone(),
        db: db.to_string(),
        message,
    };
    let all = names.join(",");
    let url: mysql_async::Opts = drivers::secret::read_secret_file(field, &path)
        .map_err(|e| fail(&all, e.to_string()))?
        .parse()
        .map_err(|_| fail(&all, "not a mysql:// URL".into()))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(&all, e.to_string()))?;
    rt.block_on(async {
        let mut c = crate::db::session::session(&url, Side::Source, None)
            .await
            .map_err(|e| fail(&all, e.to_string()))?;
        let mut present = Vec::new();
        for db in names {
            let n: Option<u64> = c
                .exec_first(
                    "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
                    (db,),
                )
                .await
                .map_err(|e| fail(db, e.to_string()))?;
            if n.unwrap_or(0) > 0 {
                present.push(db.clone());
            }
        }
        if drop {
            for db in &present {
                c.query_drop(format!("DROP DATABASE {}", ident(db)))
                    .await
                    .map_err(|e| fail(db, e.to_string()))?;
            }
        }
        let _ = c.disconnect().await;
        Ok(present)
    })
}
