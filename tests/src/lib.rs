//! Cross-crate integration tests, in `tests/tests/`: each needs more than one of our crates at
//! once, with real servers (`testkit`).
//!
//! - `cutover_db.rs`: a site's database moved by the migrator's engine through a real
//!   `sql-proxy` (in-process, admin API over HTTP) between two real MariaDB servers while a
//!   client writes through the proxy's old endpoint, then rolled back; every acknowledged write
//!   on the side that owns the data.
