//! Our `sql-proxy` daemon's admin API over plain HTTP on a private address ([`HttpProxy`]),
//! through [`crate::http`]: the bearer token read from a 0600 file and sent with every call
//! (never shown), one connection per call, every status other than 200 a
//! [`ProxyError::Refused`] carrying the proxy's own `error` text.
//!
//! A proxy restarting under its supervisor (systemd `Restart=always`, the lab's `scenarios
//! supervise`) refuses connections for a second or two: a refused call is tried again, with a
//! growing pause, for up to [`RESTART_WAIT`] (the route check asks for less). A refused
//! connection never delivered the request, so trying again cannot apply a pause or a switch
//! twice; any other failure is reported at once.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use super::{ProxyError, Result, Route, SqlProxy};
use crate::http::{HttpClient, Method};

/// How long a call waits for a proxy that refuses connections (restarting).
pub const RESTART_WAIT: Duration = Duration::from_secs(15);

/// How long one call may take by default (a pause returns once the database's running
/// statements are done).
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// The admin API client of one proxy.
pub struct HttpProxy {
    /// `http://{admin}`, the `Authorization: Bearer` header (secret), a timeout per call, a new
    /// connection per call (a kept one may belong to a proxy that has since restarted).
    http: HttpClient,
    /// How long a refused connection is tried again.
    restart_wait: Duration,
}

impl HttpProxy {
    /// The client of the proxy whose admin API listens on `admin`, with the token in
    /// `token_file` (mode 0600, one line). Nothing is sent yet.
    pub fn new(admin: SocketAddr, token_file: &Path) -> Result<HttpProxy> {
        Self::build(admin, token_file, None)
    }

    /// As [`HttpProxy::new`] for an admin API over TLS (`[admin] tls_cert` on the proxy):
    /// `https://{admin}`, the proxy's certificate verified against the CA certificate(s) in
    /// `ca_file` and required to name `admin`'s IP address. The token is only ever sent inside
    /// a verified TLS session.
    pub fn new_tls(admin: SocketAddr, token_file: &Path, ca_file: &Path) -> Result<HttpProxy> {
        Self::build(admin, token_file, Some(ca_file))
    }

    fn build(admin: SocketAddr, token_file: &Path, ca_file: Option<&Path>) -> Result<HttpProxy> {
        let token = crate::secret::read_secret_file("proxy.token_file", token_file)
            .map_err(|e| ProxyError::Invalid(e.to_string()))?;
        if token.chars().any(char::is_control) {
            return Err(ProxyError::Invalid(format!(
                "proxy.token_file {}: the token must be one line",
                token_file.display()
            )));
        }
        let http = match ca_file {
            None => HttpClient::for_addr(admin, TIMEOUT),
            Some(ca) => HttpClient::new(&format!("https://{admin}"), TIMEOUT)
                .and_then(|c| c.with_ca_file(ca)),
        }
        .map_err(|e| ProxyError::Invalid(format!("proxy.admin: {e}")))?
        .without_keep_alive()
        .with_secret_header("Authorization", &format!("Bearer {token}"));
        Ok(HttpProxy {
            http,
            restart_wait: RESTART_WAIT,
        })
    }

    /// The same client with another timeout per call (the route check must not hang a
    /// watchdog); a refused connection is not waited on for longer than that either.
    pub fn with_timeout(mut self, timeout: Duration) -> HttpProxy {
        self.http = self.http.with_timeout(timeout);
        self.restart_wait = self.restart_wait.min(timeout);
        self
    }

    /// The same client waiting `wait` at most for a proxy that refuses connections.
    pub fn with_restart_wait(mut self, wait: Duration) -> HttpProxy {
        self.restart_wait = wait;
        self
    }

    /// One call: the JSON answer of a 200, or why there was none.
    fn exchange(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<serde_json::Value> {
        let started = Instant::now();
        let mut pause = Duration::from_millis(100);
        let answer = loop {
            match self.http.send(method, path, body) {
                Ok(a) => break a,
                // Nothing listens: the proxy is restarting. The request was not delivered.
                Err(e) if e.is_refused() && started.elapsed() + pause <= self.restart_wait => {
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
                    return Err(ProxyError::Unreachable(format!("{e}{note}")));
                }
            }
        };
        let v: serde_json::Value =
            serde_json::from_slice(&answer.body).unwrap_or(serde_json::Value::Null);
        if answer.status != 200 {
            let message = v
                .get("error")
                .and_then(|e| e.as_str())
                .map(str::to_string)
                .unwrap_or_else(|| answer.text());
            return Err(ProxyError::Refused {
                call: format!("{method} {path}"),
                status: answer.status,
                message,
            });
        }
        Ok(v)
    }

    /// One call whose 200 answer is a `T`.
    fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<T> {
        let v = self.exchange(method, path, body)?;
        serde_json::from_value(v).map_err(|e| ProxyError::BadAnswer {
            call: format!("{method} {path}"),
            message: e.to_string(),
        })
    }
}

impl SqlProxy for HttpProxy {
    fn routes(&self) -> Result<Vec<Route>> {
        self.call(Method::Get, "/routes", None)
    }

    fn route(&self, db: &str) -> Result<Route> {
        self.call(Method::Get, &format!("/routes/{}", segment(db)), None)
    }

    fn set_side(&self, db: &str, side: &str) -> Result<Route> {
        let body = serde_json::json!({ "side": side });
        self.call(
            Method::Put,
            &format!("/routes/{}", segment(db)),
            Some(&body),
        )
    }

    fn pause(&self, db: &str) -> Result<()> {
        let body = serde_json::json!({});
        self.exchange(
            Method::Post,
            &format!("/routes/{}/pause", segment(db)),
            Some(&body),
        )
        .map(|_| ())
    }

    fn resume(&self, db: &str, side: Option<&str>) -> Result<f64> {
        let body = match side {
            Some(s) => serde_json::json!({ "side": s }),
            None => serde_json::json!({}),
        };
        let path = format!("/routes/{}/resume", segment(db));
        let v = self.exchange(Method::Post, &path, Some(&body))?;
        Ok(v.get("pause_ms").and_then(|x| x.as_f64()).unwrap_or(0.0))
    }
}

/// A database name as one URL path segment: every byte but the unreserved ones
/// (`A-Z a-z 0-9 - . _ ~`) percent-encoded, so a name holding `/`, `?`, `#`, `%`, spaces or
/// non-ASCII addresses that database and no other path.
fn segment(db: &str) -> String {
    let mut out = String::with_capacity(db.len());
    for b in db.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    // `.` and `..` alone are path steps, not names.
    match out.as_str() {
        "." => "%2E".into(),
        ".." => "%2E%2E".into(),
        _ => out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::testing::one_shot_server;

    #[test]
    fn database_names_are_one_path_segment() {
        assert_eq!(segment("shop_db-1.x~"), "shop_db-1.x~");
        assert_eq!(segment("a/b"), "a%2Fb");
        assert_eq!(segment("x?y#z%"), "x%3Fy%23z%25");
        assert_eq!(segment("é t"), "%C3%A9%20t");
        assert_eq!(segment(".."), "%2E%2E");
        assert_eq!(segment("."), "%2E");
    }
    use std::os::unix::fs::PermissionsExt;

    fn token_file(dir: &tempfile::TempDir) -> std::path::PathBuf {
        let tok = dir.path().join("t");
        std::fs::write(&tok, "tok123\n").unwrap();
        std::fs::set_permissions(&tok, std::fs::Permissions::from_mode(0o600)).unwrap();
        tok
    }

    /// The client against a scripted HTTP server on 127.0.0.1 (port 0): the token goes in the
    /// header, the mode is typed, and a refusal comes back as an error naming the call.
    #[test]
    fn sends_the_token_and_reports_refusals() {
        let (addr, server) = one_shot_server(&[
            "HTTP/1.1 200 OK\r\nContent-Length: 51\r\n\r\n{\"database\":\"d\",\"side\":\"old\",\"mode\":\"open\",\"x\":1}  ",
            "HTTP/1.1 409 Conflict\r\nContent-Length: 27\r\n\r\n{\"error\":\"d is not paused\"}",
            "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 12\r\n\r\nstore broken",
            "HTTP/1.1 200 OK\r\nContent-Length: 45\r\n\r\n{\"database\":\"d\",\"side\":\"old\",\"mode\":\"frozen\"}",
        ]);
        let dir = tempfile::tempdir().unwrap();
        let p = HttpProxy::new(addr, &token_file(&dir)).unwrap();
        let r = p.route("d").unwrap();
        assert_eq!((r.side.as_str(), r.mode), ("old", crate::proxy::Mode::Open));
        let e = p.resume("d", Some("new")).unwrap_err();
        assert_eq!(
            e,
            ProxyError::Refused {
                call: "POST /routes/d/resume".into(),
                status: 409,
                message: "d is not paused".into()
            }
        );
        assert!(!e.is_retryable());
        let e = p.pause("d").unwrap_err();
        assert!(e.to_string().contains("HTTP 503: store broken"), "{e}");
        assert!(!e.is_retryable());
        let e = p.route("d").unwrap_err();
        assert!(matches!(e, ProxyError::BadAnswer { .. }), "{e}");
        assert!(e.to_string().contains("frozen"), "{e}");
        let seen = server.join().unwrap();
        assert!(
            seen[0].starts_with("GET /routes/d HTTP/1.1\r\n"),
            "{}",
            seen[0]
        );
        assert!(
            seen[0]
                .to_ascii_lowercase()
                .contains("authorization: bearer tok123\r\n"),
            "{}",
            seen[0]
        );
        assert!(seen[1].starts_with("POST /routes/d/resume HTTP/1.1\r\n"));
        assert!(
            seen[1].ends_with("\r\n\r\n{\"side\":\"new\"}"),
            "{}",
            seen[1]
        );
        assert!(seen[2].ends_with("\r\n\r\n{}"), "{}", seen[2]);
    }

    /// A proxy restarting under its supervisor refuses connections for a moment: the call
    /// waits for it (bounded) instead of failing the site; a proxy that stays down is reported
    /// once the wait is over.
    #[test]
    fn waits_for_a_restarting_proxy_and_gives_up_on_a_dead_one() {
        let dir = tempfile::tempdir().unwrap();
        let tok = token_file(&dir);
        // Nothing listens there: a port `free_port` never hands to another test of this
        // process (whose server would then answer).
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], testkit::free_port().unwrap()));
        // Down for good: refused, reported after the wait.
        let p = HttpProxy::new(addr, &tok)
            .unwrap()
            .with_restart_wait(Duration::from_millis(400));
        let t = Instant::now();
        let e = p.route("d").unwrap_err();
        assert!(e.is_retryable() && e.to_string().contains("refused"), "{e}");
        assert!(
            t.elapsed() >= Duration::from_millis(250),
            "{:?}",
            t.elapsed()
        );
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        // Back after 600 ms: the same call succeeds.
        let server = std::thread::spawn(move || {
            use std::io::Write;
            std::thread::sleep(Duration::from_millis(600));
            let l = std::net::TcpListener::bind(addr).unwrap();
            let (mut c, _) = l.accept().unwrap();
            crate::http::testing::read_request(&mut c);
            c.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 43\r\n\r\n{\"database\":\"d\",\"side\":\"new\",\"mode\":\"open\"}",
            )
            .unwrap();
        });
        let p = HttpProxy::new(addr, &tok).unwrap();
        let r = p.route("d").unwrap();
        assert_eq!(r.side.as_str(), "new");
        server.join().unwrap();
    }

    #[test]
    fn a_bad_token_file_is_refused_before_anything_is_sent() {
        let dir = tempfile::tempdir().unwrap();
        let tok = token_file(&dir);
        std::fs::set_permissions(&tok, std::fs::Permissions::from_mode(0o644)).unwrap();
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let e = HttpProxy::new(addr, &tok).err().unwrap();
        assert!(
            matches!(e, ProxyError::Invalid(_)) && !e.is_retryable(),
            "{e}"
        );
        assert!(e.to_string().contains("chmod 600"), "{e}");
        std::fs::write(&tok, "two\nlines").unwrap();
        std::fs::set_permissions(&tok, std::fs::Permissions::from_mode(0o600)).unwrap();
        let e = HttpProxy::new(addr, &tok).err().unwrap();
        assert!(e.to_string().contains("one line"), "{e}");
    }
}
