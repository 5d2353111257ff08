//! `sync-users`: read every account's `mysql_native_password` hash, host parts, TLS requirement
//! and database grants from the old server (`mysql.user`, `mysql.global_priv`, `mysql.db`) into
//! a [`UserStore`]. Locked accounts, accounts without a password and accounts the proxy cannot
//! confine to their host part (local only, host names) are left out, so no account is more
//! reachable through the proxy than on the server. The admin login for this uses the admin's
//! password once, in memory; the store keeps hashes only.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::auth::{parse_hash, stage1_of, SkipReason, SkippedAccount, UserEntry, UserStore};
use crate::backend::{BackendConn, BackendError, Login};
use crate::protocol::{cap, NATIVE_PASSWORD};

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("sync-users: {0}")]
    Backend(#[from] BackendError),
    #[error("sync-users: user {user:?} has different password hashes (or TLS requirements) on different hosts; the proxy keeps one per user name")]
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
        tls: crate::backend::BackendTls::Off,
    };
    let mut be = BackendConn::connect("old", addr, &login, Duration::from_secs(10)).await?;
    // Every account with its host part, TLS requirement and lock (`account_locked` lives only
    // in `mysql.global_priv`); roles are not accounts.
    let rows = be
        .query(
            "SELECT u.User, u.Host, u.plugin, \
             IF(u.authentication_string = '', u.Password, u.authentication_string), u.ssl_type, \
             IF(JSON_VALUE(g.Priv, '$.account_locked') IN ('1', 'true'), 'Y', 'N') \
             FROM mysql.user u LEFT JOIN mysql.global_priv g ON g.User = u.User AND g.Host = u.Host \
             WHERE u.User <> '' AND u.is_role <> 'Y' ORDER BY u.User, u.Host",
        )
        .await?;
    let mut users: BTreeMap<String, UserEntry> = BTreeMap::new();
    let mut skipped = Vec::new();
    for row in rows {
        let get = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
        let (user, host, mut plugin, hash) = (get(0), get(1), get(2), get(3));
        let (ssl_type, locked) = (get(4), get(5));
        if plugin.is_empty() {
            plugin = NATIVE_PASSWORD.into();
        }
        // Never more reachable through the proxy than on the server: a locked account, one
        // without a password, or one whose host part cannot be judged from a client's
        // address (local only, host names) is left out, and said so.
        let reason = if locked == "Y" {
            Some(SkipReason::Locked)
        } else if let Err(u) = crate::hosts::usable_through_proxy(&host) {
            Some(u.into())
        } else if plugin == NATIVE_PASSWORD && hash.is_empty() {
            Some(SkipReason::NoPassword)
        } else if plugin == NATIVE_PASSWORD && parse_hash(&user, &hash).is_err() {
            Some(SkipReason::NotNativeHash)
        } else {
            None
        };
        if let Some(reason) = reason {
            tracing::warn!(user = %user, host = %host, reason = reason.name(), "skipping account: {}", reason.why());
            skipped.push(SkippedAccount { user, host, reason });
            continue;
        }
        let entry = UserEntry {
            plugin: plugin.clone(),
            hash: if plugin == NATIVE_PASSWORD {
                hash
            } else {
                String::new()
            },
            databases: Vec::new(),
            hosts: vec![host.clone()],
            require_tls: !ssl_type.is_empty(),
        };
        match users.get_mut(&user) {
            // The same credentials from several host parts: one entry admitting each.
            Some(prev)
                if (&prev.plugin, &prev.hash, prev.require_tls)
                    == (&entry.plugin, &entry.hash, entry.require_tls) =>
            {
                prev.hosts.push(host);
            }
            Some(prev) if prev.plugin == entry.plugin => {
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
    Ok(UserStore { users, skipped })
}
