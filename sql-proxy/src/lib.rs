//! MySQL wire-protocol proxy that keeps old database endpoints answering, routes each database
//! to the old or new datacenter and switches it without failing client queries.
pub mod auth;
pub mod classify;
pub mod protocol;
pub mod response;
pub mod session_state;
pub mod wire;
