//! A planner-compatible inventory of the lab (`datacenters.jsonl`, `clusters.jsonl`,
//! `filers.jsonl`, `sql_servers.jsonl`, `databases.jsonl`, `sites.jsonl`), written to
//! `<state>/inventory/` so `migrator plan` can plan waves over the lab's sites.
//! The record shapes follow `planner/src/model.rs` (the inventory contract); they are written
//! as JSON here rather than with the planner's types so the lab does not depend on the planner.

use crate::error::{LabError, Result};
use crate::sites::SiteSpec;
use crate::state::LabState;
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes the inventory and returns its directory.
pub fn write(st: &LabState, spec: &SiteSpec) -> Result<PathBuf> {
    let dir = st.state_dir.join("inventory");
    std::fs::create_dir_all(&dir).map_err(LabError::io("creating inventory dir", &dir))?;
    let site_bytes = (spec.small_files as u64) * 4352
        + (spec.large_files * spec.large_file_kib * 1024) as u64
        + 8 * 1024;
    let site_files = (spec.small_files + spec.large_files + 3) as u64;
    let n = st.sites.len() as u64;
    let db_bytes = 64 * 1024 + spec.rows as u64 * 100;
    let lines = |name: &str, rows: Vec<serde_json::Value>| -> Result<()> {
        let path = dir.join(name);
        let mut f = std::io::BufWriter::new(
            std::fs::File::create(&path).map_err(LabError::io("writing inventory", &path))?,
        );
        for r in rows {
            writeln!(f, "{r}").map_err(LabError::io("writing inventory", &path))?;
        }
        f.flush().map_err(LabError::io("writing inventory", &path))
    };
    lines(
        "datacenters.jsonl",
        vec![
            json!({"id": "old", "role": "source"}),
            json!({"id": "new", "role": "destination"}),
        ],
    )?;
    lines(
        "clusters.jsonl",
        vec![
            json!({"id": "old-web1", "dc": "old", "vip": st.old.vip.to_string(), "servers": 1,
                   "disk_bytes": site_bytes * n * 2, "site_slots": n * 2}),
            json!({"id": "new-web1", "dc": "new", "vip": st.new.vip.to_string(), "servers": 1,
                   "disk_bytes": site_bytes * n * 4, "site_slots": n * 4}),
        ],
    )?;
    lines(
        "filers.jsonl",
        vec![
            json!({"id": st.old.filer.number.to_string(), "dc": "old", "capacity_bytes": site_bytes * n * 2}),
            json!({"id": st.new.filer.number.to_string(), "dc": "new", "capacity_bytes": site_bytes * n * 4}),
        ],
    )?;
    let sql = |dc: &crate::state::DcState, id: &str, tag: &str| {
        json!({"id": id, "dc": tag, "hostnames": [dc.sql_hostname], "ips": [dc.sql_addr.to_string()],
               "port": dc.sql_port, "max_databases": 2500, "disk_bytes": 64u64 << 30})
    };
    lines(
        "sql_servers.jsonl",
        vec![
            sql(&st.old, "sql1-old", "old"),
            sql(&st.new, "sql1-new", "new"),
        ],
    )?;
    let mut dbs = Vec::new();
    for s in &st.sites {
        if s.database == format!("db_{}", s.login) {
            dbs.push(
                json!({"name": s.database, "user": s.db_user, "sql_server": "sql1-old",
                            "bytes": db_bytes, "write_rate": 10.0}),
            );
        }
    }
    lines("databases.jsonl", dbs)?;
    lines(
        "sites.jsonl",
        st.sites
            .iter()
            .map(|s| {
                json!({"id": s.login, "login": s.login, "domains": [s.domain],
                       "home": s.home.to_string_lossy(), "filer": s.filer.to_string(),
                       "cluster": "old-web1", "bytes": site_bytes, "files": site_files,
                       "traffic": 1.0, "dns_hosted": true, "databases": [s.database]})
            })
            .collect(),
    )?;
    Ok(dir)
}

/// Reads back the sites file (used by tests).
pub fn read_sites(dir: &Path) -> Result<Vec<serde_json::Value>> {
    let path = dir.join("sites.jsonl");
    let text = std::fs::read_to_string(&path).map_err(LabError::io("reading inventory", &path))?;
    text.lines()
        .map(|l| {
            serde_json::from_str(l).map_err(|e| LabError::Config {
                path: path.clone(),
                message: e.to_string(),
            })
        })
        .collect()
}
