//! The proxy's protections against hostile clients and tenants (issue 18, findings 1, 9, 10):
//! open connections counted globally and per source address, failed logins counted per
//! address and per user name, and the counters `/metrics` exports for each refusal.
//!
//! Everything here is bounded: the per-address and per-user tables hold at most
//! [`MAX_TRACKED`] keys (expired windows are dropped first, then the oldest), and a user name
//! is kept to its first [`MAX_USER_KEY`] bytes.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::Limits;
use crate::protocol::ErrPacket;

/// Keys kept per table (addresses with connections, addresses and users with failures).
pub const MAX_TRACKED: usize = 16_384;
/// Bytes of a user name used as its throttle key.
pub const MAX_USER_KEY: usize = 256;

/// The address a limit counts by: IPv4 as is, IPv6 by its /64 (one customer's prefix),
/// an IPv4-mapped IPv6 address as the IPv4 address.
pub fn ip_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Counters of every refusal, for `/metrics`.
#[derive(Default)]
pub struct LimitCounters {
    pub refused_max_connections: AtomicU64,
    pub refused_per_ip: AtomicU64,
    pub refused_blocked_ip: AtomicU64,
    pub oversized_login_packets: AtomicU64,
    pub oversized_packets: AtomicU64,
    pub handshake_timeouts: AtomicU64,
    pub login_failures: AtomicU64,
    pub logins_throttled: AtomicU64,
    /// Logins as an account `sync-users` left out (host names, local only, locked...).
    pub logins_left_out: AtomicU64,
    pub set_replay_refused: AtomicU64,
    pub hold_share_refused: AtomicU64,
    pub unstored_routes_refused: AtomicU64,
    pub routes_freed: AtomicU64,
}

/// Open client connections, total and per address.
pub struct ConnTable {
    open: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    max: usize,
    max_per_ip: usize,
}

/// One counted connection; uncounted when dropped (the session's end).
pub struct ConnGuard {
    table: Arc<ConnTable>,
    ip: IpAddr,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.table.open.fetch_sub(1, Ordering::SeqCst);
        let mut m = self.table.per_ip.lock().expect("per-ip lock");
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// Why a connection was refused before the greeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnRefusal {
    Total,
    PerIp,
}

impl ConnTable {
    pub fn new(max: usize, max_per_ip: usize) -> Arc<Self> {
        Arc::new(Self {
            open: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
            max,
            max_per_ip,
        })
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// Counts a new connection from `ip`, or says which limit it is over.
    pub fn try_acquire(self: &Arc<Self>, ip: IpAddr) -> Result<ConnGuard, ConnRefusal> {
        let ip = ip_key(ip);
        if self.open.fetch_add(1, Ordering::SeqCst) >= self.max {
            self.open.fetch_sub(1, Ordering::SeqCst);
            return Err(ConnRefusal::Total);
        }
        let mut m = self.per_ip.lock().expect("per-ip lock");
        let n = m.entry(ip).or_insert(0);
        if *n >= self.max_per_ip {
            drop(m);
            self.open.fetch_sub(1, Ordering::SeqCst);
            return Err(ConnRefusal::PerIp);
        }
        *n += 1;
        Ok(ConnGuard {
            table: self.clone(),
            ip,
        })
    }
}

#[derive(Clone, Copy)]
struct Window {
    start: Instant,
    failures: u32,
}

/// Failed logins per address and per user name over a fixed window.
pub struct LoginThrottle {
    window: Duration,
    max_ip: u32,
    max_user: u32,
    ips: Mutex<HashMap<IpAddr, Window>>,
    users: Mutex<HashMap<Vec<u8>, Window>>,
}

fn user_key(user: &str) -> Vec<u8> {
    let b = user.as_bytes();
    b[..b.len().min(MAX_USER_KEY)].to_vec()
}

/// Time left until `w` ends if it holds `max` failures or more.
fn blocked_for(w: Option<&Window>, max: u32, window: Duration, now: Instant) -> Option<Duration> {
    let w = w?;
    let ends = w.start + window;
    (w.failures >= max && ends > now).then(|| ends - now)
}

fn record<K: std::hash::Hash + Eq + Clone>(
    m: &mut HashMap<K, Window>,
    key: K,
    window: Duration,
    now: Instant,
) {
    if !m.contains_key(&key) && m.len() >= MAX_TRACKED {
        m.retain(|_, w| w.start + window > now);
        if m.len() >= MAX_TRACKED {
            if let Some(oldest) = m
                .iter()
                .min_by_key(|(_, w)| w.start)
                .map(|(k, _)| k.clone())
            {
                m.remove(&oldest);
            }
        }
    }
    let w = m.entry(key).or_insert(Window {
        start: now,
        failures: 0,
    });
    if w.start + window <= now {
        *w = Window {
            start: now,
            failures: 0,
        };
    }
    w.failures = w.failures.saturating_add(1);
}

impl LoginThrottle {
    pub fn new(limits: &Limits) -> Self {
        Self {
            window: Duration::from_millis(limits.login_failure_window_ms),
            max_ip: limits.max_login_failures_per_ip,
            max_user: limits.max_login_failures_per_user,
            ips: Mutex::new(HashMap::new()),
            users: Mutex::new(HashMap::new()),
        }
    }

    /// How long `ip` stays blocked, if it is.
    pub fn ip_blocked(&self, ip: IpAddr) -> Option<Duration> {
        let m = self.ips.lock().expect("throttle lock");
        blocked_for(m.get(&ip_key(ip)), self.max_ip, self.window, Instant::now())
    }

    /// How long logins as `user` stay refused, if they are (known and unknown names alike).
    pub fn user_blocked(&self, user: &str) -> Option<Duration> {
        let m = self.users.lock().expect("throttle lock");
        blocked_for(
            m.get(&user_key(user)),
            self.max_user,
            self.window,
            Instant::now(),
        )
    }

    /// Counts one failed login of `user` from `ip`.
    pub fn failed(&self, ip: IpAddr, user: &str) {
        let now = Instant::now();
        record(
            &mut self.ips.lock().expect("throttle lock"),
            ip_key(ip),
            self.window,
            now,
        );
        record(
            &mut self.users.lock().expect("throttle lock"),
            user_key(user),
            self.window,
            now,
        );
    }

    /// Tracked (addresses, user names), for `/metrics`.
    pub fn tracked(&self) -> (usize, usize) {
        (
            self.ips.lock().expect("throttle lock").len(),
            self.users.lock().expect("throttle lock").len(),
        )
    }
}

/// Everything the protections share, one per proxy.
pub struct Protections {
    pub conns: Arc<ConnTable>,
    pub logins: LoginThrottle,
    pub counters: LimitCounters,
}

impl Protections {
    pub fn new(limits: &Limits) -> Self {
        Self {
            conns: ConnTable::new(limits.max_connections, limits.max_connections_per_ip),
            logins: LoginThrottle::new(limits),
            counters: LimitCounters::default(),
        }
    }
}

/// MySQL's answer when the server has no connection slot left.
pub fn too_many_connections(r: ConnRefusal) -> ErrPacket {
    let which = match r {
        ConnRefusal::Total => "limits.max_connections",
        ConnRefusal::PerIp => "limits.max_connections_per_ip for your address",
    };
    ErrPacket::new(
        1040,
        "08004",
        format!("Too many connections (sql-proxy: {which} reached)"),
    )
}

/// The refusal of an address with too many failed logins.
pub fn host_blocked(ip: IpAddr, left: Duration) -> ErrPacket {
    ErrPacket::new(
        1129,
        "HY000",
        format!(
            "Host '{ip}' is blocked because of many failed logins (sql-proxy); retry in {} s",
            left.as_secs() + 1
        ),
    )
}

/// The refusal of a user name with too many failed logins: the same for a name that exists
/// and one that does not, and given without checking the password.
pub fn user_blocked(user: &str, host: &str, left: Duration) -> ErrPacket {
    ErrPacket::new(
        1045,
        "28000",
        format!(
            "Access denied for user '{user}'@'{host}' (sql-proxy: too many failed logins for \
             this user; retry in {} s)",
            left.as_secs() + 1
        ),
    )
}

/// The protections' figures in Prometheus text (HELP and TYPE lines), appended to `/metrics`:
/// open connections, every refusal by reason, routes not stored yet, the hold buffer per
/// database, and the configured limits themselves.
pub fn write_metrics(out: &mut String, shared: &crate::route::Shared) {
    use std::fmt::Write as _;
    let p = &shared.protect;
    let c = &p.counters;
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let (ips, users) = p.logins.tracked();
    let gauges: [(&str, &str, u64); 4] = [
        (
            "sqlproxy_client_connections",
            "Client connections open (authenticated or not)",
            p.conns.open() as u64,
        ),
        (
            "sqlproxy_unstored_routes",
            "Databases named at logins in progress, not in the route store yet",
            shared.unstored.load(Ordering::SeqCst) as u64,
        ),
        (
            "sqlproxy_login_throttle_addresses",
            "Addresses with failed logins in the current window",
            ips as u64,
        ),
        (
            "sqlproxy_login_throttle_users",
            "User names with failed logins in the current window",
            users as u64,
        ),
    ];
    for (name, help, v) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
    }
    let _ = writeln!(
        out,
        "# HELP sqlproxy_connections_refused_total Connections refused before the greeting\n\
         # TYPE sqlproxy_connections_refused_total counter"
    );
    for (reason, v) in [
        ("max_connections", &c.refused_max_connections),
        ("max_connections_per_ip", &c.refused_per_ip),
        ("login_failures", &c.refused_blocked_ip),
    ] {
        let _ = writeln!(
            out,
            "sqlproxy_connections_refused_total{{reason=\"{reason}\"}} {}",
            get(v)
        );
    }
    let counters: [(&str, &str, &AtomicU64); 10] = [
        (
            "sqlproxy_oversized_login_packets_total",
            "Connections closed for a packet over max_login_packet_bytes before authentication",
            &c.oversized_login_packets,
        ),
        (
            "sqlproxy_oversized_packets_total",
            "Sessions closed for a packet over max_packet_bytes",
            &c.oversized_packets,
        ),
        (
            "sqlproxy_handshake_timeouts_total",
            "Logins cut off at handshake_timeout_ms",
            &c.handshake_timeouts,
        ),
        (
            "sqlproxy_login_failures_total",
            "Logins refused for a wrong password or an unknown user",
            &c.login_failures,
        ),
        (
            "sqlproxy_logins_throttled_total",
            "Logins refused unchecked: too many failures for the address or user name",
            &c.logins_throttled,
        ),
        (
            "sqlproxy_logins_left_out_total",
            "Logins refused as an account sync-users left out (host name, local only, locked, \
             no password): the log names the reason",
            &c.logins_left_out,
        ),
        (
            "sqlproxy_set_replay_refused_total",
            "SET statements refused: the session's replay text would pass max_set_replay_bytes",
            &c.set_replay_refused,
        ),
        (
            "sqlproxy_hold_share_refused_total",
            "Held commands refused: their database's hold_buffer_per_database_bytes was full",
            &c.hold_share_refused,
        ),
        (
            "sqlproxy_unstored_routes_refused_total",
            "Logins refused: max_unstored_routes databases not yet stored",
            &c.unstored_routes_refused,
        ),
        (
            "sqlproxy_routes_freed_total",
            "Routes never stored, freed when their login failed",
            &c.routes_freed,
        ),
    ];
    for (name, help, v) in counters {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
            get(v)
        );
    }
    let _ = writeln!(
        out,
        "# HELP sqlproxy_held_bytes_database Bytes of held commands per paused database\n\
         # TYPE sqlproxy_held_bytes_database gauge"
    );
    let routes: Vec<_> = shared
        .routes
        .read()
        .expect("routes lock")
        .values()
        .filter(|r| r.held_bytes.load(Ordering::SeqCst) > 0)
        .cloned()
        .collect();
    for r in routes {
        let db = r
            .name
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n");
        let _ = writeln!(
            out,
            "sqlproxy_held_bytes_database{{database=\"{db}\"}} {}",
            r.held_bytes.load(Ordering::SeqCst)
        );
    }
    let l = &shared.limits;
    let _ = writeln!(
        out,
        "# HELP sqlproxy_limit A configured limit ([limits] in the config)\n\
         # TYPE sqlproxy_limit gauge"
    );
    for (name, v) in [
        ("hold_buffer_bytes", l.hold_buffer_bytes as u64),
        (
            "hold_buffer_per_database_bytes",
            l.hold_buffer_per_database_bytes as u64,
        ),
        ("max_login_packet_bytes", l.max_login_packet_bytes as u64),
        ("max_packet_bytes", l.max_packet_bytes as u64),
        ("handshake_timeout_ms", l.handshake_timeout_ms),
        ("max_connections", l.max_connections as u64),
        ("max_connections_per_ip", l.max_connections_per_ip as u64),
        ("max_set_replay_bytes", l.max_set_replay_bytes as u64),
        ("max_unstored_routes", l.max_unstored_routes as u64),
        ("login_failure_window_ms", l.login_failure_window_ms),
        (
            "max_login_failures_per_ip",
            l.max_login_failures_per_ip as u64,
        ),
        (
            "max_login_failures_per_user",
            l.max_login_failures_per_user as u64,
        ),
        ("login_failure_delay_ms", l.login_failure_delay_ms),
    ] {
        let _ = writeln!(out, "sqlproxy_limit{{name=\"{name}\"}} {v}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(ip: u32, user: u32, window_ms: u64) -> Limits {
        Limits {
            max_login_failures_per_ip: ip,
            max_login_failures_per_user: user,
            login_failure_window_ms: window_ms,
            ..Limits::default()
        }
    }

    #[test]
    fn connections_are_counted_per_address_and_released() {
        let t = ConnTable::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let g1 = t.try_acquire(a).unwrap();
        let _g2 = t.try_acquire(a).unwrap();
        assert_eq!(t.try_acquire(a).err(), Some(ConnRefusal::PerIp));
        let _g3 = t.try_acquire(b).unwrap();
        assert_eq!(t.try_acquire(b).err(), Some(ConnRefusal::Total));
        assert_eq!(t.open(), 3);
        drop(g1);
        assert_eq!(t.open(), 2);
        let _g4 = t.try_acquire(a).unwrap();
    }

    #[test]
    fn ipv6_counts_by_its_64_and_mapped_v4_as_v4() {
        let a: IpAddr = "2001:db8:1:2::5".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        assert_eq!(ip_key(a), ip_key(b));
        let m: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(ip_key(m), "10.1.2.3".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn failures_block_address_and_user_until_the_window_ends() {
        let t = LoginThrottle::new(&limits(3, 2, 150));
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        t.failed(ip, "ghost");
        assert!(t.user_blocked("ghost").is_none());
        t.failed(ip, "ghost");
        assert!(t.user_blocked("ghost").is_some());
        assert!(t.ip_blocked(ip).is_none());
        t.failed(ip, "other");
        assert!(t.ip_blocked(ip).is_some());
        assert!(t.user_blocked("other").is_none());
        std::thread::sleep(Duration::from_millis(200));
        assert!(t.ip_blocked(ip).is_none());
        assert!(t.user_blocked("ghost").is_none());
    }

    #[test]
    fn tables_stay_bounded_under_a_spray_of_names() {
        let t = LoginThrottle::new(&limits(5, 5, 60_000));
        for i in 0..(MAX_TRACKED + 100) {
            let ip = IpAddr::from([10, (i >> 16) as u8, (i >> 8) as u8, i as u8]);
            t.failed(ip, &format!("user-{i}-{}", "x".repeat(1000)));
        }
        let (ips, users) = t.tracked();
        assert!(ips <= MAX_TRACKED && users <= MAX_TRACKED, "{ips} {users}");
    }
}
