//! `sql-proxy`: the daemon (`run`) and the user sync (`sync-users`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use sql_proxy::admin::{router, AdminState};
use sql_proxy::auth::UserStore;
use sql_proxy::config::Config;
use sql_proxy::route::Shared;

#[derive(Parser)]
#[command(
    name = "sql-proxy",
    about = "MySQL proxy that keeps old database endpoints answering while databases move"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve the configured listeners and the admin API.
    Run {
        /// The TOML configuration (see sql-proxy/README.md).
        #[arg(long, env = "SQL_PROXY_CONFIG")]
        config: PathBuf,
    },
    /// Read password hashes and database grants from the old server into the user store.
    SyncUsers {
        /// Old server address, e.g. 10.0.0.5:3306.
        #[arg(long)]
        from: SocketAddr,
        /// Admin account allowed to read mysql.user and mysql.db.
        #[arg(long)]
        user: String,
        /// File holding that account's password (one line; keep it 0600).
        #[arg(long)]
        password_file: PathBuf,
        /// Where to write the store (written 0600, hashes only).
        #[arg(long)]
        out: PathBuf,
        /// Show what would be written (user names, plugins, databases; never hashes).
        #[arg(long)]
        dry_run: bool,
    },
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    // SQL_PROXY_WORKER_THREADS: session threads (default: one per core). Accepting, the admin
    // API and signals run on the main thread.
    let workers =
        match std::env::var("SQL_PROXY_WORKER_THREADS") {
            Ok(n) => n.parse().ok().filter(|n| *n > 0).with_context(|| {
                format!("SQL_PROXY_WORKER_THREADS={n:?} is not a positive number")
            })?,
            Err(_) => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        match cli.cmd {
            Cmd::Run { config } => run(config, workers).await,
            Cmd::SyncUsers {
                from,
                user,
                password_file,
                out,
                dry_run,
            } => {
                let pw = std::fs::read_to_string(&password_file)
                    .with_context(|| format!("reading {}", password_file.display()))?;
                let store =
                    sql_proxy::sync::load_users(from, &user, pw.trim_end_matches(['\n', '\r']))
                        .await?;
                for (name, u) in &store.users {
                    println!("{name}\t{}\t{}", u.plugin, u.databases.join(","));
                }
                if dry_run {
                    println!(
                        "dry run: {} users, nothing written to {}",
                        store.users.len(),
                        out.display()
                    );
                } else {
                    store.save(&out)?;
                    println!("wrote {} users to {}", store.users.len(), out.display());
                }
                Ok(())
            }
        }
    })
}

/// SIGHUP: re-read the user store and the config's backends and new routes. Sessions stay;
/// routes already known keep their live state (the admin API owns it); listeners, limits and
/// TLS need a restart.
fn reload(config: &std::path::Path, old: &Config, shared: &Arc<Shared>) {
    match UserStore::load(&old.users_file) {
        Ok(u) => {
            tracing::info!(users = u.users.len(), "user store reloaded");
            *shared.users.write().expect("users lock") = Arc::new(u);
        }
        Err(e) => tracing::error!(error = %e, "user store reload failed; keeping the old one"),
    }
    match Config::load(config) {
        Ok(cfg) => {
            *shared.backends.write().expect("backends lock") = cfg.backends.clone();
            *shared
                .backend_sockets
                .write()
                .expect("backend sockets lock") = cfg.backend_sockets.clone();
            let known: Vec<String> = shared
                .routes
                .read()
                .expect("routes lock")
                .keys()
                .cloned()
                .collect();
            for (db, r) in &cfg.databases {
                if !known.contains(db) {
                    shared.set_route(db, Some(&r.side), Some(r.mode));
                }
            }
            tracing::info!(backends = cfg.backends.len(), "config reloaded");
        }
        Err(e) => tracing::error!(error = %e, "config reload failed; keeping the old one"),
    }
}

async fn run(config: PathBuf, workers: usize) -> Result<()> {
    let cfg = Config::load(&config)?;
    let users = UserStore::load(&cfg.users_file)?;
    let tls = match &cfg.tls {
        Some(t) => Some(sql_proxy::stream::acceptor(&t.cert_file, &t.key_file)?),
        None => None,
    };
    let shared = Shared::new(&cfg, users, tls);
    let workers = sql_proxy::server::Workers::start(workers)?;
    let (bound, _tasks) =
        sql_proxy::server::listen_on(shared.clone(), &cfg.listen, Some(workers)).await?;
    for a in &bound {
        tracing::info!(listen = %a, "serving MySQL clients");
    }
    if let Some(admin) = &cfg.admin {
        let token = std::fs::read_to_string(&admin.token_file)
            .with_context(|| format!("reading admin token {}", admin.token_file.display()))?
            .trim()
            .to_string();
        if token.len() < 16 {
            bail!(
                "admin token in {} is shorter than 16 characters",
                admin.token_file.display()
            );
        }
        let app = router(AdminState {
            shared: shared.clone(),
            token: Arc::from(token),
            users_file: cfg.users_file.clone(),
        });
        let l = tokio::net::TcpListener::bind(admin.listen)
            .await
            .with_context(|| format!("admin listen on {}", admin.listen))?;
        tracing::info!(listen = %l.local_addr()?, "admin API");
        tokio::spawn(async move {
            if let Err(e) = axum::serve(l, app).await {
                tracing::error!(error = %e, "admin API stopped");
            }
        });
    }
    // SIGHUP reloads the user store without touching sessions.
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = hup.recv() => reload(&config, &cfg, &shared),
            _ = term.recv() => return Ok(()),
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}
