//! RFC 2136 dynamic updates signed with TSIG (hickory): the provider for Knot, BIND and any
//! server that takes signed updates. [`Rfc2136Updater`] sends the updates (async);
//! [`Rfc2136`] is the blocking [`Dns`] driver the cutover uses, built from the site spec's
//! [`Rfc2136Config`].
//!
//! A record set is replaced in ONE update message: a value-dependent prerequisite (the current
//! records must be exactly what we believe), delete those records, add the new ones. The server
//! applies the message atomically, so there is no instant where the name has no address, and a
//! concurrent change by someone else makes the update fail (NXRRSET) instead of being clobbered.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hickory_net::client::ClientHandle;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::tsig::TsigAlgorithm;
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{Name, RData, Record, RecordSet, RecordType, TSigner};
use serde::{Deserialize, Serialize};

use super::probe::{self, in_zone, parse_name, record_type_of, Answer};
use super::{default_low_ttl, Dns, DnsError, ProviderConfig, Result, Target};

/// The `dns` section of a site spec for this provider (`"provider": "rfc2136"`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Rfc2136Config {
    /// The record to move, e.g. `site0001.lab.test`.
    pub name: String,
    pub zone: String,
    /// Where signed updates go.
    pub primary: SocketAddr,
    /// Every authoritative server; a switch counts only once all of them answer the new set.
    pub servers: Vec<SocketAddr>,
    /// TSIG key file (`algorithm:name:base64` or Knot's keymgr output), mode 0600.
    pub tsig_key_file: PathBuf,
    /// The TTL used during the migration (lowered in `prepare`).
    #[serde(default = "default_low_ttl")]
    pub low_ttl: u32,
}

impl ProviderConfig for Rfc2136Config {
    fn provider_name(&self) -> &'static str {
        "rfc2136"
    }
    fn target(&self) -> Target<'_> {
        Target {
            name: &self.name,
            zone: &self.zone,
            servers: &self.servers,
            low_ttl: self.low_ttl,
        }
    }
    fn validate(&self) -> Result<()> {
        super::validate_target(&self.target())
    }
    fn connect(&self) -> Result<Box<dyn Dns>> {
        self.validate()?;
        Ok(Box::new(Rfc2136::new(self)?))
    }
    fn describe(&self) -> String {
        format!(
            "RFC 2136 update to {} signed with the TSIG key in {}",
            self.primary,
            self.tsig_key_file.display()
        )
    }
}

/// A TSIG key. The secret never appears in `Debug` output or in errors.
#[derive(Clone)]
pub struct TsigKey {
    /// Key name as the server knows it (`migrator-key.`).
    pub name: String,
    /// Only `hmac-sha256`, `hmac-sha384` and `hmac-sha512` are accepted.
    pub algorithm: String,
    secret: Vec<u8>,
}

impl fmt::Debug for TsigKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TsigKey")
            .field("name", &self.name)
            .field("algorithm", &self.algorithm)
            .field("secret", &"<redacted>")
            .finish()
    }
}

fn b64_decode(field: &str, s: &str) -> Result<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map_err(|e| DnsError::Invalid(format!("{field}: not valid base64 ({e})")))
}

impl TsigKey {
    /// A key from its parts; `secret_b64` is the base64 secret.
    pub fn new(name: &str, algorithm: &str, secret_b64: &str) -> Result<Self> {
        let algorithm = algorithm.to_ascii_lowercase();
        if !matches!(
            algorithm.as_str(),
            "hmac-sha256" | "hmac-sha384" | "hmac-sha512"
        ) {
            return Err(DnsError::Invalid(format!(
                "TSIG algorithm {algorithm:?}: use hmac-sha256, hmac-sha384 or hmac-sha512"
            )));
        }
        if name.is_empty() {
            return Err(DnsError::Invalid("TSIG key name is empty".into()));
        }
        let secret = b64_decode("TSIG secret", secret_b64)?;
        if secret.len() < 16 {
            return Err(DnsError::Invalid(format!(
                "TSIG key {name}: secret of {} bytes is too short (at least 16)",
                secret.len()
            )));
        }
        Ok(Self {
            name: name.to_string(),
            algorithm,
            secret,
        })
    }

    /// Parses `algorithm:name:secret`, the `nsupdate -y` form.
    pub fn parse(spec: &str) -> Result<Self> {
        let mut it = spec.splitn(3, ':');
        match (it.next(), it.next(), it.next()) {
            (Some(alg), Some(name), Some(secret)) => Self::new(name, alg, secret),
            _ => Err(DnsError::Invalid(
                "TSIG key: expected algorithm:name:base64secret".into(),
            )),
        }
    }

    /// Reads a key file: either Knot's YAML as `keymgr -t NAME hmac-sha256` prints it
    /// (`id:`, `algorithm:`, `secret:` lines) or one `algorithm:name:secret` line. The file must
    /// not be readable by group or others.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = crate::secret::read_secret_file("TSIG key file", path)?;
        let field = |key: &str| {
            text.lines().find_map(|l| {
                let l = l.trim().trim_start_matches("- ").trim();
                l.strip_prefix(key)
                    .and_then(|r| r.strip_prefix(':'))
                    .map(|v| v.trim().trim_matches('"').to_string())
            })
        };
        match (field("id"), field("algorithm"), field("secret")) {
            (Some(id), Some(alg), Some(secret)) => Self::new(&id, &alg, &secret)
                .map_err(|e| DnsError::Invalid(format!("TSIG key file {}: {e}", path.display()))),
            _ => Self::parse(text.trim()).map_err(|e| {
                DnsError::Invalid(format!(
                    "TSIG key file {}: neither keymgr YAML (id/algorithm/secret) nor \
                     algorithm:name:secret ({e})",
                    path.display()
                ))
            }),
        }
    }

    fn signer(&self) -> Result<TSigner> {
        let alg = match self.algorithm.as_str() {
            "hmac-sha256" => TsigAlgorithm::HmacSha256,
            "hmac-sha384" => TsigAlgorithm::HmacSha384,
            _ => TsigAlgorithm::HmacSha512,
        };
        let name = parse_name("TSIG key name", &self.name)?;
        TSigner::new(self.secret.clone(), alg, name, 300)
            .map_err(|e| DnsError::Invalid(format!("TSIG key {}: {e}", self.name)))
    }
}

fn rrset(name: &Name, ttl: u32, addrs: &[IpAddr]) -> Result<RecordSet> {
    let rtype = record_type_of(addrs)?;
    let mut set = RecordSet::with_ttl(name.clone(), rtype, ttl);
    for a in addrs {
        let rdata = match a {
            IpAddr::V4(v4) => RData::A(A(*v4)),
            IpAddr::V6(v6) => RData::AAAA(AAAA(*v6)),
        };
        set.insert(Record::from_rdata(name.clone(), ttl, rdata), 0);
    }
    Ok(set)
}

/// Sends signed updates for one zone to its primary server.
pub struct Rfc2136Updater {
    primary: SocketAddr,
    zone: Name,
    key: TsigKey,
    timeout: Duration,
}

impl Rfc2136Updater {
    /// An updater for `zone` on `primary`, signing with `key`.
    pub fn new(primary: SocketAddr, zone: &str, key: TsigKey) -> Result<Self> {
        Ok(Self {
            primary,
            zone: parse_name("zone", zone)?,
            key,
            timeout: probe::QUERY_TIMEOUT,
        })
    }

    /// The primary server updates go to.
    pub fn primary(&self) -> SocketAddr {
        self.primary
    }

    /// Replaces the address set of `name` from exactly `current` to `new` with `ttl`, in one
    /// atomic signed update (hickory's compare-and-swap: value-dependent prerequisite, delete
    /// the current records, add the new set). Fails with `Refused` (NXRRSET) if the current set
    /// differs; the zone is then unchanged.
    pub async fn replace_addresses(
        &self,
        name: &str,
        current: &[IpAddr],
        new: &[IpAddr],
        ttl: u32,
    ) -> Result<()> {
        let n = in_zone(&self.zone, name)?;
        if record_type_of(current)? != record_type_of(new)? {
            return Err(DnsError::Invalid(format!(
                "{n}: current and new addresses are of different families"
            )));
        }
        let cur = rrset(&n, 0, current)?;
        let new_set = rrset(&n, ttl, new)?;
        let mut client = probe::client(self.primary, Some(self.key.signer()?), self.timeout).await;
        let what = format!("update {n} {current:?} -> {new:?} ttl {ttl}");
        // `in_zone` checked above what hickory would otherwise assert.
        let result = client
            .compare_and_swap(cur, new_set, self.zone.clone())
            .await;
        check_response(
            self.primary,
            &what,
            result.map(|r| r.metadata.response_code),
        )
    }

    /// Changes only the TTL of `name`'s current address set (same records).
    pub async fn set_ttl(&self, name: &str, current: &[IpAddr], ttl: u32) -> Result<()> {
        self.replace_addresses(name, current, current, ttl).await
    }

    /// Asks `server` (unsigned, like any resolver) for the address set of `name`.
    pub async fn query(&self, server: SocketAddr, name: &str, rtype: RecordType) -> Result<Answer> {
        let n = in_zone(&self.zone, name)?;
        probe::query(server, &n, rtype).await
    }

    /// Confirms that every server in `servers` answers exactly `expected` for `name`. Returns
    /// `NotConfirmed` naming each server that does not.
    pub async fn verify_everywhere(
        &self,
        servers: &[SocketAddr],
        name: &str,
        expected: &[IpAddr],
    ) -> Result<()> {
        let n = in_zone(&self.zone, name)?;
        probe::verify_everywhere(servers, &n, expected).await
    }
}

fn check_response(
    server: SocketAddr,
    what: &str,
    result: std::result::Result<ResponseCode, hickory_net::NetError>,
) -> Result<()> {
    match result {
        Ok(ResponseCode::NoError) => Ok(()),
        Ok(code) => Err(DnsError::Refused {
            server: server.to_string(),
            what: what.to_string(),
            answer: code.to_string(),
            retryable: code == ResponseCode::ServFail,
        }),
        Err(e) => Err(probe::net_error(server, what, e)),
    }
}

/// The blocking [`Dns`] driver: signed updates to the primary, confirmation on every server.
pub struct Rfc2136 {
    updater: Rfc2136Updater,
    servers: Vec<SocketAddr>,
    rt: tokio::runtime::Runtime,
}

impl Rfc2136 {
    /// Reads the TSIG key file (mode 0600) named by `c`.
    pub fn new(c: &Rfc2136Config) -> Result<Self> {
        let key = TsigKey::from_file(&c.tsig_key_file)
            .map_err(|e| DnsError::Invalid(format!("dns.tsig_key_file: {e}")))?;
        Ok(Self {
            updater: Rfc2136Updater::new(c.primary, &c.zone, key)?,
            servers: c.servers.clone(),
            rt: probe::runtime("rfc2136")?,
        })
    }
}

impl Dns for Rfc2136 {
    fn provider(&self) -> &'static str {
        "rfc2136"
    }
    fn current(&self, name: &str) -> Result<Vec<IpAddr>> {
        let n = in_zone(&self.updater.zone, name)?;
        self.rt
            .block_on(probe::addresses(self.updater.primary, &n))
            .map(|a| a.addrs)
    }
    fn set_ttl(&self, name: &str, addrs: &[IpAddr], ttl: u32) -> Result<()> {
        self.rt.block_on(self.updater.set_ttl(name, addrs, ttl))
    }
    fn replace_confirmed(
        &self,
        name: &str,
        current: &[IpAddr],
        new: &[IpAddr],
        ttl: u32,
    ) -> Result<()> {
        let n = in_zone(&self.updater.zone, name)?;
        self.rt.block_on(async {
            self.updater
                .replace_addresses(name, current, new, ttl)
                .await?;
            probe::confirm_everywhere(&self.servers, &n, new, probe::CONFIRM_WITHIN).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_parsing_and_redaction() {
        let k = TsigKey::parse("hmac-sha256:migrator:c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0").unwrap();
        assert_eq!(k.name, "migrator");
        let dbg = format!("{k:?}");
        assert!(!dbg.contains("c2Vj") && !dbg.contains("secret\":"), "{dbg}");
        assert!(TsigKey::parse("hmac-md5:k:c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0").is_err());
        assert!(TsigKey::parse("hmac-sha256:k:!!!").is_err());
        assert!(TsigKey::parse("hmac-sha256:k:c2hvcnQ=").is_err());
        assert!(TsigKey::parse("nonsense").is_err());
    }

    #[test]
    fn key_file_must_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.yaml");
        std::fs::write(
            &p,
            "key:\n  - id: lab\n    algorithm: hmac-sha256\n    secret: c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0\n",
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = TsigKey::from_file(&p).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let k = TsigKey::from_file(&p).unwrap();
        assert_eq!(
            (k.name.as_str(), k.algorithm.as_str()),
            ("lab", "hmac-sha256")
        );
    }

    #[test]
    fn names_outside_the_zone_are_refused_not_asserted() {
        let k = TsigKey::parse("hmac-sha256:k:c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0").unwrap();
        let u = Rfc2136Updater::new("127.0.0.1:53".parse().unwrap(), "lab.example", k).unwrap();
        let e = in_zone(&u.zone, "www.other.example")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not inside zone"), "{e}");
        assert!(record_type_of(&["10.0.0.1".parse().unwrap(), "::1".parse().unwrap()]).is_err());
    }
}
