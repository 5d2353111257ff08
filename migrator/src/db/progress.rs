//! What a database copy reports and what it commits to the journal as it goes: one table's
//! report, its checkpoint (scope `copy-db:<db>`), read back by a resumed copy.

use crate::journal::JournalStore;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct TableReport {
    pub table: String,
    pub copied: bool,
    /// Why it was (not) copied: `copied`, `unchanged`, `resumed`, `already done`, `would copy`.
    pub action: String,
    pub rows: u64,
    pub bytes: u64,
    pub source_checksum: String,
    pub destination_checksum: String,
    /// Where the source checksum came from: `stream` (computed over the rows as they were
    /// copied, the table read whole from the snapshot), `server` (a checksum query on the
    /// snapshot: a resumed table, or a stream checksum that did not match), or empty.
    pub source_checksum_from: String,
    /// Seconds spent copying rows (and the source checksum), and finishing afterwards
    /// (secondary indexes built after the load, destination checksum).
    pub copy_seconds: f64,
    pub verify_seconds: f64,
}

/// Committed progress of one table.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Default)]
pub struct TableCheckpoint {
    /// Last primary key copied, when the table has one: hex of the raw bytes when `pk_hex`,
    /// else text (checkpoints written before values travelled as raw bytes).
    pub last_pk: Option<Vec<Option<String>>>,
    pub rows: u64,
    pub done: bool,
    pub checksum: Option<String>,
    #[serde(default)]
    pub pk_hex: bool,
}

impl TableCheckpoint {
    /// The resume point as raw bytes.
    pub(super) fn last_pk_bytes(&self) -> Option<Vec<Option<Vec<u8>>>> {
        let v = self.last_pk.as_ref()?;
        v.iter()
            .map(|x| match x {
                None => Some(None),
                Some(s) if self.pk_hex => hex::decode(s).ok().map(Some),
                Some(s) => Some(Some(s.as_bytes().to_vec())),
            })
            .collect()
    }
}

pub(crate) type Journal = Arc<Mutex<dyn JournalStore + Send>>;

pub(crate) fn scope(db: &str) -> String {
    format!("copy-db:{db}")
}
