//! Everything the proxy does with a client's bytes before it is authenticated: the size-limited
//! packet reader fed in arbitrary chunks (it must agree with the unlimited decoder and refuse
//! only what is over the limit), the SSL-request test, the login packet, the auth-switch
//! answer checked against the user store (known and unknown names), and the login throttle's
//! tables keyed by address and user name. None may panic.
#![no_main]

use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use sql_proxy::auth::{stage1_of, stage2_of, UserEntry, UserStore};
use sql_proxy::config::Limits;
use sql_proxy::limits::{ip_key, LoginThrottle};
use sql_proxy::protocol::{HandshakeResponse, NATIVE_PASSWORD};
use sql_proxy::wire::{decode_packet, decode_packet_limited, PacketError};

fn store() -> UserStore {
    let mut s = UserStore::default();
    s.users.insert(
        "app".into(),
        UserEntry {
            plugin: NATIVE_PASSWORD.into(),
            hash: format!("*{}", hex_upper(&stage2_of(&stage1_of("pw")))),
            databases: vec!["shop".into()],
            hosts: vec!["%".into()],
            require_tls: false,
        },
    );
    s.users.insert(
        "nopw".into(),
        UserEntry {
            plugin: NATIVE_PASSWORD.into(),
            hash: String::new(),
            databases: vec![],
            hosts: vec!["10.0.0.0/255.0.0.0".into()],
            require_tls: true,
        },
    );
    s
}

fn hex_upper(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, data)) = data.split_first() else {
        return;
    };
    // A limit from 1 KiB up (as the config allows), and a chunk size for the reads.
    let max = 1024 + (ctl as usize) * 97;
    let chunk = 1 + (ctl as usize % 13);
    let full = decode_packet(data);
    // Fed as reads of `chunk` bytes, as the session's reader sees a growing buffer.
    let mut end = 0;
    let limited = loop {
        end = (end + chunk).min(data.len());
        match decode_packet_limited(&data[..end], max) {
            Ok(None) if end < data.len() => continue,
            r => break r,
        }
    };
    match (&full, &limited) {
        (Ok(Some((p, used))), Ok(Some((q, qused)))) => {
            assert_eq!(p, q);
            assert_eq!(used, qused);
            assert!(q.payload.len() <= max);
        }
        (Ok(Some((p, _))), Err(PacketError::TooLarge { len, .. })) => {
            assert!(p.payload.len() > max && *len > max);
        }
        (Ok(None), Ok(None)) | (Err(_), Err(PacketError::Decode(_))) => {}
        (_, Err(PacketError::TooLarge { len, .. })) => assert!(*len > max),
        (a, b) => panic!("decoders disagree: {a:?} vs {b:?}"),
    }
    let payload = match &limited {
        Ok(Some((p, _))) => p.payload.as_slice(),
        _ => data,
    };
    let _ = HandshakeResponse::is_ssl_request(payload);
    let users = store();
    let scramble = [7u8; 20];
    if let Ok(r) = HandshakeResponse::parse(payload) {
        let _ = users.check(&r.user, "127.0.0.1", &r.auth_response, &scramble);
        // The login packet the proxy would build from it parses back.
        let again = HandshakeResponse::parse(&r.build());
        assert!(again.is_ok() || r.auth_response.len() > 255);
    }
    // The auth-switch answer is a raw token; the user name any bytes.
    let name = String::from_utf8_lossy(&payload[..payload.len().min(64)]);
    for user in ["app", "nopw", "ghost", name.as_ref()] {
        let _ = users.check(user, "::1", payload, &scramble);
    }
    let limits = Limits {
        max_login_failures_per_ip: 1 + (ctl as u32 % 4),
        max_login_failures_per_user: 1 + (ctl as u32 % 3),
        ..Limits::default()
    };
    let t = LoginThrottle::new(&limits);
    for c in payload.chunks(17).take(64) {
        let ip = if c.len() >= 16 {
            let mut b = [0u8; 16];
            b.copy_from_slice(&c[..16]);
            IpAddr::from(b)
        } else {
            IpAddr::from([c.first().copied().unwrap_or(0), 0, 0, 1])
        };
        let _ = ip_key(ip);
        let user = String::from_utf8_lossy(c);
        t.failed(ip, &user);
        let _ = (t.ip_blocked(ip), t.user_blocked(&user));
    }
});
