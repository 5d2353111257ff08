//! What a wave and its sites tell each other: the wave holds sites before their freeze (an
//! operator's pause, too many failures) and learns their states and bytes moved.

use crate::journal::SiteState;

/// What a wave tells its sites and learns from them. Implemented by
/// [`crate::monitor::WaveMonitor`]; a single-site run has none.
pub trait WaveSignals: Send + Sync {
    /// Why no site of the wave may freeze now (operator pause, error rate), if any.
    fn hold(&self) -> Option<Hold>;
    /// `site` waits before its freeze for `reason`; `None` when it goes on.
    fn waiting(&self, site: &str, reason: Option<&str>);
    /// `site` reached `state`.
    fn state(&self, site: &str, state: SiteState);
    /// `site` moved `bytes` more bytes.
    fn bytes(&self, site: &str, bytes: u64);
}

/// A wave-wide reason to hold sites before their freeze.
#[derive(Debug, Clone, PartialEq)]
pub struct Hold {
    pub reason: String,
    /// Counts against `gate_wait` (error rate) or waits without bound (operator pause).
    pub bounded: bool,
}
