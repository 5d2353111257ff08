//! Hosted DNS: RFC 2136 updates signed with TSIG (hickory), and read-back on every
//! authoritative server.
//!
//! A record set is replaced in ONE update message: a value-dependent prerequisite (the current
//! records must be exactly what we believe), delete those records, add the new ones. The server
//! applies the message atomically, so there is no instant where the name has no address, and a
//! concurrent change by someone else makes the update fail (NXRRSET) instead of being clobbered.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use hickory_net::client::{Client, ClientHandle};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::udp::UdpClientStream;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::tsig::TsigAlgorithm;
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordSet, RecordType, TSigner};

use crate::{DriverError, Result};

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
        .map_err(|e| DriverError::InvalidInput(format!("{field}: not valid base64 ({e})")))
}

impl TsigKey {
    /// A key from its parts; `secret_b64` is the base64 secret.
    pub fn new(name: &str, algorithm: &str, secret_b64: &str) -> Result<Self> {
        let algorithm = algorithm.to_ascii_lowercase();
        if !matches!(
            algorithm.as_str(),
            "hmac-sha256" | "hmac-sha384" | "hmac-sha512"
        ) {
            return Err(DriverError::InvalidInput(format!(
                "TSIG algorithm {algorithm:?}: use hmac-sha256, hmac-sha384 or hmac-sha512"
            )));
        }
        if name.is_empty() {
            return Err(DriverError::InvalidInput("TSIG key name is empty".into()));
        }
        let secret = b64_decode("TSIG secret", secret_b64)?;
        if secret.len() < 16 {
            return Err(DriverError::InvalidInput(format!(
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
            _ => Err(DriverError::InvalidInput(
                "TSIG key: expected algorithm:name:base64secret".into(),
            )),
        }
    }

    /// Reads a key file: either Knot's YAML as `keymgr -t NAME hmac-sha256` prints it
    /// (`id:`, `algorithm:`, `secret:` lines) or one `algorithm:name:secret` line. The file must
    /// not be readable by group or others.
    pub fn from_file(path: &Path) -> Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        let io = |e| DriverError::Io {
            what: format!("TSIG key file {}", path.display()),
            source: e,
        };
        let meta = std::fs::metadata(path).map_err(io)?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(DriverError::InvalidInput(format!(
                "TSIG key file {}: mode {:o} is readable by others; chmod 600 it",
                path.display(),
                meta.permissions().mode() & 0o777
            )));
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        let field = |key: &str| {
            text.lines().find_map(|l| {
                let l = l.trim().trim_start_matches("- ").trim();
                l.strip_prefix(key)
                    .and_then(|r| r.strip_prefix(':'))
                    .map(|v| v.trim().trim_matches('"').to_string())
            })
        };
        match (field("id"), field("algorithm"), field("secret")) {
            (Some(id), Some(alg), Some(secret)) => Self::new(&id, &alg, &secret).map_err(|e| {
                DriverError::InvalidInput(format!("TSIG key file {}: {e}", path.display()))
            }),
            _ => Self::parse(text.trim()).map_err(|e| {
                DriverError::InvalidInput(format!(
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
            .map_err(|e| DriverError::InvalidInput(format!("TSIG key {}: {e}", self.name)))
    }
}

/// A fully qualified name from user input, with a clear error.
pub fn parse_name(field: &str, s: &str) -> Result<Name> {
    let mut n = Name::from_ascii(s)
        .map_err(|e| DriverError::InvalidInput(format!("{field} {s:?}: not a DNS name ({e})")))?;
    n.set_fqdn(true);
    Ok(n)
}

fn record_type_of(addrs: &[IpAddr]) -> Result<RecordType> {
    let v4 = addrs.iter().filter(|a| a.is_ipv4()).count();
    match (v4, addrs.len() - v4) {
        (0, 0) => Err(DriverError::InvalidInput("empty address set".into())),
        (_, 0) => Ok(RecordType::A),
        (0, _) => Ok(RecordType::AAAA),
        _ => Err(DriverError::InvalidInput(
            "an address set mixes IPv4 and IPv6: replace A and AAAA separately".into(),
        )),
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

/// The address records of one name as one server answered them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub addrs: Vec<IpAddr>,
    /// The TTL of the set (the smallest, if records disagree).
    pub ttl: Option<u32>,
}

/// Sends signed updates for one zone to its primary server.
pub struct DnsUpdater {
    primary: SocketAddr,
    zone: Name,
    key: TsigKey,
    timeout: Duration,
}

impl DnsUpdater {
    /// An updater for `zone` on `primary`, signing with `key`.
    pub fn new(primary: SocketAddr, zone: &str, key: TsigKey) -> Result<Self> {
        Ok(Self {
            primary,
            zone: parse_name("zone", zone)?,
            key,
            timeout: Duration::from_secs(5),
        })
    }

    async fn client(
        &self,
        signer: Option<TSigner>,
        server: SocketAddr,
    ) -> Client<TokioRuntimeProvider> {
        let stream = UdpClientStream::builder(server, TokioRuntimeProvider::default())
            .with_timeout(Some(self.timeout))
            .with_signer(signer)
            .build();
        let (client, bg) = Client::<TokioRuntimeProvider>::from_sender(stream);
        tokio::spawn(bg);
        client
    }

    fn in_zone(&self, name: &str) -> Result<Name> {
        let n = parse_name("record name", name)?;
        if !self.zone.zone_of(&n) {
            return Err(DriverError::InvalidInput(format!(
                "record name {n} is not inside zone {}",
                self.zone
            )));
        }
        Ok(n)
    }

    /// Replaces the address set of `name` from exactly `current` to `new` with `ttl`, in one
    /// atomic signed update (hickory's compare-and-swap: value-dependent prerequisite, delete
    /// the current records, add the new set). Fails with `Rejected` (NXRRSET) if the current set
    /// differs; the zone is then unchanged.
    pub async fn replace_addresses(
        &self,
        name: &str,
        current: &[IpAddr],
        new: &[IpAddr],
        ttl: u32,
    ) -> Result<()> {
        let n = self.in_zone(name)?;
        if record_type_of(current)? != record_type_of(new)? {
            return Err(DriverError::InvalidInput(format!(
                "{n}: current and new addresses are of different families"
            )));
        }
        let cur = rrset(&n, 0, current)?;
        let new_set = rrset(&n, ttl, new)?;
        let mut client = self.client(Some(self.key.signer()?), self.primary).await;
        let what = format!("replace {n} {current:?} -> {new:?} ttl {ttl}");
        // `in_zone` checked above what hickory would otherwise assert.
        let result = client
            .compare_and_swap(cur, new_set, self.zone.clone())
            .await;
        check_response(&what, result.map(|r| r.metadata.response_code))
    }

    /// Changes only the TTL of `name`'s current address set (same records).
    pub async fn set_ttl(&self, name: &str, current: &[IpAddr], ttl: u32) -> Result<()> {
        self.replace_addresses(name, current, current, ttl).await
    }

    /// Asks `server` (unsigned, like any resolver) for the address set of `name`.
    pub async fn query(&self, server: SocketAddr, name: &str, rtype: RecordType) -> Result<Answer> {
        let n = self.in_zone(name)?;
        let mut client = self.client(None, server).await;
        let resp = client
            .query(n.clone(), DNSClass::IN, rtype)
            .await
            .map_err(|e| DriverError::Rejected {
                system: "dns",
                command: format!("query {n} {rtype} at {server}"),
                answer: e.to_string(),
            })?;
        let code = resp.metadata.response_code;
        if code != ResponseCode::NoError && code != ResponseCode::NXDomain {
            return Err(DriverError::Rejected {
                system: "dns",
                command: format!("query {n} {rtype} at {server}"),
                answer: code.to_string(),
            });
        }
        let mut addrs = Vec::new();
        let mut ttl: Option<u32> = None;
        for r in &resp.answers {
            let a = match &r.data {
                RData::A(a) => IpAddr::V4(a.0),
                RData::AAAA(a) => IpAddr::V6(a.0),
                _ => continue,
            };
            addrs.push(a);
            ttl = Some(ttl.map_or(r.ttl, |t| t.min(r.ttl)));
        }
        addrs.sort();
        Ok(Answer { addrs, ttl })
    }

    /// Confirms that every server in `servers` answers exactly `expected` for `name`. Returns
    /// `NotApplied` naming each server that does not.
    pub async fn verify_everywhere(
        &self,
        servers: &[SocketAddr],
        name: &str,
        expected: &[IpAddr],
    ) -> Result<()> {
        let rtype = record_type_of(expected)?;
        let mut want = expected.to_vec();
        want.sort();
        let mut wrong = Vec::new();
        for s in servers {
            let got = self.query(*s, name, rtype).await?;
            if got.addrs != want {
                wrong.push(format!("{s} answers {:?}", got.addrs));
            }
        }
        if wrong.is_empty() {
            Ok(())
        } else {
            Err(DriverError::NotApplied(format!(
                "{name} should be {want:?}: {}",
                wrong.join("; ")
            )))
        }
    }
}

fn check_response<E: fmt::Display>(
    what: &str,
    result: std::result::Result<ResponseCode, E>,
) -> Result<()> {
    match result {
        Ok(ResponseCode::NoError) => Ok(()),
        Ok(code) => Err(DriverError::Rejected {
            system: "dns",
            command: what.to_string(),
            answer: code.to_string(),
        }),
        Err(e) => Err(DriverError::Rejected {
            system: "dns",
            command: what.to_string(),
            answer: e.to_string(),
        }),
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
        let u = DnsUpdater::new("127.0.0.1:53".parse().unwrap(), "lab.example", k).unwrap();
        let e = u.in_zone("www.other.example").unwrap_err().to_string();
        assert!(e.contains("not inside zone"), "{e}");
        assert!(record_type_of(&["10.0.0.1".parse().unwrap(), "::1".parse().unwrap()]).is_err());
    }
}
