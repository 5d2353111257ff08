//! `scenarios`: the staging lab (`lab up|status|down`), scenario runs, and the traffic
//! generator the scenarios start inside the client namespace.

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use scenarios::lab::{self, LabConfig, DEFAULT_STATE_ROOT};
use scenarios::sites::SiteSpec;
use scenarios::{check, scenario, status, supervise, traffic, LabState};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "scenarios",
    about = "Staging lab: two datacenters on one machine, and scenario runs"
)]
struct Cli {
    /// Where labs keep their state (one directory per lab name).
    #[arg(long, global = true, env = "HOSTMOVE_LAB_ROOT", default_value = DEFAULT_STATE_ROOT)]
    state_root: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Bring the lab up, show it, or tear it down.
    Lab {
        #[command(subcommand)]
        cmd: LabCmd,
    },
    /// Run scenario <name>: lab up, traffic, check expect.toml, lab down.
    Run {
        name: String,
        /// Folder holding <name>/scenario.toml (default: ./scenarios, then the crate's folder).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Lab size instead of the scenario's (a wave covering the whole lab follows it).
        #[arg(long)]
        sites: Option<usize>,
    },
    /// Generate traffic (run inside the client namespace: `ip netns exec <client> …`).
    Traffic {
        #[arg(long)]
        state_dir: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// TrafficSpec as JSON (see scenario.toml [traffic]); defaults if omitted.
        #[arg(long)]
        spec: Option<String>,
    },
    /// Probe every site from the client namespace: read, write, read-your-write (JSON out).
    Probe {
        #[arg(long)]
        state_dir: PathBuf,
    },
    /// Keep a daemon running: restart it when it exits (backoff, start limit), its PID in a
    /// status file; SIGTERM stops it by that PID. `lab up` runs old-dc's sql-proxy this way.
    Supervise {
        /// Name in the logs and the status file.
        #[arg(long)]
        service: String,
        /// JSON status file: the current child's PID and start time, restarts, last exit.
        #[arg(long)]
        status_file: PathBuf,
        /// The child's stdout and stderr (appended).
        #[arg(long)]
        child_log: PathBuf,
        /// First restart delay; doubles while the child keeps dying quickly.
        #[arg(long, default_value_t = 200)]
        backoff_min_ms: u64,
        #[arg(long, default_value_t = 5000)]
        backoff_max_ms: u64,
        /// A run at least this long resets the delay.
        #[arg(long, default_value_t = 10)]
        stable_secs: u64,
        /// Give up after this many starts within --window-secs.
        #[arg(long, default_value_t = 10)]
        max_starts: usize,
        #[arg(long, default_value_t = 60)]
        window_secs: u64,
        /// SIGTERM → SIGKILL grace when stopping the child.
        #[arg(long, default_value_t = 10)]
        stop_grace_secs: u64,
        /// The program and its arguments (after `--`).
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// The lab's cron daemon (one per DC, started by `lab up --artifacts`): every second, runs
    /// the due lines of every DIR/*/active/crontab (`SCHEDULE USER COMMAND`, 6-field
    /// schedules with seconds first) with `sh -c`; the commands get HOSTMOVE_JOURNAL and
    /// HOSTMOVE_SITES from --env-file (re-read each second) or this environment.
    Crond {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        env_file: Option<PathBuf>,
        /// Put first on the commands' PATH (the directory holding `migrator`).
        #[arg(long)]
        bin_dir: Option<PathBuf>,
    },
    /// Check a traffic log against the lab: failed requests and lost writes (on the side that
    /// serves each site now, read from the SQL proxy, HAProxy and DNS).
    Check {
        #[arg(long, default_value = "lab")]
        name: String,
        #[arg(long)]
        log: PathBuf,
    },
}

#[derive(Subcommand)]
enum LabCmd {
    /// Build the lab (a healthy lab of the same size is left untouched).
    Up {
        #[arg(long, default_value = "lab")]
        name: String,
        #[arg(long, default_value_t = 50)]
        sites: usize,
        /// Do not bring the WireGuard tunnel up.
        #[arg(long)]
        no_tunnel: bool,
        /// Keep filers and MariaDB data on the state root's disk instead of a tmpfs.
        #[arg(long)]
        on_disk: bool,
        /// The fleet topology: a 3-node Galera control store (namespace `ctl`) and a second
        /// sql-proxy on old-dc's second DB endpoint (`sql2.old.lab.test`), both in one fleet.
        #[arg(long)]
        fleet: bool,
        /// Sites get their artifacts (issue 20): HTTPS on both VIPs with per-site certificates
        /// from a lab CA (old-dc serves them; new-dc only a default one until prepare), web
        /// rules and their own PHP pool on both DCs, old-dc's enabled; a cron job per site
        /// (every 10 s, a row and a file per run) and a cron daemon per DC (`scenarios crond`).
        #[arg(long)]
        artifacts: bool,
        #[arg(long)]
        small_files: Option<usize>,
        #[arg(long)]
        large_files: Option<usize>,
        #[arg(long)]
        large_file_kib: Option<usize>,
        #[arg(long)]
        rows: Option<usize>,
        /// Print what would be built, build nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Every service with its address and health.
    Status {
        #[arg(long, default_value = "lab")]
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Stop every process by PID, unmount, delete namespaces and the lab's files.
    Down {
        #[arg(long, default_value = "lab")]
        name: String,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Lab { cmd } => match cmd {
            LabCmd::Up {
                name,
                sites,
                no_tunnel,
                on_disk,
                fleet,
                artifacts,
                small_files,
                large_files,
                large_file_kib,
                rows,
                dry_run,
            } => {
                let d = SiteSpec::default();
                let mut cfg = LabConfig::new(&name, &cli.state_root, sites);
                cfg.tunnel = !no_tunnel;
                cfg.tmpfs = !on_disk;
                cfg.fleet = fleet;
                cfg.artifacts = artifacts;
                cfg.spec = SiteSpec {
                    small_files: small_files.unwrap_or(d.small_files),
                    large_files: large_files.unwrap_or(d.large_files),
                    large_file_kib: large_file_kib.unwrap_or(d.large_file_kib),
                    rows: rows.unwrap_or(d.rows),
                    db_mib: Vec::new(),
                };
                if dry_run {
                    println!(
                        "would build lab `{name}` in {}: namespaces old-dc, new-dc, dns, client, internet; \
{sites} sites ({} small + {} large files of {} KiB, {} rows each) on old-dc; tunnel: {}; artifacts: {}",
                        cfg.state_dir().display(),
                        cfg.spec.small_files,
                        cfg.spec.large_files,
                        cfg.spec.large_file_kib,
                        cfg.spec.rows,
                        cfg.tunnel,
                        cfg.artifacts
                    );
                    return Ok(());
                }
                let before = LabState::load(&cfg.state_dir()).ok().map(|s| s.run_id);
                let st = lab::up(&cfg).with_context(|| format!("lab up `{name}`"))?;
                if before.as_deref() == Some(st.run_id.as_str()) {
                    println!(
                        "lab `{name}` is already up and healthy (run {}): nothing changed",
                        st.run_id
                    );
                    print!("{}", status::render(&st, &status::status(&st)));
                    return Ok(());
                }
                println!(
                    "lab `{}` up in {:.1} s: {} sites, state {}",
                    st.name,
                    st.up_secs,
                    st.sites.len(),
                    LabState::path(&st.state_dir).display()
                );
                for (step, secs) in &st.step_secs {
                    println!("  {secs:>7.2} s  {step}");
                }
                print!("{}", status::render(&st, &status::status(&st)));
            }
            LabCmd::Status { name, json } => {
                let st = LabState::load(&cli.state_root.join(&name))
                    .with_context(|| format!("lab `{name}` is not up"))?;
                let lines = status::status(&st);
                if json {
                    println!("{}", serde_json::to_string_pretty(&lines)?);
                } else {
                    print!("{}", status::render(&st, &lines));
                }
                if lines.iter().any(|l| !l.healthy) {
                    std::process::exit(1);
                }
            }
            LabCmd::Down { name } => {
                let report = lab::down(&name, &cli.state_root)?;
                for (step, secs) in &report.step_secs {
                    println!("  {secs:>7.2} s  {step}");
                }
                if report.leftovers.is_empty() {
                    println!("lab `{name}` is down; nothing left behind");
                } else {
                    bail!("lab `{name}`: left behind: {:?}", report.leftovers);
                }
            }
        },
        Cmd::Run { name, dir, sites } => {
            let base = match dir {
                Some(d) => d,
                None if PathBuf::from("scenarios").join(&name).is_dir() => {
                    PathBuf::from("scenarios")
                }
                None => PathBuf::from(env!("CARGO_MANIFEST_DIR")),
            };
            let exe = std::env::current_exe().context("locating the scenarios binary")?;
            std::fs::create_dir_all(&cli.state_root)?;
            let opts = scenario::RunOptions { sites };
            let report = scenario::run_with(&base.join(&name), &cli.state_root, &exe, &opts)
                .with_context(|| format!("scenario `{name}`"))?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            if let Some(m) = &report.migration {
                println!(
                    "migration: {} sites in {:.1} s ({:.1} sites/min); freeze p50 {} ms, p99 {} ms, max {} ms; failed in freezes {}, during faults {}, outside {}",
                    m.sites,
                    m.wave_secs,
                    m.sites_per_minute,
                    m.freeze_p50_ms.map(|v| format!("{v:.0}")).unwrap_or("-".into()),
                    m.freeze_p99_ms.map(|v| format!("{v:.0}")).unwrap_or("-".into()),
                    m.freeze_max_ms.map(|v| format!("{v:.0}")).unwrap_or("-".into()),
                    report.check.failed_in_freeze,
                    report.check.failed_in_fault,
                    report.check.failed
                );
                if let Some(k) = &m.killed {
                    println!(
                        "killed worker (pid {}): {} killed {} ms into {}; its freeze windows {:?} ms, sum {} ms; the cut one ended by {} {} ms after the kill (bound {} ms)",
                        k.pid,
                        k.site,
                        k.killed_after_ms,
                        k.phase,
                        k.windows_ms,
                        k.sum_ms,
                        k.cut_ended_by.as_deref().unwrap_or("-"),
                        k.cut_ended_after_kill_ms.map_or("-".into(), |v| v.to_string()),
                        k.cut_bound_after_kill_ms.map_or("-".into(), |v| v.to_string()),
                    );
                }
                for (site, w) in m.freeze_windows_ms.iter().filter(|(_, w)| w.len() > 1) {
                    println!("  {site}: {} freeze windows {w:?} ms", w.len());
                }
            }
            if !report.passed() {
                bail!("scenario `{name}` FAILED: {}", report.violations.join("; "));
            }
            println!("scenario `{name}` passed");
        }
        Cmd::Traffic {
            state_dir,
            out,
            spec,
        } => {
            let st = LabState::load(&state_dir)?;
            let spec: traffic::TrafficSpec = match spec {
                Some(s) => serde_json::from_str(&s).context("--spec is not a TrafficSpec")?,
                None => traffic::TrafficSpec::default(),
            };
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            let summary = rt.block_on(traffic::run(&st, &spec, &out))?;
            println!("{}", serde_json::to_string(&summary)?);
        }
        Cmd::Probe { state_dir } => {
            let st = LabState::load(&state_dir)?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let probes = rt.block_on(traffic::probe_sites(&st));
            println!("{}", serde_json::to_string_pretty(&probes)?);
            if probes
                .iter()
                .any(|p| !(p.read_ok && p.write_ok && p.visible))
            {
                std::process::exit(1);
            }
        }
        Cmd::Crond {
            dir,
            env_file,
            bin_dir,
        } => scenarios::crond::run(&scenarios::crond::Options {
            stage: dir,
            env_file,
            bin_dir,
        }),
        Cmd::Supervise {
            service,
            status_file,
            child_log,
            backoff_min_ms,
            backoff_max_ms,
            stable_secs,
            max_starts,
            window_secs,
            stop_grace_secs,
            command,
        } => {
            if max_starts == 0 || backoff_min_ms > backoff_max_ms {
                bail!("--max-starts must be at least 1 and --backoff-min-ms <= --backoff-max-ms");
            }
            let opts = supervise::Options {
                service,
                status_file,
                child_log,
                policy: supervise::Policy {
                    backoff_min: Duration::from_millis(backoff_min_ms),
                    backoff_max: Duration::from_millis(backoff_max_ms),
                    stable_after: Duration::from_secs(stable_secs),
                    max_starts,
                    window: Duration::from_secs(window_secs),
                },
                stop_grace: Duration::from_secs(stop_grace_secs),
                command,
            };
            std::process::exit(supervise::run(&opts));
        }
        Cmd::Check { name, log } => {
            let mut st = LabState::load(&cli.state_root.join(&name))?;
            if st.sql_proxy.is_some() {
                // Which side owns each site now, from the proxy, HAProxy and DNS (recorded in
                // the state file), so a migrated site's writes are looked for on new-dc.
                scenarios::serving::refresh(&mut st).context("reading the serving sides")?;
            }
            let report = check::check(&st, &check::read_log(&log)?)?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            if report.failed > 0 || report.lost() > 0 {
                std::process::exit(1);
            }
        }
    }
    Ok(())
}
