//! Queries the proxy must not pass through unchanged: `@@socket`.
//!
//! A client that learns the backend's unix socket path may reconnect there and bypass the proxy
//! (mysql_async with `prefer_socket`, its default, runs `SELECT @@max_allowed_packet,
//! @@wait_timeout,@@socket` after login and moves to that socket when it exists on its host).
//! When proxy and backend share a host, that client would then keep writing to the old side
//! after a switch: split brain. So a plain variable select (`SELECT @@a, @@b, ...`, nothing else)
//! that names `socket` is rewritten to return NULL for it, under the same column name; the other
//! columns still come from the backend.
//!
//! The check on the hot path is a few byte comparisons: anything not starting with
//! `SELECT @@` is left alone at once.

/// The rewritten query text, or `None` when `sql` needs no rewrite (the common case).
pub fn hide_socket(sql: &[u8]) -> Option<Vec<u8>> {
    let mut i = skip_ws(sql, 0);
    if !sql.get(i..i + 6)?.eq_ignore_ascii_case(b"SELECT") {
        return None;
    }
    i += 6;
    let j = skip_ws(sql, i);
    if j == i || sql.get(j..j + 2) != Some(b"@@") {
        return None;
    }
    i = j;
    // Items: (start, end, is_socket).
    let mut items: Vec<(usize, usize, bool)> = Vec::new();
    loop {
        let start = i;
        if sql.get(i..i + 2) != Some(b"@@") {
            return None;
        }
        i += 2;
        let mut name_start = i;
        i = skip_ident(sql, i);
        if sql.get(i) == Some(&b'.') {
            let scope = &sql[name_start..i];
            if !(scope.eq_ignore_ascii_case(b"global")
                || scope.eq_ignore_ascii_case(b"session")
                || scope.eq_ignore_ascii_case(b"local"))
            {
                return None;
            }
            i += 1;
            name_start = i;
            i = skip_ident(sql, i);
        }
        if i == name_start {
            return None;
        }
        items.push((start, i, sql[name_start..i].eq_ignore_ascii_case(b"socket")));
        i = skip_ws(sql, i);
        match sql.get(i) {
            Some(b',') => i = skip_ws(sql, i + 1),
            Some(b';') => {
                if skip_ws(sql, i + 1) != sql.len() {
                    return None;
                }
                break;
            }
            None => break,
            Some(_) => return None,
        }
    }
    if !items.iter().any(|it| it.2) {
        return None;
    }
    let mut out = Vec::with_capacity(sql.len() + 32);
    let mut copied = 0;
    for (start, end, socket) in items {
        if socket {
            out.extend_from_slice(&sql[copied..start]);
            out.extend_from_slice(b"NULL AS `");
            out.extend_from_slice(&sql[start..end]);
            out.push(b'`');
            copied = end;
        }
    }
    out.extend_from_slice(&sql[copied..]);
    Some(out)
}

fn skip_ws(sql: &[u8], mut i: usize) -> usize {
    while sql.get(i).is_some_and(|b| b.is_ascii_whitespace()) {
        i += 1;
    }
    i
}

fn skip_ident(sql: &[u8], mut i: usize) -> usize {
    while sql
        .get(i)
        .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'$')
    {
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::hide_socket;

    fn rw(s: &str) -> Option<String> {
        hide_socket(s.as_bytes()).map(|v| String::from_utf8(v).unwrap())
    }

    #[test]
    fn mysql_async_settings_query_gets_a_null_socket_and_keeps_other_columns() {
        assert_eq!(
            rw("SELECT @@max_allowed_packet,@@wait_timeout,@@socket").as_deref(),
            Some("SELECT @@max_allowed_packet,@@wait_timeout,NULL AS `@@socket`")
        );
        assert_eq!(
            rw("SELECT @@socket").as_deref(),
            Some("SELECT NULL AS `@@socket`")
        );
        assert_eq!(
            rw("  select @@GLOBAL.Socket , @@port;\n").as_deref(),
            Some("  select NULL AS `@@GLOBAL.Socket` , @@port;\n")
        );
        assert_eq!(
            rw("SELECT @@socket,@@socket").as_deref(),
            Some("SELECT NULL AS `@@socket`,NULL AS `@@socket`")
        );
    }

    #[test]
    fn everything_else_is_left_alone() {
        for q in [
            "SELECT 1",
            "SELECT c FROM sbtest1 WHERE id=?",
            "SELECT @@max_allowed_packet,@@wait_timeout",
            "SELECT @@socket AS s",
            "SELECT @@socketx",
            "SELECT @@foo.socket",
            "SELECT @@socket; DROP TABLE t",
            "SELECT @@",
            "SELECT",
            "",
            "SELECT@@socket",
            "UPDATE t SET a = @@socket",
        ] {
            assert_eq!(rw(q), None, "{q}");
        }
    }
}
