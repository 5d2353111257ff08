//! A small SQL lexer for what the proxy must know before a statement runs (which databases it
//! acts on, whether it writes, what session state it pins): words, quoted identifiers, strings,
//! numbers, variables and punctuation, with comments skipped the way MariaDB skips them.
//!
//! MariaDB *executes* the inside of `/*! … */`, `/*!NNNNN … */`, `/*M! … */` and
//! `/*M!NNNNNN … */`: the lexer yields their content as ordinary tokens (whatever the version
//! number, so the proxy never sees less than the server may run). Plain comments (`/* */`,
//! `# …`, `-- …`) and optimizer hints (`/*+ … */`) are skipped.
//!
//! Whether `\` escapes inside a quoted string depends on the session's `sql_mode`
//! (`NO_BACKSLASH_ESCAPES`), which a client can change, so the proxy cannot know it. A lexer
//! built with [`Lexer::new`] assumes backslash escapes; when a quoted token held a backslash,
//! [`Lexer::saw_backslash`] says so and callers lex again with [`Lexer::without_backslash`]
//! and combine both readings (the stricter wins). No allocation: tokens are byte ranges.

/// What a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An unquoted word: keyword or identifier.
    Word,
    /// `` `identifier` ``.
    Backtick,
    /// `"…"`: a string, or an identifier under `ANSI_QUOTES`.
    DoubleQuoted,
    /// `'…'` (also `N'…'`, `X'…'` and `_charset'…'`, lexed as a word then a string).
    Str,
    Number,
    /// `@name`, `@@name`, `@@session.name`, `@'quoted'`.
    Variable,
    /// Any other single byte: `.`, `;`, `(`, `)`, `,`, `*`, operators.
    Punct(u8),
}

/// One token: its kind and where it is in the statement text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    pub kind: Kind,
    pub start: usize,
    pub end: usize,
}

impl Token {
    /// The token's bytes as written (quotes included).
    pub fn text<'a>(&self, sql: &'a [u8]) -> &'a [u8] {
        &sql[self.start..self.end]
    }

    /// A word equal to `kw` (ASCII, case-insensitive).
    pub fn is_word(&self, sql: &[u8], kw: &str) -> bool {
        self.kind == Kind::Word && self.text(sql).eq_ignore_ascii_case(kw.as_bytes())
    }

    pub fn is_punct(&self, c: u8) -> bool {
        self.kind == Kind::Punct(c)
    }

    /// An identifier's name: a word as written, a quoted identifier unquoted (doubled quotes
    /// folded). `None` for other kinds.
    pub fn ident(&self, sql: &[u8]) -> Option<String> {
        let t = self.text(sql);
        match self.kind {
            Kind::Word => Some(String::from_utf8_lossy(t).into_owned()),
            Kind::Backtick | Kind::DoubleQuoted if t.len() >= 2 => {
                let q = t[0] as char;
                let inner = String::from_utf8_lossy(&t[1..t.len() - 1]).into_owned();
                Some(inner.replace(&format!("{q}{q}"), &q.to_string()))
            }
            _ => None,
        }
    }

    /// A string literal's content (quotes removed, `''` folded, backslash escapes undone when
    /// `backslash` is set).
    pub fn string(&self, sql: &[u8], backslash: bool) -> Option<String> {
        let t = self.text(sql);
        if !matches!(self.kind, Kind::Str | Kind::DoubleQuoted) || t.len() < 2 {
            return None;
        }
        let q = t[0];
        let inner = &t[1..t.len() - 1];
        let mut out = Vec::with_capacity(inner.len());
        let mut i = 0;
        while i < inner.len() {
            let b = inner[i];
            if backslash && b == b'\\' && i + 1 < inner.len() {
                out.push(match inner[i + 1] {
                    b'n' => b'\n',
                    b't' => b'\t',
                    b'r' => b'\r',
                    b'0' => 0,
                    c => c,
                });
                i += 2;
            } else if b == q && inner.get(i + 1) == Some(&q) {
                out.push(q);
                i += 2;
            } else {
                out.push(b);
                i += 1;
            }
        }
        Some(String::from_utf8_lossy(&out).into_owned())
    }
}

/// Iterates over the tokens of one COM_QUERY text (all its statements).
pub struct Lexer<'a> {
    sql: &'a [u8],
    pos: usize,
    backslash: bool,
    in_exec_comment: bool,
    saw_backslash: bool,
}

impl<'a> Lexer<'a> {
    /// Backslash escapes in strings (MariaDB's default `sql_mode`).
    pub fn new(sql: &'a [u8]) -> Self {
        Lexer {
            sql,
            pos: 0,
            backslash: true,
            in_exec_comment: false,
            saw_backslash: false,
        }
    }

    /// As under `sql_mode` `NO_BACKSLASH_ESCAPES` (and `ANSI_QUOTES`).
    pub fn without_backslash(sql: &'a [u8]) -> Self {
        Lexer {
            backslash: false,
            ..Lexer::new(sql)
        }
    }

    /// A quoted token so far held a backslash: the other reading may split the text
    /// differently.
    pub fn saw_backslash(&self) -> bool {
        self.saw_backslash
    }

    /// Skips whitespace and comments; enters and leaves executable comments.
    fn skip_trivia(&mut self) {
        let s = self.sql;
        loop {
            let Some(&b) = s.get(self.pos) else { return };
            match b {
                b' ' | b'\t' | b'\r' | b'\n' | 0x0b | 0x0c => self.pos += 1,
                b'#' => self.skip_line(),
                b'-' if s.get(self.pos + 1) == Some(&b'-')
                    && s.get(self.pos + 2)
                        .is_none_or(|c| c.is_ascii_whitespace() || c.is_ascii_control()) =>
                {
                    self.skip_line()
                }
                b'*' if self.in_exec_comment && s.get(self.pos + 1) == Some(&b'/') => {
                    self.in_exec_comment = false;
                    self.pos += 2;
                }
                b'/' if s.get(self.pos + 1) == Some(&b'*') => {
                    let after = self.pos + 2;
                    let exec_at = match (s.get(after), s.get(after + 1)) {
                        (Some(b'!'), _) => Some(after + 1),
                        (Some(b'M' | b'm'), Some(b'!')) => Some(after + 2),
                        _ => None,
                    };
                    match exec_at {
                        // Nested executable comments do not exist; the inner `/*!` is read
                        // as code, which can only make the proxy stricter.
                        Some(mut p) if !self.in_exec_comment => {
                            while s.get(p).is_some_and(u8::is_ascii_digit) {
                                p += 1;
                            }
                            self.in_exec_comment = true;
                            self.pos = p;
                        }
                        _ => {
                            self.pos = s[after..]
                                .windows(2)
                                .position(|w| w == b"*/")
                                .map_or(s.len(), |e| after + e + 2);
                        }
                    }
                }
                _ => return,
            }
        }
    }

    fn skip_line(&mut self) {
        let s = &self.sql[self.pos..];
        // The end of an executable comment ends a `#`/`--` comment inside it too.
        let nl = s.iter().position(|&b| b == b'\n').unwrap_or(s.len());
        let end = if self.in_exec_comment {
            s[..nl].windows(2).position(|w| w == b"*/").unwrap_or(nl)
        } else {
            nl
        };
        self.pos += end;
    }

    fn quoted(&mut self, q: u8) {
        let s = self.sql;
        let mut i = self.pos + 1;
        while i < s.len() {
            let b = s[i];
            if b == b'\\' && q != b'`' {
                self.saw_backslash = true;
                if self.backslash {
                    i += 2;
                    continue;
                }
            }
            if b == q {
                if s.get(i + 1) == Some(&q) {
                    i += 2;
                    continue;
                }
                self.pos = i + 1;
                return;
            }
            i += 1;
        }
        self.pos = s.len(); // unterminated: the server refuses it; nothing hides after it
    }
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

impl Iterator for Lexer<'_> {
    type Item = Token;

    fn next(&mut self) -> Option<Token> {
        self.skip_trivia();
        let s = self.sql;
        let start = self.pos;
        let &b = s.get(start)?;
        let kind = match b {
            b'`' | b'"' | b'\'' => {
                self.quoted(b);
                match b {
                    b'`' => Kind::Backtick,
                    b'"' => Kind::DoubleQuoted,
                    _ => Kind::Str,
                }
            }
            b'@' => {
                let mut p = start + 1;
                if s.get(p) == Some(&b'@') {
                    p += 1;
                }
                match s.get(p) {
                    Some(&q @ (b'`' | b'"' | b'\'')) => {
                        self.pos = p;
                        self.quoted(q);
                    }
                    _ => {
                        while s.get(p).is_some_and(|&c| is_word_byte(c) || c == b'.') {
                            p += 1;
                        }
                        self.pos = p;
                    }
                }
                Kind::Variable
            }
            b'0'..=b'9' => {
                let mut p = start;
                while s.get(p).is_some_and(|&c| is_word_byte(c)) {
                    p += 1;
                }
                let all_digits = s[start..p].iter().all(u8::is_ascii_digit);
                if all_digits && s.get(p) == Some(&b'.') {
                    p += 1;
                    while s.get(p).is_some_and(|&c| is_word_byte(c)) {
                        p += 1;
                    }
                }
                self.pos = p;
                // `1abc` is an identifier in MariaDB; `1e5`, `0x1f` and `12` are numbers.
                let text = &s[start..p];
                let numeric = text.iter().all(|c| c.is_ascii_digit() || *c == b'.')
                    || text.starts_with(b"0x")
                    || text.starts_with(b"0b")
                    || text
                        .iter()
                        .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E'));
                if numeric {
                    Kind::Number
                } else {
                    Kind::Word
                }
            }
            c if is_word_byte(c) => {
                let mut p = start;
                while s.get(p).is_some_and(|&c| is_word_byte(c)) {
                    p += 1;
                }
                self.pos = p;
                Kind::Word
            }
            c => {
                self.pos += 1;
                Kind::Punct(c)
            }
        };
        Some(Token {
            kind,
            start,
            end: self.pos,
        })
    }
}

/// The statements of a COM_QUERY text: its tokens split at `;`, empty statements dropped.
pub fn statements(sql: &[u8], backslash: bool) -> (Vec<Vec<Token>>, bool) {
    let mut lx = if backslash {
        Lexer::new(sql)
    } else {
        Lexer::without_backslash(sql)
    };
    let mut out = Vec::new();
    let mut cur = Vec::new();
    for t in lx.by_ref() {
        if t.is_punct(b';') {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
        } else {
            cur.push(t);
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    (out, lx.saw_backslash())
}

/// A statement's tokens as text for sqlparser: executable comments' content kept, comments
/// dropped, tokens separated by one space (except around `.`, so `a . b` stays `a.b`).
pub fn normalized(sql: &[u8], toks: &[Token]) -> String {
    let mut out = String::with_capacity(sql.len());
    for (i, t) in toks.iter().enumerate() {
        let glue = i == 0
            || t.is_punct(b'.')
            || toks[i - 1].is_punct(b'.')
            || (t.is_punct(b'(') && toks[i - 1].kind != Kind::Punct(b'('));
        if !glue {
            out.push(' ');
        }
        out.push_str(&String::from_utf8_lossy(t.text(sql)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(sql: &str) -> Vec<String> {
        Lexer::new(sql.as_bytes())
            .map(|t| String::from_utf8_lossy(t.text(sql.as_bytes())).into_owned())
            .collect()
    }

    #[test]
    fn comments_are_skipped_and_executable_comments_are_code() {
        assert_eq!(
            words("SELECT 1 /* x; DROP */ -- y\n# z\n, 2"),
            ["SELECT", "1", ",", "2"]
        );
        assert_eq!(
            words("/*M! INSERT INTO t */ SELECT 1"),
            ["INSERT", "INTO", "t", "SELECT", "1"]
        );
        assert_eq!(
            words("SELECT 1 /*!50001 ; DELETE FROM t*/"),
            ["SELECT", "1", ";", "DELETE", "FROM", "t"]
        );
        assert_eq!(words("/*m!100100 USE b */"), ["USE", "b"]);
        assert_eq!(words("SELECT 1--1"), ["SELECT", "1", "-", "-", "1"]);
        assert_eq!(words("/*+ hint */ SELECT"), ["SELECT"]);
        assert_eq!(words("/*! # c */ UPDATE t */"), ["UPDATE", "t", "*", "/"]);
    }

    #[test]
    fn quotes_and_backslashes_are_read_both_ways() {
        let sql = br"SELECT '\'; DELETE FROM t; -- '";
        let (with, saw) = statements(sql, true);
        assert!(saw);
        assert_eq!(with.len(), 1);
        let (without, _) = statements(sql, false);
        assert_eq!(without.len(), 2);
        assert_eq!(
            words("SELECT `a``b`.c, \"x\", @@session.sql_mode, @`u`"),
            [
                "SELECT",
                "`a``b`",
                ".",
                "c",
                ",",
                "\"x\"",
                ",",
                "@@session.sql_mode",
                ",",
                "@`u`"
            ]
        );
        let t = Lexer::new(b"`a``b`").next().unwrap();
        assert_eq!(t.ident(b"`a``b`").as_deref(), Some("a`b"));
        let t = Lexer::new(br"'it''s \n'").next().unwrap();
        assert_eq!(t.string(br"'it''s \n'", true).as_deref(), Some("it's \n"));
    }

    #[test]
    fn numbers_and_identifiers_starting_with_digits() {
        let sql = b"SELECT 1.5, 1e3, 0x1F, 1abc.t";
        let kinds: Vec<Kind> = Lexer::new(sql).map(|t| t.kind).collect();
        assert_eq!(
            kinds,
            [
                Kind::Word,
                Kind::Number,
                Kind::Punct(b','),
                Kind::Number,
                Kind::Punct(b','),
                Kind::Number,
                Kind::Punct(b','),
                Kind::Word,
                Kind::Punct(b'.'),
                Kind::Word
            ]
        );
        let (st, _) = statements(b"SELECT 1;; ; SELECT 2;", true);
        assert_eq!(st.len(), 2);
        let (st, _) = statements(b"select /*!x*/ a . b ( 1 )", true);
        assert_eq!(
            normalized(b"select /*!x*/ a . b ( 1 )", &st[0]),
            "select x a.b( 1 )"
        );
    }
}
