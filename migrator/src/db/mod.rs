//! A database's copy between two servers with `mysql_async`, verified by checksums.
//!
//! - [`copy`]: the copy of one database: snapshot, tables in parallel, resume keys, the
//!   overlapped source and destination checksums.
//! - [`rows`]: the row stream of one table (bulk INSERT, `LOAD DATA LOCAL` from memory or
//!   INSERTs; overlapped reads and writes).
//! - [`schema`]: what a database holds (tables, columns, keys, views, routines, triggers,
//!   events) and how it is recreated.
//! - [`ddl`]: table (re)creation and secondary indexes built after the load.

pub mod copy;
pub mod ddl;
pub mod rows;
pub mod schema;
