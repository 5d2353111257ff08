//! Coordinated key rotation of one side with the shortest interruption we can get.
//!
//! WireGuard binds a peer's allowed IPs to exactly one public key, so there is no moment where
//! both the old and the new key of a side are accepted. The interruption is therefore the
//! window between the first peer switching to the new public key and the rotating side
//! switching to the new private key, plus one handshake. We keep that window to two UAPI
//! transactions done back to back:
//!
//! 1. stage: generate `<name>.key.next` / `<name>.pub.next` (nothing changes on the wire);
//! 2. every peer, one transaction each: remove the old public key, add the new one with the
//!    same endpoint, allowed IPs and keepalive;
//! 3. the rotating side: set the new private key;
//! 4. measure: ping each peer's tunnel address every ~10 ms until it answers — the
//!    interruption is reported from step 2's start to that first answer (an upper bound:
//!    it includes starting `ping`);
//! 5. commit: rename the staged files over the current ones and copy the new public key into
//!    each peer's key folder, then re-plan every side (must say "no changes").
//!
//! If step 2 or 3 fails nothing is committed: `up` on each side restores the old keys.

use crate::backend::Handle;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::keys;
use crate::netns;
use crate::reconcile;
use crate::side::{read_state, Resolved, Side};
use serde::Serialize;
use std::time::{Duration, Instant};
use wireguard_control::{DeviceUpdate, PeerConfigBuilder};

#[derive(Debug, Clone, Serialize)]
pub struct RotateReport {
    pub side: String,
    pub old_public_key: String,
    pub new_public_key: String,
    /// Time the sides disagreed on keys: first peer update to the new private key in place.
    pub switch_window_ms: f64,
    /// First peer update to the first echo answered over the tunnel with the new keys.
    pub interruption_ms: f64,
    /// Every side re-planned to "no changes" after the commit.
    pub converged: bool,
}

/// Rotates the key of `side` (config `cfg`); `peers` are the other sides with their own
/// configs (they may share `cfg`). All sides must be up and reachable from this process.
pub fn rotate(cfg: &Config, side: &Side, peers: &[(&Config, &Side)]) -> Result<RotateReport> {
    let r = Resolved::new(cfg, side)?;
    let state = read_state(&r.state_path)?
        .ok_or_else(|| Error::Rotate(format!("{} is not up", r.dc.name)))?;
    let mut peer_sides = Vec::new();
    for (pcfg, pside) in peers {
        let pr = Resolved::new(pcfg, pside)?;
        let pstate = read_state(&pr.state_path)?
            .ok_or_else(|| Error::Rotate(format!("peer {} is not up", pr.dc.name)))?;
        peer_sides.push((pr, pstate));
    }
    let old_pub = keys::load_public(&cfg.public_key_path(&r.dc.name))?;
    let staged = keys::generate_next(&cfg.key_dir, &r.dc.name)?;
    let new_priv = keys::load_private(&cfg.key_dir.join(format!("{}.key.next", r.dc.name)))?;
    let new_pub = new_priv.get_public();

    // Read each peer's current entry for us before touching anything.
    let mut updates = Vec::new();
    for (pr, pstate) in &peer_sides {
        let dev = Handle::of(pr, pstate.backend).get()?;
        let entry = dev
            .peers
            .iter()
            .find(|p| p.config.public_key == old_pub)
            .ok_or_else(|| {
                Error::Rotate(format!(
                    "{} has no peer with {}'s current key; run `tunnel up` there first",
                    pr.dc.name, r.dc.name
                ))
            })?;
        let mut b = PeerConfigBuilder::new(&new_pub).replace_allowed_ips();
        if let Some(ep) = entry.config.endpoint {
            b = b.set_endpoint(ep);
        }
        b = b.add_allowed_ips(&entry.config.allowed_ips);
        if let Some(k) = entry
            .config
            .persistent_keepalive_interval
            .filter(|k| *k > 0)
        {
            b = b.set_persistent_keepalive_interval(k);
        }
        updates.push(DeviceUpdate::new().remove_peer_by_key(&old_pub).add_peer(b));
    }

    let t0 = Instant::now();
    for ((pr, pstate), u) in peer_sides.iter().zip(updates) {
        Handle::of(pr, pstate.backend).apply(u)?;
    }
    Handle::of(&r, state.backend).apply(DeviceUpdate::new().set_private_key(new_priv))?;
    let switch_window = t0.elapsed();

    let deadline = t0 + Duration::from_secs(10);
    for (pr, _) in &peer_sides {
        let addr = pr.dc.address.addr.to_string();
        loop {
            let ok = netns::command(r.ns(), "ping", &["-n", "-q", "-c", "1", "-W", "1", &addr])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                break;
            }
            if Instant::now() > deadline {
                return Err(Error::Rotate(format!(
                    "{} does not answer over the tunnel 10 s after the key change; staged keys left in {} (not committed)",
                    pr.dc.name,
                    cfg.key_dir.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let interruption = t0.elapsed();

    keys::commit_next(&cfg.key_dir, &r.dc.name)?;
    for (pcfg, _) in peers {
        if pcfg.key_dir != cfg.key_dir {
            keys::write_public(&pcfg.public_key_path(&r.dc.name), &new_pub)?;
        }
    }
    let mut converged = reconcile::plan(cfg, side)?.is_empty();
    for (pcfg, pside) in peers {
        converged &= reconcile::plan(pcfg, pside)?.is_empty();
    }
    Ok(RotateReport {
        side: r.dc.name.clone(),
        old_public_key: old_pub.to_base64(),
        new_public_key: staged.public_key,
        switch_window_ms: switch_window.as_secs_f64() * 1e3,
        interruption_ms: interruption.as_secs_f64() * 1e3,
        converged,
    })
}
