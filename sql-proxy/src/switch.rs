//! Moving a database to another side, in named phases:
//!
//! Every route change below is committed to the route store before it takes effect
//! ([`Shared::commit`]): a proxy killed at any point comes back with the route as last
//! committed (paused stays paused, a resumed switch stays on its new side).
//!
//! 1. **pause**: the route's mode becomes `paused`; sessions outside a transaction are held at
//!    their next command (bounded, see `commands.rs`), sessions inside one may continue.
//! 2. **drain**: wait until no session of the database runs a command or holds an open
//!    transaction. At `txn_deadline` the sessions still idle inside a transaction are told to
//!    abort it (their backend connection is closed, so the server rolls it back, and their
//!    next command gets a clear error: never a silent replay). A statement still running
//!    after a further grace period fails the pause, and the route goes back to how it was.
//! 3. (the caller copies or verifies data while paused)
//! 4. **resume**: the route gets its new side and its previous mode; held sessions wake, each
//!    re-homes on its next command (new login with stage 1, replayed state, re-prepared
//!    statements under the same client ids).
//!
//! In a fleet (instances sharing the store, `fleet.rs`) the pause and the resume each return
//! only once every live instance acknowledged their epoch: for the pause, that instance holds
//! the database and has drained it too; for the resume, it serves the new side. An instance
//! that neither acknowledges nor renews is not waited for beyond its lease (it is fenced by
//! then). A pause not acknowledged in time is undone; a resume not acknowledged in time stays
//! committed (every instance not serving it is fenced or will apply it) and is reported.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::fleet::{self, NotAcknowledged};
use crate::route::{Desired, Mode, Shared};
use crate::route_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    #[error("database {db}: unknown side {side:?} (not in [backends])")]
    UnknownSide { db: String, side: String },
    #[error("database {db}: {running} statement(s) still running {waited_ms} ms after the pause began; pause undone")]
    StillRunning {
        db: String,
        running: usize,
        waited_ms: u64,
    },
    #[error("database {db} is not paused")]
    NotPaused { db: String },
    /// The change could not be made durable, so it was not made at all.
    #[error("database {db}: route change not committed, nothing changed: {source}")]
    Store { db: String, source: StoreError },
    /// Not every live instance held the database in time: the pause was undone.
    #[error("database {db}: pause not confirmed by the whole fleet, pause undone: {source}")]
    PauseNotAcknowledged { db: String, source: NotAcknowledged },
    /// The resume is committed, but not every live instance confirmed it in time.
    #[error("database {db}: resume committed but not confirmed by the whole fleet: {source}")]
    ResumeNotAcknowledged { db: String, source: NotAcknowledged },
}

#[derive(Debug, Clone, Serialize)]
pub struct PauseReport {
    pub database: String,
    /// How long draining took.
    pub drain_ms: f64,
    /// Transactions rolled back because they outlived the deadline.
    pub aborted_transactions: usize,
    pub sessions: usize,
    /// The fleet's instances that acknowledged the pause (empty with the embedded store).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub instances: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ResumeReport {
    pub database: String,
    pub side: String,
    pub mode: Mode,
    /// From the start of the pause to the resume: what clients experienced.
    pub pause_ms: f64,
    /// The fleet's instances that acknowledged the resume (empty with the embedded store).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub instances: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SwitchReport {
    pub pause: PauseReport,
    pub resume: ResumeReport,
}

/// Phases 1 and 2. The caller holds the route's `switch_lock`.
pub async fn pause(
    shared: &Arc<Shared>,
    db: &str,
    txn_deadline: Duration,
    grace: Duration,
) -> Result<PauseReport, SwitchError> {
    let route = shared.route(db);
    let start = Instant::now();
    let was_paused = route.current().mode == Mode::Paused;
    let epoch = shared
        .commit(&route, |cur| Desired {
            side: cur.side.clone(),
            mode: Mode::Paused,
            resume_mode: cur.resume_mode,
        })
        .await
        .map_err(|source| SwitchError::Store {
            db: db.into(),
            source,
        })?;
    if !was_paused {
        *route.paused_at.lock().expect("paused_at lock") = Some(start);
    }
    tracing::info!(database = db, "paused");
    let mut aborted = 0;
    let mut abort_sent = false;
    loop {
        let sessions = shared.sessions_of(db);
        let busy: Vec<_> = sessions.iter().filter(|s| s.busy()).collect();
        if busy.is_empty() {
            let drain_ms = start.elapsed().as_secs_f64() * 1e3;
            let within = fleet::ack_wait(
                shared,
                (txn_deadline + grace).saturating_sub(start.elapsed()),
            );
            let instances = match fleet::wait_acks(shared, epoch, within).await {
                Ok(i) => i,
                Err(source) => {
                    if let Err(e) = resume(shared, db, None).await {
                        tracing::error!(database = db, error = %e, "undoing the pause failed; still paused");
                    }
                    return Err(SwitchError::PauseNotAcknowledged {
                        db: db.into(),
                        source,
                    });
                }
            };
            return Ok(PauseReport {
                database: db.into(),
                drain_ms,
                aborted_transactions: aborted,
                sessions: sessions.len(),
                instances,
            });
        }
        let waited = start.elapsed();
        if waited >= txn_deadline && !abort_sent {
            abort_sent = true;
            for s in &busy {
                if s.holds_backend() {
                    aborted += 1;
                    s.abort_txn.store(true, Ordering::SeqCst);
                    s.abort_notify.notify_one();
                }
            }
            tracing::warn!(
                database = db,
                aborted,
                "switch deadline passed: aborting open transactions"
            );
        }
        if waited >= txn_deadline + grace {
            let running = busy.len();
            // Undo the pause (if that commit fails too, the database stays paused: held
            // queries time out, nothing is served from a side not committed).
            if let Err(e) = resume(shared, db, None).await {
                tracing::error!(database = db, error = %e, "undoing the pause failed; still paused");
            }
            return Err(SwitchError::StillRunning {
                db: db.into(),
                running,
                waited_ms: waited.as_millis() as u64,
            });
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Phase 4: set the side (if given) and give back the mode from before the pause. The caller
/// holds the route's `switch_lock`.
pub async fn resume(
    shared: &Arc<Shared>,
    db: &str,
    side: Option<&str>,
) -> Result<ResumeReport, SwitchError> {
    if let Some(s) = side {
        if shared.backend_addr(s).is_none() {
            return Err(SwitchError::UnknownSide {
                db: db.into(),
                side: s.into(),
            });
        }
    }
    let route = match shared.lookup(db) {
        Some(r) if r.current().mode == Mode::Paused => r,
        _ => return Err(SwitchError::NotPaused { db: db.into() }),
    };
    let epoch = shared
        .commit(&route, |cur| Desired {
            side: side.map_or_else(|| cur.side.clone(), Arc::from),
            mode: cur.resume_mode,
            resume_mode: cur.resume_mode,
        })
        .await
        .map_err(|source| SwitchError::Store {
            db: db.into(),
            source,
        })?;
    let started = route.paused_at.lock().expect("paused_at lock").take();
    let pause_ms = started.map_or(0.0, |t| t.elapsed().as_secs_f64() * 1e3);
    shared.record_pause(db, pause_ms);
    let st = route.current();
    tracing::info!(database = db, side = %st.side, pause_ms, epoch, "resumed");
    let instances = fleet::wait_acks(shared, epoch, fleet::ack_wait(shared, Duration::ZERO))
        .await
        .map_err(|source| SwitchError::ResumeNotAcknowledged {
            db: db.into(),
            source,
        })?;
    Ok(ResumeReport {
        database: db.into(),
        side: st.side.to_string(),
        mode: st.mode,
        pause_ms,
        instances,
    })
}

/// Pause, drain and resume on `to` in one call (when the data is already in place).
pub async fn switch(
    shared: &Arc<Shared>,
    db: &str,
    to: &str,
    txn_deadline: Duration,
    grace: Duration,
) -> Result<SwitchReport, SwitchError> {
    if shared.backend_addr(to).is_none() {
        return Err(SwitchError::UnknownSide {
            db: db.into(),
            side: to.into(),
        });
    }
    let route = shared.route(db);
    let _guard = route.switch_lock.lock().await;
    let pause = pause(shared, db, txn_deadline, grace).await?;
    let resume = resume(shared, db, Some(to)).await?;
    Ok(SwitchReport { pause, resume })
}
