//! Per-site web rules (a redirect, a response header) and the nginx lines they become. Every
//! value is checked to stay one token of the nginx file: a quote, `;`, brace, `$` or newline
//! would end the directive early or add one.

use super::{Header, Redirect, WebRule};

const REDIRECT_STATUS: [u16; 4] = [301, 302, 307, 308];

fn path_ok(p: &str) -> bool {
    p.starts_with('/')
        && p.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || matches!(
                    c,
                    '/' | '.' | '_' | '-' | '~' | '%' | '+' | '=' | '&' | ',' | '@'
                )
        })
}

/// A redirect's target may also carry a query (`/?op=about`): `?` is one more plain
/// character of the nginx token.
pub(crate) fn target_ok(p: &str) -> bool {
    match p.split_once('?') {
        Some((path, query)) => path_ok(path) && (query.is_empty() || path_ok(&format!("/{query}"))),
        None => path_ok(p),
    }
}

/// Checks one rule; the error names the field (below `web_rules[N].`) and why.
pub fn validate(r: &WebRule) -> Result<(), (&'static str, String)> {
    match r {
        WebRule::Redirect(Redirect { from, to, status }) => {
            if !path_ok(from) {
                return Err((
                    "from",
                    format!("{from:?}: not an absolute path of safe characters"),
                ));
            }
            let target = to
                .strip_prefix("https://")
                .or_else(|| to.strip_prefix("http://"))
                .map(|rest| format!("/{rest}"))
                .unwrap_or_else(|| to.clone());
            if !target_ok(&target) || (target != *to && target.len() < 2) {
                return Err(("to", format!("{to:?}: not an http(s) URL or absolute path")));
            }
            if !REDIRECT_STATUS.contains(status) {
                return Err((
                    "status",
                    format!("{status}: a redirect is 301, 302, 307 or 308"),
                ));
            }
        }
        WebRule::Header(Header { name, value }) => {
            let tok = |c: char| c.is_ascii_alphanumeric() || c == '-';
            if name.is_empty() || !name.chars().all(tok) {
                return Err(("name", format!("{name:?}: not a header name")));
            }
            let bad = |c: char| {
                !(' '..='~').contains(&c) || matches!(c, '"' | '\'' | ';' | '{' | '}' | '$' | '\\')
            };
            if value.is_empty() || value.chars().any(bad) {
                return Err((
                    "value",
                    format!("{value:?}: printable ASCII without quotes, `;`, braces, `$` or `\\`"),
                ));
            }
        }
    }
    Ok(())
}

/// The nginx lines of a site's rules (inside its `server` block).
pub fn render_nginx(rules: &[WebRule]) -> String {
    let mut out = String::new();
    for r in rules {
        match r {
            WebRule::Redirect(Redirect { from, to, status }) => {
                out.push_str(&format!("location = {from} {{ return {status} {to}; }}\n"))
            }
            WebRule::Header(Header { name, value }) => {
                out.push_str(&format!("add_header {name} \"{value}\" always;\n"))
            }
        }
    }
    out
}

/// Whether an answer's `Location` is the redirect's target `to` (as written, or a relative
/// target made absolute by the web server with the site's `host`).
pub fn location_matches(location: Option<&str>, to: &str, host: &str) -> bool {
    let Some(l) = location else { return false };
    l == to
        || (to.starts_with('/')
            && (l == format!("http://{host}{to}") || l == format!("https://{host}{to}")))
}

/// The rules checked against the server's answers: `redirect` its answer to the redirect's
/// `from`, `page` any page's (the headers). One line per difference.
pub fn served_diffs(
    rules: &[WebRule],
    host: &str,
    redirect: Option<&drivers::http::Answer>,
    page: &drivers::http::Answer,
) -> Vec<String> {
    let mut out = Vec::new();
    for r in rules {
        match r {
            WebRule::Redirect(Redirect { from, to, status }) => {
                let Some(a) = redirect else {
                    out.push(format!("redirect {from}: not requested"));
                    continue;
                };
                let loc = a.header("location");
                if a.status != *status || !location_matches(loc, to, host) {
                    out.push(format!(
                        "redirect {from}: HTTP {} Location {loc:?}, expected {status} {to}",
                        a.status
                    ));
                }
            }
            WebRule::Header(Header { name, value }) => {
                let have = page.header(name);
                if have != Some(value.as_str()) {
                    out.push(format!("header {name}: {have:?}, expected {value:?}"));
                }
            }
        }
    }
    out
}
