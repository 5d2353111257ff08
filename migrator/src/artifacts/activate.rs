//! Enabling a site's staged artifacts on one side and disabling them on the other, at each
//! commit point (the switch's, the rollback's; an abort puts the old side back).
//!
//! A side's artifacts live under `STAGE/SITE/` ([`super::install`]). What the web server and
//! cron read is `STAGE/SITE/active/`: `crontab` (the job lines enabled), `php-pool.conf`,
//! `nginx-rules.conf`, `tls/`. The operator points `/etc/cron.d`, the php-fpm pool include and
//! the nginx include at it once; a side whose `active/` is absent runs nothing of the site.
//! - **enable**: `active/` present already: nothing; `active.disabled/` there (disabled by an
//!   earlier commit point): renamed back; else built from the staged files in a temporary
//!   directory and renamed into place (the crontab's job lines uncommented).
//! - **disable**: `active/` renamed to `active.disabled/` (kept, for a rollback).
//!
//! - **reload**: after either, that side's nginx and php-fpm reload (the commands of the spec:
//!   `new_web_host.nginx_reload` / `php_reload` for the new side, `artifacts.old_nginx_reload`
//!   / `old_php_reload` for the old one), on every run, so a reload that failed is done by the
//!   retry; a reload failing fails the script (exit 5, the command named).
//!
//! Every step is a rename, checked first, under a lock per site: the script is idempotent, and
//! a kill at any point leaves either the old or the new state of each side, which the next run
//! completes (after a killed run's script still going, if any). Jobs
//! still go through `migrator cron-run` and its owner token: an enabled crontab on the side
//! that does not own the site runs nothing.

/// Quotes a word for the POSIX shell.
fn q(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The script that enables (or disables) the artifacts staged under `stage/site`.
pub fn script(site: &str, stage: &str, enable: bool) -> String {
    // One move at a time per site (a killed migrator's script may still be running when the
    // next run starts): `flock` on `STAGE/SITE/.move.lock` where util-linux has it.
    let head = format!(
        "set -eu\ndest={}\nact=\"$dest/active\"\noff=\"$dest/active.disabled\"\n\
         if [ -d \"$dest\" ]; then\n  exec 9>\"$dest/.move.lock\"\n  \
         if command -v flock >/dev/null 2>&1; then flock 9; fi\nfi\n",
        q(&format!("{stage}/{site}"))
    );
    if !enable {
        return format!(
            "{head}if [ -d \"$act\" ]; then rm -rf \"$off\"; mv \"$act\" \"$off\"; fi\n"
        );
    }
    format!(
        "{head}if [ -d \"$act\" ]; then exit 0; fi\n\
         if [ -d \"$off\" ]; then mv \"$off\" \"$act\"; exit 0; fi\n\
         if [ ! -f \"$dest/crontab\" ]; then\n  \
           echo \"$dest: nothing staged (run prepare first)\" >&2; exit 3\nfi\n\
         rm -rf \"$dest\"/active.new.*\ntmp=\"$dest/active.new.$$\"\ntrap 'rm -rf \"$tmp\"' EXIT\n\
         umask 077\nmkdir -p \"$tmp\"\n\
         sed -e '/^#.* migrator cron-run /s/^#//' \"$dest/crontab\" > \"$tmp/crontab\"\n\
         chmod 644 \"$tmp/crontab\"\n\
         for f in php-pool.conf nginx-rules.conf; do\n  \
           if [ -f \"$dest/$f\" ]; then cp -p \"$dest/$f\" \"$tmp/$f\"; fi\ndone\n\
         if [ -d \"$dest/tls\" ]; then cp -rp \"$dest/tls\" \"$tmp/tls\"; fi\n\
         chmod 755 \"$tmp\"\nmv \"$tmp\" \"$act\"\ntrap - EXIT\n"
    )
}

/// The reloads that follow a side's move: what (`nginx`, `php-fpm`) and the shell command.
pub type Reloads<'a> = Vec<(&'static str, &'a str)>;

/// The reloads a side needs after the move of `a`: nginx when the site has rules, a pool or
/// certificates (what nginx reads), php-fpm when it has a pool; each only with a command.
pub fn reloads<'a>(
    a: &super::Artifacts,
    nginx: Option<&'a str>,
    php: Option<&'a str>,
) -> Reloads<'a> {
    let mut out = Vec::new();
    if let (true, Some(c)) = (a.needs_nginx_reload(), nginx) {
        out.push(("nginx", c));
    }
    if let (true, Some(c)) = (a.php.is_some(), php) {
        out.push(("php-fpm", c));
    }
    out
}

/// [`script`] in its own subshell (its early `exit 0` when already done ends only that), then
/// every reload, on every run; a reload failing exits 5 naming the command.
pub fn script_with_reloads(site: &str, stage: &str, enable: bool, reloads: &Reloads) -> String {
    let mut s = format!("set -eu\n(\n{})\n", script(site, stage, enable));
    for (what, cmd) in reloads {
        let msg = format!("reloading {what} failed: `{cmd}`");
        s.push_str(&format!(
            "if ! sh -c {}; then printf '%s\\n' {} >&2; exit 5; fi\n",
            q(cmd),
            q(&msg)
        ));
    }
    s
}

/// What [`script`] does, in one line (dry run, report).
pub fn describe(site: &str, stage: &str, enable: bool) -> String {
    if enable {
        format!("enable {stage}/{site}/active (crontab jobs, php-pool.conf, nginx-rules.conf, tls)")
    } else {
        format!("disable {stage}/{site}/active (kept as active.disabled)")
    }
}

/// [`describe`] followed by the reloads.
pub fn describe_with_reloads(site: &str, stage: &str, enable: bool, reloads: &Reloads) -> String {
    let mut s = describe(site, stage, enable);
    for (what, cmd) in reloads {
        s.push_str(&format!(", then reload {what}: `{cmd}`"));
    }
    s
}

/// Runs [`script`] with the local shell (the stage is on the migrator's host, or a test).
pub fn apply_locally(site: &str, stage: &str, enable: bool) -> Result<(), String> {
    apply_locally_with_reloads(site, stage, enable, &Vec::new())
}

/// [`script_with_reloads`] with the local shell (the old side, on the migrator's host).
pub fn apply_locally_with_reloads(
    site: &str,
    stage: &str,
    enable: bool,
    reloads: &Reloads,
) -> Result<(), String> {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(script_with_reloads(site, stage, enable, reloads))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output()
        .map_err(|e| format!("starting sh: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} the artifacts of {site} in {stage}: {} ({})",
            if enable { "enabling" } else { "disabling" },
            String::from_utf8_lossy(&out.stderr).trim(),
            out.status
        ))
    }
}
