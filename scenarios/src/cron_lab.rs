//! `lab up --artifacts` (issue 20): every site gets one cron job, and each DC a cron daemon
//! (`scenarios crond`, [`crate::crond`]) over its artifacts stage.
//!
//! - The job: `php /homez.<old>/<login>/www/cron.php` every 10 s (`*/10 * * * * *`), as root,
//!   through `migrator cron-run` ([`crate::php_app::cron_php`]: a row and a file per slot).
//! - old-dc: the job is active from `lab up` under `<state>/old-dc/artifacts/<login>/active/
//!   crontab` (`--side old`), as an operator installed it before the move; the migrator's
//!   commit points disable/enable that directory (`artifacts.old_stage_dir`).
//! - new-dc: `<state>/new-dc/artifacts` starts empty; the migrator stages each site's crontab
//!   there at prepare (over new-dc's sshd) and enables it at the switch (`artifacts.stage_dir`).
//! - Both daemons read the migration's journal and spec file from `<state>/cron/env`
//!   ([`write_env`], done when a scenario sets its migration up); until then they run nothing.

use crate::dc_services::DcDirs;
use crate::error::{LabError, Result};
use crate::process::{in_ns, spawn_daemon};
use crate::state::{ArtifactsState, DcState, LabState, Side, SiteState};
use crate::status::ServiceStatus;
use std::path::{Path, PathBuf};

/// The lab's job: name, schedule, user, script and output directory (relative to the home).
pub fn skeleton(state_dir: &Path) -> ArtifactsState {
    ArtifactsState {
        stage_dir: state_dir.join("new-dc").join("artifacts"),
        old_stage_dir: state_dir.join("old-dc").join("artifacts"),
        env_file: state_dir.join("cron").join("env"),
        job: "tick".into(),
        schedule: "*/10 * * * * *".into(),
        user: "root".into(),
        script: "www/cron.php".into(),
        out_dir: "www/cron".into(),
    }
}

/// The job's command for a site (what the site spec's `artifacts.cron[0].command` says).
pub fn command(a: &ArtifactsState, site: &SiteState) -> String {
    format!("php {}", site.home.join(&a.script).display())
}

/// Quotes a word for `sh`.
fn q(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// old-dc's active crontab of a site: the line prepare stages for new-dc, with `--side old`
/// and enabled (`migrator::artifacts::install::crontab`'s format).
pub fn old_crontab(a: &ArtifactsState, site: &SiteState) -> String {
    format!(
        "# site {login}: installed by lab up (old-dc owns it until the switch)\n\
         {} {} migrator cron-run --site {login} --job {} --side old -- sh -c {}\n",
        a.schedule,
        a.user,
        a.job,
        q(&command(a, site)),
        login = site.login
    )
}

fn mk(p: &Path) -> Result<()> {
    std::fs::create_dir_all(p).map_err(LabError::io("creating artifacts dir", p))
}

fn write(p: &Path, text: &str) -> Result<()> {
    std::fs::write(p, text).map_err(LabError::io("writing artifacts file", p))
}

/// Writes each site's `cron.php` and output directory on old-dc's filer, old-dc's active
/// crontabs, and new-dc's empty stage.
pub fn install(st: &LabState, a: &ArtifactsState) -> Result<()> {
    for s in &st.sites {
        let home = st.old.filer.backing_dir.join(&s.login);
        mk(&home.join(&a.out_dir))?;
        let config = s.home.join("www").join("config.php");
        let out = s.home.join(&a.out_dir);
        write(
            &home.join(&a.script),
            &crate::php_app::cron_php(&config.to_string_lossy(), &out.to_string_lossy(), &a.job),
        )?;
        let active = a.old_stage_dir.join(&s.login).join("active");
        mk(&active)?;
        write(&active.join("crontab"), &old_crontab(a, s))?;
    }
    mk(&a.stage_dir)?;
    if let Some(d) = a.env_file.parent() {
        mk(d)?;
    }
    Ok(())
}

/// The stage a DC's daemon reads.
pub fn stage_of(a: &ArtifactsState, side: Side) -> &Path {
    match side {
        Side::Old => &a.old_stage_dir,
        Side::New => &a.stage_dir,
    }
}

/// Starts `scenarios crond` in each DC's namespaces, recorded as `<dc>/crond`.
pub fn start(st: &mut LabState, a: &ArtifactsState) -> Result<()> {
    let exe = crate::sql_proxy::scenarios_exe()?;
    // `migrator` in the crontab is the workspace's binary (absent: the system's PATH).
    let bin_dir = crate::tools::find("migrator")
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf));
    for side in [Side::Old, Side::New] {
        let dc = st.dc(side).clone();
        let dirs = DcDirs::new(&st.state_dir, &dc);
        let mut cmd = in_ns(Some(&dc.mount_ns), &dc.netns, &exe.to_string_lossy());
        cmd.arg("crond")
            .arg("--dir")
            .arg(stage_of(a, side))
            .arg("--env-file")
            .arg(&a.env_file);
        if let Some(b) = &bin_dir {
            cmd.arg("--bin-dir").arg(b);
        }
        let rec = spawn_daemon(
            &format!("{}/crond", side.label()),
            cmd,
            &dirs.logs.join("crond.log"),
        )?;
        st.processes.push(rec);
        st.save()?;
    }
    Ok(())
}

/// Names the migration's journal and spec file for both daemons (the env file they re-read
/// every second).
pub fn write_env(a: &ArtifactsState, journal: &Path, sites: &Path) -> Result<()> {
    if let Some(d) = a.env_file.parent() {
        mk(d)?;
    }
    let tmp = a.env_file.with_extension("tmp");
    write(
        &tmp,
        &format!(
            "HOSTMOVE_JOURNAL={}\nHOSTMOVE_SITES={}\n",
            journal.display(),
            sites.display()
        ),
    )?;
    std::fs::rename(&tmp, &a.env_file).map_err(LabError::io("writing cron env", &a.env_file))
}

/// The sites whose crontab is active in a stage.
pub fn active_sites(stage: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(stage)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.path().join("active").join("crontab").is_file())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// `lab status` lines of both daemons.
pub fn status_lines(st: &LabState, a: &ArtifactsState, out: &mut Vec<ServiceStatus>) {
    for side in [Side::Old, Side::New] {
        let dc: &DcState = st.dc(side);
        let stage = stage_of(a, side);
        let env = crate::crond::read_env(&a.env_file);
        let journal = env.get("HOSTMOVE_JOURNAL").map_or(
            "waiting for the migration's journal (env file)".to_string(),
            |j| format!("journal {j}"),
        );
        let detail = format!(
            "{} site crontab(s) active; {journal}",
            active_sites(stage).len()
        );
        out.push(crate::status::line(
            st,
            format!("{}/crond", side.label()),
            &dc.netns,
            stage.display().to_string(),
            Ok::<String, String>(detail),
        ));
    }
}

/// Where a site's cron runs write their files on a DC's filer (host view).
pub fn out_dir_on(st: &LabState, a: &ArtifactsState, side: Side, login: &str) -> PathBuf {
    st.dc(side).filer.backing_dir.join(login).join(&a.out_dir)
}
