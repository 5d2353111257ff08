//! One site's bundle as a unit of work: captured, then (with a scratch server) verified, the
//! result recorded as the site's bundle state ([`capture_and_verify`]); and [`Background`],
//! which does that for each site handed to it, one at a time, in a thread of its own, while a
//! wave goes on with its other sites.
//!
//! Why a background thread and not a step of the cutover: the capture reads the old side,
//! which is the consistency point as soon as the switch committed; it needs nothing from the
//! freeze, so it must not lengthen it. A site is handed over once its outcome is `live` (after
//! its unfreeze); the thread runs at a lower CPU priority (nice 10, inherited by
//! `mariadb-dump` and `tar`), each capture is held to the byte rate of its
//! [`CaptureOptions`], and it pauses while any site is frozen ([`super::pause`]: this
//! process's freeze leases and the journal's), so a freeze is not made longer by it. Resumable as any capture: a wave killed meanwhile leaves the bundle
//! `capturing` in the journal, and the next run (or `bundle capture`) keeps its finished parts.

use super::capture::{self, CaptureOptions, CaptureReport};
use super::check;
use super::state::{self, BundleState, Stage};
use super::store::{BundleRef, BundleStore};
use super::Result;
use crate::journal::{now_ms, open_journal_at, JournalStore};
use crate::site_spec::SiteSpec;
use ed25519_dalek::SigningKey;
use std::path::PathBuf;
use std::sync::mpsc::{channel, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

/// What became of one site's bundle.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SiteBundle {
    pub site: String,
    /// The capture's report; `None` when it failed (`error` says why).
    pub capture: Option<CaptureReport>,
    /// `Some(true)`: verified; `Some(false)`: verification failed; `None`: not verified
    /// (no scratch server, or the capture failed).
    pub verified: Option<bool>,
    pub error: Option<String>,
}

impl SiteBundle {
    /// The capture and the asked-for verification succeeded.
    pub fn ok(&self) -> bool {
        self.error.is_none()
    }
}

/// Captures `spec`'s bundle and, with `scratch`, verifies it and records the result as the
/// site's bundle state. Errors of the capture or the verification are in the returned
/// [`SiteBundle`] (the journal holds them too); `Err` only when the journal itself failed.
pub fn capture_and_verify(
    journal: &mut dyn JournalStore,
    spec: &SiteSpec,
    store: &dyn BundleStore,
    key: &SigningKey,
    opts: &CaptureOptions,
    scratch: Option<&mysql_async::Opts>,
) -> Result<SiteBundle> {
    let mut out = SiteBundle {
        site: spec.site.clone(),
        capture: None,
        verified: None,
        error: None,
    };
    let r = match capture::capture(journal, spec, store, key, opts) {
        Ok(r) => r,
        Err(e) => {
            out.error = Some(format!("capture FAILED: {e}"));
            return Ok(out);
        }
    };
    if let Some(url) = scratch {
        let b = BundleRef::parse(&r.bundle)?;
        let (stage, error) = match check::verify(store, &b, &key.verifying_key(), Some(url)) {
            Ok(v) if v.ok => (Stage::Verified, None),
            Ok(v) => (Stage::Failed, Some(v.problems().join("; "))),
            Err(e) => (Stage::Failed, Some(e.to_string())),
        };
        record(journal, store, &b, stage, error.clone())?;
        out.verified = Some(error.is_none());
        out.error = error.map(|e| format!("verification FAILED: {e}"));
    }
    out.capture = Some(r);
    Ok(out)
}

/// Records a verification's result as the site's bundle state, when `b` is the bundle of the
/// site's last switch (an older bundle's result says nothing about the current one).
pub fn record(
    journal: &mut dyn JournalStore,
    store: &dyn BundleStore,
    b: &BundleRef,
    stage: Stage,
    error: Option<String>,
) -> Result<()> {
    if capture::bundle_of(journal, &b.site)?.as_ref() != Some(b) {
        return Ok(());
    }
    let s = BundleState {
        stage,
        bundle: b.id(),
        store: store.describe(),
        bytes: store.size(b)?,
        at_ms: now_ms(),
        error,
    };
    state::set(journal, &b.site, &s)?;
    Ok(())
}

/// What a [`Background`] needs for every site.
pub struct BackgroundJob {
    /// The journal (file or MariaDB URL); the thread opens a connection of its own.
    pub journal: PathBuf,
    pub store: Arc<dyn BundleStore>,
    pub key: SigningKey,
    pub opts: CaptureOptions,
    pub scratch: Option<mysql_async::Opts>,
}

/// Captures (and verifies) the bundles of the sites handed to it, in order, one at a time,
/// in a thread of its own; [`Background::finish`] waits for the last one.
pub struct Background {
    tx: Option<Sender<SiteSpec>>,
    handle: Option<JoinHandle<Vec<SiteBundle>>>,
}

/// CPU niceness of the capture thread (and of the programs it starts).
const NICE: i32 = 10;

impl Background {
    /// Starts the thread; `said` is called with each site's result as it comes.
    pub fn start(
        job: BackgroundJob,
        mut said: impl FnMut(&SiteBundle) + Send + 'static,
    ) -> Background {
        let (tx, rx) = channel::<SiteSpec>();
        let handle = std::thread::Builder::new()
            .name("bundle-capture".into())
            .spawn(move || {
                lower_priority();
                let mut done = Vec::new();
                for spec in rx {
                    let r = open_journal_at(&job.journal)
                        .map_err(super::BundleError::from)
                        .and_then(|mut j| {
                            capture_and_verify(
                                &mut *j,
                                &spec,
                                &*job.store,
                                &job.key,
                                &job.opts,
                                job.scratch.as_ref(),
                            )
                        });
                    let r = r.unwrap_or_else(|e| SiteBundle {
                        site: spec.site.clone(),
                        capture: None,
                        verified: None,
                        error: Some(format!("capture FAILED: {e}")),
                    });
                    said(&r);
                    done.push(r);
                }
                done
            })
            .expect("spawning the bundle capture thread");
        Background {
            tx: Some(tx),
            handle: Some(handle),
        }
    }

    /// Queues `spec`'s site (captured after those queued before it).
    pub fn submit(&self, spec: &SiteSpec) {
        if let Some(tx) = &self.tx {
            // The thread ends only after `finish` dropped the sender: a send cannot fail
            // before, and a panicked thread is reported by `finish`.
            let _ = tx.send(spec.clone());
        }
    }

    /// Waits until every queued site's bundle is done; their results in queue order.
    pub fn finish(mut self) -> Vec<SiteBundle> {
        self.tx.take();
        match self.handle.take().map(|h| h.join()) {
            Some(Ok(v)) => v,
            Some(Err(_)) => vec![SiteBundle {
                site: String::new(),
                capture: None,
                verified: None,
                error: Some("the bundle capture thread panicked".into()),
            }],
            None => Vec::new(),
        }
    }
}

/// Lowers this thread's CPU priority (Linux: per thread); children inherit it.
fn lower_priority() {
    // SAFETY: plain system calls on this thread's own id.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, NICE);
    }
}
