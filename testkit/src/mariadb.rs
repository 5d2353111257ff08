//! A private MariaDB server for one test: its own data directory (a `TempDir`), a free loopback
//! port, a unix socket, and an `admin` account with every privilege, reachable over TCP.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::process::ChildGuard;
use crate::{err, find_program, free_port, wait_until, Result};

/// The admin account every instance gets (test-only, loopback-only).
pub const ADMIN_USER: &str = "admin";
/// Its password. Tests live on loopback in a throwaway data directory.
pub const ADMIN_PASSWORD: &str = "testkit-admin-pw";

/// How to start an instance. `Default` is a plain server without a binary log.
#[derive(Debug, Clone, Default)]
pub struct MariaDbOptions {
    /// Enable the binary log in ROW format with this server id (for binlog catch-up tests).
    pub binlog_server_id: Option<u32>,
    /// Extra `mariadbd` arguments, e.g. `--max-allowed-packet=64M`.
    pub extra_args: Vec<String>,
}

/// A running MariaDB server; stopped and deleted on drop.
pub struct MariaDb {
    // Field order matters: the process stops before its data directory is removed.
    process: ChildGuard,
    port: u16,
    socket: PathBuf,
    dir: tempfile::TempDir,
}

impl MariaDb {
    /// Starts a fresh instance with default options.
    pub fn start() -> Result<Self> {
        Self::start_with(MariaDbOptions::default())
    }

    /// Starts a fresh instance: `mariadb-install-db`, then `mariadbd` on 127.0.0.1 and a free
    /// port, waits until it answers, and creates the `admin` account.
    pub fn start_with(opts: MariaDbOptions) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("testkit-mariadb-")
            .tempdir()
            .map_err(|e| err(format!("tempdir: {e}")))?;
        let datadir = dir.path().join("data");
        let socket = dir.path().join("mysqld.sock");
        let log = dir.path().join("error.log");
        // Private tmpdir: the bootstrap server keeps temporary tables there, and a shared /tmp
        // that someone else cleans under our feet makes mariadb-install-db fail.
        let tmp = dir.path().join("tmp");
        std::fs::create_dir_all(&tmp).map_err(|e| err(format!("create tmpdir: {e}")))?;
        let install = find_program("mariadb-install-db")?;
        let mut install_error = String::new();
        for attempt in 0..3 {
            if attempt > 0 {
                let _ = std::fs::remove_dir_all(&datadir);
            }
            let out = Command::new(&install)
                .args(["--no-defaults", "--user=root", "--skip-test-db"])
                .arg("--auth-root-authentication-method=normal")
                .arg(format!("--datadir={}", datadir.display()))
                .arg(format!("--tmpdir={}", tmp.display()))
                .stdin(Stdio::null())
                .output()
                .map_err(|e| err(format!("run {}: {e}", install.display())))?;
            if out.status.success() {
                install_error.clear();
                break;
            }
            install_error = format!(
                "mariadb-install-db failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        if !install_error.is_empty() {
            return Err(err(install_error));
        }
        let mariadbd = find_program("mariadbd")?;
        // A port found free may be taken by the time mariadbd binds it: retry a few times.
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port()?;
            let mut cmd = Command::new(&mariadbd);
            cmd.arg("--no-defaults")
                .arg(format!("--datadir={}", datadir.display()))
                .arg(format!("--port={port}"))
                .arg("--bind-address=127.0.0.1")
                .arg(format!("--socket={}", socket.display()))
                .arg(format!(
                    "--pid-file={}",
                    dir.path().join("mysqld.pid").display()
                ))
                .arg(format!("--log-error={}", log.display()))
                .arg(format!("--tmpdir={}", tmp.display()))
                .arg("--user=root")
                .arg("--skip-name-resolve")
                .arg("--max-connections=2000")
                .arg("--max-allowed-packet=256M")
                .arg("--innodb-buffer-pool-size=128M")
                .arg("--innodb-flush-log-at-trx-commit=2")
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if let Some(id) = opts.binlog_server_id {
                cmd.arg(format!("--log-bin={}", dir.path().join("binlog").display()))
                    .arg(format!("--server-id={id}"))
                    .arg("--binlog-format=ROW");
            }
            cmd.args(&opts.extra_args);
            let mut process = ChildGuard::spawn(format!("mariadbd on 127.0.0.1:{port}"), &mut cmd)?;
            // Up once both listeners accept: the admin account is made over the unix socket
            // right after, and tests use either (the socket listens a moment after the port).
            let up = wait_until(Duration::from_secs(30), || {
                process.has_exited()
                    || (std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                        && std::os::unix::net::UnixStream::connect(&socket).is_ok())
            });
            if up && !process.has_exited() {
                let db = Self {
                    process,
                    port,
                    socket,
                    dir,
                };
                db.exec(&format!(
                    "CREATE USER '{ADMIN_USER}'@'%' IDENTIFIED BY '{ADMIN_PASSWORD}'; \
                     GRANT ALL PRIVILEGES ON *.* TO '{ADMIN_USER}'@'%' WITH GRANT OPTION; \
                     FLUSH PRIVILEGES;"
                ))?;
                return Ok(db);
            }
            process.stop();
            last_error = std::fs::read_to_string(&log).unwrap_or_default();
        }
        Err(err(format!(
            "mariadbd did not start after 5 tries; last error log:\n{last_error}"
        )))
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The unix socket path (root can log in there without a password).
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The instance's scratch directory (data directory and logs live below it).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The PID of `mariadbd`.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// A `mysql://` URL for the admin account over TCP.
    pub fn admin_url(&self) -> String {
        format!(
            "mysql://{ADMIN_USER}:{ADMIN_PASSWORD}@127.0.0.1:{}",
            self.port
        )
    }

    /// A `mysql://` URL for the admin account with a default database.
    pub fn admin_url_db(&self, db: &str) -> String {
        format!("{}/{db}", self.admin_url())
    }

    /// Runs SQL as root over the unix socket with the `mariadb` client; returns its stdout
    /// (tab-separated, no column names).
    pub fn exec(&self, sql: &str) -> Result<String> {
        let client = find_program("mariadb")?;
        let out = Command::new(&client)
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.socket.display()))
            .args(["--user=root", "--batch", "--skip-column-names", "-e", sql])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| err(format!("run {}: {e}", client.display())))?;
        if !out.status.success() {
            return Err(err(format!(
                "SQL failed on {}: {}\nstatement: {sql}",
                self.process.what,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Replaces database `db` on `to` with a copy of this instance's (`mariadb-dump
    /// --single-transaction | mariadb`, as root over both unix sockets). For tests that move a
    /// database between servers while something else (a proxy) holds its clients.
    pub fn copy_database_to(&self, db: &str, to: &MariaDb) -> Result<()> {
        use std::io::Write;
        to.exec(&format!(
            "DROP DATABASE IF EXISTS `{db}`; CREATE DATABASE `{db}`"
        ))?;
        let dump_bin = find_program("mariadb-dump")?;
        let dump = Command::new(&dump_bin)
            .args(["--no-defaults", "--user=root", "--single-transaction", db])
            .arg(format!("--socket={}", self.socket.display()))
            .stdin(Stdio::null())
            .output()
            .map_err(|e| err(format!("run {}: {e}", dump_bin.display())))?;
        if !dump.status.success() {
            return Err(err(format!(
                "mariadb-dump {db} failed: {}",
                String::from_utf8_lossy(&dump.stderr)
            )));
        }
        let client = find_program("mariadb")?;
        let mut load = Command::new(&client)
            .args(["--no-defaults", "--user=root", db])
            .arg(format!("--socket={}", to.socket.display()))
            .stdin(Stdio::piped())
            .spawn()
            .map_err(|e| err(format!("run {}: {e}", client.display())))?;
        load.stdin
            .take()
            .ok_or_else(|| err("mariadb client has no stdin"))?
            .write_all(&dump.stdout)
            .map_err(|e| err(format!("feed the dump of {db}: {e}")))?;
        let status = load
            .wait()
            .map_err(|e| err(format!("wait for mariadb: {e}")))?;
        if !status.success() {
            return Err(err(format!(
                "loading {db} into {} failed: {status}",
                to.process.what
            )));
        }
        Ok(())
    }

    /// Stops the server now (the data directory stays until the guard drops).
    pub fn stop(&mut self) {
        self.process.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_answers_and_stops() {
        let db = MariaDb::start().expect("start mariadb");
        let out = db.exec("SELECT 40 + 2").unwrap();
        assert_eq!(out.trim(), "42");
        let users = db
            .exec("SELECT CONCAT(user, '@', host) FROM mysql.user WHERE user = 'admin'")
            .unwrap();
        assert_eq!(users.trim(), "admin@%");
        let pid = db.pid().unwrap();
        let dir = db.dir().to_path_buf();
        drop(db);
        // SAFETY: signal 0 only checks whether the PID exists.
        let alive = unsafe { libc::kill(pid as i32, 0) } == 0;
        assert!(!alive, "mariadbd {pid} still running after drop");
        assert!(!dir.exists(), "{} left behind", dir.display());
    }

    #[test]
    fn binlog_option_enables_row_binlog() {
        let db = MariaDb::start_with(MariaDbOptions {
            binlog_server_id: Some(7),
            ..Default::default()
        })
        .unwrap();
        let out = db
            .exec("SELECT @@log_bin, @@server_id, @@binlog_format")
            .unwrap();
        assert_eq!(out.trim(), "1\t7\tROW");
    }
}
