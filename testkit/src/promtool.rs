//! `promtool` (Debian package `prometheus`, installed by `scripts/install-deps.sh`): the
//! reference checker of the Prometheus exposition format and of rule files.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

fn promtool() -> Result<Command, String> {
    let found = Command::new("promtool")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        return Err("promtool not found: install the Debian package prometheus \
                    (bash scripts/install-deps.sh)"
            .into());
    }
    Ok(Command::new("promtool"))
}

/// `promtool check metrics` on `text`: Ok when it passes with no lint problem, else its
/// complaints.
pub fn check_metrics(text: &str) -> Result<(), String> {
    let mut child = promtool()?
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("promtool: {e}"))?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(text.as_bytes())
        .map_err(|e| format!("promtool stdin: {e}"))?;
    let out = child
        .wait_with_output()
        .map_err(|e| format!("promtool: {e}"))?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && said.trim().is_empty() {
        Ok(())
    } else {
        Err(format!("promtool check metrics: {}\n{said}", out.status))
    }
}

/// `promtool check rules FILE`: Ok with its report, or its complaints.
pub fn check_rules(file: &Path) -> Result<String, String> {
    let out = promtool()?
        .args(["check", "rules"])
        .arg(file)
        .output()
        .map_err(|e| format!("promtool: {e}"))?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(said)
    } else {
        Err(format!("promtool check rules {}: {said}", file.display()))
    }
}
