//! `sql-proxy`: the daemon (`run`), the user sync (`sync-users`) and the route store tools
//! (`routes init|list|export|import`, in `routes_cli.rs`).

mod routes_cli;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use sql_proxy::admin::{router, AdminState};
use sql_proxy::auth::UserStore;
use sql_proxy::config::Config;
use sql_proxy::fleet::Fleet;
use sql_proxy::route::Shared;
use sql_proxy::route_store::{Access, RouteStore, SharedStore, Store, StoreError};

use routes_cli::{routes_cmd, shared_store, RoutesCmd};

#[derive(Parser)]
#[command(
    name = "sql-proxy",
    version = climeta::VERSION,
    about = "MySQL proxy that keeps old database endpoints answering while databases move"
)]
struct Cli {
    #[command(flatten)]
    log: climeta::logging::LogArgs,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Serve the configured listeners and the admin API.
    ///
    /// Every route is restored from the route store as last committed (a database paused
    /// mid-switch comes back paused). Refuses to start without a readable, intact store:
    /// create it once per host with `sql-proxy routes init --config CFG --from-config`.
    Run {
        /// The TOML configuration (see sql-proxy/README.md).
        #[arg(long, env = "SQL_PROXY_CONFIG")]
        config: PathBuf,
    },
    /// The durable route store: create it, look at it, back it up, restore it.
    #[command(subcommand)]
    Routes(RoutesCmd),
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
    if let Some(code) = climeta::generate_docs_if_asked(<Cli as clap::CommandFactory>::command) {
        std::process::exit(code);
    }
    let cli = Cli::parse();
    // Log lines as every hostmove binary writes them (climeta::logging): RUST_LOG, --log-format.
    cli.log.init();
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
            Cmd::Routes(cmd) => routes_cmd(cmd).await,
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
                // Left out, so refused at the proxy: said here, never with a hash.
                for s in &store.skipped {
                    println!(
                        "skipped '{}'@'{}' ({}): {}",
                        s.user,
                        s.host,
                        s.reason.name(),
                        s.reason.why()
                    );
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

/// SIGHUP: re-read the user store and the config's backends, and seed the config's
/// [databases] the route store has never seen. Sessions stay; stored routes keep their state
/// (the admin API owns it); listeners, limits, TLS and the route store need a restart.
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
            let (s, backends) = (shared.clone(), cfg.backends.len());
            tokio::spawn(async move {
                if let Err(e) = s.seed_from_config(&cfg).await {
                    tracing::error!(error = %e, "new [databases] routes not seeded");
                }
            });
            tracing::info!(backends, "config reloaded");
        }
        Err(e) => tracing::error!(error = %e, "config reload failed; keeping the old one"),
    }
}

/// The SQLite store of `cfg`, opened for writing (before anything else is read, so its
/// errors come first).
fn open_embedded(config: &std::path::Path, cfg: &Config) -> Result<Arc<RouteStore>> {
    match RouteStore::open(&cfg.route_store_path(), Access::Write) {
        Ok(s) => Ok(Arc::new(s)),
        Err(e @ StoreError::Missing { .. }) => {
            bail!(
                "{}",
                e.to_string()
                    .replace("<CONFIG>", &config.display().to_string())
            )
        }
        Err(e) => Err(e.into()),
    }
}

/// Joins the fleet: registers a lease first, then loads the table (so a switch committed
/// meanwhile either is in what we load or waits for our acknowledgement), then follows it.
async fn open_fleet(
    config: &std::path::Path,
    cfg: &Config,
    store: SharedStore,
    users: UserStore,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> Result<Arc<Shared>> {
    let f = cfg.fleet.as_ref().expect("a fleet config");
    let missing = |e: StoreError| {
        anyhow::anyhow!(
            "{}",
            e.to_string()
                .replace("<CONFIG>", &config.display().to_string())
        )
    };
    store.check().await.map_err(missing)?;
    let instance = f.instance.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "host".into());
        format!(
            "{host}-{}-{:04x}",
            std::process::id(),
            rand::random::<u16>()
        )
    });
    let endpoints = cfg
        .listen
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let fleet = Arc::new(Fleet::new(
        store.another(),
        instance,
        endpoints,
        Duration::from_millis(f.lease_ms),
        Duration::from_millis(f.poll_ms),
    ));
    fleet.register().await?;
    let snap = store.changes_since(0).await?;
    let shared = Shared::build(
        cfg,
        users,
        tls,
        Store::Shared(Arc::new(store)),
        snap.changed,
        Some(fleet.clone()),
    )?;
    shared.seed_from_config(cfg).await?;
    sql_proxy::fleet::spawn(shared.clone(), snap.last_epoch);
    tracing::info!(instance = %fleet.instance, store = %shared.store.describe(), epoch = snap.last_epoch, lease_ms = f.lease_ms, "joined the fleet");
    Ok(shared)
}

async fn run(config: PathBuf, workers: usize) -> Result<()> {
    let cfg = Config::load(&config)?;
    let shared_store = shared_store(&config, &cfg)?;
    let embedded = match shared_store {
        None => Some(open_embedded(&config, &cfg)?),
        Some(_) => None,
    };
    let users = UserStore::load(&cfg.users_file)?;
    let tls = match &cfg.tls {
        Some(t) => Some(sql_proxy::stream::acceptor(&t.cert_file, &t.key_file)?),
        None => None,
    };
    let shared = match (embedded, shared_store) {
        (Some(store), _) => Shared::new(&cfg, users, tls, store)?,
        (None, Some(store)) => open_fleet(&config, &cfg, store, users, tls).await?,
        (None, None) => unreachable!("one of the two stores is opened above"),
    };
    if let Some(ca) = cfg.tls.as_ref().and_then(|t| t.backend_ca_file.as_ref()) {
        let _ = shared.backend_tls.set(sql_proxy::stream::connector(ca)?);
    }
    let workers = sql_proxy::server::Workers::start(workers)?;
    let (bound, _tasks) =
        sql_proxy::server::listen_on(shared.clone(), &cfg.listen, Some(workers)).await?;
    for a in &bound {
        tracing::info!(listen = %a, "serving MySQL clients");
    }
    if let Some(admin) = &cfg.admin {
        let md = std::fs::metadata(&admin.token_file)
            .with_context(|| format!("reading admin token {}", admin.token_file.display()))?;
        {
            use std::os::unix::fs::PermissionsExt;
            // 0600, or 0640 with the daemon's group (the runbook's root:sql-proxy): never
            // readable by others, never writable by the group.
            let mode = md.permissions().mode() & 0o777;
            if mode & 0o027 != 0 {
                bail!(
                    "admin token {} is open to others or writable by its group (mode {mode:o}): \
                     chmod 600 it (or 640 with the daemon's group)",
                    admin.token_file.display()
                );
            }
        }
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
            per_database_metrics: admin.per_database_metrics,
        });
        let l = tokio::net::TcpListener::bind(admin.listen)
            .await
            .with_context(|| format!("admin listen on {}", admin.listen))?;
        match (&admin.tls_cert, &admin.tls_key) {
            (Some(cert), Some(key)) => {
                let acceptor = sql_proxy::stream::acceptor(cert, key)
                    .with_context(|| format!("admin TLS ({})", cert.display()))?;
                let l = sql_proxy::admin_tls::TlsListener::new(l, acceptor)?;
                tracing::info!(listen = %admin.listen, "admin API (HTTPS only)");
                tokio::spawn(async move {
                    if let Err(e) = axum::serve(l, app).await {
                        tracing::error!(error = %e, "admin API stopped");
                    }
                });
            }
            _ => {
                tracing::info!(listen = %l.local_addr()?, "admin API (plain HTTP: set [admin] tls_cert and tls_key outside a lab)");
                tokio::spawn(async move {
                    if let Err(e) = axum::serve(l, app).await {
                        tracing::error!(error = %e, "admin API stopped");
                    }
                });
            }
        }
    }
    // SIGHUP reloads the user store without touching sessions.
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = hup.recv() => reload(&config, &cfg, &shared),
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    // Leaving a fleet: hold everything first, then leave, so no switch waits for us and we
    // serve nothing it does not know about.
    if let Some(f) = &shared.fleet {
        shared.fence("stopping");
        match f.deregister().await {
            Ok(()) => tracing::info!(instance = %f.instance, "left the fleet"),
            Err(e) => {
                tracing::warn!(error = %e, "could not leave the fleet; a switch waits for our lease to run out")
            }
        }
    }
    Ok(())
}
