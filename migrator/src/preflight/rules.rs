//! The rule table: data, not code (`rules.toml` beside this file, compiled in; its header
//! documents the fields). [`RuleTable::builtin`] reads it; [`RuleTable::parse`] reads another
//! (tests, an operator's own table). Rules removed in a PHP version newer than the
//! destination's are dropped by [`RuleTable::for_php`].

use super::config::PhpVersion;
use super::{PreflightError, Result, Severity};
use regex::bytes::Regex;
use serde::Deserialize;

/// The compiled-in table.
pub const BUILTIN: &str = include_str!("rules.toml");
const BUILTIN_NAME: &str = "migrator/src/preflight/rules.toml";

/// Which files a rule reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileClass {
    /// PHP sources (`.php`, `.phtml`, `.inc` ...).
    Php,
    /// `.htaccess` files.
    Htaccess,
    /// Every text file read (rules of this class also run on PHP and `.htaccess` files).
    Any,
}

impl FileClass {
    /// The class of a file by its name.
    pub fn of(name: &str) -> FileClass {
        if name == ".htaccess" {
            return FileClass::Htaccess;
        }
        let ext = name.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
        const PHP: &[&str] = &[
            "php", "php3", "php4", "php5", "php7", "php8", "phtml", "inc", "module",
        ];
        if PHP.iter().any(|p| ext.eq_ignore_ascii_case(p)) {
            FileClass::Php
        } else {
            FileClass::Any
        }
    }

    /// Line prefixes (after blanks) that make a line a comment in this class.
    pub fn comment_prefixes(self) -> &'static [&'static [u8]] {
        match self {
            FileClass::Php => &[b"//", b"#", b"*", b"/*"],
            FileClass::Htaccess => &[b"#"],
            FileClass::Any => &[],
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TableFile {
    version: u32,
    #[serde(default)]
    rule: Vec<RuleFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    id: String,
    files: FileClass,
    pattern: String,
    #[serde(default)]
    php: Option<String>,
    severity: Severity,
    message: String,
    fix: String,
    #[serde(default)]
    unless_file: Option<String>,
}

/// One compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub id: String,
    pub files: FileClass,
    /// The pattern as written (the combined search and the benchmark's `rg` use it).
    pub pattern: String,
    pub regex: Regex,
    /// The PHP version that removed the construct, if the rule is about one.
    pub php: Option<PhpVersion>,
    pub severity: Severity,
    pub message: String,
    pub fix: String,
    pub unless_file: Option<Regex>,
}

/// The rules of one table.
#[derive(Debug, Clone)]
pub struct RuleTable {
    pub version: u32,
    pub rules: Vec<Rule>,
}

impl RuleTable {
    /// The compiled-in table.
    pub fn builtin() -> Result<RuleTable> {
        Self::parse(BUILTIN, BUILTIN_NAME)
    }

    /// Reads a table; errors name the file, the rule and the field.
    pub fn parse(text: &str, file: &str) -> Result<RuleTable> {
        let t: TableFile = toml::from_str(text).map_err(|e| PreflightError::Config {
            file: file.to_string(),
            message: e.to_string(),
        })?;
        let bad = |rule: &str, field, message: String| PreflightError::Rule {
            file: file.to_string(),
            rule: rule.to_string(),
            field,
            message,
        };
        let mut rules = Vec::with_capacity(t.rule.len());
        for r in t.rule {
            if rules.iter().any(|x: &Rule| x.id == r.id) {
                return Err(bad(&r.id, "id", "appears twice".into()));
            }
            let regex = Regex::new(&r.pattern).map_err(|e| bad(&r.id, "pattern", e.to_string()))?;
            let php = match &r.php {
                None => None,
                Some(v) => Some(
                    PhpVersion::parse(v)
                        .ok_or_else(|| bad(&r.id, "php", format!("{v:?} is not MAJOR.MINOR")))?,
                ),
            };
            let unless_file = match &r.unless_file {
                None => None,
                Some(p) => {
                    Some(Regex::new(p).map_err(|e| bad(&r.id, "unless_file", e.to_string()))?)
                }
            };
            rules.push(Rule {
                id: r.id,
                files: r.files,
                pattern: r.pattern,
                regex,
                php,
                severity: r.severity,
                message: r.message,
                fix: r.fix,
                unless_file,
            });
        }
        Ok(RuleTable {
            version: t.version,
            rules,
        })
    }

    /// The rules that apply on a destination running PHP `dest`.
    pub fn for_php(mut self, dest: PhpVersion) -> RuleTable {
        self.rules.retain(|r| r.php.is_none_or(|v| v <= dest));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_table_compiles_and_is_versioned() {
        let t = RuleTable::builtin().unwrap();
        assert_eq!(t.version, 1);
        assert!(t.rules.iter().any(|r| r.id == "php.mysql_ext"));
        let on_56 = t.clone().for_php(PhpVersion(5, 6));
        assert!(!on_56.rules.iter().any(|r| r.id == "php.mysql_ext"));
        assert!(on_56.rules.iter().any(|r| r.id == "db.socket"));
        let on_74 = t.for_php(PhpVersion(7, 4));
        assert!(on_74.rules.iter().any(|r| r.id == "php.mysql_ext"));
        assert!(!on_74.rules.iter().any(|r| r.id == "php.each"));
    }

    #[test]
    fn bad_rule_names_file_rule_and_field() {
        let text = "version = 1\n[[rule]]\nid = \"x\"\nfiles = \"php\"\npattern = \"(\"\n\
                    severity = \"warn\"\nmessage = \"m\"\nfix = \"f\"\n";
        let e = RuleTable::parse(text, "my.toml").unwrap_err().to_string();
        assert!(
            e.contains("my.toml") && e.contains("rule x") && e.contains("`pattern`"),
            "{e}"
        );
        let e = RuleTable::parse("version = 1\n[[rule]]\nid = 3\n", "my.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 3"), "{e}");
    }

    #[test]
    fn file_classes() {
        assert_eq!(FileClass::of("index.php"), FileClass::Php);
        assert_eq!(FileClass::of("lib.INC"), FileClass::Php);
        assert_eq!(FileClass::of(".htaccess"), FileClass::Htaccess);
        assert_eq!(FileClass::of("app.js"), FileClass::Any);
        assert_eq!(FileClass::of("Makefile"), FileClass::Any);
    }
}
