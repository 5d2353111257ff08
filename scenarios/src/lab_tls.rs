//! HTTPS in the lab (`lab up --artifacts`, issue 20): a lab CA, a certificate per site for
//! `<login>.lab.test` and a default one for unknown names, made with the `openssl` command
//! (keys 0600, the CA key in a 0700 directory). HAProxy terminates TLS on each VIP
//! (`bind VIP:443 ssl crt-list FILE`, same frontend as port 80): old-dc's list names every
//! site's certificate (the old platform has them), new-dc's only the default one until the
//! migrator's prepare loads a site's certificate through the runtime API.
//!
//! Layout under the state dir: `tls/ca.pem`, `tls/private/` (CA key, site keys),
//! `tls/sites/DOMAIN.pem`, and per DC `<dc>/tls/crt-list` with its PEM bundles (chain then
//! key, 0600) in `<dc>/tls/certs/`.

use crate::error::{LabError, Result};
use crate::process::run;
use crate::secrets::{private_dir, write_secret};
use crate::state::{LabState, LabTls, SiteCert};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The port HAProxy terminates TLS on at each VIP.
pub const PORT: u16 = 443;

fn openssl(dir: &Path, args: &[&str]) -> Result<()> {
    run(Command::new("openssl").args(args).current_dir(dir)).map(|_| ())
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(LabError::io("reading", path))
}

/// A P-256 key (0600) and a certificate for `domain` signed by the CA of `dir`, valid 30
/// days; returns (certificate, key).
fn leaf(dir: &Path, name: &str, domain: &str) -> Result<(PathBuf, PathBuf)> {
    let key = dir.join("private").join(format!("{name}.key"));
    let csr = dir.join("private").join(format!("{name}.csr"));
    let crt = dir.join("sites").join(format!("{name}.pem"));
    let ext = dir.join("private").join(format!("{name}.ext"));
    std::fs::write(
        &ext,
        format!(
            "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:{domain}\n"
        ),
    )
    .map_err(LabError::io("writing", &ext))?;
    let s = |p: &Path| p.to_string_lossy().into_owned();
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &s(&key),
            "-out",
            &s(&csr),
            "-subj",
            &format!("/CN={domain}"),
        ],
    )?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &s(&csr),
            "-CA",
            "ca.pem",
            "-CAkey",
            "private/ca.key",
            "-CAcreateserial",
            "-CAserial",
            "private/ca.srl",
            "-out",
            &s(&crt),
            "-days",
            "30",
            "-extfile",
            &s(&ext),
        ],
    )?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
        .map_err(LabError::io("chmod 0600", &key))?;
    let _ = std::fs::remove_file(&csr);
    Ok((crt, key))
}

/// The bundle HAProxy loads (chain then key, 0600) at `path`.
fn bundle(path: &Path, cert: &Path, key: &Path) -> Result<()> {
    write_secret(path, (read(cert)? + &read(key)?).as_bytes())
}

/// Makes the CA, the default and every site's certificate, and both DCs' crt-lists (see the
/// module). Records nothing: the caller stores the answer in the state.
pub fn make(st: &LabState) -> Result<LabTls> {
    let dir = st.state_dir.join("tls");
    std::fs::create_dir_all(dir.join("sites")).map_err(LabError::io("creating", &dir))?;
    private_dir(&dir.join("private"))?;
    openssl(
        &dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "private/ca.key",
            "-out",
            "ca.pem",
            "-days",
            "365",
            "-subj",
            "/CN=hostmove lab CA",
        ],
    )?;
    let ca_key = dir.join("private").join("ca.key");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&ca_key, std::fs::Permissions::from_mode(0o600))
        .map_err(LabError::io("chmod 0600", &ca_key))?;
    let (default_cert, default_key) = leaf(&dir, "default", &format!("default.{}", st.zone))?;
    let mut sites = Vec::new();
    for s in &st.sites {
        let (cert, key) = leaf(&dir, &s.domain, &s.domain)?;
        sites.push(SiteCert {
            login: s.login.clone(),
            domain: s.domain.clone(),
            cert,
            key,
        });
    }
    let dc_dir = |label: &str| st.state_dir.join(label).join("tls");
    let mut lists = Vec::new();
    for (label, served) in [("old-dc", &sites[..]), ("new-dc", &[][..])] {
        let d = dc_dir(label);
        let certs = d.join("certs");
        std::fs::create_dir_all(&certs).map_err(LabError::io("creating", &certs))?;
        // The first line is HAProxy's default certificate (any name not listed).
        let default = certs.join("default.pem");
        bundle(&default, &default_cert, &default_key)?;
        let mut list = format!("{}\n", default.display());
        for c in served {
            let b = certs.join(format!("{}.pem", c.domain));
            bundle(&b, &c.cert, &c.key)?;
            list.push_str(&format!("{}\n", b.display()));
        }
        let path = d.join("crt-list");
        std::fs::write(&path, list).map_err(LabError::io("writing crt-list", &path))?;
        lists.push((path, certs));
    }
    let (new_list, new_certs) = lists.pop().expect("two lists");
    let (old_list, _) = lists.pop().expect("two lists");
    Ok(LabTls {
        ca: dir.join("ca.pem"),
        ca_key,
        default_cert,
        sites,
        port: PORT,
        old_crt_list: old_list,
        new_crt_list: new_list,
        new_cert_dir: new_certs,
    })
}
