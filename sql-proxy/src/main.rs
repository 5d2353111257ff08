//! `sql-proxy`: the daemon (`run`), the user sync (`sync-users`) and the route store tools
//! (`routes init|list|export|import`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use sql_proxy::admin::{router, AdminState};
use sql_proxy::auth::UserStore;
use sql_proxy::config::Config;
use sql_proxy::route::Shared;
use sql_proxy::route_store::{Access, Export, ImportAction, RouteStore, StoreError, EXPORT_FORMAT};

#[derive(Parser)]
#[command(
    name = "sql-proxy",
    version = climeta::VERSION,
    about = "MySQL proxy that keeps old database endpoints answering while databases move"
)]
struct Cli {
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

/// Which store a `routes` command works on.
#[derive(Args)]
struct StoreAt {
    /// The proxy's TOML configuration: its `route_store` (default `routes.sqlite` beside
    /// `users_file`), and its [backends] to check sides against.
    #[arg(long, env = "SQL_PROXY_CONFIG", required_unless_present = "store")]
    config: Option<PathBuf>,
    /// The store file itself, when there is no config at hand.
    #[arg(long, conflicts_with = "config")]
    store: Option<PathBuf>,
}

impl StoreAt {
    fn resolve(&self) -> Result<(PathBuf, Option<Config>)> {
        match (&self.config, &self.store) {
            (Some(c), _) => {
                let cfg = Config::load(c)?;
                Ok((cfg.route_store_path(), Some(cfg)))
            }
            (None, Some(s)) => Ok((s.clone(), None)),
            (None, None) => bail!("give --config or --store"),
        }
    }
}

#[derive(Subcommand)]
enum RoutesCmd {
    /// Create the route store, once per host, from the config's [databases] (every other
    /// database starts on default_side the first time a client uses it). Refuses to
    /// overwrite an existing store.
    Init {
        #[command(flatten)]
        at: StoreAt,
        /// Seed the new store from the config's [databases] table (required: says where the
        /// first routes come from).
        #[arg(long, required = true)]
        from_config: bool,
    },
    /// Every stored route: database, side, mode, epoch (works while the proxy runs).
    List {
        #[command(flatten)]
        at: StoreAt,
        /// The export format (JSON) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Write every stored route as JSON (a backup; works while the proxy runs).
    Export {
        #[command(flatten)]
        at: StoreAt,
        /// Write here (0600) instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Load routes from an export into the store (the proxy must be stopped).
    ///
    /// A route whose epoch is older than the stored one (or equal with other content) would
    /// move a database backwards: refused, and nothing is imported, unless --force.
    Import {
        #[command(flatten)]
        at: StoreAt,
        /// An export file (`sql-proxy routes export`).
        file: PathBuf,
        /// Print what would change; change nothing (works while the proxy runs).
        #[arg(long)]
        dry_run: bool,
        /// Apply routes older than the stored ones too, with fresh epochs.
        #[arg(long)]
        force: bool,
    },
}

fn routes_cmd(cmd: RoutesCmd) -> Result<()> {
    match cmd {
        RoutesCmd::Init { at, .. } => {
            let (path, cfg) = at.resolve()?;
            let Some(cfg) = cfg else {
                bail!("routes init seeds from the config: give --config");
            };
            let store = RouteStore::create(&path, &cfg.seed())?;
            println!(
                "created route store {} with {} route(s) from the config's [databases] (last epoch {})",
                path.display(),
                cfg.databases.len(),
                store.last_epoch()?
            );
        }
        RoutesCmd::List { at, json } => {
            let (path, _) = at.resolve()?;
            let store = RouteStore::open(&path, Access::Read)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&store.export()?)?);
            } else {
                let routes = store.load()?;
                println!(
                    "{:<32} {:<8} {:<10} {:>8}",
                    "DATABASE", "SIDE", "MODE", "EPOCH"
                );
                for r in &routes {
                    let mode = serde_json::to_value(r.mode)?;
                    println!(
                        "{:<32} {:<8} {:<10} {:>8}",
                        r.database,
                        r.side,
                        mode.as_str().unwrap_or(""),
                        r.epoch
                    );
                }
                println!(
                    "{} route(s), last epoch {}, store {}",
                    routes.len(),
                    store.last_epoch()?,
                    path.display()
                );
            }
        }
        RoutesCmd::Export { at, out } => {
            let (path, _) = at.resolve()?;
            let store = RouteStore::open(&path, Access::Read)?;
            let text = serde_json::to_string_pretty(&store.export()?)? + "\n";
            match out {
                None => print!("{text}"),
                Some(out) => {
                    write_private(&out, text.as_bytes())?;
                    eprintln!(
                        "exported {} route(s) to {}",
                        store.load()?.len(),
                        out.display()
                    );
                }
            }
        }
        RoutesCmd::Import {
            at,
            file,
            dry_run,
            force,
        } => {
            let (path, cfg) = at.resolve()?;
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let export: Export = serde_json::from_str(&text)
                .with_context(|| format!("{}: not a route export", file.display()))?;
            if export.format != EXPORT_FORMAT {
                bail!(
                    "{}: format {:?}, expected {EXPORT_FORMAT:?}",
                    file.display(),
                    export.format
                );
            }
            for r in &export.routes {
                if let Some(cfg) = &cfg {
                    if !cfg.backends.contains_key(&r.side) {
                        bail!(
                            "{}: database {:?}: side {:?} is not in the config's [backends]",
                            file.display(),
                            r.database,
                            r.side
                        );
                    }
                }
                if r.epoch == 0
                    || r.side.is_empty()
                    || r.resume_mode == sql_proxy::route::Mode::Paused
                {
                    bail!(
                        "{}: database {:?}: epoch must be > 0, side non-empty, resume_mode open or read_only",
                        file.display(),
                        r.database
                    );
                }
            }
            let access = if dry_run { Access::Read } else { Access::Write };
            let store = RouteStore::open(&path, access)?;
            let mut changes = store.plan_import(&export.routes, force)?;
            let refused = changes
                .iter()
                .filter(|c| c.action == ImportAction::RefusedBackwards)
                .count();
            if !dry_run && refused == 0 {
                store.apply_import(&mut changes)?;
            }
            for c in &changes {
                let before = c.before.as_ref().map_or("(none)".to_string(), |b| {
                    format!("{} {:?} epoch {}", b.side, b.mode, b.epoch)
                });
                println!(
                    "{:<18} {}: {} -> {} {:?} epoch {}",
                    format!("{:?}", c.action),
                    c.database,
                    before,
                    c.after.side,
                    c.after.mode,
                    c.after.epoch
                );
            }
            if refused > 0 {
                bail!(
                    "{refused} route(s) in {} are older than the store's (RefusedBackwards above): \
                     nothing imported; --force applies them anyway",
                    file.display()
                );
            }
            println!(
                "{} {} route(s) into {}",
                if dry_run {
                    "dry run: would import"
                } else {
                    "imported"
                },
                changes
                    .iter()
                    .filter(|c| c.action != ImportAction::Unchanged)
                    .count(),
                path.display()
            );
        }
    }
    Ok(())
}

/// Writes `bytes` to a new 0600 file (exports name every customer database).
fn write_private(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

fn main() -> Result<()> {
    if let Some(code) = climeta::generate_docs_if_asked(<Cli as clap::CommandFactory>::command) {
        std::process::exit(code);
    }
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
            Cmd::Routes(cmd) => routes_cmd(cmd),
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
            if let Err(e) = shared.seed_from_config(&cfg) {
                tracing::error!(error = %e, "new [databases] routes not seeded");
            }
            tracing::info!(backends = cfg.backends.len(), "config reloaded");
        }
        Err(e) => tracing::error!(error = %e, "config reload failed; keeping the old one"),
    }
}

async fn run(config: PathBuf, workers: usize) -> Result<()> {
    let cfg = Config::load(&config)?;
    let store_path = cfg.route_store_path();
    let store = match RouteStore::open(&store_path, Access::Write) {
        Ok(s) => Arc::new(s),
        Err(e @ StoreError::Missing { .. }) => {
            bail!(
                "{}",
                e.to_string()
                    .replace("<CONFIG>", &config.display().to_string())
            )
        }
        Err(e) => return Err(e.into()),
    };
    let users = UserStore::load(&cfg.users_file)?;
    let tls = match &cfg.tls {
        Some(t) => Some(sql_proxy::stream::acceptor(&t.cert_file, &t.key_file)?),
        None => None,
    };
    let shared = Shared::new(&cfg, users, tls, store)?;
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
