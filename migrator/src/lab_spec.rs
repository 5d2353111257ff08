//! Site specs derived from the staging lab's `state.json` (scenarios' `LabState`), so the lab
//! scenarios and the runbook drive the same engine as production.
//!
//! Read tolerantly (only the fields used here), so the lab can grow without breaking this.
//! Database admin credentials come from each DC's `[client]` option file (0600) and are written
//! as `mysql://` URL files (0600) next to the output, never printed. The migrator is meant to
//! run inside the lab's client namespace, which routes to both LANs, the VIPs and the DNS.
//! The new side is prepared over SSH on new-dc's sshd (host key from the lab's known_hosts),
//! which runs in new-dc's mount namespace: the compat path and nginx map entry land there.

use crate::artifacts::{Artifacts, CronJob, TlsSpec};
use crate::site_spec::{
    check_map_entry, check_site_name, Budget, FingerprintSpec, HomeSpec, LbSpec, LbTlsSpec,
    ProxySpec, SiteSpec, SpecError, SpecFile, TunnelSpec, WebHostSpec,
};
use drivers::dns::rfc2136::Rfc2136Config;
use drivers::dns::DnsConfig;
use serde::Deserialize;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Deserialize)]
struct Lab {
    zone: String,
    state_dir: PathBuf,
    old: Dc,
    new: Dc,
    dns: DnsState,
    sites: Vec<LabSite>,
    #[serde(default)]
    tunnel: Option<LabTunnel>,
    /// `lab up --artifacts` (issue 20); absent in other labs and older states.
    #[serde(default)]
    artifacts: Option<LabArtifacts>,
    /// HTTPS of the sites (`lab up --artifacts`).
    #[serde(default)]
    tls: Option<LabTls>,
}

/// The lab's cron job of every site and where each side keeps the site's artifacts.
#[derive(Deserialize)]
struct LabArtifacts {
    stage_dir: PathBuf,
    old_stage_dir: PathBuf,
    job: String,
    schedule: String,
    user: String,
    /// Relative to the site's home.
    script: String,
}

#[derive(Deserialize)]
struct LabTls {
    ca: PathBuf,
    sites: Vec<LabSiteCert>,
    port: u16,
    new_crt_list: PathBuf,
    new_cert_dir: PathBuf,
}

#[derive(Deserialize)]
struct LabSiteCert {
    login: String,
    domain: String,
    cert: PathBuf,
    key: PathBuf,
}

#[derive(Deserialize)]
struct LabTunnel {
    config_dir: PathBuf,
}

#[derive(Deserialize)]
struct Dc {
    vip: Ipv4Addr,
    web_addr: Ipv4Addr,
    db_admin_credentials: PathBuf,
    haproxy_admin_socket: PathBuf,
    filer: Filer,
    ssh_addr: Ipv4Addr,
    ssh_port: u16,
    known_hosts: PathBuf,
    ssh_client_key: PathBuf,
    nginx_sites_map: PathBuf,
    #[serde(default)]
    nginx_pid_file: Option<PathBuf>,
    /// `lab up --artifacts`: the DC's artifacts (`DIR/<login>/active/`), its sites' pool
    /// sockets, and its reload commands.
    #[serde(default)]
    artifacts_dir: Option<PathBuf>,
    #[serde(default)]
    php_pool_dir: Option<PathBuf>,
    #[serde(default)]
    nginx_reload: Option<String>,
    #[serde(default)]
    php_reload: Option<String>,
}

#[derive(Deserialize)]
struct Filer {
    number: u32,
    backing_dir: PathBuf,
}

#[derive(Deserialize)]
struct DnsState {
    addr: Ipv4Addr,
    port: u16,
    tsig_key_file: PathBuf,
}

#[derive(Deserialize)]
struct LabSite {
    login: String,
    domain: String,
    database: String,
    /// `lab up --artifacts`: the site's PHP settings and web rules.
    #[serde(default)]
    php: Option<crate::artifacts::PhpSpec>,
    #[serde(default)]
    web_rules: Vec<crate::artifacts::WebRule>,
}

/// What the lab does not know yet and the operator passes.
#[derive(Debug, Clone)]
pub struct LabOptions {
    pub proxy_admin: SocketAddr,
    pub proxy_token_file: PathBuf,
    pub tunnel: Option<TunnelSpec>,
    /// Where the DB URL files are written.
    pub secrets_dir: PathBuf,
    pub budget: Budget,
}

fn invalid(path: &Path, message: String) -> SpecError {
    SpecError::Invalid {
        path: path.to_path_buf(),
        site: "-".into(),
        message,
    }
}

/// Turns a `[client]` option file into a `mysql://` URL (kept in memory and in a 0600 file).
fn url_from_cnf(cnf: &Path) -> Result<String, SpecError> {
    let text = std::fs::read_to_string(cnf).map_err(|source| SpecError::Io {
        path: cnf.to_path_buf(),
        source,
    })?;
    let get = |k: &str| {
        text.lines()
            .filter_map(|l| l.split_once('='))
            .find(|(a, _)| a.trim() == k)
            .map(|(_, v)| v.trim().to_string())
    };
    let (Some(user), Some(pw), Some(host), Some(port)) =
        (get("user"), get("password"), get("host"), get("port"))
    else {
        return Err(invalid(cnf, "needs user, password, host and port".into()));
    };
    // The lab's generated passwords are alphanumeric; refuse anything needing URL escaping.
    if !pw
        .chars()
        .chain(user.chars())
        .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(invalid(cnf, "user or password needs URL escaping".into()));
    }
    Ok(format!("mysql://{user}:{pw}@{host}:{port}"))
}

fn write_secret(path: &Path, text: &str) -> Result<(), SpecError> {
    let io = |source| SpecError::Io {
        path: path.to_path_buf(),
        source,
    };
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)
}

/// The lab certificate of site `login` (none in a lab without `--artifacts`).
fn site_tls(tls: Option<&LabTls>, login: &str) -> Vec<TlsSpec> {
    tls.into_iter()
        .flat_map(|t| t.sites.iter().map(move |c| (t, c)))
        .filter(|(_, c)| c.login == login)
        .map(|(t, c)| TlsSpec {
            domain: c.domain.clone(),
            cert: c.cert.clone(),
            key: c.key.clone(),
            ca: Some(t.ca.clone()),
        })
        .collect()
}

/// A site's artifacts in a lab brought up with them (`lab up --artifacts`; else none): its
/// PHP pool (run as www-data, on new-dc's socket for it) and web rules, new-dc's stage and
/// old-dc's enabled set, and old-dc's reload commands (new-dc's are the web host's).
fn lab_artifacts(lab: &Lab, s: &LabSite) -> crate::artifacts::Artifacts {
    let (Some(old_dir), Some(new_dir)) = (&lab.old.artifacts_dir, &lab.new.artifacts_dir) else {
        return Default::default();
    };
    let php = s.php.clone().map(|mut p| {
        p.user = Some("www-data".into());
        // The lab app's fingerprint of its PHP settings.
        p.probe = Some("/?op=phpinfo".into());
        p.listen = lab
            .new
            .php_pool_dir
            .as_ref()
            .map(|d| d.join(format!("{}.sock", s.login)).display().to_string());
        p
    });
    crate::artifacts::Artifacts {
        php,
        web_rules: s.web_rules.clone(),
        stage_dir: Some(new_dir.display().to_string()),
        old_stage_dir: Some(old_dir.display().to_string()),
        old_nginx_reload: lab.old.nginx_reload.clone(),
        old_php_reload: lab.old.php_reload.clone(),
        verify_served: true,
        ..Default::default()
    }
}

/// Reads the lab state and returns a spec for every site.
pub fn specs_from_lab(state: &Path, opts: &LabOptions) -> Result<SpecFile, SpecError> {
    let text = std::fs::read_to_string(state).map_err(|source| SpecError::Io {
        path: state.to_path_buf(),
        source,
    })?;
    let de = &mut serde_json::Deserializer::from_str(&text);
    let lab: Lab = serde_path_to_error::deserialize(de).map_err(|e| SpecError::Field {
        path: state.to_path_buf(),
        field: e.path().to_string(),
        message: e.inner().to_string(),
    })?;
    // Logins and domains become site names, paths and nginx map lines: a bad one is refused
    // here, named by its field in the lab state, before anything is written.
    for (i, s) in lab.sites.iter().enumerate() {
        let field = |name: &str, message: String| SpecError::Field {
            path: state.to_path_buf(),
            field: format!("sites[{i}].{name}"),
            message,
        };
        check_site_name(&s.login).map_err(|m| field("login", m))?;
        let probe = WebHostSpec {
            ssh: String::new(),
            port: 22,
            known_hosts: PathBuf::new(),
            identity: PathBuf::new(),
            nginx_map: PathBuf::new(),
            nginx_reload: String::new(),
            php_reload: None,
            server_name: s.domain.clone(),
            document_root: PathBuf::from("/"),
        };
        check_map_entry(&probe).map_err(|(_, m)| field("domain", m))?;
    }
    let old_url = opts.secrets_dir.join("old-db.url");
    let new_url = opts.secrets_dir.join("new-db.url");
    let dns_addr = SocketAddr::from((lab.dns.addr, lab.dns.port));
    // The lab's tunnel keeps its runtime state next to its config.
    let tunnel = opts.tunnel.clone().map(|mut t| {
        if let (None, Some(lt)) = (&t.state_dir, &lab.tunnel) {
            if t.config.starts_with(&lt.config_dir) {
                t.state_dir = Some(lt.config_dir.join("run"));
            }
        }
        t
    });
    let nginx_pid = lab
        .new
        .nginx_pid_file
        .clone()
        .unwrap_or_else(|| lab.state_dir.join("new-dc").join("nginx.pid"));
    let old_home =
        |login: &str| PathBuf::from(format!("/homez.{}", lab.old.filer.number)).join(login);
    // With artifacts, new-dc's nginx reload is the lab's script (configuration tested, the
    // reload waited for) rather than a bare signal.
    let new_nginx_reload = lab
        .new
        .nginx_reload
        .clone()
        .unwrap_or_else(|| format!("kill -HUP \"$(cat '{}')\"", nginx_pid.display()));
    let sites = lab
        .sites
        .iter()
        .map(|s| SiteSpec {
            site: s.login.clone(),
            dns: Some(DnsConfig::Rfc2136(Rfc2136Config {
                name: s.domain.clone(),
                zone: lab.zone.clone(),
                primary: dns_addr,
                servers: vec![dns_addr],
                tsig_key_file: lab.dns.tsig_key_file.clone(),
                low_ttl: 30,
            })),
            old_vip: lab.old.vip.into(),
            new_vip: lab.new.vip.into(),
            old_lb: LbSpec {
                socket: lab.old.haproxy_admin_socket.clone(),
                backend: format!("be_{}", s.login),
                server: "web".into(),
                tls: None,
            },
            new_lb: LbSpec {
                socket: lab.new.haproxy_admin_socket.clone(),
                backend: format!("be_{}", s.login),
                server: "web".into(),
                // The site's certificate goes into new-dc's crt-list at prepare.
                tls: lab.tls.as_ref().map(|t| LbTlsSpec {
                    crt_list: t.new_crt_list.clone(),
                    cert_dir: Some(t.new_cert_dir.clone()),
                    port: t.port,
                }),
            },
            old_web: SocketAddr::from((lab.old.web_addr, 80)),
            new_web: SocketAddr::from((lab.new.web_addr, 80)),
            homes: vec![HomeSpec {
                old: lab.old.filer.backing_dir.join(&s.login),
                new: lab.new.filer.backing_dir.join(&s.login),
                // The customer's absolute path on the new web servers.
                compat_link: Some(old_home(&s.login)),
                compat_target: Some(
                    PathBuf::from(format!("/homez.{}", lab.new.filer.number)).join(&s.login),
                ),
                feed: None,
                owner_map: None,
            }],
            // new-dc's web server, through its sshd (which runs in new-dc's mount namespace,
            // where the compat path must resolve).
            new_web_host: Some(WebHostSpec {
                ssh: format!("root@{}", lab.new.ssh_addr),
                port: lab.new.ssh_port,
                known_hosts: lab.new.known_hosts.clone(),
                identity: lab.new.ssh_client_key.clone(),
                nginx_map: lab.new.nginx_sites_map.clone(),
                nginx_reload: new_nginx_reload.clone(),
                php_reload: lab.new.php_reload.clone(),
                server_name: s.domain.clone(),
                document_root: old_home(&s.login).join("www"),
            }),
            databases: vec![s.database.clone()],
            old_db_url_file: old_url.clone(),
            new_db_url_file: new_url.clone(),
            proxy: ProxySpec {
                admin: opts.proxy_admin,
                token_file: opts.proxy_token_file.clone(),
                ca_file: None,
                old_side: "old".into(),
                new_side: "new".into(),
            },
            tunnel: tunnel.clone(),
            fingerprint: Some(FingerprintSpec {
                addr: SocketAddr::from((lab.old.vip, 80)),
                host: s.domain.clone(),
                // A page that does not change with traffic or with the serving side.
                path: "/?op=about".into(),
            }),
            budget: opts.budget.clone(),
            artifacts: {
                let mut a = Artifacts {
                    tls: site_tls(lab.tls.as_ref(), &s.login),
                    ..lab_artifacts(&lab, s)
                };
                if let Some(c) = &lab.artifacts {
                    a.cron = vec![CronJob {
                        name: c.job.clone(),
                        schedule: c.schedule.clone(),
                        command: format!("php {}", old_home(&s.login).join(&c.script).display()),
                        user: c.user.clone(),
                    }];
                    a.stage_dir
                        .get_or_insert_with(|| c.stage_dir.to_string_lossy().into_owned());
                    a.old_stage_dir
                        .get_or_insert_with(|| c.old_stage_dir.to_string_lossy().into_owned());
                }
                a
            },
        })
        .collect();
    let file = SpecFile { sites };
    file.validate(state)?;
    std::fs::create_dir_all(&opts.secrets_dir).map_err(|source| SpecError::Io {
        path: opts.secrets_dir.clone(),
        source,
    })?;
    write_secret(&old_url, &url_from_cnf(&lab.old.db_admin_credentials)?)?;
    write_secret(&new_url, &url_from_cnf(&lab.new.db_admin_credentials)?)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_state_becomes_specs_and_private_url_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for side in ["old", "new"] {
            std::fs::write(
                d.join(format!("{side}.cnf")),
                format!("[client]\nuser=labadmin\npassword=Pw{side}1\nhost=10.1.0.20\nport=3306\n"),
            )
            .unwrap();
        }
        let dc = |side: &str, n: u32, net: u8| {
            serde_json::json!({
                "vip": format!("172.31.0.{}", if net == 1 { 10 } else { 20 }),
                "web_addr": format!("10.{net}.0.10"),
                "db_admin_credentials": d.join(format!("{side}.cnf")),
                "haproxy_admin_socket": format!("/run/{side}.sock"),
                "filer": {"number": n, "path": format!("/homez.{n}"), "backing_dir": format!("/lab/filers/homez.{n}")},
                "ssh_addr": format!("10.{net}.0.22"),
                "ssh_port": 22,
                "known_hosts": "/lab/known_hosts",
                "ssh_client_key": "/lab/private/migrator_ed25519",
                "nginx_sites_map": format!("/lab/{side}-dc/nginx-sites.map"),
                "extra": "ignored"
            })
        };
        let state = serde_json::json!({
            "zone": "lab.test",
            "state_dir": "/lab",
            "old": dc("old", 3, 1),
            "new": dc("new", 4, 2),
            "dns": {"addr": "172.31.0.53", "port": 53, "tsig_key_file": "/lab/tsig.key"},
            "sites": [{"login": "site0001", "domain": "site0001.lab.test", "database": "db_site0001"}]
        });
        let sp = d.join("state.json");
        std::fs::write(&sp, state.to_string()).unwrap();
        let opts = LabOptions {
            proxy_admin: "10.1.0.21:9000".parse().unwrap(),
            proxy_token_file: d.join("token"),
            tunnel: None,
            secrets_dir: d.join("secrets"),
            budget: Budget::default(),
        };
        let f = specs_from_lab(&sp, &opts).unwrap();
        let s = &f.sites[0];
        assert_eq!(s.old_lb.backend, "be_site0001");
        assert_eq!(s.new_web, "10.2.0.10:80".parse().unwrap());
        assert_eq!(
            s.homes[0].compat_link.as_deref(),
            Some(Path::new("/homez.3/site0001"))
        );
        assert_eq!(
            s.homes[0].compat_target.as_deref(),
            Some(Path::new("/homez.4/site0001"))
        );
        let w = s.new_web_host.as_ref().unwrap();
        assert_eq!(w.ssh, "root@10.2.0.22");
        assert_eq!(w.document_root, Path::new("/homez.3/site0001/www"));
        assert_eq!(
            w.nginx_reload,
            "kill -HUP \"$(cat '/lab/new-dc/nginx.pid')\""
        );
        // A lab without artifacts: none in the spec, nor a php-fpm reload.
        assert!(s.artifacts.is_empty() && w.php_reload.is_none());
        let md = std::fs::metadata(&s.old_db_url_file).unwrap();
        assert_eq!(md.permissions().mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::read_to_string(&s.new_db_url_file).unwrap(),
            "mysql://labadmin:Pwnew1@10.1.0.20:3306"
        );
        // A login or domain that would break the nginx map line (or a path) is refused with
        // its field named, before any file is written.
        for (n, (field, value)) in [
            ("domain", "a.lab.test /x; evil.test"),
            ("domain", "a.lab.test;"),
            ("domain", "a{b}.lab.test"),
            ("domain", "a\"b.lab.test"),
            ("domain", "a\nb.lab.test"),
            ("login", "site 0001"),
            ("login", "site;0001"),
            ("login", "../etc"),
        ]
        .into_iter()
        .enumerate()
        {
            let secrets = d.join(format!("secrets-{n}"));
            let mut bad = state.clone();
            bad["sites"][0][field] = value.into();
            std::fs::write(&sp, bad.to_string()).unwrap();
            let o = LabOptions {
                secrets_dir: secrets.clone(),
                ..opts.clone()
            };
            let e = specs_from_lab(&sp, &o).unwrap_err().to_string();
            assert!(e.contains(&format!("sites[0].{field}")), "{value:?}: {e}");
            assert!(
                !secrets.exists(),
                "{value:?}: files written before refusing"
            );
        }
        // `lab up --artifacts`: the site's cron job, run by path under its old home, and
        // both sides' stages.
        let mut with = state.clone();
        with["artifacts"] = serde_json::json!({
            "stage_dir": "/lab/new-dc/artifacts", "old_stage_dir": "/lab/old-dc/artifacts",
            "env_file": "/lab/cron/env", "job": "tick", "schedule": "*/10 * * * * *",
            "user": "root", "script": "www/cron.php", "out_dir": "www/cron"
        });
        std::fs::write(&sp, with.to_string()).unwrap();
        let f = specs_from_lab(&sp, &opts).unwrap();
        let a = &f.sites[0].artifacts;
        assert_eq!(a.stage_dir.as_deref(), Some("/lab/new-dc/artifacts"));
        assert_eq!(a.old_stage_dir.as_deref(), Some("/lab/old-dc/artifacts"));
        assert_eq!(
            a.cron,
            vec![CronJob {
                name: "tick".into(),
                schedule: "*/10 * * * * *".into(),
                command: "php /homez.3/site0001/www/cron.php".into(),
                user: "root".into(),
            }]
        );
        // A lab without `--artifacts` has no certificate; one with them gives each site its
        // own, loaded into new-dc's crt-list at prepare.
        assert!(s.artifacts.tls.is_empty() && s.new_lb.tls.is_none());
        let mut with_tls = state.clone();
        with_tls["tls"] = serde_json::json!({
            "ca": "/lab/tls/ca.pem",
            "ca_key": "/lab/tls/private/ca.key",
            "default_cert": "/lab/tls/sites/default.pem",
            "sites": [
                {"login": "site0002", "domain": "site0002.lab.test",
                 "cert": "/lab/tls/sites/site0002.lab.test.pem", "key": "/lab/k2"},
                {"login": "site0001", "domain": "site0001.lab.test",
                 "cert": "/lab/tls/sites/site0001.lab.test.pem", "key": "/lab/k1"}
            ],
            "port": 443,
            "old_crt_list": "/lab/old-dc/tls/crt-list",
            "new_crt_list": "/lab/new-dc/tls/crt-list",
            "new_cert_dir": "/lab/new-dc/tls/certs"
        });
        std::fs::write(&sp, with_tls.to_string()).unwrap();
        let f = specs_from_lab(&sp, &opts).unwrap();
        let s = &f.sites[0];
        assert_eq!(
            s.artifacts.tls,
            vec![crate::artifacts::TlsSpec {
                domain: "site0001.lab.test".into(),
                cert: "/lab/tls/sites/site0001.lab.test.pem".into(),
                key: "/lab/k1".into(),
                ca: Some("/lab/tls/ca.pem".into()),
            }]
        );
        let t = s.new_lb.tls.as_ref().unwrap();
        assert_eq!(t.crt_list, Path::new("/lab/new-dc/tls/crt-list"));
        assert_eq!(t.cert_dir(), Path::new("/lab/new-dc/tls/certs"));
        assert_eq!(t.port, 443);
        assert!(s.old_lb.tls.is_none());
        // A missing field is named.
        std::fs::write(&sp, r#"{"zone":"lab.test","state_dir":"/lab"}"#).unwrap();
        let e = specs_from_lab(&sp, &opts).unwrap_err().to_string();
        assert!(e.contains("state.json") && e.contains("old"), "{e}");
    }

    /// A lab brought up with artifacts: each site's pool (as www-data, on new-dc's socket
    /// for it) and rules, both sides' stage dirs and every reload command land in its spec;
    /// without them nothing does (the test above).
    #[test]
    fn lab_artifacts_fill_the_specs() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for side in ["old", "new"] {
            std::fs::write(
                d.join(format!("{side}.cnf")),
                "[client]\nuser=labadmin\npassword=Pw1\nhost=10.1.0.20\nport=3306\n",
            )
            .unwrap();
        }
        let dc = |side: &str, n: u32, net: u8| {
            serde_json::json!({
                "vip": format!("172.31.0.{}", 10 * net),
                "web_addr": format!("10.{net}.0.10"),
                "db_admin_credentials": d.join(format!("{side}.cnf")),
                "haproxy_admin_socket": format!("/run/{side}.sock"),
                "filer": {"number": n, "backing_dir": format!("/lab/filers/homez.{n}")},
                "ssh_addr": format!("10.{net}.0.22"),
                "ssh_port": 22,
                "known_hosts": "/lab/known_hosts",
                "ssh_client_key": "/lab/private/migrator_ed25519",
                "nginx_sites_map": format!("/lab/{side}-dc/nginx-sites.map"),
                "artifacts_dir": format!("/lab/{side}-dc/artifacts"),
                "php_pool_dir": format!("/lab/{side}-dc/php-pools"),
                "nginx_reload": format!("sh '/lab/{side}-dc/reload-nginx.sh'"),
                "php_reload": format!("sh '/lab/{side}-dc/reload-php-fpm.sh'"),
            })
        };
        let php = crate::artifacts::sample("site0001").php.unwrap();
        let rules = crate::artifacts::sample("site0001").web_rules;
        let state = serde_json::json!({
            "zone": "lab.test",
            "state_dir": "/lab",
            "old": dc("old", 3, 1),
            "new": dc("new", 4, 2),
            "dns": {"addr": "172.31.0.53", "port": 53, "tsig_key_file": "/lab/tsig.key"},
            "sites": [{"login": "site0001", "domain": "site0001.lab.test", "database": "db_site0001",
                       "php": php, "web_rules": rules}]
        });
        let sp = d.join("state.json");
        std::fs::write(&sp, state.to_string()).unwrap();
        let opts = LabOptions {
            proxy_admin: "10.1.0.21:9000".parse().unwrap(),
            proxy_token_file: d.join("token"),
            tunnel: None,
            secrets_dir: d.join("secrets"),
            budget: Budget::default(),
        };
        let f = specs_from_lab(&sp, &opts).unwrap();
        let s = &f.sites[0];
        let a = &s.artifacts;
        assert_eq!(a.stage_dir.as_deref(), Some("/lab/new-dc/artifacts"));
        assert_eq!(a.old_stage_dir.as_deref(), Some("/lab/old-dc/artifacts"));
        assert_eq!(
            a.old_nginx_reload.as_deref(),
            Some("sh '/lab/old-dc/reload-nginx.sh'")
        );
        assert_eq!(
            a.old_php_reload.as_deref(),
            Some("sh '/lab/old-dc/reload-php-fpm.sh'")
        );
        let p = a.php.as_ref().unwrap();
        assert_eq!(p.pool, php.pool);
        assert_eq!(p.user.as_deref(), Some("www-data"));
        assert_eq!(
            p.listen.as_deref(),
            Some("/lab/new-dc/php-pools/site0001.sock")
        );
        assert_eq!(a.web_rules, rules);
        assert!(a.verify_served);
        assert_eq!(p.probe.as_deref(), Some("/?op=phpinfo"));
        let w = s.new_web_host.as_ref().unwrap();
        assert_eq!(w.nginx_reload, "sh '/lab/new-dc/reload-nginx.sh'");
        assert_eq!(
            w.php_reload.as_deref(),
            Some("sh '/lab/new-dc/reload-php-fpm.sh'")
        );
    }
}
