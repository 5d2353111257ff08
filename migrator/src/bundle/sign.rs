//! The bundle signing key: an ed25519 seed in a file readable by its owner only (created with
//! mode 0600 when missing, from the OS RNG), and its public key written next to it as
//! `<key>.pub` (hex), the file customers and `bundle verify` on other hosts are given.

use super::{BundleError, Result};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The public key file of `key`: `<key>.pub`.
pub fn public_path(key: &Path) -> PathBuf {
    let mut s = key.as_os_str().to_owned();
    s.push(".pub");
    PathBuf::from(s)
}

/// Loads the signing key in `path`, creating it (and its public key file) when missing.
pub fn load_or_create(path: &Path) -> Result<SigningKey> {
    let bad = |message: String| BundleError::Key {
        path: path.to_path_buf(),
        message,
    };
    if !path.exists() {
        let mut seed = [0u8; 32];
        // SAFETY: the buffer is valid for its length; getrandom fills it or fails.
        let n = unsafe { libc::getrandom(seed.as_mut_ptr().cast(), seed.len(), 0) };
        if n != seed.len() as isize {
            return Err(bad("the OS random generator failed".into()));
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(BundleError::io(dir))?;
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(BundleError::io(path))?;
        f.write_all(format!("{}\n", hex::encode(seed)).as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(BundleError::io(path))?;
    }
    let text = drivers::secret::read_secret_file("--key", path).map_err(|e| bad(e.problem))?;
    let seed: [u8; 32] = hex::decode(&text)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| bad("not an ed25519 key (64 hex digits expected)".into()))?;
    let key = SigningKey::from_bytes(&seed);
    let public = public_path(path);
    let want = hex::encode(key.verifying_key().to_bytes());
    match std::fs::read_to_string(&public) {
        Ok(t) if t.trim() == want => {}
        Ok(_) => {
            return Err(bad(format!(
                "its public key file {} holds another key; move it away",
                public.display()
            )))
        }
        Err(_) => std::fs::write(&public, format!("{want}\n")).map_err(BundleError::io(&public))?,
    }
    Ok(key)
}

/// Reads a public key file (hex).
pub fn load_public(path: &Path) -> Result<VerifyingKey> {
    let bad = |message: String| BundleError::Key {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    let bytes: [u8; 32] = hex::decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| bad("not an ed25519 public key (64 hex digits expected)".into()))?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| bad(e.to_string()))
}

/// The signature of `msg`, hex.
pub fn sign(key: &SigningKey, msg: &[u8]) -> String {
    hex::encode(key.sign(msg).to_bytes())
}

/// Whether `sig_hex` is `key`'s signature of `msg`.
pub fn verify(key: &VerifyingKey, msg: &[u8], sig_hex: &str) -> bool {
    let Some(bytes) = hex::decode(sig_hex.trim())
        .ok()
        .and_then(|b| <[u8; 64]>::try_from(b).ok())
    else {
        return false;
    };
    key.verify(msg, &Signature::from_bytes(&bytes)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_key_is_created_0600_with_its_public_key_and_signs() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("keys/bundle.key");
        let k = load_or_create(&p).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(load_or_create(&p).unwrap().to_bytes(), k.to_bytes());
        let public = load_public(&public_path(&p)).unwrap();
        let sig = sign(&k, b"manifest");
        assert!(verify(&public, b"manifest", &sig));
        assert!(!verify(&public, b"manifest!", &sig));
        assert!(!verify(&public, b"manifest", "00"));
        // A key readable by others is refused, naming the file.
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load_or_create(&p).unwrap_err().to_string();
        assert!(e.contains("bundle.key") && e.contains("chmod 600"), "{e}");
    }
}
