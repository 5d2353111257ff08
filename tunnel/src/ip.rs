//! Interface, addresses and routes through iproute2 (`ip -j` JSON for reading). Reading lists
//! everything and filters by name, so "absent" is a value, never an error string to match.

use crate::cidr::Cidr;
use crate::error::{Error, Result};
use crate::netns;
use serde::Deserialize;

/// What the kernel says about one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub mtu: u32,
    pub up: bool,
    /// Addresses with their prefix length, link-local IPv6 excluded.
    pub addresses: Vec<Cidr>,
}

#[derive(Deserialize)]
struct JsonAddrLink {
    ifname: String,
    #[serde(default)]
    flags: Vec<String>,
    #[serde(default)]
    mtu: u32,
    #[serde(default)]
    addr_info: Vec<JsonAddr>,
}

#[derive(Deserialize)]
struct JsonAddr {
    local: Option<String>,
    prefixlen: Option<u8>,
    scope: Option<String>,
}

#[derive(Deserialize)]
struct JsonRoute {
    dst: String,
    dev: Option<String>,
    protocol: Option<String>,
}

fn parse_json<T: for<'de> Deserialize<'de>>(command: &str, text: &str) -> Result<T> {
    let text = if text.trim().is_empty() { "[]" } else { text };
    serde_json::from_str(text).map_err(|e| Error::Output {
        command: command.to_string(),
        message: e.to_string(),
    })
}

/// The interface `name` in `netns`, or `None` when it does not exist.
pub fn link(netns: Option<&str>, name: &str) -> Result<Option<Link>> {
    let out = netns::ip(netns, &["-j", "addr", "show"])?;
    let links: Vec<JsonAddrLink> = parse_json("ip -j addr show", &out)?;
    Ok(links.into_iter().find(|l| l.ifname == name).map(|l| Link {
        mtu: l.mtu,
        up: l.flags.iter().any(|f| f == "UP"),
        addresses: l
            .addr_info
            .iter()
            .filter(|a| a.scope.as_deref() != Some("link"))
            .filter_map(|a| {
                let addr = a.local.as_ref()?.parse().ok()?;
                Cidr::new(addr, a.prefixlen?)
            })
            .collect(),
    }))
}

/// Routes of the main table going out of `dev`, except the ones the kernel derives from
/// addresses (`proto kernel`): those follow the addresses and are not ours to manage.
pub fn routes(netns: Option<&str>, dev: &str) -> Result<Vec<Cidr>> {
    let mut found = Vec::new();
    for family in ["-4", "-6"] {
        let out = netns::ip(netns, &[family, "-j", "route", "show", "table", "main"])?;
        let routes: Vec<JsonRoute> = parse_json("ip -j route show", &out)?;
        for r in routes {
            if r.dev.as_deref() != Some(dev) || r.protocol.as_deref() == Some("kernel") {
                continue;
            }
            let dst = match r.dst.as_str() {
                "default" if family == "-4" => "0.0.0.0/0".to_string(),
                "default" => "::/0".to_string(),
                d => d.to_string(),
            };
            if let Ok(c) = dst.parse::<Cidr>() {
                found.push(c);
            }
        }
    }
    found.sort();
    Ok(found)
}

pub fn set_mtu(netns: Option<&str>, dev: &str, mtu: u32) -> Result<()> {
    netns::ip(netns, &["link", "set", "dev", dev, "mtu", &mtu.to_string()]).map(drop)
}

pub fn set_up(netns: Option<&str>, dev: &str) -> Result<()> {
    netns::ip(netns, &["link", "set", "dev", dev, "up"]).map(drop)
}

pub fn add_address(netns: Option<&str>, dev: &str, addr: &Cidr) -> Result<()> {
    netns::ip(netns, &["addr", "add", &addr.to_string(), "dev", dev]).map(drop)
}

pub fn del_address(netns: Option<&str>, dev: &str, addr: &Cidr) -> Result<()> {
    netns::ip(netns, &["addr", "del", &addr.to_string(), "dev", dev]).map(drop)
}

/// `ip route replace`: idempotent, and takes over a same-prefix route if one appeared.
pub fn add_route(netns: Option<&str>, dev: &str, dst: &Cidr) -> Result<()> {
    netns::ip(
        netns,
        &[
            "route",
            "replace",
            &dst.to_string(),
            "dev",
            dev,
            "proto",
            "static",
        ],
    )
    .map(drop)
}

pub fn del_route(netns: Option<&str>, dev: &str, dst: &Cidr) -> Result<()> {
    netns::ip(netns, &["route", "del", &dst.to_string(), "dev", dev]).map(drop)
}

/// Kernel backend only: `ip link add <dev> type wireguard`.
pub fn add_wireguard_link(netns: Option<&str>, dev: &str) -> Result<()> {
    netns::ip(netns, &["link", "add", "dev", dev, "type", "wireguard"]).map(drop)
}

pub fn del_link(netns: Option<&str>, dev: &str) -> Result<()> {
    netns::ip(netns, &["link", "del", "dev", dev]).map(drop)
}
