//! `routes export` / `routes import`: the export file and the import's plan, checked against
//! the store's epochs so that an import never moves a database backwards unless forced.

use serde::{Deserialize, Serialize};

use super::{upsert, RouteStore, StoreError, StoredRoute};

/// What `routes export` writes and `routes import` reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Export {
    pub format: String,
    /// The highest epoch in the store when exported.
    pub last_epoch: u64,
    pub routes: Vec<StoredRoute>,
}

/// What an import would do (or did) to one database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImportChange {
    pub database: String,
    /// The stored route before, if any.
    pub before: Option<StoredRoute>,
    pub after: StoredRoute,
    pub action: ImportAction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ImportAction {
    Add,
    Update,
    Unchanged,
    /// The import is older than the store (or differs at the same epoch): refused without force.
    RefusedBackwards,
    /// Older than the store, applied anyway (`--force`) with a fresh epoch.
    Forced,
}

impl RouteStore {
    /// Plans an import: per database, add / update / unchanged, or refused when the imported
    /// route is older than the stored one (or differs from it at the same epoch).
    pub fn plan_import(
        &self,
        routes: &[StoredRoute],
        force: bool,
    ) -> Result<Vec<ImportChange>, StoreError> {
        let stored: std::collections::HashMap<String, StoredRoute> = self
            .load()?
            .into_iter()
            .map(|r| (r.database.clone(), r))
            .collect();
        Ok(routes
            .iter()
            .map(|r| {
                let before = stored.get(&r.database).cloned();
                let action = match &before {
                    None => ImportAction::Add,
                    Some(b) if b == r => ImportAction::Unchanged,
                    Some(b) if r.epoch > b.epoch => ImportAction::Update,
                    Some(_) if force => ImportAction::Forced,
                    Some(_) => ImportAction::RefusedBackwards,
                };
                ImportChange {
                    database: r.database.clone(),
                    before,
                    after: r.clone(),
                    action,
                }
            })
            .collect())
    }

    /// Applies a planned import in one transaction. Added and updated routes keep their
    /// exported epoch (re-importing the same file is then a no-op); forced ones get fresh
    /// epochs above everything stored. Nothing is applied if any change is refused.
    pub fn apply_import(&self, changes: &mut [ImportChange]) -> Result<(), StoreError> {
        if changes
            .iter()
            .any(|c| c.action == ImportAction::RefusedBackwards)
        {
            return Ok(());
        }
        let mut conn = self.conn.lock().expect("route store lock");
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(self.sqlite("beginning the import"))?;
        let mut last: i64 = tx
            .query_row("SELECT last_epoch FROM meta WHERE id = 1", [], |r| r.get(0))
            .map_err(self.sqlite("reading last epoch"))?;
        last = last.max(
            changes
                .iter()
                .filter(|c| matches!(c.action, ImportAction::Add | ImportAction::Update))
                .map(|c| c.after.epoch as i64)
                .max()
                .unwrap_or(0),
        );
        for c in changes.iter_mut() {
            let epoch = match c.action {
                ImportAction::Unchanged | ImportAction::RefusedBackwards => continue,
                ImportAction::Add | ImportAction::Update => c.after.epoch as i64,
                ImportAction::Forced => {
                    last += 1;
                    c.after.epoch = last as u64;
                    last
                }
            };
            let r = &c.after;
            upsert(&tx, &r.database, &r.side, r.mode, r.resume_mode, epoch)
                .map_err(self.sqlite("importing"))?;
        }
        tx.execute("UPDATE meta SET last_epoch = max(last_epoch, ?1)", [last])
            .map_err(self.sqlite("importing"))?;
        tx.commit().map_err(self.sqlite("committing the import"))
    }
}
