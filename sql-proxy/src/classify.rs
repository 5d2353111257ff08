//! Statement classification: is it a write (refused in `read_only`), and does it change session
//! state the proxy must track (SET / USE). A cheap look at the first keyword decides the common
//! cases; sqlparser is consulted only when that look is not enough, and a statement sqlparser
//! cannot parse counts as a write.

use sqlparser::ast::{ContextModifier, Query, SetExpr, Statement};
use sqlparser::dialect::MySqlDialect;
use sqlparser::parser::Parser;

/// The first keyword of a statement, upper-cased, after whitespace, comments and parentheses.
/// `None` when the text starts with an executable comment (`/*!`) or holds no word.
pub fn first_keyword(sql: &[u8]) -> Option<String> {
    let mut i = 0;
    while i < sql.len() {
        match sql[i] {
            b' ' | b'\t' | b'\r' | b'\n' | b'(' => i += 1,
            b'#' => i = skip_line(sql, i),
            b'-' if sql.get(i + 1) == Some(&b'-') => i = skip_line(sql, i),
            b'/' if sql.get(i + 1) == Some(&b'*') => {
                if sql.get(i + 2) == Some(&b'!') {
                    return None;
                }
                let end = sql[i + 2..].windows(2).position(|w| w == b"*/")?;
                i += 2 + end + 2;
            }
            _ => break,
        }
    }
    let word: Vec<u8> = sql[i..]
        .iter()
        .take_while(|b| b.is_ascii_alphabetic() || **b == b'_')
        .take(32)
        .copied()
        .collect();
    if word.is_empty() {
        return None;
    }
    Some(String::from_utf8_lossy(&word).to_ascii_uppercase())
}

fn skip_line(sql: &[u8], i: usize) -> usize {
    sql[i..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(sql.len(), |p| i + p + 1)
}

fn contains_word_ci(sql: &[u8], word: &[u8]) -> bool {
    sql.windows(word.len()).enumerate().any(|(i, w)| {
        w.eq_ignore_ascii_case(word)
            && (i == 0 || !sql[i - 1].is_ascii_alphanumeric())
            && sql
                .get(i + word.len())
                .is_none_or(|b| !b.is_ascii_alphanumeric() && *b != b'_')
    })
}

/// Whether more than one statement may be present (a `;` not at the very end).
fn maybe_multi(sql: &[u8]) -> bool {
    let trimmed = sql
        .iter()
        .rposition(|b| !b" \t\r\n;".contains(b))
        .map_or(&sql[..0], |p| &sql[..=p]);
    trimmed.contains(&b';')
}

/// Whether `read_only` mode must refuse this statement.
pub fn is_write(sql: &[u8]) -> bool {
    if let Some(kw) = first_keyword(sql) {
        let multi = maybe_multi(sql);
        match kw.as_str() {
            "SELECT" if !multi && !contains_word_ci(sql, b"INTO") => return false,
            "SHOW" | "DESCRIBE" | "DESC" | "HELP" | "BEGIN" | "COMMIT" | "ROLLBACK" if !multi => {
                return false
            }
            "INSERT" | "UPDATE" | "DELETE" | "REPLACE" | "CREATE" | "DROP" | "ALTER"
            | "TRUNCATE" | "RENAME" | "GRANT" | "REVOKE" | "LOAD" | "CALL" | "LOCK" | "HANDLER"
            | "OPTIMIZE" | "REPAIR" | "FLUSH" | "KILL" | "INSTALL" | "UNINSTALL" | "PURGE"
            | "RESET" | "CHANGE" | "XA" => return true,
            _ => {}
        }
    }
    let Ok(stmts) = Parser::parse_sql(&MySqlDialect {}, &String::from_utf8_lossy(sql)) else {
        return true;
    };
    stmts.is_empty() || stmts.iter().any(statement_writes)
}

fn statement_writes(s: &Statement) -> bool {
    match s {
        Statement::Query(q) => query_writes(q),
        Statement::Explain { statement, .. } => statement_writes(statement),
        Statement::Set(set) => set_writes(set),
        Statement::ExplainTable { .. }
        | Statement::ShowFunctions { .. }
        | Statement::ShowVariable { .. }
        | Statement::ShowStatus { .. }
        | Statement::ShowVariables { .. }
        | Statement::ShowCreate { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowDatabases { .. }
        | Statement::ShowSchemas { .. }
        | Statement::ShowCharset(_)
        | Statement::ShowObjects(_)
        | Statement::ShowTables { .. }
        | Statement::ShowViews { .. }
        | Statement::ShowCollation { .. }
        | Statement::Use(_)
        | Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::Savepoint { .. }
        | Statement::ReleaseSavepoint { .. } => false,
        _ => true,
    }
}

fn set_writes(set: &sqlparser::ast::Set) -> bool {
    use sqlparser::ast::Set;
    match set {
        Set::SingleAssignment { scope, .. } => *scope == Some(ContextModifier::Global),
        Set::MultipleAssignments { assignments } => assignments
            .iter()
            .any(|a| a.scope == Some(ContextModifier::Global) || global_name(&a.name.to_string())),
        Set::SetNames { .. } | Set::SetNamesDefault {} | Set::SetTimeZone { .. } => false,
        Set::SetTransaction { .. } => false,
        _ => true,
    }
}

fn global_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.starts_with("@@global.") || n == "password"
}

fn query_writes(q: &Query) -> bool {
    set_expr_writes(&q.body)
}

fn set_expr_writes(e: &SetExpr) -> bool {
    match e {
        SetExpr::Select(s) => s.into.is_some(),
        SetExpr::Query(q) => query_writes(q),
        SetExpr::SetOperation { left, right, .. } => {
            set_expr_writes(left) || set_expr_writes(right)
        }
        SetExpr::Values(_) | SetExpr::Table(_) => false,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_keyword_skips_comments() {
        assert_eq!(
            first_keyword(b"  /* hi */ -- x\n select 1").as_deref(),
            Some("SELECT")
        );
        assert_eq!(first_keyword(b"# c\nUSE db").as_deref(), Some("USE"));
        assert_eq!(first_keyword(b"(SELECT 1)").as_deref(), Some("SELECT"));
        assert_eq!(first_keyword(b"/*!40101 SET x=1 */"), None);
        assert_eq!(first_keyword(b"/* unterminated"), None);
        assert_eq!(first_keyword(b""), None);
    }

    #[test]
    fn reads_pass_and_writes_are_caught() {
        for read in [
            "SELECT * FROM t WHERE id = 1",
            "select 'into' as x",
            "SHOW TABLES",
            "BEGIN",
            "SET NAMES utf8mb4",
            "SET @a = 1, sql_mode = ''",
            "SELECT 1; SELECT 2",
            "WITH c AS (SELECT 1) SELECT * FROM c",
            "USE db1",
            "EXPLAIN SELECT 1",
        ] {
            assert!(!is_write(read.as_bytes()), "{read} classified as a write");
        }
        for write in [
            "INSERT INTO t VALUES (1)",
            "  update t set a = 1",
            "SELECT 1 INTO @x",
            "SELECT * FROM t INTO OUTFILE '/tmp/x'",
            "SELECT 1; DELETE FROM t",
            "SET GLOBAL max_connections = 10",
            "/*!40000 ALTER TABLE t DISABLE KEYS */",
            "THIS IS NOT SQL",
            "",
            "CREATE TABLE x (a int)",
        ] {
            assert!(is_write(write.as_bytes()), "{write} classified as a read");
        }
    }
}
