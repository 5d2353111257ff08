//! A private HAProxy for one test: HTTP frontend on a free loopback port, one backend per name
//! given, each with one server, and the runtime API on an admin-level unix socket.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::process::ChildGuard;
use crate::{err, find_program, free_port, wait_until, Result};

/// A running haproxy (master-worker); stopped and its files removed on drop.
pub struct Haproxy {
    process: ChildGuard,
    port: u16,
    /// The TLS frontend's port, when started with a crt-list.
    tls_port: Option<u16>,
    socket: PathBuf,
    dir: tempfile::TempDir,
}

/// One backend: `name`, with one server `srv` at `addr` (`127.0.0.1:PORT`).
#[derive(Debug, Clone)]
pub struct Backend {
    pub name: String,
    pub addr: String,
}

impl Haproxy {
    /// Starts haproxy with one HTTP frontend routing by the `Host` header to each backend
    /// (`<name>` host → backend `<name>`), the first backend as default.
    pub fn start(backends: &[Backend]) -> Result<Self> {
        Self::start_with(backends, None)
    }

    /// Like [`Haproxy::start`], with the same frontend also on a second port terminating TLS
    /// with the certificates of `crt_list` (`bind ... ssl crt-list FILE`; [`Haproxy::tls_port`]).
    pub fn start_tls(backends: &[Backend], crt_list: &Path) -> Result<Self> {
        Self::start_with(backends, Some(crt_list))
    }

    fn start_with(backends: &[Backend], crt_list: Option<&Path>) -> Result<Self> {
        if backends.is_empty() {
            return Err(err("haproxy needs at least one backend"));
        }
        let dir = tempfile::Builder::new()
            .prefix("testkit-haproxy-")
            .tempdir()
            .map_err(|e| err(format!("tempdir: {e}")))?;
        let d = dir.path();
        let socket = d.join("admin.sock");
        let haproxy = find_program("haproxy")?;
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port()?;
            let tls_port = match crt_list {
                Some(_) => Some(free_port()?),
                None => None,
            };
            let mut cfg = format!(
                "global\n  stats socket {sock} level admin\n  maxconn 4000\n\
                 defaults\n  mode http\n  timeout connect 2s\n  timeout client 30s\n  \
                 timeout server 30s\n  timeout queue 10s\n\
                 frontend web\n  bind 127.0.0.1:{port}\n",
                sock = socket.display()
            );
            if let (Some(p), Some(list)) = (tls_port, crt_list) {
                cfg.push_str(&format!(
                    "  bind 127.0.0.1:{p} ssl crt-list {}\n",
                    list.display()
                ));
            }
            for b in backends {
                cfg.push_str(&format!(
                    "  use_backend {n} if {{ hdr(host) -i {n} }}\n",
                    n = b.name
                ));
            }
            cfg.push_str(&format!("  default_backend {}\n", backends[0].name));
            for b in backends {
                cfg.push_str(&format!(
                    "backend {n}\n  server srv {a}\n",
                    n = b.name,
                    a = b.addr
                ));
            }
            let conf = d.join("haproxy.cfg");
            std::fs::write(&conf, cfg).map_err(|e| err(format!("write haproxy.cfg: {e}")))?;
            let log = d.join("haproxy.log");
            let logf =
                std::fs::File::create(&log).map_err(|e| err(format!("create haproxy.log: {e}")))?;
            let mut cmd = Command::new(&haproxy);
            cmd.args(["-W", "-db", "-f"])
                .arg(&conf)
                .stdout(Stdio::null())
                .stderr(logf);
            let mut process = ChildGuard::spawn(format!("haproxy on 127.0.0.1:{port}"), &mut cmd)?;
            // Ready once every listener accepts a connection: the runtime API socket's file
            // exists a moment before it listens, and a test's first command comes at once.
            let up = wait_until(Duration::from_secs(10), || {
                process.has_exited()
                    || (std::os::unix::net::UnixStream::connect(&socket).is_ok()
                        && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                        && tls_port
                            .is_none_or(|p| std::net::TcpStream::connect(("127.0.0.1", p)).is_ok()))
            });
            if up && !process.has_exited() {
                return Ok(Self {
                    process,
                    port,
                    tls_port,
                    socket,
                    dir,
                });
            }
            process.stop();
            last_error = std::fs::read_to_string(&log).unwrap_or_default();
        }
        Err(err(format!(
            "haproxy did not start after 5 tries: {last_error}"
        )))
    }

    /// The HTTP frontend port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The TLS frontend port on 127.0.0.1 ([`Haproxy::start_tls`]).
    pub fn tls_port(&self) -> Option<u16> {
        self.tls_port
    }

    /// The runtime API socket (admin level).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The scratch directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The PID of the haproxy master.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }
}
