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
//!    same endpoint and allowed IPs but *no keepalive yet* (a keepalive makes the new peer
//!    initiate at once, towards a key the rotating side does not hold yet; that initiation is
//!    dropped and WireGuard waits REKEY_TIMEOUT, 5 s, before the peer tries again);
//! 3. the rotating side: set the new private key; its next packet initiates the handshake;
//! 4. measure: a 1 kHz UDP stream to each peer's tunnel address runs from before step 2
//!    until a datagram sent after step 3 is echoed; the interruption is the longest gap
//!    between consecutive echoes (resolution ~1 ms), reported with the lost datagrams.
//!    Safety net: if no echo comes back within 100 ms (the peer had its own traffic for us
//!    and initiated too early, as above), the peer entry is re-created with a keepalive,
//!    which initiates at once now that both sides hold the new keys: ~100 ms, not 5 s;
//! 5. restore each peer's keepalive, commit: rename the staged files over the current ones
//!    and copy the new public key into each peer's key folder, then re-plan every side (must
//!    say "no changes").
//!
//! If a step fails before the commit, the staged files stay as `.next` and `tunnel up` on
//! each side restores the old keys.

use crate::backend::Handle;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::keys;
use crate::outage::OutageProbe;
use crate::reconcile;
use crate::side::{lock_dir, read_state, Resolved, Side};
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
    /// First peer update to the first echo (of a datagram sent after the switch) received.
    pub first_echo_ms: f64,
    /// Longest gap between consecutive echoes of a 1 kHz UDP stream over the tunnel, across
    /// the rotation: the interruption a flow sees.
    pub interruption_ms: f64,
    /// Datagrams of that stream that never came back.
    pub probes_lost: usize,
    /// Every side re-planned to "no changes" after the commit.
    pub converged: bool,
}

/// Rotates the key of `side` (config `cfg`); `peers` are the other sides with their own
/// configs (they may share `cfg`). All sides must be up and reachable from this process.
pub fn rotate(cfg: &Config, side: &Side, peers: &[(&Config, &Side)]) -> Result<RotateReport> {
    let r = Resolved::new(cfg, side)?;
    let _lock = lock_dir(&side.state_dir)?;
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
        // The keepalive is restored only once the new session is up: a new peer with a
        // keepalive initiates a handshake at once, which the rotating side (still on its old
        // key) would drop, and WireGuard then waits REKEY_TIMEOUT (5 s) before trying again.
        let keepalive = entry
            .config
            .persistent_keepalive_interval
            .filter(|k| *k > 0);
        updates.push((
            DeviceUpdate::new()
                .remove_peer_by_key(&old_pub)
                .add_peer(b.clone()),
            (keepalive, b),
        ));
    }

    // A 1 kHz UDP stream to every peer over the tunnel measures the interruption.
    let mut probes = Vec::new();
    for (pr, _) in &peer_sides {
        let p = OutageProbe::start(
            r.ns(),
            pr.ns(),
            pr.dc.address.addr,
            Duration::from_millis(1),
        )?;
        if !p.wait_echo_sent_after(Instant::now(), Duration::from_secs(3)) {
            p.finish();
            return Err(Error::Rotate(format!(
                "{} does not answer over the tunnel before rotation; nothing changed",
                pr.dc.name
            )));
        }
        probes.push(p);
    }

    let t0 = Instant::now();
    let mut keepalives = Vec::new();
    for ((pr, pstate), (u, k)) in peer_sides.iter().zip(updates) {
        Handle::of(pr, pstate.backend).apply(u)?;
        keepalives.push(k);
    }
    Handle::of(&r, state.backend).apply(DeviceUpdate::new().set_private_key(new_priv))?;
    let switch_window = t0.elapsed();

    let mut stats = Vec::new();
    for (((pr, pstate), probe), (keepalive, fresh)) in peer_sides.iter().zip(probes).zip(keepalives)
    {
        let handle = Handle::of(pr, pstate.backend);
        let after = t0 + switch_window;
        let mut ok = probe.wait_echo_sent_after(after, Duration::from_millis(100));
        if !ok {
            // Safety net for a handshake lost in the switch (e.g. the peer had traffic for us
            // and initiated towards the new key too early): a fresh peer entry with a
            // keepalive initiates at once, now that both sides hold the new keys.
            handle.apply(
                DeviceUpdate::new()
                    .remove_peer_by_key(&new_pub)
                    .add_peer(fresh.set_persistent_keepalive_interval(keepalive.unwrap_or(25))),
            )?;
            ok = probe.wait_echo_sent_after(after, Duration::from_secs(10));
        }
        let first_echo = t0.elapsed();
        if ok {
            let restore = PeerConfigBuilder::new(&new_pub);
            handle.apply(DeviceUpdate::new().add_peer(match keepalive {
                Some(k) => restore.set_persistent_keepalive_interval(k),
                None => restore.unset_persistent_keepalive(),
            }))?;
        }
        // Keep the stream running a little so the gap after the switch is fully seen.
        std::thread::sleep(Duration::from_millis(30));
        let st = probe.finish();
        if !ok {
            return Err(Error::Rotate(format!(
                "{} does not answer over the tunnel 10 s after the key change; staged keys left in {} (not committed); run `tunnel up` on both sides to restore the old keys",
                pr.dc.name,
                cfg.key_dir.display()
            )));
        }
        stats.push((first_echo, st));
    }
    let first_echo = stats.iter().map(|s| s.0).max().unwrap_or_default();
    let interruption_ms = stats.iter().map(|s| s.1.longest_gap_ms).fold(0.0, f64::max);
    let probes_lost = stats.iter().map(|s| s.1.lost).sum();

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
        first_echo_ms: first_echo.as_secs_f64() * 1e3,
        interruption_ms,
        probes_lost,
        converged,
    })
}
