//! Secrets of the lab: random passwords, the TSIG key (`keymgr -t`), SSH host and client
//! keys. Every secret file is 0600 inside a 0700 `private/` directory; nothing is logged.

use crate::error::{LabError, Result};
use crate::process::run;
use std::io::Read;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

/// A random alphanumeric password from the kernel's CSPRNG.
pub fn password(len: usize) -> Result<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut raw = vec![0u8; len * 2];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut raw))
        .map_err(LabError::io("reading /dev/urandom", "/dev/urandom"))?;
    // 256 % 57 bias is irrelevant for a lab password of this length.
    Ok(raw
        .iter()
        .take(len)
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect())
}

/// Short random hex id (run ids).
pub fn run_id() -> Result<String> {
    let mut raw = [0u8; 3];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut raw))
        .map_err(LabError::io("reading /dev/urandom", "/dev/urandom"))?;
    Ok(raw.iter().map(|b| format!("{b:02x}")).collect())
}

/// Creates a 0700 directory.
pub fn private_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(LabError::io("creating private dir", dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(LabError::io("chmod 0700", dir))
}

/// Writes a 0600 file (created with that mode, never world-readable in between).
pub fn write_secret(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(LabError::io("creating secret file", path))?;
    f.write_all(data)
        .map_err(LabError::io("writing secret file", path))
}

/// Generates a TSIG key with `keymgr -t NAME hmac-sha256` into `path` (Knot's YAML format).
pub fn tsig_key(name: &str, path: &Path) -> Result<()> {
    let out = run(Command::new("keymgr").args(["-t", name, "hmac-sha256"]))?;
    write_secret(path, out.as_bytes())
}

/// Generates an ed25519 key pair at `path` / `path.pub`; returns the public key line.
pub fn ssh_key(path: &Path, comment: &str) -> Result<String> {
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(path.with_extension("pub"));
    run(Command::new("ssh-keygen").args([
        "-q",
        "-t",
        "ed25519",
        "-N",
        "",
        "-C",
        comment,
        "-f",
        &path.to_string_lossy(),
    ]))?;
    let pubpath = format!("{}.pub", path.display());
    std::fs::read_to_string(&pubpath)
        .map(|s| s.trim().to_string())
        .map_err(LabError::io("reading public key", pubpath))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_random_and_alphanumeric() {
        let a = password(20).unwrap();
        let b = password(20).unwrap();
        assert_eq!(a.len(), 20);
        assert_ne!(a, b);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
    }

    #[test]
    fn secret_files_are_0600() {
        let p = std::env::temp_dir().join(format!("lab-secret-{}", std::process::id()));
        write_secret(&p, b"x").unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::remove_file(&p).unwrap();
    }
}
