//! A raw MySQL client over a blocking socket, for tests that must send what no real client
//! sends (oversized or trickled login packets, nothing at all) or time a login exactly.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use sql_proxy::auth::{scramble_token, stage1_of};
use sql_proxy::protocol::{cap, ErrPacket, HandshakeResponse, HandshakeV10, NATIVE_PASSWORD};

/// Connects from `local` (any 127.0.0.0/8 address) to `to`. Not from inside a runtime.
pub fn connect_from(local: [u8; 4], to: SocketAddr) -> TcpStream {
    thread_local! {
        static RT: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap();
    }
    let s = RT.with(|rt| {
        rt.block_on(async {
            let sock = tokio::net::TcpSocket::new_v4()?;
            sock.bind(SocketAddr::from((local, 0)))?;
            sock.connect(to).await?.into_std()
        })
    });
    let s = s.expect("connect to the proxy");
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Reads one packet (single frame): (seq, payload).
pub fn read_packet(s: &mut TcpStream) -> std::io::Result<(u8, Vec<u8>)> {
    let mut h = [0u8; 4];
    s.read_exact(&mut h)?;
    let len = h[0] as usize | (h[1] as usize) << 8 | (h[2] as usize) << 16;
    let mut p = vec![0u8; len];
    s.read_exact(&mut p)?;
    Ok((h[3], p))
}

pub fn write_packet(s: &mut TcpStream, seq: u8, payload: &[u8]) -> std::io::Result<()> {
    let mut out = bytes::BytesMut::new();
    sql_proxy::wire::encode_packet(&mut out, seq, payload);
    s.write_all(&out)
}

/// What the proxy said first: its greeting, or an error instead of one.
pub enum First {
    Greeting(HandshakeV10),
    Err(ErrPacket),
}

pub fn first_packet(s: &mut TcpStream) -> First {
    let (_, p) = read_packet(s).expect("first packet");
    if p.first() == Some(&0xFF) {
        First::Err(ErrPacket::parse(&p).unwrap())
    } else {
        First::Greeting(HandshakeV10::parse(&p).unwrap())
    }
}

pub fn greeting(s: &mut TcpStream) -> HandshakeV10 {
    match first_packet(s) {
        First::Greeting(g) => g,
        First::Err(e) => panic!("refused instead of greeted: {} {}", e.code, e.message),
    }
}

/// The login packet for `user`/`password` over `scramble`, asking for `db`.
pub fn login_packet(user: &str, password: &str, db: Option<&str>, scramble: &[u8]) -> Vec<u8> {
    HandshakeResponse {
        capabilities: cap::PROTOCOL_41
            | cap::SECURE_CONNECTION
            | cap::PLUGIN_AUTH
            | cap::TRANSACTIONS
            | cap::MULTI_RESULTS,
        max_packet: 1 << 24,
        charset: 45,
        user: user.into(),
        auth_response: scramble_token(&stage1_of(password), scramble),
        database: db.map(str::to_string),
        auth_plugin: Some(NATIVE_PASSWORD.into()),
        attrs_len: 0,
    }
    .build()
}

/// A full login from `local`: `Ok(stream)` on OK, `Err(err)` on a refusal, and how long the
/// proxy took to answer the login packet.
pub fn login(
    local: [u8; 4],
    to: SocketAddr,
    user: &str,
    password: &str,
    db: Option<&str>,
) -> (Result<TcpStream, ErrPacket>, Duration) {
    let mut s = connect_from(local, to);
    let g = match first_packet(&mut s) {
        First::Greeting(g) => g,
        First::Err(e) => return (Err(e), Duration::ZERO),
    };
    write_packet(&mut s, 1, &login_packet(user, password, db, &g.scramble)).unwrap();
    let sent = Instant::now();
    let (_, p) = read_packet(&mut s).expect("login answer");
    let took = sent.elapsed();
    if p.first() == Some(&0xFF) {
        (Err(ErrPacket::parse(&p).unwrap()), took)
    } else {
        assert_eq!(p.first(), Some(&0x00), "login answer is OK or ERR");
        (Ok(s), took)
    }
}

/// Whether the peer closed (EOF or reset) within `within`; bytes it sent meanwhile are read
/// and dropped.
pub fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let until = Instant::now() + within;
    let mut buf = [0u8; 4096];
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false
            }
            Err(_) => return true,
        }
    }
}

/// Writes `total` bytes of `byte` in pieces of `piece`, stopping at the first write error (the
/// peer closed); returns how many bytes went out.
pub fn pour(s: &mut TcpStream, total: usize, piece: usize) -> usize {
    let chunk = vec![b'x'; piece];
    let mut sent = 0;
    while sent < total {
        let n = piece.min(total - sent);
        if s.write_all(&chunk[..n]).is_err() {
            break;
        }
        sent += n;
    }
    sent
}

/// The resident set size of process `pid` in bytes (VmRSS of /proc/PID/status).
pub fn rss_bytes(pid: u32) -> u64 {
    let st = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = st
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/PID/status");
    kb * 1024
}

/// One figure of `/metrics` (the first sample of `name`, labels included in `name`).
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Polls `fetch` (the `/metrics` text) for up to 3 s until `name` reads `want`: a counter of a
/// closed connection may be bumped just after the client saw the close. Returns the last text.
pub fn metric_reaches(fetch: impl Fn() -> String, name: &str, want: f64) -> String {
    let until = Instant::now() + Duration::from_secs(3);
    loop {
        let m = fetch();
        if metric(&m, name) == Some(want) || Instant::now() > until {
            return m;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
