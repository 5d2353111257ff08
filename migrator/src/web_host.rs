//! Preparing a site on the new web server the way an operator does it in production: over SSH
//! with the system OpenSSH client (`StrictHostKeyChecking=yes` against the spec's known_hosts
//! file, which is never written; key authentication; `BatchMode`, so nothing ever prompts), one
//! idempotent POSIX shell script per site, fed on stdin:
//! 1. each home's compat path: the customer's OLD absolute home (`/homez.<old>/<login>`), a
//!    symlink to the new home, made in the web server's own filesystem (in the staging lab:
//!    inside new-dc's private mount namespace, where its sshd runs). An existing link pointing
//!    elsewhere, or a non-link at that path, is a refusal, never overwritten;
//! 2. the nginx `map` line `server_name document_root;`, appended once;
//! 3. the nginx reload command, on every run (graceful; a reload that failed after the line was
//!    appended is then done by the next run instead of never).
//!
//! [`describe`] renders the same actions for a dry run.

use crate::site_spec::{SiteSpec, WebHostSpec};
use crate::systems::{Dc, SysResult, SystemError};
use std::io::Write;
use std::process::{Command, Stdio};

/// Quotes a word for the remote POSIX shell.
fn q(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The script `prepare` runs on the web server.
pub fn script(spec: &SiteSpec, w: &WebHostSpec) -> String {
    let mut s = String::from("set -eu\n");
    for h in &spec.homes {
        let (Some(link), Some(target)) = (&h.compat_link, &h.compat_target) else {
            continue;
        };
        let (link, target) = (link.to_string_lossy(), target.to_string_lossy());
        s.push_str(&format!(
            "link={} target={}\n\
             mkdir -p \"$(dirname \"$link\")\"\n\
             if [ -L \"$link\" ]; then\n  cur=$(readlink \"$link\")\n  \
             [ \"$cur\" = \"$target\" ] || {{ echo \"compat path $link points to $cur, expected $target\" >&2; exit 3; }}\n\
             elif [ -e \"$link\" ]; then\n  echo \"compat path $link exists and is not a symlink\" >&2; exit 3\n\
             else\n  ln -s \"$target\" \"$link\"\nfi\n",
            q(&link),
            q(&target)
        ));
    }
    let line = format!("{} {};", w.server_name, w.document_root.display());
    s.push_str(&format!(
        "line={} map={}\n\
         if ! grep -qxF -- \"$line\" \"$map\"; then\n  printf '%s\\n' \"$line\" >> \"$map\"\nfi\n{}\n",
        q(&line),
        q(&w.nginx_map.to_string_lossy()),
        w.nginx_reload
    ));
    s
}

/// The `ssh` invocation (no user config, host key required to be known, no prompts).
fn ssh(w: &WebHostSpec) -> Command {
    let mut c = Command::new("ssh");
    c.args(["-F", "/dev/null", "-p", &w.port.to_string(), "-i"])
        .arg(&w.identity)
        .args([
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "GlobalKnownHostsFile=/dev/null",
            "-o",
            "ConnectTimeout=10",
            "-o",
        ])
        .arg(format!("UserKnownHostsFile={}", w.known_hosts.display()))
        .arg(&w.ssh)
        .args(["sh", "-s"]);
    c
}

/// What `prepare` does on the web server, one line per action (dry run).
pub fn describe(spec: &SiteSpec) -> Vec<String> {
    let Some(w) = &spec.new_web_host else {
        return Vec::new();
    };
    let via = format!(
        "ssh {}:{} (host key from {}, key {})",
        w.ssh,
        w.port,
        w.known_hosts.display(),
        w.identity.display()
    );
    let a = &spec.artifacts;
    let mut out: Vec<String> = crate::artifacts::install::describe(&spec.site, a.stage(), a)
        .into_iter()
        .map(|l| format!("{via}: {l}"))
        .collect();
    for h in &spec.homes {
        if let (Some(l), Some(t)) = (&h.compat_link, &h.compat_target) {
            out.push(format!(
                "{via}: compat path {} -> {}",
                l.display(),
                t.display()
            ));
        }
    }
    out.push(format!(
        "{via}: nginx map {}: `{} {};`, then `{}`",
        w.nginx_map.display(),
        w.server_name,
        w.document_root.display(),
        w.nginx_reload
    ));
    out
}

/// Runs the script on the web server. Idempotent.
pub fn prepare(spec: &SiteSpec, w: &WebHostSpec) -> SysResult<()> {
    let err = |m: String| SystemError::new("web-host", Dc::New, m);
    // A spec built in memory has not been through `SpecFile::validate`: check the map line
    // here too, before anything reaches the server.
    crate::site_spec::check_map_entry(w)
        .map_err(|(field, m)| err(format!("{}: new_web_host.{field}: {m}", spec.site)))?;
    // The artifacts' staging first (all files read here: one unreadable and nothing is sent).
    let staged = if spec.artifacts.is_empty() {
        String::new()
    } else {
        let a = &spec.artifacts;
        let s = crate::artifacts::install::script(&spec.site, a.stage(), a).map_err(|(f, m)| {
            SystemError::new(
                "web-host",
                Dc::New,
                format!("{}: artifacts.{f}: {m}", spec.site),
            )
        })?;
        // Its own subshell: its `set -eu` and trap end with it; a failure still fails the run.
        format!("set -eu\n(\n{s})\n")
    };
    let text = format!("{staged}{}", script(spec, w));
    run_remote(w, &text, &format!("preparing {}", spec.site))
}

/// Enables (or disables) the site's staged artifacts on the web server
/// ([`crate::artifacts::activate`]), then reloads its nginx and php-fpm (`nginx_reload`,
/// `php_reload`) in the same script. Idempotent; a failed reload fails it.
pub fn activate_artifacts(spec: &SiteSpec, w: &WebHostSpec, enable: bool) -> SysResult<()> {
    use crate::artifacts::activate;
    let a = &spec.artifacts;
    let reloads = activate::reloads(a, Some(&w.nginx_reload), w.php_reload.as_deref());
    let text = activate::script_with_reloads(&spec.site, a.stage(), enable, &reloads);
    let what = if enable { "enabling" } else { "disabling" };
    run_remote(w, &text, &format!("{what} the artifacts of {}", spec.site))
}

/// Runs `text` with the web server's shell over ssh; `what` starts the error message.
fn run_remote(w: &WebHostSpec, text: &str, what: &str) -> SysResult<()> {
    let err = |m: String| SystemError::new("web-host", Dc::New, m);
    let mut child = ssh(w)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| err(format!("starting ssh to {}: {e}", w.ssh)))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(text.as_bytes())
            .map_err(|e| err(format!("ssh {}: sending the script: {e}", w.ssh)))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| err(format!("ssh {}: {e}", w.ssh)))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    Err(SystemError {
        system: "web-host",
        dc: Dc::New,
        // 255 is ssh's own failure (connection, host key, authentication): may pass.
        retryable: out.status.code() == Some(255),
        message: format!("{what} on {}:{} ({}): {stderr}", w.ssh, w.port, out.status),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dir: &std::path::Path) -> SiteSpec {
        let mut s = crate::site_spec::sample("site0001");
        s.homes[0].compat_link = Some(dir.join("homez.1/site0001"));
        s.homes[0].compat_target = Some(dir.join("homez.2/site0001"));
        s.new_web_host = Some(WebHostSpec {
            ssh: "root@10.2.0.22".into(),
            port: 22,
            known_hosts: "/lab/known_hosts".into(),
            identity: "/lab/id".into(),
            nginx_map: dir.join("map"),
            nginx_reload: format!("echo reloaded >> '{}'", dir.join("reloads").display()),
            php_reload: None,
            server_name: "site0001.lab.test".into(),
            document_root: "/homez.1/site0001/www".into(),
        });
        s
    }

    fn run_local(text: &str) -> std::process::Output {
        let mut c = Command::new("sh")
            .arg("-s")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        c.wait_with_output().unwrap()
    }

    /// The script (run by a local `sh`, as sshd would) makes the link and the map line once,
    /// reloads at every run, and refuses a link that points elsewhere.
    #[test]
    fn script_is_idempotent_and_refuses_a_foreign_link() {
        let d = tempfile::tempdir().unwrap();
        let s = spec(d.path());
        let w = s.new_web_host.clone().unwrap();
        std::fs::write(&w.nginx_map, "other.lab.test /x;\n").unwrap();
        for _ in 0..2 {
            let out = run_local(&script(&s, &w));
            assert!(out.status.success(), "{out:?}");
        }
        let link = d.path().join("homez.1/site0001");
        assert_eq!(
            std::fs::read_link(&link).unwrap(),
            d.path().join("homez.2/site0001")
        );
        assert_eq!(
            std::fs::read_to_string(&w.nginx_map).unwrap(),
            "other.lab.test /x;\nsite0001.lab.test /homez.1/site0001/www;\n"
        );
        assert_eq!(
            std::fs::read_to_string(d.path().join("reloads")).unwrap(),
            "reloaded\nreloaded\n"
        );
        std::fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink("/elsewhere", &link).unwrap();
        let out = run_local(&script(&s, &w));
        assert_eq!(out.status.code(), Some(3));
        assert!(String::from_utf8_lossy(&out.stderr).contains("points to /elsewhere"));
        let lines = describe(&s);
        assert!(lines[0].contains("ssh root@10.2.0.22:22") && lines[0].contains("compat path"));
        assert!(lines[1].contains("nginx map"));
    }

    /// A reload that failed after the map line was appended is done by the next run (the
    /// line is already there then).
    #[test]
    fn a_failed_reload_is_done_by_the_next_run() {
        let d = tempfile::tempdir().unwrap();
        let s = spec(d.path());
        let mut w = s.new_web_host.clone().unwrap();
        std::fs::write(&w.nginx_map, "").unwrap();
        let good = w.nginx_reload.clone();
        w.nginx_reload = "exit 9".into();
        let out = run_local(&script(&s, &w));
        assert_eq!(out.status.code(), Some(9), "{out:?}");
        w.nginx_reload = good;
        let out = run_local(&script(&s, &w));
        assert!(out.status.success(), "{out:?}");
        assert_eq!(
            std::fs::read_to_string(d.path().join("reloads")).unwrap_or_default(),
            "reloaded\n",
            "nginx never reloaded the map line"
        );
    }

    /// Issue 18 (10): a server name or document root that would add a second map entry (or
    /// break the file) is refused before ssh is even started.
    #[test]
    fn prepare_refuses_a_map_line_that_is_not_one_entry() {
        let d = tempfile::tempdir().unwrap();
        let s = spec(d.path());
        let mut base = s.new_web_host.clone().unwrap();
        // Loopback, a closed port: without the check ssh would run and fail retryably.
        (base.ssh, base.port) = ("root@127.0.0.1".into(), 1);
        let mut w = base.clone();
        w.server_name = "site0001.lab.test /etc; evil.test".into();
        let e = prepare(&s, &w).unwrap_err();
        assert!(!e.retryable);
        assert!(e.message.contains("new_web_host.server_name"), "{e}");
        let mut w = base;
        w.document_root = "/homez.1/site0001/www;\n}".into();
        let e = prepare(&s, &w).unwrap_err();
        assert!(e.message.contains("new_web_host.document_root"), "{e}");
    }

    #[test]
    fn quoting_survives_quotes() {
        assert_eq!(q("a'b"), "'a'\\''b'");
    }
}
