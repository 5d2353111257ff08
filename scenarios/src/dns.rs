//! The lab's DNS: Knot, authoritative for the hosted zone, in the `dns` namespace. Updates
//! (RFC 2136) are accepted only when signed with the lab's TSIG key; unsigned ones are refused.

use crate::error::{LabError, Result};
use crate::process::{in_ns, run, spawn_daemon, ProcRecord};
use crate::state::LabState;
use std::fmt::Write as _;

/// Zone file: SOA, NS, infrastructure names (DB hostnames, VIPs, SSH) and `site_lines`.
pub fn zone_file(state: &LabState, site_lines: &str) -> String {
    let z = &state.zone;
    let mut s = format!(
        "$ORIGIN {z}.\n$TTL 300\n@ IN SOA ns1.{z}. hostmaster.{z}. 1 3600 600 86400 60\n@ IN NS ns1.{z}.\nns1 IN A {}\n",
        state.dns.addr
    );
    for dc in [&state.old, &state.new] {
        let tag = match dc.side {
            crate::state::Side::Old => "old",
            crate::state::Side::New => "new",
        };
        let _ = writeln!(s, "vip.{tag} IN A {}", dc.vip);
        let _ = writeln!(s, "web.{tag} IN A {}", dc.web_addr);
        let _ = writeln!(s, "ssh.{tag} IN A {}", dc.ssh_addr);
        // sql_hostname is "sql1.<tag>.<zone>": write it relative to the origin.
        let rel = dc.sql_hostname.trim_end_matches(&format!(".{z}"));
        let _ = writeln!(s, "{rel} IN A {}", dc.sql_addr);
    }
    if state.fleet.is_some() {
        // old-dc's second DB endpoint, served by the second proxy instance.
        let rel = crate::sql_proxy::SQL2_HOST_PREFIX;
        let _ = writeln!(s, "{rel} IN A {}", crate::sql_proxy::SQL2_ADDR);
    }
    s.push_str(site_lines);
    s
}

/// Writes Knot's config and zone, and starts knotd in the dns namespace.
pub fn knot_start(state: &LabState, site_lines: &str) -> Result<ProcRecord> {
    let dir = state.state_dir.join("dns");
    for sub in ["zones", "db", "run"] {
        let p = dir.join(sub);
        std::fs::create_dir_all(&p).map_err(LabError::io("creating knot dir", &p))?;
    }
    let zone_path = dir.join("zones").join(format!("{}.zone", state.zone));
    std::fs::write(&zone_path, zone_file(state, site_lines))
        .map_err(LabError::io("writing zone", &zone_path))?;
    let conf = format!(
        "server:\n    rundir: {run}\n    listen: {addr}@{port}\n\nlog:\n  - target: stderr\n    any: warning\n\n\
database:\n    storage: {db}\n\ninclude: {key}\n\nacl:\n  - id: tsig-update\n    key: {keyname}\n    action: [update, transfer]\n\n\
zone:\n  - domain: {zone}\n    storage: {zones}\n    file: {zone}.zone\n    acl: tsig-update\n",
        run = dir.join("run").display(),
        addr = state.dns.addr,
        port = state.dns.port,
        db = dir.join("db").display(),
        key = state.dns.tsig_key_file.display(),
        keyname = state.dns.tsig_key_name,
        zone = state.zone,
        zones = dir.join("zones").display(),
    );
    std::fs::write(&state.dns.knot_conf, conf)
        .map_err(LabError::io("writing knot.conf", &state.dns.knot_conf))?;
    run(std::process::Command::new("knotc").args([
        "-c",
        &state.dns.knot_conf.to_string_lossy(),
        "conf-check",
    ]))?;
    let mut cmd = in_ns(None, &state.dns.netns, "/usr/sbin/knotd");
    cmd.args(["-c", &state.dns.knot_conf.to_string_lossy()]);
    spawn_daemon("dns/knot", cmd, &dir.join("knot.log"))
}

/// Why the zone is not served yet (the readiness probe's detail).
#[derive(Debug, thiserror::Error)]
pub enum ZoneNotLoaded {
    /// `knotc zone-status` failed (Knot not answering on its control socket yet).
    #[error(transparent)]
    Knotc(#[from] LabError),
    #[error("zone not loaded yet: {0}")]
    NoSerial(String),
}

/// Asks Knot (through its control socket) whether the zone is loaded.
pub fn zone_loaded(state: &LabState) -> std::result::Result<(), ZoneNotLoaded> {
    let out = run(std::process::Command::new("knotc").args([
        "-c",
        &state.dns.knot_conf.to_string_lossy(),
        "zone-status",
        &state.zone,
    ]))?;
    if out.contains("serial") && !out.contains("serial: none") {
        Ok(())
    } else {
        Err(ZoneNotLoaded::NoSerial(out.trim().to_string()))
    }
}
