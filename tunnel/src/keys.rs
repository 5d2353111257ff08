//! Keys: X25519 pairs generated with `wireguard-control`, written as base64 files
//! `<key_dir>/<name>.key` (mode 0600, created that way, never widened) and `<name>.pub`.
//! Loading a private key refuses any file readable or writable by group or others.
//! Rotation stages the next pair as `<name>.key.next` / `<name>.pub.next` and commits by rename.

use crate::error::{Error, Result};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use wireguard_control::Key;

/// Paths of one generated pair.
#[derive(Debug, Clone)]
pub struct KeyFiles {
    pub private: PathBuf,
    pub public: PathBuf,
    /// Base64 public key (safe to print and to send to the other side).
    pub public_key: String,
}

/// Generates a pair for `name` in `dir`. Refuses to overwrite an existing private key unless
/// `force`, because losing it cuts the tunnel until every peer learns the new public key.
pub fn generate(dir: &Path, name: &str, force: bool) -> Result<KeyFiles> {
    write_pair(dir, &format!("{name}.key"), &format!("{name}.pub"), force)
}

/// Stages the next pair for rotation (`<name>.key.next`, `<name>.pub.next`), overwriting a stale
/// staged pair.
pub fn generate_next(dir: &Path, name: &str) -> Result<KeyFiles> {
    write_pair(
        dir,
        &format!("{name}.key.next"),
        &format!("{name}.pub.next"),
        true,
    )
}

fn write_pair(dir: &Path, private: &str, public: &str, force: bool) -> Result<KeyFiles> {
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| Error::KeyIo {
                path: dir.to_path_buf(),
                source,
            })?;
    }
    let private_path = dir.join(private);
    let public_path = dir.join(public);
    if private_path.exists() && !force {
        return Err(Error::Key {
            path: private_path,
            message: "already exists; pass --force to replace it (every peer then needs the new public key)".into(),
        });
    }
    let key = Key::generate_private();
    let public_key = key.get_public().to_base64();
    // Write to a temporary 0600 file then rename, so a crash never leaves a half key or a
    // moment where the key is world-readable.
    let tmp = dir.join(format!(".{private}.tmp"));
    let _ = fs::remove_file(&tmp);
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::KeyIo { path, source }
    };
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(format!("{}\n", key.to_base64()).as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(io(&tmp))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600)).map_err(io(&tmp))?;
    fs::rename(&tmp, &private_path).map_err(io(&private_path))?;
    fs::write(&public_path, format!("{public_key}\n")).map_err(io(&public_path))?;
    fs::set_permissions(&public_path, fs::Permissions::from_mode(0o644))
        .map_err(io(&public_path))?;
    Ok(KeyFiles {
        private: private_path,
        public: public_path,
        public_key,
    })
}

/// Loads a private key, refusing it when group or others have any access to the file.
pub fn load_private(path: &Path) -> Result<Key> {
    let meta = fs::metadata(path).map_err(|source| Error::KeyIo {
        path: path.to_path_buf(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(Error::KeyPermissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    read_key(path)
}

pub fn load_public(path: &Path) -> Result<Key> {
    read_key(path)
}

fn read_key(path: &Path) -> Result<Key> {
    let text = fs::read_to_string(path).map_err(|source| Error::KeyIo {
        path: path.to_path_buf(),
        source,
    })?;
    Key::from_base64(text.trim()).map_err(|_| Error::Key {
        path: path.to_path_buf(),
        message: "not a base64 WireGuard key (44 characters)".into(),
    })
}

/// Replaces the current pair of `name` by the staged `.next` pair (rename, atomic per file).
pub fn commit_next(dir: &Path, name: &str) -> Result<()> {
    for (from, to) in [
        (format!("{name}.key.next"), format!("{name}.key")),
        (format!("{name}.pub.next"), format!("{name}.pub")),
    ] {
        let (from, to) = (dir.join(from), dir.join(to));
        fs::rename(&from, &to).map_err(|source| Error::KeyIo { path: from, source })?;
    }
    Ok(())
}

/// Writes a peer's public key file (the "exchange" step: the other side's `.pub` lands here).
pub fn write_public(path: &Path, key: &Key) -> Result<()> {
    fs::write(path, format!("{}\n", key.to_base64())).map_err(|source| Error::KeyIo {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_private_key_is_0600_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        let kf = generate(dir.path(), "old-dc", false).unwrap();
        let mode = fs::metadata(&kf.private).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let k = load_private(&kf.private).unwrap();
        assert_eq!(k.get_public().to_base64(), kf.public_key);
        assert_eq!(load_public(&kf.public).unwrap().to_base64(), kf.public_key);
        // No overwrite without force.
        assert!(matches!(
            generate(dir.path(), "old-dc", false),
            Err(Error::Key { .. })
        ));
    }

    #[test]
    fn loose_private_key_is_refused_with_path_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let kf = generate(dir.path(), "a", false).unwrap();
        fs::set_permissions(&kf.private, fs::Permissions::from_mode(0o640)).unwrap();
        let err = load_private(&kf.private).unwrap_err();
        match &err {
            Error::KeyPermissions { path, mode } => {
                assert_eq!(path, &kf.private);
                assert_eq!(*mode, 0o640);
            }
            other => panic!("unexpected error {other:?}"),
        }
        assert!(err.to_string().contains("chmod 600"));
    }

    #[test]
    fn garbage_key_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.pub");
        fs::write(&p, "hello").unwrap();
        let err = load_public(&p).unwrap_err();
        assert!(
            err.to_string().contains("not a base64 WireGuard key"),
            "{err}"
        );
    }
}
