//! The network and mount topology: one network namespace per host role, a bridge in an
//! "internet" namespace with a veth to each role, each DC's private LAN addresses on its `lo`, per-namespace `resolv.conf` pointing at the lab DNS, and per-DC persistent mount
//! namespaces in which `/homez.<n>` is bind-mounted from the DC's filer directory.
//! Nothing here touches the host's own network: no address, route or NAT outside our namespaces.

use crate::error::{LabError, Result};
use crate::process::run;
use crate::state::{DcState, LabState};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Prefix length of the "internet" subnet (172.31.0.0/24).
pub const INTERNET_PREFIX: u8 = 24;

fn ip(args: &[&str]) -> Result<String> {
    run(Command::new("ip").args(args))
}

fn ipn(ns: &str, args: &[&str]) -> Result<String> {
    let mut full = vec!["-n", ns];
    full.extend_from_slice(args);
    ip(&full)
}

/// True if the network namespace exists.
pub fn netns_exists(ns: &str) -> bool {
    Path::new("/run/netns").join(ns).exists()
}

/// Creates all namespaces, links, addresses and routes of the lab.
pub fn create_network(state: &LabState) -> Result<()> {
    let net = &state.internet_netns;
    for ns in state.namespaces() {
        if !netns_exists(ns) {
            ip(&["netns", "add", ns])?;
        }
        ipn(ns, &["link", "set", "lo", "up"])?;
    }
    ipn(net, &["link", "add", "br0", "type", "bridge"])?;
    ipn(net, &["link", "set", "br0", "up"])?;
    let roles: [(&str, &str, Ipv4Addr); 4] = [
        (&state.old.netns, "p-old", state.old.internet_addr),
        (&state.new.netns, "p-new", state.new.internet_addr),
        (&state.dns.netns, "p-dns", state.dns.addr),
        (&state.client.netns, "p-cli", state.client.addr),
    ];
    for (ns, port, addr) in roles {
        ipn(
            net,
            &[
                "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns,
            ],
        )?;
        ipn(net, &["link", "set", port, "master", "br0", "up"])?;
        ipn(
            ns,
            &[
                "addr",
                "add",
                &format!("{addr}/{INTERNET_PREFIX}"),
                "dev",
                "eth0",
            ],
        )?;
        ipn(ns, &["link", "set", "eth0", "up"])?;
    }
    if let Some(f) = &state.fleet {
        // The control store's namespace: one address per Galera node on its bridge port.
        ipn(
            net,
            &[
                "link", "add", "p-ctl", "type", "veth", "peer", "name", "eth0", "netns", &f.netns,
            ],
        )?;
        ipn(net, &["link", "set", "p-ctl", "master", "br0", "up"])?;
        for n in &f.nodes {
            let cidr = format!("{}/{INTERNET_PREFIX}", n.addr);
            ipn(&f.netns, &["addr", "add", &cidr, "dev", "eth0"])?;
        }
        ipn(&f.netns, &["link", "set", "eth0", "up"])?;
    }
    for dc in [&state.old, &state.new] {
        ipn(
            &dc.netns,
            &["addr", "add", &format!("{}/32", dc.vip), "dev", "eth0"],
        )?;
        // The LAN's service addresses live on `lo` (/32 each): this kernel has no `dummy`
        // driver, and local addresses need no link of their own.
        let mut lan = vec![dc.web_addr, dc.sql_addr, dc.ssh_addr];
        if let Some(m) = dc.mariadb_addr {
            lan.push(m);
        }
        if dc.side == crate::state::Side::Old {
            lan.push(crate::sql_proxy::ADMIN_ADDR);
            if state.fleet.is_some() {
                lan.extend([crate::sql_proxy::SQL2_ADDR, crate::sql_proxy::ADMIN2_ADDR]);
            }
        }
        for a in lan {
            let cidr = format!("{a}/32");
            if !ipn(&dc.netns, &["-4", "addr", "show", "dev", "lo"])?.contains(&cidr) {
                ipn(&dc.netns, &["addr", "add", &cidr, "dev", "lo"])?;
            }
        }
        // The client (the "internet") reaches each DC's LAN via that DC's internet address;
        // the DCs reach each other's LAN only through the tunnel.
        ipn(
            &state.client.netns,
            &[
                "route",
                "add",
                &dc.lan_cidr,
                "via",
                &dc.internet_addr.to_string(),
            ],
        )?;
    }
    Ok(())
}

/// Writes `/etc/netns/<ns>/resolv.conf` (bound over `/etc/resolv.conf` by `ip netns exec`).
/// Returns the directories created, for `down`.
pub fn write_resolv_confs(state: &LabState) -> Result<Vec<PathBuf>> {
    let mut created = Vec::new();
    for ns in [&state.old.netns, &state.new.netns, &state.client.netns] {
        let dir = Path::new("/etc/netns").join(ns);
        std::fs::create_dir_all(&dir).map_err(LabError::io("creating netns etc dir", &dir))?;
        created.push(dir.clone());
        let conf = format!(
            "# hostmove lab {}: the lab's Knot server only\nnameserver {}\nsearch {}\noptions timeout:2 attempts:2\n",
            state.name, state.dns.addr, state.zone
        );
        let path = dir.join("resolv.conf");
        std::fs::write(&path, conf).map_err(LabError::io("writing resolv.conf", &path))?;
    }
    Ok(created)
}

/// Picks and creates the first free `/homez.<n>` with n >= `start` (mkdir is the lock, so
/// concurrent labs never share a filer path). Returns n.
pub fn claim_filer_number(start: u32) -> Result<u32> {
    for n in start..start + 10_000 {
        let p = PathBuf::from(format!("/homez.{n}"));
        match std::fs::create_dir(&p) {
            Ok(()) => return Ok(n),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(LabError::io("creating filer mount point", p)(e)),
        }
    }
    Err(LabError::Io {
        what: "no free /homez.<n> mount point",
        path: PathBuf::from(format!("/homez.{start}")),
        source: std::io::Error::other("10000 numbers in use"),
    })
}

/// Makes `dir` a private bind mount so nsfs files can be bound inside it.
pub fn make_private_mount(dir: &Path) -> Result<()> {
    let d = dir.to_string_lossy();
    run(Command::new("mount").args(["--bind", &d, &d]))?;
    run(Command::new("mount").args(["--make-private", &d]))?;
    Ok(())
}

/// Creates the DC's persistent private mount namespace and binds its filer at `/homez.<n>`.
/// Returns the mount points created (in creation order).
pub fn create_dc_mount_ns(dc: &DcState) -> Result<Vec<PathBuf>> {
    let f = &dc.mount_ns;
    std::fs::write(f, b"").map_err(LabError::io("creating mount namespace file", f))?;
    run(Command::new("unshare").args([
        &format!("--mount={}", f.display()),
        "--propagation",
        "private",
        "true",
    ]))?;
    let mounts = vec![f.clone()];
    run(Command::new("nsenter").args([
        &format!("--mount={}", f.display()),
        "--",
        "mount",
        "--bind",
        &dc.filer.backing_dir.to_string_lossy(),
        &dc.filer.path.to_string_lossy(),
    ]))?;
    Ok(mounts)
}

/// Mounts a small tmpfs at `path` inside `dc`'s mount namespace (the directory where that DC's
/// web server gets compat paths for another filer's absolute paths).
pub fn mount_compat_root(dc: &DcState, path: &Path, run_id: &str) -> Result<()> {
    run(Command::new("nsenter").args([
        &format!("--mount={}", dc.mount_ns.display()),
        "--",
        "mount",
        "-t",
        "tmpfs",
        "-o",
        "mode=0755,size=16m",
        &format!("hostmove-compat-{run_id}"),
        &path.to_string_lossy(),
    ]))?;
    Ok(())
}

/// True if `path` is a mount point in the host's mount namespace.
pub fn is_mounted(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let p = path.to_string_lossy();
    info.lines()
        .any(|l| l.split_whitespace().nth(4).is_some_and(|m| m == p))
}

/// Unmounts every mount at `path` (a path may be stacked).
pub fn unmount_all(path: &Path) {
    for _ in 0..4 {
        if !is_mounted(path) {
            return;
        }
        let _ = run(Command::new("umount").arg(path));
    }
    if is_mounted(path) {
        let _ = run(Command::new("umount").arg("-l").arg(path));
    }
}

/// Deletes a network namespace (its interfaces go with it).
pub fn delete_netns(ns: &str) {
    if netns_exists(ns) {
        let _ = ip(&["netns", "del", ns]);
    }
}

/// Runs `f` on a thread that has joined network namespace `ns` (the host thread is untouched).
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    let path = Path::new("/run/netns").join(ns);
    let file = std::fs::File::open(&path).map_err(LabError::io("opening netns", &path))?;
    let name = ns.to_string();
    std::thread::spawn(move || {
        nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).map_err(
            |source| LabError::Netns {
                namespace: name,
                source,
            },
        )?;
        Ok(f())
    })
    .join()
    .map_err(|_| LabError::Internal("probe thread panicked".into()))?
}

/// TCP connect probe from inside a namespace.
pub fn tcp_probe(ns: &str, addr: SocketAddr) -> Result<()> {
    let namespace = ns.to_string();
    in_netns(ns, move || {
        TcpStream::connect_timeout(&addr, Duration::from_millis(500))
            .map(|_| ())
            .map_err(|source| LabError::Connect {
                namespace,
                addr,
                source,
            })
    })?
}

/// One HTTP GET from inside a namespace to an address, with a `Host` header (a virtual host
/// of nginx or HAProxy); returns the status and the body, whatever the status.
pub fn http_get(ns: &str, addr: SocketAddr, host: &str, path: &str) -> Result<(u16, String)> {
    let (host, path) = (host.to_string(), path.to_string());
    // The client is made and used on the thread inside the namespace: it connects from there.
    in_netns(ns, move || {
        let answer = drivers::http::HttpClient::for_addr(addr, Duration::from_secs(10))?
            .request(drivers::http::Method::Get, &path)
            .header("Host", &host)
            .send()?;
        Ok((answer.status, answer.text()))
    })?
}
