//! What the journal holds about bundles:
//! - scope [`SWITCH_SCOPE`], key = database: the old side's table checksums at the switch,
//!   written by the cutover's verification ([`crate::db::mover`]: inside the freeze for a
//!   database copied the old way, at `post-verify` for a followed one, when the old side is
//!   written no more in both cases). A bundle records them; `bundle verify` compares a
//!   restored dump with them.
//! - scope [`SCOPE`], key = site: the site's [`BundleState`] (captured, verified, failed),
//!   which `finalize`, `status`, the dashboard and `/metrics` read; key `<site>.override`:
//!   a finalize allowed without a verified bundle, with the operator's reason.

use crate::journal::{now_ms, JournalExt, JournalStore};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const SWITCH_SCOPE: &str = "switch-checksums";
pub const SCOPE: &str = "bundle";

/// One database's table checksums at the switch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchChecksums {
    pub at_ms: i64,
    pub tables: BTreeMap<String, String>,
}

pub fn record_switch_checksums(
    journal: &mut dyn JournalStore,
    db: &str,
    tables: BTreeMap<String, String>,
) -> crate::journal::Result<()> {
    let v = SwitchChecksums {
        at_ms: now_ms(),
        tables,
    };
    let json = serde_json::to_string(&v).expect("checksums serialize");
    journal.put_checkpoint_raw(SWITCH_SCOPE, db, &json)
}

pub fn switch_checksums(
    journal: &dyn JournalStore,
    db: &str,
) -> crate::journal::Result<Option<SwitchChecksums>> {
    journal.checkpoint(SWITCH_SCOPE, db)
}

/// Where a site's bundle stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Capture started, not finished (or killed: rerun it).
    Capturing,
    /// Complete and signed; not verified yet.
    Captured,
    /// Signature, every part and the restored dumps' checksums verified.
    Verified,
    /// The last capture or verification failed (`error` says why).
    Failed,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Capturing => "capturing",
            Stage::Captured => "captured",
            Stage::Verified => "verified",
            Stage::Failed => "failed",
        }
    }
}

/// A site's bundle state in the journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleState {
    pub stage: Stage,
    /// `<site>/<switch_ms>`.
    pub bundle: String,
    pub store: String,
    pub bytes: u64,
    pub at_ms: i64,
    pub error: Option<String>,
}

pub fn set(
    journal: &mut dyn JournalStore,
    site: &str,
    s: &BundleState,
) -> crate::journal::Result<()> {
    journal.put_checkpoint(SCOPE, site, s)
}

pub fn get(journal: &dyn JournalStore, site: &str) -> crate::journal::Result<Option<BundleState>> {
    journal.checkpoint(SCOPE, site)
}

/// Every site's bundle state (overrides left out).
pub fn all(journal: &dyn JournalStore) -> crate::journal::Result<Vec<(String, BundleState)>> {
    let mut out = Vec::new();
    for (k, v) in journal.checkpoints(SCOPE)? {
        if k.ends_with(".override") {
            continue;
        }
        if let Ok(s) = serde_json::from_str::<BundleState>(&v) {
            out.push((k, s));
        }
    }
    Ok(out)
}

/// A finalize allowed without a verified bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Override {
    pub reason: String,
    pub at_ms: i64,
    /// The bundle state at that moment (`None`: no bundle at all).
    pub stage: Option<Stage>,
}

pub fn record_override(
    journal: &mut dyn JournalStore,
    site: &str,
    reason: &str,
    stage: Option<Stage>,
) -> crate::journal::Result<()> {
    let o = Override {
        reason: reason.to_string(),
        at_ms: now_ms(),
        stage,
    };
    journal.put_checkpoint(SCOPE, &format!("{site}.override"), &o)
}

pub fn override_of(
    journal: &dyn JournalStore,
    site: &str,
) -> crate::journal::Result<Option<Override>> {
    journal.checkpoint(SCOPE, &format!("{site}.override"))
}

/// Why `finalize` must not proceed for `site` (`None`: its bundle is verified).
pub fn finalize_blocker(
    journal: &dyn JournalStore,
    site: &str,
) -> crate::journal::Result<Option<String>> {
    Ok(match get(journal, site)? {
        Some(s) if s.stage == Stage::Verified => None,
        Some(s) => Some(format!(
            "its bundle {} is {}{} (run `migrator bundle verify {}`)",
            s.bundle,
            s.stage.as_str(),
            s.error.map(|e| format!(": {e}")).unwrap_or_default(),
            s.bundle
        )),
        None => Some(
            "it has no bundle of its state at the switch (run `migrator bundle capture SITE`, \
             then `migrator bundle verify`)"
                .into(),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::SqliteJournal;

    #[test]
    fn finalize_waits_for_a_verified_bundle() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = SqliteJournal::open(&dir.path().join("j")).unwrap();
        let why = finalize_blocker(&j, "shop").unwrap().unwrap();
        assert!(why.contains("no bundle"), "{why}");
        let mut s = BundleState {
            stage: Stage::Captured,
            bundle: "shop/1".into(),
            store: "/b".into(),
            bytes: 10,
            at_ms: 1,
            error: None,
        };
        set(&mut j, "shop", &s).unwrap();
        let why = finalize_blocker(&j, "shop").unwrap().unwrap();
        assert!(
            why.contains("captured") && why.contains("bundle verify shop/1"),
            "{why}"
        );
        s.stage = Stage::Verified;
        set(&mut j, "shop", &s).unwrap();
        assert_eq!(finalize_blocker(&j, "shop").unwrap(), None);
        record_override(&mut j, "shop", "customer declined", Some(Stage::Verified)).unwrap();
        assert_eq!(all(&j).unwrap().len(), 1, "overrides are not bundles");
        assert_eq!(
            override_of(&j, "shop").unwrap().unwrap().reason,
            "customer declined"
        );
    }
}
