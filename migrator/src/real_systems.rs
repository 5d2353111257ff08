//! The real outside systems behind [`crate::systems`], built from a site's spec: HAProxy's
//! runtime API (`drivers::lb`), hosted DNS (the provider the spec names, `drivers::dns`), the
//! sql-proxy admin API (`drivers::proxy::HttpProxy`), tunnel health (`tunnel::health`), local
//! copies (filers mounted: `files::transport`, databases through `db::mover`, `verify`), the
//! site's HTTP fingerprint (`drivers::http`) and the new web server's preparation
//! ([`crate::web_host`], over SSH).

use crate::db::mover::DbMover;
use crate::site_spec::{ProxySpec, SiteSpec, TunnelSpec};
use crate::systems::{
    DataMover, Dc, Direction, SysResult, SystemError, Systems, TunnelError, TunnelGate,
};
use drivers::http::{HttpClient, Method};
use drivers::lb::Haproxy;
use drivers::proxy::{HttpProxy, ProxyError, SqlProxy};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Builds the real systems of one site.
pub fn systems(spec: &SiteSpec, journal: &Path) -> SysResult<Systems> {
    Ok(Systems {
        lb_old: Arc::new(Haproxy::new(&spec.old_lb.socket)),
        lb_new: Arc::new(Haproxy::new(&spec.new_lb.socket)),
        dns: dns(spec)?,
        proxy: Arc::new(proxy(&spec.proxy).map_err(SystemError::from_proxy)?),
        tunnel: spec
            .tunnel
            .as_ref()
            .map(|t| Arc::new(TunnelHealth(t.clone())) as Arc<dyn TunnelGate>),
        data: Arc::new(LocalData::new(journal)),
    })
}

/// The site's hosted DNS: the driver of the provider its spec names
/// (`drivers::dns::DnsConfig`), key files read now; `None` when the zone is hosted elsewhere.
pub fn dns(spec: &SiteSpec) -> SysResult<Option<Arc<dyn drivers::dns::Dns>>> {
    match &spec.dns {
        Some(d) => d
            .connect()
            .map(|drv| Some(Arc::from(drv)))
            .map_err(|e| SystemError::from_dns(Dc::Old, e)),
        None => Ok(None),
    }
}

/// The admin API client of the site's SQL proxy (its token file read now).
pub fn proxy(p: &ProxySpec) -> Result<HttpProxy, ProxyError> {
    match &p.ca_file {
        Some(ca) => HttpProxy::new_tls(p.admin, &p.token_file, ca),
        None => HttpProxy::new(p.admin, &p.token_file),
    }
}

/// The admin client of `p` for the route check and repair (`timeout` per call). A proxy that
/// refuses connections is given a second at most: the check runs again every round.
pub fn route_admin(p: &ProxySpec, timeout: Duration) -> Result<Box<dyn SqlProxy>, ProxyError> {
    Ok(Box::new(
        proxy(p)?
            .with_timeout(timeout)
            .with_restart_wait(timeout.min(Duration::from_secs(1))),
    ))
}

/// The tunnel's own health verdict.
pub struct TunnelHealth(pub TunnelSpec);

impl TunnelHealth {
    fn verdict(
        &self,
        judge: fn(&tunnel::Config, &tunnel::Side) -> tunnel::Health,
    ) -> Result<String, TunnelError> {
        let cfg = tunnel::Config::load(&self.0.config)?;
        let mut side = tunnel::Side::new(self.0.side.clone());
        if let Some(ns) = &self.0.netns {
            side = side.in_netns(ns.clone());
        }
        if let Some(d) = &self.0.state_dir {
            side.state_dir = d.clone();
        }
        let h = judge(&cfg, &side);
        if h.healthy {
            Ok(h.reason)
        } else {
            Err(TunnelError::Unhealthy(h.reason))
        }
    }
}

impl TunnelGate for TunnelHealth {
    /// The gate before a freeze: 5 probes, loss judged (~0.4 s).
    fn check(&self) -> Result<String, TunnelError> {
        self.verdict(tunnel::health)
    }

    /// Inside the freeze: 2 probes 10 ms apart, each peer must answer (~20 ms).
    fn confirm(&self) -> Result<String, TunnelError> {
        self.verdict(tunnel::health_quick)
    }
}

/// Local copies: both sides' filers are mounted here, both SQL servers reachable. Databases
/// go through [`DbMover`] (followed by change capture when the old server allows it).
pub struct LocalData {
    db: DbMover,
    journal: std::path::PathBuf,
    /// Homes (old path) whose last forward pass used the change feed instead of a walk: a
    /// freeze leaves their full comparison to after the switch.
    fed: std::sync::Mutex<std::collections::BTreeSet<std::path::PathBuf>>,
    /// Homes left to compare after the switch.
    files_after_switch: std::sync::Mutex<Vec<crate::site_spec::HomeSpec>>,
}

impl LocalData {
    pub fn new(journal: &Path) -> LocalData {
        LocalData {
            db: DbMover::new(journal.to_path_buf()),
            journal: journal.to_path_buf(),
            fed: Default::default(),
            files_after_switch: Default::default(),
        }
    }

    fn urls(spec: &SiteSpec) -> SysResult<(mysql_async::Opts, mysql_async::Opts)> {
        let parse = |field: &str, p: &Path, dc| -> SysResult<mysql_async::Opts> {
            drivers::secret::read_secret_file(field, p)
                .map_err(|e| SystemError::new("mariadb", dc, e.to_string()))?
                .parse()
                .map_err(|_| {
                    SystemError::new(
                        "mariadb",
                        dc,
                        format!("{field} {}: not a mysql:// URL", p.display()),
                    )
                })
        };
        Ok((
            parse("old_db_url_file", &spec.old_db_url_file, Dc::Old)?,
            parse("new_db_url_file", &spec.new_db_url_file, Dc::New)?,
        ))
    }
}

impl DataMover for LocalData {
    fn prepare(&self, spec: &SiteSpec) -> SysResult<()> {
        for h in &spec.homes {
            if crate::files::home_url::is_remote(&h.new) {
                continue; // made by the first pass's receiver on the far host
            }
            std::fs::create_dir_all(&h.new).map_err(|e| {
                SystemError::new("files", Dc::New, format!("{}: {e}", h.new.display()))
            })?;
            if spec.new_web_host.is_some() {
                continue; // compat paths are made on the web server below
            }
            if let (Some(link), Some(target)) = (&h.compat_link, &h.compat_target) {
                match std::fs::read_link(link) {
                    Ok(t) if &t == target => {}
                    Ok(t) => {
                        return Err(SystemError::new(
                            "files",
                            Dc::New,
                            format!(
                                "compat path {} points to {}, expected {}",
                                link.display(),
                                t.display(),
                                target.display()
                            ),
                        ))
                    }
                    Err(_) => {
                        if let Some(parent) = link.parent() {
                            std::fs::create_dir_all(parent).map_err(|e| {
                                SystemError::new(
                                    "files",
                                    Dc::New,
                                    format!("{}: {e}", parent.display()),
                                )
                            })?;
                        }
                        std::os::unix::fs::symlink(target, link).map_err(|e| {
                            SystemError::new("files", Dc::New, format!("{}: {e}", link.display()))
                        })?;
                    }
                }
            }
        }
        if let Some(w) = &spec.new_web_host {
            crate::web_host::prepare(spec, w)?;
        } else if !spec.artifacts.is_empty() {
            let a = &spec.artifacts;
            crate::artifacts::install::stage_locally(&spec.site, a.stage(), a)
                .map_err(|m| SystemError::new("web-host", Dc::New, m))?;
        }
        if let (Some(t), false) = (&spec.new_lb.tls, spec.artifacts.tls.is_empty()) {
            let done = crate::artifacts::lb_tls::install(&spec.new_lb.socket, t, &spec.artifacts)
                .map_err(|m| SystemError::new("haproxy", Dc::New, m))?;
            for line in done {
                tracing::info!("{}: certificate {line}", spec.site);
            }
        }
        if !spec.databases.is_empty() {
            if let Some(note) = self
                .db
                .capture_note(&LocalData::urls(spec)?, &spec.databases)?
            {
                tracing::info!("{}: {note}", spec.site);
            }
        }
        Ok(())
    }

    fn sync_files(&self, spec: &SiteSpec, dir: Direction) -> SysResult<u64> {
        let mut bytes = 0;
        for h in &spec.homes {
            match (&h.feed, dir) {
                (Some(feed), Direction::Forward) => {
                    let mut j = crate::journal::open_journal_at(&self.journal)
                        .map_err(|e| SystemError::new("journal", Dc::New, e.to_string()))?;
                    let (b, walked) =
                        crate::files::transport::sync_home_with_feed(h, feed, &mut j, &spec.site)?;
                    let mut fed = self.fed.lock().expect("fed lock");
                    if walked {
                        fed.remove(&h.old);
                    } else {
                        fed.insert(h.old.clone());
                    }
                    bytes += b;
                }
                _ => bytes += crate::files::transport::sync_home(h, dir)?,
            }
        }
        Ok(bytes)
    }

    fn copy_dbs(
        &self,
        spec: &SiteSpec,
        dbs: &[String],
        dir: Direction,
        delta: bool,
    ) -> SysResult<u64> {
        if dbs.is_empty() {
            return Ok(0);
        }
        self.db.copy(LocalData::urls(spec)?, dbs, dir, delta)
    }

    fn tail_dbs(&self, spec: &SiteSpec, dbs: &[String]) -> SysResult<u64> {
        if dbs.is_empty() {
            return Ok(0);
        }
        self.db.tail(LocalData::urls(spec)?, dbs)
    }

    fn verify(&self, spec: &SiteSpec, dbs: &[String]) -> SysResult<Vec<String>> {
        let mut diffs = Vec::new();
        let fed = self.fed.lock().expect("fed lock").clone();
        let mut later = self.files_after_switch.lock().expect("files lock");
        later.clear();
        for h in &spec.homes {
            if fed.contains(&h.old) {
                // The freeze's pass re-stat'ed what the feed named: the full comparison waits
                // for the switch (the old home is written no more then).
                later.push(h.clone());
                continue;
            }
            diffs.extend(crate::files::transport::verify_home(h)?);
        }
        if !dbs.is_empty() {
            diffs.extend(self.db.verify(LocalData::urls(spec)?, dbs)?);
        }
        if let Some(t) = &spec.new_lb.tls {
            // The new VIP serves the site's certificates before anything is switched.
            let vip = std::net::SocketAddr::new(spec.new_vip, t.port);
            diffs.extend(crate::artifacts::lb_tls::verify_served(
                vip,
                &spec.artifacts,
                Duration::from_secs(10),
            ));
        }
        if spec.new_web_host.is_none() && !spec.artifacts.is_empty() {
            let a = &spec.artifacts;
            diffs.extend(
                crate::artifacts::install::compare_staged(&spec.site, a.stage(), a)
                    .map_err(|m| SystemError::new("web-host", Dc::New, m))?,
            );
        }
        Ok(diffs)
    }

    fn activate_artifacts(
        &self,
        spec: &SiteSpec,
        owner: crate::artifacts::fence::Side,
    ) -> SysResult<()> {
        if spec.artifacts.is_empty() {
            return Ok(());
        }
        // The side losing the site first: never both enabled past the commit point.
        let (lose, gain) = (owner.other(), owner);
        artifacts_side(spec, lose, false)?;
        artifacts_side(spec, gain, true)
    }

    fn arm_artifacts(&self, spec: &SiteSpec, side: crate::artifacts::fence::Side) -> SysResult<()> {
        if spec.artifacts.is_empty() {
            return Ok(());
        }
        artifacts_side(spec, side, true)
    }

    fn verifies_after_switch(&self, _spec: &SiteSpec) -> bool {
        self.db.has_pinned()
            || !self
                .files_after_switch
                .lock()
                .expect("files lock")
                .is_empty()
    }

    fn verify_after_switch(&self, spec: &SiteSpec) -> SysResult<Vec<String>> {
        let mut diffs = Vec::new();
        let homes = std::mem::take(&mut *self.files_after_switch.lock().expect("files lock"));
        for h in &homes {
            diffs.extend(crate::files::transport::verify_home(h)?);
        }
        if !spec.databases.is_empty() {
            diffs.extend(self.db.verify_after_switch(&LocalData::urls(spec)?.0)?);
        }
        Ok(diffs)
    }

    fn served_artifacts(&self, spec: &SiteSpec) -> SysResult<Vec<String>> {
        let (host, page) = served_host_page(spec)?;
        let client = HttpClient::for_addr(spec.new_web, Duration::from_secs(10))
            .map_err(|e| SystemError::new("http", Dc::New, e.to_string()))?
            .without_keep_alive();
        let ask = |path: &str| {
            client
                .request(Method::Get, path)
                .header("Host", &host)
                .send()
                .map_err(|e| e.to_string())
        };
        let diffs = crate::artifacts::served_diffs(&spec.artifacts, &host, &page, &ask);
        Ok(diffs
            .into_iter()
            .map(|d| format!("served by {} ({host}): {d}", spec.new_web))
            .collect())
    }

    fn fingerprint(&self, spec: &SiteSpec) -> SysResult<Option<String>> {
        let Some(f) = &spec.fingerprint else {
            return Ok(None);
        };
        let fail = |e: drivers::http::HttpError| {
            SystemError::new("http", Dc::Old, format!("GET {}{}: {e}", f.host, f.path))
        };
        let answer = HttpClient::for_addr(f.addr, Duration::from_secs(10))
            .map_err(fail)?
            .request(Method::Get, &f.path)
            .header("Host", &f.host)
            .send()
            .map_err(fail)?;
        Ok(Some(format!(
            "{}:{}",
            answer.status,
            blake3::hash(&answer.body).to_hex()
        )))
    }
}

/// The host name the served artifacts are asked for (the web host's `server_name`, else the
/// fingerprint's host) and the page whose headers are checked (the fingerprint's path, else `/`).
pub(crate) fn served_host_page(spec: &SiteSpec) -> SysResult<(String, String)> {
    let host = spec
        .new_web_host
        .as_ref()
        .map(|w| w.server_name.clone())
        .or_else(|| spec.fingerprint.as_ref().map(|f| f.host.clone()))
        .ok_or_else(|| {
            SystemError::new(
                "http",
                Dc::New,
                format!(
                    "{}: artifacts.verify_served needs new_web_host.server_name or \
                     fingerprint.host (the name to ask for)",
                    spec.site
                ),
            )
        })?;
    let page = spec
        .fingerprint
        .as_ref()
        .map(|f| f.path.clone())
        .unwrap_or_else(|| "/".into());
    Ok((host, page))
}

/// Enables (or disables) the site's artifacts on one side, with that side's reloads: the old
/// side's locally at `artifacts.old_stage_dir` (none: nothing to do), the new side's over SSH
/// on its web host (or locally at the stage without one).
fn artifacts_side(
    spec: &SiteSpec,
    side: crate::artifacts::fence::Side,
    enable: bool,
) -> SysResult<()> {
    use crate::artifacts::{activate, fence::Side};
    let a = &spec.artifacts;
    match side {
        Side::Old => {
            let reloads = activate::reloads(
                a,
                a.old_nginx_reload.as_deref(),
                a.old_php_reload.as_deref(),
            );
            match &a.old_stage_dir {
                Some(stage) => {
                    activate::apply_locally_with_reloads(&spec.site, stage, enable, &reloads)
                        .map_err(|m| SystemError::new("web-host", Dc::Old, m))
                }
                None => Ok(()),
            }
        }
        Side::New => match &spec.new_web_host {
            Some(w) => crate::web_host::activate_artifacts(spec, w, enable),
            None => activate::apply_locally(&spec.site, a.stage(), enable)
                .map_err(|m| SystemError::new("web-host", Dc::New, m)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fingerprint is the status and a digest of the body the site answers.
    #[test]
    fn fingerprint_is_status_and_body_digest() {
        let web = testkit::TinyHttp::start("hello from the site").unwrap();
        let mut spec = crate::site_spec::sample("shop");
        spec.fingerprint = Some(crate::site_spec::FingerprintSpec {
            addr: web.addr,
            host: "site.example".into(),
            path: "/?op=read".into(),
        });
        let data = LocalData::new(Path::new("/nonexistent"));
        let expected = format!("200:{}", blake3::hash(b"hello from the site").to_hex());
        assert_eq!(data.fingerprint(&spec).unwrap(), Some(expected));
        spec.fingerprint = None;
        assert_eq!(data.fingerprint(&spec).unwrap(), None);
    }
}
