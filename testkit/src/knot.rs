//! A private Knot DNS server for one test: authoritative for one zone on a free loopback port,
//! accepting RFC 2136 updates signed with one TSIG key (hmac-sha256) and nothing unsigned.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::process::ChildGuard;
use crate::{err, find_program, free_port, wait_until, Result};

/// A running knotd; stopped and its files removed on drop.
pub struct Knot {
    process: ChildGuard,
    port: u16,
    zone: String,
    key_name: String,
    key_secret: String,
    dir: tempfile::TempDir,
}

impl Knot {
    /// Starts knotd for `zone` (e.g. `"lab.example."`) with the given zone-file body (records
    /// after the SOA/NS, one per line, names relative or absolute). The TSIG key is generated
    /// with `keymgr` and named `<key_name>`.
    pub fn start(zone: &str, records: &str, key_name: &str) -> Result<Self> {
        let zone = if zone.ends_with('.') {
            zone.to_string()
        } else {
            format!("{zone}.")
        };
        let dir = tempfile::Builder::new()
            .prefix("testkit-knot-")
            .tempdir()
            .map_err(|e| err(format!("tempdir: {e}")))?;
        let d = dir.path();
        let keymgr = find_program("keymgr")?;
        let out = Command::new(&keymgr)
            .args(["-t", key_name, "hmac-sha256"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| err(format!("run keymgr: {e}")))?;
        if !out.status.success() {
            return Err(err(format!(
                "keymgr failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let key_yaml = String::from_utf8_lossy(&out.stdout).into_owned();
        let key_secret = key_yaml
            .lines()
            .find_map(|l| l.trim().strip_prefix("secret:"))
            .map(|s| s.trim().to_string())
            .ok_or_else(|| err(format!("no secret in keymgr output: {key_yaml}")))?;
        // A secret: mode 0600, as the drivers demand of key files.
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(d.join("key.yaml"))
                .and_then(|mut f| f.write_all(key_yaml.as_bytes()))
                .map_err(|e| err(format!("write key.yaml: {e}")))?;
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
        // Knot fails every update ("not exists") when its database directory is missing.
        std::fs::create_dir_all(d.join("db")).map_err(|e| err(format!("create db dir: {e}")))?;
        let knotd = find_program("knotd")?;
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port()?;
            let conf = d.join("knot.conf");
            std::fs::write(
                &conf,
                format!(
                    "server:\n  listen: 127.0.0.1@{port}\n  rundir: {run}\n\
                     database:\n  storage: {db}\n\
                     log:\n  - target: stderr\n    any: warning\n\
                     {key_yaml}\n\
                     acl:\n  - id: tsig_update\n    key: {key_name}\n    action: [update, transfer]\n\
                     zone:\n  - domain: {zone}\n    file: {zf}\n    acl: tsig_update\n    \
                     zonefile-sync: -1\n    zonefile-load: whole\n    journal-content: changes\n",
                    run = d.display(),
                    db = d.join("db").display(),
                    zf = zone_file.display(),
                ),
            )
            .map_err(|e| err(format!("write knot.conf: {e}")))?;
            let log = d.join("knotd.log");
            let logf =
                std::fs::File::create(&log).map_err(|e| err(format!("create knotd.log: {e}")))?;
            let mut cmd = Command::new(&knotd);
            cmd.arg("-c").arg(&conf).stdout(Stdio::null()).stderr(logf);
            let mut process = ChildGuard::spawn(format!("knotd on 127.0.0.1:{port}"), &mut cmd)?;
            let up = wait_until(Duration::from_secs(10), || {
                process.has_exited() || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            });
            if up && !process.has_exited() {
                return Ok(Self {
                    process,
                    port,
                    zone,
                    key_name: key_name.to_string(),
                    key_secret,
                    dir,
                });
            }
            process.stop();
            last_error = std::fs::read_to_string(&log).unwrap_or_default();
        }
        Err(err(format!(
            "knotd did not start after 5 tries: {last_error}"
        )))
    }

    /// The UDP and TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The zone, fully qualified (`lab.example.`).
    pub fn zone(&self) -> &str {
        &self.zone
    }

    /// The TSIG key's name.
    pub fn key_name(&self) -> &str {
        &self.key_name
    }

    /// The TSIG key's secret, base64 as `keymgr` printed it.
    pub fn key_secret(&self) -> &str {
        &self.key_secret
    }

    /// The key as Knot's YAML (`key: - id/algorithm/secret`), as `keymgr -t` wrote it (mode 0600).
    pub fn key_file(&self) -> PathBuf {
        self.dir.path().join("key.yaml")
    }

    /// The scratch directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The PID of knotd.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }
}
