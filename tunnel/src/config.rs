//! The TOML config: parsed into raw serde structs, then validated into [`Config`], with every
//! error naming the file and the field (`datacenter[1].prefixes[0]`).
//!
//! ```toml
//! interface = "wg-dc"          # optional, default "wg0"
//! listen_port = 51820
//! mtu = 1420                   # optional, default 1420
//! keepalive = 25               # seconds, 0 = off; optional, default 25
//! key_dir = "keys"             # relative to this file; <name>.key (0600) and <name>.pub
//! backend = "auto"             # auto | kernel | userspace
//! handshake_max_age = 180      # seconds; older means unhealthy
//! max_loss_percent = 20        # probe loss above this means unhealthy
//!
//! [[datacenter]]
//! name = "old-dc"
//! endpoint = "192.0.2.1:51820" # underlay address the other side sends to (port optional)
//! address = "10.99.0.1/24"     # this side's tunnel address
//! prefixes = ["10.20.0.0/16"]  # reachable behind this side: the other side routes them here
//! netns = "old-dc"             # optional: this side runs inside that network namespace
//! ```

use crate::cidr::Cidr;
use crate::error::ConfigError;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Which WireGuard implementation carries the interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BackendChoice {
    /// Kernel module when `/sys/module/wireguard` exists, otherwise userspace.
    #[default]
    Auto,
    Kernel,
    Userspace,
}

/// A backend name that is none of `auto`, `kernel`, `userspace`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown backend `{0}` (expected auto, kernel or userspace)")]
pub struct UnknownBackend(pub String);

impl FromStr for BackendChoice {
    type Err = UnknownBackend;
    fn from_str(s: &str) -> Result<Self, UnknownBackend> {
        match s {
            "auto" => Ok(BackendChoice::Auto),
            "kernel" => Ok(BackendChoice::Kernel),
            "userspace" => Ok(BackendChoice::Userspace),
            other => Err(UnknownBackend(other.to_string())),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    interface: Option<String>,
    listen_port: Option<u16>,
    mtu: Option<u32>,
    keepalive: Option<u32>,
    key_dir: Option<PathBuf>,
    backend: Option<BackendChoice>,
    handshake_max_age: Option<u64>,
    max_loss_percent: Option<u32>,
    #[serde(default)]
    datacenter: Vec<RawDatacenter>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDatacenter {
    name: Option<String>,
    endpoint: Option<String>,
    address: Option<String>,
    #[serde(default)]
    prefixes: Vec<String>,
    netns: Option<String>,
}

/// A validated tunnel config. Build it with [`Config::load`] or [`Config::parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The file it came from (for error messages); relative paths were resolved against it.
    pub source: PathBuf,
    /// WireGuard interface name on every side (at most 15 bytes).
    pub interface: String,
    /// UDP port each side listens on.
    pub listen_port: u16,
    pub mtu: u32,
    /// Persistent keepalive in seconds; 0 disables it. Keeps NAT state and handshakes fresh so
    /// health can trust the handshake age.
    pub keepalive: u16,
    /// Holds `<name>.key` (private, 0600) and `<name>.pub` of every datacenter.
    pub key_dir: PathBuf,
    pub backend: BackendChoice,
    /// A handshake older than this (seconds) makes the link unhealthy.
    pub handshake_max_age: u64,
    /// Probe loss above this percentage makes the link unhealthy.
    pub max_loss_percent: u32,
    pub datacenters: Vec<Datacenter>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datacenter {
    pub name: String,
    /// Underlay address and port the other sides send encrypted packets to.
    pub endpoint: SocketAddr,
    /// This side's address on the tunnel, with the tunnel subnet's prefix length.
    pub address: Cidr,
    /// Prefixes reachable behind this side; every other side routes them through the tunnel.
    pub prefixes: Vec<Cidr>,
    /// Network namespace this side runs in, when the config says so (the runtime may override).
    pub netns: Option<String>,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses `text` as if read from `path` (relative `key_dir` resolves against its folder).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            file: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        validate(raw, path)
    }

    pub fn datacenter(&self, name: &str) -> Option<&Datacenter> {
        self.datacenters.iter().find(|d| d.name == name)
    }

    /// Every datacenter except `name`: the peers of that side.
    pub fn peers_of<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Datacenter> + 'a {
        self.datacenters.iter().filter(move |d| d.name != name)
    }

    pub fn private_key_path(&self, name: &str) -> PathBuf {
        self.key_dir.join(format!("{name}.key"))
    }

    pub fn public_key_path(&self, name: &str) -> PathBuf {
        self.key_dir.join(format!("{name}.pub"))
    }
}

fn validate(raw: RawConfig, path: &Path) -> Result<Config, ConfigError> {
    let bad = |field: &str, message: String| ConfigError::Invalid {
        file: path.to_path_buf(),
        field: field.to_string(),
        message,
    };

    let interface = raw.interface.unwrap_or_else(|| "wg0".to_string());
    if interface.is_empty()
        || interface.len() > 15
        || !interface
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    {
        return Err(bad(
            "interface",
            format!("`{interface}` is not a valid interface name (1-15 characters: letters, digits, - _ .)"),
        ));
    }
    let listen_port = raw
        .listen_port
        .ok_or_else(|| bad("listen_port", "is required (UDP port, e.g. 51820)".into()))?;
    if listen_port == 0 {
        return Err(bad("listen_port", "must be between 1 and 65535".into()));
    }
    let mtu = raw.mtu.unwrap_or(1420);
    if !(1280..=9000).contains(&mtu) {
        return Err(bad("mtu", format!("{mtu} is outside 1280..=9000")));
    }
    let keepalive = raw.keepalive.unwrap_or(25);
    let keepalive = u16::try_from(keepalive)
        .map_err(|_| bad("keepalive", format!("{keepalive} s is more than 65535 s")))?;
    let key_dir = raw.key_dir.ok_or_else(|| {
        bad(
            "key_dir",
            "is required (folder of <name>.key / <name>.pub)".into(),
        )
    })?;
    let key_dir = if key_dir.is_relative() {
        path.parent().unwrap_or(Path::new(".")).join(key_dir)
    } else {
        key_dir
    };
    let handshake_max_age = raw.handshake_max_age.unwrap_or(180);
    if handshake_max_age < 10 {
        return Err(bad(
            "handshake_max_age",
            format!("{handshake_max_age} s is too short (WireGuard re-handshakes every 120 s; use >= 10)"),
        ));
    }
    let max_loss_percent = raw.max_loss_percent.unwrap_or(20);
    if max_loss_percent > 100 {
        return Err(bad(
            "max_loss_percent",
            format!("{max_loss_percent} is more than 100"),
        ));
    }

    if raw.datacenter.len() < 2 {
        return Err(bad(
            "datacenter",
            format!(
                "needs at least two [[datacenter]] entries, found {}",
                raw.datacenter.len()
            ),
        ));
    }
    let mut datacenters = Vec::new();
    let mut names = HashSet::new();
    for (i, d) in raw.datacenter.into_iter().enumerate() {
        let f = |name: &str| format!("datacenter[{i}].{name}");
        let name = d
            .name
            .ok_or_else(|| bad(&f("name"), "is required".into()))?;
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(bad(
                &f("name"),
                format!("`{name}` must be non-empty letters, digits, - or _ (it names key files)"),
            ));
        }
        if !names.insert(name.clone()) {
            return Err(bad(&f("name"), format!("`{name}` appears twice")));
        }
        let endpoint = d
            .endpoint
            .ok_or_else(|| bad(&f("endpoint"), "is required (underlay IP[:port])".into()))?;
        let endpoint = parse_endpoint(&endpoint, listen_port)
            .map_err(|e| bad(&f("endpoint"), e.to_string()))?;
        let address = d.address.ok_or_else(|| {
            bad(
                &f("address"),
                "is required (tunnel address, e.g. 10.99.0.1/24)".into(),
            )
        })?;
        let address: Cidr = address.parse().map_err(|m| bad(&f("address"), m))?;
        if address.is_network() && address.prefix < if address.addr.is_ipv4() { 31 } else { 127 } {
            return Err(bad(
                &f("address"),
                format!(
                    "{address} is a network address; give this side's own host address inside it"
                ),
            ));
        }
        let mut prefixes = Vec::new();
        for (j, p) in d.prefixes.iter().enumerate() {
            let field = f(&format!("prefixes[{j}]"));
            let c: Cidr = p.parse().map_err(|m| bad(&field, m))?;
            if !c.is_network() {
                return Err(bad(
                    &field,
                    format!("{c} has host bits set; did you mean {}?", c.network()),
                ));
            }
            prefixes.push(c);
        }
        if let Some(ns) = &d.netns {
            if ns.is_empty() || ns.contains('/') || ns.contains('\0') {
                return Err(bad(&f("netns"), format!("`{ns}` is not a namespace name")));
            }
        }
        datacenters.push(Datacenter {
            name,
            endpoint,
            address,
            prefixes,
            netns: d.netns,
        });
    }

    // Cross-checks: each side's tunnel address and prefixes must be unambiguous.
    for (i, a) in datacenters.iter().enumerate() {
        for (j, b) in datacenters.iter().enumerate().skip(i + 1) {
            if a.address.addr == b.address.addr {
                return Err(bad(
                    &format!("datacenter[{j}].address"),
                    format!(
                        "{} is also datacenter[{i}] ({})'s address",
                        b.address.addr, a.name
                    ),
                ));
            }
            for (k, p) in b.prefixes.iter().enumerate() {
                if let Some(q) = a.prefixes.iter().find(|q| q.overlaps(p)) {
                    return Err(bad(
                        &format!("datacenter[{j}].prefixes[{k}]"),
                        format!("{p} overlaps {q} of datacenter[{i}] ({}); traffic could not be routed to one side", a.name),
                    ));
                }
            }
        }
        for (k, p) in a.prefixes.iter().enumerate() {
            if p.contains(a.address.addr) || a.address.network().overlaps(p) {
                return Err(bad(
                    &format!("datacenter[{i}].prefixes[{k}]"),
                    format!("{p} overlaps the tunnel subnet {}", a.address.network()),
                ));
            }
        }
    }

    Ok(Config {
        source: path.to_path_buf(),
        interface,
        listen_port,
        mtu,
        keepalive,
        key_dir,
        backend: raw.backend.unwrap_or_default(),
        handshake_max_age,
        max_loss_percent,
        datacenters,
    })
}

/// Why a datacenter's `endpoint` is not usable (the value is quoted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum EndpointError {
    #[error("`{0}`: port 0 is not a usable endpoint port")]
    PortZero(String),
    #[error("`{0}` is not IP or IP:port (host names are not resolved: give the underlay IP)")]
    NotAnAddress(String),
}

fn parse_endpoint(s: &str, default_port: u16) -> Result<SocketAddr, EndpointError> {
    if let Ok(sa) = s.parse::<SocketAddr>() {
        if sa.port() == 0 {
            return Err(EndpointError::PortZero(s.to_string()));
        }
        return Ok(sa);
    }
    match s.parse::<IpAddr>() {
        Ok(ip) => Ok(SocketAddr::new(ip, default_port)),
        Err(_) => Err(EndpointError::NotAnAddress(s.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
listen_port = 51820
key_dir = "keys"
[[datacenter]]
name = "old-dc"
endpoint = "192.0.2.1"
address = "10.99.0.1/24"
prefixes = ["10.20.0.0/16"]
[[datacenter]]
name = "new-dc"
endpoint = "198.51.100.1:4000"
address = "10.99.0.2/24"
prefixes = ["10.30.0.0/16", "fd00:30::/64"]
netns = "lab-new"
"#;

    fn err(text: &str) -> String {
        Config::parse(text, Path::new("/etc/tunnel/t.toml"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn good_config_with_defaults() {
        let c = Config::parse(GOOD, Path::new("/etc/tunnel/t.toml")).unwrap();
        assert_eq!(c.interface, "wg0");
        assert_eq!((c.mtu, c.keepalive), (1420, 25));
        assert_eq!(c.key_dir, PathBuf::from("/etc/tunnel/keys"));
        assert_eq!(c.datacenters[0].endpoint.to_string(), "192.0.2.1:51820");
        assert_eq!(c.datacenters[1].endpoint.port(), 4000);
        assert_eq!(c.datacenters[1].netns.as_deref(), Some("lab-new"));
        assert_eq!(c.peers_of("old-dc").count(), 1);
        assert_eq!(c.backend, BackendChoice::Auto);
    }

    #[test]
    fn errors_name_file_and_field() {
        let e = err(&GOOD.replace("listen_port = 51820\n", ""));
        assert!(
            e.contains("/etc/tunnel/t.toml") && e.contains("`listen_port`"),
            "{e}"
        );
        let e = err(&GOOD.replace("10.20.0.0/16", "10.20.0.1/16"));
        assert!(
            e.contains("datacenter[0].prefixes[0]") && e.contains("10.20.0.0/16"),
            "{e}"
        );
        let e = err(&GOOD.replace("10.30.0.0/16", "10.20.128.0/17"));
        assert!(
            e.contains("datacenter[1].prefixes[0]") && e.contains("overlaps"),
            "{e}"
        );
        let e = err(&GOOD.replace("name = \"new-dc\"", "name = \"old-dc\""));
        assert!(
            e.contains("datacenter[1].name") && e.contains("twice"),
            "{e}"
        );
        let e = err(&GOOD.replace("198.51.100.1:4000", "db.example:4000"));
        assert!(
            e.contains("datacenter[1].endpoint") && e.contains("not resolved"),
            "{e}"
        );
        let e = err(&GOOD.replace("10.99.0.2/24", "10.99.0.1/24"));
        assert!(e.contains("datacenter[1].address"), "{e}");
        let e = err(&format!("mtu = 100\n{GOOD}"));
        assert!(e.contains("`mtu`"), "{e}");
        let e = err(&format!("interface = \"a-very-long-interface\"\n{GOOD}"));
        assert!(e.contains("`interface`"), "{e}");
        let e = err(&format!("backend = \"fast\"\n{GOOD}"));
        assert!(e.contains("backend") && e.contains("line 1"), "{e}");
        let one = GOOD
            .split("[[datacenter]]")
            .take(2)
            .collect::<Vec<_>>()
            .join("[[datacenter]]");
        let e = err(&one);
        assert!(
            e.contains("`datacenter`") && e.contains("at least two"),
            "{e}"
        );
        let e = err(&GOOD.replace(
            "prefixes = [\"10.20.0.0/16\"]",
            "prefixes = [\"10.99.0.0/16\"]",
        ));
        assert!(e.contains("tunnel subnet"), "{e}");
    }
}
