//! `migrator serve`: the progress dashboard (see `migrator::serve`).

use anyhow::Context;
use clap::Subcommand;
use migrator::serve::{self, ServeOptions};
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum ServeCommand {
    /// Serve the progress dashboard: pages, JSON API, Prometheus /metrics and wave controls,
    /// all behind an access token.
    Serve {
        /// The journal the waves write: its file, or a mysql:// URL (then --token-file too).
        #[arg(long, value_name = "FILE|URL")]
        journal: PathBuf,
        /// Address to listen on (loopback by default; put a TLS proxy in front for remote use).
        #[arg(long, default_value = "127.0.0.1:8750", value_name = "ADDR")]
        listen: std::net::SocketAddr,
        /// The access token file: created (mode 0600) with a random token at first start, which
        /// is printed once; a looser existing file is refused. Default: JOURNAL.dashboard-token.
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
        /// The plan whose waves to show (default: the plan recorded in the journal).
        #[arg(long, value_name = "FILE")]
        plan: Option<PathBuf>,
        /// The site spec file: enables the rollback button (the `migrator rollback` code path
        /// against the sites' real systems).
        #[arg(long, value_name = "FILE")]
        sites: Option<PathBuf>,
    },
}

pub fn run(command: ServeCommand) -> anyhow::Result<i32> {
    let ServeCommand::Serve {
        journal,
        listen,
        token_file,
        plan,
        sites,
    } = command;
    let location = migrator::journal::JournalLocation::parse(&journal)?;
    let token_file = match (token_file, &location) {
        (Some(t), _) => t,
        (None, migrator::journal::JournalLocation::Sqlite(_)) => {
            let mut p = journal.clone().into_os_string();
            p.push(".dashboard-token");
            PathBuf::from(p)
        }
        (None, _) => anyhow::bail!(
            "--journal {location}: give --token-file FILE (the dashboard's access token) for a \
             MariaDB journal; it is kept beside the journal file only for a SQLite journal"
        ),
    };
    let opts = ServeOptions {
        journal,
        listen,
        token_file,
        plan,
        sites,
    };
    tracing::info!(
        "dashboard: preparing summary tables in {} (a first start on a large journal takes a while)",
        opts.journal.display()
    );
    let t0 = std::time::Instant::now();
    let (app, token, installed) = serve::build(&opts, None)?;
    tracing::info!(
        "dashboard: summary {:?} in {:.1} s",
        installed,
        t0.elapsed().as_secs_f64()
    );
    if token.fresh {
        // Printed once, at creation; later starts only name the file.
        println!(
            "dashboard access token (shown once; stored in {}): {}",
            opts.token_file.display(),
            token.value
        );
    } else {
        tracing::info!("dashboard: access token in {}", opts.token_file.display());
    }
    if !listen.ip().is_loopback() {
        tracing::warn!(
            "dashboard: listening on {listen}, not loopback: the token travels in clear \
             HTTP; put a TLS proxy in front"
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("listen on {listen}"))?;
        tracing::info!(
            "dashboard: http://{}/ (log in with the token, or open http://{}/?token=…)",
            listener.local_addr()?,
            listener.local_addr()?
        );
        serve::serve(app, listener, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .context("serving the dashboard")
    })?;
    Ok(0)
}
