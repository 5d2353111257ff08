//! The daemon's TOML configuration: listeners, backends (sides), initial routes, limits, admin.
//!
//! ```toml
//! listen = ["127.0.0.1:3306", "10.0.0.5:3306"]
//! users_file = "/var/lib/sql-proxy/users.json"
//! route_store = "/var/lib/sql-proxy/routes.sqlite"   # optional; this is the default
//! default_side = "old"
//! [backends]
//! old = "10.0.0.5:3307"
//! new = "10.1.0.7:3306"
//! [backend_sockets]          # optional: the same server's unix socket, when on this host
//! old = "/run/mysqld/mysqld.sock"
//! [databases.shop]
//! side = "old"
//! mode = "open"
//! [limits]                   # optional; every key has a safe default (see `Limits`)
//! max_connections_per_ip = 512
//! [admin]
//! listen = "127.0.0.1:9090"
//! token_file = "/etc/sql-proxy/admin.token"
//! ```
//!
//! Several instances answering the same old endpoint share their routes instead (no
//! `route_store` then; see `fleet.rs`):
//!
//! ```toml
//! [fleet]
//! name = "old-db1"                       # the instances that serve the same endpoint
//! store = "mysql://sqlproxy@10.0.0.9:3306/sqlproxy"   # never a password in the URL
//! password_file = "/etc/sql-proxy/store.pw"          # 0600 (or 0640 root:sql-proxy)
//! lease_ms = 10000                       # optional; fenced after half of it unconfirmed
//! poll_ms = 200                          # optional; renew + follow period
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::mode::Mode;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Every old endpoint the proxy answers on.
    pub listen: Vec<SocketAddr>,
    /// The user store written by `sql-proxy sync-users` (hashes only).
    pub users_file: PathBuf,
    /// The durable route store (see `route_store.rs`); default `routes.sqlite` beside
    /// `users_file`. Created once by `sql-proxy routes init`; the proxy refuses to start
    /// without it.
    #[serde(default)]
    pub route_store: Option<PathBuf>,
    /// Side of a database the route store has never seen (no stored route, not in
    /// `[databases]`). It never moves a stored route.
    pub default_side: String,
    /// Side name → backend address.
    pub backends: BTreeMap<String, SocketAddr>,
    /// Side → unix socket of that same server, used instead of its TCP address when the proxy
    /// runs on the backend's host (cheaper per query than loopback TCP). The server then sees
    /// the proxy's logins as coming from `localhost`.
    #[serde(default)]
    pub backend_sockets: BTreeMap<String, PathBuf>,
    /// Initial routes, seeding only databases the route store has never seen: once stored,
    /// a route changes through the admin API (or `routes import`), never through this table.
    #[serde(default)]
    pub databases: BTreeMap<String, RouteConfig>,
    #[serde(default)]
    pub limits: Limits,
    pub admin: Option<AdminConfig>,
    /// TLS to clients (offered with CLIENT_SSL; plain clients still work).
    pub tls: Option<TlsConfig>,
    /// Version string shown to clients ("5.5.5-" makes MariaDB clients recognise MariaDB).
    #[serde(default = "default_version")]
    pub server_version: String,
    /// Shared routes with the other instances serving the same endpoint (MariaDB store,
    /// leases, acknowledgements, fencing). Absent: the embedded SQLite store.
    #[serde(default)]
    pub fleet: Option<FleetConfig>,
}

/// `[fleet]`: this instance shares its route table with the others of the same name.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    /// The fleet: every instance answering the same old endpoint(s) uses the same name.
    pub name: String,
    /// `mysql://user@host:port/database` of the shared store (a password here is refused);
    /// the nodes of a Galera cluster as `mysql://user@host:port,host:port,host:port/database`
    /// (the store connects to the first that answers and moves on when its node goes away).
    pub store: String,
    /// The store account's password, one line, in a file only the daemon may read.
    pub password_file: PathBuf,
    /// This instance's id in the store (default: host name, PID and a random suffix).
    #[serde(default)]
    pub instance: Option<String>,
    /// Lease length; an instance that could not renew for half of it stops serving.
    #[serde(default = "default_lease_ms")]
    pub lease_ms: u64,
    /// How often the lease is renewed and the table re-read.
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
}

impl FleetConfig {
    /// Connection settings of the store, one per node the URL names (a single server, or
    /// the nodes of one Galera cluster: `mysql://user@host:port,host:port/db`, tried in that
    /// order, [`crate::store_nodes`]), each with the password from `password_file`, which
    /// only its owner (and group, read-only) may read.
    pub fn store_nodes(&self) -> Result<Vec<mysql_async::Opts>, Invalid> {
        let bad = |field, why: String| Invalid::Fleet { field, why };
        let rest = self
            .store
            .strip_prefix("mysql://")
            .or_else(|| self.store.strip_prefix("mariadb://"))
            .ok_or_else(|| bad("store", "must start with mysql:// (or mariadb://)".into()))?;
        let nodes = crate::store_nodes::parse(rest).map_err(|e| match e {
            crate::store_nodes::NodesError::InlinePassword => bad(
                "store",
                "the URL carries a password, which would show in logs and backups; put it in \
                 password_file (chmod 600) and write mysql://user@host:port/db"
                    .into(),
            ),
            crate::store_nodes::NodesError::NoDatabase => bad(
                "store",
                "names no database (mysql://user@host:port/DATABASE)".into(),
            ),
            e @ crate::store_nodes::NodesError::BadUrl(_) => bad("store", e.to_string()),
        })?;
        let pf = &self.password_file;
        let md = std::fs::metadata(pf)
            .map_err(|e| bad("password_file", format!("{}: {e}", pf.display())))?;
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = md.permissions().mode() & 0o777;
            if mode & 0o027 != 0 {
                return Err(bad(
                    "password_file",
                    format!(
                        "{} is open to others or writable by its group (mode {mode:o}): chmod 600 it",
                        pf.display()
                    ),
                ));
            }
        }
        let text = std::fs::read_to_string(pf)
            .map_err(|e| bad("password_file", format!("{}: {e}", pf.display())))?;
        let pass = text.trim_end_matches(['\n', '\r']).to_string();
        // The address named is the one used: never a switch to the server's unix socket
        // (mysql_async does that for a loopback host), which would bypass whatever the
        // operator put on the path (and the fencing tests' partition).
        Ok(nodes
            .into_iter()
            .map(|o| {
                mysql_async::OptsBuilder::from_opts(o)
                    .pass(Some(pass.clone()))
                    .prefer_socket(false)
                    .into()
            })
            .collect())
    }
}

fn default_lease_ms() -> u64 {
    10_000
}

fn default_poll_ms() -> u64 {
    200
}

fn default_version() -> String {
    "5.5.5-10.11.0-MariaDB-sql-proxy".into()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub side: String,
    #[serde(default)]
    pub mode: Mode,
}

/// Every field is optional in the file: a missing one takes its default.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// How long one query may be held while its database is paused.
    pub hold_deadline_ms: u64,
    /// Total bytes of held queries across all sessions; beyond it, queries fail at once.
    pub hold_buffer_bytes: usize,
    /// How long a switch waits for open transactions before aborting them.
    pub switch_txn_deadline_ms: u64,
    /// How long a switch waits, after aborting, for statements still running.
    pub switch_statement_grace_ms: u64,
    /// Backend connect + login timeout.
    pub backend_connect_ms: u64,
    /// Share of `hold_buffer_bytes` one database may hold: one tenant's paused database cannot
    /// fill the buffer that every other paused database needs.
    pub hold_buffer_per_database_bytes: usize,
    /// Largest packet a client may send before it is authenticated (login, SSL request, auth
    /// switch answer); beyond it the connection is closed before the payload is read.
    pub max_login_packet_bytes: usize,
    /// Largest logical packet an authenticated client may send (the proxy buffers one whole
    /// packet before forwarding it). MariaDB's own ceiling is 1 GiB.
    pub max_packet_bytes: usize,
    /// From accept to the login decision (TLS handshake and auth switch included): a client
    /// that has not finished by then is disconnected.
    pub handshake_timeout_ms: u64,
    /// Open client connections (authenticated or not); beyond it new ones get error 1040.
    pub max_connections: usize,
    /// Open client connections from one address (IPv6: one /64); beyond it error 1040.
    pub max_connections_per_ip: usize,
    /// Bytes of `SET` text a session may ask the proxy to replay after a switch; a `SET` that
    /// would exceed it is refused (error 1301) before it runs.
    pub max_set_replay_bytes: usize,
    /// Databases named at logins that the route store does not know yet (in memory until the
    /// login succeeds, freed when it fails); beyond it such logins get error 1040.
    pub max_unstored_routes: usize,
    /// Failed logins are counted per address and per user name over this window.
    pub login_failure_window_ms: u64,
    /// Failed logins from one address (IPv6: one /64) in the window before its connections are
    /// refused (error 1129) until the window ends.
    pub max_login_failures_per_ip: u32,
    /// Failed logins for one user name in the window before its logins are refused without
    /// checking the password, until the window ends (known and unknown names alike).
    pub max_login_failures_per_user: u32,
    /// Every refused login is answered this long after the client's login packet arrived,
    /// whatever the reason (unknown user, wrong password): no timing difference to measure.
    pub login_failure_delay_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            hold_deadline_ms: 30_000,
            hold_buffer_bytes: 64 << 20,
            switch_txn_deadline_ms: 5_000,
            switch_statement_grace_ms: 5_000,
            backend_connect_ms: 5_000,
            hold_buffer_per_database_bytes: 16 << 20,
            max_login_packet_bytes: 64 << 10,
            max_packet_bytes: 1 << 30,
            handshake_timeout_ms: 10_000,
            max_connections: 8_192,
            max_connections_per_ip: 512,
            max_set_replay_bytes: 1 << 20,
            max_unstored_routes: 1_024,
            login_failure_window_ms: 60_000,
            max_login_failures_per_ip: 50,
            max_login_failures_per_user: 20,
            login_failure_delay_ms: 200,
        }
    }
}

impl Limits {
    /// A value that would disable a protection or stop all service is refused, naming it.
    pub fn validate(&self) -> Result<(), Invalid> {
        let bad = |field: &'static str, why: &'static str| Err(Invalid::Limit { field, why });
        let positive: [(&'static str, u64); 11] = [
            ("hold_buffer_bytes", self.hold_buffer_bytes as u64),
            (
                "hold_buffer_per_database_bytes",
                self.hold_buffer_per_database_bytes as u64,
            ),
            ("max_packet_bytes", self.max_packet_bytes as u64),
            ("handshake_timeout_ms", self.handshake_timeout_ms),
            ("max_connections", self.max_connections as u64),
            ("max_connections_per_ip", self.max_connections_per_ip as u64),
            ("max_set_replay_bytes", self.max_set_replay_bytes as u64),
            ("max_unstored_routes", self.max_unstored_routes as u64),
            ("login_failure_window_ms", self.login_failure_window_ms),
            (
                "max_login_failures_per_ip",
                self.max_login_failures_per_ip as u64,
            ),
            (
                "max_login_failures_per_user",
                self.max_login_failures_per_user as u64,
            ),
        ];
        for (field, v) in positive {
            if v == 0 {
                return bad(field, "must be at least 1");
            }
        }
        if self.hold_buffer_per_database_bytes > self.hold_buffer_bytes {
            return bad(
                "hold_buffer_per_database_bytes",
                "must not exceed hold_buffer_bytes",
            );
        }
        // A login packet carries user, token, database, plugin and connect attributes.
        if self.max_login_packet_bytes < 1024 {
            return bad("max_login_packet_bytes", "must be at least 1024");
        }
        if self.max_login_packet_bytes > self.max_packet_bytes {
            return bad("max_login_packet_bytes", "must not exceed max_packet_bytes");
        }
        if self.max_connections_per_ip > self.max_connections {
            return bad("max_connections_per_ip", "must not exceed max_connections");
        }
        if self.login_failure_delay_ms >= self.handshake_timeout_ms {
            return bad(
                "login_failure_delay_ms",
                "must be shorter than handshake_timeout_ms",
            );
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert_file: PathBuf,
    /// PEM private key.
    pub key_file: PathBuf,
    /// CA certificates (PEM) the backends' certificates are verified against (for their IP
    /// addresses). With it, the sessions of TLS clients reach their backend over TLS too, end
    /// to end, and an account that requires TLS (`REQUIRE SSL` on the old server) can log in
    /// through the proxy. Without it, such an account is refused: its traffic would cross the
    /// proxy-to-server leg in plain text.
    #[serde(default)]
    pub backend_ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// File holding the bearer token (one line).
    pub token_file: PathBuf,
    /// Export per-database series on `/metrics` (off by default: 2,500 databases per proxy
    /// times every series is more than a Prometheus server wants from each proxy).
    #[serde(default)]
    pub per_database_metrics: bool,
    /// PEM certificate chain of the admin API: with `tls_key`, the API speaks HTTPS only
    /// (plain HTTP is refused); the migrator verifies it (`proxy.ca_file` in its site spec).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of the admin API (mode 0600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("config {path}: {source}")]
    Parse {
        path: String,
        source: Box<toml::de::Error>,
    },
    #[error("config {path}: {source}")]
    Invalid { path: String, source: Invalid },
}

/// A config that parsed but cannot run: the key at fault is named.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("listen: at least one address is needed")]
    NoListen,
    #[error("default_side {0:?} is not a key of [backends]")]
    DefaultSide(String),
    #[error("backend_sockets.{0} is not a key of [backends]")]
    BackendSocket(String),
    #[error("databases.{db}.side {side:?} is not a key of [backends]")]
    DatabaseSide { db: String, side: String },
    #[error("route_store and [fleet] exclude each other: a fleet's routes live in fleet.store")]
    StoreAndFleet,
    #[error("admin.{0}: tls_cert and tls_key go together (both, or neither for plain HTTP)")]
    AdminTls(&'static str),
    #[error("fleet.{field}: {why}")]
    Fleet { field: &'static str, why: String },
    #[error("limits.{field}: {why}")]
    Limit {
        field: &'static str,
        why: &'static str,
    },
}

impl Config {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: p.clone(),
            source,
        })?;
        let cfg: Self = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: p.clone(),
            source: Box::new(source),
        })?;
        cfg.validate()
            .map_err(|source| ConfigError::Invalid { path: p, source })?;
        Ok(cfg)
    }

    /// Where the route store lives.
    pub fn route_store_path(&self) -> PathBuf {
        self.route_store
            .clone()
            .unwrap_or_else(|| crate::route_store::RouteStore::default_path(&self.users_file))
    }

    /// The `[databases]` table as store seed rows.
    pub fn seed(&self) -> Vec<(String, String, Mode)> {
        self.databases
            .iter()
            .map(|(db, r)| (db.clone(), r.side.clone(), r.mode))
            .collect()
    }

    pub fn validate(&self) -> Result<(), Invalid> {
        if self.listen.is_empty() {
            return Err(Invalid::NoListen);
        }
        if !self.backends.contains_key(&self.default_side) {
            return Err(Invalid::DefaultSide(self.default_side.clone()));
        }
        for side in self.backend_sockets.keys() {
            if !self.backends.contains_key(side) {
                return Err(Invalid::BackendSocket(side.clone()));
            }
        }
        if let Some(f) = &self.fleet {
            if self.route_store.is_some() {
                return Err(Invalid::StoreAndFleet);
            }
            let bad = |field, why: &str| Invalid::Fleet {
                field,
                why: why.into(),
            };
            if f.name.is_empty() || f.name.len() > 128 {
                return Err(bad("name", "1 to 128 characters"));
            }
            if f.instance
                .as_ref()
                .is_some_and(|i| i.is_empty() || i.len() > 128)
            {
                return Err(bad("instance", "1 to 128 characters"));
            }
            if f.lease_ms < 1000 {
                return Err(bad("lease_ms", "at least 1000"));
            }
            if f.poll_ms == 0 || f.poll_ms * 5 > f.lease_ms {
                return Err(bad(
                    "poll_ms",
                    "above 0 and at most a fifth of lease_ms (the lease must survive a few missed renewals)",
                ));
            }
        }
        if let Some(a) = &self.admin {
            match (&a.tls_cert, &a.tls_key) {
                (Some(_), None) => return Err(Invalid::AdminTls("tls_key")),
                (None, Some(_)) => return Err(Invalid::AdminTls("tls_cert")),
                _ => {}
            }
        }
        for (db, r) in &self.databases {
            if !self.backends.contains_key(&r.side) {
                return Err(Invalid::DatabaseSide {
                    db: db.clone(),
                    side: r.side.clone(),
                });
            }
        }
        self.limits.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest valid config, to append tables to.
    const BASE: &str = r#"
        listen = ["127.0.0.1:3306"]
        users_file = "users.json"
        default_side = "old"
        [backends]
        old = "127.0.0.1:3307"
    "#;

    #[test]
    fn admin_tls_cert_without_key_is_refused_naming_the_field() {
        let text = format!(
            "{BASE}\n[admin]\nlisten = \"127.0.0.1:9090\"\ntoken_file = \"t\"\ntls_cert = \"c.pem\"\n"
        );
        let cfg: Config = toml::from_str(&text).unwrap();
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.contains("admin.tls_key"), "{e}");
    }

    #[test]
    fn example_parses_and_bad_side_is_named() {
        let text = format!("{BASE}\n[databases.shop]\nside = \"new\"\n");
        let text = text.as_str();
        let cfg: Config = toml::from_str(text).unwrap();
        assert_eq!(cfg.databases["shop"].mode, Mode::Open);
        // A [limits] table with one field keeps the defaults of the others.
        let partial: Config =
            toml::from_str(&format!("{text}\n[limits]\nhold_deadline_ms = 1500\n")).unwrap();
        assert_eq!(partial.limits.hold_deadline_ms, 1500);
        assert_eq!(
            partial.limits.hold_buffer_bytes,
            Limits::default().hold_buffer_bytes
        );
        let err = cfg.validate().unwrap_err();
        assert_eq!(
            err.to_string(),
            "databases.shop.side \"new\" is not a key of [backends]"
        );
        let text = r#"
            listen = ["127.0.0.1:3306"]
            users_file = "users.json"
            default_side = "old"
            [backends]
            old = "127.0.0.1:3307"
            [backend_sockets]
            old = "/run/mysqld/mysqld.sock"
            new = "/tmp/other.sock"
        "#;
        let cfg: Config = toml::from_str(text).unwrap();
        let err = cfg.validate().unwrap_err();
        assert_eq!(err, Invalid::BackendSocket("new".into()));
        assert_eq!(
            err.to_string(),
            "backend_sockets.new is not a key of [backends]"
        );
    }

    fn fleet_cfg(dir: &Path, store: &str, mode: u32) -> Config {
        use std::os::unix::fs::PermissionsExt;
        let pw = dir.join("store.pw");
        std::fs::write(&pw, "s3cret-store-pw\n").unwrap();
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(mode)).unwrap();
        let text = format!(
            "listen = [\"127.0.0.1:3306\"]\nusers_file = \"u.json\"\ndefault_side = \"old\"\n\
             [backends]\nold = \"127.0.0.1:3307\"\n\
             [fleet]\nname = \"old-db1\"\nstore = \"{store}\"\npassword_file = \"{}\"\n",
            pw.display()
        );
        toml::from_str(&text).unwrap()
    }

    #[test]
    fn fleet_store_password_comes_from_a_private_file_only() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = fleet_cfg(dir.path(), "mysql://px@10.0.0.9:3306/sqlproxy", 0o600);
        cfg.validate().unwrap();
        let f = cfg.fleet.as_ref().unwrap();
        assert_eq!((f.lease_ms, f.poll_ms), (10_000, 200));
        let nodes = f.store_nodes().unwrap();
        assert_eq!(nodes.len(), 1);
        assert_eq!(nodes[0].pass(), Some("s3cret-store-pw"));
        assert_eq!(nodes[0].db_name(), Some("sqlproxy"));
        assert!(!nodes[0].prefer_socket());
        // The nodes of a Galera cluster: each with the password, tried in the URL's order.
        let cfg = fleet_cfg(
            dir.path(),
            "mysql://px@10.0.0.9:3306,10.0.0.10:3306,10.0.0.11/sqlproxy",
            0o600,
        );
        cfg.validate().unwrap();
        let nodes = cfg.fleet.unwrap().store_nodes().unwrap();
        let hosts: Vec<String> = nodes
            .iter()
            .map(|o| o.ip_or_hostname().to_string())
            .collect();
        assert_eq!(hosts, ["10.0.0.9", "10.0.0.10", "10.0.0.11"]);
        for o in &nodes {
            assert_eq!(
                (o.pass(), o.db_name()),
                (Some("s3cret-store-pw"), Some("sqlproxy"))
            );
            assert!(!o.prefer_socket());
        }

        // A password in the URL: refused, and not repeated in the message.
        let cfg = fleet_cfg(dir.path(), "mysql://px:hunter2@10.0.0.9/sqlproxy", 0o600);
        let e = cfg.fleet.unwrap().store_nodes().unwrap_err().to_string();
        assert!(
            e.starts_with("fleet.store: the URL carries a password"),
            "{e}"
        );
        assert!(!e.contains("hunter2"), "{e}");
        // No database, a file others may read, another scheme.
        for (store, mode, want) in [
            (
                "mysql://px@10.0.0.9:3306",
                0o600,
                "fleet.store: names no database",
            ),
            (
                "mysql://px@10.0.0.9/sqlproxy",
                0o644,
                "fleet.password_file:",
            ),
            (
                "postgres://px@10.0.0.9/x",
                0o600,
                "fleet.store: must start with mysql://",
            ),
        ] {
            let cfg = fleet_cfg(dir.path(), store, mode);
            let e = cfg.fleet.unwrap().store_nodes().unwrap_err().to_string();
            assert!(e.starts_with(want), "{store}: {e}");
        }
        // A lease renewed too rarely, and a fleet next to a route_store file.
        let mut cfg = fleet_cfg(dir.path(), "mysql://px@h/d", 0o600);
        cfg.fleet.as_mut().unwrap().poll_ms = 2_500;
        assert_eq!(
            cfg.validate().unwrap_err(),
            Invalid::Fleet {
                field: "poll_ms",
                why: "above 0 and at most a fifth of lease_ms (the lease must survive a few missed renewals)".into()
            }
        );
        let mut cfg = fleet_cfg(dir.path(), "mysql://px@h/d", 0o600);
        cfg.route_store = Some("r.sqlite".into());
        assert_eq!(cfg.validate().unwrap_err(), Invalid::StoreAndFleet);
    }

    #[test]
    fn limits_default_safe_and_bad_values_are_named() {
        Limits::default().validate().unwrap();
        let text = r#"
            listen = ["127.0.0.1:3306"]
            users_file = "users.json"
            default_side = "old"
            [backends]
            old = "127.0.0.1:3307"
            [limits]
        "#;
        for (extra, want) in [
            (
                "max_connections = 0",
                "limits.max_connections: must be at least 1",
            ),
            (
                "hold_buffer_per_database_bytes = 100000000",
                "limits.hold_buffer_per_database_bytes: must not exceed hold_buffer_bytes",
            ),
            (
                "max_login_packet_bytes = 10",
                "limits.max_login_packet_bytes: must be at least 1024",
            ),
            (
                "max_connections_per_ip = 9000",
                "limits.max_connections_per_ip: must not exceed max_connections",
            ),
            (
                "login_failure_delay_ms = 20000",
                "limits.login_failure_delay_ms: must be shorter than handshake_timeout_ms",
            ),
        ] {
            let cfg: Config = toml::from_str(&format!("{text}{extra}\n")).unwrap();
            assert_eq!(cfg.validate().unwrap_err().to_string(), want, "{extra}");
        }
        // An unknown key under [limits] names itself.
        let err = toml::from_str::<Config>(&format!("{text}max_conections = 5\n")).unwrap_err();
        assert!(err.to_string().contains("max_conections"), "{err}");
    }
}
