//! `sync-users`: read every account's `mysql_native_password` hash and database grants from
//! the old server (`mysql.user`, `mysql.db`) into a [`UserStore`]. The admin login for this
//! uses the admin's password once, in memory; the store keeps hashes only.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::auth::{parse_hash, stage1_of, UserEntry, UserStore};
use crate::backend::{BackendConn, BackendError, Login};
use crate::protocol::{cap, NATIVE_PASSWORD};

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("sync-users: {0}")]
    Backend(#[from] BackendError),
    #[error("sync-users: user {user:?} has different password hashes on different hosts; the proxy matches by user name only")]
    Conflict { user: String },
}

/// Loads users and their databases from a server.
pub async fn load_users(
    addr: SocketAddr,
    admin_user: &str,
    admin_password: &str,
) -> Result<UserStore, SyncError> {
    let login = Login {
        user: admin_user.into(),
        stage1: (!admin_password.is_empty()).then(|| stage1_of(admin_password)),
        database: None,
        capabilities: cap::PROTOCOL_41
            | cap::LONG_PASSWORD
            | cap::TRANSACTIONS
            | cap::MULTI_RESULTS,
        charset: 45,
        max_packet: 1 << 24,
    };
    let mut be = BackendConn::connect("old", addr, &login, Duration::from_secs(10)).await?;
    let rows = be
        .query(
            "SELECT User, plugin, IF(authentication_string = '', Password, authentication_string) \
             FROM mysql.user WHERE User <> '' ORDER BY User, Host",
        )
        .await?;
    let mut users: BTreeMap<String, UserEntry> = BTreeMap::new();
    for row in rows {
        let get = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
        let (user, mut plugin, hash) = (get(0), get(1), get(2));
        if plugin.is_empty() {
            plugin = NATIVE_PASSWORD.into();
        }
        let entry = UserEntry {
            plugin: plugin.clone(),
            hash: if plugin == NATIVE_PASSWORD {
                hash
            } else {
                String::new()
            },
            databases: Vec::new(),
        };
        if entry.plugin == NATIVE_PASSWORD && parse_hash(&user, &entry.hash).is_err() {
            tracing::warn!(user = %user, "skipping account: its hash is not a mysql_native_password hash");
            continue;
        }
        match users.get(&user) {
            Some(prev) if prev.hash != entry.hash && prev.plugin == entry.plugin => {
                return Err(SyncError::Conflict { user });
            }
            Some(_) => {}
            None => {
                users.insert(user, entry);
            }
        }
    }
    let grants = be
        .query("SELECT DISTINCT User, Db FROM mysql.db WHERE User <> '' ORDER BY User, Db")
        .await?;
    for row in grants {
        let (Some(Some(user)), Some(Some(db))) = (row.first(), row.get(1)) else {
            continue;
        };
        if db.contains('%') {
            continue; // wildcard grants name no single database to route by
        }
        let db = db.replace("\\_", "_");
        if let Some(u) = users.get_mut(user) {
            if !u.databases.contains(&db) {
                u.databases.push(db);
            }
        }
    }
    Ok(UserStore { users })
}
