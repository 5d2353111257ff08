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

/// What [`script`] does, in one line (dry run, report).
pub fn describe(site: &str, stage: &str, enable: bool) -> String {
    if enable {
        format!("enable {stage}/{site}/active (crontab jobs, php-pool.conf, nginx-rules.conf, tls)")
    } else {
        format!("disable {stage}/{site}/active (kept as active.disabled)")
    }
}

/// Runs [`script`] with the local shell (the stage is on the migrator's host, or a test).
pub fn apply_locally(site: &str, stage: &str, enable: bool) -> Result<(), String> {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(script(site, stage, enable))
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
