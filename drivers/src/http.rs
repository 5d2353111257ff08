//! The one HTTP client for outside systems' APIs (PowerDNS today; the sql-proxy admin API,
//! probes and test clients are meant to move onto it): `ureq` 3, blocking, rustls for `https`.
//!
//! What the wrapper adds to `ureq`: a base URL checked once, a timeout on every exchange, JSON
//! in and out, secret headers (an API key) that never appear in `Debug` output or in errors, no
//! environment proxy and no redirects (a private admin API answers directly; following a
//! redirect would hand the key to whoever it points at), and [`HttpError`] saying what was
//! asked, what came back (status and the start of the body) and whether trying again may help.

use std::fmt;
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
            HttpError::Url { .. } | HttpError::Decode { .. } => false,
        }
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
}

impl Answer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
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
}

impl fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClient")
            .field("base", &self.base)
            .field("headers", &self.headers)
            .field("timeout", &self.timeout)
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
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            .max_redirects_will_error(false)
            .proxy(None)
            .user_agent(concat!("hostmove-drivers/", env!("CARGO_PKG_VERSION")))
            .tls_config(
                ureq::tls::TlsConfig::builder()
                    .provider(ureq::tls::TlsProvider::Rustls)
                    .unversioned_rustls_crypto_provider(std::sync::Arc::new(
                        rustls::crypto::aws_lc_rs::default_provider(),
                    ))
                    .build(),
            )
            .build()
            .into();
        Ok(Self {
            agent,
            base: base.trim_end_matches('/').to_string(),
            headers: Vec::new(),
            timeout,
        })
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

    /// Sends one request and returns the answer whatever its status. `body` is sent as JSON.
    pub fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Answer, HttpError> {
        let url = self.url(path);
        let mut req = ureq::http::Request::builder()
            .method(method.as_str())
            .uri(&url)
            .header("Accept", "application/json");
        for h in &self.headers {
            req = req.header(h.name.as_str(), h.value.as_str());
        }
        let payload = match body {
            Some(v) => {
                req = req.header("Content-Type", "application/json");
                serde_json::to_vec(v).map_err(|e| HttpError::Decode {
                    method,
                    url: url.clone(),
                    message: format!("request body: {e}"),
                })?
            }
            None => Vec::new(),
        };
        let req = req.body(payload).map_err(|e| HttpError::Url {
            url: url.clone(),
            message: e.to_string(),
        })?;
        let transport = |e: ureq::Error| HttpError::Transport {
            method,
            url: url.clone(),
            message: e.to_string(),
        };
        let mut resp = self.agent.run(req).map_err(transport)?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_vec()
            .map_err(transport)?;
        Ok(Answer { status, body })
    }

    /// Sends one request; a status outside 2xx is an [`HttpError::Status`] carrying the start
    /// of the body.
    pub fn send_ok(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Answer, HttpError> {
        let a = self.send(method, path, body)?;
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
            url: self.url(path),
            status: a.status,
            body: text.trim().to_string(),
        })
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

#[cfg(test)]
mod tests {
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
        // Bind then drop: nothing listens there a moment later.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let c = HttpClient::new(&format!("http://127.0.0.1:{port}"), Duration::from_secs(2))
            .unwrap()
            .with_secret_header("X-API-Key", "hunter2-secret");
        let e = c.send(Method::Get, "/x", None).unwrap_err();
        assert!(e.is_retryable(), "{e}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
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
