//! The host part of an account (`'user'@'host'`) applied to a client's source address.
//!
//! The proxy logs clients in on behalf of the old server, so an account must not become
//! reachable from more places through the proxy than it was there. `sync-users` keeps only
//! accounts whose host part can be judged from an IP address ([`usable_through_proxy`]); at
//! login, [`matches`] decides from the client's source address.

use std::net::IpAddr;

/// Why an account's host part cannot be carried to the proxy (the account is then left out,
/// and refused at the proxy: fail closed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unusable {
    /// `localhost`, `127.0.0.1`, `::1`: the server's own machine only.
    LocalOnly,
    /// A host name or name pattern (`web1.example.com`, `%.example.com`): judging it would
    /// take resolving the client's address, which the proxy does not do (a resolver an
    /// attacker can influence would decide who logs in).
    HostName,
}

impl Unusable {
    pub fn why(self) -> &'static str {
        match self {
            Unusable::LocalOnly => {
                "reachable only from the database server itself; the proxy's local \
                 clients are other machines' processes"
            }
            Unusable::HostName => {
                "a host name (or name pattern): the proxy does not resolve client names"
            }
        }
    }
}

/// Whether an account's host part can be judged from a client's IP address ([`Unusable`]).
pub fn usable_through_proxy(host: &str) -> Result<(), Unusable> {
    if matches!(host, "localhost" | "127.0.0.1" | "::1") {
        return Err(Unusable::LocalOnly);
    }
    if host == "%" || host.contains('/') && netmask(host).is_some() {
        return Ok(());
    }
    let ip_like = host
        .chars()
        .all(|c| c.is_ascii_hexdigit() || matches!(c, '.' | ':' | '%' | '_'));
    if ip_like && host.chars().any(|c| c.is_ascii_digit() || c == ':') {
        return Ok(());
    }
    Err(Unusable::HostName)
}

/// Whether a client at `ip` matches the account host part `pattern`: `%`, an address, an
/// address pattern with `%` / `_` wildcards, or `address/netmask` (IPv4), as the server does.
pub fn matches(pattern: &str, ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    if pattern == "%" {
        return true;
    }
    if let Some((net, mask)) = netmask(pattern) {
        return match ip {
            IpAddr::V4(a) => u32::from(a) & mask == net & mask,
            IpAddr::V6(_) => false,
        };
    }
    if matches!(pattern, "localhost" | "127.0.0.1" | "::1") {
        return false; // never through the proxy (see `usable_through_proxy`)
    }
    like(pattern.as_bytes(), ip.to_string().as_bytes())
}

fn netmask(pattern: &str) -> Option<(u32, u32)> {
    let (net, mask) = pattern.split_once('/')?;
    let net: std::net::Ipv4Addr = net.parse().ok()?;
    let mask: std::net::Ipv4Addr = mask.parse().ok()?;
    Some((u32::from(net), u32::from(mask)))
}

/// SQL `LIKE` on ASCII: `%` any run, `_` one character, case-insensitive. Iterative, going
/// back only to the last `%`: at most pattern × text steps (a recursive matcher took
/// exponential time on a host part of many `%`, found by the `sql_text` fuzz target).
fn like(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    // After the last `%` seen: where the pattern resumes, and where in the text it was tried.
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        match p.get(pi) {
            Some(b'%') => {
                pi += 1;
                star = Some((pi, si));
            }
            Some(c) if *c == b'_' || c.eq_ignore_ascii_case(&s[si]) => {
                pi += 1;
                si += 1;
            }
            _ => match star {
                // The last `%` takes one more character; the rest is tried again from there.
                Some((resume, tried)) => {
                    pi = resume;
                    si = tried + 1;
                    star = Some((resume, tried + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|c| *c == b'%')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_percent_signs_match_in_polynomial_time() {
        // The fuzz artifact: 74 `%` then bytes no address has. Exponential before the fix.
        let mut pattern = "%".repeat(74);
        pattern.push_str("\u{c}\u{0}'");
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        assert!(!matches(&pattern, ip));
        assert!(matches(&"%".repeat(200), ip));
        assert!(matches(&format!("{}3", "%".repeat(60)), ip));
    }

    #[test]
    fn like_agrees_with_the_definition() {
        for (p, s, want) in [
            ("10.0.%", "10.0.1.7", true),
            ("10.0.%.7", "10.0.12.7", true),
            ("10.0.%.7", "10.0.12.8", false),
            ("10.0.0._", "10.0.0.7", true),
            ("10.0.0._", "10.0.0.77", false),
            ("%.7", "10.0.0.7", true),
            ("%%", "", true),
            ("_", "", false),
            ("a%b%c", "aXbYc", true),
            ("a%b%c", "aXcYb", false),
        ] {
            assert_eq!(like(p.as_bytes(), s.as_bytes()), want, "{p} ~ {s}");
        }
    }

    #[test]
    fn host_parts_apply_to_the_source_address() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(matches("%", ip("203.0.113.9")));
        assert!(matches("10.0.0.%", ip("10.0.0.7")));
        assert!(!matches("10.0.0.%", ip("10.0.1.7")));
        assert!(matches("10.0.0.7", ip("::ffff:10.0.0.7")));
        assert!(matches("10.0.0.0/255.255.255.0", ip("10.0.0.200")));
        assert!(!matches("10.0.0.0/255.255.255.0", ip("10.0.2.1")));
        assert!(!matches("localhost", ip("127.0.0.1")));
        assert!(!matches("127.0.0.1", ip("127.0.0.1")));
        assert!(!matches("web%.example.com", ip("10.0.0.1")));
        assert!(usable_through_proxy("localhost").is_err());
        assert!(usable_through_proxy("::1").is_err());
        assert_eq!(
            usable_through_proxy("web1.example.com"),
            Err(Unusable::HostName)
        );
        assert_eq!(
            usable_through_proxy("%.example.com"),
            Err(Unusable::HostName)
        );
        // Hex digits alone are a name, not an address.
        assert_eq!(usable_through_proxy("cafe.be"), Err(Unusable::HostName));
        for ok in [
            "%",
            "10.0.0.%",
            "10.0.0.0/255.255.255.0",
            "2001:db8::%",
            "192.168.1.5",
        ] {
            assert!(usable_through_proxy(ok).is_ok(), "{ok}");
        }
    }
}
