//! A home's files: what it holds, how two sides differ, and how the difference is copied, on
//! this host or over SSH.
//!
//! - [`beneath`]: every read and write stays inside the home (`openat2` beneath the root, no
//!   symlink followed in any component, FIFOs and devices never read); relative paths checked.
//! - [`manifest`]: what a home holds (parallel walk) and the diff of two manifests.
//! - [`apply`]: destination-side operations (atomic writes, resumable large files), shared by
//!   a local pass and `migrator receive`.
//! - [`sync`]: one sync pass: walk both sides, plan, apply in batches, journal it.
//! - [`dest_cache`]: the destination manifest cached in the journal, checked by directory
//!   [`stamps`], so a no-change pass walks only the source.
//! - [`feed`] (the pass's client of the watcher's socket; `feed/protocol.rs`: what crosses
//!   it and the chain rules), [`watch`] (`migrator watch`: inotify, the socket) and
//!   [`feed_patch`] (last manifest + fresh lstat of dirty entries): a pass with `--feed`
//!   re-stats only what changed; [`journaled`] runs a pass with both shortcuts.
//! - [`wire`], [`remote`] and [`receive`]: the framed batch protocol, the SSH destination
//!   (`remote/session.rs` opens the connection: `russh`, host keys checked against
//!   known_hosts) and `migrator receive`, the far side's loop.
//! - [`owners`]: the uid/gid map of `--owner-map` (unmapped owners refused).
//! - [`home_url`]: where a home lives (local path or `ssh://` URL with its options);
//!   [`transport`]: the cutover engine's passes over it.

pub mod apply;
pub mod beneath;
pub mod dest_cache;
pub mod feed;
pub mod feed_patch;
pub mod home_url;
pub mod journaled;
pub mod manifest;
pub mod owners;
pub mod receive;
pub mod remote;
pub mod stamps;
pub mod sync;
pub mod transport;
pub mod watch;
pub mod wire;
