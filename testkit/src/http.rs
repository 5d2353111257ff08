//! A tiny HTTP server for tests: answers one fixed body to every request, on a free loopback
//! port, until dropped. Stands in for a web server behind a load balancer.

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
