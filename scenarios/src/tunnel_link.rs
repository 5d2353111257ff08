//! The WireGuard link between old-dc and new-dc, made with the `tunnel` crate's library:
//! we write its config (one `[[datacenter]]` per DC, each in its namespace, each DC's LAN as
//! its prefix), generate both key pairs into one key dir (so each side finds the other's
//! `.pub`), run `tunnel up` on both sides from tunnel.service's command line
//! (`crate::units`) and wait for `tunnel::health` to pass. `down` calls
//! `tunnel::down` on both sides before the namespaces are deleted.

use crate::error::{LabError, Result};
use crate::state::{LabState, TunnelState};
use crate::status::ServiceStatus;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const OLD: &str = "old-dc";
const NEW: &str = "new-dc";
const PORT: u16 = 51820;

fn config_dir(st: &LabState) -> PathBuf {
    st.state_dir.join("tunnel")
}

fn config_text(st: &LabState) -> String {
    format!(
        "# hostmove lab {name}: the tunnel between old-dc and new-dc\nlisten_port = {PORT}\nkey_dir = \"keys\"\nkeepalive = 5\n\n\
[[datacenter]]\nname = \"{OLD}\"\nendpoint = \"{oe}:{PORT}\"\naddress = \"10.99.0.1/24\"\nprefixes = [\"{ol}\"]\nnetns = \"{on}\"\n\n\
[[datacenter]]\nname = \"{NEW}\"\nendpoint = \"{ne}:{PORT}\"\naddress = \"10.99.0.2/24\"\nprefixes = [\"{nl}\"]\nnetns = \"{nn}\"\n",
        name = st.name,
        oe = st.old.internet_addr,
        ol = st.old.lan_cidr,
        on = st.old.netns,
        ne = st.new.internet_addr,
        nl = st.new.lan_cidr,
        nn = st.new.netns,
    )
}

fn side(name: &str, netns: &str, dir: &Path) -> tunnel::Side {
    tunnel::Side::new(name)
        .in_netns(netns)
        .with_state_dir(dir.join("run"))
}

fn err(what: &str, e: impl std::fmt::Display) -> LabError {
    LabError::Tunnel(format!("{what}: {e}"))
}

/// Brings the tunnel up on both sides and waits until old-dc sees new-dc healthy.
pub fn up(st: &mut LabState) -> Result<()> {
    let dir = config_dir(st);
    let keys = dir.join("keys");
    crate::secrets::private_dir(&keys)?;
    let path = dir.join("tunnel.toml");
    std::fs::write(&path, config_text(st)).map_err(LabError::io("writing tunnel config", &path))?;
    let cfg = tunnel::Config::load(&path).map_err(|e| err("tunnel config", e))?;
    for name in [OLD, NEW] {
        tunnel::keys::generate(&cfg.key_dir, name, false).map_err(|e| err("tunnel keys", e))?;
    }
    // Record before starting, so a failure below is still torn down.
    st.tunnel = Some(TunnelState {
        old_addr: Ipv4Addr::new(10, 99, 0, 1),
        new_addr: Ipv4Addr::new(10, 99, 0, 2),
        config_dir: dir.clone(),
        detail: "starting".into(),
    });
    st.save()?;
    let old = side(OLD, &st.old.netns, &dir);
    let new = side(NEW, &st.new.netns, &dir);
    // `tunnel up` as tunnel.service runs it (its ExecStart and environment), each side.
    let program = crate::tools::find_or_build("tunnel")?;
    for (name, s) in [(OLD, &old), (NEW, &new)] {
        let unit = crate::units::tunnel("ExecStart", &program, &path, name, &s.state_dir)?;
        let out = unit
            .command()
            .output()
            .map_err(LabError::io("running tunnel up", &program))?;
        if !out.status.success() {
            return Err(err(
                &format!("tunnel up {name}"),
                String::from_utf8_lossy(&out.stderr).trim(),
            ));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let h_old = tunnel::health(&cfg, &old);
        let h_new = tunnel::health(&cfg, &new);
        if h_old.healthy && h_new.healthy {
            if let Some(t) = st.tunnel.as_mut() {
                t.detail = h_old.reason;
            }
            return Ok(());
        }
        if Instant::now() >= deadline {
            let reason = if h_old.healthy {
                h_new.reason
            } else {
                h_old.reason
            };
            return Err(LabError::Tunnel(format!(
                "not healthy after 20 s: {reason}"
            )));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Tears the tunnel down on both sides (before the namespaces are deleted).
pub fn down(st: &LabState) {
    let dir = config_dir(st);
    let path = dir.join("tunnel.toml");
    let Ok(cfg) = tunnel::Config::load(&path) else {
        return;
    };
    for (name, ns) in [(OLD, &st.old.netns), (NEW, &st.new.netns)] {
        if let Err(e) = tunnel::down(&cfg, &side(name, ns, &dir)) {
            eprintln!("lab {}: tunnel down {name}: {e}", st.name);
        }
    }
}

/// Takes old-dc's side of the tunnel down (a fault a scenario injects): the `tunnel` crate
/// removes its interface, so nothing crosses until [`flap_up`].
pub fn flap_down(st: &LabState) -> Result<()> {
    let dir = config_dir(st);
    let cfg =
        tunnel::Config::load(&dir.join("tunnel.toml")).map_err(|e| err("tunnel config", e))?;
    tunnel::down(&cfg, &side(OLD, &st.old.netns, &dir))
        .map_err(|e| err("tunnel down old-dc", e))?;
    Ok(())
}

/// Brings old-dc's side back up and waits (up to 20 s) until old-dc sees new-dc healthy;
/// returns when the link was restored (Unix ms).
pub fn flap_up(st: &LabState) -> Result<u64> {
    let dir = config_dir(st);
    let cfg =
        tunnel::Config::load(&dir.join("tunnel.toml")).map_err(|e| err("tunnel config", e))?;
    let old = side(OLD, &st.old.netns, &dir);
    tunnel::up(&cfg, &old).map_err(|e| err("tunnel up old-dc", e))?;
    // The link is back from here: a migrator polling its health may see it healthy before
    // this loop's next poll does.
    let restored = crate::traffic::unix_ms();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let h = tunnel::health(&cfg, &old);
        if h.healthy {
            return Ok(restored);
        }
        if Instant::now() >= deadline {
            return Err(LabError::Tunnel(format!(
                "not healthy 20 s after up: {}",
                h.reason
            )));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Health of the tunnel, seen from old-dc.
pub fn status(st: &LabState) -> ServiceStatus {
    let dir = config_dir(st);
    let (healthy, detail) = match tunnel::Config::load(&dir.join("tunnel.toml")) {
        Ok(cfg) => {
            let h = tunnel::health(&cfg, &side(OLD, &st.old.netns, &dir));
            (h.healthy, h.reason)
        }
        Err(e) => (false, e.to_string()),
    };
    ServiceStatus {
        service: "tunnel".into(),
        namespace: format!("{} <-> {}", st.old.netns, st.new.netns),
        address: "10.99.0.1 <-> 10.99.0.2 (wireguard)".into(),
        pid: None,
        healthy,
        detail,
    }
}
