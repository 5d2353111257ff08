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
            if !path_ok(&target) || (target != *to && target.len() < 2) {
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
