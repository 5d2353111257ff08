//! `tunnel`: the operator CLI over the library (keygen, plan, up, down, status, check, rotate).

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::io::Write;
use std::os::fd::FromRawFd;
use std::path::PathBuf;
use std::process::ExitCode;
use tunnel::{BackendChoice, CheckOptions, Config, Side};

#[derive(Parser)]
#[command(
    name = "tunnel",
    version = climeta::VERSION,
    about = "WireGuard links between datacenters: reconcile and health"
)]
struct Cli {
    /// Tunnel config (TOML).
    #[arg(
        short,
        long,
        env = "TUNNEL_CONFIG",
        global = true,
        default_value = "tunnel.toml"
    )]
    config: PathBuf,
    /// Which datacenter of the config this host is.
    #[arg(short, long, env = "TUNNEL_SIDE", global = true)]
    side: Option<String>,
    /// Run this side inside a network namespace (overrides the config's `netns`).
    #[arg(long, global = true)]
    netns: Option<String>,
    /// Backend override: auto, kernel or userspace.
    #[arg(long, global = true)]
    backend: Option<BackendChoice>,
    /// Where state files and daemon logs live.
    #[arg(
        long,
        global = true,
        env = "TUNNEL_STATE_DIR",
        default_value = tunnel::DEFAULT_STATE_DIR
    )]
    state_dir: PathBuf,
    #[command(flatten)]
    log: climeta::logging::LogArgs,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Generate this side's key pair into key_dir (<side>.key 0600, <side>.pub to send to peers).
    Keygen {
        /// Replace an existing private key (every peer then needs the new public key).
        #[arg(long)]
        force: bool,
        /// Print the files that would be written, write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Print the difference between desired and actual state (changes nothing).
    Plan {
        /// Print the plan as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Make actual equal desired; prints the changes made, or "no changes".
    Up {
        /// Print what would change, change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print the applied changes as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove exactly what `up` created (daemon, interface with its addresses and routes).
    Down {
        /// Print what would be removed, remove nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Per peer: last handshake age, rx/tx bytes, endpoint.
    Status {
        /// Print the status as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Health verdict with latency, loss and a bounded throughput probe; exit 1 if unhealthy.
    Check {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Latency pings per peer.
        #[arg(long, default_value_t = 10)]
        pings: u32,
        /// Echoes in the throughput probe (bounded also by 5 s).
        #[arg(long, default_value_t = 500)]
        echoes: u32,
        /// Also write the verdict in Prometheus text format to FILE (atomically), for
        /// node_exporter's textfile collector, e.g.
        /// /var/lib/prometheus/node-exporter/hostmove-tunnel.prom
        #[arg(long, value_name = "FILE")]
        textfile: Option<PathBuf>,
    },
    /// Rotate this side's key, coordinated with a peer side reachable from this host.
    Rotate {
        /// The peer side's config (default: the same file).
        #[arg(long)]
        peer_config: Option<PathBuf>,
        /// The peer datacenter's name.
        #[arg(long)]
        peer_side: String,
        /// The network namespace the peer side runs in (overrides its config's `netns`).
        #[arg(long)]
        peer_netns: Option<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Print the steps, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

fn main() -> ExitCode {
    if let Some(code) = climeta::generate_docs_if_asked(<Cli as clap::CommandFactory>::command) {
        return ExitCode::from(code as u8);
    }
    let cli = Cli::parse();
    cli.log.init();
    let json = matches!(
        cli.cmd,
        Cmd::Plan { json: true }
            | Cmd::Up { json: true, .. }
            | Cmd::Status { json: true }
            | Cmd::Check { json: true, .. }
            | Cmd::Rotate {
                json: true,
                dry_run: false,
                ..
            }
    );
    // wireguard-control println!s unknown UAPI keys: with --json, fd 1 goes to stderr and the
    // JSON document is written to a saved copy of the real stdout.
    let mut out: Box<dyn Write> = if json {
        // SAFETY: single-threaded at this point; dup/dup2 on the standard descriptors.
        unsafe {
            let saved = libc::dup(1);
            if saved >= 0 && libc::dup2(2, 1) >= 0 {
                Box::new(std::fs::File::from_raw_fd(saved))
            } else {
                Box::new(std::io::stdout())
            }
        }
    } else {
        Box::new(std::io::stdout())
    };
    match run(cli, &mut out) {
        Ok(code) => {
            let _ = out.flush();
            code
        }
        Err(e) => {
            let _ = out.flush();
            eprintln!("tunnel: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli, out: &mut dyn Write) -> Result<ExitCode> {
    let cfg = Config::load(&cli.config)?;
    let side_name = cli
        .side
        .clone()
        .context("which side is this? pass --side NAME (or TUNNEL_SIDE)")?;
    let mut side = Side::new(side_name).with_state_dir(&cli.state_dir);
    side.netns = cli.netns.clone();
    side.backend = cli.backend;
    match cli.cmd {
        Cmd::Keygen { force, dry_run } => {
            if dry_run {
                let private = cfg.private_key_path(&side.name);
                let exists = private.exists();
                writeln!(
                    out,
                    "dry run: would write {} (0600) and {}{}",
                    private.display(),
                    cfg.public_key_path(&side.name).display(),
                    match (exists, force) {
                        (true, false) => " — refused: the private key exists (use --force)",
                        (true, true) => " — replacing the existing private key",
                        _ => "",
                    }
                )?;
                return Ok(ExitCode::SUCCESS);
            }
            let k = tunnel::keys::generate(&cfg.key_dir, &side.name, force)?;
            writeln!(out, "private key: {} (0600)", k.private.display())?;
            writeln!(
                out,
                "public key:  {} ({})",
                k.public.display(),
                k.public_key
            )?;
            writeln!(out, "copy {} into every peer's key_dir", k.public.display())?;
        }
        Cmd::Plan { json } => {
            let plan = tunnel::plan(&cfg, &side)?;
            emit(out, json, &plan, |p| p.to_string())?;
        }
        Cmd::Up { dry_run, json } => {
            let plan = if dry_run {
                tunnel::plan(&cfg, &side)?
            } else {
                tunnel::up(&cfg, &side)?
            };
            emit(out, json, &plan, |p| {
                if dry_run {
                    format!("dry run, would apply:\n{p}")
                } else {
                    p.to_string()
                }
            })?;
        }
        Cmd::Down { dry_run } => {
            if dry_run {
                let st = tunnel::status(&cfg, &side)?;
                if st.up {
                    writeln!(
                        out,
                        "dry run, would remove: {}{} interface {}, state file",
                        st.daemon_pid
                            .map(|p| format!("wireguard-go process {p}, "))
                            .unwrap_or_default(),
                        if st.interface_present { "" } else { "(absent)" },
                        st.interface
                    )?;
                } else {
                    writeln!(
                        out,
                        "dry run: nothing recorded by `up` here; nothing to remove"
                    )?;
                }
            } else {
                let rep = tunnel::down(&cfg, &side)?;
                if rep.removed.is_empty() {
                    writeln!(out, "nothing recorded by `up` here; nothing removed")?;
                }
                for r in rep.removed {
                    writeln!(out, "removed {r}")?;
                }
            }
        }
        Cmd::Status { json } => {
            let st = tunnel::status(&cfg, &side)?;
            emit(out, json, &st, render_status)?;
        }
        Cmd::Check {
            json,
            pings,
            echoes,
            textfile,
        } => {
            let opts = CheckOptions {
                pings,
                throughput_echoes: echoes,
                ..CheckOptions::default()
            };
            let rep = tunnel::check(&cfg, &side, &opts);
            if let Some(path) = &textfile {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                let text = tunnel::textfile::render(&rep, &side.name, now);
                tunnel::textfile::write_atomic(path, &text)
                    .map_err(|e| anyhow::anyhow!("--textfile {}: {e}", path.display()))?;
            }
            emit(out, json, &rep, |r| {
                let mut s = format!(
                    "{}: {}\n",
                    if r.health.healthy {
                        "healthy"
                    } else {
                        "UNHEALTHY"
                    },
                    r.health.reason
                );
                for p in &r.health.probes {
                    s += &format!(
                        "  {} {}: {}/{} answered, loss {:.0}%, rtt min/avg/max {}/{}/{} ms\n",
                        p.peer,
                        p.address,
                        p.received,
                        p.sent,
                        p.loss_percent,
                        ms(p.rtt_min_ms),
                        ms(p.rtt_avg_ms),
                        ms(p.rtt_max_ms)
                    );
                }
                for p in &r.peers {
                    s += &format!(
                        "  {} handshake {}, endpoint {}, rx {} B, tx {} B\n",
                        p.name.as_deref().unwrap_or(&p.public_key),
                        p.last_handshake_age_secs
                            .map(|a| format!("{a} s ago"))
                            .unwrap_or_else(|| "never".into()),
                        p.endpoint.as_deref().unwrap_or("-"),
                        p.rx_bytes,
                        p.tx_bytes
                    );
                }
                for t in &r.throughput {
                    s += &format!(
                        "  {} echo throughput: {} ({} of {} echoes)\n",
                        t.peer,
                        t.echo_bytes_per_sec
                            .map(|b| format!("{:.1} MB/s each way", b / 1e6))
                            .unwrap_or_else(|| "n/a".into()),
                        t.received,
                        t.echoes
                    );
                }
                s
            })?;
            if !rep.health.healthy {
                return Ok(ExitCode::from(1));
            }
        }
        Cmd::Rotate {
            peer_config,
            peer_side,
            peer_netns,
            json,
            dry_run,
        } => {
            let pcfg = match &peer_config {
                Some(p) => Config::load(p)?,
                None => cfg.clone(),
            };
            let mut pside = Side::new(peer_side).with_state_dir(&cli.state_dir);
            pside.netns = peer_netns;
            pside.backend = cli.backend;
            if dry_run {
                let at = |ns: &Option<String>| {
                    ns.as_deref()
                        .map(|n| format!(" (netns {n})"))
                        .unwrap_or_default()
                };
                writeln!(
                    out,
                    "dry run, rotate would:\n  1. stage {}.next and {}.next\n  2. on {}{}: replace peer {} (key from {}) by the new key, same endpoint and allowed IPs\n  3. on {}{}: set the new private key\n  4. measure the gap with a 1 kHz UDP stream; restore the peer's keepalive\n  5. rename the staged files over {} and copy the new public key to {}",
                    cfg.private_key_path(&side.name).display(),
                    cfg.public_key_path(&side.name).display(),
                    pside.name,
                    at(&pside.netns),
                    side.name,
                    cfg.public_key_path(&side.name).display(),
                    side.name,
                    at(&side.netns),
                    cfg.private_key_path(&side.name).display(),
                    pcfg.public_key_path(&side.name).display(),
                )?;
                return Ok(ExitCode::SUCCESS);
            }
            let rep = tunnel::rotate(&cfg, &side, &[(&pcfg, &pside)])?;
            emit(out, json, &rep, |r| {
                format!(
                    "rotated {}: {} -> {}\n  keys disagreed for {:.2} ms; first echo after {:.1} ms; longest gap in a 1 kHz UDP stream {:.1} ms, {} lost; converged: {}\n",
                    r.side, r.old_public_key, r.new_public_key, r.switch_window_ms, r.first_echo_ms, r.interruption_ms, r.probes_lost, r.converged
                )
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn ms(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.3}")).unwrap_or_else(|| "-".into())
}

fn emit<T: serde::Serialize>(
    out: &mut dyn Write,
    json: bool,
    v: &T,
    text: impl Fn(&T) -> String,
) -> Result<()> {
    if json {
        serde_json::to_writer_pretty(&mut *out, v)?;
        writeln!(out)?;
    } else {
        write!(out, "{}", text(v))?;
    }
    Ok(())
}

fn render_status(st: &tunnel::Status) -> String {
    let ns = st
        .netns
        .as_deref()
        .map(|n| format!(" in netns {n}"))
        .unwrap_or_default();
    let mut s = format!("side {}{ns}, interface {}", st.side, st.interface);
    if !st.up {
        s += ": not up (no state recorded)\n";
        return s;
    }
    s += &format!(
        ", backend {}, {}\n",
        st.backend.map(|b| b.to_string()).unwrap_or_default(),
        match (st.daemon_pid, st.daemon_running) {
            (Some(p), Some(true)) => format!("wireguard-go pid {p} running"),
            (Some(p), _) => format!("wireguard-go pid {p} NOT RUNNING"),
            _ => "kernel device".into(),
        }
    );
    if let Some(p) = st.listen_port {
        s += &format!(
            "  listening on {p}, public key {}\n",
            st.public_key.clone().unwrap_or_default()
        );
    }
    for p in &st.peers {
        s += &format!(
            "  peer {} ({})\n    endpoint {}, last handshake {}, rx {} B, tx {} B, allowed {}\n",
            p.name.as_deref().unwrap_or("?"),
            p.public_key,
            p.endpoint.as_deref().unwrap_or("-"),
            p.last_handshake_age_secs
                .map(|a| format!("{a} s ago"))
                .unwrap_or_else(|| "never".into()),
            p.rx_bytes,
            p.tx_bytes,
            p.allowed_ips.join(",")
        );
    }
    for p in &st.problems {
        s += &format!("  PROBLEM: {p}\n");
    }
    s
}
