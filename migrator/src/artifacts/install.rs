//! Staging a site's artifacts on the new web server at prepare, selected by nothing yet:
//! `STAGE/SITE/` holds `crontab` (every line commented out: disabled until the switch),
//! `tls/DOMAIN.crt` and `tls/DOMAIN.key` (0600), `php-pool.conf` and `nginx-rules.conf`.
//! Nothing outside that directory is touched: no cron reads it, no nginx or php-fpm include
//! names it until the site is switched.
//!
//! All or nothing: the whole script is built in memory first (every certificate and key read;
//! one unreadable file and nothing is sent), then the server writes a fresh temporary directory
//! beside `STAGE/SITE` and renames it into place; a failure removes the temporary directory
//! and leaves what was there before. Keys travel inside the script on the ssh channel's stdin,
//! never on a command line; no message quotes them.

use super::{php, web_rules, Artifacts};

/// Where artifacts are staged on the new web server when the spec does not say.
pub const DEFAULT_STAGE: &str = "/var/lib/hostmove/artifacts";

/// Quotes a word for the remote POSIX shell.
fn q(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// One file of the staged directory: name, mode, contents.
struct StagedFile {
    name: String,
    mode: u32,
    text: String,
}

/// The crontab of the site's jobs for the new side, every line disabled: the jobs go through
/// `migrator cron-run` (its journal and spec file from `HOSTMOVE_JOURNAL` and `HOSTMOVE_SITES`
/// in cron's environment, or from /etc/hostmove/migrator.toml), and enabling the file is the switch's business, not prepare's.
pub fn crontab(site: &str, a: &Artifacts) -> String {
    let mut out = format!("# site {site}: disabled until the switch (migrator prepare)\n");
    for j in &a.cron {
        out.push_str(&format!(
            "#{} {} migrator cron-run --site {site} --job {} --side new -- sh -c {}\n",
            j.schedule,
            j.user,
            j.name,
            q(&j.command)
        ));
    }
    out
}

fn files(site: &str, a: &Artifacts) -> Result<Vec<StagedFile>, (String, String)> {
    let mut out = vec![StagedFile {
        name: "crontab".into(),
        mode: 0o644,
        text: crontab(site, a),
    }];
    for (j, t) in a.tls.iter().enumerate() {
        let read = |p: &std::path::Path, field: &str| {
            std::fs::read_to_string(p)
                .map_err(|e| (format!("tls[{j}].{field}"), format!("{}: {e}", p.display())))
        };
        out.push(StagedFile {
            name: format!("tls/{}.crt", t.domain),
            mode: 0o644,
            text: read(&t.cert, "cert")?,
        });
        out.push(StagedFile {
            name: format!("tls/{}.key", t.domain),
            mode: 0o600,
            text: read(&t.key, "key")?,
        });
    }
    if let Some(p) = &a.php {
        out.push(StagedFile {
            name: "php-pool.conf".into(),
            mode: 0o644,
            text: php::render_pool(site, p.user_for(site), &p.listen_for(site), p),
        });
    }
    out.push(StagedFile {
        name: "nginx-rules.conf".into(),
        mode: 0o644,
        text: web_rules::render_nginx(&a.web_rules),
    });
    Ok(out)
}

/// The script that stages `a` under `stage/site` (see the module); the error is the field
/// below `artifacts.` whose file could not be read.
pub fn script(site: &str, stage: &str, a: &Artifacts) -> Result<String, (String, String)> {
    let files = files(site, a)?;
    let dest = format!("{stage}/{site}");
    let php_check = a.php.as_ref().map(php::require_script).unwrap_or_default();
    let mut s = format!(
        "set -eu\n{php_check}umask 077\nstage={}\ndest={}\ntmp=\"$dest.new.$$\"\n\
         mkdir -p \"$stage\"\nrm -rf \"$tmp\"\ntrap 'rm -rf \"$tmp\"' EXIT\n\
         mkdir -p \"$tmp/tls\"\n",
        q(stage),
        q(&dest)
    );
    for (i, f) in files.iter().enumerate() {
        // A delimiter no file holds (PEM and generated text never contain it).
        let mut eof = format!("HOSTMOVE_EOF_{i}");
        while f.text.contains(&eof) {
            eof.push('_');
        }
        let text = if f.text.ends_with('\n') || f.text.is_empty() {
            f.text.clone()
        } else {
            format!("{}\n", f.text)
        };
        s.push_str(&format!(
            "cat > \"$tmp\"/{} <<'{eof}'\n{text}{eof}\nchmod {:o} \"$tmp\"/{}\n",
            q(&f.name),
            f.mode,
            q(&f.name)
        ));
    }
    s.push_str(
        "chmod 755 \"$tmp\" \"$tmp/tls\"\n\
         if [ -e \"$dest\" ]; then mv \"$dest\" \"$dest.old.$$\"; fi\n\
         mv \"$tmp\" \"$dest\"\nrm -rf \"$dest.old.$$\"\ntrap - EXIT\n",
    );
    Ok(s)
}

/// What prepare stages, one line per file (dry run; never a key's contents).
pub fn describe(site: &str, stage: &str, a: &Artifacts) -> Vec<String> {
    let mut out = Vec::new();
    if a.is_empty() {
        return out;
    }
    let dest = format!("{stage}/{site}");
    if !a.cron.is_empty() {
        for j in &a.cron {
            out.push(format!(
                "stage {dest}/crontab: job {} `{}` as {} (disabled until the switch; runs \
                 through `migrator cron-run`, owner side only)",
                j.name, j.schedule, j.user
            ));
        }
    }
    for t in &a.tls {
        out.push(format!(
            "stage {dest}/tls/{}.crt and .key (0600) from {} and {}",
            t.domain,
            t.cert.display(),
            t.key.display()
        ));
    }
    if let Some(p) = &a.php {
        out.push(format!(
            "stage {dest}/php-pool.conf: PHP {} {:?} (refused if the new side lacks PHP {})",
            p.version,
            p.pool,
            p.target()
        ));
    }
    for line in web_rules::render_nginx(&a.web_rules).lines() {
        out.push(format!("stage {dest}/nginx-rules.conf: {line}"));
    }
    out
}

/// Runs the staging script with the local shell (the migrator's host is the new web server,
/// or a test).
pub fn stage_locally(site: &str, stage: &str, a: &Artifacts) -> Result<(), String> {
    use std::io::Write;
    let text = script(site, stage, a).map_err(|(f, m)| format!("artifacts.{f}: {m}"))?;
    let mut child = std::process::Command::new("sh")
        .arg("-s")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting sh: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(text.as_bytes())
            .map_err(|e| format!("sh: sending the script: {e}"))?;
    }
    let out = child.wait_with_output().map_err(|e| format!("sh: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "staging the artifacts of {site} in {stage}: {} ({})",
            String::from_utf8_lossy(&out.stderr).trim(),
            out.status
        ))
    }
}

/// Compares what is staged under `stage/site` with what the spec says (verify): one line per
/// file missing or different, naming the file, never its contents.
pub fn compare_staged(site: &str, stage: &str, a: &Artifacts) -> Result<Vec<String>, String> {
    let want = files(site, a).map_err(|(f, m)| format!("artifacts.{f}: {m}"))?;
    let dest = std::path::Path::new(stage).join(site);
    let mut diffs = Vec::new();
    for f in want {
        let path = dest.join(&f.name);
        let expected = if f.text.ends_with('\n') || f.text.is_empty() {
            f.text
        } else {
            format!("{}\n", f.text)
        };
        match std::fs::read_to_string(&path) {
            Ok(have) if have == expected => {}
            Ok(_) => diffs.push(format!("artifact {} differs from the spec", path.display())),
            Err(e) => diffs.push(format!("artifact {}: {e}", path.display())),
        }
    }
    Ok(diffs)
}
