//! Everything the proxy reads in a client's SQL text after login to route and gate it: the
//! lexer (comments, quotes, backticks, MariaDB executable comments, both backslash readings),
//! statement scope (databases named, USE, pinned state), the write classifier and the
//! qualifier parser; and the host patterns of the user store. None may panic, loop or
//! allocate without bound on any input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sql_proxy::{classify, hosts, lex, scope};

fuzz_target!(|data: &[u8]| {
    for backslash in [false, true] {
        let (stmts, _complete) = lex::statements(data, backslash);
        for toks in &stmts {
            let _ = lex::normalized(data, toks);
        }
    }
    let _ = scope::Scope::of(data);
    let _ = scope::schema_qualifiers(data);
    let _ = classify::first_keyword(data);
    let _ = classify::is_write(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let (pattern, ip) = text.split_once('|').unwrap_or((text, "10.1.2.3"));
        if let Ok(ip) = ip.parse() {
            let _ = hosts::matches(pattern, ip);
        }
        let _ = hosts::usable_through_proxy(text);
    }
});
