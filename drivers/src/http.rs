//! The one HTTP client for outside systems' APIs and the workspace's probes and test clients
//! (PowerDNS, the sql-proxy admin API, the site fingerprint, the lab's probes and traffic):
//! `ureq` 3, blocking, rustls for `https`.
//!
//! What the wrapper adds to `ureq`: a base URL checked once, a timeout on every exchange, JSON
//! in and out, secret headers (an API key) that never appear in `Debug` output or in errors, no
//! environment proxy and no redirects (a private admin API answers directly; following a
//! redirect would hand the key to whoever it points at), and [`HttpError`] saying what was
//! asked, what came back (status and the start of the body), whether trying again may help and
//! whether the request was delivered at all ([`HttpError::is_refused`]).
//!
//! Two ways to ask: [`HttpClient::send`] / [`HttpClient::send_ok`] / [`HttpClient::json`] for a
//! JSON API, and [`HttpClient::request`] for anything else (a `Host` header naming a virtual
//! host, a text body, no `Accept`). Connections are kept alive between requests unless the
//! client is made [`HttpClient::without_keep_alive`] (a load generator that must see every
//! DNS and load-balancer change, or a client of a daemon that restarts under it).

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// How much of an error answer's body an error carries.
const ERROR_BODY_LIMIT: usize = 512;

/// An HTTP method the wrapper sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What went wrong with one exchange. Every variant names the method and URL; none carries a
/// request header, so secrets cannot leak through it.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The base URL or a path is not usable (found before anything was sent).
    #[error("invalid URL {url:?}: {message}")]
    Url { url: String, message: String },
    /// No answer: connection refused, timeout, reset, TLS failure.
    #[error("{method} {url}: no answer: {message}")]
    Transport {
        method: Method,
        url: String,
        message: String,
        /// The connection was refused (nothing listens there): the request was not delivered,
        /// so sending it again cannot apply it twice.
        refused: bool,
    },
    /// The server answered with a status outside 2xx.
    #[error("{method} {url}: HTTP {status}: {body}")]
    Status {
        method: Method,
        url: String,
        status: u16,
        /// The start of the answer's body (the server's own error text).
        body: String,
    },
    /// A certificate authority file that cannot be used (found before anything was sent).
    #[error("certificate authority {path}: {message}")]
    Ca { path: String, message: String },
    /// A 2xx answer whose body is not the JSON expected.
    #[error("{method} {url}: answer is not the expected JSON: {message}")]
    Decode {
        method: Method,
        url: String,
        message: String,
    },
}

impl HttpError {
    /// Whether the same request may succeed later: no answer, 5xx or 429. A 4xx is a refusal
    /// that asking again will not change.
    pub fn is_retryable(&self) -> bool {
        match self {
            HttpError::Transport { .. } => true,
            HttpError::Status { status, .. } => *status >= 500 || *status == 429,
            HttpError::Url { .. } | HttpError::Ca { .. } | HttpError::Decode { .. } => false,
        }
    }

    /// Whether the connection was refused, so the request never reached a server (a daemon
    /// restarting, or not started yet).
    pub fn is_refused(&self) -> bool {
        matches!(self, HttpError::Transport { refused: true, .. })
    }

    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            HttpError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A header value that must not be shown (API key, token).
#[derive(Clone)]
struct Header {
    name: String,
    value: String,
    secret: bool,
}

impl fmt::Debug for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = if self.secret {
            "<redacted>"
        } else {
            &self.value
        };
        write!(f, "{}: {value}", self.name)
    }
}

/// One answer, any status.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
    /// The answer's headers (names lower-case, values as sent; one entry per line).
    pub headers: Vec<(String, String)>,
}

impl Answer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A client for one HTTP API: a base URL (`http://127.0.0.1:8081`), headers sent with every
/// request, a timeout per exchange. Cheap to clone (the connection pool is shared).
#[derive(Clone)]
pub struct HttpClient {
    agent: ureq::Agent,
    base: String,
    headers: Vec<Header>,
    timeout: Duration,
    /// Whether idle connections are kept for the next request (the agent's pool).
    keep_alive: bool,
    /// `https` servers are verified against these roots only (a private CA), instead of the
    /// public web's (see [`HttpClient::with_ca_file`]).
    roots: Option<Roots>,
}

type Roots = std::sync::Arc<Vec<ureq::tls::Certificate<'static>>>;

impl fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClient")
            .field("base", &self.base)
            .field("headers", &self.headers)
            .field("timeout", &self.timeout)
            .field("keep_alive", &self.keep_alive)
            .finish()
    }
}

impl HttpClient {
    /// A client for the API at `base` (`http://host:port` or `https://host:port`, an optional
    /// path prefix, no query). Each exchange (connect, send, answer) must finish within
    /// `timeout`.
    pub fn new(base: &str, timeout: Duration) -> Result<Self, HttpError> {
        let bad = |message: &str| HttpError::Url {
            url: base.to_string(),
            message: message.to_string(),
        };
        let rest = base
            .strip_prefix("http://")
            .or_else(|| base.strip_prefix("https://"))
            .ok_or_else(|| bad("must start with http:// or https://"))?;
        let host = rest.split('/').next().unwrap_or("");
        if host.is_empty() {
            return Err(bad("no host"));
        }
        if base.contains(['?', '#', ' ']) || host.contains('@') {
            return Err(bad(
                "a base URL has no query, fragment, spaces or credentials",
            ));
        }
        base.parse::<ureq::http::Uri>()
            .map_err(|e| bad(&e.to_string()))?;
        Ok(Self {
            agent: agent(timeout, true, None),
            base: base.trim_end_matches('/').to_string(),
            headers: Vec::new(),
            timeout,
            keep_alive: true,
            roots: None,
        })
    }

    /// The same client trusting only the certificate authorities in the PEM file `path` for
    /// `https` (a private CA: the server's certificate must chain to one of them and name the
    /// host of the base URL, an IP address included). Read now; an unreadable file or one
    /// without a certificate is an error naming it.
    pub fn with_ca_file(mut self, path: &std::path::Path) -> Result<Self, HttpError> {
        let bad = |message: String| HttpError::Ca {
            path: path.display().to_string(),
            message,
        };
        let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        let mut certs = Vec::new();
        for item in ureq::tls::parse_pem(&pem) {
            if let ureq::tls::PemItem::Certificate(c) = item.map_err(|e| bad(e.to_string()))? {
                certs.push(c);
            }
        }
        if certs.is_empty() {
            return Err(bad("no PEM certificate in it".into()));
        }
        self.roots = Some(std::sync::Arc::new(certs));
        self.agent = agent(self.timeout, self.keep_alive, self.roots.clone());
        Ok(self)
    }

    /// A client for the plain-HTTP server at `addr` (`http://addr`).
    pub fn for_addr(addr: SocketAddr, timeout: Duration) -> Result<Self, HttpError> {
        Self::new(&format!("http://{addr}"), timeout)
    }

    /// The same client with another timeout per exchange.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self.agent = agent(timeout, self.keep_alive, self.roots.clone());
        self
    }

    /// The same client opening a new connection for every request (none is kept idle): each
    /// request resolves the name again and connects again, as a new visitor would.
    pub fn without_keep_alive(mut self) -> Self {
        self.keep_alive = false;
        self.agent = agent(self.timeout, false, self.roots.clone());
        self
    }

    /// Adds a header sent with every request.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push(Header {
            name: name.to_string(),
            value: value.to_string(),
            secret: false,
        });
        self
    }

    /// Adds a header whose value is a secret: sent with every request, shown nowhere.
    pub fn with_secret_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push(Header {
            name: name.to_string(),
            value: value.to_string(),
            secret: true,
        });
        self
    }

    /// The base URL, as given (without a trailing `/`).
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The full URL of `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Starts a request to `path` (which starts with `/`, and may carry a query): only the
    /// client's own headers so far, no body.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        RequestBuilder {
            client: self.clone(),
            method,
            path: path.to_string(),
            headers: Vec::new(),
            body: None,
        }
    }

    /// Sends one request to a JSON API and returns the answer whatever its status. `body` is
    /// sent as JSON.
    pub fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Answer, HttpError> {
        self.json_request(method, path, body).send()
    }

    /// Sends one request to a JSON API; a status outside 2xx is an [`HttpError::Status`]
    /// carrying the start of the body.
    pub fn send_ok(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Answer, HttpError> {
        self.json_request(method, path, body).send_ok()
    }

    fn json_request(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> RequestBuilder {
        let r = self
            .request(method, path)
            .header("Accept", "application/json");
        match body {
            Some(v) => r.json_body(v),
            None => r,
        }
    }

    /// Sends `body` (if any) as JSON and decodes a 2xx answer's JSON as `T`.
    pub fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, HttpError> {
        let value = body
            .map(serde_json::to_value)
            .transpose()
            .map_err(|e| HttpError::Decode {
                method,
                url: self.url(path),
                message: format!("request body: {e}"),
            })?;
        let a = self.send_ok(method, path, value.as_ref())?;
        serde_json::from_slice(&a.body).map_err(|e| HttpError::Decode {
            method,
            url: self.url(path),
            message: e.to_string(),
        })
    }
}

/// The `ureq` agent every client uses: `timeout` on each whole exchange, any status returned as
/// an answer, no redirect followed, no environment proxy, rustls with the aws-lc-rs provider.
fn agent(timeout: Duration, keep_alive: bool, roots: Option<Roots>) -> ureq::Agent {
    let mut tls = ureq::tls::TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::Rustls)
        .unversioned_rustls_crypto_provider(std::sync::Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ));
    if let Some(r) = roots {
        tls = tls.root_certs(ureq::tls::RootCerts::Specific(r));
    }
    let mut config = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .max_redirects(0)
        .max_redirects_will_error(false)
        .proxy(None)
        .user_agent(concat!("hostmove-drivers/", env!("CARGO_PKG_VERSION")))
        .tls_config(tls.build());
    if !keep_alive {
        config = config
            .max_idle_connections(0)
            .max_idle_connections_per_host(0);
    }
    config.build().into()
}

/// One request being put together by [`HttpClient::request`]: extra headers and a body, then
/// [`send`](RequestBuilder::send) (the answer, any status) or
/// [`send_ok`](RequestBuilder::send_ok) (a 2xx answer, or an error with the body's start).
/// Header values are never shown, neither here nor in errors.
#[must_use = "a request does nothing until it is sent"]
pub struct RequestBuilder {
    /// A clone of the client (cheap: the connection pool is shared), so a request can be kept
    /// and sent later.
    client: HttpClient,
    method: Method,
    path: String,
    headers: Vec<(String, String)>,
    /// Content type and bytes.
    body: Option<(String, Vec<u8>)>,
}

impl RequestBuilder {
    /// Adds a header to this request only (`Host` to name a virtual host on an address, a
    /// token, a cookie).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Sends `body` with `Content-Type: content_type`.
    pub fn body(mut self, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some((content_type.to_string(), body.into()));
        self
    }

    /// Sends `v` as the JSON body.
    pub fn json_body(self, v: &serde_json::Value) -> Self {
        self.body("application/json", v.to_string())
    }

    /// Sends the request and returns the answer whatever its status.
    pub fn send(self) -> Result<Answer, HttpError> {
        let method = self.method;
        let url = self.client.url(&self.path);
        let mut req = ureq::http::Request::builder()
            .method(method.as_str())
            .uri(&url);
        for h in &self.client.headers {
            req = req.header(h.name.as_str(), h.value.as_str());
        }
        for (name, value) in &self.headers {
            req = req.header(name.as_str(), value.as_str());
        }
        let payload = match self.body {
            Some((content_type, bytes)) => {
                req = req.header("Content-Type", content_type);
                bytes
            }
            None => Vec::new(),
        };
        let req = req.body(payload).map_err(|e| HttpError::Url {
            url: url.clone(),
            // The http crate names the bad part, never a header's value.
            message: e.to_string(),
        })?;
        let transport = |e: ureq::Error| HttpError::Transport {
            method,
            url: url.clone(),
            refused: matches!(&e, ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused),
            message: e.to_string(),
        };
        let mut resp = self.client.agent.run(req).map_err(transport)?;
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(n, v)| {
                let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
                (n.as_str().to_string(), v)
            })
            .collect();
        let body = resp
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_vec()
            .map_err(transport)?;
        Ok(Answer {
            status,
            body,
            headers,
        })
    }

    /// Sends the request; a status outside 2xx is an [`HttpError::Status`] carrying the start
    /// of the body.
    pub fn send_ok(self) -> Result<Answer, HttpError> {
        let method = self.method;
        let url = self.client.url(&self.path);
        let a = self.send()?;
        if (200..300).contains(&a.status) {
            return Ok(a);
        }
        let mut text = a.text();
        if text.len() > ERROR_BODY_LIMIT {
            let mut cut = ERROR_BODY_LIMIT;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push('…');
        }
        Err(HttpError::Status {
            method,
            url,
            status: a.status,
            body: text.trim().to_string(),
        })
    }
}

/// A scripted HTTP server for unit tests of the clients built on this module. Raw sockets on
/// purpose: these tests are about the bytes on the wire (what a client sends, how it reads a
/// chunked or short answer).
#[cfg(test)]
pub(crate) mod testing {
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpListener};

    /// Reads one whole request (head, then `Content-Length` bytes of body).
    pub(crate) fn read_request(c: &mut impl Read) -> String {
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = c.read(&mut buf).unwrap();
            assert!(n > 0, "the client closed before the end of its request");
            raw.extend_from_slice(&buf[..n]);
            let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
                continue;
            };
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            if raw.len() >= end + 4 + len {
                return String::from_utf8_lossy(&raw).into_owned();
            }
        }
    }

    /// Binds 127.0.0.1:0 and answers each connection with the next of `answers` (raw HTTP);
    /// the thread returns the requests it read.
    pub(crate) fn one_shot_server(
        answers: &'static [&'static str],
    ) -> (SocketAddr, std::thread::JoinHandle<Vec<String>>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for answer in answers {
                let (mut c, _) = l.accept().unwrap();
                seen.push(read_request(&mut c));
                c.write_all(answer.as_bytes()).unwrap();
            }
            seen
        });
        (addr, server)
    }
}

#[cfg(test)]
mod tests {
    use super::testing::one_shot_server;
    use super::*;

    #[test]
    fn base_urls_are_checked_and_secrets_hidden() {
        let t = Duration::from_secs(1);
        for bad in [
            "127.0.0.1:8081",
            "ftp://x",
            "http://",
            "http://u:p@h/",
            "http://h/?q",
        ] {
            let e = HttpClient::new(bad, t).unwrap_err();
            assert!(matches!(e, HttpError::Url { .. }), "{bad}: {e}");
        }
        let c = HttpClient::new("http://127.0.0.1:8081/", t)
            .unwrap()
            .with_secret_header("X-API-Key", "hunter2-secret");
        assert_eq!(c.url("/api/v1"), "http://127.0.0.1:8081/api/v1");
        let dbg = format!("{c:?}");
        assert!(
            !dbg.contains("hunter2") && dbg.contains("X-API-Key"),
            "{dbg}"
        );
    }

    #[test]
    fn a_refused_connection_is_a_retryable_transport_error() {
        // Nothing listens there: `free_port` binds then drops, and never hands the port to
        // another test of this process (whose server would then answer).
        let port = testkit::free_port().unwrap();
        let c = HttpClient::new(&format!("http://127.0.0.1:{port}"), Duration::from_secs(2))
            .unwrap()
            .with_secret_header("X-API-Key", "hunter2-secret");
        let e = c.send(Method::Get, "/x", None).unwrap_err();
        assert!(e.is_retryable() && e.is_refused(), "{e}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let post = c
            .with_timeout(Duration::from_millis(300))
            .request(Method::Post, "/x")
            .send();
        assert!(post.is_err_and(|e| e.is_refused()));
    }

    #[test]
    fn requests_carry_their_host_headers_and_body_and_any_answer_is_read() {
        let (addr, server) = one_shot_server(&[
            "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\nConnection: close\r\n\r\ndown",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
            "HTTP/1.1 409 Conflict\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot now  ",
        ]);
        let c = HttpClient::for_addr(addr, Duration::from_secs(5))
            .unwrap()
            .without_keep_alive()
            .with_secret_header("Authorization", "Bearer tok123");
        let a = c
            .request(Method::Get, "/healthz")
            .header("Host", "site.example")
            .send()
            .unwrap();
        assert_eq!((a.status, a.text().as_str()), (503, "down"));
        let a = c
            .request(Method::Post, "/?op=write")
            .body("text/plain", "hello")
            .send_ok()
            .unwrap();
        assert_eq!((a.status, a.text().as_str()), (200, "abcde"));
        let e = c
            .send_ok(
                Method::Put,
                "/routes/d",
                Some(&serde_json::json!({"side": "new"})),
            )
            .unwrap_err();
        assert_eq!(e.status(), Some(409));
        assert!(!e.is_retryable() && !e.is_refused(), "{e}");
        assert!(
            e.to_string().contains("not now") && !e.to_string().contains("tok123"),
            "{e}"
        );
        let seen = server.join().unwrap();
        let lower: Vec<String> = seen.iter().map(|r| r.to_ascii_lowercase()).collect();
        assert!(
            seen[0].starts_with("GET /healthz HTTP/1.1\r\n"),
            "{}",
            seen[0]
        );
        assert!(lower[0].contains("host: site.example\r\n"), "{}", seen[0]);
        assert!(
            lower[0].contains("authorization: bearer tok123\r\n"),
            "{}",
            seen[0]
        );
        assert!(
            !lower[0].contains("accept: application/json"),
            "{}",
            seen[0]
        );
        assert!(
            seen[1].starts_with("POST /?op=write HTTP/1.1\r\n"),
            "{}",
            seen[1]
        );
        assert!(
            lower[1].contains("content-type: text/plain\r\n"),
            "{}",
            seen[1]
        );
        assert!(seen[1].ends_with("\r\n\r\nhello"), "{}", seen[1]);
        assert!(
            lower[2].contains(&format!("host: {addr}\r\n")),
            "{}",
            seen[2]
        );
        assert!(
            lower[2].contains("accept: application/json\r\n"),
            "{}",
            seen[2]
        );
        assert!(seen[2].ends_with("{\"side\":\"new\"}"), "{}", seen[2]);
    }

    /// A redirect is answered as it is (never followed), its headers readable by name.
    #[test]
    fn a_redirect_is_not_followed_and_its_headers_are_read() {
        let (addr, server) = one_shot_server(&[
            "HTTP/1.1 301 Moved Permanently\r\nLocation: /?op=about\r\nX-Site: site0001\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        ]);
        let c = HttpClient::for_addr(addr, Duration::from_secs(5))
            .unwrap()
            .without_keep_alive();
        let a = c.request(Method::Get, "/old-page").send().unwrap();
        assert_eq!(a.status, 301);
        assert_eq!(a.header("location"), Some("/?op=about"));
        assert_eq!(a.header("X-SITE"), Some("site0001"));
        assert_eq!(a.header("x-missing"), None);
        assert_eq!(server.join().unwrap().len(), 1);
    }

    #[test]
    fn status_classes() {
        let s = |status| HttpError::Status {
            method: Method::Get,
            url: "u".into(),
            status,
            body: String::new(),
        };
        assert!(s(503).is_retryable() && s(429).is_retryable());
        assert!(!s(401).is_retryable() && !s(404).is_retryable() && !s(422).is_retryable());
    }
}
