//! The store cases (`suite_store.rs`: controls, route checks, the dashboard's summary) on
//! SQLite files.

pub(crate) use crate::{bundle, control, fleet, journal, preflight, route_check, serve};

#[path = "suite_store.rs"]
mod suite_store;

struct File(tempfile::TempDir);

impl suite_store::StoreBackend for File {
    fn journal(&self) -> std::path::PathBuf {
        self.0.path().join("j.sqlite")
    }
}

#[test]
fn every_store_case_on_sqlite() {
    suite_store::run_all_store("sqlite", |_| File(tempfile::tempdir().unwrap()));
}
