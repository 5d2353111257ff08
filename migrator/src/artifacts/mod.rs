//! A site's artifacts beyond files and databases (issue 20): scheduled jobs, TLS certificates,
//! the PHP runtime and web rules. They live in the site spec's `artifacts` section, kept in
//! their own types here so the spec's core stays small.
//!
//! Layout:
//! - this file: the spec types and [`validate`], the shape checks run when a spec loads
//!   (errors name `sites[N].artifacts.<field>`);
//! - [`cron`]: schedules, parsed and stepped (`last_due`, `next_due`);
//! - [`tls`]: a certificate and key checked from their files (mode, match, chain, expiry);
//! - [`lb_tls`]: the certificates loaded into the new side's HAProxy at prepare, and the
//!   served certificate compared at verify;
//! - [`php`]: known versions, pool settings, the pool file;
//! - [`web_rules`]: redirects and headers, and their nginx lines;
//! - [`fence`]: the owner token of a site's jobs (flipped with the switch and the rollback)
//!   and the journal of their runs; `migrator cron-run` runs a job through it.

pub mod activate;
pub mod cron;
pub mod fence;
pub mod install;
pub mod inventory;
pub mod lb_tls;
pub mod liveness;
pub mod php;
pub mod tls;
pub mod web_rules;

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Everything of a site that is neither files nor databases. Empty by default: a spec written
/// before issue 20 loads unchanged.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Artifacts {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cron: Vec<CronJob>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls: Vec<TlsSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub php: Option<PhpSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub web_rules: Vec<WebRule>,
    /// How long the freeze waits for a job run in progress on the old side before it goes on
    /// and reports the run (seconds).
    #[serde(default = "default_cron_wait_s")]
    pub cron_wait_s: u64,
    /// Where prepare stages them on the new web server ([`install`]; default
    /// [`install::DEFAULT_STAGE`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage_dir: Option<String>,
    /// Where the old side keeps the site's artifacts on the migrator's host (same layout,
    /// [`activate`]): disabled at the switch, enabled again at a rollback. Absent: the old
    /// side's jobs are fenced by the owner token only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_stage_dir: Option<String>,
    /// Shell command (run on the migrator's host) that reloads the old side's nginx after its
    /// artifacts were enabled or disabled at a commit point (its `nginx-rules.conf` comes or
    /// goes); absent: nothing is reloaded there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_nginx_reload: Option<String>,
    /// The same for the old side's php-fpm (its pool file comes or goes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_php_reload: Option<String>,
    /// After the switch, compare what the new web server serves with this section: each
    /// redirect (status, `Location`), each header, and with `php.probe` the PHP settings; a
    /// difference rolls the site back ([`served_diffs`]). Off by default.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub verify_served: bool,
}

fn default_cron_wait_s() -> u64 {
    30
}

impl Default for Artifacts {
    fn default() -> Self {
        Artifacts {
            cron: vec![],
            tls: vec![],
            php: None,
            web_rules: vec![],
            cron_wait_s: default_cron_wait_s(),
            stage_dir: None,
            old_stage_dir: None,
            old_nginx_reload: None,
            old_php_reload: None,
            verify_served: false,
        }
    }
}

impl Artifacts {
    pub fn is_empty(&self) -> bool {
        self.cron.is_empty()
            && self.tls.is_empty()
            && self.php.is_none()
            && self.web_rules.is_empty()
            && self.cron_wait_s == default_cron_wait_s()
            && self.stage_dir.is_none()
            && self.old_stage_dir.is_none()
            && self.old_nginx_reload.is_none()
            && self.old_php_reload.is_none()
            && !self.verify_served
    }

    /// Whether a commit point changes what nginx reads (rules, the pool its PHP goes to,
    /// certificates): its reload follows the move then.
    pub fn needs_nginx_reload(&self) -> bool {
        !self.web_rules.is_empty() || self.php.is_some() || !self.tls.is_empty()
    }

    /// Where prepare stages the artifacts on the new web server.
    pub fn stage(&self) -> &str {
        self.stage_dir.as_deref().unwrap_or(install::DEFAULT_STAGE)
    }
}

/// One scheduled job of the site, run through `migrator cron-run` on both sides (only the
/// side owning the site runs it).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CronJob {
    /// The job's name, unique in the site: the run journal's key with the slot.
    pub name: String,
    /// [`cron::Schedule`] syntax: 5 fields, 6 with seconds first, or a macro; UTC.
    pub schedule: String,
    /// The shell command (one line).
    pub command: String,
    /// The system user it runs as.
    pub user: String,
}

impl CronJob {
    pub fn parsed(&self) -> Result<cron::Schedule, String> {
        cron::Schedule::parse(&self.schedule)
    }
}

/// One domain's certificate: the chain (leaf first, PEM) and the private key's file (0600;
/// never read into a message or a log).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsSpec {
    pub domain: String,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The CA the chain must verify to (PEM); absent: the public roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
}

/// The site's PHP version and FPM pool settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PhpSpec {
    /// `8.2`, … (one of [`php::KNOWN_VERSIONS`]).
    pub version: String,
    /// The version the new side runs the site with when it lacks `version` (the operator's
    /// mapping; prepare refuses a missing version and names what the new side has).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map_to: Option<String>,
    /// Where the new web server keeps its PHP versions (`ROOT/VERSION/fpm`); default
    /// `/etc/php` (Debian).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fpm_root: Option<String>,
    #[serde(default)]
    pub pool: PoolSettings,
    /// The user (and group) the site's pool runs as; default the site's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The pool's unix socket on the new web server (what its nginx sends the site's PHP
    /// to); default `/run/php/SITE.sock`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// The socket's owner and group: the web server's user; default `www-data` (Debian).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen_owner: Option<String>,
    /// A path of the site answering, in JSON, `php_version` and `ini` (each pool setting's
    /// `ini_get` value), e.g. the lab app's `/?op=phpinfo`: with `verify_served`, compared
    /// with `version` and `pool` after the switch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<String>,
}

impl PhpSpec {
    /// The version the new side must have.
    pub fn target(&self) -> &str {
        self.map_to.as_deref().unwrap_or(&self.version)
    }

    /// The pool's user on the new side.
    pub fn user_for<'a>(&'a self, site: &'a str) -> &'a str {
        self.user.as_deref().unwrap_or(site)
    }

    /// The pool's socket on the new side.
    pub fn listen_for(&self, site: &str) -> String {
        self.listen
            .clone()
            .unwrap_or_else(|| format!("/run/php/{site}.sock"))
    }
}

/// Pool settings that must be equal on both sides (unset: PHP's default).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct PoolSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_limit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_execution_time: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_max_filesize: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_max_size: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disable_functions: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_children: Option<u32>,
}

/// A web rule of the site's vhost, tagged by `kind`. Read by hand (like the `dns` section) so
/// an error inside a rule names its field (`web_rules[0]: status: ...`).
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WebRule {
    Redirect(Redirect),
    Header(Header),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Redirect {
    pub from: String,
    pub to: String,
    #[serde(default = "default_redirect")]
    pub status: u16,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Header {
    pub name: String,
    pub value: String,
}

impl<'de> Deserialize<'de> for WebRule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use drivers::dns::tagged_section;
        use serde::de::Error;
        let mut map = serde_json::Map::deserialize(d)?;
        match map.remove("kind") {
            Some(serde_json::Value::String(k)) => match k.as_str() {
                "redirect" => tagged_section(map).map(WebRule::Redirect),
                "header" => tagged_section(map).map(WebRule::Header),
                other => Err(D::Error::unknown_variant(other, &["redirect", "header"])),
            },
            Some(other) => Err(D::Error::custom(format!(
                "kind: expected a string, found {other}"
            ))),
            None => Err(D::Error::missing_field("kind")),
        }
    }
}

fn default_redirect() -> u16 {
    301
}

/// A job or domain name: letters, digits, `.`, `_`, `-` (it becomes a journal key).
fn name_ok(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 128
        && !n.starts_with(['.', '-'])
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// A POSIX user name as `useradd` takes it.
fn user_ok(u: &str) -> bool {
    !u.is_empty()
        && u.len() <= 32
        && u.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && u.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-'))
}

/// The shape checks of a site's artifacts (files are read later, by [`tls::check`]); the
/// error is the field below `artifacts.` and why.
pub fn validate(a: &Artifacts) -> Result<(), (String, String)> {
    let mut names = std::collections::HashSet::new();
    for (j, c) in a.cron.iter().enumerate() {
        let f = |name: &str| format!("cron[{j}].{name}");
        if !name_ok(&c.name) {
            return Err((
                f("name"),
                format!("{:?}: letters, digits, `.`, `_`, `-`", c.name),
            ));
        }
        if !names.insert(c.name.as_str()) {
            return Err((f("name"), format!("{:?}: listed twice", c.name)));
        }
        c.parsed().map_err(|m| (f("schedule"), m))?;
        if c.command.trim().is_empty() || c.command.contains(['\n', '\r', '\0']) {
            return Err((f("command"), "empty, or more than one line".into()));
        }
        if !user_ok(&c.user) {
            return Err((f("user"), format!("{:?}: not a user name", c.user)));
        }
    }
    let mut domains = std::collections::HashSet::new();
    for (j, t) in a.tls.iter().enumerate() {
        let host_ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '*');
        if t.domain.is_empty() || !t.domain.chars().all(host_ok) {
            return Err((
                format!("tls[{j}].domain"),
                format!("{:?}: not a host name", t.domain),
            ));
        }
        if !domains.insert(t.domain.as_str()) {
            return Err((
                format!("tls[{j}].domain"),
                format!("{:?}: listed twice", t.domain),
            ));
        }
    }
    for (field, dir) in [
        ("stage_dir", &a.stage_dir),
        ("old_stage_dir", &a.old_stage_dir),
    ] {
        let Some(d) = dir else { continue };
        let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-');
        if !d.starts_with('/') || !d.chars().all(ok) || d.split('/').any(|p| p == "..") {
            return Err((
                field.into(),
                format!("{d:?}: an absolute path of letters, digits, `/`, `.`, `_`, `-`"),
            ));
        }
    }
    for (field, cmd) in [
        ("old_nginx_reload", &a.old_nginx_reload),
        ("old_php_reload", &a.old_php_reload),
    ] {
        if let Some(c) = cmd {
            if c.trim().is_empty() || c.contains(['\n', '\r', '\0']) {
                return Err((field.into(), "empty, or more than one line".into()));
            }
        }
    }
    if let Some(p) = &a.php {
        php::validate(p).map_err(|(f, m)| (format!("php.{f}"), m))?;
    }
    for (j, r) in a.web_rules.iter().enumerate() {
        web_rules::validate(r).map_err(|(f, m)| (format!("web_rules[{j}].{f}"), m))?;
    }
    Ok(())
}

/// Checks every certificate of `a` from its files at `now`; the error is the field below
/// `artifacts.` and why. Run at prepare, before anything is installed.
pub fn check_tls(a: &Artifacts, now: rustls::pki_types::UnixTime) -> Result<(), (String, String)> {
    for (j, t) in a.tls.iter().enumerate() {
        tls::check(t, now).map_err(|(f, m)| (format!("tls[{j}].{f}"), m))?;
    }
    Ok(())
}

/// An example section (documentation, and tests).
#[doc(hidden)]
pub fn sample(site: &str) -> Artifacts {
    Artifacts {
        cron: vec![CronJob {
            name: "tick".into(),
            schedule: "*/10 * * * * *".into(),
            command: "php /srv/www/cron.php".into(),
            user: "www-data".into(),
        }],
        tls: vec![],
        php: Some(PhpSpec {
            version: "8.2".into(),
            map_to: None,
            fpm_root: None,
            pool: PoolSettings {
                memory_limit: Some("256M".into()),
                max_execution_time: Some(30),
                upload_max_filesize: Some("16M".into()),
                post_max_size: None,
                disable_functions: vec!["exec".into(), "shell_exec".into()],
                max_children: None,
            },
            user: None,
            listen: None,
            listen_owner: None,
            probe: None,
        }),
        web_rules: vec![
            WebRule::Redirect(Redirect {
                from: "/old".into(),
                to: format!("https://{site}.lab.test/new"),
                status: 301,
            }),
            WebRule::Header(Header {
                name: "X-Site".into(),
                value: site.into(),
            }),
        ],
        cron_wait_s: default_cron_wait_s(),
        stage_dir: None,
        old_stage_dir: None,
        old_nginx_reload: None,
        old_php_reload: None,
        verify_served: false,
    }
}

/// What `answer_of(path)` (the new web server's answer, any status, redirects not followed)
/// shows of `a`'s rules and PHP settings, against the spec; `host` is the site's name (a
/// relative redirect comes back absolute with it), `page` the path whose answer carries the
/// headers. One line per difference, an unanswered request included; empty: as specified.
pub fn served_diffs(
    a: &Artifacts,
    host: &str,
    page: &str,
    answer_of: &dyn Fn(&str) -> Result<drivers::http::Answer, String>,
) -> Vec<String> {
    let mut out = Vec::new();
    let mut headers = Vec::new();
    for r in &a.web_rules {
        match r {
            WebRule::Redirect(x) => match answer_of(&x.from) {
                Ok(ans) => out.extend(web_rules::served_diffs(
                    std::slice::from_ref(r),
                    host,
                    Some(&ans),
                    &ans,
                )),
                Err(e) => out.push(format!("redirect {}: {e}", x.from)),
            },
            WebRule::Header(_) => headers.push(r.clone()),
        }
    }
    if !headers.is_empty() {
        match answer_of(page) {
            Ok(p) => out.extend(web_rules::served_diffs(&headers, host, None, &p)),
            Err(e) => out.push(format!("{page}: {e}")),
        }
    }
    if let Some((p, probe)) = a.php.as_ref().and_then(|p| Some((p, p.probe.as_deref()?))) {
        match answer_of(probe) {
            Ok(x) => {
                let json: serde_json::Value =
                    serde_json::from_slice(&x.body).unwrap_or(serde_json::Value::Null);
                if x.status != 200 || !json["ini"].is_object() {
                    out.push(format!(
                        "php probe {probe}: HTTP {}, not the JSON of the settings",
                        x.status
                    ));
                } else {
                    out.extend(
                        php::probe_diffs(p, &json)
                            .into_iter()
                            .map(|d| format!("php: {d}")),
                    );
                }
            }
            Err(e) => out.push(format!("php probe {probe}: {e}")),
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod test_pki;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_activate;
#[cfg(test)]
mod tests_lb_tls;
