//! Throwaway certificates for TLS tests, made with the `openssl` CLI: a private CA and a
//! server certificate it signs, naming an IP address (what a client verifying a private
//! service by address checks).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Files of a test PKI in one directory.
pub struct TestPki {
    /// The CA certificate (PEM): what a client trusts.
    pub ca: PathBuf,
    /// The server certificate (PEM), signed by the CA, naming `ip`.
    pub cert: PathBuf,
    /// The server key (PEM), mode 0600.
    pub key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) -> Result<(), String> {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("openssl: {e} (install the Debian package openssl)"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "openssl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A CA named `name` and a server certificate for `ip` in `dir` (files `<name>-ca.pem`,
/// `<name>.pem`, `<name>.key`); valid one day, P-256 keys.
pub fn pki(dir: &Path, name: &str, ip: std::net::IpAddr) -> Result<TestPki, String> {
    let ca_key = format!("{name}-ca.key");
    let ca = format!("{name}-ca.pem");
    let (key, csr, cert, ext) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.pem"),
        format!("{name}.ext"),
    );
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let subj_ca = format!("/CN={name} test CA");
    let mut a = vec!["req", "-x509", "-days", "1", "-subj", &subj_ca];
    a.extend(ec);
    a.extend(["-keyout", &ca_key, "-out", &ca]);
    openssl(dir, &a)?;
    let subj = format!("/CN={name}");
    let mut a = vec!["req", "-subj", &subj];
    a.extend(ec);
    a.extend(["-keyout", &key, "-out", &csr]);
    openssl(dir, &a)?;
    std::fs::write(
        dir.join(&ext),
        format!(
            "subjectAltName=IP:{ip}\nbasicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            &ext,
            "-out",
            &cert,
        ],
    )?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.join(&key), std::fs::Permissions::from_mode(0o600))
        .map_err(|e| e.to_string())?;
    Ok(TestPki {
        ca: dir.join(ca),
        cert: dir.join(cert),
        key: dir.join(key),
    })
}
