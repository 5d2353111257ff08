//! A W3C WebDriver session, for driving a real headless Chromium through Debian's
//! `chromedriver` (`chromium-driver`), over the loopback HTTP client of [`crate::http`]
//! (re-exported here: the dashboard tests use both). [`find_browser`] finds both binaries;
//! [`Chromedriver`] runs one on a free loopback port and stops exactly its PID on `Drop`. Test
//! code: failures panic with what went wrong.

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

pub use crate::http::{get, post_json, request, Answer};

/// A WebDriver session with chromedriver (W3C protocol, JSON over HTTP on loopback).
pub struct WebDriver {
    pub addr: SocketAddr,
    pub session: String,
}

impl WebDriver {
    fn call(&self, method: &str, path: &str, body: Option<serde_json::Value>) -> serde_json::Value {
        let p = format!("/session/{}{path}", self.session);
        let a = match body {
            Some(b) => post_json(self.addr, &p, &[], &b),
            None => request(self.addr, method, &p, &[], None),
        };
        let v = a.json();
        assert!(
            a.status < 300,
            "webdriver {method} {path}: {} {}",
            a.status,
            a.text()
        );
        v["value"].clone()
    }

    pub fn new_session(addr: SocketAddr, chromium: &str) -> WebDriver {
        let caps = serde_json::json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1400,1000",
                         "--no-first-run", "--disable-extensions"]
            }
        }}});
        let a = post_json(addr, "/session", &[], &caps);
        assert_eq!(a.status, 200, "new session: {}", a.text());
        let session = a.json()["value"]["sessionId"]
            .as_str()
            .expect("session id")
            .to_string();
        WebDriver { addr, session }
    }

    pub fn goto(&self, url: &str) {
        self.call("POST", "/url", Some(serde_json::json!({ "url": url })));
    }
    pub fn url(&self) -> String {
        self.call("GET", "/url", None)
            .as_str()
            .unwrap_or("")
            .to_string()
    }
    /// Runs `script` (a function body) in the page and returns its value.
    pub fn exec(&self, script: &str) -> serde_json::Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(serde_json::json!({ "script": script, "args": [] })),
        )
    }
    pub fn find_css(&self, css: &str) -> String {
        let v = self.call(
            "POST",
            "/element",
            Some(serde_json::json!({ "using": "css selector", "value": css })),
        );
        v.as_object()
            .and_then(|o| o.values().next())
            .and_then(|v| v.as_str())
            .expect("element id")
            .to_string()
    }
    pub fn click(&self, css: &str) {
        let id = self.find_css(css);
        self.call(
            "POST",
            &format!("/element/{id}/click"),
            Some(serde_json::json!({})),
        );
    }
    pub fn type_into(&self, css: &str, text: &str) {
        let id = self.find_css(css);
        self.call(
            "POST",
            &format!("/element/{id}/value"),
            Some(serde_json::json!({ "text": text })),
        );
    }
    /// A PNG of the viewport.
    pub fn screenshot(&self) -> Vec<u8> {
        use base64::Engine;
        let v = self.call("GET", "/screenshot", None);
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("base64 png"))
            .expect("valid base64")
    }
    /// Waits up to `secs` for `script` to return true.
    pub fn wait_for(&self, what: &str, secs: u64, script: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        loop {
            if self.exec(script) == serde_json::Value::Bool(true) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out after {secs} s waiting for {what}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for WebDriver {
    fn drop(&mut self) {
        let _ = std::panic::catch_unwind(|| {
            request(
                self.addr,
                "DELETE",
                &format!("/session/{}", self.session),
                &[],
                None,
            )
        });
    }
}

/// `(chromium, chromedriver)` from `PATH`, if both are installed.
pub fn find_browser() -> Option<(String, String)> {
    let which = |name: &str| {
        std::env::var_os("PATH")?
            .to_str()?
            .split(':')
            .map(|d| format!("{d}/{name}"))
            .find(|p| std::path::Path::new(p).is_file())
    };
    Some((
        which("chromium").or_else(|| which("chromium-browser"))?,
        which("chromedriver")?,
    ))
}

/// A `chromedriver` listening on a free loopback port, killed (by its PID) and reaped on drop.
pub struct Chromedriver {
    child: std::process::Child,
    pub addr: SocketAddr,
}

impl Chromedriver {
    /// Starts `driver` and waits (up to 20 s) until it listens.
    pub fn start(driver: &str) -> Chromedriver {
        let port = crate::free_port().expect("a free loopback port");
        let child = std::process::Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let d = Chromedriver {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        let t0 = Instant::now();
        while TcpStream::connect(d.addr).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "chromedriver did not listen"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        d
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
