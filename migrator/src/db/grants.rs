//! Which of an account's privileges a database copy replays on the destination.
//!
//! `SHOW GRANTS FOR` lists everything the account holds on the source server: the account
//! line (`GRANT USAGE ON *.*`, with its hash, `REQUIRE` and limits), the grants on the site's
//! database, and also global privileges, grants on other databases (another tenant's, on a
//! shared server), roles and `PROXY`. Only the account line and the grants on the copied
//! database are replayed; the others are reported as skipped (named by account, privileges
//! and target; never with a hash), so a site's account never gains on the new server what
//! belonged to other databases.

/// What one `SHOW GRANTS` line grants, for the decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// `GRANT USAGE ON *.* TO …`: the account itself, no privilege.
    Account,
    /// Privileges on objects of one database (`db`.* or `db`.`t`, routines), the name as
    /// written (it may be a pattern: `\_` is a literal `_`, bare `_` and `%` are wildcards).
    Database(String),
    /// Anything else: global privileges, a role, `PROXY`, a line not understood.
    Other,
}

/// Classifies one line of `SHOW GRANTS` output.
pub fn classify(line: &str) -> Grant {
    let Some(rest) = line.strip_prefix("GRANT ") else {
        return Grant::Other;
    };
    let Some((privs, target)) = split_on(rest) else {
        return Grant::Other; // a role granted: `GRANT role TO …`
    };
    if privs.starts_with("PROXY") {
        return Grant::Other;
    }
    let mut target = target;
    for kind in ["FUNCTION ", "PROCEDURE ", "PACKAGE BODY ", "PACKAGE "] {
        if let Some(t) = target.strip_prefix(kind) {
            target = t;
            break;
        }
    }
    if target.starts_with("*.*") {
        return if privs == "USAGE" {
            Grant::Account
        } else {
            Grant::Other
        };
    }
    match quoted(target) {
        Some((db, after)) if after.starts_with('.') => Grant::Database(db),
        _ => Grant::Other,
    }
}

/// Whether a grant on `name` (as `SHOW GRANTS` writes it) is exactly database `db`: the name
/// itself, or its escaped form (`shop\_db` for `shop_db`). A pattern matching other databases
/// too (`shop%`, `s\_%`) is not.
pub fn names_database(name: &str, db: &str) -> bool {
    if name == db && !db.contains(['%', '_']) {
        return true;
    }
    let mut out = String::new();
    let mut chars = name.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(n @ ('_' | '%' | '\\')) => out.push(n),
                _ => return false,
            },
            // An unescaped wildcard: the grant covers more than one database.
            '_' | '%' => return name == db && !db.contains('%'),
            c => out.push(c),
        }
    }
    out == db
}

/// `(privileges, target)` of `GRANT privileges ON target TO …`: the first ` ON ` outside
/// backquotes and parentheses (column lists).
fn split_on(s: &str) -> Option<(&str, &str)> {
    let b = s.as_bytes();
    let (mut depth, mut quoted) = (0i32, false);
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'`' => quoted = !quoted,
            b'(' if !quoted => depth += 1,
            b')' if !quoted => depth -= 1,
            b' ' if !quoted && depth == 0 && s[i..].starts_with(" ON ") => {
                let target = &s[i + 4..];
                let end = target.find(" TO ").unwrap_or(target.len());
                return Some((&s[..i], &target[..end]));
            }
            b' ' if !quoted && depth == 0 && s[i..].starts_with(" TO ") => return None,
            _ => {}
        }
        i += 1;
    }
    None
}

/// A backquoted identifier at the start of `s` (``` `` ``` is a backquote): the name and the
/// text after it.
fn quoted(s: &str) -> Option<(String, &str)> {
    let rest = s.strip_prefix('`')?;
    let mut name = String::new();
    let mut it = rest.char_indices().peekable();
    while let Some((i, c)) = it.next() {
        if c == '`' {
            if let Some((_, '`')) = it.peek() {
                it.next();
                name.push('`');
                continue;
            }
            return Some((name, &rest[i + 1..]));
        }
        name.push(c);
    }
    None
}

/// How a skipped grant is reported: the account, then the grant without its `TO` part (which
/// could carry a hash).
pub fn describe(account: &str, line: &str) -> String {
    let rest = line.strip_prefix("GRANT ").unwrap_or(line);
    let shown = match split_on(rest) {
        Some((privs, target)) => format!("{privs} ON {target}"),
        None => rest.split(" TO ").next().unwrap_or(rest).to_string(),
    };
    format!("{account}: {shown}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_are_classified_by_their_target() {
        let to = " TO `shop`@`%`";
        let cases = [
            (
                "GRANT USAGE ON *.* TO `shop`@`%` IDENTIFIED BY PASSWORD '*AB'",
                Grant::Account,
            ),
            ("GRANT ALL PRIVILEGES ON *.* TO `shop`@`%`", Grant::Other),
            ("GRANT SUPER ON *.* TO `shop`@`%`", Grant::Other),
            (
                "GRANT ALL PRIVILEGES ON `shop`.* TO `shop`@`%`",
                Grant::Database("shop".into()),
            ),
            (
                "GRANT SELECT (`a ON b`, c) ON `shop`.`t` TO `shop`@`%`",
                Grant::Database("shop".into()),
            ),
            (
                "GRANT EXECUTE ON FUNCTION `shop`.`f` TO `shop`@`%`",
                Grant::Database("shop".into()),
            ),
            (
                "GRANT SELECT ON `we``ird`.* TO `shop`@`%`",
                Grant::Database("we`ird".into()),
            ),
            ("GRANT `admin_role` TO `shop`@`%`", Grant::Other),
            ("GRANT PROXY ON ''@'%' TO 'shop'@'%'", Grant::Other),
            ("REVOKE x", Grant::Other),
        ];
        for (line, want) in cases {
            assert_eq!(classify(line), want, "{line}");
        }
        assert_eq!(
            describe("shop@%", &format!("GRANT SELECT ON `other`.*{to}")),
            "shop@%: SELECT ON `other`.*"
        );
    }

    #[test]
    fn only_the_database_itself_is_named() {
        assert!(names_database("shop", "shop"));
        assert!(names_database("shop\\_db", "shop_db"));
        assert!(names_database("shop_db", "shop_db"), "as mysql.db lists it");
        assert!(!names_database("shop", "shop2"));
        assert!(!names_database("shop%", "shop"));
        assert!(!names_database("sho_", "shop"));
        assert!(!names_database("other", "shop"));
    }
}
