//! The real outside systems behind [`crate::systems`]: HAProxy's runtime API (`drivers`),
//! hosted DNS (the provider the spec names, `drivers::dns`), the sql-proxy admin API (a small HTTP/1.1 client,
//! bearer token from a 0600 file), tunnel health (`tunnel::health`), local copies (filers
//! mounted: `files::sync`, `db::copy`, `verify`) and the new web server's preparation
//! ([`crate::web_host`], over SSH).

use crate::db::mover::DbMover;

use crate::route_check::{AdminError, ProxyRoute, RouteAdmin};
use crate::site_spec::{ProxySpec, SiteSpec, TunnelSpec};
use crate::systems::{
    DataMover, Dc, Direction, ProxyControl, Route, SysResult, SystemError, Systems, TunnelGate,
};
use drivers::lb::Haproxy;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Reads a secret file that must be readable by its owner only.
pub fn read_secret(path: &Path, system: &'static str, dc: Dc) -> SysResult<String> {
    let md = std::fs::metadata(path)
        .map_err(|e| SystemError::new(system, dc, format!("{}: {e}", path.display())))?;
    if md.permissions().mode() & 0o077 != 0 {
        return Err(SystemError::new(
            system,
            dc,
            format!(
                "{} is readable by group or others (mode {:o}): chmod 600 it",
                path.display(),
                md.permissions().mode() & 0o777
            ),
        ));
    }
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|e| SystemError::new(system, dc, format!("{}: {e}", path.display())))
}

/// Builds the real systems of one site.
pub fn systems(spec: &SiteSpec, journal: &Path) -> SysResult<Systems> {
    Ok(Systems {
        lb_old: Arc::new(Haproxy::new(&spec.old_lb.socket)),
        lb_new: Arc::new(Haproxy::new(&spec.new_lb.socket)),
        dns: dns(spec)?,
        proxy: Arc::new(HttpProxy::new(&spec.proxy)?),
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

/// A minimal HTTP/1.1 exchange (`Connection: close`) for private admin APIs and probes.
/// Returns the status code and body.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
    timeout: Duration,
) -> std::io::Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() || method == "POST" || method == "PUT" {
        req.push_str("Content-Type: application/json\r\n");
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    parse_response(&raw)
}

fn bad(msg: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.to_string())
}

fn parse_response(raw: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("HTTP answer without end of headers"))?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| bad("HTTP headers not UTF-8"))?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("HTTP status line"))?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let mut body = raw[end + 4..].to_vec();
    if chunked {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let nl = rest
                .windows(2)
                .position(|w| w == b"\r\n")
                .ok_or_else(|| bad("chunk size line"))?;
            let size_txt = std::str::from_utf8(&rest[..nl]).map_err(|_| bad("chunk size"))?;
            let size = usize::from_str_radix(size_txt.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| bad("chunk size"))?;
            rest = &rest[nl + 2..];
            if size == 0 {
                break;
            }
            if rest.len() < size {
                return Err(bad("truncated chunk"));
            }
            out.extend_from_slice(&rest[..size]);
            rest = rest.get(size + 2..).unwrap_or(&[]);
        }
        body = out;
    }
    Ok((status, body))
}

/// The sql-proxy admin API.
/// How long the proxy admin client waits for a proxy that refuses connections (restarting).
pub const RESTART_WAIT: Duration = Duration::from_secs(15);

pub struct HttpProxy {
    addr: SocketAddr,
    /// `Bearer <token>`; never logged.
    auth: String,
    /// Per connect, read and write.
    timeout: Duration,
    /// How long a refused connection is tried again: a proxy restarting under its supervisor
    /// (systemd `Restart=always`) answers again within a second or two, and a refused
    /// connection never delivered the request, so trying again cannot apply it twice.
    restart_wait: Duration,
}

impl HttpProxy {
    pub fn new(p: &ProxySpec) -> SysResult<HttpProxy> {
        let token = read_secret(&p.token_file, "sql-proxy", Dc::Old)?;
        Ok(HttpProxy {
            addr: p.admin,
            auth: format!("Bearer {token}"),
            timeout: Duration::from_secs(60),
            restart_wait: RESTART_WAIT,
        })
    }

    /// The same client with another timeout (the route check must not hang a watchdog); a
    /// refused connection is not waited on for longer than that either.
    pub fn with_timeout(mut self, timeout: Duration) -> HttpProxy {
        self.timeout = timeout;
        self.restart_wait = self.restart_wait.min(timeout);
        self
    }

    /// The same client waiting `wait` at most for a proxy that refuses connections.
    pub fn with_restart_wait(mut self, wait: Duration) -> HttpProxy {
        self.restart_wait = wait;
        self
    }

    /// One call: the status and the JSON answer, or why there was none.
    fn exchange(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<serde_json::Value, AdminError> {
        let call = format!("{method} {path}");
        let started = std::time::Instant::now();
        let mut pause = Duration::from_millis(100);
        let (status, body) = loop {
            match http(
                self.addr,
                method,
                path,
                &[("Authorization", &self.auth)],
                body,
                self.timeout,
            ) {
                Ok(answer) => break answer,
                // Nothing listens: the proxy is restarting. The request was not delivered.
                Err(e)
                    if e.kind() == std::io::ErrorKind::ConnectionRefused
                        && started.elapsed() + pause <= self.restart_wait =>
                {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                Err(e) => {
                    let waited = started.elapsed();
                    let note = if waited >= Duration::from_millis(100) {
                        format!(" (refused for {} ms)", waited.as_millis())
                    } else {
                        String::new()
                    };
                    return Err(AdminError::Unreachable(format!(
                        "{call} at {}: {e}{note}",
                        self.addr
                    )));
                }
            }
        };
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        if status != 200 {
            let message = v
                .get("error")
                .and_then(|e| e.as_str())
                .map(str::to_string)
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            return Err(AdminError::Refused {
                call,
                status,
                message,
            });
        }
        Ok(v)
    }

    fn call(&self, method: &str, path: &str, body: Option<&str>) -> SysResult<serde_json::Value> {
        self.exchange(method, path, body).map_err(|e| SystemError {
            system: "sql-proxy",
            dc: Dc::Old,
            retryable: matches!(e, AdminError::Unreachable(_)),
            message: e.to_string(),
        })
    }

    fn route_from(call: String, v: serde_json::Value) -> Result<ProxyRoute, AdminError> {
        serde_json::from_value(v).map_err(|e| AdminError::BadAnswer {
            call,
            message: e.to_string(),
        })
    }
}

/// The admin client of `p` for the route check and repair (`timeout` per call). A proxy that
/// refuses connections is given a second at most: the check runs again every round.
pub fn route_admin(p: &ProxySpec, timeout: Duration) -> Result<Box<dyn RouteAdmin>, AdminError> {
    let h = HttpProxy::new(p).map_err(|e| AdminError::Unreachable(e.to_string()))?;
    Ok(Box::new(
        h.with_timeout(timeout)
            .with_restart_wait(timeout.min(Duration::from_secs(1))),
    ))
}

impl RouteAdmin for HttpProxy {
    fn list(&self) -> Result<Vec<ProxyRoute>, AdminError> {
        let v = self.exchange("GET", "/routes", None)?;
        serde_json::from_value(v).map_err(|e| AdminError::BadAnswer {
            call: "GET /routes".into(),
            message: e.to_string(),
        })
    }
    fn get(&self, db: &str) -> Result<ProxyRoute, AdminError> {
        let path = format!("/routes/{db}");
        let v = self.exchange("GET", &path, None)?;
        HttpProxy::route_from(format!("GET {path}"), v)
    }
    fn put_side(&self, db: &str, side: &str) -> Result<ProxyRoute, AdminError> {
        let path = format!("/routes/{db}");
        let body = serde_json::json!({ "side": side }).to_string();
        let v = self.exchange("PUT", &path, Some(&body))?;
        HttpProxy::route_from(format!("PUT {path}"), v)
    }
}

fn field(v: &serde_json::Value, k: &str) -> String {
    v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string()
}

impl ProxyControl for HttpProxy {
    fn route(&self, db: &str) -> SysResult<Route> {
        let v = self.call("GET", &format!("/routes/{db}"), None)?;
        let mode =
            serde_json::from_value(v.get("mode").cloned().unwrap_or_default()).map_err(|e| {
                SystemError::new(
                    "sql-proxy",
                    Dc::Old,
                    format!("GET /routes/{db}: unknown mode in {v}: {e}"),
                )
            })?;
        Ok(Route {
            side: field(&v, "side"),
            mode,
        })
    }
    fn pause(&self, db: &str) -> SysResult<()> {
        self.call("POST", &format!("/routes/{db}/pause"), Some("{}"))
            .map(|_| ())
    }
    fn resume(&self, db: &str, side: Option<&str>) -> SysResult<f64> {
        let body = match side {
            Some(s) => serde_json::json!({ "side": s }).to_string(),
            None => "{}".to_string(),
        };
        let v = self.call("POST", &format!("/routes/{db}/resume"), Some(&body))?;
        Ok(v.get("pause_ms").and_then(|x| x.as_f64()).unwrap_or(0.0))
    }
}

/// The tunnel's own health verdict.
pub struct TunnelHealth(pub TunnelSpec);

impl TunnelHealth {
    fn verdict(
        &self,
        judge: fn(&tunnel::Config, &tunnel::Side) -> tunnel::Health,
    ) -> Result<String, String> {
        let cfg = tunnel::Config::load(&self.0.config).map_err(|e| e.to_string())?;
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
            Err(format!("tunnel unhealthy: {}", h.reason))
        }
    }
}

impl TunnelGate for TunnelHealth {
    /// The gate before a freeze: 5 probes, loss judged (~0.4 s).
    fn check(&self) -> Result<String, String> {
        self.verdict(tunnel::health)
    }

    /// Inside the freeze: 2 probes 10 ms apart, each peer must answer (~20 ms).
    fn confirm(&self) -> Result<String, String> {
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
        let parse = |p: &Path, dc| -> SysResult<mysql_async::Opts> {
            read_secret(p, "mariadb", dc)?.parse().map_err(|_| {
                SystemError::new(
                    "mariadb",
                    dc,
                    format!("{}: not a mysql:// URL", p.display()),
                )
            })
        };
        Ok((
            parse(&spec.old_db_url_file, Dc::Old)?,
            parse(&spec.new_db_url_file, Dc::New)?,
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
        }
        if !spec.databases.is_empty() {
            if let Some(note) = self
                .db
                .capture_note(&LocalData::urls(spec)?, &spec.databases)?
            {
                eprintln!("{}: {note}", spec.site);
            }
        }
        Ok(())
    }

    fn sync_files(&self, spec: &SiteSpec, dir: Direction) -> SysResult<u64> {
        let mut bytes = 0;
        for h in &spec.homes {
            match (&h.feed, dir) {
                (Some(feed), Direction::Forward) => {
                    let mut j = crate::journal::SqliteJournal::open(&self.journal)
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
        Ok(diffs)
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

    fn fingerprint(&self, spec: &SiteSpec) -> SysResult<Option<String>> {
        let Some(f) = &spec.fingerprint else {
            return Ok(None);
        };
        let (status, body) = http(
            f.addr,
            "GET",
            &f.path,
            &[("Host", f.host.as_str())],
            None,
            Duration::from_secs(10),
        )
        .map_err(|e| SystemError::new("http", Dc::Old, format!("GET {}{}: {e}", f.host, f.path)))?;
        Ok(Some(format!("{status}:{}", blake3::hash(&body).to_hex())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked_answers() {
        let (s, b) = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").unwrap();
        assert_eq!((s, b.as_slice()), (200, &b"ok"[..]));
        let raw = b"HTTP/1.1 409 Conflict\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        let (s, b) = parse_response(raw).unwrap();
        assert_eq!((s, b.as_slice()), (409, &b"abcde"[..]));
        assert!(parse_response(b"garbage").is_err());
    }

    #[test]
    fn secret_file_must_be_private() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("token");
        std::fs::write(&p, "s3cret\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_secret(&p, "sql-proxy", Dc::Old).unwrap_err();
        assert!(e.message.contains("chmod 600"), "{e}");
        assert!(!e.message.contains("s3cret"));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_secret(&p, "sql-proxy", Dc::Old).unwrap(), "s3cret");
    }

    /// The admin client against a one-shot HTTP server on 127.0.0.1 (port 0): the token goes in
    /// the header and a refusal comes back as an error naming the call.
    #[test]
    fn proxy_client_sends_token_and_reports_refusals() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for answer in [
                "HTTP/1.1 200 OK\r\nContent-Length: 53\r\n\r\n{\"database\":\"d\",\"side\":\"old\",\"mode\":\"open\",\"x\":1}  ",
                "HTTP/1.1 409 Conflict\r\nContent-Length: 25\r\n\r\n{\"error\":\"d is not paused\"}",
            ] {
                let (mut c, _) = l.accept().unwrap();
                let mut buf = [0u8; 4096];
                let n = c.read(&mut buf).unwrap();
                seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
                c.write_all(answer.as_bytes()).unwrap();
            }
            seen
        });
        let dir = tempfile::tempdir().unwrap();
        let tok = dir.path().join("t");
        std::fs::write(&tok, "tok123").unwrap();
        std::fs::set_permissions(&tok, std::fs::Permissions::from_mode(0o600)).unwrap();
        let p = HttpProxy::new(&ProxySpec {
            admin: addr,
            token_file: tok,
            old_side: "old".into(),
            new_side: "new".into(),
        })
        .unwrap();
        let r = p.route("d").unwrap();
        assert_eq!(
            (r.side.as_str(), r.mode),
            ("old", crate::systems::Mode::Open)
        );
        let e = p.resume("d", Some("new")).unwrap_err();
        assert!(
            e.message.contains("409") && e.message.contains("not paused"),
            "{e}"
        );
        let seen = server.join().unwrap();
        assert!(seen[0].starts_with("GET /routes/d HTTP/1.1"));
        assert!(seen[0].contains("Authorization: Bearer tok123"));
        assert!(seen[1].contains("{\"side\":\"new\"}"));
    }

    /// A proxy restarting under its supervisor refuses connections for a moment: the call
    /// waits for it (bounded) instead of failing the site; a proxy that stays down is reported
    /// once the wait is over.
    #[test]
    fn proxy_client_waits_for_a_restarting_proxy_and_gives_up_on_a_dead_one() {
        let dir = tempfile::tempdir().unwrap();
        let tok = dir.path().join("t");
        std::fs::write(&tok, "tok123").unwrap();
        std::fs::set_permissions(&tok, std::fs::Permissions::from_mode(0o600)).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let spec = ProxySpec {
            admin: port,
            token_file: tok,
            old_side: "old".into(),
            new_side: "new".into(),
        };
        // Down for good: refused, reported after the wait.
        let p = HttpProxy::new(&spec)
            .unwrap()
            .with_restart_wait(Duration::from_millis(400));
        let t = std::time::Instant::now();
        let e = p.route("d").unwrap_err();
        assert!(e.retryable && e.message.contains("refused"), "{e}");
        assert!(
            t.elapsed() >= Duration::from_millis(250),
            "{:?}",
            t.elapsed()
        );
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        // Back after 600 ms: the same call succeeds.
        let server = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(600));
            let l = std::net::TcpListener::bind(port).unwrap();
            let (mut c, _) = l.accept().unwrap();
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf).unwrap();
            c.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 43\r\n\r\n{\"database\":\"d\",\"side\":\"new\",\"mode\":\"open\"}",
            )
            .unwrap();
        });
        let p = HttpProxy::new(&spec).unwrap();
        let r = p.route("d").unwrap();
        assert_eq!(r.side.as_str(), "new");
        server.join().unwrap();
    }
}
