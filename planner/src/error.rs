//! Errors. Every inventory problem names its file, line and field.

use std::fmt;
use std::path::PathBuf;

/// One problem in one row of an inventory file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RowError {
    /// File name inside the inventory directory, e.g. `sites.jsonl`.
    pub file: String,
    /// 1-based line number (for CSV, the header is line 1).
    pub line: u64,
    /// Field (or CSV column) at fault, when one can be named.
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(
                f,
                "{}:{}: field `{}`: {}",
                self.file, self.line, field, self.message
            ),
            None => write!(f, "{}:{}: {}", self.file, self.line, self.message),
        }
    }
}

/// Why an inventory could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{dir}: no sites file (expected sites.jsonl or sites.csv)")]
    NoSites { dir: PathBuf },
    /// Row-level problems: at most `max_errors` of them, in file and line order.
    #[error("{}", format_rows(.errors, *.truncated))]
    Invalid {
        errors: Vec<RowError>,
        /// True when loading stopped at the error limit and more problems may exist.
        truncated: bool,
    },
}

fn format_rows(errors: &[RowError], truncated: bool) -> String {
    let mut s = format!(
        "inventory is invalid ({} problem{}{}):",
        errors.len(),
        if errors.len() == 1 { "" } else { "s" },
        if truncated {
            ", stopped at the error limit"
        } else {
            ""
        }
    );
    for e in errors {
        s.push_str("\n  ");
        s.push_str(&e.to_string());
    }
    s
}

/// Why settings are unusable.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read settings file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("settings file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("setting `{field}`: {message}")]
    Invalid { field: String, message: String },
}

/// Why a plan file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("cannot access plan file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("plan file {path} is not a valid plan: {message}")]
    Format { path: PathBuf, message: String },
    #[error("plan file {path} has format version {found}; this build reads version {expected}")]
    Version {
        path: PathBuf,
        found: u32,
        expected: u32,
    },
    #[error("site {0:?} is not in the plan (neither in a wave, nor unplaced, nor excluded)")]
    UnknownSite(String),
}
