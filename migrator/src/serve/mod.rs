//! `migrator serve`: the progress dashboard (pages, JSON API, Prometheus metrics, controls),
//! an embedded HTTP server (axum) reading the journal.
//!
//! Layout:
//! - [`summary`]: summary tables and triggers in the journal, so every page reads a few hundred
//!   rows whatever the number of sites (SQLite's; MariaDB's in `summary_mariadb.rs`);
//! - every read goes through [`crate::journal::SqlConn`]: the dashboard serves a journal file or
//!   a shared MariaDB journal (`--journal mysql://…`) with the same code;
//! - [`queries`]: the read model (overview, a page of a wave's sites); [`site`]: one site;
//! - [`auth`]: the access token (0600 file), sessions, CSRF;
//! - [`metrics`]: Prometheus text format;
//! - [`controls`]: pause/resume/throttle a wave (through [`crate::control`], journal-backed, so
//!   a running `migrator wave run` obeys) and roll back a site (the `migrator rollback` code
//!   path), each recorded with who and when;
//! - [`http`]: routes, the authentication layer, pages and assets (`migrator/assets/`, embedded
//!   in the binary: no CDN).

pub mod auth;
pub mod controls;
pub mod http;
pub mod metrics;
pub mod queries;
pub mod site;
pub mod summary;
mod summary_mariadb;

use crate::journal::{JournalError, JournalLocation, SqlConn};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Errors of the dashboard.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("journal {0} does not exist (point --journal at the file `migrator wave run` writes)")]
    NoJournal(PathBuf),
    #[error(transparent)]
    Token(#[from] auth::TokenError),
    #[error(transparent)]
    Plan(#[from] planner::PlanError),
    #[error("listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Control(#[from] crate::control::ControlError),
    /// The site spec file of `--sites` (the dashboard's rollbacks).
    #[error(transparent)]
    Spec(#[from] crate::site_spec::SpecError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Connections to the journal, reused across requests: read-only ones on a SQLite file, a
/// connection of its own each on a MariaDB journal.
pub struct Pool {
    location: JournalLocation,
    conns: Mutex<Vec<Box<dyn SqlConn>>>,
}

/// A connection borrowed from the [`Pool`]; returned on drop.
pub struct Pooled<'a> {
    pool: &'a Pool,
    conn: Option<Box<dyn SqlConn>>,
}

impl std::ops::Deref for Pooled<'_> {
    type Target = dyn SqlConn + 'static;
    fn deref(&self) -> &(dyn SqlConn + 'static) {
        &**self.conn.as_ref().expect("connection present until drop")
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.conn.take() {
            self.pool.conns.lock().expect("pool").push(c);
        }
    }
}

impl Pool {
    pub fn new(location: &JournalLocation) -> Pool {
        Pool {
            location: location.clone(),
            conns: Mutex::new(Vec::new()),
        }
    }

    pub fn get(&self) -> Result<Pooled<'_>, ServeError> {
        if let Some(c) = self.conns.lock().expect("pool").pop() {
            return Ok(Pooled {
                pool: self,
                conn: Some(c),
            });
        }
        let c: Box<dyn SqlConn> = match &self.location {
            JournalLocation::Sqlite(p) => Box::new(crate::journal::SqliteSql::open_read_only(p)?),
            other => crate::journal::open_sql(other)?,
        };
        Ok(Pooled {
            pool: self,
            conn: Some(c),
        })
    }
}

/// Prepares a journal (a file path or a MariaDB URL) for the dashboard: its own tables exist
/// (the journal's schema, the summary) and the summary is current. Returns what
/// [`summary::install`] did.
pub fn prepare_journal(
    journal: &Path,
    plan: Option<&Path>,
) -> Result<summary::Installed, ServeError> {
    let location = JournalLocation::parse(journal).map_err(JournalError::from)?;
    if !location.may_exist() {
        return Err(ServeError::NoJournal(journal.to_path_buf()));
    }
    let db: Box<dyn SqlConn> = match &location {
        JournalLocation::Sqlite(p) => {
            let s = crate::journal::SqliteJournal::open(p)?.into_sql();
            // A writer's transaction may hold the lock for a while.
            s.set_busy_timeout(std::time::Duration::from_secs(30))?;
            Box::new(s)
        }
        other => crate::journal::open_sql(other)?,
    };
    let plan_path = match plan {
        Some(p) => Some(p.to_path_buf()),
        None => queries::current_wave(&*db)?
            .0
            .map(|p| PathBuf::from(p.rsplit_once("#wave").map(|(a, _)| a).unwrap_or(&p)))
            .filter(|p| p.exists()),
    };
    let waves = plan_path
        .as_deref()
        .map(summary::PlanWaves::read)
        .transpose()?;
    Ok(summary::install(&*db, waves.as_ref())?)
}

/// Everything a request handler needs.
pub struct App {
    pub journal: PathBuf,
    pub pool: Pool,
    pub auth: auth::Auth,
    pub controls: controls::ControlDesk,
}

pub type Shared = Arc<App>;

/// How to start a dashboard.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub journal: PathBuf,
    pub listen: std::net::SocketAddr,
    /// Where the access token lives (created 0600 at first start).
    pub token_file: PathBuf,
    /// The plan whose waves the dashboard shows (default: the journal's plan reference).
    pub plan: Option<PathBuf>,
    /// Site specs: enables the rollback control with the sites' real systems.
    pub sites: Option<PathBuf>,
}

/// The access token and whether it was created by this start (print it then, once).
pub struct Token {
    pub value: String,
    pub fresh: bool,
}

/// Opens everything a dashboard needs; `rollback` overrides the rollback runner (tests).
pub fn build(
    opts: &ServeOptions,
    rollback: Option<controls::RollbackRunner>,
) -> Result<(Shared, Token, summary::Installed), ServeError> {
    let (value, fresh) = auth::load_or_create_token(&opts.token_file)?;
    let installed = prepare_journal(&opts.journal, opts.plan.as_deref())?;
    let rollback = match (rollback, &opts.sites) {
        (Some(r), _) => Some(r),
        (None, Some(sites)) => Some(controls::RollbackRunner::real(sites, &opts.journal)?),
        (None, None) => None,
    };
    let app = Arc::new(App {
        journal: opts.journal.clone(),
        pool: Pool::new(&JournalLocation::parse(&opts.journal).map_err(JournalError::from)?),
        auth: auth::Auth::new(value.clone())?,
        controls: controls::ControlDesk::new(&opts.journal, rollback)?,
    });
    Ok((app, Token { value, fresh }, installed))
}

/// Serves `app` on `listener` until `shutdown` resolves.
pub async fn serve(
    app: Shared,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, http::router(app))
        .with_graceful_shutdown(shutdown)
        .await
}

/// A dashboard running on its own thread (tests, benchmarks); stopped on drop.
pub struct Background {
    pub addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Background {
    /// Starts `app` on `listen` (use port 0 for a free port).
    pub fn start(app: Shared, listen: std::net::SocketAddr) -> Result<Background, ServeError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let listener = rt
            .block_on(tokio::net::TcpListener::bind(listen))
            .map_err(|source| ServeError::Listen {
                addr: listen,
                source,
            })?;
        let addr = listener.local_addr()?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let res = rt.block_on(serve(app, listener, async {
                let _ = rx.await;
            }));
            if let Err(e) = res {
                tracing::error!("dashboard: {e}");
            }
        });
        Ok(Background {
            addr,
            stop: Some(tx),
            thread: Some(thread),
        })
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
