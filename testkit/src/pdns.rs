//! A private PowerDNS Authoritative server for one test: one zone in a private SQLite database
//! (the gsqlite3 backend), DNS on a free loopback port, the HTTP API on another with a
//! generated API key. Debian packages `pdns-server`, `pdns-backend-sqlite3` and `sqlite3`.
//!
//! The database is made with the package's own schema (`sqlite3 DB < schema.sqlite3.sql`), the
//! zone loaded from a zone file with `pdnsutil load-zone`, and `pdns_server` runs in the
//! foreground (`daemon=no`, `guardian=no`) with a `--config-dir` of its own, so it reads no
//! system configuration and the guard stops exactly its PID.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::process::ChildGuard;
use crate::{err, find_program, free_port, wait_until, Result};

/// Where Debian's `pdns-backend-sqlite3` puts its schema (the first is what the package's
/// scripts use; the doc copy may be excluded by a minimal image's dpkg filters).
const SCHEMAS: [&str; 2] = [
    "/usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql",
    "/usr/share/doc/pdns-backend-sqlite3/schema.sqlite3.sql",
];

/// A running pdns_server; stopped and its files removed on drop.
pub struct Pdns {
    process: ChildGuard,
    dns_port: u16,
    api_port: u16,
    zone: String,
    api_key: String,
    dir: tempfile::TempDir,
}

fn run(what: &str, cmd: &mut Command) -> Result<()> {
    let out = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| err(format!("run {what}: {e}")))?;
    if !out.status.success() {
        return Err(err(format!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
}

/// 32 hex characters from the kernel's random source.
fn random_key() -> Result<String> {
    use std::io::Read;
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| err(format!("read /dev/urandom: {e}")))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

impl Pdns {
    /// Starts pdns_server for `zone` (e.g. `"lab.example."`) with the given zone-file body
    /// (records after the SOA/NS, one per line, names relative or absolute), as
    /// [`crate::Knot::start`] takes it.
    pub fn start(zone: &str, records: &str) -> Result<Self> {
        let zone = if zone.ends_with('.') {
            zone.to_string()
        } else {
            format!("{zone}.")
        };
        let dir = tempfile::Builder::new()
            .prefix("testkit-pdns-")
            .tempdir()
            .map_err(|e| err(format!("tempdir: {e}")))?;
        let d = dir.path();
        let schema = SCHEMAS
            .iter()
            .map(Path::new)
            .find(|p| p.is_file())
            .ok_or_else(|| {
                err(format!(
                    "no gsqlite3 schema at {}: install pdns-backend-sqlite3 (scripts/install-deps.sh)",
                    SCHEMAS.join(" or ")
                ))
            })?;
        let db = d.join("pdns.sqlite3");
        let schema_file =
            std::fs::File::open(schema).map_err(|e| err(format!("{}: {e}", schema.display())))?;
        run(
            "sqlite3 (schema)",
            Command::new(find_program("sqlite3")?)
                .arg(&db)
                .stdin(Stdio::from(schema_file)),
        )?;

        let api_key = random_key()?;
        let mut key_file = std::fs::OpenOptions::new();
        {
            use std::os::unix::fs::OpenOptionsExt;
            key_file.write(true).create_new(true).mode(0o600);
        }
        {
            use std::io::Write;
            key_file
                .open(d.join("api.key"))
                .and_then(|mut f| f.write_all(format!("{api_key}\n").as_bytes()))
                .map_err(|e| err(format!("write api.key: {e}")))?;
        }

        let zone_file = d.join("zone.db");
        std::fs::write(
            &zone_file,
            format!(
                "$ORIGIN {zone}\n$TTL 300\n@ SOA ns1.{zone} hostmaster.{zone} 1 3600 600 86400 60\n\
                 @ NS ns1.{zone}\nns1 A 127.0.0.1\n{records}\n"
            ),
        )
        .map_err(|e| err(format!("write zone file: {e}")))?;

        let pdns_server = find_program("pdns_server")?;
        let pdnsutil = find_program("pdnsutil")?;
        let mut last_error = String::new();
        let mut loaded = false;
        for _ in 0..5 {
            let (dns_port, api_port) = (free_port()?, free_port()?);
            if dns_port == api_port {
                continue;
            }
            std::fs::write(
                d.join("pdns.conf"),
                format!(
                    "launch=gsqlite3\ngsqlite3-database={db}\n\
                     local-address=127.0.0.1\nlocal-port={dns_port}\n\
                     daemon=no\nguardian=no\ndisable-syslog=yes\nsocket-dir={dir}\n\
                     security-poll-suffix=\n\
                     receiver-threads=1\ndistributor-threads=1\n\
                     api=yes\napi-key={api_key}\n\
                     webserver=yes\nwebserver-address=127.0.0.1\nwebserver-port={api_port}\n\
                     webserver-allow-from=127.0.0.0/8\nloglevel=4\n",
                    db = db.display(),
                    dir = d.display(),
                ),
            )
            .map_err(|e| err(format!("write pdns.conf: {e}")))?;
            if !loaded {
                run(
                    "pdnsutil load-zone",
                    Command::new(&pdnsutil)
                        .arg(format!("--config-dir={}", d.display()))
                        .args(["load-zone", &zone])
                        .arg(&zone_file),
                )?;
                loaded = true;
            }
            let log = d.join("pdns.log");
            let logf =
                std::fs::File::create(&log).map_err(|e| err(format!("create pdns.log: {e}")))?;
            let mut cmd = Command::new(&pdns_server);
            cmd.arg(format!("--config-dir={}", d.display()))
                .stdout(Stdio::null())
                .stderr(logf);
            let mut process = ChildGuard::spawn(
                format!("pdns_server on 127.0.0.1:{dns_port} (API :{api_port})"),
                &mut cmd,
            )?;
            let up = wait_until(Duration::from_secs(10), || {
                process.has_exited()
                    || (std::net::TcpStream::connect(("127.0.0.1", dns_port)).is_ok()
                        && std::net::TcpStream::connect(("127.0.0.1", api_port)).is_ok())
            });
            if up && !process.has_exited() {
                return Ok(Self {
                    process,
                    dns_port,
                    api_port,
                    zone,
                    api_key,
                    dir,
                });
            }
            process.stop();
            last_error = std::fs::read_to_string(&log).unwrap_or_default();
        }
        Err(err(format!(
            "pdns_server did not start after 5 tries: {last_error}"
        )))
    }

    /// The DNS port (UDP and TCP) on 127.0.0.1.
    pub fn dns_port(&self) -> u16 {
        self.dns_port
    }

    /// The HTTP API's base URL (`http://127.0.0.1:PORT`).
    pub fn api_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.api_port)
    }

    /// The API key (`api-key` in pdns.conf).
    pub fn api_key(&self) -> &str {
        &self.api_key
    }

    /// A file (mode 0600) holding the API key on one line.
    pub fn api_key_file(&self) -> PathBuf {
        self.dir.path().join("api.key")
    }

    /// The zone, fully qualified (`lab.example.`).
    pub fn zone(&self) -> &str {
        &self.zone
    }

    /// The scratch directory (config, database, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The PID of pdns_server.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }
}
