//! Moving a database to another side, in named phases:
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

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::route::{Mode, Shared};

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
}

#[derive(Debug, Clone, Serialize)]
pub struct PauseReport {
    pub database: String,
    /// How long draining took.
    pub drain_ms: f64,
    /// Transactions rolled back because they outlived the deadline.
    pub aborted_transactions: usize,
    pub sessions: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct ResumeReport {
    pub database: String,
    pub side: String,
    pub mode: Mode,
    /// From the start of the pause to the resume: what clients experienced.
    pub pause_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SwitchReport {
    pub pause: PauseReport,
    pub resume: ResumeReport,
}

/// Phases 1 and 2.
pub async fn pause(
    shared: &Arc<Shared>,
    db: &str,
    txn_deadline: Duration,
    grace: Duration,
) -> Result<PauseReport, SwitchError> {
    let route = shared.route(db);
    let start = Instant::now();
    {
        let mut before = route.mode_before_pause.lock().expect("mode lock");
        let cur = route.state.borrow().mode;
        if cur != Mode::Paused {
            *before = cur;
            *route.paused_at.lock().expect("paused_at lock") = Some(start);
        }
    }
    route.state.send_modify(|st| st.mode = Mode::Paused);
    tracing::info!(database = db, "paused");
    let mut aborted = 0;
    let mut abort_sent = false;
    loop {
        let sessions = shared.sessions_of(db);
        let busy: Vec<_> = sessions.iter().filter(|s| s.busy()).collect();
        if busy.is_empty() {
            return Ok(PauseReport {
                database: db.into(),
                drain_ms: start.elapsed().as_secs_f64() * 1e3,
                aborted_transactions: aborted,
                sessions: sessions.len(),
            });
        }
        let waited = start.elapsed();
        if waited >= txn_deadline && !abort_sent {
            abort_sent = true;
            for s in &busy {
                if s.in_txn.load(Ordering::SeqCst) {
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
            resume(shared, db, None).ok();
            return Err(SwitchError::StillRunning {
                db: db.into(),
                running,
                waited_ms: waited.as_millis() as u64,
            });
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Phase 4: set the side (if given) and give back the mode from before the pause.
pub fn resume(
    shared: &Arc<Shared>,
    db: &str,
    side: Option<&str>,
) -> Result<ResumeReport, SwitchError> {
    let route = shared.route(db);
    if let Some(s) = side {
        if shared.backend_addr(s).is_none() {
            return Err(SwitchError::UnknownSide {
                db: db.into(),
                side: s.into(),
            });
        }
    }
    if route.state.borrow().mode != Mode::Paused {
        return Err(SwitchError::NotPaused { db: db.into() });
    }
    let mode = *route.mode_before_pause.lock().expect("mode lock");
    let started = route.paused_at.lock().expect("paused_at lock").take();
    route.state.send_modify(|st| {
        if let Some(s) = side {
            st.side = Arc::from(s);
        }
        st.mode = mode;
    });
    let pause_ms = started.map_or(0.0, |t| t.elapsed().as_secs_f64() * 1e3);
    shared.record_pause(db, pause_ms);
    let side_now = route.state.borrow().side.to_string();
    tracing::info!(database = db, side = %side_now, pause_ms, "resumed");
    Ok(ResumeReport {
        database: db.into(),
        side: side_now,
        mode,
        pause_ms,
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
    let resume = resume(shared, db, Some(to))?;
    Ok(SwitchReport { pause, resume })
}
