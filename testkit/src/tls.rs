//! A throw-away certificate authority and a server certificate it signed (for `127.0.0.1` and
//! `localhost`), made with the `openssl` command: for MariaDB's `--ssl-*` options, the SQL
//! proxy's listener and the CA file that verifies both.

use crate::{err, find_program, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The PEM files, in the directory given to [`TlsFiles::create`].
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    /// Creates `ca.pem`, `server.pem` and `server.key` in `dir`.
    pub fn create(dir: &Path) -> Result<TlsFiles> {
        let openssl = find_program("openssl")?;
        let f = |name: &str| dir.join(name);
        let run = |args: &[&str]| openssl_in(&openssl, dir, args);
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=testkit CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ])?;
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ])?;
        std::fs::write(
            f("san.ext"),
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n\
             extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .map_err(|e| err(format!("{}: {e}", f("san.ext").display())))?;
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.pem",
        ])?;
        Ok(TlsFiles {
            ca: f("ca.pem"),
            cert: f("server.pem"),
            key: f("server.key"),
        })
    }

    /// Another server certificate signed by the same CA, for the DNS name `dns`:
    /// `NAME.pem` and `NAME.key` (0600) beside the CA. Returns (certificate, key).
    pub fn leaf(&self, name: &str, dns: &str) -> Result<(PathBuf, PathBuf)> {
        let dir = self
            .ca
            .parent()
            .ok_or_else(|| err("CA file has no directory"))?;
        let openssl = find_program("openssl")?;
        let run = |args: &[&str]| openssl_in(&openssl, dir, args);
        let (key, csr, crt, ext) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        std::fs::write(
            dir.join(&ext),
            format!("basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:{dns}\n"),
        )
        .map_err(|e| err(format!("{}: {e}", dir.join(&ext).display())))?;
        let subj = format!("/CN={dns}");
        run(&[
            "req", "-newkey", "rsa:2048", "-nodes", "-subj", &subj, "-keyout", &key, "-out", &csr,
        ])?;
        run(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &ext,
            "-out",
            &crt,
        ])?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join(&key), std::fs::Permissions::from_mode(0o600))
            .map_err(|e| err(format!("{}: {e}", dir.join(&key).display())))?;
        Ok((dir.join(crt), dir.join(key)))
    }

    /// MariaDB options serving TLS with these files (`MariaDbOptions::extra_args`).
    pub fn mariadb_args(&self) -> Vec<String> {
        vec![
            format!("--ssl-ca={}", self.ca.display()),
            format!("--ssl-cert={}", self.cert.display()),
            format!("--ssl-key={}", self.key.display()),
        ]
    }
}

/// Runs `openssl ARGS` in `dir`; its stderr is the error when it fails.
fn openssl_in(openssl: &Path, dir: &Path, args: &[&str]) -> Result<()> {
    let out = Command::new(openssl)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| err(format!("openssl: {e}")))?;
    if !out.status.success() {
        return Err(err(format!(
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    Ok(())
}
