//! MySQL wire-protocol proxy that keeps old database endpoints answering, routes each database
//! to the old or new datacenter and switches it without failing client queries.
//!
//! Layout (a client's bytes flow top to bottom):
//! - [`wire`]: frames and logical packets (≥ 16 MiB split/join), bounds-checked field reader.
//! - [`protocol`]: handshake v10, login packet, auth switch, OK / ERR / EOF, capability flags.
//! - [`auth`]: `mysql_native_password` from stored hashes; the user store file.
//! - [`sync`]: loading hashes and grants from the old server (`sync-users`); [`hosts`]: an
//!   account's host part applied to the client's source address.
//! - [`server`]: one listener per old endpoint; [`stream`]: plain or TLS client streams.
//! - [`session`]: login of one client and its backend connection; [`commands`]: the command
//!   loop with the gate (hold / re-home / read_only); [`follow`]: the session follows the
//!   database each command acts on; [`prepared`]: prepared-statement id mapping.
//! - [`relay`]: one command's round trip, frames forwarded without decoding rows;
//!   [`response`]: where a response ends.
//! - [`rewrite`]: `@@socket` answered as NULL (clients must not bypass the proxy);
//!   [`lex`]: the SQL lexer (comments, quotes, executable comments); [`scope`]: what a
//!   statement acts on (databases, calls, pinned state); [`classify`]: write detection for
//!   read_only; [`session_state`]: SET / USE tracking; [`pinned`]: state bound to one
//!   backend (temporary tables, locks, SQL prepared statements).
//! - [`mode`]: a database's mode; [`route`]: live routes, session registry, counters; [`route_store`]: the durable
//!   copy every route change is committed to first (SQLite, WAL; or a fleet's shared MariaDB
//!   table); [`fleet`]: lease, follow, acknowledge and fence when instances share routes;
//!   [`store_nodes`]: the nodes a shared store's URL names (a Galera cluster) and failing over
//!   between them;
//!   [`switch`]: pause → drain → resume (→ every live instance acknowledged);
//!   [`admin`]: HTTP API and Prometheus metrics; [`config`]: the TOML file.
//! - [`backend`]: the proxy's own backend logins and queries.
//! - [`limits`]: connection counts, the login throttle, refusal counters (hostile clients).
pub mod admin;
pub mod admin_tls;
pub mod auth;
pub mod backend;
pub mod classify;
pub mod commands;
pub mod config;
pub mod fleet;
pub mod follow;
pub mod histogram;
pub mod hosts;
pub mod lex;
pub mod limits;
pub mod metrics;
pub mod mode;
pub mod pinned;
pub mod prepared;
pub mod protocol;
pub mod relay;
pub mod response;
pub mod rewrite;
pub mod route;
pub mod route_store;
pub mod scope;
pub mod server;
pub mod session;
pub mod session_state;
pub mod store_nodes;
pub mod stream;
pub mod switch;
pub mod sync;
pub mod wire;
