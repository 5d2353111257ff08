//! A site's certificates on the new side's load balancer (HAProxy terminating TLS on the
//! VIP, `bind VIP:443 ssl crt-list FILE`, in the same frontend as port 80, so an HTTPS request
//! goes through the site's backend like HTTP: freeze, switch and rollback are unchanged).
//!
//! - [`install`] (prepare): each domain's chain and key loaded through the runtime API
//!   (`drivers::lb::Haproxy::install_ssl_cert`: served at once for its name, yet unreachable
//!   for the site's visitors, whose DNS still names the old VIP), then written where a restart
//!   finds them: `CERT_DIR/DOMAIN.pem` (0600) and its crt-list line. Idempotent: prepare
//!   after a crash finds it done. Run after [`super::check_tls`] refused any certificate that
//!   cannot serve: nothing is loaded for a spec with one bad certificate.
//! - [`verify_served`] (verify, before the switch): a TLS handshake to the new VIP with SNI
//!   = the domain; the certificate served must be the spec's and verify against its `ca`.
//! - [`describe`]: the dry run's lines.
//!
//! Rollback needs nothing here: the old VIP never stopped serving its own certificates, and
//! what prepare loaded on the new balancer is reachable only once DNS names the new VIP.
//! Keys travel only in the admin socket's payload and the 0600 file: no message quotes them.

use super::{tls, Artifacts, TlsSpec};
use crate::site_spec::LbTlsSpec;
use drivers::lb::Haproxy;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where a domain's PEM lives on the balancer.
pub fn pem_path(lb: &LbTlsSpec, domain: &str) -> PathBuf {
    lb.cert_dir().join(format!("{domain}.pem"))
}

/// The chain then the key of `t`, as HAProxy loads them; the error is the field below
/// `artifacts.` and why (never the contents).
fn bundle(j: usize, t: &TlsSpec) -> Result<String, (String, String)> {
    let read = |p: &Path, field: &str| {
        std::fs::read_to_string(p)
            .map_err(|e| (format!("tls[{j}].{field}"), format!("{}: {e}", p.display())))
    };
    let mut pem = read(&t.cert, "cert")?;
    if !pem.ends_with('\n') {
        pem.push('\n');
    }
    pem.push_str(&read(&t.key, "key")?);
    Ok(pem)
}

fn path_str<'a>(p: &'a Path, what: &str) -> Result<&'a str, String> {
    p.to_str()
        .ok_or_else(|| format!("{what} {}: not UTF-8", p.display()))
}

/// Writes `text` to `path` with mode 0600 (a temporary file renamed into place).
fn write_private(path: &Path, text: &str) -> Result<(), String> {
    let io = |e: std::io::Error| format!("{}: {e}", path.display());
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let tmp = path.with_extension("pem.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Adds `file`'s line to the crt-list file unless a line names it already.
fn list_on_disk(crt_list: &Path, file: &str) -> Result<(), String> {
    let io = |e: std::io::Error| format!("{}: {e}", crt_list.display());
    let text = match std::fs::read_to_string(crt_list) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(io(e)),
    };
    if text
        .lines()
        .any(|l| l.split_whitespace().next() == Some(file))
    {
        return Ok(());
    }
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(crt_list)
        .map_err(io)?;
    let sep = if text.is_empty() || text.ends_with('\n') {
        ""
    } else {
        "\n"
    };
    f.write_all(format!("{sep}{file}\n").as_bytes()).map_err(io)
}

/// Loads every certificate of `a` into the balancer behind `socket` and writes it for a
/// restart (see the module). Returns one line per domain saying what changed.
pub fn install(socket: &Path, lb: &LbTlsSpec, a: &Artifacts) -> Result<Vec<String>, String> {
    // Every file read first: one unreadable and nothing is loaded.
    let bundles = a
        .tls
        .iter()
        .enumerate()
        .map(|(j, t)| bundle(j, t).map_err(|(f, m)| format!("artifacts.{f}: {m}")))
        .collect::<Result<Vec<_>, _>>()?;
    let hp = Haproxy::new(socket);
    let list = path_str(&lb.crt_list, "crt_list")?;
    let mut done = Vec::new();
    for (t, pem) in a.tls.iter().zip(&bundles) {
        let path = pem_path(lb, &t.domain);
        let file = path_str(&path, "cert_dir")?;
        let change = hp
            .install_ssl_cert(list, file, pem)
            .map_err(|e| format!("loading the certificate of {} into HAProxy: {e}", t.domain))?;
        write_private(&path, pem)?;
        list_on_disk(&lb.crt_list, file)?;
        done.push(format!(
            "{}: {file} (created {}, replaced {}, listed {})",
            t.domain, change.created, change.updated, change.listed
        ));
    }
    Ok(done)
}

/// What [`install`] would do, one line per domain (dry run; never a key's contents).
pub fn describe(lb: &LbTlsSpec, a: &Artifacts) -> Vec<String> {
    a.tls
        .iter()
        .map(|t| {
            format!(
                "load the certificate of {} ({} with key {}) into the new balancer's crt-list {} \
                 as {} (0600), served for its name at once, reached once DNS names the new VIP",
                t.domain,
                t.cert.display(),
                t.key.display(),
                lb.crt_list.display(),
                pem_path(lb, &t.domain).display()
            )
        })
        .collect()
}

/// The differences between what `vip` serves over TLS and the spec's certificates, one line
/// per domain naming it: no TLS answer, another certificate, or one that does not verify
/// against the spec's `ca` for the domain now.
pub fn verify_served(vip: SocketAddr, a: &Artifacts, timeout: Duration) -> Vec<String> {
    let now = rustls::pki_types::UnixTime::now();
    let mut diffs = Vec::new();
    for t in &a.tls {
        let want = match tls::certs(&t.cert, "cert") {
            Ok(c) => c,
            Err((_, m)) => {
                diffs.push(format!("tls {}: {m}", t.domain));
                continue;
            }
        };
        let served = match drivers::tls_probe::presented_chain(vip, &t.domain, timeout) {
            Ok(c) => c,
            Err(e) => {
                diffs.push(format!("tls {}: no certificate from {vip}: {e}", t.domain));
                continue;
            }
        };
        if served[0] != want[0] {
            let fp = |c: &rustls::pki_types::CertificateDer<'_>| {
                drivers::lb::haproxy::der_fingerprint(c.as_ref())
            };
            diffs.push(format!(
                "tls {}: {vip} serves certificate SHA-1 {}, the spec's ({}) is {}",
                t.domain,
                fp(&served[0]),
                t.cert.display(),
                fp(&want[0])
            ));
            continue;
        }
        if let Err((f, m)) = tls::verify_chain(&served, t, now) {
            diffs.push(format!(
                "tls {}: the chain {vip} serves does not verify ({f}): {m}",
                t.domain
            ));
        }
    }
    diffs
}
