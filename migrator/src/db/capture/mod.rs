//! Change capture from the source's row-based binary log: after the bulk copy, the changes
//! the site keeps making are read from the source's binary log and applied to the
//! destination, so a sync pass and the freeze cost what changed, not the database's size.
//!
//! - [`position`]: binary log positions; whether a source can be captured (binary log on,
//!   `binlog_format=ROW`, `binlog_row_image=FULL`); its current position; a snapshot's.
//! - [`values`]: a captured table's columns, and row images rendered as SQL.
//! - `apply.rs`: the destination side (`REPLACE` by full row, `DELETE` by primary key, in
//!   order, in transactions ending at source transaction boundaries).
//! - [`stream`]: the loop reading the log as a replica and journaling its position.
//!
//! What is journaled (scope `capture:<db>`, key `state`, [`CaptureState`]): the position
//! applied (a transaction boundary), per table the position its copy already contains, the
//! tables not captured (no primary key: copied again in the freeze) and the tables to copy
//! again (DDL seen, images that no longer fit). Applying is idempotent by primary key, so a
//! capture killed between a destination commit and its journal write replays a few
//! transactions and converges to the same rows.

mod apply;
pub mod position;
pub mod stream;
pub mod values;

use crate::db::progress::Journal;
use crate::db::schema::Result;
pub use position::BinlogPos;
use std::collections::BTreeMap;

/// The name `recopy` uses for "the table list changed" (a table created, dropped or renamed):
/// not a table name MariaDB allows (it has a slash).
pub const TABLE_LIST: &str = "/table-list";

/// One database's capture, as journaled.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CaptureState {
    /// Applied on the destination up to here.
    pub applied: BinlogPos,
    /// Per captured table: the position its copy contains (events after it are applied).
    pub tables: BTreeMap<String, BinlogPos>,
    /// Tables whose changes are not applied from the log, with why (no primary key, say):
    /// they are copied again inside the freeze (the old method).
    #[serde(default)]
    pub uncaptured: BTreeMap<String, String>,
    /// Tables to copy again before the capture can be trusted with them, with why.
    #[serde(default)]
    pub recopy: BTreeMap<String, String>,
}

fn scope(db: &str) -> String {
    format!("capture:{db}")
}

pub fn load_state(journal: &Journal, db: &str) -> Result<Option<CaptureState>> {
    let raw = journal
        .lock()
        .expect("journal lock")
        .checkpoint_raw(&scope(db), "state")?;
    match raw {
        None => Ok(None),
        Some(s) => {
            serde_json::from_str(&s)
                .map(Some)
                .map_err(|e| crate::db::schema::DbError::Capture {
                    db: db.to_string(),
                    reason: format!("the journaled capture state does not read back: {e}"),
                })
        }
    }
}

pub fn save_state(journal: &Journal, db: &str, state: &CaptureState) -> Result<()> {
    let json = serde_json::to_string(state).expect("capture state serializes");
    journal
        .lock()
        .expect("journal lock")
        .put_checkpoint_raw(&scope(db), "state", &json)?;
    Ok(())
}

/// Forgets a database's capture (a full copy starts it afresh).
pub fn clear_state(journal: &Journal, db: &str) -> Result<()> {
    journal
        .lock()
        .expect("journal lock")
        .clear_checkpoints(&scope(db))?;
    Ok(())
}
