//! `mysql_native_password` without passwords: the proxy stores each user's `hash_stage2`
//! (`SHA1(SHA1(password))`, what `mysql.user` shows as `*HEX`), checks a client's scramble
//! response against it, and recovers `stage1 = SHA1(password)`, which is all it needs to log in
//! to any backend holding the same hash. The store file holds hashes only.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};

use crate::protocol::{ErrPacket, NATIVE_PASSWORD};

/// SHA1(SHA1(password)), 20 bytes.
pub type Stage2 = [u8; 20];
/// SHA1(password), 20 bytes: a password equivalent; kept in memory only, never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Stage1(pub [u8; 20]);

impl std::fmt::Debug for Stage1 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Stage1(<redacted>)")
    }
}

fn sha1(parts: &[&[u8]]) -> [u8; 20] {
    let mut h = Sha1::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// The stage-1 hash of a plaintext password (used only by the sync command's own login).
pub fn stage1_of(password: &str) -> Stage1 {
    Stage1(sha1(&[password.as_bytes()]))
}

pub fn stage2_of(stage1: &Stage1) -> Stage2 {
    sha1(&[&stage1.0])
}

/// The 20-byte token a client sends: `stage1 XOR SHA1(scramble + stage2)`.
pub fn scramble_token(stage1: &Stage1, scramble: &[u8]) -> Vec<u8> {
    let mix = sha1(&[scramble, &stage2_of(stage1)]);
    stage1.0.iter().zip(mix).map(|(a, b)| a ^ b).collect()
}

/// Checks a client token against the stored stage2; returns stage1 on success.
pub fn verify_token(token: &[u8], scramble: &[u8], stage2: &Stage2) -> Option<Stage1> {
    if token.len() != 20 {
        return None;
    }
    let mix = sha1(&[scramble, stage2]);
    let mut s1 = [0u8; 20];
    for i in 0..20 {
        s1[i] = token[i] ^ mix[i];
    }
    // Constant-time comparison of SHA1(stage1) with stage2.
    let check = sha1(&[&s1]);
    let diff = check
        .iter()
        .zip(stage2)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    (diff == 0).then_some(Stage1(s1))
}

/// A stage2 for a name that has no account: derived from the name and a secret drawn once per
/// process, so it is stable for a name yet unknown to any client.
fn unknown_user_stage2(user: &str) -> Stage2 {
    static SECRET: std::sync::OnceLock<[u8; 20]> = std::sync::OnceLock::new();
    let secret = SECRET.get_or_init(rand::random);
    sha1(&[secret, user.as_bytes()])
}

/// One account as the proxy knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserEntry {
    /// The authentication plugin named in `mysql.user`.
    pub plugin: String,
    /// `*HEX` of stage2 for `mysql_native_password`; empty for an account without password
    /// (never admitted).
    pub hash: String,
    /// Databases this user has grants on (from `mysql.db`); the first one routes the session
    /// when the client names no database.
    #[serde(default)]
    pub databases: Vec<String>,
    /// The account's host parts ([`crate::hosts`]): a login is admitted only from a source
    /// address one of them matches. Absent in stores written before hosts were synced: any.
    #[serde(default = "any_host")]
    pub hosts: Vec<String>,
    /// `REQUIRE SSL` (or X509, or a cipher/issuer/subject) on the old server: a login without
    /// TLS to the proxy is refused.
    #[serde(default)]
    pub require_tls: bool,
}

fn any_host() -> Vec<String> {
    vec!["%".into()]
}

impl UserEntry {
    /// Whether a client at `host` (its IP address as text), over TLS or not, may log in as
    /// this account at all (before its password is checked).
    pub fn admits(&self, host: &str, tls: bool) -> bool {
        if self.require_tls && !tls {
            return false;
        }
        let ip = host.parse::<std::net::IpAddr>().ok();
        self.hosts
            .iter()
            .any(|h| h == "%" || ip.is_some_and(|ip| crate::hosts::matches(h, ip)))
    }
}

/// What the proxy knows about every account: written by `sql-proxy sync-users`, read at start
/// and on reload.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserStore {
    pub users: BTreeMap<String, UserEntry>,
    /// The accounts `sync-users` left out, and why: refused at login like unknown ones, but
    /// the log and `/metrics` say why (the client is told nothing more).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<SkippedAccount>,
}

/// An account left out of the store (never with its hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedAccount {
    pub user: String,
    pub host: String,
    pub reason: SkipReason,
}

/// Why an account is left out: it would be more reachable through the proxy than on the
/// server, or the proxy cannot check it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    Locked,
    LocalOnly,
    HostName,
    NoPassword,
    NotNativeHash,
}

impl SkipReason {
    /// The reason's name in logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            SkipReason::Locked => "locked",
            SkipReason::LocalOnly => "local_only",
            SkipReason::HostName => "host_name",
            SkipReason::NoPassword => "no_password",
            SkipReason::NotNativeHash => "not_native_hash",
        }
    }

    /// The reason for an operator.
    pub fn why(self) -> &'static str {
        match self {
            SkipReason::Locked => "the account is locked",
            SkipReason::LocalOnly => crate::hosts::Unusable::LocalOnly.why(),
            SkipReason::HostName => crate::hosts::Unusable::HostName.why(),
            SkipReason::NoPassword => {
                "no password: it would be open to any network client of the proxy"
            }
            SkipReason::NotNativeHash => "its hash is not a mysql_native_password hash",
        }
    }
}

impl From<crate::hosts::Unusable> for SkipReason {
    fn from(u: crate::hosts::Unusable) -> Self {
        match u {
            crate::hosts::Unusable::LocalOnly => SkipReason::LocalOnly,
            crate::hosts::Unusable::HostName => SkipReason::HostName,
        }
    }
}

impl UserStore {
    /// Why `user` has no usable entry, when `sync-users` left every one of its accounts out
    /// (the first reason recorded).
    pub fn left_out(&self, user: &str) -> Option<SkipReason> {
        if self.users.contains_key(user) {
            return None;
        }
        self.skipped
            .iter()
            .find(|s| s.user == user)
            .map(|s| s.reason)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("user store {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("user store {path}: {source}")]
    Parse {
        path: String,
        source: serde_json::Error,
    },
    #[error("user store: user {user:?}: hash {why}")]
    BadHash { user: String, why: &'static str },
}

/// The result of checking a login.
#[derive(Debug)]
pub enum AuthOutcome {
    /// Password right; stage1 (or `None` for an account without password).
    Ok(Option<Stage1>),
    /// The error to send to the client (1045 or an unsupported-plugin error).
    Denied(ErrPacket),
}

/// The error a MySQL server sends for a wrong password or an unknown user.
pub fn access_denied(user: &str, host: &str, used_password: bool) -> ErrPacket {
    ErrPacket::new(
        1045,
        "28000",
        format!(
            "Access denied for user '{user}'@'{host}' (using password: {})",
            if used_password { "YES" } else { "NO" }
        ),
    )
}

/// Parses `*HEX` (41 chars) into stage2; the empty string means "no password".
pub fn parse_hash(user: &str, hash: &str) -> Result<Option<Stage2>, StoreError> {
    if hash.is_empty() {
        return Ok(None);
    }
    let hex_part = hash.strip_prefix('*').ok_or(StoreError::BadHash {
        user: user.into(),
        why: "does not start with '*'",
    })?;
    let bytes = hex::decode(hex_part).map_err(|_| StoreError::BadHash {
        user: user.into(),
        why: "is not hexadecimal",
    })?;
    let arr: Stage2 = bytes.try_into().map_err(|_| StoreError::BadHash {
        user: user.into(),
        why: "is not 20 bytes",
    })?;
    Ok(Some(arr))
}

impl UserStore {
    pub fn load(path: &Path) -> Result<Self, StoreError> {
        let text = std::fs::read_to_string(path).map_err(|source| StoreError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let store: Self = serde_json::from_str(&text).map_err(|source| StoreError::Parse {
            path: path.display().to_string(),
            source,
        })?;
        for (user, e) in &store.users {
            if e.plugin == NATIVE_PASSWORD {
                parse_hash(user, &e.hash)?;
            }
        }
        Ok(store)
    }

    /// Writes the store with mode 0600 (it holds password hashes).
    pub fn save(&self, path: &Path) -> Result<(), StoreError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let io = |source| StoreError::Io {
            path: path.display().to_string(),
            source,
        };
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        let text = serde_json::to_string_pretty(self).expect("store serializes");
        f.write_all(text.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// Checks a login without TLS (`COM_CHANGE_USER`): [`UserStore::check_login`].
    pub fn check(&self, user: &str, host: &str, token: &[u8], scramble: &[u8]) -> AuthOutcome {
        self.check_login(user, host, false, token, scramble)
    }

    /// Checks a login from `host` (the client's IP address), over TLS or not: `token`
    /// computed by the client over `scramble`. An account whose host parts do not match, or
    /// that requires TLS on a plain connection, is denied like a wrong password.
    pub fn check_login(
        &self,
        user: &str,
        host: &str,
        tls: bool,
        token: &[u8],
        scramble: &[u8],
    ) -> AuthOutcome {
        let used_password = !token.is_empty();
        let Some(entry) = self.users.get(user).filter(|e| e.admits(host, tls)) else {
            // The same work as a wrong password (the scramble check against a stage2 that
            // no token matches), so an unknown name, or a host or TLS the account does not
            // admit, takes as long to refuse.
            let _ = verify_token(token, scramble, &unknown_user_stage2(user));
            return AuthOutcome::Denied(access_denied(user, host, used_password));
        };
        if entry.plugin != NATIVE_PASSWORD {
            return AuthOutcome::Denied(ErrPacket::new(
                1251,
                "08004",
                format!(
                    "sql-proxy: account '{user}' uses authentication plugin '{}'; \
                     only mysql_native_password is supported through this proxy",
                    entry.plugin
                ),
            ));
        }
        // An account without a password (`Ok(None)`) is never admitted through the proxy,
        // which any network client reaches; `sync-users` does not store one either.
        match parse_hash(user, &entry.hash) {
            Ok(Some(stage2)) => match verify_token(token, scramble, &stage2) {
                Some(s1) => AuthOutcome::Ok(Some(s1)),
                None => AuthOutcome::Denied(access_denied(user, host, used_password)),
            },
            _ => AuthOutcome::Denied(access_denied(user, host, used_password)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_with(user: &str, password: &str) -> UserStore {
        let s2 = stage2_of(&stage1_of(password));
        let mut store = UserStore::default();
        store.users.insert(
            user.into(),
            UserEntry {
                plugin: NATIVE_PASSWORD.into(),
                hash: format!("*{}", hex::encode_upper(s2)),
                databases: vec![],
                hosts: any_host(),
                require_tls: false,
            },
        );
        store
    }

    #[test]
    fn known_mysql_hash_matches() {
        // SELECT PASSWORD('secret') on MariaDB.
        let s2 = stage2_of(&stage1_of("secret"));
        assert_eq!(
            format!("*{}", hex::encode_upper(s2)),
            "*14E65567ABDB5135D0CFD9A70B3032C179A49EE7"
        );
    }

    #[test]
    fn right_password_yields_stage1_and_backend_token() {
        let store = store_with("u", "pw");
        let scramble = [3u8; 20];
        let token = scramble_token(&stage1_of("pw"), &scramble);
        let AuthOutcome::Ok(Some(s1)) = store.check("u", "h", &token, &scramble) else {
            panic!("right password refused");
        };
        assert!(s1 == stage1_of("pw"));
        // A different backend scramble: the derived token equals what the client would send.
        let backend = [9u8; 20];
        assert_eq!(
            scramble_token(&s1, &backend),
            scramble_token(&stage1_of("pw"), &backend)
        );
    }

    #[test]
    fn wrong_password_and_unknown_user_get_1045() {
        let store = store_with("u", "pw");
        let scramble = [3u8; 20];
        let token = scramble_token(&stage1_of("nope"), &scramble);
        for user in ["u", "ghost"] {
            let AuthOutcome::Denied(e) = store.check(user, "127.0.0.1", &token, &scramble) else {
                panic!("wrong login accepted");
            };
            assert_eq!((e.code, e.sqlstate.as_str()), (1045, "28000"));
            assert_eq!(
                e.message,
                format!("Access denied for user '{user}'@'127.0.0.1' (using password: YES)")
            );
        }
        let AuthOutcome::Denied(e) = store.check("u", "h", &[], &scramble) else {
            panic!("empty password accepted");
        };
        assert!(e.message.ends_with("(using password: NO)"));
    }

    #[test]
    fn bad_hashes_are_named() {
        assert!(parse_hash("u", "ABC").is_err());
        assert!(parse_hash("u", "*XYZ").is_err());
        assert!(parse_hash("u", "*ABCD").is_err());
        assert_eq!(parse_hash("u", "").unwrap(), None);
    }
}
