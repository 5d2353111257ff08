//! A domain's certificate and key, checked before anything is installed: the key file is mode
//! 0600 (no group or other bits), it holds the private key of the chain's first certificate,
//! and the chain verifies for the domain now (not expired, not yet valid, issued by `ca`, or
//! by the public roots when no `ca` is named). The key is never logged: errors name its file,
//! never its contents.

use super::TlsSpec;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use std::path::Path;
use std::sync::Arc;

/// What a certificate check found wrong: the field at fault (`cert`, `key`, `ca`) and why.
pub type TlsFault = (&'static str, String);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

pub(crate) fn certs(
    path: &Path,
    field: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsFault> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| (field, format!("{}: {e}", path.display())))?
        .collect::<Result<_, _>>()
        .map_err(|e| (field, format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err((field, format!("{}: no PEM certificate", path.display())));
    }
    Ok(certs)
}

/// The key file must not be readable by group or others.
fn key_mode(path: &Path) -> Result<(), TlsFault> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| ("key", format!("{}: {e}", path.display())))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err((
            "key",
            format!(
                "{}: mode {mode:o}; a private key must be 0600 (chmod 600)",
                path.display()
            ),
        ));
    }
    Ok(())
}

/// Checks one domain's certificate and key at `now` (see the module).
pub fn check(t: &TlsSpec, now: UnixTime) -> Result<(), TlsFault> {
    let chain = certs(&t.cert, "cert")?;
    key_mode(&t.key)?;
    // The error of a PEM parse never carries the key's bytes.
    let key = PrivateKeyDer::from_pem_file(&t.key).map_err(|e| {
        (
            "key",
            format!("{}: no private key read ({e})", t.key.display()),
        )
    })?;
    rustls::sign::CertifiedKey::from_der(chain.clone(), key, &provider()).map_err(|e| {
        let why = match e {
            rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                "does not match the certificate".to_string()
            }
            other => other.to_string(),
        };
        (
            "key",
            format!("{} {why} ({})", t.key.display(), t.cert.display()),
        )
    })?;
    verify_chain(&chain, t, now)
}

/// Checks that `chain` (leaf first) verifies for `t.domain` at `now`, issued by `t.ca` (or
/// the public roots when it names none); the fault is the field and why.
pub fn verify_chain(
    chain: &[CertificateDer<'static>],
    t: &TlsSpec,
    now: UnixTime,
) -> Result<(), TlsFault> {
    let Some((leaf, rest)) = chain.split_first() else {
        return Err(("cert", "no certificate".into()));
    };
    let mut roots = rustls::RootCertStore::empty();
    match &t.ca {
        Some(ca) => {
            for c in certs(ca, "ca")? {
                roots
                    .add(c)
                    .map_err(|e| ("ca", format!("{}: {e}", ca.display())))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| ("ca", e.to_string()))?;
    let name = ServerName::try_from(t.domain.clone())
        .map_err(|e| ("domain", format!("{:?}: {e}", t.domain)))?;
    use rustls::client::danger::ServerCertVerifier;
    verifier
        .verify_server_cert(leaf, rest, &name, &[], now)
        .map_err(|e| {
            let why = match e {
                rustls::Error::InvalidCertificate(rustls::CertificateError::Expired) => {
                    "expired".to_string()
                }
                rustls::Error::InvalidCertificate(rustls::CertificateError::ExpiredContext {
                    time,
                    not_after,
                }) => format!(
                    "expired (not after {} s, now {} s since the epoch)",
                    not_after.as_secs(),
                    time.as_secs()
                ),
                other => other.to_string(),
            };
            (
                "cert",
                format!("{} for {}: {why}", t.cert.display(), t.domain),
            )
        })?;
    Ok(())
}
