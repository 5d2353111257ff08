//! Which route store a proxy commits to: its own SQLite file (the embedded default, one
//! instance per store) or the shared MariaDB store of a fleet of instances.

use std::sync::Arc;

use super::{Committed, RouteStore, SharedStore, StoreError, StoredRoute};
use crate::mode::Mode;

#[derive(Clone)]
pub enum Store {
    /// One SQLite file, one writer (the lock file).
    Local(Arc<RouteStore>),
    /// A fleet's table in MariaDB; this handle is the one the admin API and logins commit
    /// through (the follower has its own connection).
    Shared(Arc<SharedStore>),
}

impl From<Arc<RouteStore>> for Store {
    fn from(s: Arc<RouteStore>) -> Store {
        Store::Local(s)
    }
}

impl Store {
    /// The file's path, or `mysql://host:port/db fleet NAME`.
    pub fn describe(&self) -> String {
        match self {
            Store::Local(s) => s.path().display().to_string(),
            Store::Shared(s) => s.describe(),
        }
    }

    pub fn is_shared(&self) -> bool {
        matches!(self, Store::Shared(_))
    }

    /// Every stored route.
    pub async fn load(&self) -> Result<Vec<StoredRoute>, StoreError> {
        match self {
            Store::Local(s) => {
                let s = s.clone();
                blocking(&self.describe(), move || s.load()).await
            }
            Store::Shared(s) => s.load().await,
        }
    }

    /// Commits one route; the shared store only if the stored route still has epoch
    /// `expected` (a single SQLite writer needs no such check).
    pub async fn commit(
        &self,
        database: &str,
        expected: u64,
        side: &str,
        mode: Mode,
        resume_mode: Mode,
    ) -> Result<Committed, StoreError> {
        match self {
            Store::Local(s) => {
                let (s, db, side) = (s.clone(), database.to_string(), side.to_string());
                blocking(&self.describe(), move || {
                    s.commit(&db, &side, mode, resume_mode)
                })
                .await
                .map(Committed::Done)
            }
            Store::Shared(s) => s.commit(database, expected, side, mode, resume_mode).await,
        }
    }

    /// Adds the routes of databases the store has never seen; returns the ones added.
    pub async fn seed_missing(
        &self,
        seed: &[(String, String, Mode)],
    ) -> Result<Vec<StoredRoute>, StoreError> {
        match self {
            Store::Local(s) => {
                let (s, seed) = (s.clone(), seed.to_vec());
                blocking(&self.describe(), move || s.seed_missing(&seed)).await
            }
            Store::Shared(s) => {
                let known: std::collections::HashSet<String> =
                    s.load().await?.into_iter().map(|r| r.database).collect();
                let mut added = Vec::new();
                for (db, side, mode) in seed.iter().filter(|(db, ..)| !known.contains(db)) {
                    let resume = if *mode == Mode::Paused {
                        Mode::Open
                    } else {
                        *mode
                    };
                    // Another instance seeding the same database at the same time wins; its
                    // route reaches this one through the follower.
                    if let Committed::Done(epoch) = s.commit(db, 0, side, *mode, resume).await? {
                        added.push(StoredRoute {
                            database: db.clone(),
                            side: side.clone(),
                            mode: *mode,
                            resume_mode: resume,
                            epoch,
                        });
                    }
                }
                Ok(added)
            }
        }
    }
}

/// A SQLite call off the async threads (it waits for an fsync).
async fn blocking<T: Send + 'static>(
    store: &str,
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(StoreError::Io {
            path: store.into(),
            what: "route store task",
            source: std::io::Error::other(e.to_string()),
        })
    })
}
