//! Arbitrary bytes into every decoder the proxy runs on untrusted input: frames and logical
//! packets, the client login, the server greeting, ERR/OK/EOF/auth-switch packets, the
//! response scanner, and the `@@socket` rewrite of client query text. None may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sql_proxy::protocol::{
    eof_status, ok_status, parse_auth_switch, ErrPacket, HandshakeResponse, HandshakeV10,
};
use sql_proxy::response::{Expect, Scanner};
use sql_proxy::wire::{decode_packet, decode_packet_limited, frame_header};

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    while let Ok(Some((p, used))) = decode_packet(rest) {
        let _ = HandshakeResponse::parse(&p.payload);
        let _ = HandshakeV10::parse(&p.payload);
        let _ = ErrPacket::parse(&p.payload);
        let _ = ok_status(&p.payload);
        let _ = eof_status(&p.payload);
        let _ = parse_auth_switch(&p.payload);
        if used == 0 {
            break;
        }
        rest = &rest[used..];
    }
    let _ = frame_header(data);
    // The limited decoder (every client read) never accepts more than its limit.
    if let Ok(Some((p, _))) = decode_packet_limited(data, 4096) {
        assert!(p.payload.len() <= 4096);
    }
    // The response scanner over the same bytes cut into packets by their first byte.
    let expects = [
        Expect::Results { binary: false },
        Expect::Results { binary: true },
        Expect::Rows,
        Expect::Prepare,
        Expect::FieldList,
        Expect::Single,
    ];
    let pick = data.first().copied().unwrap_or(0) as usize % expects.len();
    let mut s = Scanner::new(expects[pick]);
    for chunk in data.chunks(7) {
        if s.is_done() || s.feed(chunk).is_err() {
            break;
        }
    }
    let _ = HandshakeResponse::parse(data);
    let _ = HandshakeV10::parse(data);
    if let Some(q) = sql_proxy::rewrite::hide_socket(data) {
        // A rewrite only ever replaces `@@socket` items: the result is never shorter.
        assert!(q.len() > data.len());
    }
});
