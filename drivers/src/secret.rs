//! Secret files (API keys, TSIG keys, bearer tokens): readable by their owner only, read
//! whole and trimmed, never shown. An error names the setting and the file, not the content.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Why a secret file was refused.
#[derive(Debug, thiserror::Error)]
#[error("{field} {}: {problem}", path.display())]
pub struct SecretFileError {
    /// The setting that names the file (`dns.api_key_file`, `proxy.token_file`).
    pub field: String,
    pub path: PathBuf,
    /// What is wrong with it, for the operator (never the content).
    pub problem: String,
}

/// Reads the secret in `path`, which must be readable by its owner only and not empty; `field`
/// names the setting in errors.
pub fn read_secret_file(field: &str, path: &Path) -> Result<String, SecretFileError> {
    let refuse = |problem: String| SecretFileError {
        field: field.to_string(),
        path: path.to_path_buf(),
        problem,
    };
    let io = |e: std::io::Error| refuse(format!("cannot read it: {e}"));
    let mode = std::fs::metadata(path).map_err(io)?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(refuse(format!(
            "mode {:o} is readable by others; chmod 600 it",
            mode & 0o777
        )));
    }
    let text = std::fs::read_to_string(path).map_err(io)?;
    let text = text.trim();
    if text.is_empty() {
        return Err(refuse("the file is empty".into()));
    }
    Ok(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_file_must_be_private_and_is_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("token");
        std::fs::write(&p, "s3cret\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_secret_file("proxy.token_file", &p).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("chmod 600") && text.contains("proxy.token_file"),
            "{e}"
        );
        assert!(!text.contains("s3cret"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_secret_file("proxy.token_file", &p).unwrap(), "s3cret");
        std::fs::write(&p, " \n").unwrap();
        let e = read_secret_file("proxy.token_file", &p).unwrap_err();
        assert!(e.to_string().contains("empty"), "{e}");
        let e = read_secret_file("proxy.token_file", &dir.path().join("none")).unwrap_err();
        assert!(e.to_string().contains("cannot read it"), "{e}");
    }
}
