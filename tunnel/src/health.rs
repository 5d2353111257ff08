//! Health: `status` (what the device says: per peer handshake age, bytes, endpoint), `health`
//! (the verdict the migrator gates cutovers on: a bool and one clear reason) and `check`
//! (health plus latency, loss and a bounded throughput probe over the tunnel).
//!
//! Collectors (`status`, `probe`) measure; `judge` alone decides and returns the reason.

use crate::backend::{Backend, Handle};
use crate::config::Config;
use crate::daemon;
use crate::error::Result;
use crate::ip;
use crate::netns;
use crate::side::{read_state, Resolved, Side};
use serde::Serialize;
use std::net::IpAddr;
use std::time::SystemTime;

#[derive(Debug, Clone, Serialize)]
pub struct PeerStatus {
    /// Datacenter name from the config, when the key belongs to one.
    pub name: Option<String>,
    pub public_key: String,
    pub endpoint: Option<String>,
    /// Seconds since the last completed handshake; `None` = never.
    pub last_handshake_age_secs: Option<u64>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub allowed_ips: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub side: String,
    pub netns: Option<String>,
    pub interface: String,
    pub backend: Option<Backend>,
    /// `up` has run (a state file exists).
    pub up: bool,
    pub daemon_pid: Option<u32>,
    pub daemon_running: Option<bool>,
    pub interface_present: bool,
    pub listen_port: Option<u16>,
    pub public_key: Option<String>,
    pub peers: Vec<PeerStatus>,
    /// Why some of the above could not be read (empty when all went well).
    pub problems: Vec<String>,
}

/// Reads the side's state without changing anything.
pub fn status(cfg: &Config, side: &Side) -> Result<Status> {
    let r = Resolved::new(cfg, side)?;
    netns::ensure_exists(r.ns())?;
    let state = read_state(&r.state_path)?;
    let link = ip::link(r.ns(), r.iface())?;
    let mut st = Status {
        side: r.dc.name.clone(),
        netns: r.netns.clone(),
        interface: r.iface().to_string(),
        backend: state.as_ref().map(|s| s.backend),
        up: state.is_some(),
        daemon_pid: state.as_ref().and_then(|s| s.daemon).map(|d| d.pid),
        daemon_running: state.as_ref().and_then(|s| s.daemon).map(|d| d.alive()),
        interface_present: link.is_some(),
        listen_port: None,
        public_key: None,
        peers: vec![],
        problems: vec![],
    };
    let Some(state) = state else {
        return Ok(st);
    };
    if st.daemon_running == Some(false) {
        let tail = daemon::log_tail(&r.log_path);
        st.problems.push(format!(
            "wireguard-go daemon (pid {}) is not running{}",
            st.daemon_pid.unwrap_or(0),
            if tail.is_empty() {
                String::new()
            } else {
                format!("; its last log line: {tail}")
            }
        ));
        return Ok(st);
    }
    if link.is_none() {
        st.problems
            .push(format!("interface {} is missing{}", r.iface(), r.where_()));
        return Ok(st);
    }
    match Handle::of(&r, state.backend).get() {
        Ok(dev) => {
            let now = SystemTime::now();
            st.listen_port = dev.listen_port;
            st.public_key = dev.public_key.map(|k| k.to_base64());
            for p in dev.peers {
                let key = p.config.public_key.to_base64();
                let name = cfg.peers_of(&r.dc.name).find_map(|d| {
                    let k = crate::keys::load_public(&cfg.public_key_path(&d.name)).ok()?;
                    (k == p.config.public_key).then(|| d.name.clone())
                });
                st.peers.push(PeerStatus {
                    name,
                    public_key: key,
                    endpoint: p.config.endpoint.map(|e| e.to_string()),
                    last_handshake_age_secs: p
                        .stats
                        .last_handshake_time
                        .map(|t| now.duration_since(t).map(|d| d.as_secs()).unwrap_or(0)),
                    rx_bytes: p.stats.rx_bytes,
                    tx_bytes: p.stats.tx_bytes,
                    allowed_ips: p
                        .config
                        .allowed_ips
                        .iter()
                        .map(|a| format!("{}/{}", a.address, a.cidr))
                        .collect(),
                });
            }
        }
        Err(e) => st.problems.push(e.to_string()),
    }
    Ok(st)
}

/// Result of pinging one peer's tunnel address.
#[derive(Debug, Clone, Serialize)]
pub struct Probe {
    pub peer: String,
    pub address: IpAddr,
    pub sent: u32,
    pub received: u32,
    pub loss_percent: f64,
    pub rtt_min_ms: Option<f64>,
    pub rtt_avg_ms: Option<f64>,
    pub rtt_max_ms: Option<f64>,
    /// The probe itself could not run (stderr of `ping`); loss figures are then meaningless.
    pub error: Option<String>,
}

/// The verdict a caller gates on.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    pub healthy: bool,
    /// One sentence for an operator: why not healthy, or what was verified.
    pub reason: String,
    pub probes: Vec<Probe>,
}

impl Health {
    fn bad(reason: String, probes: Vec<Probe>) -> Health {
        Health {
            healthy: false,
            reason,
            probes,
        }
    }
}

/// How fast probes follow each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pace {
    /// 100 ms apart: the health verdict judged on loss.
    Normal,
    /// 10 ms apart: a liveness confirmation that costs ~20 ms.
    Quick,
    /// Back to back (`ping -f`), bounded by a deadline: the throughput probe.
    Flood,
}

/// Pings `addr` from inside `ns` at `pace`.
fn ping(ns: Option<&str>, peer: &str, addr: IpAddr, count: u32, size: u32, pace: Pace) -> Probe {
    let count_s = count.to_string();
    let size_s = size.to_string();
    let deadline = "5";
    let addr_s = addr.to_string();
    let mut args = vec!["-n", "-q", "-c", &count_s, "-s", &size_s, "-W", "1"];
    match pace {
        // -w bounds the probe's duration; it also makes ping retry past -c, so only here.
        Pace::Flood => args.extend(["-f", "-w", deadline]),
        Pace::Normal => args.extend(["-i", "0.1"]),
        Pace::Quick => args.extend(["-i", "0.01"]),
    }
    args.push(&addr_s);
    let out = netns::command(ns, "ping", &args)
        .stdin(std::process::Stdio::null())
        .output();
    let (text, err) = match out {
        Ok(o) => (
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).trim().to_string(),
        ),
        Err(e) => (String::new(), format!("cannot run ping: {e}")),
    };
    let mut probe = parse_ping(peer, addr, count, &text);
    if !text.contains("packets transmitted") {
        // No summary: ping itself failed (missing binary, bad namespace, no route...).
        probe.error = Some(if err.is_empty() {
            "ping printed no summary".to_string()
        } else {
            err
        });
    }
    probe
}

/// Parses iputils `ping -q` summary lines. Missing lines mean nothing came back.
pub(crate) fn parse_ping(peer: &str, addr: IpAddr, count: u32, text: &str) -> Probe {
    let mut sent = count;
    let mut received = 0;
    let mut rtt = (None, None, None);
    for line in text.lines() {
        if line.contains("packets transmitted") {
            let words: Vec<&str> = line.split([' ', ',']).filter(|w| !w.is_empty()).collect();
            for (i, w) in words.iter().enumerate() {
                if *w == "packets" && i > 0 {
                    sent = words[i - 1].parse().unwrap_or(count);
                }
                if *w == "received" && i > 0 {
                    received = words[i - 1].parse().unwrap_or(0);
                }
            }
        }
        if let Some(v) = line.split(" = ").nth(1).filter(|_| line.starts_with("rtt")) {
            let nums: Vec<f64> = v
                .split_whitespace()
                .next()
                .unwrap_or("")
                .split('/')
                .filter_map(|n| n.parse().ok())
                .collect();
            if nums.len() >= 3 {
                rtt = (Some(nums[0]), Some(nums[1]), Some(nums[2]));
            }
        }
    }
    let loss = if sent == 0 {
        100.0
    } else {
        100.0 * f64::from(sent.saturating_sub(received)) / f64::from(sent)
    };
    Probe {
        peer: peer.to_string(),
        address: addr,
        sent,
        received,
        loss_percent: loss,
        rtt_min_ms: rtt.0,
        rtt_avg_ms: rtt.1,
        rtt_max_ms: rtt.2,
        error: None,
    }
}

/// Is the tunnel of `side` usable right now? Checks, in order: `up` ran, the daemon lives,
/// the interface exists and is up, every peer answers pings over the tunnel (5 probes,
/// loss within `max_loss_percent`) and has a handshake younger than `handshake_max_age`.
/// Never fails: any error becomes an unhealthy verdict with its reason.
pub fn health(cfg: &Config, side: &Side) -> Health {
    health_with(cfg, side, 5, Pace::Normal)
}

/// A liveness confirmation for use right after a passing [`health`] (e.g. inside a cutover
/// freeze, where every millisecond is customer downtime): the same static checks and handshake
/// age, but 2 probes 10 ms apart per peer, healthy when each peer answers at least one. Loss
/// percentages are not judged here (two probes cannot measure them): that is `health`'s job.
pub fn health_quick(cfg: &Config, side: &Side) -> Health {
    health_with(cfg, side, 2, Pace::Quick)
}

fn health_with(cfg: &Config, side: &Side, pings: u32, pace: Pace) -> Health {
    let st = match status(cfg, side) {
        Ok(st) => st,
        Err(e) => return Health::bad(format!("cannot read tunnel state: {e}"), vec![]),
    };
    if let Some(reason) = judge_static(cfg, &st) {
        return Health::bad(reason, vec![]);
    }
    let r = match Resolved::new(cfg, side) {
        Ok(r) => r,
        Err(e) => return Health::bad(e.to_string(), vec![]),
    };
    let probes: Vec<Probe> = cfg
        .peers_of(&r.dc.name)
        .map(|p| ping(r.ns(), &p.name, p.address.addr, pings, 56, pace))
        .collect();
    // Pinging may have triggered a fresh handshake: judge the handshake after the probes.
    let st = match status(cfg, side) {
        Ok(st) => st,
        Err(e) => return Health::bad(format!("cannot read tunnel state: {e}"), probes),
    };
    judge(cfg, &st, probes, pace == Pace::Normal)
}

fn judge_static(cfg: &Config, st: &Status) -> Option<String> {
    let ns = st
        .netns
        .as_deref()
        .map(|n| format!(" in netns {n}"))
        .unwrap_or_default();
    if !st.up {
        return Some(format!(
            "tunnel is not up on {}{ns} (no state recorded; run `tunnel up`)",
            st.side
        ));
    }
    if let Some(p) = st.problems.first() {
        return Some(format!("{p} (run `tunnel up` to repair)"));
    }
    if !st.interface_present {
        return Some(format!("interface {} is missing{ns}", st.interface));
    }
    let expected = cfg.peers_of(&st.side).count();
    let named = st.peers.iter().filter(|p| p.name.is_some()).count();
    if named < expected {
        return Some(format!(
            "{named} of {expected} configured peers present on {} (run `tunnel plan`)",
            st.interface
        ));
    }
    None
}

fn judge(cfg: &Config, st: &Status, probes: Vec<Probe>, judge_loss: bool) -> Health {
    if let Some(reason) = judge_static(cfg, st) {
        return Health::bad(reason, probes);
    }
    for p in &probes {
        if let Some(e) = &p.error {
            let reason = format!(
                "cannot probe peer {} ({}) over the tunnel: {e} (is iputils-ping installed?)",
                p.peer, p.address
            );
            return Health::bad(reason, probes);
        }
        if p.received == 0 {
            let reason = format!(
                "peer {} ({}) does not answer over the tunnel: {}/{} probes lost",
                p.peer, p.address, p.sent, p.sent
            );
            return Health::bad(reason, probes);
        }
        if judge_loss && p.loss_percent > f64::from(cfg.max_loss_percent) {
            let reason = format!(
                "peer {} ({}): {:.0}% probe loss > {}% allowed",
                p.peer, p.address, p.loss_percent, cfg.max_loss_percent
            );
            return Health::bad(reason, probes);
        }
    }
    for peer in &st.peers {
        let name = peer.name.as_deref().unwrap_or(&peer.public_key);
        match peer.last_handshake_age_secs {
            None => {
                return Health::bad(format!("no handshake with peer {name} yet"), probes);
            }
            Some(age) if age > cfg.handshake_max_age => {
                let reason = format!(
                    "last handshake with peer {name} was {age} s ago (limit {} s)",
                    cfg.handshake_max_age
                );
                return Health::bad(reason, probes);
            }
            Some(_) => {}
        }
    }
    let summary: Vec<String> = probes
        .iter()
        .map(|p| {
            format!(
                "{} answers ({}/{} probes, avg {:.2} ms)",
                p.peer,
                p.received,
                p.sent,
                p.rtt_avg_ms.unwrap_or(0.0)
            )
        })
        .collect();
    Health {
        healthy: true,
        reason: summary.join("; "),
        probes,
    }
}

/// Options of `check`.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// Latency/loss pings per peer (0.1 s apart).
    pub pings: u32,
    /// Throughput probe: flood-ping echoes of `throughput_payload` bytes, at most this many.
    pub throughput_echoes: u32,
    pub throughput_payload: u32,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            pings: 10,
            throughput_echoes: 500,
            throughput_payload: 1300,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    pub peer: String,
    /// Echo payload bytes carried each way per second (`ping -f`, bounded count and 5 s).
    pub echo_bytes_per_sec: Option<f64>,
    pub echoes: u32,
    pub received: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub health: Health,
    pub throughput: Vec<Throughput>,
    /// Per peer after the probes: handshake age, rx/tx bytes, endpoint (empty if unreadable).
    pub peers: Vec<PeerStatus>,
}

/// `health` with more pings and a bounded throughput probe per peer.
pub fn check(cfg: &Config, side: &Side, opts: &CheckOptions) -> CheckReport {
    let health = health_with(cfg, side, opts.pings.max(1), Pace::Normal);
    let mut throughput = Vec::new();
    if health.healthy {
        if let Ok(r) = Resolved::new(cfg, side) {
            for p in cfg.peers_of(&r.dc.name) {
                let start = std::time::Instant::now();
                let pr = ping(
                    r.ns(),
                    &p.name,
                    p.address.addr,
                    opts.throughput_echoes,
                    opts.throughput_payload,
                    Pace::Flood,
                );
                let secs = start.elapsed().as_secs_f64();
                throughput.push(Throughput {
                    peer: p.name.clone(),
                    echo_bytes_per_sec: (pr.received > 0 && secs > 0.0).then(|| {
                        f64::from(pr.received) * f64::from(opts.throughput_payload) / secs
                    }),
                    echoes: pr.sent,
                    received: pr.received,
                });
            }
        }
    }
    let peers = status(cfg, side).map(|s| s.peers).unwrap_or_default();
    CheckReport {
        health,
        throughput,
        peers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ping_summaries() {
        let ok = "--- 10.99.0.2 ping statistics ---\n3 packets transmitted, 3 received, 0% packet loss, time 402ms\nrtt min/avg/max/mdev = 0.212/0.300/0.400/0.050 ms\n";
        let p = parse_ping("b", "10.99.0.2".parse().unwrap(), 3, ok);
        assert_eq!((p.sent, p.received), (3, 3));
        assert_eq!(p.loss_percent, 0.0);
        assert_eq!(p.rtt_avg_ms, Some(0.3));
        let lost = "3 packets transmitted, 0 received, +3 errors, 100% packet loss, time 2040ms\n";
        let p = parse_ping("b", "10.99.0.2".parse().unwrap(), 3, lost);
        assert_eq!((p.sent, p.received), (3, 0));
        assert_eq!(p.loss_percent, 100.0);
        assert_eq!(p.rtt_avg_ms, None);
        let p = parse_ping("b", "10.99.0.2".parse().unwrap(), 3, "");
        assert_eq!(p.loss_percent, 100.0);
    }
}
