//! HAProxy behind [`LoadBalancer`], over the runtime API (admin-level
//! stats socket). Every change is read back and compared before it counts.
//!
//! The runtime API is line based: one command per connection (non-interactive mode), the answer
//! is everything until the server closes. An empty answer means success for `set server`;
//! anything else is HAProxy's own error text, which we carry as is.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{AdminState, LoadBalancer, ServerState};
use crate::{DriverError, Result};

/// Current plus queued sessions of `backend/server` in HAProxy's `show stat` CSV (0 when the
/// server is not listed).
pub fn parse_in_flight(csv: &str, backend: &str, server: &str) -> u64 {
    let mut lines = csv.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or("")
        .trim_start_matches("# ")
        .split(',')
        .collect();
    let col = |n: &str| header.iter().position(|h| *h == n);
    let (Some(px), Some(sv), Some(q), Some(s)) =
        (col("pxname"), col("svname"), col("qcur"), col("scur"))
    else {
        return 0;
    };
    lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .find(|f| f.get(px) == Some(&backend) && f.get(sv) == Some(&server))
        .map(|f| {
            let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            n(q) + n(s)
        })
        .unwrap_or(0)
}

/// HAProxy's runtime API on a unix socket.
#[derive(Debug, Clone)]
pub struct Haproxy {
    socket: PathBuf,
    timeout: Duration,
}

impl Haproxy {
    /// A client for the admin socket at `socket` (`stats socket PATH level admin`).
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
            timeout: Duration::from_secs(5),
        }
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends one command and returns HAProxy's whole answer.
    pub fn command(&self, cmd: &str) -> Result<String> {
        self.exchange(cmd, &format!("{cmd}\n"))
    }

    /// Sends `text` (`cmd`, with its payload if any) on a new connection to the admin socket
    /// and reads the answer to the end. `cmd` (checked to be one command on one line) names
    /// the exchange in errors; `text` never appears in one (a payload may hold a key).
    fn exchange(&self, cmd: &str, text: &str) -> Result<String> {
        if cmd.contains(['\n', ';']) {
            return Err(DriverError::InvalidInput(format!(
                "runtime API command must be one command on one line: {cmd:?}"
            )));
        }
        let io = |e: std::io::Error| DriverError::Io {
            what: format!("HAProxy runtime API {} ({cmd})", self.socket.display()),
            source: e,
        };
        let mut s = UnixStream::connect(&self.socket).map_err(io)?;
        s.set_read_timeout(Some(self.timeout)).map_err(io)?;
        s.set_write_timeout(Some(self.timeout)).map_err(io)?;
        s.write_all(text.as_bytes()).map_err(io)?;
        let mut out = String::new();
        s.read_to_string(&mut out).map_err(io)?;
        Ok(out)
    }

    fn set(&self, cmd: &str) -> Result<()> {
        let answer = self.command(cmd)?;
        let answer = answer.trim();
        // Success is an empty answer, or an informational line for an address change.
        if answer.is_empty()
            || answer.starts_with("IP changed from")
            || answer.contains("no need to change")
        {
            Ok(())
        } else {
            Err(DriverError::Rejected {
                system: "haproxy",
                command: cmd.to_string(),
                answer: answer.to_string(),
            })
        }
    }

    /// All servers of `backend` from `show servers state`.
    pub fn servers(&self, backend: &str) -> Result<Vec<ServerState>> {
        check_name("backend", backend)?;
        let answer = self.command(&format!("show servers state {backend}"))?;
        parse_servers_state(&answer)
    }
}

/// What [`Haproxy::install_ssl_cert`] had to do (all `false`: it was there already).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SslCertChange {
    /// The certificate store was created (`new ssl cert`).
    pub created: bool,
    /// Its contents were replaced (`set ssl cert` + `commit ssl cert`).
    pub updated: bool,
    /// The crt-list gained its line (`add ssl crt-list`).
    pub listed: bool,
}

impl Haproxy {
    /// Sends one command with a payload (`CMD <<`, the payload's lines, an empty line) and
    /// returns HAProxy's answer. The payload never appears in an error (it may hold a key).
    fn command_with_payload(&self, cmd: &str, payload: &str) -> Result<String> {
        // An empty line ends the payload: blank lines (and CRs) are dropped, PEM allows it.
        let body: String = payload
            .lines()
            .map(|l| l.trim_end_matches('\r'))
            .filter(|l| !l.trim().is_empty())
            .map(|l| format!("{l}\n"))
            .collect();
        self.exchange(cmd, &format!("{cmd} <<\n{body}\n"))
    }

    /// `cmd`'s answer when it contains `ok` (HAProxy's success wording), else a refusal
    /// carrying HAProxy's text.
    fn expect(&self, cmd: &str, answer: String, ok: &[&str]) -> Result<String> {
        if ok.iter().any(|w| answer.contains(w)) {
            Ok(answer)
        } else {
            Err(DriverError::Rejected {
                system: "haproxy",
                command: cmd.to_string(),
                answer: answer.trim().to_string(),
            })
        }
    }

    /// The SHA-1 fingerprint (upper-case hex) of the certificate HAProxy serves from `file`,
    /// `None` when it has no such certificate (`show ssl cert FILE`).
    pub fn ssl_cert_fingerprint(&self, file: &str) -> Result<Option<String>> {
        check_path("certificate file", file)?;
        let answer = self.command(&format!("show ssl cert {file}"))?;
        if answer.contains("Can't display the certificate") || answer.contains("Not found") {
            return Ok(None);
        }
        // A store created (`new ssl cert`) whose first commit never happened (an install
        // interrupted or refused in between) holds no certificate: the next install fills it.
        if answer.lines().any(|l| l.trim() == "Status: Empty") {
            return Ok(None);
        }
        answer
            .lines()
            .find_map(|l| l.strip_prefix("SHA1 FingerPrint:"))
            .map(|f| Some(f.trim().to_ascii_uppercase()))
            .ok_or_else(|| {
                DriverError::Protocol(format!(
                    "show ssl cert {file}: no fingerprint in {:?}",
                    answer.trim()
                ))
            })
    }

    /// The certificate files of `crt_list` (`show ssl crt-list LIST`), options and filters
    /// left out.
    pub fn crt_list_files(&self, crt_list: &str) -> Result<Vec<String>> {
        check_path("crt-list", crt_list)?;
        let cmd = format!("show ssl crt-list {crt_list}");
        let answer = self.command(&cmd)?;
        let mut lines = answer.lines().filter(|l| !l.trim().is_empty());
        match lines.next() {
            Some(h) if h.trim() == format!("# {crt_list}") => {}
            _ => {
                return Err(DriverError::Rejected {
                    system: "haproxy",
                    command: cmd,
                    answer: answer.trim().to_string(),
                })
            }
        }
        Ok(lines
            .filter_map(|l| l.split_whitespace().next())
            .map(str::to_string)
            .collect())
    }

    /// Makes HAProxy serve `pem` (the chain, leaf first, then its private key) as `file`
    /// from `crt_list`, at once and without a reload: creates the certificate store when it is
    /// missing, replaces its contents when its fingerprint is not the leaf's, adds the
    /// crt-list line when the list lacks it, then reads the fingerprint back. Idempotent: a
    /// second call with the same certificate changes nothing. HAProxy keeps this in memory
    /// only; the caller writes `file` and the crt-list line so a restart keeps it. The key
    /// travels on the admin socket only and is never part of an error.
    ///
    /// HAProxy runs one certificate operation at a time (its certificate lock, and one open
    /// transaction): an answer saying another one is in progress (`currently locked`, an
    /// ongoing transaction about another file) is retried, with a short growing pause, for up
    /// to [`SSL_BUSY_RETRY`]; several migrators preparing sites at once take turns.
    pub fn install_ssl_cert(&self, crt_list: &str, file: &str, pem: &str) -> Result<SslCertChange> {
        // One install at a time in this process: HAProxy's certificate commands are not
        // isolated per file (the CI saw two concurrent prepares of one wave read back each
        // other's fingerprint, and a store left empty). Other processes are taken turns with
        // by the retries below.
        static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let start = std::time::Instant::now();
        let mut pause = Duration::from_millis(20);
        let mut mismatches = 0;
        loop {
            match self.install_ssl_cert_once(crt_list, file, pem) {
                Err(e) if ssl_busy(&e) && start.elapsed() < SSL_BUSY_RETRY => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
                // Read back as another certificate: an install from another process crossed
                // ours. Installing again is idempotent; a few times, then the error stands.
                Err(DriverError::NotApplied(_)) if mismatches < 3 => {
                    mismatches += 1;
                    std::thread::sleep(pause);
                }
                r => return r,
            }
        }
    }

    fn install_ssl_cert_once(
        &self,
        crt_list: &str,
        file: &str,
        pem: &str,
    ) -> Result<SslCertChange> {
        check_path("crt-list", crt_list)?;
        check_path("certificate file", file)?;
        let want = pem_fingerprint(pem)?;
        if !pem.contains("PRIVATE KEY-----") {
            return Err(DriverError::InvalidInput(format!(
                "certificate for {file}: no private key after the chain"
            )));
        }
        let mut change = SslCertChange::default();
        let have = self.ssl_cert_fingerprint(file)?;
        if have.is_none() {
            let cmd = format!("new ssl cert {file}");
            let a = self.command(&cmd)?;
            self.expect(&cmd, a, &["New empty certificate store", "already exists"])?;
            change.created = true;
        }
        if have.as_deref() != Some(want.as_str()) {
            let cmd = format!("set ssl cert {file}");
            let a = self.command_with_payload(&cmd, pem)?;
            let set = self.expect(&cmd, a, &["Transaction created", "Transaction updated"]);
            if let Err(e) = set {
                // Leave no half-made transaction behind (it would block the next one).
                let _ = self.command(&format!("abort ssl cert {file}"));
                return Err(e);
            }
            let cmd = format!("commit ssl cert {file}");
            let a = self.command(&cmd)?;
            if let Err(e) = self.expect(&cmd, a, &["Success!"]) {
                let _ = self.command(&format!("abort ssl cert {file}"));
                return Err(e);
            }
            change.updated = true;
        }
        if !self.crt_list_files(crt_list)?.iter().any(|f| f == file) {
            let cmd = format!("add ssl crt-list {crt_list} {file}");
            let a = self.command(&cmd)?;
            self.expect(&cmd, a, &["Success!"])?;
            change.listed = true;
        }
        match self.ssl_cert_fingerprint(file)? {
            Some(f) if f == want => {}
            other => {
                return Err(DriverError::NotApplied(format!(
                    "haproxy certificate {file}: asked for SHA-1 {want}, reads back {other:?}"
                )))
            }
        }
        if !self.crt_list_files(crt_list)?.iter().any(|f| f == file) {
            return Err(DriverError::NotApplied(format!(
                "haproxy crt-list {crt_list}: {file} not listed after adding it"
            )));
        }
        Ok(change)
    }
}

/// How long [`Haproxy::install_ssl_cert`] keeps retrying while another certificate operation
/// holds HAProxy's certificate lock or transaction.
pub const SSL_BUSY_RETRY: Duration = Duration::from_secs(20);

/// Whether HAProxy refused a certificate command only because another one was in progress.
fn ssl_busy(e: &DriverError) -> bool {
    let m = e.to_string();
    m.contains("currently locked") || m.contains("ongoing transaction")
}

/// The SHA-1 fingerprint (upper-case hex, HAProxy's `show ssl cert` form) of the first
/// certificate in `pem`.
pub fn pem_fingerprint(pem: &str) -> Result<String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let leaf = CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .ok_or_else(|| DriverError::InvalidInput("no PEM certificate".into()))?
        .map_err(|e| DriverError::InvalidInput(format!("PEM certificate: {e}")))?;
    Ok(der_fingerprint(leaf.as_ref()))
}

/// The SHA-1 fingerprint (upper-case hex) of a DER certificate.
pub fn der_fingerprint(der: &[u8]) -> String {
    use sha1::Digest;
    sha1::Sha1::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect()
}

/// An absolute file path HAProxy names on one line: letters, digits, `/`, `.`, `_`, `-`.
fn check_path(field: &str, path: &str) -> Result<()> {
    let ok = path.starts_with('/')
        && path
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-' | b'.'))
        && !path.split('/').any(|p| p == "..");
    if ok {
        Ok(())
    } else {
        Err(DriverError::InvalidInput(format!(
            "{field} {path:?}: an absolute path of letters, digits, '/', '_', '-', '.'"
        )))
    }
}

fn check_name(field: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'));
    if ok {
        Ok(())
    } else {
        Err(DriverError::InvalidInput(format!(
            "{field} name {name:?}: only letters, digits, '_', '-', '.', ':' allowed"
        )))
    }
}

/// Parses `show servers state` (format version 1): a version line, a `#` header naming the
/// columns, then one line per server.
pub fn parse_servers_state(text: &str) -> Result<Vec<ServerState>> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let version = lines.next().unwrap_or("").trim();
    if version != "1" {
        return Err(DriverError::Protocol(format!(
            "show servers state: expected format version 1, got {version:?} (answer: {text:?})"
        )));
    }
    let header: Vec<&str> = lines
        .next()
        .and_then(|h| h.strip_prefix('#'))
        .ok_or_else(|| DriverError::Protocol("show servers state: no header line".into()))?
        .split_whitespace()
        .collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|c| *c == name)
            .ok_or_else(|| DriverError::Protocol(format!("show servers state: no column {name}")))
    };
    let (be, srv, addr, op, admin, weight, port) = (
        col("be_name")?,
        col("srv_name")?,
        col("srv_addr")?,
        col("srv_op_state")?,
        col("srv_admin_state")?,
        col("srv_uweight")?,
        col("srv_port")?,
    );
    let mut out = Vec::new();
    for line in lines {
        let f: Vec<&str> = line.split_whitespace().collect();
        let get = |i: usize| {
            f.get(i).copied().ok_or_else(|| {
                DriverError::Protocol(format!("show servers state: short line {line:?}"))
            })
        };
        let num = |i: usize| -> Result<u32> {
            get(i)?.parse().map_err(|_| {
                DriverError::Protocol(format!(
                    "show servers state: column {i} not a number in {line:?}"
                ))
            })
        };
        let ip: IpAddr = get(addr)?.parse().map_err(|_| {
            DriverError::Protocol(format!("show servers state: bad address in {line:?}"))
        })?;
        let admin_bits = num(admin)?;
        // srv_admin_state bit flags: 0x01 forced maint, 0x02 inherited maint, 0x04 maint via
        // config, 0x08 forced drain, 0x10 inherited drain, 0x20 resolution maint, ...
        let admin_state = if admin_bits & 0x27 != 0 {
            AdminState::Maint
        } else if admin_bits & 0x18 != 0 {
            AdminState::Drain
        } else {
            AdminState::Ready
        };
        out.push(ServerState {
            backend: get(be)?.to_string(),
            server: get(srv)?.to_string(),
            addr: SocketAddr::new(ip, num(port)? as u16),
            admin: admin_state,
            weight: num(weight)?,
            op_state: num(op)? as u8,
        });
    }
    Ok(out)
}

impl LoadBalancer for Haproxy {
    fn server_state(&self, backend: &str, server: &str) -> Result<ServerState> {
        check_name("server", server)?;
        self.servers(backend)?
            .into_iter()
            .find(|s| s.server == server)
            .ok_or_else(|| DriverError::NotFound(format!("haproxy server {backend}/{server}")))
    }

    fn in_flight(&self, backend: &str, server: &str) -> Result<u64> {
        check_name("backend", backend)?;
        check_name("server", server)?;
        Ok(parse_in_flight(
            &self.command("show stat")?,
            backend,
            server,
        ))
    }

    fn set_server_addr(&self, backend: &str, server: &str, addr: SocketAddr) -> Result<()> {
        check_name("backend", backend)?;
        check_name("server", server)?;
        self.set(&format!(
            "set server {backend}/{server} addr {} port {}",
            addr.ip(),
            addr.port()
        ))?;
        let now = self.server_state(backend, server)?;
        if now.addr != addr {
            return Err(DriverError::NotApplied(format!(
                "haproxy {backend}/{server}: asked for {addr}, reads back {}",
                now.addr
            )));
        }
        Ok(())
    }

    fn set_server_admin(&self, backend: &str, server: &str, state: AdminState) -> Result<()> {
        check_name("backend", backend)?;
        check_name("server", server)?;
        self.set(&format!(
            "set server {backend}/{server} state {}",
            state.keyword()
        ))?;
        let now = self.server_state(backend, server)?;
        if now.admin != state {
            return Err(DriverError::NotApplied(format!(
                "haproxy {backend}/{server}: asked for state {state:?}, reads back {:?}",
                now.admin
            )));
        }
        Ok(())
    }

    fn set_server_weight(&self, backend: &str, server: &str, weight: u32) -> Result<()> {
        check_name("backend", backend)?;
        check_name("server", server)?;
        if weight > 256 {
            return Err(DriverError::InvalidInput(format!(
                "weight {weight}: HAProxy weights are 0 to 256"
            )));
        }
        self.set(&format!("set server {backend}/{server} weight {weight}"))?;
        let now = self.server_state(backend, server)?;
        if now.weight != weight {
            return Err(DriverError::NotApplied(format!(
                "haproxy {backend}/{server}: asked for weight {weight}, reads back {}",
                now.weight
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "haproxy_tests.rs"]
mod tests;
