//! Finding the workspace's own binaries the lab runs as separate processes (`sql-proxy`,
//! `migrator`): `$HOSTMOVE_BIN_DIR`, else next to the running executable (cargo puts every
//! workspace binary of a profile in the same directory; a test binary lives one level down, in
//! `deps/`).

use crate::error::{LabError, Result};
use std::path::PathBuf;

/// Environment variable naming the directory holding `sql-proxy` and `migrator`.
pub const BIN_DIR_ENV: &str = "HOSTMOVE_BIN_DIR";

/// Absolute path of workspace binary `name`, or an error saying how to build it.
pub fn find(name: &str) -> Result<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = std::env::var_os(BIN_DIR_ENV) {
        dirs.push(PathBuf::from(d));
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(d) = exe.parent() {
            dirs.push(d.to_path_buf());
            if d.file_name().is_some_and(|n| n == "deps") {
                if let Some(up) = d.parent() {
                    dirs.push(up.to_path_buf());
                }
            }
        }
    }
    if let Some(p) = find_in(&dirs, name) {
        return Ok(p);
    }
    Err(LabError::Command {
        command: name.to_string(),
        status: "not found".into(),
        stderr: format!(
            "looked in {dirs:?}; build it with `cargo build -p {name}` (same profile as this \
             binary) or set {BIN_DIR_ENV}"
        ),
    })
}

/// The first `dir/name` that is a file, made absolute: daemons are started inside other
/// namespaces and directories, where a relative `$HOSTMOVE_BIN_DIR` (`target/release`) would
/// not resolve.
fn find_in(dirs: &[PathBuf], name: &str) -> Option<PathBuf> {
    dirs.iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .and_then(|p| std::path::absolute(p).ok())
}

/// [`find`], and when the binary is missing, `cargo build -p <name>` in the profile of the
/// running executable (for tests run with `cargo test -p scenarios`, which builds only this
/// package's binaries; `cargo test --workspace` has built them already).
pub fn find_or_build(name: &str) -> Result<PathBuf> {
    if let Ok(p) = find(name) {
        return Ok(p);
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let release = std::env::current_exe()
        .map(|e| e.components().any(|c| c.as_os_str() == "release"))
        .unwrap_or(false);
    let mut cmd = std::process::Command::new(cargo);
    cmd.args(["build", "--quiet", "-p", name, "--bin", name]);
    if release {
        cmd.arg("--release");
    }
    crate::process::run(&mut cmd)?;
    find(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relative_directory_gives_an_absolute_path() {
        // Tests run in the crate's directory.
        let p = find_in(
            &[PathBuf::from("nowhere"), PathBuf::from("src")],
            "tools.rs",
        )
        .unwrap();
        assert!(p.is_absolute(), "{}", p.display());
        assert!(p.ends_with("src/tools.rs"));
        assert!(find_in(&[PathBuf::from("src")], "no-such-binary").is_none());
    }
}
