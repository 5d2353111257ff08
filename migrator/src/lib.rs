//! The migrator engine: per-site state machine with a durable journal, file and database copy,
//! verification, cutover, per-site rollback and waves.
//!
//! Layout: a folder per concern of the design ([`files`], [`db`], the cutover engine), one file
//! per pipeline stage inside, named by its role. The `migrator` binary (`src/main.rs`) wires
//! the command-line groups in `src/cmd/`.
//!
//! - [`journal`]: the durable journal behind the [`journal::JournalStore`] trait (SQLite, WAL,
//!   by default; or a shared MariaDB database): plan reference, per-site state, steps recorded
//!   before and after they run, checkpoints of committed progress.
//! - [`files`]: a home's files, walked, compared and copied (local or over SSH), and the
//!   change feed that lets a pass skip the walk.
//! - [`db`]: a database's copy (`mysql_async`): schema, the row stream, deferred indexes,
//!   checksums.
//! - [`verify`]: compares manifests and table checksums of both sides.
//! - Cutover: [`site_spec`] (one site's endpoints on both sides), [`systems`] (traits over the
//!   outside systems), [`dry_run`] (recording/printing implementation), [`real_systems`]
//!   (the real ones built from a site's spec: `drivers`' HAProxy, DNS and sql-proxy admin
//!   client, tunnel health, local copy, the HTTP fingerprint), [`web_host`] (the new web
//!   server's preparation over SSH), [`cutover`] (the engine: phases, the freeze window, move
//!   groups, rollback, throttle, leases and their watchdog), [`wave`] (a wave of sites in
//!   parallel), [`monitor`] (a running wave's live picture), [`control`] and
//!   [`control_socket`] (operator controls kept in the journal, the local socket),
//!   [`finalize`] and [`release_old`] (dropping the old copies once a bundle is verified); [`fleet`] (workers on many hosts claiming a started wave's move groups
//!   with a lease); [`route_check`] (the proxy's routes against the journal, and their repair);
//!   [`lab_spec`] derives site specs from the staging lab's `state.json`.
//! - [`artifacts`]: a site's cron jobs, certificates, PHP runtime and web rules (issue 20),
//!   and the fence that runs each job on the side owning the site only.
//! - [`bundle`]: consistency-point bundles (issue 19): a site's databases and files as they
//!   were at the switch, captured from the old side after it, signed, verified, restored.
//! - [`serve`]: `migrator serve`, the progress dashboard (pages, JSON API, `/metrics`, wave
//!   controls and site rollback) over summary tables the journal's triggers keep current.

pub mod artifacts;
pub mod bundle;
pub mod control;
pub mod control_socket;
pub mod cutover;
pub mod db;
pub mod dry_run;
pub mod files;
pub mod finalize;
pub mod fixtures;
pub mod fleet;
pub mod journal;
pub mod lab_spec;
pub mod monitor;
pub mod preflight;
pub mod real_systems;
pub mod release_old;
pub mod route_check;
pub mod serve;
pub mod site_spec;
pub mod systems;
pub mod verify;
pub mod wave;
pub mod web_host;
