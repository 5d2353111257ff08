//! What `--journal` names, and opening it behind the trait.
//!
//! - A path: the SQLite journal file (created on first use).
//! - `mysql://user@host:port/db?password_file=PATH` (or `mariadb://…`): a MariaDB journal in
//!   database `db`, created on first use. The password is read from `PATH`, a file only its
//!   owner may read (mode 0600; one line, a trailing newline is ignored). A password written
//!   in the URL itself is refused: it would show in `ps`, in shell history and in the wave's
//!   process list. The other query parameters are `mysql_async`'s (for example
//!   `require_ssl=true`).
//!
//! - `mysql://user@host:port,host:port,host:port/db?password_file=PATH`: the same, on the nodes
//!   of one Galera cluster: the journal connects to the first node that answers and moves to
//!   the next when its node goes away.
//!
//! Messages show the URL without its password, and a MariaDB journal as `mysql://host:port/db`.

use super::{JournalStore, MariaDbJournal, Result, SqlConn, SqliteJournal};
use mysql_async::{Opts, OptsBuilder};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Where a journal lives.
#[derive(Debug, Clone)]
pub enum JournalLocation {
    /// One SQLite file.
    Sqlite(PathBuf),
    /// A database on a MariaDB server or Galera cluster.
    MariaDb(MariaDbTarget),
}

/// Connection settings of a MariaDB journal, password included; shown (`Debug`, `Display`)
/// without it.
#[derive(Clone)]
pub struct MariaDbTarget {
    /// One entry per node the URL names (one server, or the nodes of a Galera cluster), in
    /// the URL's order; never empty.
    nodes: Vec<Opts>,
    /// `mysql://host:port/db` (`mysql://host:port,host:port/db` for several nodes).
    name: String,
}

impl MariaDbTarget {
    /// A target from connection settings (for callers that hold them already, e.g. tests).
    pub fn from_opts(opts: Opts) -> MariaDbTarget {
        Self::from_nodes(vec![opts])
    }

    /// A target for the nodes of one cluster (same account and database on each; not empty).
    pub fn from_nodes(nodes: Vec<Opts>) -> MariaDbTarget {
        let name = sql_proxy::store_nodes::name(&nodes);
        MariaDbTarget { nodes, name }
    }

    /// The first node's settings.
    pub fn opts(&self) -> &Opts {
        &self.nodes[0]
    }

    /// Every node's settings.
    pub fn nodes(&self) -> &[Opts] {
        &self.nodes
    }

    /// `mysql://host:port/db`, the name every message uses.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl std::fmt::Debug for MariaDbTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

impl std::fmt::Display for JournalLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JournalLocation::Sqlite(p) => write!(f, "{}", p.display()),
            JournalLocation::MariaDb(t) => f.write_str(&t.name),
        }
    }
}

/// Why a `--journal` value cannot be used. `shown` is the value without its password.
#[derive(Debug, thiserror::Error)]
pub enum LocationError {
    #[error(
        "--journal {shown}: unsupported scheme {scheme:?}; give the journal file's path, or \
         mysql://user@host:port/db?password_file=PATH (mariadb:// works too)"
    )]
    UnsupportedScheme { shown: String, scheme: String },
    #[error("--journal {shown}: {source}")]
    BadUrl {
        shown: String,
        #[source]
        source: mysql_async::UrlError,
    },
    #[error(
        "--journal {shown}: the URL carries a password, which would show in `ps` and in shell \
         history; put it in a file only you can read (chmod 600) and add ?password_file=PATH"
    )]
    InlinePassword { shown: String },
    #[error("--journal {shown}: the URL names no database (mysql://user@host:port/DATABASE)")]
    NoDatabase { shown: String },
    #[error("--journal {shown}: password file {}: {reason}", path.display())]
    PasswordFile {
        shown: String,
        path: PathBuf,
        reason: String,
    },
}

impl JournalLocation {
    /// Reads a `--journal` value: a URL with a scheme is a MariaDB journal (its password file
    /// is read now), anything else a file path.
    pub fn parse(arg: &Path) -> std::result::Result<JournalLocation, LocationError> {
        let Some((scheme, rest)) = arg.to_str().and_then(split_scheme) else {
            return Ok(JournalLocation::Sqlite(arg.to_path_buf()));
        };
        let shown = redact(arg.to_str().unwrap_or_default());
        if !scheme.eq_ignore_ascii_case("mysql") && !scheme.eq_ignore_ascii_case("mariadb") {
            return Err(LocationError::UnsupportedScheme {
                shown,
                scheme: scheme.to_string(),
            });
        }
        let (base, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut password_file = None;
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|s| !s.is_empty()) {
            match pair.split_once('=') {
                Some(("password_file", v)) => password_file = Some(percent_decode(v)),
                _ => kept.push(pair),
            }
        }
        let query = if kept.is_empty() {
            String::new()
        } else {
            format!("?{}", kept.join("&"))
        };
        let password = match password_file {
            None => None,
            Some(path) => Some(read_password(&path, &shown)?),
        };
        // `user@host:port,host:port/db`: the nodes of one cluster, tried in this order (the
        // parsing is the proxy's shared route store's: both fail over the same way).
        let nodes = sql_proxy::store_nodes::parse(&format!("{base}{query}")).map_err(|e| {
            use sql_proxy::store_nodes::NodesError;
            match e {
                NodesError::BadUrl(source) => LocationError::BadUrl {
                    shown: shown.clone(),
                    source,
                },
                NodesError::InlinePassword => LocationError::InlinePassword {
                    shown: shown.clone(),
                },
                NodesError::NoDatabase => LocationError::NoDatabase {
                    shown: shown.clone(),
                },
            }
        })?;
        let nodes = nodes
            .into_iter()
            .map(|opts| match &password {
                None => opts,
                Some(pass) => OptsBuilder::from_opts(opts).pass(Some(pass.clone())).into(),
            })
            .collect();
        Ok(JournalLocation::MariaDb(MariaDbTarget::from_nodes(nodes)))
    }

    /// Whether the journal is known to exist: a file that exists, or any MariaDB journal
    /// (whether its database exists is only known by connecting).
    pub fn may_exist(&self) -> bool {
        match self {
            JournalLocation::Sqlite(p) => p.exists(),
            JournalLocation::MariaDb(_) => true,
        }
    }
}

/// Opens the journal at `location` (creating it if missing) behind the trait.
pub fn open_journal(location: &JournalLocation) -> Result<Box<dyn JournalStore + Send>> {
    Ok(match location {
        JournalLocation::Sqlite(p) => Box::new(SqliteJournal::open(p)?),
        JournalLocation::MariaDb(t) => Box::new(MariaDbJournal::open_any(t.nodes.clone())?),
    })
}

/// Opens the journal a `--journal` value names (a file path, or a MariaDB URL).
pub fn open_journal_at(arg: &Path) -> Result<Box<dyn JournalStore + Send>> {
    open_journal(&JournalLocation::parse(arg)?)
}

/// A [`SqlConn`] to the journal at `location`, its schema migrations applied.
pub fn open_sql(location: &JournalLocation) -> Result<Box<dyn SqlConn>> {
    Ok(match location {
        JournalLocation::Sqlite(p) => Box::new(SqliteJournal::open(p)?.into_sql()),
        JournalLocation::MariaDb(t) => {
            Box::new(MariaDbJournal::open_any(t.nodes.clone())?.into_sql())
        }
    })
}

/// [`open_sql`] on a `--journal` value.
pub fn open_sql_at(arg: &Path) -> Result<Box<dyn SqlConn>> {
    open_sql(&JournalLocation::parse(arg)?)
}

/// `scheme` and the rest of `scheme://rest`, when `text` is a URL at all.
fn split_scheme(text: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = text.split_once("://")?;
    let mut chars = scheme.chars();
    let first = chars.next()?;
    let valid = first.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    valid.then_some((scheme, rest))
}

/// The URL with the password of its user part replaced by `***`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            let hidden = if userinfo.contains(':') { ":***" } else { "" };
            format!("{scheme}://{user}{hidden}@{host}{tail}")
        }
        None => url.to_string(),
    }
}

/// `%XX` escapes decoded (an invalid one is kept as written).
fn percent_decode(s: &str) -> PathBuf {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (b[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// The password in `path`: owner-only, one line, not empty. Errors give the reason, never
/// the content.
fn read_password(path: &Path, shown: &str) -> std::result::Result<String, LocationError> {
    let fail = |reason: String| LocationError::PasswordFile {
        shown: shown.to_string(),
        path: path.to_path_buf(),
        reason,
    };
    let md = std::fs::metadata(path).map_err(|e| fail(e.to_string()))?;
    let mode = md.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(fail(format!(
            "others may read it (mode {mode:o}); chmod 600 it"
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let pass = text.trim_end_matches(['\n', '\r']);
    if pass.is_empty() {
        return Err(fail("it is empty".to_string()));
    }
    if pass.contains('\n') {
        return Err(fail("it holds more than one line".to_string()));
    }
    Ok(pass.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> std::result::Result<JournalLocation, LocationError> {
        JournalLocation::parse(Path::new(s))
    }

    #[test]
    fn paths_are_sqlite_and_urls_are_mariadb() {
        for p in [
            "j.sqlite",
            "/var/lib/j.sqlite",
            "./mysql:x",
            "dir/mysql://x",
        ] {
            assert!(matches!(parse(p), Ok(JournalLocation::Sqlite(_))), "{p}");
        }
        let Ok(JournalLocation::MariaDb(t)) = parse("mariadb://migrator@db1:3307/journal") else {
            panic!("a mariadb:// URL is a MariaDB journal");
        };
        assert_eq!(t.name(), "mysql://db1:3307/journal");
        assert_eq!(t.opts().user(), Some("migrator"));
        assert_eq!(format!("{t:?}"), "mysql://db1:3307/journal");
        let Ok(JournalLocation::MariaDb(t)) = parse("MYSQL://m@db1/j?require_ssl=false") else {
            panic!("the scheme is case-insensitive");
        };
        assert_eq!(t.name(), "mysql://db1:3306/j");
    }

    #[test]
    fn an_inline_password_is_refused_and_never_shown() {
        let err = parse("mysql://migrator:s3cret@db1/journal").unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(err, LocationError::InlinePassword { .. }),
            "{text}"
        );
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("mysql://migrator:***@db1/journal"), "{text}");
        assert!(text.contains("password_file"), "{text}");
        let err = parse("mysql://migrator:s3cret@db1/journal?bogus=1").unwrap_err();
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        assert!(matches!(
            parse("postgres://u@h/j"),
            Err(LocationError::UnsupportedScheme { scheme, .. }) if scheme == "postgres"
        ));
        assert!(matches!(
            parse("mysql://u@h:3306"),
            Err(LocationError::NoDatabase { .. })
        ));
        assert!(matches!(
            parse("mysql://u@h/j?pool_max=x"),
            Err(LocationError::BadUrl { .. })
        ));
    }

    #[test]
    fn the_password_comes_from_an_owner_only_file() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pass word");
        std::fs::write(&pw, "s3cret\n").unwrap();
        let url = format!(
            "mysql://m@db1/j?password_file={}",
            pw.display().to_string().replace(' ', "%20")
        );
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = parse(&url).unwrap_err().to_string();
        assert!(
            err.contains("chmod 600") && err.contains("pass word"),
            "{err}"
        );
        assert!(!err.contains("s3cret"), "{err}");
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
        let Ok(JournalLocation::MariaDb(t)) = parse(&url) else {
            panic!("a 0600 password file is accepted");
        };
        assert_eq!(t.opts().pass(), Some("s3cret"));
        assert!(!format!("{t:?} {}", JournalLocation::MariaDb(t.clone())).contains("s3cret"));
        std::fs::write(&pw, "").unwrap();
        assert!(parse(&url).unwrap_err().to_string().contains("empty"));
        let missing = parse("mysql://m@db1/j?password_file=/nonexistent/pw").unwrap_err();
        assert!(missing.to_string().contains("/nonexistent/pw"), "{missing}");
    }
}
