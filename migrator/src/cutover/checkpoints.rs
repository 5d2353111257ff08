//! A site's cutover checkpoints in the journal: scope [`SCOPE`], one row per [`Checkpoint`]
//! under the key `<site>.<name>` (`shop.freeze_ms`, `shop.lease`, ...).
//!
//! This file is the one place that renders a key ([`Checkpoint::key`]) and reads one back
//! ([`Checkpoint::parse_key`]); the engine, the lease, the throttle, the route check, the CLI
//! and the dashboard name a checkpoint by its variant. The key format and each value's text
//! are what journals have always held, so existing journals read unchanged (the dashboard's
//! SQL triggers in `serve/summary.rs` also match `<site>.freeze_ms`; a test below pins the
//! names).

use crate::journal::{now_ms, JournalError, JournalStore};

/// The journal checkpoint scope of the cutover engine.
pub const SCOPE: &str = "cutover";

/// What a released or finished checkpoint holds (the row stays; its value is JSON `null`).
const CLEARED: &str = "null";

/// One of a site's cutover checkpoints, with the text its value holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Checkpoint {
    /// The site's HTTP fingerprint taken at prepare (a JSON string); the post-check compares
    /// the new side's answer against it.
    Fingerprint,
    /// When the last freeze (or rollback freeze) began: Unix ms.
    FreezeStartedMs,
    /// The last freeze's write-unavailability: ms, one decimal.
    FreezeMs,
    /// The freeze lease: a JSON [`crate::cutover::lease::Lease`], `null` once released.
    Lease,
    /// A rollback in progress since (Unix ms); `null` once finished or given up.
    Rollback,
    /// The rollback's copy back verified and its switch began (Unix ms); `null` with
    /// [`Checkpoint::Rollback`].
    RollbackSwitch,
    /// Bytes the last sync pass moved (the throttle's copy lag).
    LastDelta,
    /// How long the last sync pass took, ms (the throttle's copy lag).
    LastPassMs,
    /// The verification after the switch of databases followed by change capture: a JSON
    /// [`PostVerify`].
    PostVerify,
}

/// Where the verification after the switch stands ([`Checkpoint::PostVerify`], stored as a
/// JSON string: `"pending"`, `"unverified"`, `"failed"`, `"done"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PostVerify {
    /// The new side's state was pinned in the freeze; the verification is still to run.
    Pending,
    /// The pin was lost (the migrator restarted): journaled as not verified.
    Unverified,
    /// The sides differed: the site was rolled back.
    Failed,
    Done,
}

impl PostVerify {
    /// The stored text (JSON).
    pub fn json(self) -> String {
        serde_json::to_string(&self).expect("a unit variant serializes")
    }
}

impl Checkpoint {
    pub const ALL: [Checkpoint; 9] = [
        Checkpoint::Fingerprint,
        Checkpoint::FreezeStartedMs,
        Checkpoint::FreezeMs,
        Checkpoint::Lease,
        Checkpoint::Rollback,
        Checkpoint::RollbackSwitch,
        Checkpoint::LastDelta,
        Checkpoint::LastPassMs,
        Checkpoint::PostVerify,
    ];

    /// The name after the site in the key (stable across versions).
    pub fn name(self) -> &'static str {
        match self {
            Checkpoint::Fingerprint => "fingerprint",
            Checkpoint::FreezeStartedMs => "freeze_started_ms",
            Checkpoint::FreezeMs => "freeze_ms",
            Checkpoint::Lease => "lease",
            Checkpoint::Rollback => "rollback",
            Checkpoint::RollbackSwitch => "rollback_switch",
            Checkpoint::LastDelta => "last_delta",
            Checkpoint::LastPassMs => "last_pass_ms",
            Checkpoint::PostVerify => "post_verify",
        }
    }

    /// The journal key of this checkpoint of `site`.
    pub fn key(self, site: &str) -> String {
        format!("{}{}", site_prefix(site), self.name())
    }

    /// The site and checkpoint a key names; `None` for a key of no known checkpoint.
    pub fn parse_key(key: &str) -> Option<(&str, Checkpoint)> {
        Checkpoint::ALL.into_iter().find_map(|c| {
            key.strip_suffix(c.name())
                .and_then(|rest| rest.strip_suffix('.'))
                .filter(|site| !site.is_empty())
                .map(|site| (site, c))
        })
    }
}

/// What every key of `site` starts with (the dashboard lists a site's checkpoints by it).
pub fn site_prefix(site: &str) -> String {
    format!("{site}.")
}

/// The stored text of `site`'s checkpoint `cp`.
pub fn get(
    journal: &dyn JournalStore,
    site: &str,
    cp: Checkpoint,
) -> Result<Option<String>, JournalError> {
    journal.checkpoint_raw(SCOPE, &cp.key(site))
}

/// A numeric checkpoint (`None`: never written, cleared, or not a number).
pub fn get_num<T: std::str::FromStr>(
    journal: &dyn JournalStore,
    site: &str,
    cp: Checkpoint,
) -> Result<Option<T>, JournalError> {
    Ok(get(journal, site, cp)?.and_then(|s| s.parse().ok()))
}

/// Whether a marker checkpoint ([`Checkpoint::Rollback`], [`Checkpoint::RollbackSwitch`]) is
/// set: written and not cleared.
pub fn is_set(
    journal: &dyn JournalStore,
    site: &str,
    cp: Checkpoint,
) -> Result<bool, JournalError> {
    Ok(get(journal, site, cp)?.is_some_and(|v| v != CLEARED))
}

/// Stores `value` as `site`'s checkpoint `cp`.
pub fn put(
    journal: &mut dyn JournalStore,
    site: &str,
    cp: Checkpoint,
    value: &str,
) -> Result<(), JournalError> {
    journal.put_checkpoint_raw(SCOPE, &cp.key(site), value)
}

/// Stores the current time (Unix ms) as `site`'s checkpoint `cp`.
pub fn stamp(
    journal: &mut dyn JournalStore,
    site: &str,
    cp: Checkpoint,
) -> Result<(), JournalError> {
    put(journal, site, cp, &now_ms().to_string())
}

/// Clears `site`'s checkpoint `cp` (the row stays, holding `null`).
pub fn clear(
    journal: &mut dyn JournalStore,
    site: &str,
    cp: Checkpoint,
) -> Result<(), JournalError> {
    put(journal, site, cp, CLEARED)
}

/// Compare-and-set of `site`'s checkpoint `cp`: stores `value` only if the stored text is
/// still `expected` (`None`: no row); `value` `None` clears it. Returns whether it was stored.
pub fn swap(
    journal: &mut dyn JournalStore,
    site: &str,
    cp: Checkpoint,
    expected: Option<&str>,
    value: Option<&str>,
) -> Result<bool, JournalError> {
    journal.swap_checkpoint_raw(SCOPE, &cp.key(site), expected, value.unwrap_or(CLEARED))
}

/// Every stored checkpoint `cp` of every site: (site, value). Keys of other checkpoints are
/// skipped.
pub fn all_of(
    journal: &dyn JournalStore,
    cp: Checkpoint,
) -> Result<Vec<(String, String)>, JournalError> {
    Ok(journal
        .checkpoints(SCOPE)?
        .into_iter()
        .filter_map(|(k, v)| match Checkpoint::parse_key(&k) {
            Some((site, c)) if c == cp => Some((site.to_string(), v)),
            _ => None,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::SqliteJournal;

    /// The keys existing journals hold: changing one would orphan every journal's rows (and
    /// the dashboard's triggers, which match `.freeze_ms`).
    #[test]
    fn keys_keep_the_on_disk_format() {
        let keys: Vec<String> = Checkpoint::ALL.iter().map(|c| c.key("shop")).collect();
        assert_eq!(
            keys,
            [
                "shop.fingerprint",
                "shop.freeze_started_ms",
                "shop.freeze_ms",
                "shop.lease",
                "shop.rollback",
                "shop.rollback_switch",
                "shop.last_delta",
                "shop.last_pass_ms",
                "shop.post_verify",
            ]
        );
        let values: Vec<String> = [
            PostVerify::Pending,
            PostVerify::Unverified,
            PostVerify::Failed,
            PostVerify::Done,
        ]
        .iter()
        .map(|v| v.json())
        .collect();
        assert_eq!(
            values,
            ["\"pending\"", "\"unverified\"", "\"failed\"", "\"done\""]
        );
        assert_eq!(
            ".freeze_ms".len(),
            10,
            "serve/summary.rs cuts 10 characters"
        );
    }

    #[test]
    fn keys_parse_back_to_site_and_checkpoint() {
        for c in Checkpoint::ALL {
            for site in ["shop", "a.b", "x.rollback", "freeze_ms"] {
                assert_eq!(Checkpoint::parse_key(&c.key(site)), Some((site, c)));
            }
        }
        assert_eq!(Checkpoint::parse_key("shop.unknown"), None);
        assert_eq!(Checkpoint::parse_key(".lease"), None);
        assert_eq!(Checkpoint::parse_key("lease"), None);
        assert_eq!(Checkpoint::parse_key("shoplease"), None);
    }

    #[test]
    fn a_journal_written_with_raw_keys_reads_through_the_typed_ones() {
        let dir = tempfile::tempdir().unwrap();
        let mut j = SqliteJournal::open(&dir.path().join("j")).unwrap();
        // As an older migrator wrote them.
        j.put_checkpoint_raw("cutover", "shop.freeze_ms", "812.5")
            .unwrap();
        j.put_checkpoint_raw("cutover", "shop.rollback", "1700000000000")
            .unwrap();
        j.put_checkpoint_raw("cutover", "shop.rollback_switch", "null")
            .unwrap();
        j.put_checkpoint_raw("cutover", "other.rollback", "1")
            .unwrap();
        assert_eq!(
            get_num::<f64>(&j, "shop", Checkpoint::FreezeMs).unwrap(),
            Some(812.5)
        );
        assert!(is_set(&j, "shop", Checkpoint::Rollback).unwrap());
        assert!(!is_set(&j, "shop", Checkpoint::RollbackSwitch).unwrap());
        assert!(!is_set(&j, "shop", Checkpoint::Lease).unwrap());
        let mut marked = all_of(&j, Checkpoint::Rollback).unwrap();
        marked.sort();
        assert_eq!(
            marked,
            [
                ("other".to_string(), "1".to_string()),
                ("shop".to_string(), "1700000000000".to_string())
            ]
        );
        clear(&mut j, "shop", Checkpoint::Rollback).unwrap();
        assert_eq!(
            j.checkpoint_raw("cutover", "shop.rollback")
                .unwrap()
                .as_deref(),
            Some("null")
        );
    }
}
