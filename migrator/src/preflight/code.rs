//! One file's bytes against the rule table and the old platform's names.
//!
//! A [`Scanner`] holds, per [`FileClass`], ONE multi-pattern regular expression
//! (`regex-automata`'s meta regex): every rule of that class and the built-in detectors, in
//! order, with the semantics of their alternation (leftmost-first). A file costs one pass of
//! that automaton, and each match says which pattern it was: no second search (an earlier
//! version tried each alternative with `find_at`, which ran to the end of the file whenever
//! that alternative did not match there: quadratic on JS full of `12:30:45`). Built-in
//! detectors:
//! - `net.old_ip`: an IPv4 or IPv6 literal inside the old platform's networks that nothing
//!   answers after the move (the inventory's old SQL IPs and web VIPs, `served_ips`);
//! - `net.old_host`: a host name under one of the old platform's domains that is not served
//!   (the inventory's old SQL host names, `served_hosts`);
//! - `path.foreign`: an absolute path of the old platform (`path_pattern`) outside the site's
//!   compat set (its own home, `compat_paths`): a path on another filer or another login.

use super::config::{Cidr, PhpVersion, PreflightConfig};
use super::rules::{FileClass, Rule, RuleTable};
use super::{Finding, PreflightError, Result, Severity, Where};
use regex::bytes::Regex;
use regex_automata::meta;
use regex_automata::util::syntax;
use std::collections::HashSet;
use std::net::IpAddr;

const IPV4: &str = r"\b(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\b";
/// A candidate only: [`std::net::Ipv6Addr`]'s parser decides.
const IPV6: &str = r"(?i)\b[0-9a-f]{1,4}(?::[0-9a-f]{0,4}){2,7}";

/// What an alternative of the combined expression is.
#[derive(Debug, Clone, Copy)]
enum Detector {
    Rule(usize),
    Ip,
    Host,
    Path,
}

/// The patterns of one file class: `combined`'s pattern `i` is `entries[i]`.
#[derive(Debug, Clone)]
struct ClassMatcher {
    combined: Option<meta::Regex>,
    entries: Vec<Detector>,
}

/// One search for every pattern, with `regex::bytes::Regex`'s settings (leftmost-first, any
/// bytes, the same size limits), so matches are those of the patterns' alternation.
fn compile_many(patterns: &[String]) -> Result<meta::Regex> {
    let config = meta::Config::new()
        .match_kind(regex_automata::MatchKind::LeftmostFirst)
        .utf8_empty(false)
        .nfa_size_limit(Some(10 * (1 << 20)))
        .hybrid_cache_capacity(2 * (1 << 20));
    meta::Builder::new()
        .configure(config)
        .syntax(syntax::Config::new().utf8(false))
        .build_many(patterns)
        .map_err(|e| PreflightError::Rule {
            file: "settings".into(),
            rule: "combined".into(),
            field: "pattern",
            message: e.to_string(),
        })
}

/// What the old platform answers after the move, and where it lives.
#[derive(Debug, Clone, Default)]
pub struct Served {
    pub ips: HashSet<IpAddr>,
    /// Lower case.
    pub hosts: HashSet<String>,
}

/// The compiled scanner (shared by every thread: read-only).
#[derive(Debug, Clone)]
pub struct Scanner {
    rules: Vec<Rule>,
    classes: [ClassMatcher; 3],
    networks: Vec<Cidr>,
    served: Served,
    /// Every pattern, for the benchmark's `rg` run over the same tree.
    patterns: Vec<String>,
}

fn class_index(c: FileClass) -> usize {
    match c {
        FileClass::Php => 0,
        FileClass::Htaccess => 1,
        FileClass::Any => 2,
    }
}

fn compile(what: &str, field: &'static str, p: &str) -> Result<Regex> {
    Regex::new(p).map_err(|e| PreflightError::Rule {
        file: "settings".into(),
        rule: what.into(),
        field,
        message: e.to_string(),
    })
}

impl Scanner {
    /// A scanner for `config` with the rules of `table` that apply to its PHP version, and
    /// what the old platform still answers after the move (`served`, from the inventory).
    pub fn new(config: &PreflightConfig, table: RuleTable, mut served: Served) -> Result<Scanner> {
        let php = PhpVersion::parse(&config.php_version).ok_or_else(|| PreflightError::Config {
            file: "settings".into(),
            message: format!(
                "field `php_version`: {:?} is not MAJOR.MINOR",
                config.php_version
            ),
        })?;
        let table = table.for_php(php);
        let networks = config.networks("settings")?;
        for ip in &config.served_ips {
            if let Ok(ip) = ip.parse() {
                served.ips.insert(ip);
            }
        }
        served
            .hosts
            .extend(config.served_hosts.iter().map(|h| h.to_ascii_lowercase()));
        let mut detectors: Vec<(Detector, String)> = Vec::new();
        if networks.iter().any(|n| n.is_v4()) {
            detectors.push((Detector::Ip, IPV4.to_string()));
        }
        if networks.iter().any(|n| !n.is_v4()) {
            detectors.push((Detector::Ip, IPV6.to_string()));
        }
        if !config.old_domains.is_empty() {
            let domains: Vec<String> = config
                .old_domains
                .iter()
                .map(|d| regex::escape(d.trim_start_matches('.')))
                .collect();
            detectors.push((
                Detector::Host,
                format!(
                    r"(?i)\b(?:[a-z0-9](?:[a-z0-9-]{{0,61}}[a-z0-9])?\.)+(?:{})\b",
                    domains.join("|")
                ),
            ));
        }
        if !config.path_pattern.is_empty() {
            compile("path_pattern", "path_pattern", &config.path_pattern)?;
            detectors.push((Detector::Path, config.path_pattern.clone()));
        }
        let mut patterns: Vec<String> = detectors.iter().map(|(_, p)| p.clone()).collect();
        patterns.extend(table.rules.iter().map(|r| r.pattern.clone()));
        let build = |class: FileClass| -> Result<ClassMatcher> {
            let mut entries = Vec::new();
            let mut alternatives = Vec::new();
            for (i, r) in table.rules.iter().enumerate() {
                if r.files == class || r.files == FileClass::Any {
                    entries.push(Detector::Rule(i));
                    alternatives.push(r.regex.as_str().to_string());
                }
            }
            for (d, p) in &detectors {
                compile("detector", "pattern", p)?;
                entries.push(*d);
                alternatives.push(p.clone());
            }
            let combined = if alternatives.is_empty() {
                None
            } else {
                Some(compile_many(&alternatives)?)
            };
            Ok(ClassMatcher { combined, entries })
        };
        let classes = [
            build(FileClass::Php)?,
            build(FileClass::Htaccess)?,
            build(FileClass::Any)?,
        ];
        Ok(Scanner {
            rules: table.rules,
            classes,
            networks,
            served,
            patterns,
        })
    }

    /// Every pattern the scanner searches for (rules and detectors).
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// Scans one file's bytes; `path` (relative to the home) names it in findings, `compat`
    /// is the site's set of absolute paths that keep working (its own home first).
    pub fn scan(
        &self,
        class: FileClass,
        path: &str,
        buf: &[u8],
        compat: &[String],
        out: &mut Vec<Finding>,
    ) {
        let cm = &self.classes[class_index(class)];
        let Some(combined) = &cm.combined else {
            return;
        };
        let mut lines = LineCounter::default();
        // Per rule of this file: is its `unless_file` guard present (computed once).
        let mut waived: Vec<Option<bool>> = Vec::new();
        for mm in combined.find_iter(buf) {
            let det = cm.entries[mm.pattern().as_usize()];
            // The match may start at the character before the name (`[^\w]`): report the
            // line of its first non-blank byte.
            let mut s = mm.start();
            while s < mm.end() && buf[s].is_ascii_whitespace() {
                s += 1;
            }
            // Most IP candidates (`12:30:45`, `1.2.3.4` in a version) are not the old
            // platform's: dropped before any line or text is computed.
            if matches!(det, Detector::Ip) && self.old_ip(&buf[s..mm.end()]).is_none() {
                continue;
            }
            let line_start = memchr::memrchr(b'\n', &buf[..s]).map_or(0, |i| i + 1);
            if is_comment(class, &buf[line_start..s]) {
                continue;
            }
            let text = String::from_utf8_lossy(&buf[s..mm.end()])
                .trim()
                .to_string();
            let line = lines.line_at(buf, s);
            let at = || Where::File {
                path: path.to_string(),
                line,
            };
            match det {
                Detector::Rule(i) => {
                    let rule = &self.rules[i];
                    if let Some(guard) = &rule.unless_file {
                        if waived.len() <= i {
                            waived.resize(i + 1, None);
                        }
                        if *waived[i].get_or_insert_with(|| guard.is_match(buf)) {
                            continue;
                        }
                    }
                    out.push(Finding {
                        rule: rule.id.clone(),
                        severity: rule.severity,
                        at: at(),
                        found: clip(&text),
                        fix: format!("{}: {}", rule.message, rule.fix),
                    });
                }
                Detector::Ip => {
                    out.push(Finding {
                        rule: "net.old_ip".into(),
                        severity: Severity::Blocked,
                        at: at(),
                        found: text,
                        fix: "an IP of the old platform that nothing answers after the move: \
                              use the service's host name, or have the SQL proxy or the tunnel \
                              serve this address (`served_ips`)"
                            .into(),
                    });
                }
                Detector::Host => {
                    // `sql1.dc1.example.com` is not under `dc1.example`.
                    let next = buf.get(mm.end()..mm.end() + 2).unwrap_or(&[]);
                    if next.first() == Some(&b'-')
                        || (next.first() == Some(&b'.')
                            && next.get(1).is_some_and(|c| c.is_ascii_alphanumeric()))
                    {
                        continue;
                    }
                    let host = text.to_ascii_lowercase();
                    if self.served.hosts.contains(&host) {
                        continue;
                    }
                    out.push(Finding {
                        rule: "net.old_host".into(),
                        severity: Severity::Blocked,
                        at: at(),
                        found: host,
                        fix: "a host name of the old platform that nothing answers after the \
                              move: use a served name (the database's sqlNNN name), or serve \
                              it (`served_hosts`)"
                            .into(),
                    });
                }
                Detector::Path => {
                    if compat.iter().any(|c| within(&text, c)) {
                        continue;
                    }
                    out.push(Finding {
                        rule: "path.foreign".into(),
                        severity: Severity::Blocked,
                        at: at(),
                        found: text,
                        fix: format!(
                            "an absolute path outside this site's compat set ({}): it does not \
                             exist on the new web servers; use a path under the site's own home \
                             (or __DIR__), or add it to `compat_paths`",
                            compat.join(", ")
                        ),
                    });
                }
            }
        }
    }
}

impl Scanner {
    /// The IP literal `text`, if it is in the old platform's networks and not served.
    fn old_ip(&self, text: &[u8]) -> Option<IpAddr> {
        let ip: IpAddr = std::str::from_utf8(text).ok()?.trim().parse().ok()?;
        (self.networks.iter().any(|n| n.contains(ip)) && !self.served.ips.contains(&ip))
            .then_some(ip)
    }
}

/// Whether `path` is `base` or below it (component-wise: `/homez.1/ab` is not in `/homez.1/a`).
fn within(path: &str, base: &str) -> bool {
    let base = base.trim_end_matches('/');
    path == base || path.strip_prefix(base).is_some_and(|r| r.starts_with('/'))
}

fn is_comment(class: FileClass, before: &[u8]) -> bool {
    let t = before.trim_ascii_start();
    class.comment_prefixes().iter().any(|p| t.starts_with(p))
}

fn clip(s: &str) -> String {
    if s.len() <= 160 {
        return s.to_string();
    }
    let mut end = 160;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Line numbers of increasing offsets, counting each newline once.
#[derive(Default)]
struct LineCounter {
    pos: usize,
    line: u64,
}

impl LineCounter {
    fn line_at(&mut self, buf: &[u8], at: usize) -> u64 {
        if at < self.pos {
            self.pos = 0;
            self.line = 0;
        }
        self.line += memchr::memchr_iter(b'\n', &buf[self.pos..at]).count() as u64;
        self.pos = at;
        self.line + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scanner() -> Scanner {
        let config = PreflightConfig::parse(
            "old_networks = [\"10.20.0.0/16\", \"2001:db8:20::/48\"]\n\
             old_domains = [\"dc1.example\"]\n",
            "test",
        )
        .unwrap();
        let mut served = Served::default();
        served.ips.insert("10.20.0.7".parse().unwrap());
        served.hosts.insert("sql7.dc1.example".into());
        Scanner::new(&config, RuleTable::builtin().unwrap(), served).unwrap()
    }

    fn scan(name: &str, text: &str) -> Vec<(String, u64, String)> {
        let mut out = Vec::new();
        let compat = vec!["/homez.3/alice".to_string()];
        scanner().scan(
            FileClass::of(name),
            name,
            text.as_bytes(),
            &compat,
            &mut out,
        );
        out.into_iter()
            .map(|f| match f.at {
                Where::File { line, .. } => (f.rule, line, f.found),
                _ => unreachable!(),
            })
            .collect()
    }

    #[test]
    fn old_ips_and_hosts_unless_served() {
        let got = scan(
            "config.php",
            "<?php\n$a = '10.20.0.7';\n$b = '10.20.9.9';\n$c = '192.168.1.1';\n\
             $d = 'sql7.dc1.example';\n$e = 'sql9.DC1.example';\n$f = 'x.dc1.example.com';\n\
             $g = '[2001:db8:20::5]:3306';\n$h = 'Db::query'; $t = '12:30:45';\n",
        );
        assert_eq!(
            got,
            vec![
                ("net.old_ip".into(), 3, "10.20.9.9".into()),
                ("net.old_host".into(), 6, "sql9.dc1.example".into()),
                ("net.old_ip".into(), 8, "2001:db8:20::5".into()),
            ]
        );
    }

    #[test]
    fn foreign_paths_sockets_and_removed_php() {
        let got = scan(
            "lib.php",
            "<?php\nrequire '/homez.3/alice/www/a.php';\nrequire '/homez.3/alicia/x.php';\n\
             $u = '/homez.9/bob/up';\n$s = ini_get('mysqli.default_socket') ?: '/var/run/mysqld/mysqld.sock';\n\
             // mysql_connect() in a comment\n$l = mysql_connect($h);\n$x = $o->mysql_query();\n\
             $p = preg_split('/,/', $s); $q = split(',', $s);\nwhile (list($k, $v) = each($arr)) {}\n\
             $j = '<# _.each( data, function() {} ) #>';\n$f = create_function('$a', 'return 1;');\n",
        );
        let rules: Vec<(&str, u64)> = got.iter().map(|(r, l, _)| (r.as_str(), *l)).collect();
        assert_eq!(
            rules,
            vec![
                ("path.foreign", 3),
                ("path.foreign", 4),
                ("db.socket", 5),
                ("php.mysql_ext", 7),
                ("php.ereg", 9),
                ("php.each", 10),
                ("php.create_function", 12),
            ],
            "{got:?}"
        );
    }

    #[test]
    fn guarded_driver_files_are_waived() {
        let got = scan(
            "db.php",
            "<?php\nif (function_exists('mysqli_connect')) { $m = true; }\n$c = mysql_connect($h);\n",
        );
        assert!(got.is_empty(), "{got:?}");
    }

    #[test]
    fn htaccess_directives() {
        let got = scan(
            ".htaccess",
            "# Deny from all\nRewriteEngine On\nRewriteRule . /index.php [L]\n\
             AuthType Basic\nAuthUserFile /homez.3/alice/.htpasswd\nphp_value upload_max_filesize 20M\n\
             AddHandler application/x-httpd-php .html\n  Deny from all\n",
        );
        let rules: Vec<(&str, u64)> = got.iter().map(|(r, l, _)| (r.as_str(), *l)).collect();
        assert_eq!(
            rules,
            vec![
                ("htaccess.rewrite", 3),
                ("htaccess.auth", 4),
                ("htaccess.auth", 5),
                ("htaccess.php_value", 6),
                ("htaccess.php_handler", 7),
                ("htaccess.access", 8),
            ],
            "{got:?}"
        );
    }

    #[test]
    fn path_within_is_by_component() {
        assert!(within("/homez.1/a/x", "/homez.1/a"));
        assert!(within("/homez.1/a", "/homez.1/a/"));
        assert!(!within("/homez.1/ab", "/homez.1/a"));
    }
}
