//! A database's mode, as the proxy serves it, the route store keeps it and the migrator reads
//! it from the admin API.

use serde::{Deserialize, Serialize};

/// A database's mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Open,
    /// Reads pass; writes get error 1290.
    ReadOnly,
    /// Queries are held (bounded) until the mode changes.
    Paused,
}

impl Mode {
    /// The mode named `s` (what [`Mode::as_str`] gives), if any.
    pub fn parse(s: &str) -> Option<Mode> {
        [Mode::Open, Mode::ReadOnly, Mode::Paused]
            .into_iter()
            .find(|m| m.as_str() == s)
    }

    /// The name the admin API, the route store and the migrator use.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Open => "open",
            Mode::ReadOnly => "read_only",
            Mode::Paused => "paused",
        }
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
