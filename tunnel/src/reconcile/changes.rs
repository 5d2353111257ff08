//! What reconcile decides for one side: the [`Change`]s from actual to desired, in the order
//! `up` applies them, and the [`Plan`] that `tunnel plan` prints.

use crate::backend::Backend;
use serde::Serialize;
use std::fmt;
use std::net::SocketAddr;

/// One step from actual to desired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum Change {
    /// Start wireguard-go (userspace) or create the kernel link.
    CreateInterface {
        backend: Backend,
    },
    SetPrivateKey {
        public_key: String,
    },
    SetListenPort {
        from: Option<u16>,
        to: u16,
    },
    /// Replace the peer list (sent in one UAPI transaction with all desired peers).
    SetPeer {
        name: String,
        public_key: String,
        endpoint: SocketAddr,
        allowed_ips: Vec<String>,
        keepalive: u16,
    },
    RemovePeer {
        public_key: String,
    },
    SetMtu {
        from: Option<u32>,
        to: u32,
    },
    AddAddress {
        address: String,
    },
    RemoveAddress {
        address: String,
    },
    SetLinkUp,
    AddRoute {
        prefix: String,
    },
    RemoveRoute {
        prefix: String,
    },
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::CreateInterface { backend } => write!(f, "+ interface ({backend})"),
            Change::SetPrivateKey { public_key } => {
                write!(f, "~ private key (public {public_key})")
            }
            Change::SetListenPort { from, to } => match from {
                Some(p) => write!(f, "~ listen port {p} -> {to}"),
                None => write!(f, "+ listen port {to}"),
            },
            Change::SetPeer {
                name,
                public_key,
                endpoint,
                allowed_ips,
                keepalive,
            } => write!(
                f,
                "+ peer {name} {public_key} endpoint {endpoint} allowed-ips {} keepalive {keepalive}s",
                allowed_ips.join(",")
            ),
            Change::RemovePeer { public_key } => write!(f, "- peer {public_key}"),
            Change::SetMtu { from, to } => match from {
                Some(m) => write!(f, "~ mtu {m} -> {to}"),
                None => write!(f, "+ mtu {to}"),
            },
            Change::AddAddress { address } => write!(f, "+ address {address}"),
            Change::RemoveAddress { address } => write!(f, "- address {address}"),
            Change::SetLinkUp => write!(f, "~ link up"),
            Change::AddRoute { prefix } => write!(f, "+ route {prefix}"),
            Change::RemoveRoute { prefix } => write!(f, "- route {prefix}"),
        }
    }
}

/// The difference between desired and actual on one side.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub side: String,
    pub netns: Option<String>,
    pub interface: String,
    pub backend: Backend,
    pub changes: Vec<Change>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ns = self
            .netns
            .as_deref()
            .map(|n| format!(" in netns {n}"))
            .unwrap_or_default();
        if self.changes.is_empty() {
            return writeln!(f, "{} ({}{ns}): no changes", self.interface, self.side);
        }
        writeln!(
            f,
            "{} ({}{ns}): {} change(s)",
            self.interface,
            self.side,
            self.changes.len()
        )?;
        for c in &self.changes {
            writeln!(f, "  {c}")?;
        }
        Ok(())
    }
}
