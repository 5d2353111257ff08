//! One site's endpoints on both sides: everything the cutover engine touches for it.
//!
//! A site spec file is JSON: `{"sites": [SiteSpec, ...]}`. It is written by whoever knows the
//! platform (the lab writes one from its `state.json`; in production an export of the
//! information system). Secrets never appear in it: database URLs, the proxy token and the DNS
//! keys (TSIG, PowerDNS API key) are named by files that must be mode 0600.
//!
//! The `dns` section is [`drivers::dns::DnsConfig`], tagged by `provider` (`rfc2136`,
//! `powerdns`); a section without `provider` (spec files written before there was a choice)
//! is read as `rfc2136`.

use drivers::dns::DnsConfig;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

/// The JSON schema of the spec file (`docs/site-spec.schema.json`, printed by `migrator site
/// schema --json`); `tests/site_spec_schema.rs` keeps it in step with these types.
pub const SCHEMA: &str = include_str!("../../docs/site-spec.schema.json");

/// Errors loading a spec file; each names the file and, for bad JSON, the field.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("site spec file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("site spec file {path}: field `{field}`: {message}")]
    Field {
        path: PathBuf,
        field: String,
        message: String,
    },
    #[error("site spec file {path}: site `{site}`: {message}")]
    Invalid {
        path: PathBuf,
        site: String,
        message: String,
    },
    #[error("site `{0}` is not in the site spec file")]
    UnknownSite(String),
}

/// One HAProxy backend server on one side.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LbSpec {
    /// The runtime API socket (`stats socket ... level admin`).
    pub socket: PathBuf,
    pub backend: String,
    pub server: String,
    /// The site's certificates on this balancer (new side only): prepare loads them through
    /// the runtime API and writes them where a restart finds them
    /// ([`crate::artifacts::lb_tls`]). Absent: prepare does nothing on the balancer for TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<LbTlsSpec>,
}

/// Where a balancer terminating TLS (`bind VIP:443 ssl crt-list FILE`) keeps its certificates.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LbTlsSpec {
    /// The crt-list file its TLS bind reads (as HAProxy names it: absolute path).
    pub crt_list: PathBuf,
    /// Where each domain's PEM (chain then key, 0600) is written as `DOMAIN.pem`; default:
    /// the crt-list's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_dir: Option<PathBuf>,
    /// The port the TLS bind listens on at the VIP (verify connects there); default 443.
    #[serde(default = "default_tls_port")]
    pub port: u16,
}

fn default_tls_port() -> u16 {
    443
}

impl LbTlsSpec {
    /// The directory of the PEM files.
    pub fn cert_dir(&self) -> PathBuf {
        self.cert_dir.clone().unwrap_or_else(|| {
            self.crt_list
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("/"))
        })
    }
}

/// One home directory: where it is on each side and how the old absolute path keeps resolving.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HomeSpec {
    /// The home as the migrator reaches it on the old side (local path: filers mounted).
    pub old: PathBuf,
    /// The destination home as the migrator reaches it.
    pub new: PathBuf,
    /// The customer-visible absolute path (`/homez.N/login`) that must resolve on the new web
    /// servers; `prepare` creates a symlink at `compat_link` pointing to `compat_target`.
    #[serde(default)]
    pub compat_link: Option<PathBuf>,
    #[serde(default)]
    pub compat_target: Option<PathBuf>,
    /// The old home's change feed: the socket `migrator watch` serves it on (where the writes
    /// land). With it, every forward pass (the one inside the freeze too) re-stats only what
    /// the feed says changed instead of walking the home, when its chain is intact (else it
    /// walks, saying why), and a freeze whose pass used the feed leaves the full comparison of
    /// the files to after the switch (the old home is written no more), like a followed
    /// database.
    #[serde(default)]
    pub feed: Option<PathBuf>,
    /// The uid/gid map of this home's passes ([`crate::files::owners`]: lines `uid SOURCE
    /// DESTINATION`, `gid …`): owners written on the new side are the mapped ones, and an
    /// owner it does not name refuses the pass before anything is written. Without it, uid
    /// and gid are copied as they are (both sides share one user database).
    #[serde(default)]
    pub owner_map: Option<PathBuf>,
}

/// The new web server a site is prepared on, reached over SSH the way an operator reaches it:
/// the system OpenSSH client, host key checked against `known_hosts` (never added), key
/// authentication, no prompts. `prepare` runs one idempotent script there (see
/// [`crate::web_host`]): the compat path (`HomeSpec::compat_link` → `compat_target`, in that
/// server's own filesystem), the nginx `map` line `server_name document_root;`, and
/// `nginx_reload` when the map changed. Without it, compat paths are made on the migrator's host.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebHostSpec {
    /// `user@host` of the new web server's sshd.
    pub ssh: String,
    #[serde(default = "default_ssh_port")]
    pub port: u16,
    /// known_hosts file holding that server's host key.
    pub known_hosts: PathBuf,
    /// Private key (0600) to log in with.
    pub identity: PathBuf,
    /// The nginx include file with `map $host $site_root` lines, on that server.
    pub nginx_map: PathBuf,
    /// Shell command (run there) that reloads nginx, e.g. `nginx -s reload`.
    pub nginx_reload: String,
    /// Shell command (run there) that reloads php-fpm after the site's pool file was enabled
    /// or disabled at a commit point, e.g. `systemctl reload php8.2-fpm`; absent: not reloaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub php_reload: Option<String>,
    /// The site's host name in the map.
    pub server_name: String,
    /// The document root the map names: the customer's OLD absolute path (it resolves through
    /// the compat path).
    pub document_root: PathBuf,
}

fn default_ssh_port() -> u16 {
    22
}

/// The SQL proxy that answers on the old DB endpoints.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProxySpec {
    /// Admin API address (`host:port`).
    pub admin: SocketAddr,
    /// File holding the bearer token, mode 0600.
    pub token_file: PathBuf,
    /// The admin API's certificate authority (PEM). When set, the API is called over HTTPS and
    /// the proxy's certificate must chain to it and name `admin`'s address (the proxy's
    /// `[admin] tls_cert`); without it, plain HTTP (a lab, or a private link).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// The proxy's names of the two sides.
    #[serde(default = "default_old")]
    pub old_side: String,
    #[serde(default = "default_new")]
    pub new_side: String,
}

fn default_old() -> String {
    "old".into()
}
fn default_new() -> String {
    "new".into()
}

/// The tunnel whose health gates a freeze.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TunnelSpec {
    pub config: PathBuf,
    pub side: String,
    #[serde(default)]
    pub netns: Option<String>,
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
}

/// How the post-check fetches the page whose answer must not change.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FingerprintSpec {
    /// Where to send the request (the old VIP: what customers' DNS points to).
    pub addr: SocketAddr,
    /// The `Host` header.
    pub host: String,
    /// A path whose answer does not change with traffic, e.g. `/?op=read`.
    pub path: String,
}

/// Limits that decide when a site may freeze.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// The last sync pass before the freeze must have moved at most this many bytes.
    pub max_delta_bytes: u64,
    /// Sync passes before giving up on reaching `max_delta_bytes`.
    pub max_sync_passes: u32,
    /// The last sync pass before the freeze must have taken at most this long (ms): the final
    /// pass inside the freeze moves about as much, so this bounds the freeze. Longer is a
    /// copy lag the wave throttles on (another pass, then the check again).
    #[serde(default = "default_max_lag_ms")]
    pub max_lag_ms: u64,
}

fn default_max_lag_ms() -> u64 {
    3_000
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            max_delta_bytes: 8 << 20,
            max_sync_passes: 5,
            max_lag_ms: default_max_lag_ms(),
        }
    }
}

/// Everything the engine touches for one site.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SiteSpec {
    pub site: String,
    /// Hosted DNS of the site (absent when the zone is hosted elsewhere).
    #[serde(default)]
    pub dns: Option<DnsConfig>,
    pub old_vip: IpAddr,
    pub new_vip: IpAddr,
    pub old_lb: LbSpec,
    pub new_lb: LbSpec,
    /// The old web server as the old HAProxy reaches it (where rollback points back to).
    pub old_web: SocketAddr,
    /// The new web server as the OLD HAProxy reaches it (through the tunnel).
    pub new_web: SocketAddr,
    pub homes: Vec<HomeSpec>,
    /// Where `prepare` makes the compat paths and web config (absent: on the migrator's host).
    #[serde(default)]
    pub new_web_host: Option<WebHostSpec>,
    /// The site's databases (the same name on both sides).
    #[serde(default)]
    pub databases: Vec<String>,
    /// Files (0600) holding `mysql://user:pass@host:port` of the old and new SQL servers,
    /// with rights to create databases and users.
    pub old_db_url_file: PathBuf,
    pub new_db_url_file: PathBuf,
    pub proxy: ProxySpec,
    #[serde(default)]
    pub tunnel: Option<TunnelSpec>,
    #[serde(default)]
    pub fingerprint: Option<FingerprintSpec>,
    #[serde(default)]
    pub budget: Budget,
    /// Cron jobs, certificates, PHP runtime and web rules ([`crate::artifacts`]).
    #[serde(default, skip_serializing_if = "crate::artifacts::Artifacts::is_empty")]
    pub artifacts: crate::artifacts::Artifacts,
}

/// The spec file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct SpecFile {
    pub sites: Vec<SiteSpec>,
}

impl SpecFile {
    pub fn load(path: &Path) -> Result<SpecFile, SpecError> {
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        SpecFile::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<SpecFile, SpecError> {
        let de = &mut serde_json::Deserializer::from_str(text);
        let file: SpecFile =
            serde_path_to_error::deserialize(de).map_err(|e| SpecError::Field {
                path: path.to_path_buf(),
                field: e.path().to_string(),
                message: e.inner().to_string(),
            })?;
        file.validate(path)?;
        Ok(file)
    }

    /// Everything a spec must satisfy beyond its JSON shape; `path` is the file named in the
    /// errors. Called by [`SpecFile::parse`] and by whoever builds a spec in memory (the lab)
    /// before anything is written from it.
    pub fn validate(&self, path: &Path) -> Result<(), SpecError> {
        let mut seen = std::collections::HashSet::new();
        for (i, s) in self.sites.iter().enumerate() {
            let bad = |message: String| SpecError::Invalid {
                path: path.to_path_buf(),
                site: s.site.clone(),
                message,
            };
            let field = |name: &str, message: String| SpecError::Field {
                path: path.to_path_buf(),
                field: format!("sites[{i}].{name}"),
                message,
            };
            check_site_name(&s.site).map_err(|m| field("site", m))?;
            if !seen.insert(s.site.as_str()) {
                return Err(bad("listed twice".into()));
            }
            if s.homes.is_empty() {
                return Err(bad("no home directory (`homes` is empty)".into()));
            }
            for h in &s.homes {
                if h.compat_link.is_some() != h.compat_target.is_some() {
                    return Err(bad("`compat_link` and `compat_target` go together".into()));
                }
                crate::files::home_url::parse(&h.new)
                    .map_err(|e| bad(format!("home `new`: {e}")))?;
            }
            if let Some(w) = &s.new_web_host {
                check_map_entry(w).map_err(|(f, m)| field(&format!("new_web_host.{f}"), m))?;
            }
            if let Some(d) = &s.dns {
                d.validate().map_err(|e| bad(e.to_string()))?;
            }
            crate::artifacts::validate(&s.artifacts)
                .map_err(|(f, m)| field(&format!("artifacts.{f}"), m))?;
            if s.budget.max_sync_passes == 0 {
                return Err(bad("`budget.max_sync_passes` must be at least 1".into()));
            }
        }
        Ok(())
    }

    /// `name`'s move group: the site first, then every other site sharing a database with it,
    /// directly or through another (in file order). A database serves from one side only, so
    /// these sites switch, and roll back, together.
    pub fn move_group(&self, name: &str) -> Result<Vec<&SiteSpec>, SpecError> {
        let first = self.site(name)?;
        let mut dbs: std::collections::HashSet<&str> =
            first.databases.iter().map(String::as_str).collect();
        let mut group = vec![first];
        loop {
            let before = group.len();
            for s in &self.sites {
                let shares = s.databases.iter().any(|d| dbs.contains(d.as_str()));
                if shares && !group.iter().any(|g| g.site == s.site) {
                    dbs.extend(s.databases.iter().map(String::as_str));
                    group.push(s);
                }
            }
            if group.len() == before {
                return Ok(group);
            }
        }
    }

    pub fn site(&self, name: &str) -> Result<&SiteSpec, SpecError> {
        self.sites
            .iter()
            .find(|s| s.site == name)
            .ok_or_else(|| SpecError::UnknownSite(name.to_string()))
    }
}

/// A site name becomes a journal key, a lease owner's subject, a backend name and a path
/// component: letters, digits, `.`, `_` and `-`, not starting with `.` or `-`, 1 to 128 bytes.
pub fn check_site_name(name: &str) -> Result<(), String> {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || name.len() > 128 {
        return Err(format!("{name:?}: a site name is 1 to 128 bytes"));
    }
    if let Some(c) = name.chars().find(|c| !ok(*c)) {
        return Err(format!(
            "{name:?}: {c:?} is not allowed in a site name (letters, digits, `.`, `_`, `-`)"
        ));
    }
    if name.starts_with(['.', '-']) {
        return Err(format!(
            "{name:?}: a site name cannot start with `.` or `-`"
        ));
    }
    Ok(())
}

/// The two fields written into the nginx `map` line `server_name document_root;` must each
/// stay one token: no whitespace, `;`, quotes, `{}`, `$`, `#`, `\\` or control characters
/// (any of those would end the entry early, add another entry or directive, or break the file
/// for every site nginx serves). Returns the field at fault and why.
pub fn check_map_entry(w: &WebHostSpec) -> Result<(), (&'static str, String)> {
    let host_ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '*');
    let sn = &w.server_name;
    if sn.is_empty() || sn.len() > 253 {
        return Err((
            "server_name",
            format!("{sn:?}: a host name is 1 to 253 bytes"),
        ));
    }
    if let Some(c) = sn.chars().find(|c| !host_ok(*c)) {
        return Err((
            "server_name",
            format!("{sn:?}: {c:?} is not allowed in a host name in the nginx map"),
        ));
    }
    let Some(root) = w.document_root.to_str() else {
        return Err(("document_root", "not valid UTF-8".into()));
    };
    let path_ok = |c: char| {
        c.is_ascii_alphanumeric()
            || matches!(
                c,
                '/' | '.' | '_' | '-' | '+' | '@' | '~' | ',' | '=' | ':' | '%'
            )
    };
    if !root.starts_with('/') {
        return Err(("document_root", format!("{root:?}: not an absolute path")));
    }
    if let Some(c) = root.chars().find(|c| !path_ok(*c)) {
        return Err((
            "document_root",
            format!("{root:?}: {c:?} is not allowed in a document root in the nginx map"),
        ));
    }
    Ok(())
}

/// An example spec with made-up endpoints (documentation, and the fake world of tests).
#[doc(hidden)]
pub fn sample(site: &str) -> SiteSpec {
    SiteSpec {
        site: site.into(),
        dns: Some(DnsConfig::Rfc2136(drivers::dns::rfc2136::Rfc2136Config {
            name: format!("{site}.lab.test"),
            zone: "lab.test".into(),
            primary: "172.31.0.53:53".parse().unwrap(),
            servers: vec!["172.31.0.53:53".parse().unwrap()],
            tsig_key_file: "/tmp/k".into(),
            low_ttl: 30,
        })),
        old_vip: "172.31.0.10".parse().unwrap(),
        new_vip: "172.31.0.20".parse().unwrap(),
        old_lb: LbSpec {
            socket: "/tmp/old.sock".into(),
            backend: format!("be_{site}"),
            server: "web".into(),
            tls: None,
        },
        new_lb: LbSpec {
            socket: "/tmp/new.sock".into(),
            backend: format!("be_{site}"),
            server: "web".into(),
            tls: None,
        },
        old_web: "10.1.0.10:80".parse().unwrap(),
        new_web: "10.2.0.10:80".parse().unwrap(),
        homes: vec![HomeSpec {
            old: format!("/srv/old/{site}").into(),
            new: format!("/srv/new/{site}").into(),
            compat_link: None,
            compat_target: None,
            feed: None,
            owner_map: None,
        }],
        new_web_host: None,
        databases: vec![format!("db_{site}")],
        old_db_url_file: "/tmp/old.url".into(),
        new_db_url_file: "/tmp/new.url".into(),
        proxy: ProxySpec {
            admin: "127.0.0.1:9".parse().unwrap(),
            token_file: "/tmp/token".into(),
            ca_file: None,
            old_side: "old".into(),
            new_side: "new".into(),
        },
        tunnel: None,
        fingerprint: None,
        budget: Budget::default(),
        artifacts: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_field_errors() {
        let f = SpecFile {
            sites: vec![sample("a"), sample("b")],
        };
        let text = serde_json::to_string(&f).unwrap();
        let back = SpecFile::parse(&text, Path::new("s.json")).unwrap();
        assert_eq!(back, f);
        assert_eq!(back.site("b").unwrap().site, "b");
        assert!(matches!(back.site("zz"), Err(SpecError::UnknownSite(_))));

        let bad = text.replacen("\"172.31.0.10\"", "\"not-an-ip\"", 1);
        let err = SpecFile::parse(&bad, Path::new("s.json")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("sites[0].old_vip"), "{msg}");
        assert!(msg.contains("s.json"), "{msg}");
    }

    #[test]
    fn dns_sections_choose_a_provider_and_old_files_still_load() {
        let f = SpecFile {
            sites: vec![sample("a")],
        };
        let mut v = serde_json::to_value(&f).unwrap();
        assert_eq!(v["sites"][0]["dns"]["provider"], "rfc2136");

        // Written before providers: no `provider`, read as RFC 2136.
        v["sites"][0]["dns"]
            .as_object_mut()
            .unwrap()
            .remove("provider");
        let back = SpecFile::parse(&v.to_string(), Path::new("s.json")).unwrap();
        assert_eq!(back, f);

        // PowerDNS, selected per site.
        v["sites"][0]["dns"] = serde_json::json!({
            "provider": "powerdns", "name": "a.lab.test", "zone": "lab.test",
            "api": "http://127.0.0.1:8081", "api_key_file": "/etc/hostmove/pdns.key",
            "servers": ["127.0.0.1:53"]
        });
        let p = SpecFile::parse(&v.to_string(), Path::new("s.json")).unwrap();
        let d = p.sites[0].dns.as_ref().unwrap();
        assert_eq!(d.provider_name(), "powerdns");
        assert_eq!(d.target().low_ttl, 30);

        // Errors name the file and the field.
        let mut bad = v.clone();
        bad["sites"][0]["dns"]["servers"] = serde_json::json!(["not-an-address"]);
        let e = SpecFile::parse(&bad.to_string(), Path::new("s.json")).unwrap_err();
        assert!(e.to_string().contains("sites[0].dns"), "{e}");
        assert!(e.to_string().contains("servers[0]"), "{e}");
        assert!(e.to_string().contains("s.json"), "{e}");
        let mut bad = v.clone();
        bad["sites"][0]["dns"]["provider"] = "route53".into();
        let e = SpecFile::parse(&bad.to_string(), Path::new("s.json")).unwrap_err();
        assert!(
            e.to_string().contains("sites[0].dns") && e.to_string().contains("route53"),
            "{e}"
        );
        let mut bad = v.clone();
        bad["sites"][0]["dns"]["api"] = "127.0.0.1:8081".into();
        let e = SpecFile::parse(&bad.to_string(), Path::new("s.json")).unwrap_err();
        assert!(e.to_string().contains("dns.api"), "{e}");
        let mut bad = v;
        bad["sites"][0]["dns"]["tsig_key_file"] = "/k".into();
        let e = SpecFile::parse(&bad.to_string(), Path::new("s.json")).unwrap_err();
        assert!(e.to_string().contains("tsig_key_file"), "{e}");
    }

    /// Issue 18 (10): the nginx map line `server_name document_root;` was written unchecked; a
    /// value with a space, `;`, a quote, a newline or braces added entries or broke the file.
    #[test]
    fn map_line_fields_and_site_names_are_refused_by_field() {
        let cases: [(&str, &str, &str); 9] = [
            (
                "new_web_host.server_name",
                "server_name",
                "a.test /x; evil.test",
            ),
            ("new_web_host.server_name", "server_name", "a.test;"),
            (
                "new_web_host.server_name",
                "server_name",
                "a.test\nb.test /y;",
            ),
            ("new_web_host.server_name", "server_name", "{a}.test"),
            (
                "new_web_host.document_root",
                "document_root",
                "/homez.1/a b/www",
            ),
            (
                "new_web_host.document_root",
                "document_root",
                "/homez.1/a/www;\nevil /x",
            ),
            (
                "new_web_host.document_root",
                "document_root",
                "/homez.1/'a'/www",
            ),
            (
                "new_web_host.document_root",
                "document_root",
                "homez.1/a/www",
            ),
            ("site", "site", "a b"),
        ];
        for (path, key, value) in cases {
            let mut site = sample("a");
            let mut w = WebHostSpec {
                ssh: "root@10.2.0.22".into(),
                port: 22,
                known_hosts: "/lab/known_hosts".into(),
                identity: "/lab/id".into(),
                nginx_map: "/etc/nginx/sites.map".into(),
                nginx_reload: "nginx -s reload".into(),
                php_reload: None,
                server_name: "a.lab.test".into(),
                document_root: "/homez.1/a/www".into(),
            };
            match key {
                "site" => site.site = value.into(),
                "server_name" => w.server_name = value.into(),
                _ => w.document_root = value.into(),
            }
            site.new_web_host = Some(w);
            let good = SpecFile {
                sites: vec![sample("b")],
            };
            SpecFile::parse(&serde_json::to_string(&good).unwrap(), Path::new("s.json")).unwrap();
            let text = serde_json::to_string(&SpecFile { sites: vec![site] }).unwrap();
            let e = SpecFile::parse(&text, Path::new("s.json")).unwrap_err();
            let msg = e.to_string();
            assert!(
                msg.contains(&format!("sites[0].{path}")) && msg.contains("s.json"),
                "{value:?}: {msg}"
            );
        }
        for ok in ["site0001", "a.b_c-d"] {
            assert_eq!(check_site_name(ok), Ok(()));
        }
    }

    #[test]
    fn duplicate_site_is_refused() {
        let f = SpecFile {
            sites: vec![sample("a"), sample("a")],
        };
        let text = serde_json::to_string(&f).unwrap();
        let err = SpecFile::parse(&text, Path::new("s.json")).unwrap_err();
        assert!(err.to_string().contains("listed twice"));
    }
}
