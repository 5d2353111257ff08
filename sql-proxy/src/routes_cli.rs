//! `sql-proxy routes init|list|export|import`: the route store tools, on the embedded SQLite
//! file or on a fleet's shared MariaDB table.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};

use sql_proxy::config::Config;
use sql_proxy::route_store::{
    Access, Export, ImportAction, RouteStore, SharedStore, EXPORT_FORMAT,
};

/// Which store a `routes` command works on.
#[derive(Args)]
pub(crate) struct StoreAt {
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
pub(crate) enum RoutesCmd {
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

/// The `[fleet]` store of `cfg`, if it has one (calls time out after a quarter lease).
pub(crate) fn shared_store(config: &std::path::Path, cfg: &Config) -> Result<Option<SharedStore>> {
    let Some(f) = &cfg.fleet else {
        return Ok(None);
    };
    let nodes = f
        .store_nodes()
        .map_err(|e| anyhow::anyhow!("config {}: {e}", config.display()))?;
    Ok(Some(SharedStore::new(
        nodes,
        &f.name,
        Duration::from_millis(f.lease_ms / 4),
    )))
}

/// `routes init|list` on a fleet's shared store (export/import: the embedded store only).
async fn shared_routes_cmd(
    config: &std::path::Path,
    cfg: &Config,
    store: SharedStore,
    cmd: RoutesCmd,
) -> Result<()> {
    match cmd {
        RoutesCmd::Init { .. } => {
            let last = store.create(&cfg.seed()).await.map_err(|e| {
                anyhow::anyhow!(
                    "{}",
                    e.to_string()
                        .replace("<CONFIG>", &config.display().to_string())
                )
            })?;
            println!(
                "created the route table of {} with {} route(s) from the config's [databases] (last epoch {last})",
                store.describe(),
                cfg.databases.len()
            );
        }
        RoutesCmd::List { json, .. } => {
            store.check().await?;
            let routes = store.load().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&routes)?);
                return Ok(());
            }
            println!(
                "{:<32} {:<8} {:<10} {:>8}",
                "DATABASE", "SIDE", "MODE", "EPOCH"
            );
            for r in &routes {
                println!(
                    "{:<32} {:<8} {:<10} {:>8}",
                    r.database, r.side, r.mode, r.epoch
                );
            }
            println!("{} route(s), store {}", routes.len(), store.describe());
            for i in store.instances().await? {
                println!(
                    "instance {} ({}, pid {}): acked epoch {}, lease {} ({} ms)",
                    i.instance,
                    i.endpoints,
                    i.pid,
                    i.acked_epoch,
                    if i.live { "live" } else { "expired" },
                    i.lease_left_ms
                );
            }
        }
        RoutesCmd::Export { .. } | RoutesCmd::Import { .. } => bail!(
            "routes export/import work on the embedded SQLite store; {} is a MariaDB table: \
             back it up with mariadb-dump (tables sqlproxy_*)",
            store.describe()
        ),
    }
    Ok(())
}

pub(crate) async fn routes_cmd(cmd: RoutesCmd) -> Result<()> {
    let at = match &cmd {
        RoutesCmd::Init { at, .. }
        | RoutesCmd::List { at, .. }
        | RoutesCmd::Export { at, .. }
        | RoutesCmd::Import { at, .. } => at,
    };
    if let Some(config) = at.config.clone() {
        let cfg = Config::load(&config)?;
        if let Some(store) = shared_store(&config, &cfg)? {
            return shared_routes_cmd(&config, &cfg, store, cmd).await;
        }
    }
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
