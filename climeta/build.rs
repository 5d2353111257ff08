//! Records the git commit the binaries are built from (`HOSTMOVE_COMMIT` when the packaging
//! script or CI sets it, else `git rev-parse`), and reruns when HEAD moves.

use std::path::PathBuf;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

fn main() {
    println!("cargo:rerun-if-env-changed=HOSTMOVE_COMMIT");
    let commit = match std::env::var("HOSTMOVE_COMMIT") {
        Ok(c) if !c.trim().is_empty() => c.trim().to_string(),
        _ => {
            // Rerun when HEAD or the branch it names moves (a worktree's git dir is elsewhere).
            // Only files that exist: cargo reruns the script on every build for a missing one.
            let watch = |p: PathBuf| {
                if p.exists() {
                    println!("cargo:rerun-if-changed={}", p.display());
                }
            };
            if let Some(dir) = git(&["rev-parse", "--git-dir"]).map(PathBuf::from) {
                watch(dir.join("HEAD"));
                if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
                    let common = git(&["rev-parse", "--git-common-dir"])
                        .map(PathBuf::from)
                        .unwrap_or(dir.clone());
                    watch(common.join(r));
                    watch(common.join("packed-refs"));
                }
            }
            git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into())
        }
    };
    println!("cargo:rustc-env=HOSTMOVE_COMMIT={commit}");
}
