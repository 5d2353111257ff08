//! Statement classification: is it a write (refused in `read_only`). The text is read with
//! the proxy's lexer (`lex.rs`), so executable comments (`/*! … */`, `/*M! … */`) count as
//! the code they are, statements are split at real `;` only, and both readings of backslashes
//! in strings are checked. Each statement's first keyword decides the common cases; sqlparser
//! (on the statement's normalized text) the rest; a statement it cannot parse counts as a
//! write. Turning the session's transaction access mode back to read-write (`SET SESSION
//! TRANSACTION READ WRITE`, `tx_read_only`, `START TRANSACTION READ WRITE`) is a write: the
//! proxy also makes the backend session read-only while a database is `read_only` (see
//! `commands.rs`), and that must not be undone by the client.

use sqlparser::ast::{ContextModifier, Query, SetExpr, Statement};
use sqlparser::dialect::MySqlDialect;
use sqlparser::parser::Parser;

use crate::lex::{self, Token};

/// The first keyword of a statement, upper-cased, after whitespace, comments and parentheses
/// (the content of an executable comment is a keyword like any other).
pub fn first_keyword(sql: &[u8]) -> Option<String> {
    let t = lex::Lexer::new(sql).find(|t| !t.is_punct(b'('))?;
    if t.kind != lex::Kind::Word {
        return None;
    }
    let w = t.text(sql);
    Some(String::from_utf8_lossy(&w[..w.len().min(32)]).to_ascii_uppercase())
}

/// Whether `read_only` mode must refuse this statement text (one or more statements).
pub fn is_write(sql: &[u8]) -> bool {
    let (stmts, saw_backslash) = lex::statements(sql, true);
    if stmts.is_empty() || stmts.iter().any(|t| statement_is_write(sql, t)) {
        return true;
    }
    saw_backslash && {
        let (stmts, _) = lex::statements(sql, false);
        stmts.is_empty() || stmts.iter().any(|t| statement_is_write(sql, t))
    }
}

fn statement_is_write(sql: &[u8], toks: &[Token]) -> bool {
    let body: &[Token] = {
        let skip = toks.iter().take_while(|t| t.is_punct(b'(')).count();
        &toks[skip..]
    };
    let Some(first) = body.first().filter(|t| t.kind == lex::Kind::Word) else {
        return true;
    };
    let has = |w: &str| body.iter().any(|t| t.is_word(sql, w));
    // tx_read_only / transaction_read_only, as a word, `@@x`, `@@session.x` or `x`.
    let access_mode_var = body.iter().any(|t| {
        let n = t
            .ident(sql)
            .unwrap_or_else(|| String::from_utf8_lossy(t.text(sql)).into_owned())
            .to_ascii_lowercase();
        n.ends_with("tx_read_only") || n.ends_with("transaction_read_only")
    });
    let kw = String::from_utf8_lossy(first.text(sql)).to_ascii_uppercase();
    match kw.as_str() {
        "SELECT" => return has("INTO"),
        "SHOW" | "DESCRIBE" | "DESC" | "HELP" | "BEGIN" | "COMMIT" | "ROLLBACK" => return false,
        // START TRANSACTION READ WRITE overrides the session's read-only access mode.
        "START" => return has("WRITE"),
        "SET" if access_mode_var || has("WRITE") => return true,
        "INSERT" | "UPDATE" | "DELETE" | "REPLACE" | "CREATE" | "DROP" | "ALTER" | "TRUNCATE"
        | "RENAME" | "GRANT" | "REVOKE" | "LOAD" | "CALL" | "LOCK" | "HANDLER" | "OPTIMIZE"
        | "REPAIR" | "FLUSH" | "KILL" | "INSTALL" | "UNINSTALL" | "PURGE" | "RESET" | "CHANGE"
        | "XA" | "DO" | "PREPARE" | "EXECUTE" => return true,
        _ => {}
    }
    let text = lex::normalized(sql, toks);
    let Ok(stmts) = Parser::parse_sql(&MySqlDialect {}, &text) else {
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
        assert_eq!(
            first_keyword(b"/*!40101 SET x=1 */").as_deref(),
            Some("SET")
        );
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
            "SELECT 1 /* ; DELETE FROM t */",
            "SELECT '; DELETE FROM t'",
            "START TRANSACTION READ ONLY",
            "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
            "(SELECT 1) UNION (SELECT 2)",
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
            // Executable comments are code (issue 18, finding 7).
            "/*M! INSERT INTO t VALUES (1) */",
            "/*M!100100 DELETE FROM t */ SELECT 1",
            "SELECT 1 /*!50001 ; DELETE FROM t */",
            "SELECT 1 FROM DUAL /*M! ; UPDATE t SET a = 1 */",
            "SELECT 1 /*! INTO OUTFILE '/tmp/x' */",
            // A string that ends at the backslash under NO_BACKSLASH_ESCAPES.
            "SELECT '\\'; DELETE FROM t; -- '",
            // Undoing the backend's read-only transaction mode.
            "SET SESSION TRANSACTION READ WRITE",
            "SET @@session.tx_read_only = 0",
            "SET transaction_read_only = OFF",
            "START TRANSACTION READ WRITE",
            "DO fw(1)",
            "PREPARE s FROM 'SELECT 1'",
            "EXECUTE s",
        ] {
            assert!(is_write(write.as_bytes()), "{write} classified as a read");
        }
    }
}
