//! Real servers for tests, on loopback, each behind a guard that stops it on `Drop`.
//!
//! Layout:
//! - [`process`]: a child process guard that stops exactly the PID it started (TERM, then KILL).
//! - [`mariadb`]: a private MariaDB instance ([`MariaDb`]) in a temporary data directory, on a
//!   free loopback port, with an admin account for the test.
//! - [`galera`]: a private N-node Galera cluster ([`Galera`]) on loopback, the shared control
//!   store of a fleet; a node can be killed to prove the others carry on.
//! - [`sshd`]: a private OpenSSH server ([`Sshd`]) with generated host keys, a client key pair,
//!   an `authorized_keys` and a `known_hosts` file, on a free loopback port.
//!
//! - [`knot`]: a private Knot DNS server ([`Knot`]) authoritative for one zone, TSIG updates only.
//! - [`pdns`]: a private PowerDNS Authoritative server ([`Pdns`]) for one zone (SQLite backend),
//!   with its HTTP API behind a generated key.
//! - [`http`]: a tiny HTTP server ([`TinyHttp`]) answering one fixed body, for web-server
//!   stand-ins, and a loopback HTTP client reading any answer whole (`ureq`, configured as
//!   `drivers::http` is; not that crate, which dev-depends on this one).
//! - [`haproxy`]: a private HAProxy ([`Haproxy`]) with one backend per site and its runtime API.
//! - [`loopfs`]: a throw-away ext4 on a loop device over a private tmpfs, for benchmarks.
//! - [`webdriver`]: a WebDriver session driving headless Chromium through `chromedriver`
//!   ([`webdriver::Chromedriver`]) over that client, for the dashboard's browser tests.
//!
//! Why a crate: the proxy, the migrator and the cross-crate tests all need the same real servers,
//! started the same careful way (no fixed ports, no global pid files, no killing by name).
//! Every guard owns a `tempfile::TempDir`, so a test that panics still removes its files, and the
//! process guard kills only the PID it spawned.

pub mod galera;
pub mod haproxy;
pub mod http;
pub mod knot;
pub mod loopfs;
pub mod mariadb;
pub mod pdns;
pub mod process;
pub mod promtool;
pub mod sshd;
pub mod tls;
pub mod webdriver;

pub use galera::Galera;
pub use haproxy::{Backend, Haproxy};
pub use http::TinyHttp;
pub use knot::Knot;
pub use mariadb::{MariaDb, MariaDbOptions};
pub use pdns::Pdns;
pub use process::ChildGuard;
pub use sshd::Sshd;
pub use tls::TlsFiles;

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The error type of this crate: what failed, in words a test failure message can show.
#[derive(Debug)]
pub struct Error(pub String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn err(msg: impl Into<String>) -> Error {
    Error(msg.into())
}

/// The ports [`free_port`] handed out in this process.
static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A loopback TCP port that was free a moment ago (bound to port 0, then released) and that
/// this process never handed out before. The kernel picks port 0 at random (Linux: among the
/// odd ports of the ephemeral range, some 14 000), so in a test run that takes a few dozen
/// ports before its servers bind them (a Galera cluster: 4 per node; a proxy: 2) two are now
/// and then the same: one server then fails to listen, or a test reaches another's server
/// (seen in `sql-proxy/tests/fleet_galera.rs`: both proxies given one listen port).
pub fn free_port() -> Result<u16> {
    let mut handed = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..1000 {
        let l =
            TcpListener::bind("127.0.0.1:0").map_err(|e| err(format!("bind 127.0.0.1:0: {e}")))?;
        let port = l
            .local_addr()
            .map_err(|e| err(format!("local_addr: {e}")))?
            .port();
        if handed.insert(port) {
            return Ok(port);
        }
    }
    Err(err(format!(
        "no loopback port that this process had not handed out yet in 1000 tries ({} handed out)",
        handed.len()
    )))
}

/// Polls `ready` every 20 ms until it returns true or `timeout` passes.
pub(crate) fn wait_until(timeout: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if ready() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    ready()
}

/// Whether this process runs as root (the lab and netns tests need it; CI runs as root).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Finds an executable in the usual Debian locations, for servers that live in `/usr/sbin`
/// (not on a non-root PATH).
pub fn find_program(name: &str) -> Result<std::path::PathBuf> {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/bin"] {
        let p = std::path::Path::new(dir).join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(err(format!(
        "{name} not found in /usr/sbin, /usr/bin, /sbin, /bin, /usr/local/bin: run scripts/install-deps.sh as root"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 500 picks: with the kernel's choice alone, 14 to 19 of them repeated an earlier one in
    /// three runs here, so this fails without the record of handed-out ports.
    #[test]
    fn free_port_never_hands_out_a_port_twice() {
        let ports: Vec<u16> = (0..500).map(|_| free_port().unwrap()).collect();
        let distinct: BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len());
    }
}
