//! A database's copy between two servers with `mysql_async`, verified by checksums.
//!
//! - [`copy`]: the copy of one database, stage by stage: the source described, the
//!   destination prepared, the snapshot (`snapshot.rs`), each table planned and copied by the
//!   workers with resume keys and overlapped checksums (`table.rs`), the objects last.
//! - [`rows`]: the row stream of one table (bulk INSERT, `LOAD DATA LOCAL` from memory or
//!   INSERTs; overlapped reads and writes).
//! - [`schema`]: what a database holds (tables, columns, keys, views, routines, triggers,
//!   events) and how it is recreated.
//! - [`capture`]: change capture from the source's row-based binary log after the copy.
//! - [`follow`]: a database kept following its source (copy, then capture; the freeze's tail).
//! - [`mover`]: the databases' part of the local data mover (follow or copy; pins the new
//!   side in the freeze, verifies after the switch).
//! - [`ddl`]: table (re)creation and secondary indexes built after the load.
//! - [`grants`]: which of an account's grants a copy replays (its own database's only).

pub mod capture;
pub mod copy;
pub mod ddl;
pub mod follow;
pub mod grants;
pub mod mover;
mod progress;
pub mod rows;
pub mod schema;
pub(crate) mod session;
mod snapshot;
mod table;
