//! A private OpenSSH server for one test: generated ed25519 host key, a generated client key
//! pair, `authorized_keys`, and a `known_hosts` naming exactly this server's key, on a free
//! loopback port. Public-key login only.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::process::ChildGuard;
use crate::{err, find_program, free_port, wait_until, Result};

/// A running sshd; stopped and its files removed on drop.
pub struct Sshd {
    process: ChildGuard,
    port: u16,
    dir: tempfile::TempDir,
}

fn keygen(path: &Path, comment: &str) -> Result<()> {
    let keygen = find_program("ssh-keygen")?;
    let out = Command::new(&keygen)
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| err(format!("run ssh-keygen: {e}")))?;
    if !out.status.success() {
        return Err(err(format!(
            "ssh-keygen failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
}

fn read_pub(path: &Path) -> Result<String> {
    let p = path.with_extension("pub");
    let text =
        std::fs::read_to_string(&p).map_err(|e| err(format!("read {}: {e}", p.display())))?;
    // "ssh-ed25519 AAAA... comment" -> "ssh-ed25519 AAAA..."
    Ok(text
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" "))
}

impl Sshd {
    /// Starts sshd on 127.0.0.1 and a free port, for the user running the test.
    pub fn start() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("testkit-sshd-")
            .tempdir()
            .map_err(|e| err(format!("tempdir: {e}")))?;
        let d = dir.path();
        keygen(&d.join("host_key"), "testkit-host")?;
        keygen(&d.join("client_key"), "testkit-client")?;
        std::fs::copy(d.join("client_key.pub"), d.join("authorized_keys"))
            .map_err(|e| err(format!("authorized_keys: {e}")))?;
        // Privilege separation directory sshd insists on (Debian path).
        if crate::is_root() {
            let _ = std::fs::create_dir_all("/run/sshd");
        }
        let sshd = find_program("sshd")?;
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port()?;
            let config = d.join("sshd_config");
            let text = format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {hk}\nPidFile {pid}\n\
                 AuthorizedKeysFile {ak}\nUsePAM no\nStrictModes no\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n\
                 Subsystem sftp internal-sftp\nLogLevel ERROR\n",
                hk = d.join("host_key").display(),
                pid = d.join("sshd.pid").display(),
                ak = d.join("authorized_keys").display(),
            );
            std::fs::write(&config, text).map_err(|e| err(format!("write sshd_config: {e}")))?;
            let log = d.join("sshd.log");
            let logf =
                std::fs::File::create(&log).map_err(|e| err(format!("create sshd.log: {e}")))?;
            let mut cmd = Command::new(&sshd);
            cmd.args(["-D", "-e", "-f"])
                .arg(&config)
                .stdout(Stdio::null())
                .stderr(logf);
            let mut process = ChildGuard::spawn(format!("sshd on 127.0.0.1:{port}"), &mut cmd)?;
            let up = wait_until(Duration::from_secs(10), || {
                process.has_exited() || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            });
            if up && !process.has_exited() {
                return Ok(Self { process, port, dir });
            }
            process.stop();
            last_error = std::fs::read_to_string(&log).unwrap_or_default();
        }
        Err(err(format!(
            "sshd did not start after 5 tries: {last_error}"
        )))
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The user name to log in as (the user running the test).
    pub fn user(&self) -> String {
        std::env::var("USER")
            .ok()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| {
                if crate::is_root() {
                    "root".into()
                } else {
                    "nobody".into()
                }
            })
    }

    /// The client's private key (OpenSSH format, no passphrase), authorized on this server.
    pub fn client_key(&self) -> PathBuf {
        self.dir.path().join("client_key")
    }

    /// The server's public host key line, `ssh-ed25519 AAAA…`.
    pub fn host_public_key(&self) -> Result<String> {
        read_pub(&self.dir.path().join("host_key"))
    }

    /// A `known_hosts` file that names this server (`[127.0.0.1]:PORT`) with its real key.
    pub fn known_hosts(&self) -> Result<PathBuf> {
        let path = self.dir.path().join("known_hosts");
        let line = format!("[127.0.0.1]:{} {}\n", self.port, self.host_public_key()?);
        std::fs::write(&path, line).map_err(|e| err(format!("write known_hosts: {e}")))?;
        Ok(path)
    }

    /// A `known_hosts` file that names this server with a *different* key, for tests that a
    /// changed host key is refused.
    pub fn known_hosts_with_wrong_key(&self) -> Result<PathBuf> {
        let other = self.dir.path().join("other_host_key");
        if !other.exists() {
            keygen(&other, "testkit-other")?;
        }
        let path = self.dir.path().join("known_hosts_wrong");
        let line = format!("[127.0.0.1]:{} {}\n", self.port, read_pub(&other)?);
        std::fs::write(&path, line).map_err(|e| err(format!("write known_hosts: {e}")))?;
        Ok(path)
    }

    /// The scratch directory (keys, config, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The PID of the listening sshd.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `command` with the OpenSSH client against `sshd`, trusting only `known_hosts`.
    fn ssh(sshd: &Sshd, known_hosts: &Path, command: &str) -> std::process::Output {
        Command::new("ssh")
            .args(["-F", "/dev/null", "-o", "BatchMode=yes"])
            .args(["-o", "StrictHostKeyChecking=yes", "-o"])
            .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
            .arg("-i")
            .arg(sshd.client_key())
            .args(["-p", &sshd.port().to_string()])
            .arg(format!("{}@127.0.0.1", sshd.user()))
            .arg(command)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    #[test]
    fn ssh_client_logs_in_with_known_host_key() {
        let sshd = Sshd::start().expect("start sshd");
        let out = ssh(&sshd, &sshd.known_hosts().unwrap(), "echo hello-from-sshd");
        assert!(
            out.status.success(),
            "ssh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "hello-from-sshd"
        );

        let out = ssh(&sshd, &sshd.known_hosts_with_wrong_key().unwrap(), "true");
        assert!(!out.status.success(), "ssh accepted a wrong host key");
        assert!(String::from_utf8_lossy(&out.stderr).contains("HOST IDENTIFICATION HAS CHANGED"));
    }
}
