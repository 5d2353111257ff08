//! HAProxy behind [`LoadBalancer`], over the runtime API (admin-level
//! stats socket). Every change is read back and compared before it counts.
//!
//! The runtime API is line based: one command per connection (non-interactive mode), the answer
//! is everything until the server closes. An empty answer means success for `set server`;
//! anything else is HAProxy's own error text, which we carry as is.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{AdminState, LoadBalancer, ServerState};
use crate::{DriverError, Result};

/// Current plus queued sessions of `backend/server` in HAProxy's `show stat` CSV (0 when the
/// server is not listed).
pub fn parse_in_flight(csv: &str, backend: &str, server: &str) -> u64 {
    let mut lines = csv.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or("")
        .trim_start_matches("# ")
        .split(',')
        .collect();
    let col = |n: &str| header.iter().position(|h| *h == n);
    let (Some(px), Some(sv), Some(q), Some(s)) =
        (col("pxname"), col("svname"), col("qcur"), col("scur"))
    else {
        return 0;
    };
    lines
        .map(|l| l.split(',').collect::<Vec<_>>())
        .find(|f| f.get(px) == Some(&backend) && f.get(sv) == Some(&server))
        .map(|f| {
            let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            n(q) + n(s)
        })
        .unwrap_or(0)
}

/// HAProxy's runtime API on a unix socket.
#[derive(Debug, Clone)]
pub struct Haproxy {
    socket: PathBuf,
    timeout: Duration,
}

impl Haproxy {
    /// A client for the admin socket at `socket` (`stats socket PATH level admin`).
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
            timeout: Duration::from_secs(5),
        }
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends one command and returns HAProxy's whole answer.
    pub fn command(&self, cmd: &str) -> Result<String> {
        if cmd.contains('\n') || cmd.contains(';') {
            return Err(DriverError::InvalidInput(format!(
                "runtime API command must be one command on one line: {cmd:?}"
            )));
        }
        let io = |e: std::io::Error| DriverError::Io {
            what: format!("HAProxy runtime API {} ({cmd})", self.socket.display()),
            source: e,
        };
        let mut s = UnixStream::connect(&self.socket).map_err(io)?;
        s.set_read_timeout(Some(self.timeout)).map_err(io)?;
        s.set_write_timeout(Some(self.timeout)).map_err(io)?;
        s.write_all(cmd.as_bytes()).map_err(io)?;
        s.write_all(b"\n").map_err(io)?;
        let mut out = String::new();
        s.read_to_string(&mut out).map_err(io)?;
        Ok(out)
    }

    fn set(&self, cmd: &str) -> Result<()> {
        let answer = self.command(cmd)?;
        let answer = answer.trim();
        // Success is an empty answer, or an informational line for an address change.
        if answer.is_empty()
            || answer.starts_with("IP changed from")
            || answer.contains("no need to change")
        {
            Ok(())
        } else {
            Err(DriverError::Rejected {
                system: "haproxy",
                command: cmd.to_string(),
                answer: answer.to_string(),
            })
        }
    }

    /// All servers of `backend` from `show servers state`.
    pub fn servers(&self, backend: &str) -> Result<Vec<ServerState>> {
        check_name("backend", backend)?;
        let answer = self.command(&format!("show servers state {backend}"))?;
        parse_servers_state(&answer)
    }
}

fn check_name(field: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'));
    if ok {
        Ok(())
    } else {
        Err(DriverError::InvalidInput(format!(
            "{field} name {name:?}: only letters, digits, '_', '-', '.', ':' allowed"
        )))
    }
}

/// Parses `show servers state` (format version 1): a version line, a `#` header naming the
/// columns, then one line per server.
pub fn parse_servers_state(text: &str) -> Result<Vec<ServerState>> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let version = lines.next().unwrap_or("").trim();
    if version != "1" {
        return Err(DriverError::Protocol(format!(
            "show servers state: expected format version 1, got {version:?} (answer: {text:?})"
        )));
    }
    let header: Vec<&str> = lines
        .next()
        .and_then(|h| h.strip_prefix('#'))
        .ok_or_else(|| DriverError::Protocol("show servers state: no header line".into()))?
        .split_whitespace()
        .collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|c| *c == name)
            .ok_or_else(|| DriverError::Protocol(format!("show servers state: no column {name}")))
    };
    let (be, srv, addr, op, admin, weight, port) = (
        col("be_name")?,
        col("srv_name")?,
        col("srv_addr")?,
        col("srv_op_state")?,
        col("srv_admin_state")?,
        col("srv_uweight")?,
        col("srv_port")?,
    );
    let mut out = Vec::new();
    for line in lines {
        let f: Vec<&str> = line.split_whitespace().collect();
        let get = |i: usize| {
            f.get(i).copied().ok_or_else(|| {
                DriverError::Protocol(format!("show servers state: short line {line:?}"))
            })
        };
        let num = |i: usize| -> Result<u32> {
            get(i)?.parse().map_err(|_| {
                DriverError::Protocol(format!(
                    "show servers state: column {i} not a number in {line:?}"
                ))
            })
        };
        let ip: IpAddr = get(addr)?.parse().map_err(|_| {
            DriverError::Protocol(format!("show servers state: bad address in {line:?}"))
        })?;
        let admin_bits = num(admin)?;
        // srv_admin_state bit flags: 0x01 forced maint, 0x02 inherited maint, 0x04 maint via
        // config, 0x08 forced drain, 0x10 inherited drain, 0x20 resolution maint, ...
        let admin_state = if admin_bits & 0x27 != 0 {
            AdminState::Maint
        } else if admin_bits & 0x18 != 0 {
            AdminState::Drain
        } else {
            AdminState::Ready
        };
        out.push(ServerState {
            backend: get(be)?.to_string(),
            server: get(srv)?.to_string(),
            addr: SocketAddr::new(ip, num(port)? as u16),
            admin: admin_state,
            weight: num(weight)?,
            op_state: num(op)? as u8,
        });
    }
    Ok(out)
}

impl LoadBalancer for Haproxy {
    fn server_state(&self, backend: &str, server: &str) -> Result<ServerState> {
        check_name("server", server)?;
        self.servers(backend)?
            .into_iter()
            .find(|s| s.server == server)
            .ok_or_else(|| DriverError::NotFound(format!("haproxy server {backend}/{server}")))
    }

    fn in_flight(&self, backend: &str, server: &str) -> Result<u64> {
        check_name("backend", backend)?;
        check_name("server", server)?;
        Ok(parse_in_flight(
            &self.command("show stat")?,
            backend,
            server,
        ))
    }

    fn set_server_addr(&self, backend: &str, server: &str, addr: SocketAddr) -> Result<()> {
        check_name("backend", backend)?;
        check_name("server", server)?;
        self.set(&format!(
            "set server {backend}/{server} addr {} port {}",
            addr.ip(),
            addr.port()
        ))?;
        let now = self.server_state(backend, server)?;
        if now.addr != addr {
            return Err(DriverError::NotApplied(format!(
                "haproxy {backend}/{server}: asked for {addr}, reads back {}",
                now.addr
            )));
        }
        Ok(())
    }

    fn set_server_admin(&self, backend: &str, server: &str, state: AdminState) -> Result<()> {
        check_name("backend", backend)?;
        check_name("server", server)?;
        self.set(&format!(
            "set server {backend}/{server} state {}",
            state.keyword()
        ))?;
        let now = self.server_state(backend, server)?;
        if now.admin != state {
            return Err(DriverError::NotApplied(format!(
                "haproxy {backend}/{server}: asked for state {state:?}, reads back {:?}",
                now.admin
            )));
        }
        Ok(())
    }

    fn set_server_weight(&self, backend: &str, server: &str, weight: u32) -> Result<()> {
        check_name("backend", backend)?;
        check_name("server", server)?;
        if weight > 256 {
            return Err(DriverError::InvalidInput(format!(
                "weight {weight}: HAProxy weights are 0 to 256"
            )));
        }
        self.set(&format!("set server {backend}/{server} weight {weight}"))?;
        let now = self.server_state(backend, server)?;
        if now.weight != weight {
            return Err(DriverError::NotApplied(format!(
                "haproxy {backend}/{server}: asked for weight {weight}, reads back {}",
                now.weight
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n3 site1 1 srv 127.0.0.1 2 0 1 1 12 1 0 0 0 0 0 0 - 8081 - 0 0 - - 0\n3 site1 2 spare 10.0.0.5 0 1 7 1 12 1 0 0 0 0 0 0 - 80 - 0 0 - - 0\n";

    #[test]
    fn parses_servers_state() {
        let s = parse_servers_state(SAMPLE).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].server, "srv");
        assert_eq!(s[0].addr, "127.0.0.1:8081".parse().unwrap());
        assert_eq!(s[0].admin, AdminState::Ready);
        assert_eq!(s[0].op_state, 2);
        assert_eq!(s[1].admin, AdminState::Maint);
        assert_eq!(s[1].weight, 7);
    }

    #[test]
    fn rejects_garbage_answers_without_panicking() {
        for bad in [
            "",
            "Unknown command\n",
            "1\n",
            "1\n# be_name\nx\n",
            "2\n# a b\n",
        ] {
            assert!(parse_servers_state(bad).is_err(), "{bad:?} accepted");
        }
        let short = "1\n# be_name srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_port\nb s\n";
        assert!(matches!(
            parse_servers_state(short),
            Err(DriverError::Protocol(_))
        ));
    }

    #[test]
    fn in_flight_reads_current_and_queued_sessions() {
        let csv = "# pxname,svname,qcur,qmax,scur,smax\nbe_a,web,1,0,2,5\nbe_a,BACKEND,0,0,3,5\nbe_b,web,0,0,0,1\n";
        assert_eq!(parse_in_flight(csv, "be_a", "web"), 3);
        assert_eq!(parse_in_flight(csv, "be_b", "web"), 0);
        assert_eq!(parse_in_flight(csv, "be_c", "web"), 0);
        assert_eq!(parse_in_flight("garbage", "be_a", "web"), 0);
    }

    #[test]
    fn refuses_command_injection() {
        let h = Haproxy::new("/nonexistent");
        assert!(matches!(
            h.command("show info\nshutdown frontend web"),
            Err(DriverError::InvalidInput(_))
        ));
        assert!(matches!(
            h.set_server_addr("b;x", "s", "127.0.0.1:1".parse().unwrap()),
            Err(DriverError::InvalidInput(_))
        ));
    }
}
