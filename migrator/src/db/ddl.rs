//! Secondary indexes built after the rows are in: a table with a primary key is created on the
//! destination without its plain and unique secondary indexes (`KEY`, `UNIQUE KEY` lines of
//! `SHOW CREATE TABLE`), loaded in primary-key order, and then given all of them in ONE
//! `ALTER TABLE … ADD …` (InnoDB sorts each index and builds it page by page, instead of a
//! random B-tree insert per row and index during the load).
//!
//! FULLTEXT and SPATIAL indexes, tables without a primary key (InnoDB would pick a unique key
//! as the clustered index) and tables in a foreign-key relation keep their full DDL. If the
//! reduced DDL is refused (e.g. an AUTO_INCREMENT column whose only index is a secondary one),
//! the caller creates the table from the full DDL instead.

use crate::db::schema::{ctx, ident, Result, Side};
use mysql_async::prelude::*;
use mysql_async::Conn;

/// A `CREATE TABLE` statement without its deferrable secondary indexes, and those indexes as
/// `(name, clause)` pairs, e.g. ``("k_1", "KEY `k_1` (`k`)")``.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SplitDdl {
    pub create: String,
    pub indexes: Vec<(String, String)>,
}

/// The first backtick-quoted identifier of `s` (with ``` `` ``` unescaped).
fn first_ident(s: &str) -> Option<String> {
    let start = s.find('`')? + 1;
    let mut out = String::new();
    let mut chars = s[start..].chars().peekable();
    while let Some(c) = chars.next() {
        if c == '`' {
            if chars.peek() == Some(&'`') {
                chars.next();
                out.push('`');
            } else {
                return Some(out);
            }
        } else {
            out.push(c);
        }
    }
    None
}

/// Splits `SHOW CREATE TABLE` output; `None` when nothing can be deferred or the statement
/// does not have the one-element-per-line layout `SHOW CREATE TABLE` prints.
pub fn split_secondary_indexes(create: &str) -> Option<SplitDdl> {
    let lines: Vec<&str> = create.lines().collect();
    if lines.len() < 3 || !lines[0].trim_end().ends_with('(') {
        return None;
    }
    let close = lines.iter().skip(1).position(|l| l.starts_with(')'))? + 1;
    let elements = &lines[1..close];
    if elements.iter().any(|l| !l.starts_with("  ")) {
        return None;
    }
    if !elements.iter().any(|l| l.starts_with("  PRIMARY KEY "))
        || elements.iter().any(|l| l.contains("FOREIGN KEY"))
    {
        return None;
    }
    let mut kept = Vec::new();
    let mut indexes = Vec::new();
    for l in elements {
        let e = l.trim().trim_end_matches(',');
        if e.starts_with("KEY `") || e.starts_with("UNIQUE KEY `") {
            indexes.push((first_ident(e)?, e.to_string()));
        } else {
            kept.push(format!("  {e}"));
        }
    }
    if indexes.is_empty() {
        return None;
    }
    let mut out = vec![lines[0].to_string(), kept.join(",\n")];
    out.extend(lines[close..].iter().map(|l| l.to_string()));
    Some(SplitDdl {
        create: out.join("\n"),
        indexes,
    })
}

/// Creates the table afresh for a full copy, as the source defines it now (an earlier copy's
/// table is dropped first: its definition may be out of date), without its deferred indexes
/// when that applies. Returns the indexes to add after the load.
pub async fn recreate(
    dst: &mut Conn,
    db: &str,
    name: &str,
    create: &str,
    split: Option<&SplitDdl>,
    exists: bool,
) -> Result<Vec<(String, String)>> {
    let d = Side::Destination;
    let q = ident(db) + "." + &ident(name);
    if let Some(split) = split {
        dst.query_drop(format!("DROP TABLE IF EXISTS {q}"))
            .await
            .map_err(ctx(d, || format!("dropping `{name}` for a fresh copy")))?;
        if dst.query_drop(split.create.as_str()).await.is_ok() {
            return Ok(split.indexes.clone());
        }
        // Refused (e.g. an AUTO_INCREMENT column indexed only by a secondary key): full DDL.
    }
    if exists && split.is_none() {
        // Foreign key checks are off in the copy's sessions: a parent table drops too.
        dst.query_drop(format!("DROP TABLE IF EXISTS {q}"))
            .await
            .map_err(ctx(d, || format!("dropping `{name}` for a fresh copy")))?;
    }
    dst.query_drop(create)
        .await
        .map_err(ctx(d, || format!("creating table `{name}`")))?;
    Ok(Vec::new())
}

/// Adds, in one `ALTER TABLE`, the deferred indexes the destination table does not have yet.
pub async fn add_missing_indexes(
    dst: &mut Conn,
    db: &str,
    name: &str,
    split: Option<&SplitDdl>,
) -> Result<()> {
    let Some(split) = split else {
        return Ok(());
    };
    let d = Side::Destination;
    let have: Vec<String> = dst
        .exec(
            "SELECT DISTINCT INDEX_NAME FROM information_schema.STATISTICS \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
            (db, name),
        )
        .await
        .map_err(ctx(d, || format!("listing indexes of `{name}`")))?;
    let add: Vec<String> = split
        .indexes
        .iter()
        .filter(|(n, _)| !have.contains(n))
        .map(|(_, clause)| format!("ADD {clause}"))
        .collect();
    if add.is_empty() {
        return Ok(());
    }
    dst.query_drop(format!(
        "ALTER TABLE {}.{} {}",
        ident(db),
        ident(name),
        add.join(", ")
    ))
    .await
    .map_err(ctx(d, || {
        format!("adding the secondary indexes of `{name}`")
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SBTEST: &str = "CREATE TABLE `sbtest1` (\n  `id` int(11) NOT NULL AUTO_INCREMENT,\n  \
        `k` int(11) NOT NULL DEFAULT 0,\n  `c` char(120) NOT NULL DEFAULT '',\n  PRIMARY KEY \
        (`id`),\n  UNIQUE KEY `u``q` (`c`),\n  KEY `k_1` (`k`) COMMENT 'a, b'\n) ENGINE=InnoDB \
        AUTO_INCREMENT=5 DEFAULT CHARSET=latin1";

    #[test]
    fn secondary_indexes_are_split_off_and_the_rest_kept() {
        let s = split_secondary_indexes(SBTEST).unwrap();
        assert_eq!(
            s.create,
            "CREATE TABLE `sbtest1` (\n  `id` int(11) NOT NULL AUTO_INCREMENT,\n  `k` int(11) \
             NOT NULL DEFAULT 0,\n  `c` char(120) NOT NULL DEFAULT '',\n  PRIMARY KEY (`id`)\n\
             ) ENGINE=InnoDB AUTO_INCREMENT=5 DEFAULT CHARSET=latin1"
        );
        assert_eq!(
            s.indexes,
            vec![
                ("u`q".to_string(), "UNIQUE KEY `u``q` (`c`)".to_string()),
                (
                    "k_1".to_string(),
                    "KEY `k_1` (`k`) COMMENT 'a, b'".to_string()
                ),
            ]
        );
    }

    #[test]
    fn tables_without_primary_key_foreign_keys_or_indexes_are_left_alone() {
        let nopk =
            "CREATE TABLE `t` (\n  `a` int(11) NOT NULL,\n  UNIQUE KEY `a` (`a`)\n) ENGINE=InnoDB";
        assert_eq!(split_secondary_indexes(nopk), None);
        let fk = "CREATE TABLE `t` (\n  `id` int(11) NOT NULL,\n  `p` int(11),\n  PRIMARY KEY \
                  (`id`),\n  KEY `p` (`p`),\n  CONSTRAINT `f` FOREIGN KEY (`p`) REFERENCES `q` \
                  (`id`)\n) ENGINE=InnoDB";
        assert_eq!(split_secondary_indexes(fk), None);
        let plain = "CREATE TABLE `t` (\n  `id` int(11) NOT NULL,\n  FULLTEXT KEY `f` (`id`),\n  \
                     PRIMARY KEY (`id`)\n) ENGINE=InnoDB";
        assert_eq!(split_secondary_indexes(plain), None);
        assert_eq!(split_secondary_indexes("CREATE TABLE t (a int)"), None);
    }
}
