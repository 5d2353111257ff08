//! Plain DNS queries to authoritative servers (unsigned, like any resolver, hickory), and the
//! confirmation every provider ends a change with: each listed server answers the new set.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_net::client::{Client, ClientHandle};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::udp::UdpClientStream;
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};

use super::{DnsError, Result};

/// How long one query may take.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a change may take to show on every server (secondaries lag the primary by a NOTIFY
/// round and a transfer; caches by a purge).
pub const CONFIRM_WITHIN: Duration = Duration::from_secs(5);

/// A fully qualified name from user input, with a clear error naming `field`.
pub fn parse_name(field: &str, s: &str) -> Result<Name> {
    let mut n = Name::from_ascii(s)
        .map_err(|e| DnsError::Invalid(format!("{field} {s:?}: not a DNS name ({e})")))?;
    n.set_fqdn(true);
    Ok(n)
}

/// `name` checked to be inside `zone`.
pub fn in_zone(zone: &Name, name: &str) -> Result<Name> {
    let n = parse_name("record name", name)?;
    if !zone.zone_of(&n) {
        return Err(DnsError::Invalid(format!(
            "record name {n} is not inside zone {zone}"
        )));
    }
    Ok(n)
}

/// A or AAAA for an address set; mixed or empty sets are refused.
pub fn record_type_of(addrs: &[IpAddr]) -> Result<RecordType> {
    let v4 = addrs.iter().filter(|a| a.is_ipv4()).count();
    match (v4, addrs.len() - v4) {
        (0, 0) => Err(DnsError::Invalid("empty address set".into())),
        (_, 0) => Ok(RecordType::A),
        (0, _) => Ok(RecordType::AAAA),
        _ => Err(DnsError::Invalid(
            "an address set mixes IPv4 and IPv6: replace A and AAAA separately".into(),
        )),
    }
}

/// The address records of one name as one server answered them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Sorted.
    pub addrs: Vec<IpAddr>,
    /// The TTL of the set (the smallest, if records disagree).
    pub ttl: Option<u32>,
}

/// A hickory failure talking to `server`: no answer (timeout, I/O) may pass on a retry; an
/// answer hickory rejects (a bad signature on a refusal, a malformed message) will not.
pub(crate) fn net_error(server: SocketAddr, what: &str, e: hickory_net::NetError) -> DnsError {
    use hickory_net::NetError as E;
    match e {
        E::Timeout | E::Io(_) | E::Busy | E::NoConnections => DnsError::Unreachable {
            server: server.to_string(),
            what: what.to_string(),
            message: e.to_string(),
        },
        _ => DnsError::Refused {
            server: server.to_string(),
            what: what.to_string(),
            answer: e.to_string(),
            retryable: false,
        },
    }
}

/// A client for `server`, signing with `signer` when given.
pub(crate) async fn client(
    server: SocketAddr,
    signer: Option<hickory_proto::rr::TSigner>,
    timeout: Duration,
) -> Client<TokioRuntimeProvider> {
    let stream = UdpClientStream::builder(server, TokioRuntimeProvider::default())
        .with_timeout(Some(timeout))
        .with_signer(signer)
        .build();
    let (client, bg) = Client::<TokioRuntimeProvider>::from_sender(stream);
    tokio::spawn(bg);
    client
}

/// Asks `server` (unsigned) for the `rtype` set of `name`.
pub async fn query(server: SocketAddr, name: &Name, rtype: RecordType) -> Result<Answer> {
    let mut client = client(server, None, QUERY_TIMEOUT).await;
    let what = format!("query {name} {rtype}");
    let resp = client
        .query(name.clone(), DNSClass::IN, rtype)
        .await
        .map_err(|e| net_error(server, &what, e))?;
    let code = resp.metadata.response_code;
    if code != ResponseCode::NoError && code != ResponseCode::NXDomain {
        return Err(DnsError::Refused {
            server: server.to_string(),
            what,
            answer: code.to_string(),
            retryable: code == ResponseCode::ServFail,
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

/// The address set of `name` at `server`: its A records, or its AAAA records when it has no A.
pub async fn addresses(server: SocketAddr, name: &Name) -> Result<Answer> {
    let a = query(server, name, RecordType::A).await?;
    if !a.addrs.is_empty() {
        return Ok(a);
    }
    query(server, name, RecordType::AAAA).await
}

/// Confirms once that every server in `servers` answers exactly `expected` for `name`;
/// [`DnsError::NotConfirmed`] names each server that does not.
pub async fn verify_everywhere(
    servers: &[SocketAddr],
    name: &Name,
    expected: &[IpAddr],
) -> Result<()> {
    let rtype = record_type_of(expected)?;
    let mut want = expected.to_vec();
    want.sort();
    let mut wrong = Vec::new();
    for s in servers {
        match query(*s, name, rtype).await {
            Ok(got) if got.addrs == want => {}
            Ok(got) => wrong.push(format!("{s} answers {:?}", got.addrs)),
            Err(e) => wrong.push(e.to_string()),
        }
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(DnsError::NotConfirmed {
            name: name.to_string(),
            expected: want,
            wrong,
        })
    }
}

/// [`verify_everywhere`] until it passes or `within` has passed (then its last error).
pub async fn confirm_everywhere(
    servers: &[SocketAddr],
    name: &Name,
    expected: &[IpAddr],
    within: Duration,
) -> Result<()> {
    let start = Instant::now();
    loop {
        match verify_everywhere(servers, name, expected).await {
            Ok(()) => return Ok(()),
            Err(e) if !e.is_retryable() || start.elapsed() >= within => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// The small runtime each blocking driver runs its DNS queries on.
pub(crate) fn runtime(provider: &str) -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| DnsError::Invalid(format!("{provider}: cannot start a tokio runtime: {e}")))
}
