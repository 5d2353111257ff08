//! Reconcile: compute the desired state of a side from the config and keys, read the actual
//! state (daemon, interface, addresses, WireGuard device, routes), and turn the difference
//! into a list of [`Change`]s. `plan` prints them, `up` applies them in order (a second `up`
//! finds none: "no changes"), `down` removes what the state file says `up` created.
//!
//! Layout: [`changes`] holds the [`Change`]s and the [`Plan`] (what is printed and applied),
//! re-exported here; this file computes and applies them.

use crate::backend::{self, Backend, Handle};
use crate::cidr::Cidr;
use crate::config::Config;
use crate::daemon;
use crate::error::{Error, Result};
use crate::ip;
use crate::keys;
use crate::netns;
use crate::side::{lock_dir, read_state, write_state, Resolved, Side, SideState};
use serde::Serialize;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;
use wireguard_control::{DeviceUpdate, Key, PeerConfigBuilder};

pub mod changes;

pub use changes::{Change, Plan};

struct DesiredPeer {
    name: String,
    key: Key,
    endpoint: SocketAddr,
    allowed: BTreeSet<Cidr>,
}

struct Desired {
    private: Key,
    peers: Vec<DesiredPeer>,
    routes: BTreeSet<Cidr>,
}

fn desired(r: &Resolved) -> Result<Desired> {
    let private = keys::load_private(&r.cfg.private_key_path(&r.dc.name))?;
    let mut peers = Vec::new();
    let mut routes = BTreeSet::new();
    for p in r.cfg.peers_of(&r.dc.name) {
        let key = keys::load_public(&r.cfg.public_key_path(&p.name))?;
        let mut allowed: BTreeSet<Cidr> = p.prefixes.iter().copied().collect();
        allowed.insert(Cidr::host(p.address.addr));
        routes.extend(p.prefixes.iter().copied());
        if !r.dc.address.contains(p.address.addr) {
            routes.insert(Cidr::host(p.address.addr));
        }
        peers.push(DesiredPeer {
            name: p.name.clone(),
            key,
            endpoint: p.endpoint,
            allowed,
        });
    }
    Ok(Desired {
        private,
        peers,
        routes,
    })
}

/// The actual state of a side, as far as reconcile cares.
pub(crate) struct Actual {
    pub state: Option<SideState>,
    /// The interface exists and is ours (our live daemon / our recorded kernel link).
    pub running: bool,
    pub link: Option<ip::Link>,
}

pub(crate) fn actual(r: &Resolved, backend: Backend) -> Result<Actual> {
    netns::ensure_exists(r.ns())?;
    let state = read_state(&r.state_path)?;
    let mut link = ip::link(r.ns(), r.iface())?;
    if let Some(d) = state.as_ref().and_then(|s| s.daemon) {
        // Our daemon just died: the kernel unregisters its TUN device a moment after the
        // process is gone. Give it up to 2 s before calling the interface someone else's.
        let mut tries = 0;
        while link.is_some() && !d.alive() && tries < 100 {
            std::thread::sleep(Duration::from_millis(20));
            link = ip::link(r.ns(), r.iface())?;
            tries += 1;
        }
    }
    if let Some(s) = state.as_ref().filter(|s| s.backend != backend) {
        return Err(Error::BackendChanged {
            running: s.backend,
            wanted: backend,
        });
    }
    let ours = match (&state, backend) {
        (Some(s), Backend::Userspace) => s.daemon.is_some_and(|d| d.alive()),
        (Some(s), Backend::Kernel) => s.backend == Backend::Kernel && link.is_some(),
        (None, _) => false,
    };
    if link.is_some() && !ours {
        let hint = match orphan_daemon(r) {
            Some(pid) => format!(
                " (it looks like a wireguard-go started by tunnel whose state file is gone: pid {pid}; stop it with `kill {pid}`, then run `tunnel up`)"
            ),
            None => String::new(),
        };
        return Err(Error::ForeignInterface {
            interface: r.iface().to_string(),
            where_: format!("{}{hint}", r.where_()),
        });
    }
    Ok(Actual {
        state,
        running: ours && link.is_some(),
        link,
    })
}

/// A live wireguard-go our alias link still points at, in this side's namespace: our own
/// daemon that lost its state file. Only named in the error, never adopted or killed.
fn orphan_daemon(r: &Resolved) -> Option<u32> {
    let target = std::fs::read_link(backend::alias_socket(&r.alias)).ok()?;
    let pid: u32 = target
        .strip_prefix("/proc")
        .ok()?
        .components()
        .next()?
        .as_os_str()
        .to_str()?
        .parse()
        .ok()?;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    let their_ns = std::fs::metadata(format!("/proc/{pid}/ns/net")).ok()?;
    use std::os::unix::fs::MetadataExt;
    (comm.trim() == "wireguard-go" && their_ns.ino() == netns::inode(r.ns()).ok()?).then_some(pid)
}

fn resolve<'a>(cfg: &'a Config, side: &Side) -> Result<(Resolved<'a>, Backend)> {
    let r = Resolved::new(cfg, side)?;
    let backend = backend::select(r.choice)?;
    Ok((r, backend))
}

/// The changes `up` would make on `side`.
pub fn plan(cfg: &Config, side: &Side) -> Result<Plan> {
    let (r, backend) = resolve(cfg, side)?;
    let want = desired(&r)?;
    let have = actual(&r, backend)?;
    diff(&r, backend, &want, &have)
}

fn diff(r: &Resolved, backend: Backend, want: &Desired, have: &Actual) -> Result<Plan> {
    let cfg = r.cfg;
    let mut changes = Vec::new();
    let peer_changes = |changes: &mut Vec<Change>| {
        for p in &want.peers {
            changes.push(Change::SetPeer {
                name: p.name.clone(),
                public_key: p.key.to_base64(),
                endpoint: p.endpoint,
                allowed_ips: p.allowed.iter().map(|c| c.to_string()).collect(),
                keepalive: cfg.keepalive,
            });
        }
    };
    if !have.running {
        changes.push(Change::CreateInterface { backend });
        changes.push(Change::SetPrivateKey {
            public_key: want.private.get_public().to_base64(),
        });
        changes.push(Change::SetListenPort {
            from: None,
            to: cfg.listen_port,
        });
        peer_changes(&mut changes);
        changes.push(Change::SetMtu {
            from: None,
            to: cfg.mtu,
        });
        changes.push(Change::AddAddress {
            address: r.dc.address.to_string(),
        });
        changes.push(Change::SetLinkUp);
        for p in &want.routes {
            changes.push(Change::AddRoute {
                prefix: p.to_string(),
            });
        }
    } else {
        let dev = Handle::of(r, backend).get()?;
        if dev.private_key.as_ref() != Some(&want.private) {
            changes.push(Change::SetPrivateKey {
                public_key: want.private.get_public().to_base64(),
            });
        }
        if dev.listen_port != Some(cfg.listen_port) {
            changes.push(Change::SetListenPort {
                from: dev.listen_port,
                to: cfg.listen_port,
            });
        }
        let peers_match = dev.peers.len() == want.peers.len()
            && want.peers.iter().all(|w| {
                dev.peers.iter().any(|p| {
                    let c = &p.config;
                    let allowed: BTreeSet<Cidr> = c
                        .allowed_ips
                        .iter()
                        .filter_map(|a| Cidr::new(a.address, a.cidr))
                        .collect();
                    c.public_key == w.key
                        && c.endpoint == Some(w.endpoint)
                        && allowed == w.allowed
                        && c.persistent_keepalive_interval.unwrap_or(0) == cfg.keepalive
                })
            });
        if !peers_match {
            for p in &dev.peers {
                if !want.peers.iter().any(|w| w.key == p.config.public_key) {
                    changes.push(Change::RemovePeer {
                        public_key: p.config.public_key.to_base64(),
                    });
                }
            }
            peer_changes(&mut changes);
        }
        let link = have.link.as_ref().expect("running implies link");
        if link.mtu != cfg.mtu {
            changes.push(Change::SetMtu {
                from: Some(link.mtu),
                to: cfg.mtu,
            });
        }
        for a in &link.addresses {
            if *a != r.dc.address {
                changes.push(Change::RemoveAddress {
                    address: a.to_string(),
                });
            }
        }
        if !link.addresses.contains(&r.dc.address) {
            changes.push(Change::AddAddress {
                address: r.dc.address.to_string(),
            });
        }
        if !link.up {
            changes.push(Change::SetLinkUp);
        }
        let routes: BTreeSet<Cidr> = ip::routes(r.ns(), r.iface())?.into_iter().collect();
        for p in routes.difference(&want.routes) {
            changes.push(Change::RemoveRoute {
                prefix: p.to_string(),
            });
        }
        for p in want.routes.difference(&routes) {
            changes.push(Change::AddRoute {
                prefix: p.to_string(),
            });
        }
    }
    Ok(Plan {
        side: r.dc.name.clone(),
        netns: r.netns.clone(),
        interface: r.iface().to_string(),
        backend,
        changes,
    })
}

/// Makes the side's actual state equal the desired one and returns what it changed (an empty
/// plan means "no changes"). Safe to re-run; heals a dead daemon.
pub fn up(cfg: &Config, side: &Side) -> Result<Plan> {
    let (r, backend) = resolve(cfg, side)?;
    let _lock = lock_dir(&side.state_dir)?;
    let want = desired(&r)?;
    let have = actual(&r, backend)?;
    let plan = diff(&r, backend, &want, &have)?;
    if plan.is_empty() {
        return Ok(plan);
    }
    let ns = r.ns();
    let dev = r.iface();
    let creating = plan
        .changes
        .iter()
        .any(|c| matches!(c, Change::CreateInterface { .. }));
    if creating {
        // A daemon being replaced (dying, or alive without its interface) must be gone
        // before its port is checked and a new one starts.
        if let Some(d) = have.state.as_ref().and_then(|s| s.daemon) {
            d.stop(Duration::from_secs(2))?;
        }
    }
    if plan
        .changes
        .iter()
        .any(|c| matches!(c, Change::SetListenPort { .. }))
    {
        port_free(&r)?;
    }
    if creating {
        create(&r, backend, have.state.as_ref())?;
    }
    // One UAPI transaction for key, port and peers.
    let mut update = DeviceUpdate::new();
    let mut touched = false;
    let mut replace_peers = false;
    for c in &plan.changes {
        match c {
            Change::SetPrivateKey { .. } => {
                update = update.set_private_key(want.private.clone());
                touched = true;
            }
            Change::SetListenPort { to, .. } => {
                update = update.set_listen_port(*to);
                touched = true;
            }
            Change::SetPeer { .. } | Change::RemovePeer { .. } => replace_peers = true,
            _ => {}
        }
    }
    if replace_peers {
        update = update.replace_peers();
        for p in &want.peers {
            update = update.add_peer(peer_builder(p, cfg.keepalive));
        }
        touched = true;
    }
    if touched {
        Handle::of(&r, backend).apply(update)?;
    }
    for c in &plan.changes {
        match c {
            Change::SetMtu { to, .. } => ip::set_mtu(ns, dev, *to)?,
            Change::RemoveAddress { address } => ip::del_address(ns, dev, &parse(address))?,
            _ => {}
        }
    }
    for c in &plan.changes {
        match c {
            Change::AddAddress { address } => ip::add_address(ns, dev, &parse(address))?,
            Change::SetLinkUp => ip::set_up(ns, dev)?,
            _ => {}
        }
    }
    for c in &plan.changes {
        match c {
            Change::RemoveRoute { prefix } => ip::del_route(ns, dev, &parse(prefix))?,
            Change::AddRoute { prefix } => ip::add_route(ns, dev, &parse(prefix))?,
            _ => {}
        }
    }
    Ok(plan)
}

/// The listen port must be free in the side's namespace before we start anything: the UAPI
/// answer to a taken port is a bare errno, so we check first and say which port and where.
fn port_free(r: &Resolved) -> Result<()> {
    let port = r.cfg.listen_port;
    match netns::run_in(r.ns(), || std::net::UdpSocket::bind(("0.0.0.0", port)))? {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(Error::PortInUse {
            port,
            where_: r.where_(),
        }),
        Err(_) => Ok(()), // anything else: let the daemon report it
    }
}

fn parse(s: &str) -> Cidr {
    s.parse().expect("plan holds canonical prefixes")
}

fn peer_builder(p: &DesiredPeer, keepalive: u16) -> PeerConfigBuilder {
    let mut b = PeerConfigBuilder::new(&p.key)
        .set_endpoint(p.endpoint)
        .replace_allowed_ips();
    for a in &p.allowed {
        b = b.add_allowed_ip(a.addr, a.prefix);
    }
    if keepalive > 0 {
        b.set_persistent_keepalive_interval(keepalive)
    } else {
        b.unset_persistent_keepalive()
    }
}

/// Starts the daemon or creates the kernel link, then records it in the state file.
fn create(r: &Resolved, backend: Backend, old: Option<&SideState>) -> Result<()> {
    let ns = r.ns();
    // A previous daemon that died left a dangling alias link (and a zombie we reap).
    if let Some(d) = old.and_then(|s| s.daemon) {
        d.stop(Duration::from_secs(2))?;
    }
    backend::unlink_alias(&r.alias);
    let daemon = match backend {
        Backend::Userspace => {
            if let Some(dir) = r.log_path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| Error::State {
                    path: dir.to_path_buf(),
                    message: e.to_string(),
                })?;
            }
            let d = daemon::start(ns, r.iface(), &r.log_path)?;
            if let Err(e) = backend::link_alias(&r.alias, &d, r.iface()) {
                let _ = d.stop(Duration::from_secs(2));
                return Err(e);
            }
            Some(d)
        }
        Backend::Kernel => {
            ip::add_wireguard_link(ns, r.iface())?;
            None
        }
    };
    let state = SideState {
        side: r.dc.name.clone(),
        netns: r.netns.clone(),
        interface: r.iface().to_string(),
        backend,
        daemon,
    };
    write_state(&r.state_path, &state)
}

/// What `down` removed.
#[derive(Debug, Clone, Serialize)]
pub struct DownReport {
    pub side: String,
    pub netns: Option<String>,
    pub removed: Vec<String>,
}

/// Removes exactly what `up` recorded: the daemon (by PID) or kernel link — with it the
/// interface, its addresses and routes — the UAPI alias link, the state file and the log.
/// Touches nothing when the state file is absent.
pub fn down(cfg: &Config, side: &Side) -> Result<DownReport> {
    let r = Resolved::new(cfg, side)?;
    let _lock = lock_dir(&side.state_dir)?;
    let mut removed = Vec::new();
    let Some(state) = read_state(&r.state_path)? else {
        return Ok(DownReport {
            side: r.dc.name.clone(),
            netns: r.netns.clone(),
            removed,
        });
    };
    let ns_alive = state
        .netns
        .as_deref()
        .is_none_or(|n| netns::path(n).exists());
    // The interface is ours only while our daemon lives (userspace) or, for the kernel
    // backend, as recorded; a same-named link that appeared after our daemon died is not.
    let daemon_alive = state.daemon.is_some_and(|d| d.alive());
    let ours = match state.backend {
        Backend::Userspace => daemon_alive,
        Backend::Kernel => true,
    };
    let had_link =
        ns_alive && ours && ip::link(state.netns.as_deref(), &state.interface)?.is_some();
    if let Some(d) = state.daemon.filter(|_| daemon_alive) {
        d.stop(Duration::from_secs(3))?;
        removed.push(format!("wireguard-go process {}", d.pid));
    }
    if had_link {
        // wireguard-go's TUN device goes away with the process; wait briefly for the kernel.
        let mut link = ip::link(state.netns.as_deref(), &state.interface)?;
        for _ in 0..100 {
            if link.is_none() || state.backend == Backend::Kernel {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
            link = ip::link(state.netns.as_deref(), &state.interface)?;
        }
        if link.is_some() {
            ip::del_link(state.netns.as_deref(), &state.interface)?;
        }
        removed.push(format!("interface {}{}", state.interface, r.where_()));
    }
    if backend::alias_socket(&r.alias).symlink_metadata().is_ok() {
        backend::unlink_alias(&r.alias);
        removed.push(format!(
            "UAPI link {}",
            backend::alias_socket(&r.alias).display()
        ));
    }
    let _ = std::fs::remove_file(&r.log_path);
    std::fs::remove_file(&r.state_path).map_err(|e| Error::State {
        path: r.state_path.clone(),
        message: e.to_string(),
    })?;
    removed.push(format!("state {}", r.state_path.display()));
    Ok(DownReport {
        side: r.dc.name.clone(),
        netns: r.netns.clone(),
        removed,
    })
}
