//! Where the cutover keeps its per-site checkpoints in the journal (scope `cutover`).

/// The journal checkpoint scope of the cutover engine.
pub(crate) const SCOPE: &str = "cutover";
