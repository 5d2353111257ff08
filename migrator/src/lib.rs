//! The migrator engine: per-site state machine with a durable journal, file and database copy,
//! verification, cutover, per-site rollback and waves.
//!
//! Layout: one file per pipeline stage, named by its role (`journal`, `sync_files`, `copy_db`,
//! `verify`, `cutover`, `rollback`, `wave`). The `migrator` binary (`src/main.rs`) wires the
//! command-line groups in `src/cmd/`.
//!
//! - [`journal`]: the durable journal (SQLite, WAL) behind the [`journal::JournalStore`] trait:
//!   plan reference, per-site state, steps recorded before and after they run, checkpoints of
//!   committed progress.
//! - [`manifest`]: what a home holds (parallel walk) and the diff of two manifests.
//! - [`apply`]: destination-side operations (atomic writes), shared by local sync and
//!   `migrator receive`.
//! - [`sync_files`]: one sync pass: walk both sides, plan, apply in batches, journal it.
//! - [`dest_cache`]: the destination manifest cached in the journal, checked by directory
//!   stamps, so a no-change pass walks only the source.
//! - [`change_feed`] (protocol, chain rules), [`feed_watch`] (`migrator watch`: inotify, the
//!   socket) and [`feed_patch`] (last manifest + fresh lstat of dirty entries): a pass with
//!   `--feed` re-stats only what changed; [`sync_journaled`] runs a pass with both shortcuts.
//! - [`wire`] and [`remote`]: the framed batch protocol and the SSH destination (`russh`,
//!   host keys checked against known_hosts) talking to `migrator receive`.
//! - [`copy_db`]: database copy with `mysql_async`; [`load_rows`]: the row stream (`LOAD DATA
//!   LOCAL` from memory, overlapped reads and writes); [`db_ddl`]: secondary indexes built
//!   after the load; [`checksum`]: per-table checksums.
//! - [`verify`]: compares manifests and table checksums of both sides.
//! - Cutover: [`site_spec`] (one site's endpoints on both sides), [`systems`] (traits over the
//!   outside systems), [`dry_run`] (recording/printing implementation), [`real_systems`]
//!   (HAProxy, DNS, sql-proxy admin API, tunnel health, local copy), [`phase`] (named, timed,
//!   journaled phases), [`cutover`] (one site's state machine; [`freeze_window`]: freeze to
//!   post-check and abort; [`site_actions`]: switch actions shared with rollback), [`rollback`], [`wave`]
//!   ([`group`]: sites sharing a database freeze together); [`throttle`] (reasons not to freeze
//!   yet), [`monitor`] (a running wave's live picture), [`control`] and [`control_socket`]
//!   (operator controls kept in the journal, the local socket), [`lease`] (freeze leases and
//!   the watchdog), [`finalize`];
//!   [`lab_spec`] derives site specs from the staging lab's `state.json`.
//! - [`serve`]: `migrator serve`, the progress dashboard (pages, JSON API, `/metrics`, wave
//!   controls and site rollback) over summary tables the journal's triggers keep current.

pub mod apply;
pub mod change_feed;
pub mod control;
pub mod control_socket;
pub mod copy_db;
pub mod cutover;
#[cfg(test)]
mod cutover_tests;
pub mod db_ddl;
pub mod db_schema;
pub mod dest_cache;
pub mod dry_run;
pub mod feed_patch;
pub mod feed_watch;
pub mod file_transport;
pub mod finalize;
pub mod fixtures;
pub mod freeze_window;
pub mod group;
pub mod journal;
pub mod lab_spec;
pub mod lease;
pub mod load_rows;
pub mod manifest;
pub mod monitor;
pub mod phase;
pub mod real_systems;
pub mod remote;
pub mod rollback;
pub mod serve;
pub mod site_actions;
pub mod site_spec;
pub mod sync_files;
pub mod sync_journaled;
pub mod systems;
pub mod throttle;
pub mod verify;
pub mod wave;
pub mod web_host;
pub mod wire;
