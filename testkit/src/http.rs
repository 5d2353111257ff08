//! HTTP for tests on loopback: a tiny server ([`TinyHttp`]) answering one fixed body to every
//! request, on a free port until dropped (a web server behind a load balancer), and a client
//! ([`request`], [`get`], [`post_json`]) that reads any answer whole (status, headers, body).
//!
//! The client is `ureq` 3 configured as `drivers::http` configures it (a timeout, every status
//! an answer, no redirect followed, no environment proxy), plain `http://` only. It is not
//! `drivers::http` itself because `drivers` and `sql-proxy` dev-depend on this crate: a
//! dependency back on them would put the code under test beneath its own test harness. Test
//! code: a failure panics, saying what was asked.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::{err, Result};

/// A running tiny HTTP server; its thread stops when this is dropped.
pub struct TinyHttp {
    /// Where it listens (127.0.0.1 and a free port).
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl TinyHttp {
    /// Starts answering `200 OK` with `body` (and `Connection: close`) to every request.
    pub fn start(body: &'static str) -> Result<Self> {
        let l = TcpListener::bind("127.0.0.1:0").map_err(|e| err(format!("bind: {e}")))?;
        l.set_nonblocking(true)
            .map_err(|e| err(format!("nonblocking: {e}")))?;
        let addr = l
            .local_addr()
            .map_err(|e| err(format!("local_addr: {e}")))?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut c, _)) => {
                        if c.set_nonblocking(false).is_err() {
                            continue;
                        }
                        let mut buf = [0u8; 4096];
                        let _ = c.read(&mut buf);
                        let _ = write!(
                            c,
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        );
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(Self { addr, stop })
    }
}

impl Drop for TinyHttp {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// In the order the server sent them (names lowercase).
    pub headers: Vec<(String, String)>,
    /// Decoded (a chunked body is joined).
    pub body: Vec<u8>,
}

impl Answer {
    /// The first header called `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// Sends one request to `http://{addr}{path}` and reads the whole answer, whatever its status
/// (a redirect is returned, not followed). 120 s at most.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Answer {
    let url = format!("http://{addr}{path}");
    let mut req = ureq::http::Request::builder().method(method).uri(&url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(body.unwrap_or_default().to_vec())
        .unwrap_or_else(|e| panic!("{method} {url}: bad request: {e}"));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(120)))
        .http_status_as_error(false)
        .max_redirects(0)
        .max_redirects_will_error(false)
        .proxy(None)
        .build()
        .into();
    let mut resp = agent
        .run(req)
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = resp
        .body_mut()
        .with_config()
        .limit(256 << 20)
        .read_to_vec()
        .unwrap_or_else(|e| panic!("{method} {url}: reading the answer: {e}"));
    Answer {
        status,
        headers,
        body,
    }
}

/// `GET path` with `headers`.
pub fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Answer {
    request(addr, "GET", path, headers, None)
}

/// `POST path` with `body` as JSON.
pub fn post_json(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &serde_json::Value,
) -> Answer {
    let mut h = headers.to_vec();
    h.push(("Content-Type", "application/json"));
    request(addr, "POST", path, &h, Some(body.to_string().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_reads_the_tiny_servers_answer() {
        let s = TinyHttp::start("hello").unwrap();
        let a = get(s.addr, "/x", &[("X-Test", "1")]);
        assert_eq!((a.status, a.text().as_str()), (200, "hello"));
        assert_eq!(a.header("Content-Length"), Some("5"));
        let a = post_json(s.addr, "/y", &[], &serde_json::json!({"a": 1}));
        assert_eq!(a.status, 200);
    }
}
