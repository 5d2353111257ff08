//! What a COM_QUERY (or a prepared statement's text) acts on, read from its tokens (`lex.rs`)
//! before it runs: the databases it selects (`USE`) or names (`db.table`, `db.func()`,
//! `CREATE/DROP/ALTER DATABASE db`, `SHOW … FROM db`), whether the proxy cannot see what it
//! touches (`CALL`, SQL-level `EXECUTE`, `PREPARE … FROM @var`), whether it calls functions
//! (a stored function may write or change the session's access mode), and the session state it
//! pins to its backend (temporary tables, `GET_LOCK` locks, SQL-level prepared statements,
//! `LOCK TABLES`).
//!
//! One pass, no per-token allocation beyond a statement's first few tokens, so a 16 MiB
//! INSERT costs a linear scan. Both readings of backslashes are taken when the text has one
//! (see `lex.rs`) and merged: a name seen by either counts.

use std::collections::BTreeSet;

use crate::lex::{Kind, Lexer, Token};

/// A change a statement makes to the state pinned to its backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pin {
    TempTable(String),
    /// `DROP [TEMPORARY] TABLE a, b`: temporary tables of these names are gone.
    DropTables(Vec<String>),
    /// `GET_LOCK(name, …)`; `None`: a name the proxy cannot read (an expression).
    Lock(Option<String>),
    Unlock(String),
    UnlockAll,
    Prepare(String),
    Deallocate(String),
    LockTables,
    UnlockTables,
}

/// What one COM_QUERY acts on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// Statements (non-empty), all readings merged (the largest count).
    pub statements: usize,
    /// `USE db` targets in order.
    pub uses: Vec<String>,
    /// A statement comes before the first `USE` (it acts on the database current before).
    pub before_use: bool,
    /// Certainly databases: `CREATE/DROP/ALTER DATABASE|SCHEMA x`.
    pub named: BTreeSet<String>,
    /// `x` of `x.y` / `x.y.z` (a database, or a table or alias qualifying a column).
    pub qualifiers: BTreeSet<String>,
    /// `SHOW … FROM|IN x`: a database, or a table (`SHOW COLUMNS FROM t`).
    pub maybe: BTreeSet<String>,
    /// The proxy cannot see which databases it touches.
    pub opaque: bool,
    /// Some word is followed by `(`: a function call, maybe a stored function.
    pub calls: bool,
    /// A `USE` inside `PREPARE … FROM '…'` (refused: the proxy would not see it run).
    pub prepared_use: bool,
    pub pins: Vec<Pin>,
}

/// How many first tokens of a statement are kept (enough for `CREATE OR REPLACE TEMPORARY
/// TABLE IF NOT EXISTS db.name`).
const HEAD: usize = 12;

/// Words followed by `(` that are not function calls (saves a needless strict path).
const NOT_CALLS: &[&str] = &[
    "IN", "VALUES", "VALUE", "EXISTS", "AS", "FROM", "JOIN", "ON", "USING", "AND", "OR", "NOT",
    "WHERE", "SELECT", "UNION", "ALL", "ANY", "SOME", "WITH", "OVER", "BY", "INTO", "TABLE",
];

impl Scope {
    /// The scope of a COM_QUERY text (or a prepared statement's).
    pub fn of(sql: &[u8]) -> Scope {
        let (mut s, saw_backslash) = Self::read(sql, true, 0);
        if saw_backslash {
            let (other, _) = Self::read(sql, false, 0);
            s.merge(other);
        }
        s
    }

    fn merge(&mut self, o: Scope) {
        self.statements = self.statements.max(o.statements);
        for u in o.uses {
            if !self.uses.contains(&u) {
                self.uses.push(u);
            }
        }
        self.before_use |= o.before_use;
        self.named.extend(o.named);
        self.qualifiers.extend(o.qualifiers);
        self.maybe.extend(o.maybe);
        self.opaque |= o.opaque;
        self.calls |= o.calls;
        self.prepared_use |= o.prepared_use;
    }

    fn read(sql: &[u8], backslash: bool, depth: u8) -> (Scope, bool) {
        let mut lx = if backslash {
            Lexer::new(sql)
        } else {
            Lexer::without_backslash(sql)
        };
        let mut s = Scope::default();
        // A statement's first tokens, without allocating.
        let mut head = [Token {
            kind: Kind::Punct(0),
            start: 0,
            end: 0,
        }; HEAD];
        let mut head_len = 0;
        // Names of a DROP TABLE statement (bounded; missing ones only keep a pin longer).
        let mut dropped: Vec<String> = Vec::new();
        let mut last: [Option<Token>; 3] = [None; 3];
        let mut in_statement = false;
        let end_statement = |s: &mut Scope, head: &[Token], dropped: &mut Vec<String>| {
            s.statement(sql, head, std::mem::take(dropped), backslash, depth);
        };
        for t in lx.by_ref() {
            if t.is_punct(b';') {
                if in_statement {
                    end_statement(&mut s, &head[..head_len], &mut dropped);
                }
                in_statement = false;
                head_len = 0;
                last = [None; 3];
                continue;
            }
            in_statement = true;
            if head_len < HEAD {
                head[head_len] = t;
                head_len += 1;
            } else if head[0].is_word(sql, "DROP") && dropped.len() < 4096 {
                if let Some(n) = t
                    .ident(sql)
                    .filter(|_| t.kind != Kind::Word || !t.is_word(sql, "IF"))
                {
                    dropped.push(n.to_ascii_lowercase());
                }
            }
            s.token(sql, t, &last);
            last = [Some(t), last[0], last[1]];
        }
        if in_statement {
            end_statement(&mut s, &head[..head_len], &mut dropped);
        }
        (s, lx.saw_backslash())
    }

    /// What one token says, given the three before it in its statement (latest first).
    fn token(&mut self, sql: &[u8], t: Token, last: &[Option<Token>; 3]) {
        let is_ident = |t: &Option<Token>| {
            t.is_some_and(|t| matches!(t.kind, Kind::Word | Kind::Backtick | Kind::DoubleQuoted))
        };
        // x . y  (x not itself after a dot): x may be a database.
        if last[0].is_some_and(|p| p.is_punct(b'.'))
            && is_ident(&last[1])
            && !last[2].is_some_and(|p| p.is_punct(b'.'))
            && (matches!(t.kind, Kind::Word | Kind::Backtick | Kind::DoubleQuoted)
                || t.is_punct(b'*'))
        {
            if let Some(q) = last[1].and_then(|q| q.ident(sql)) {
                self.qualifiers.insert(q);
            }
        }
        if t.is_punct(b'(') && is_ident(&last[0]) {
            let f = last[0].expect("checked");
            if !(f.kind == Kind::Word
                && NOT_CALLS
                    .iter()
                    .any(|k| f.text(sql).eq_ignore_ascii_case(k.as_bytes())))
            {
                self.calls = true;
            }
            if f.is_word(sql, "RELEASE_ALL_LOCKS") {
                self.pins.push(Pin::UnlockAll);
            }
        }
        // GET_LOCK ( 'name'  /  RELEASE_LOCK ( 'name'
        if last[0].is_some_and(|p| p.is_punct(b'(')) {
            if let Some(f) = last[1] {
                let name = || t.string(sql, true).map(|n| n.to_ascii_lowercase());
                if f.is_word(sql, "GET_LOCK") {
                    let n = if t.kind == Kind::Str { name() } else { None };
                    self.pins.push(Pin::Lock(n));
                } else if f.is_word(sql, "RELEASE_LOCK") && t.kind == Kind::Str {
                    if let Some(n) = name() {
                        self.pins.push(Pin::Unlock(n));
                    }
                }
            }
        }
    }

    /// What a whole statement says, from its first tokens.
    fn statement(
        &mut self,
        sql: &[u8],
        head: &[Token],
        dropped: Vec<String>,
        backslash: bool,
        depth: u8,
    ) {
        self.statements += 1;
        let Some(first) = head.first() else { return };
        let kw = |i: usize, k: &str| head.get(i).is_some_and(|t| t.is_word(sql, k));
        let ident = |i: usize| head.get(i).and_then(|t| t.ident(sql));
        if kw(0, "USE") {
            if let Some(db) = ident(1) {
                self.uses.push(db);
            }
            return;
        }
        if self.uses.is_empty() {
            self.before_use = true;
        }
        // Upper-cased without allocating (keywords of interest are short ASCII words).
        let mut buf = [0u8; 12];
        let text = first.text(sql);
        let word = if text.len() <= buf.len() {
            buf[..text.len()].copy_from_slice(text);
            buf[..text.len()].make_ascii_uppercase();
            std::str::from_utf8(&buf[..text.len()]).unwrap_or("")
        } else {
            ""
        };
        match word {
            "CALL" | "EXECUTE" => self.opaque = true,
            "CREATE" | "DROP" | "ALTER" => {
                // CREATE/DROP/ALTER DATABASE|SCHEMA [IF [NOT] EXISTS] name
                if kw(1, "DATABASE") || kw(1, "SCHEMA") {
                    let mut i = 2;
                    while kw(i, "IF") || kw(i, "NOT") || kw(i, "EXISTS") {
                        i += 1;
                    }
                    if let Some(db) = ident(i) {
                        self.named.insert(db);
                    }
                } else if word == "CREATE" {
                    // CREATE [OR REPLACE] TEMPORARY TABLE [IF NOT EXISTS] name
                    let mut i = 1;
                    if kw(1, "OR") && kw(2, "REPLACE") {
                        i = 3;
                    }
                    if kw(i, "TEMPORARY") && kw(i + 1, "TABLE") {
                        i += 2;
                        while kw(i, "IF") || kw(i, "NOT") || kw(i, "EXISTS") {
                            i += 1;
                        }
                        // db.name: the table is known by its last part.
                        let mut name = ident(i);
                        if head.get(i + 1).is_some_and(|t| t.is_punct(b'.')) {
                            name = ident(i + 2);
                        }
                        if let Some(n) = name {
                            self.pins.push(Pin::TempTable(n.to_ascii_lowercase()));
                        }
                    }
                } else if word == "DROP" {
                    if kw(1, "PREPARE") {
                        if let Some(n) = ident(2) {
                            self.pins.push(Pin::Deallocate(n.to_ascii_lowercase()));
                        }
                        return;
                    }
                    let mut i = 1;
                    if kw(i, "TEMPORARY") {
                        i += 1;
                    }
                    if kw(i, "TABLE") || kw(i, "TABLES") {
                        let mut names: Vec<String> = head[i + 1..]
                            .iter()
                            .filter(|t| !t.is_word(sql, "IF") && !t.is_word(sql, "EXISTS"))
                            .filter_map(|t| t.ident(sql))
                            .map(|n| n.to_ascii_lowercase())
                            .collect();
                        names.extend(dropped);
                        self.pins.push(Pin::DropTables(names));
                    }
                }
            }
            "DEALLOCATE" if kw(1, "PREPARE") => {
                if let Some(n) = ident(2) {
                    self.pins.push(Pin::Deallocate(n.to_ascii_lowercase()));
                }
            }
            "PREPARE" => {
                if let Some(n) = ident(1) {
                    self.pins.push(Pin::Prepare(n.to_ascii_lowercase()));
                }
                // PREPARE name FROM 'text': the text is read like a query; FROM @var: unseen.
                let text = head.get(3).filter(|_| kw(2, "FROM"));
                match text.and_then(|t| t.string(sql, backslash)) {
                    Some(inner) if depth == 0 => {
                        let (inner, _) = Scope::read(inner.as_bytes(), backslash, depth + 1);
                        self.prepared_use |= !inner.uses.is_empty();
                        self.named.extend(inner.named);
                        self.qualifiers.extend(inner.qualifiers);
                        self.maybe.extend(inner.maybe);
                        self.opaque |= inner.opaque;
                        self.calls |= inner.calls;
                    }
                    _ => self.opaque = true,
                }
            }
            "LOCK" if kw(1, "TABLE") || kw(1, "TABLES") => self.pins.push(Pin::LockTables),
            "UNLOCK" if kw(1, "TABLE") || kw(1, "TABLES") => self.pins.push(Pin::UnlockTables),
            "SHOW" => {
                for (i, t) in head.iter().enumerate() {
                    if t.is_word(sql, "FROM") || t.is_word(sql, "IN") {
                        if let Some(n) = ident(i + 1) {
                            self.maybe.insert(n);
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

/// The databases a statement names as the schema of a table or routine, as sqlparser reads
/// it; `None` when sqlparser cannot parse it (then every qualifier counts as a database).
pub fn schema_qualifiers(sql: &[u8]) -> Option<BTreeSet<String>> {
    use sqlparser::ast::{visit_expressions, visit_relations, Expr, ObjectName};
    use sqlparser::dialect::MySqlDialect;
    use sqlparser::parser::Parser;
    use std::ops::ControlFlow;

    let mut out = BTreeSet::new();
    for backslash in [true, false] {
        let (stmts, saw) = crate::lex::statements(sql, backslash);
        for toks in &stmts {
            let text = crate::lex::normalized(sql, toks);
            let parsed = Parser::parse_sql(&MySqlDialect {}, &text).ok()?;
            let first_of = |n: &ObjectName| {
                (n.0.len() >= 2)
                    .then(|| n.0[0].as_ident().map(|id| id.value.clone()))
                    .flatten()
            };
            let _ = visit_relations(&parsed, |n| {
                out.extend(first_of(n));
                ControlFlow::<()>::Continue(())
            });
            let _ = visit_expressions(&parsed, |e| {
                match e {
                    Expr::Function(f) => out.extend(first_of(&f.name)),
                    Expr::CompoundIdentifier(ids) if ids.len() >= 3 => {
                        out.insert(ids[0].value.clone());
                    }
                    _ => {}
                }
                ControlFlow::<()>::Continue(())
            });
        }
        if !saw {
            break;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn use_and_qualified_names_are_seen_in_every_spelling() {
        let s = Scope::of(b"USE `b`; INSERT INTO c.t VALUES (1); SELECT x.y.z FROM `d`.t");
        assert_eq!(s.uses, ["b"]);
        assert!(!s.before_use);
        assert_eq!(s.qualifiers, set(&["c", "d", "x"]));
        assert_eq!(s.statements, 3);
        let s = Scope::of(b"SELECT 1; /*M! use b */");
        assert_eq!(s.uses, ["b"]);
        assert!(s.before_use);
        let s = Scope::of(b"SELECT 'a.b', \"c\".`d`, 1.5, @@session.sql_mode, e . *");
        assert_eq!(s.qualifiers, set(&["c", "e"]));
        let s = Scope::of(b"DROP DATABASE IF EXISTS x; SHOW TABLES FROM y; CREATE SCHEMA z");
        assert_eq!(s.named, set(&["x", "z"]));
        assert_eq!(s.maybe, set(&["y"]));
        // Under NO_BACKSLASH_ESCAPES the INSERT is a statement of its own: both readings count.
        let s = Scope::of(br"SELECT '\'; INSERT INTO b.t VALUES (1); -- '");
        assert_eq!(s.qualifiers, set(&["b"]));
    }

    #[test]
    fn opaque_statements_and_calls() {
        assert!(Scope::of(b"CALL p()").opaque);
        assert!(Scope::of(b"EXECUTE s").opaque);
        assert!(Scope::of(b"PREPARE s FROM @q").opaque);
        let s = Scope::of(b"PREPARE s FROM 'INSERT INTO b.t VALUES (1)'");
        assert!(!s.opaque);
        assert_eq!(s.qualifiers, set(&["b"]));
        assert!(Scope::of(b"PREPARE s FROM 'USE b'").prepared_use);
        assert!(Scope::of(b"SELECT f(1)").calls);
        assert!(Scope::of(b"SELECT `f` (1)").calls);
        assert!(!Scope::of(b"SELECT a FROM t WHERE id IN (1, 2)").calls);
    }

    #[test]
    fn pinned_state_is_seen() {
        let s = Scope::of(
            b"CREATE TEMPORARY TABLE IF NOT EXISTS Tmp (a int); SELECT GET_LOCK('L1', 5), \
              GET_LOCK(@x, 1), RELEASE_LOCK('l2'); PREPARE s1 FROM 'SELECT 1'; \
              DEALLOCATE PREPARE s2; DROP TEMPORARY TABLE a, b; LOCK TABLES t WRITE",
        );
        assert_eq!(
            s.pins,
            vec![
                Pin::TempTable("tmp".into()),
                Pin::Lock(Some("l1".into())),
                Pin::Lock(None),
                Pin::Unlock("l2".into()),
                Pin::Prepare("s1".into()),
                Pin::Deallocate("s2".into()),
                Pin::DropTables(vec!["a".into(), "b".into()]),
                Pin::LockTables,
            ]
        );
        assert_eq!(
            Scope::of(b"SELECT RELEASE_ALL_LOCKS(); UNLOCK TABLES").pins,
            vec![Pin::UnlockAll, Pin::UnlockTables]
        );
    }

    #[test]
    fn arbitrary_text_never_panics() {
        // Bounded pseudo-random texts over the bytes the lexer treats specially.
        let alphabet = b"`'\"\\/*!M#-;.()@ \n0123456789aeUSECREATDROPxyz,\xc3";
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 40) as usize;
            let text: Vec<u8> = (0..len)
                .map(|i| alphabet[((seed >> (i % 50)) as usize + i * 7) % alphabet.len()])
                .collect();
            let s = Scope::of(&text);
            assert!(s.statements <= text.len());
            let _ = crate::classify::is_write(&text);
            let _ = schema_qualifiers(&text);
        }
    }

    #[test]
    fn sqlparser_tells_aliases_from_databases() {
        let q =
            schema_qualifiers(b"SELECT p.id, b.f(1) FROM posts p JOIN c.t ON p.x = c.t.y").unwrap();
        assert_eq!(q, set(&["b", "c"]));
        let q =
            schema_qualifiers(b"INSERT INTO d.t SELECT * FROM e.u; UPDATE f.t SET a = 1").unwrap();
        assert_eq!(q, set(&["d", "e", "f"]));
        assert_eq!(schema_qualifiers(b"FROB x.y"), None);
        // MariaDB syntax sqlparser lacks (see follow.rs for what the proxy does then).
        assert_eq!(
            schema_qualifiers(b"SELECT wp.id FROM t AS wp LIMIT ROWS EXAMINED 1000"),
            None
        );
    }
}
