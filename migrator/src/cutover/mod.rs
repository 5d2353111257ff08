//! The cutover engine: one site's `planned → prepared → synced → frozen → final_synced → verified →
//! switched → live` (docs/ARCHITECTURE.md §4), resumable from whatever the journal says.
//!
//! Phases and their side effects, in order:
//! - **prepare**: destination homes, databases, users (same hash), compat paths, new-side web
//!   config; hosted DNS TTL lowered.
//! - **sync**: file passes and database copies (snapshot, then changed tables) until one pass
//!   moves at most the budget's delta.
//! - gate: the tunnel must be healthy (waited for, bounded) and the delta within budget, or the
//!   site is not frozen and stays `synced` on the old side.
//! - **freeze**: HAProxy server of the site in maint on both VIPs (503 + Retry-After), proxy
//!   pauses the site's databases (returns once drained). The write-unavailability clock starts
//!   (stored in the journal so a resumed run measures it too).
//! - **final-sync**: last file pass and changed tables; **verify**: manifests and checksums.
//! - **switch**: old VIP's server pointed at the new web server (read back), hosted DNS replaced
//!   and confirmed on every authoritative server, then the proxy resumes each database on the
//!   new side: that is the commit point.
//! - **unfreeze**: HAProxy servers ready (old VIP through the tunnel, new VIP directly): `live`.
//! - **post-check**: the site's HTTP answer must equal the fingerprint taken before the freeze;
//!   if not, the site is rolled back.
//!
//! Failure before the commit point → **abort**: every system is put back from what it reports
//! (not from what we believe), the site serves from the old side, state `aborted`.
//! Crash recovery follows the same rule: a site found `frozen`/`final_synced` is aborted and
//! retried; one found `verified` completes its switch once the tunnel checks healthy (aborted
//! otherwise), each action idempotent. A lease left before `verified` (killed inside the freeze
//! phase) counts as frozen. Errors at the switch abort before its commit point and are retried
//! (bounded) after it; an unfreeze still refused after its backoff budget hands the lease over
//! to `lease-watch` and the next run, so a site is never left frozen.
//!
//! Every mutating phase runs under the site's lease ([`lease`]): sync kind for prepare and the
//! sync passes, freeze kind from the freeze on; prepare and sync refuse a site that switched.
//!
//! Layout (one file per stage; no file imports one above it):
//! - [`checkpoints`]: a site's cutover checkpoints (the typed [`checkpoints::Checkpoint`]
//!   and the one place that renders and parses their journal keys); [`phase`]: named, timed,
//!   journaled phases
//!   and [`phase::CutoverError`]; [`signals`]: what a wave and its sites tell each other.
//! - [`cron_fence`]: the freeze, commit points and unfreeze of the site's cron jobs.
//! - [`lease`]: site leases (sync, freeze) in the journal; [`lease_keeper`]: a lease renewed
//!   in the background through one long pass; [`engine`]: the [`Engine`] of one site and the
//!   helpers every phase uses.
//! - [`actions`]: switch actions shared by cutover and rollback (point the old VIP, DNS,
//!   drain); [`freeze`]: the freeze window (freeze, final sync, verify, switch, unfreeze,
//!   post-check, abort); [`rollback`]: back to the old side after the switch; [`throttle`]:
//!   reasons not to freeze yet.
//! - [`group`]: the freeze of a move group, the only freeze path (a site alone is a group of
//!   one); [`machine`]: one site's state machine up to the freeze, and crash recovery;
//!   [`watchdog`]: recovery of sites whose lease expired.

pub mod actions;
pub mod checkpoints;
pub mod cron_fence;
pub mod engine;
pub mod freeze;
pub mod group;
pub mod lease;
pub mod lease_keeper;
pub mod machine;
pub mod phase;
pub mod rollback;
pub mod signals;
pub mod throttle;
pub mod watchdog;

#[cfg(test)]
mod tests;

pub use engine::{Engine, EngineOptions, SiteReport};
