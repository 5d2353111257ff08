//! The PowerDNS Authoritative HTTP API as a [`Dns`] provider (`"provider": "powerdns"`).
//!
//! - Read: `GET /api/v1/servers/{server_id}/zones/{zone}`, the zone's rrsets as the API (the
//!   backend's source of truth, no cache) has them.
//! - Change: `PATCH` of the same URL with one rrset, `changetype: REPLACE`: PowerDNS swaps the
//!   set in one backend transaction, so there is no moment where the name has no address, and
//!   it purges its own caches for the name.
//! - Confirm: the set read back from the API, then plain DNS queries to every authoritative
//!   server listed in `servers` ([`probe`]).
//!
//! The API has no compare-and-swap. The driver reads the set first and refuses to replace
//! anything but exactly the set it was told is current, but a change made by someone else
//! between that read and the `PATCH` is overwritten (RFC 2136's prerequisite closes that
//! window; this API cannot).
//!
//! The API key is read from a file that must be mode 0600, sent as `X-API-Key`, and shown
//! nowhere (not in `Debug`, not in errors). Zones served to secondaries by AXFR need their
//! serial raised on each change: set the zone's `SOA-EDIT-API` metadata (zones created through
//! the API have it).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use hickory_proto::rr::{Name, RecordType};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::probe::{self, in_zone, parse_name, record_type_of};
use super::{default_low_ttl, Dns, DnsError, ProviderConfig, Result, Target};
use crate::http::{HttpClient, HttpError, Method};

/// How long one API exchange may take.
const API_TIMEOUT: Duration = Duration::from_secs(10);

/// The `dns` section of a site spec for this provider (`"provider": "powerdns"`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PowerDnsConfig {
    /// The record to move, e.g. `site0001.lab.test`.
    pub name: String,
    pub zone: String,
    /// The API's base URL (`webserver-address`/`webserver-port`), e.g. `http://127.0.0.1:8081`.
    pub api: String,
    /// File holding the API key (`api-key` in pdns.conf), mode 0600.
    pub api_key_file: PathBuf,
    /// The API's server id; PowerDNS Authoritative always calls itself `localhost`.
    #[serde(default = "default_server_id")]
    pub server_id: String,
    /// Every authoritative server (DNS, host:port); a switch counts only once all of them
    /// answer the new set.
    pub servers: Vec<SocketAddr>,
    /// The TTL used during the migration (lowered in `prepare`).
    #[serde(default = "default_low_ttl")]
    pub low_ttl: u32,
}

fn default_server_id() -> String {
    "localhost".into()
}

impl PowerDnsConfig {
    fn zone_path(&self, zone: &Name) -> String {
        format!("/api/v1/servers/{}/zones/{zone}", self.server_id)
    }
}

impl ProviderConfig for PowerDnsConfig {
    fn provider_name(&self) -> &'static str {
        "powerdns"
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
        super::validate_target(&self.target())?;
        HttpClient::new(&self.api, API_TIMEOUT)
            .map_err(|e| DnsError::Invalid(format!("dns.api: {e}")))?;
        if self.server_id.is_empty()
            || !self
                .server_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(DnsError::Invalid(format!(
                "dns.server_id {:?}: letters, digits, `-`, `_` and `.` only (PowerDNS: `localhost`)",
                self.server_id
            )));
        }
        Ok(())
    }
    fn connect(&self) -> Result<Box<dyn Dns>> {
        Ok(Box::new(PowerDns::new(self)?))
    }
    fn describe(&self) -> String {
        let zone = parse_name("zone", &self.zone)
            .map(|z| z.to_string())
            .unwrap_or_else(|_| self.zone.clone());
        format!(
            "PowerDNS API PATCH {}{} (rrset REPLACE, key in {}), read back from the API",
            self.api.trim_end_matches('/'),
            format_args!("/api/v1/servers/{}/zones/{zone}", self.server_id),
            self.api_key_file.display()
        )
    }
}

/// One rrset as the API lists it.
#[derive(Debug, Deserialize)]
struct RrSet {
    name: String,
    #[serde(rename = "type")]
    rtype: String,
    ttl: u32,
    records: Vec<ApiRecord>,
}

#[derive(Debug, Deserialize)]
struct ApiRecord {
    content: String,
    #[serde(default)]
    disabled: bool,
}

#[derive(Debug, Deserialize)]
struct Zone {
    #[serde(default)]
    rrsets: Vec<RrSet>,
}

/// The blocking [`Dns`] driver for one zone behind the PowerDNS API.
pub struct PowerDns {
    http: HttpClient,
    zone: Name,
    zone_path: String,
    servers: Vec<SocketAddr>,
    rt: tokio::runtime::Runtime,
}

impl PowerDns {
    /// Checks `c` and reads the API key file (mode 0600); nothing is sent yet.
    pub fn new(c: &PowerDnsConfig) -> Result<Self> {
        c.validate()?;
        let key = crate::secret::read_secret_file("dns.api_key_file", &c.api_key_file)?;
        if key.contains(['\r', '\n']) {
            return Err(DnsError::Invalid(format!(
                "dns.api_key_file {}: the key must be one line",
                c.api_key_file.display()
            )));
        }
        let http = HttpClient::new(&c.api, API_TIMEOUT)
            .map_err(|e| DnsError::Invalid(format!("dns.api: {e}")))?
            .with_secret_header("X-API-Key", &key);
        let zone = parse_name("dns.zone", &c.zone)?;
        Ok(Self {
            http,
            zone_path: c.zone_path(&zone),
            zone,
            servers: c.servers.clone(),
            rt: probe::runtime("powerdns")?,
        })
    }

    fn api_error(&self, what: &str, e: HttpError) -> DnsError {
        let server = self.http.base().to_string();
        match e {
            HttpError::Url { .. } | HttpError::Ca { .. } => {
                DnsError::Invalid(format!("dns.api: {e}"))
            }
            HttpError::Transport { message, .. } => DnsError::Unreachable {
                server,
                what: what.to_string(),
                message,
            },
            HttpError::Status {
                status, ref body, ..
            } => {
                // PowerDNS explains itself as {"error": "..."}; keep just that when it does.
                let text = serde_json::from_str::<serde_json::Value>(body)
                    .ok()
                    .and_then(|v| v.get("error")?.as_str().map(str::to_string))
                    .unwrap_or_else(|| body.clone());
                let hint = match status {
                    401 | 403 => " (is the key in dns.api_key_file the server's api-key?)",
                    404 => " (is the zone on this server, and dns.server_id right?)",
                    _ => "",
                };
                DnsError::Refused {
                    server,
                    what: what.to_string(),
                    answer: format!("HTTP {status}: {text}{hint}"),
                    retryable: e.is_retryable(),
                }
            }
            HttpError::Decode { message, .. } => DnsError::Protocol {
                server,
                what: what.to_string(),
                message,
            },
        }
    }

    /// The enabled records of `name`'s `rtype` set and its TTL, as the API has them (`None`
    /// when there is no such set).
    fn read_set(&self, name: &Name, rtype: RecordType) -> Result<Option<(Vec<IpAddr>, u32)>> {
        let what = format!("GET zone {}", self.zone);
        let zone: Zone = self
            .http
            .json(Method::Get, &self.zone_path, None::<&()>)
            .map_err(|e| self.api_error(&what, e))?;
        let want_name = name.to_string().to_ascii_lowercase();
        let Some(set) = zone
            .rrsets
            .into_iter()
            .find(|s| s.rtype == rtype.to_string() && s.name.to_ascii_lowercase() == want_name)
        else {
            return Ok(None);
        };
        let mut addrs = Vec::new();
        for r in set.records.iter().filter(|r| !r.disabled) {
            let a: IpAddr = r.content.parse().map_err(|_| DnsError::Protocol {
                server: self.http.base().to_string(),
                what: what.clone(),
                message: format!(
                    "{} {rtype} record {:?} is not an address",
                    set.name, r.content
                ),
            })?;
            addrs.push(a);
        }
        addrs.sort();
        Ok((!addrs.is_empty()).then_some((addrs, set.ttl)))
    }

    /// Replaces `name`'s set from exactly `current` to `new` (TTL `ttl`) and reads it back
    /// from the API.
    fn replace(&self, name: &str, current: &[IpAddr], new: &[IpAddr], ttl: u32) -> Result<()> {
        let n = in_zone(&self.zone, name)?;
        let rtype = record_type_of(new)?;
        if record_type_of(current)? != rtype {
            return Err(DnsError::Invalid(format!(
                "{n}: current and new addresses are of different families"
            )));
        }
        let what = format!("PATCH {n} {rtype} {current:?} -> {new:?} ttl {ttl}");
        let mut believed = current.to_vec();
        believed.sort();
        let actual = self
            .read_set(&n, rtype)?
            .map(|(a, _)| a)
            .unwrap_or_default();
        if actual != believed {
            return Err(DnsError::Refused {
                server: self.http.base().to_string(),
                what,
                answer: format!(
                    "the set is {actual:?}, not {believed:?} (changed by someone else?); \
                     nothing was sent"
                ),
                retryable: false,
            });
        }
        let records: Vec<_> = new
            .iter()
            .map(|a| json!({"content": a.to_string(), "disabled": false}))
            .collect();
        let body = json!({"rrsets": [{
            "name": n.to_string(),
            "type": rtype.to_string(),
            "ttl": ttl,
            "changetype": "REPLACE",
            "records": records,
        }]});
        self.http
            .send_ok(Method::Patch, &self.zone_path, Some(&body))
            .map_err(|e| self.api_error(&what, e))?;
        let mut want = new.to_vec();
        want.sort();
        match self.read_set(&n, rtype)? {
            Some((got, got_ttl)) if got == want && got_ttl == ttl => Ok(()),
            got => Err(DnsError::NotConfirmed {
                name: n.to_string(),
                expected: want,
                wrong: vec![format!(
                    "the API at {} lists {got:?} after the PATCH (ttl {ttl} expected)",
                    self.http.base()
                )],
            }),
        }
    }
}

impl Dns for PowerDns {
    fn provider(&self) -> &'static str {
        "powerdns"
    }
    fn current(&self, name: &str) -> Result<Vec<IpAddr>> {
        let n = in_zone(&self.zone, name)?;
        for rtype in [RecordType::A, RecordType::AAAA] {
            if let Some((addrs, _)) = self.read_set(&n, rtype)? {
                return Ok(addrs);
            }
        }
        Ok(Vec::new())
    }
    fn set_ttl(&self, name: &str, addrs: &[IpAddr], ttl: u32) -> Result<()> {
        self.replace(name, addrs, addrs, ttl)
    }
    fn replace_confirmed(
        &self,
        name: &str,
        current: &[IpAddr],
        new: &[IpAddr],
        ttl: u32,
    ) -> Result<()> {
        self.replace(name, current, new, ttl)?;
        let n = in_zone(&self.zone, name)?;
        self.rt.block_on(probe::confirm_everywhere(
            &self.servers,
            &n,
            new,
            probe::CONFIRM_WITHIN,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(key_file: PathBuf) -> PowerDnsConfig {
        PowerDnsConfig {
            name: "www.lab.example".into(),
            zone: "lab.example".into(),
            api: "http://127.0.0.1:9".into(),
            api_key_file: key_file,
            server_id: "localhost".into(),
            servers: vec!["127.0.0.1:53".parse().unwrap()],
            low_ttl: 30,
        }
    }

    #[test]
    fn api_key_file_must_exist_be_private_and_one_line() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pdns.key");
        let e = PowerDns::new(&config(p.clone())).err().unwrap().to_string();
        assert!(
            e.contains("dns.api_key_file") && e.contains("pdns.key"),
            "{e}"
        );
        std::fs::write(&p, "s3cret-key\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = PowerDns::new(&config(p.clone())).err().unwrap().to_string();
        assert!(e.contains("chmod 600") && e.contains("pdns.key"), "{e}");
        assert!(!e.contains("s3cret"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let d = PowerDns::new(&config(p.clone())).unwrap();
        assert_eq!(d.zone_path, "/api/v1/servers/localhost/zones/lab.example.");
        std::fs::write(&p, "a\nb\n").unwrap();
        let e = PowerDns::new(&config(p)).err().unwrap().to_string();
        assert!(e.contains("one line"), "{e}");
    }
}
