//! The migrator engine: per-site state machine with a durable journal, file and database copy,
//! verification, cutover, per-site rollback and waves.
//!
//! Layout: one file per pipeline stage, named by its role (`journal`, `sync_files`, `copy_db`,
//! `verify`, `cutover`, `rollback`, `wave`). The `migrator` binary (`src/main.rs`) wires the
//! command-line groups in `src/cmd/`.
