//! Hosted DNS behind [`Dns`]: what the cutover asks of the provider that serves a site's zone.
//!
//! Every provider does the same three things the same way: read the current address set of a
//! name, change its TTL (lowered a full old TTL before the wave), and replace the set in place
//! (never a moment where the name has no address) and then confirm the new set by plain DNS
//! queries to every authoritative server listed ([`probe`]). Only the way the change reaches
//! the provider differs, one file per provider:
//! - [`rfc2136`]: RFC 2136 dynamic updates signed with TSIG (Knot, BIND, ...);
//! - [`powerdns`]: the PowerDNS Authoritative HTTP API (`PATCH` with `changetype: REPLACE`).
//!
//! The site spec's `dns` section is a [`DnsConfig`], tagged by `provider`. Adding a provider is
//! one file (its config struct implementing [`ProviderConfig`] and its driver implementing
//! [`Dns`]) plus one arm in [`DnsConfig`], with its line in each of the two `match`es over
//! providers ([`DnsConfig::provider`] and the tag in `DnsConfig`'s `Deserialize`).
//!
//! The [`Dns`] methods block (each driver runs its own small tokio runtime for DNS queries):
//! call them from plain threads, not from inside an async runtime.

pub mod powerdns;
pub mod probe;
pub mod rfc2136;

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

/// What went wrong with hosted DNS: which server (when one was involved) and whether trying
/// again may help ([`DnsError::is_retryable`]). Never carries a key or a secret.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// Bad configuration or input, found before anything was sent: a key file (missing,
    /// unreadable, readable by others), a name outside the zone, a mixed address set.
    #[error("{0}")]
    Invalid(String),
    /// `server` could not be reached or did not answer in time.
    #[error("{server}: {what}: no answer: {message}")]
    Unreachable {
        server: String,
        what: String,
        message: String,
    },
    /// `server` answered and refused (wrong key, unknown zone, stale current set, ...).
    #[error("{server} refused {what}: {answer}")]
    Refused {
        server: String,
        what: String,
        /// The server's own answer (DNS response code, HTTP status and error text).
        answer: String,
        /// A refusal that may pass later (server busy, 5xx), unlike a wrong key.
        retryable: bool,
    },
    /// The change was accepted, but reading it back disagrees: one entry per server (or API)
    /// that does not answer the expected set yet.
    #[error("{name} should be {expected:?} but {}", wrong.join("; "))]
    NotConfirmed {
        name: String,
        expected: Vec<IpAddr>,
        wrong: Vec<String>,
    },
    /// `server` answered something we cannot understand.
    #[error("{server}: unexpected answer to {what}: {message}")]
    Protocol {
        server: String,
        what: String,
        message: String,
    },
}

impl DnsError {
    /// Whether the same call may succeed later (no answer, not confirmed yet, a busy server),
    /// as opposed to a refusal or bad input that needs a person.
    pub fn is_retryable(&self) -> bool {
        match self {
            DnsError::Unreachable { .. } | DnsError::NotConfirmed { .. } => true,
            DnsError::Refused { retryable, .. } => *retryable,
            DnsError::Invalid(_) | DnsError::Protocol { .. } => false,
        }
    }

    /// The server the error concerns, when there is one.
    pub fn server(&self) -> Option<&str> {
        match self {
            DnsError::Unreachable { server, .. }
            | DnsError::Refused { server, .. }
            | DnsError::Protocol { server, .. } => Some(server),
            DnsError::Invalid(_) | DnsError::NotConfirmed { .. } => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, DnsError>;

/// Hosted DNS for the records of one zone.
pub trait Dns: Send + Sync {
    /// The provider's name as the site spec spells it (`rfc2136`, `powerdns`).
    fn provider(&self) -> &'static str;
    /// The current address set of `name` (its A records, or AAAA when it has none), sorted,
    /// as the provider's primary source answers it.
    fn current(&self, name: &str) -> Result<Vec<IpAddr>>;
    /// Sets the TTL of `name`'s set, which must be exactly `addrs`, then reads it back.
    fn set_ttl(&self, name: &str, addrs: &[IpAddr], ttl: u32) -> Result<()>;
    /// Replaces `name`'s set from exactly `current` to `new` with `ttl`, in place (no moment
    /// without an address), then confirms `new` on every authoritative server. Refused (and
    /// nothing changed) when the set is not `current`.
    fn replace_confirmed(
        &self,
        name: &str,
        current: &[IpAddr],
        new: &[IpAddr],
        ttl: u32,
    ) -> Result<()>;
}

/// The record a site moves and where it is served, common to every provider.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The record to move, e.g. `site0001.lab.test`.
    pub name: &'a str,
    pub zone: &'a str,
    /// Every authoritative server; a switch counts only once all of them answer the new set.
    pub servers: &'a [SocketAddr],
    /// The TTL used during the migration (lowered in `prepare`).
    pub low_ttl: u32,
}

/// What every provider's section of the site spec offers.
pub trait ProviderConfig {
    /// The `provider` tag of the section (`rfc2136`).
    fn provider_name(&self) -> &'static str;
    /// The record and servers (the fields every provider has).
    fn target(&self) -> Target<'_>;
    /// Checks what can be checked without touching anything (URLs, names, lists); the message
    /// names the field.
    fn validate(&self) -> Result<()>;
    /// Builds the driver: reads key files (which must be mode 0600), nothing sent yet.
    fn connect(&self) -> Result<Box<dyn Dns>>;
    /// One line for a dry run: how a change would be sent and confirmed.
    fn describe(&self) -> String;
}

/// A site's hosted DNS in the site spec: `{"provider": "rfc2136", ...}` or
/// `{"provider": "powerdns", ...}`. A section without `provider` (written before there was a
/// choice) is `rfc2136`. Errors name the field inside the section (`servers[0]: ...`).
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "provider", rename_all = "lowercase")]
pub enum DnsConfig {
    /// RFC 2136 updates signed with TSIG ([`rfc2136::Rfc2136Config`]).
    Rfc2136(rfc2136::Rfc2136Config),
    /// The PowerDNS Authoritative HTTP API ([`powerdns::PowerDnsConfig`]).
    Powerdns(powerdns::PowerDnsConfig),
}

impl DnsConfig {
    /// The provider's section, whichever it is (the one `match` over providers).
    pub fn provider(&self) -> &dyn ProviderConfig {
        match self {
            DnsConfig::Rfc2136(c) => c,
            DnsConfig::Powerdns(c) => c,
        }
    }

    /// The provider's name as the spec spells it.
    pub fn provider_name(&self) -> &'static str {
        self.provider().provider_name()
    }

    pub fn target(&self) -> Target<'_> {
        self.provider().target()
    }
    pub fn validate(&self) -> Result<()> {
        self.provider().validate()
    }
    pub fn connect(&self) -> Result<Box<dyn Dns>> {
        self.provider().connect()
    }
    pub fn describe(&self) -> String {
        self.provider().describe()
    }
}

impl<'de> Deserialize<'de> for DnsConfig {
    // By hand rather than `#[serde(tag)]`: serde's tagged enums buffer the section and lose the
    // path of an error inside it, and cannot default the tag for old files.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error;
        use serde_json::{Map, Value};
        let mut map = Map::<String, Value>::deserialize(d)?;
        let provider = match map.remove("provider") {
            None => "rfc2136".to_string(),
            Some(Value::String(p)) => p,
            Some(other) => {
                return Err(D::Error::custom(format!(
                    "provider: expected a string, found {other}"
                )))
            }
        };
        match provider.as_str() {
            "rfc2136" => tagged_section(map).map(DnsConfig::Rfc2136),
            "powerdns" => tagged_section(map).map(DnsConfig::Powerdns),
            other => Err(D::Error::unknown_variant(other, &["rfc2136", "powerdns"])),
        }
    }
}

/// The fields of a tagged section (its tag taken out), read keeping the place of an error
/// inside it in the message (`servers[0]: ...`): what serde's `#[serde(tag)]` loses. Shared
/// with the migrator's other tagged sections of the site spec.
pub fn tagged_section<T: serde::de::DeserializeOwned, E: serde::de::Error>(
    map: serde_json::Map<String, serde_json::Value>,
) -> std::result::Result<T, E> {
    serde_path_to_error::deserialize(serde_json::Value::Object(map)).map_err(|e| {
        match e.path().to_string().as_str() {
            "." => E::custom(e.inner()),
            path => E::custom(format!("{path}: {}", e.inner())),
        }
    })
}

/// The default of every provider's `low_ttl`.
pub fn default_low_ttl() -> u32 {
    30
}

/// Checks the fields every provider has; messages name the field.
pub(crate) fn validate_target(t: &Target<'_>) -> Result<()> {
    let zone = probe::parse_name("dns.zone", t.zone)?;
    let name = probe::parse_name("dns.name", t.name)?;
    if !zone.zone_of(&name) {
        return Err(DnsError::Invalid(format!(
            "dns.name {:?} is not inside dns.zone {:?}",
            t.name, t.zone
        )));
    }
    if t.servers.is_empty() {
        return Err(DnsError::Invalid(
            "dns.servers is empty: list every authoritative server (the switch is confirmed on each)"
                .into(),
        ));
    }
    if t.low_ttl == 0 {
        return Err(DnsError::Invalid("dns.low_ttl must be at least 1".into()));
    }
    Ok(())
}

/// A secret file refused before anything was sent (bad configuration).
impl From<crate::secret::SecretFileError> for DnsError {
    fn from(e: crate::secret::SecretFileError) -> Self {
        DnsError::Invalid(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_sections_parse_by_provider_and_name_bad_fields() {
        let r: DnsConfig = serde_json::from_str(
            r#"{"provider":"rfc2136","name":"a.lab.test","zone":"lab.test",
                "primary":"127.0.0.1:53","servers":["127.0.0.1:53"],"tsig_key_file":"/k"}"#,
        )
        .unwrap();
        assert_eq!(r.provider_name(), "rfc2136");
        assert_eq!(r.target().low_ttl, 30);
        r.validate().unwrap();
        let p: DnsConfig = serde_json::from_str(
            r#"{"provider":"powerdns","name":"a.lab.test","zone":"lab.test",
                "api":"http://127.0.0.1:8081","api_key_file":"/k","servers":["127.0.0.1:53"]}"#,
        )
        .unwrap();
        assert_eq!(p.provider_name(), "powerdns");
        assert!(p.describe().contains("PATCH"), "{}", p.describe());
        p.validate().unwrap();
        let back: DnsConfig = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(back, p);

        let e = serde_json::from_str::<DnsConfig>(r#"{"provider":"route53","name":"a"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("route53"), "{e}");
        let e = serde_json::from_str::<DnsConfig>(
            r#"{"provider":"powerdns","name":"a.lab.test","zone":"lab.test",
                "api":"http://x","api_key_file":"/k","servers":[],"tsig_key_file":"/k"}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("tsig_key_file"), "{e}");
        let mut bad = p.clone();
        if let DnsConfig::Powerdns(c) = &mut bad {
            c.api = "127.0.0.1:8081".into();
        }
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("dns.api"), "{e}");
        let mut bad = r.clone();
        if let DnsConfig::Rfc2136(c) = &mut bad {
            c.name = "a.other.test".into();
        }
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("dns.name") && e.contains("dns.zone"), "{e}");
    }
}
