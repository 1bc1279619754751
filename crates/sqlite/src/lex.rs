//! Just enough SQL lexing to tell code from string literals, quoted identifiers and
//! comments.

/// Byte ranges of `sql` that are code: outside `'...'`, `"..."`, `` `...` ``, `[...]`,
/// `-- ...` and `/* ... */`. A parameter token (`$name`, `@name`, `:name`, `#name`,
/// with SQLite's `(...)` and `::` forms) is code as a whole, quotes in it included, as
/// SQLite's tokenizer reads it: a quote inside `$a(')` opens no literal (found by a
/// review: it hid a `ROLLBACK` that followed).
pub(crate) fn code_spans(sql: &str) -> Vec<(usize, usize)> {
    let bytes = sql.as_bytes();
    let mut spans = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        if starts_parameter(bytes, i) {
            i = parameter_end(bytes, i);
            continue;
        }
        let skip_to = match bytes[i] {
            b'\'' | b'"' | b'`' => Some(skip_quoted(bytes, i, bytes[i])),
            b'[' => Some(skip_quoted(bytes, i, b']')),
            b'-' if bytes.get(i + 1) == Some(&b'-') => Some(
                bytes[i..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(bytes.len(), |p| i + p),
            ),
            b'/' if bytes.get(i + 1) == Some(&b'*') => Some(
                sql[i + 2..]
                    .find("*/")
                    .map_or(bytes.len(), |p| i + 2 + p + 2),
            ),
            _ => None,
        };
        match skip_to {
            Some(end) => {
                if i > start {
                    spans.push((start, i));
                }
                i = end;
                start = end;
            }
            None => i += 1,
        }
    }
    if bytes.len() > start {
        spans.push((start, bytes.len()));
    }
    spans
}

/// True when code follows the first `;` of `sql`: more than one statement.
pub(crate) fn has_second_statement(sql: &str) -> bool {
    let mut after_semicolon = false;
    for (start, end) in code_spans(sql) {
        for c in sql[start..end].chars() {
            if after_semicolon && !c.is_whitespace() && c != ';' {
                return true;
            }
            after_semicolon |= c == ';';
        }
    }
    false
}

/// True when the first word of code in `sql` (after whitespace, comments and opening
/// parentheses) is `word` (ASCII, any case).
pub(crate) fn starts_with_keyword(sql: &str, word: &str) -> bool {
    for (start, end) in code_spans(sql) {
        let code = sql[start..end].trim_start_matches(|c: char| c.is_whitespace() || c == '(');
        if code.is_empty() {
            continue;
        }
        let first = code
            .split(|c: char| !c.is_ascii_alphabetic())
            .next()
            .unwrap_or_default();
        return first.eq_ignore_ascii_case(word);
    }
    false
}

/// Whether `sql` is `CREATE [UNIQUE] INDEX …` (comments and white space anywhere
/// between its words).
pub fn creates_an_index(sql: &str) -> bool {
    let words: Vec<&str> = code_words(sql).take(3).collect();
    let is = |i: usize, word: &str| words.get(i).is_some_and(|w| w.eq_ignore_ascii_case(word));
    is(0, "CREATE") && (is(1, "INDEX") || (is(1, "UNIQUE") && is(2, "INDEX")))
}

/// True when `word` (ASCII, any case) appears as a whole word in the code of `sql`.
pub(crate) fn has_keyword(sql: &str, word: &str) -> bool {
    mentions(sql, word) && code_words(sql).any(|w| w.eq_ignore_ascii_case(word))
}

/// Whether `word` (ASCII, any case) occurs anywhere in `sql`, literals and comments
/// included. Most SQL does not hold the word at all: no need to lex it (a look for
/// ROLLBACK in every statement applied was a few percent of the raft thread).
fn mentions(sql: &str, word: &str) -> bool {
    let word = word.as_bytes();
    !word.is_empty()
        && sql
            .as_bytes()
            .windows(word.len())
            .any(|w| w.eq_ignore_ascii_case(word))
}

/// The words of the code of `sql`, in order, literals and comments left out.
fn code_words(sql: &str) -> impl Iterator<Item = &str> {
    code_spans(sql).into_iter().flat_map(move |(start, end)| {
        sql[start..end]
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '$'))
            .filter(|w| !w.is_empty())
    })
}

/// The statement a `WITH` clause leads to: the first of `SELECT`, `VALUES`, `INSERT`,
/// `UPDATE`, `DELETE` and `REPLACE` outside parentheses (the expressions' bodies and
/// column lists are inside them), literals, quoted names, comments and parameter
/// tokens, read as SQLite's tokenizer reads words (a name may hold letters, digits,
/// `_`, `$` and any non-ASCII character: `éselect` is one name; found by a review).
/// `REPLACE` followed by `AS` or `(` names an expression. Upper case; `None` when there
/// is none.
pub fn with_statement_keyword(sql: &str) -> Option<&'static str> {
    const MAIN: [&str; 6] = ["SELECT", "VALUES", "INSERT", "UPDATE", "DELETE", "REPLACE"];
    let bytes = sql.as_bytes();
    let mut depth = 0usize;
    for (start, end) in code_spans(sql) {
        let mut i = start;
        while i < end {
            let b = bytes[i];
            if starts_parameter(bytes, i) {
                i = parameter_end(bytes, i).min(end).max(i + 1);
                continue;
            }
            match b {
                b'(' => depth += 1,
                b')' => depth = depth.saturating_sub(1),
                _ if is_id_char(b) => {
                    let word_end = word_end(bytes, i, end);
                    let word = &sql[i..word_end];
                    if depth == 0
                        && let Some(main) = MAIN.iter().find(|m| m.eq_ignore_ascii_case(word))
                    {
                        let next = sql[word_end..end]
                            .trim_start_matches(|c: char| c.is_ascii() && is_sql_space(c as u8));
                        let names_an_expression = *main == "REPLACE"
                            && (next.starts_with('(')
                                || (next.len() >= 2
                                    && next[..2].eq_ignore_ascii_case("AS")
                                    && !next[2..].starts_with(|c: char| {
                                        c.is_ascii() && is_id_char(c as u8)
                                    })));
                        if !names_an_expression {
                            return Some(main);
                        }
                    }
                    i = word_end;
                    continue;
                }
                _ => {}
            }
            i += 1;
        }
    }
    None
}

/// The module of `CREATE VIRTUAL TABLE … USING <module>(…)`: the identifier after the
/// first `USING` of the code (bare, or quoted in `"…"`, `` `…` ``, `[…]` or `'…'`), or
/// `None` when there is none.
pub(crate) fn virtual_table_module(sql: &str) -> Option<String> {
    let bytes = sql.as_bytes();
    let after_using = code_spans(sql).into_iter().find_map(|(start, end)| {
        let mut i = start;
        while i < end {
            if is_id_char(bytes[i]) {
                let word_end = word_end(bytes, i, end);
                if sql[i..word_end].eq_ignore_ascii_case("USING") {
                    return Some(word_end);
                }
                i = word_end;
            } else {
                i += 1;
            }
        }
        None
    })?;
    // White space and comments up to the module's name.
    let mut i = after_using;
    loop {
        match bytes.get(i) {
            Some(&b) if is_sql_space(b) => i += 1,
            Some(b'-') if bytes.get(i + 1) == Some(&b'-') => {
                i = bytes[i..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(bytes.len(), |p| i + p);
            }
            Some(b'/') if bytes.get(i + 1) == Some(&b'*') => {
                i = sql[i + 2..]
                    .find("*/")
                    .map_or(bytes.len(), |p| i + 2 + p + 2);
            }
            _ => break,
        }
    }
    let close = match bytes.get(i)? {
        b'"' => b'"',
        b'`' => b'`',
        b'\'' => b'\'',
        b'[' => b']',
        &b if is_id_char(b) => return Some(sql[i..word_end(bytes, i, bytes.len())].to_string()),
        _ => return None,
    };
    let end = skip_quoted(bytes, i, close);
    // Unterminated (SQLite keeps no such schema; a caller may pass anything).
    if end < i + 2 || bytes.get(end - 1) != Some(&close) {
        return None;
    }
    let inner = sql.get(i + 1..end - 1)?;
    Some(if close == b']' {
        inner.to_string()
    } else {
        let quote = char::from(close).to_string();
        inner.replace(&quote.repeat(2), &quote)
    })
}

/// Whether a parameter token starts at `i`: `$` inside a word is part of an
/// identifier; `@`, `:` and `#` always begin a token of their own.
fn starts_parameter(bytes: &[u8], i: usize) -> bool {
    match bytes[i] {
        b'$' => i == 0 || !is_id_char(bytes[i - 1]),
        b'@' | b':' | b'#' => true,
        _ => false,
    }
}

/// Where the word of identifier characters starting at `start` ends, at `end` at most.
fn word_end(bytes: &[u8], start: usize, end: usize) -> usize {
    (start..end).find(|&j| !is_id_char(bytes[j])).unwrap_or(end)
}

/// SQLite's identifier characters: ASCII letters and digits, `_`, `$`, and every byte
/// of a non-ASCII character.
fn is_id_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

/// Where the parameter token starting at `start` ends, as SQLite's tokenizer reads it:
/// identifier characters and `::` pairs, then, after at least one name character,
/// `(` up to the first white space or `)` (the `)` included).
fn parameter_end(bytes: &[u8], start: usize) -> usize {
    let mut i = start + 1;
    let mut named = false;
    while i < bytes.len() {
        let c = bytes[i];
        if is_id_char(c) {
            named = true;
            i += 1;
        } else if c == b'(' && named {
            i += 1;
            while i < bytes.len() && !is_sql_space(bytes[i]) && bytes[i] != b')' {
                i += 1;
            }
            if i < bytes.len() && bytes[i] == b')' {
                i += 1;
            }
            return i;
        } else if c == b':' && bytes.get(i + 1) == Some(&b':') {
            i += 2;
        } else {
            break;
        }
    }
    i
}

/// SQLite's white space: space, tab, line feed, vertical tab, form feed, return.
fn is_sql_space(b: u8) -> bool {
    b == b' ' || (0x09..=0x0d).contains(&b)
}

/// True when `first` is followed by `second` (ASCII, any case; comments and white
/// space between them allowed) as whole words in the code of `sql`.
pub(crate) fn has_keywords_in_a_row(sql: &str, first: &str, second: &str) -> bool {
    if !mentions(sql, first) || !mentions(sql, second) {
        return false;
    }
    let mut after_first = false;
    code_words(sql).any(|word| {
        let found = after_first && word.eq_ignore_ascii_case(second);
        after_first = word.eq_ignore_ascii_case(first);
        found
    })
}

fn skip_quoted(bytes: &[u8], start: usize, close: u8) -> usize {
    let mut i = start + 1;
    while i < bytes.len() {
        if bytes[i] == close {
            // A doubled quote is an escaped quote inside the literal.
            if close != b']' && bytes.get(i + 1) == Some(&close) {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    bytes.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_virtual_tables_module_is_read_from_its_sql() {
        let module = |sql: &str| virtual_table_module(sql);
        assert_eq!(
            module("CREATE VIRTUAL TABLE t USING fts5(a)").as_deref(),
            Some("fts5")
        );
        assert_eq!(
            module("CREATE VIRTUAL TABLE t USING dbstat").as_deref(),
            Some("dbstat")
        );
        assert_eq!(
            module("CREATE VIRTUAL TABLE \"x USING fts5\" using /* c */ DbStat(main)").as_deref(),
            Some("DbStat")
        );
        assert_eq!(
            module("CREATE VIRTUAL TABLE [using] USING -- c\n \"db\"\"stat\"").as_deref(),
            Some("db\"stat")
        );
        assert_eq!(
            module("CREATE VIRTUAL TABLE t USING [rtree](id, a, b)").as_deref(),
            Some("rtree")
        );
        assert_eq!(
            module("CREATE VIRTUAL TABLE t USING 'fts4'(a)").as_deref(),
            Some("fts4")
        );
        assert_eq!(module("CREATE VIRTUAL TABLE t USING"), None);
        assert_eq!(module("CREATE VIRTUAL TABLE t USING \"unterminated"), None);
        assert_eq!(module("CREATE TABLE t (a)"), None);
    }

    #[test]
    fn keywords_in_literals_and_comments_do_not_count() {
        assert!(has_keyword(
            "INSERT OR ROLLBACK INTO t VALUES (1)",
            "rollback"
        ));
        assert!(has_keyword(
            "create table t (a unique on conflict\nrollback)",
            "ROLLBACK"
        ));
        assert!(!has_keyword(
            "INSERT INTO t VALUES ('rollback')",
            "ROLLBACK"
        ));
        assert!(!has_keyword("SELECT 1 -- rollback\n", "ROLLBACK"));
        assert!(!has_keyword(
            "SELECT \"rollback\", [rollback] /* rollback */",
            "ROLLBACK"
        ));
        assert!(!has_keyword("SELECT rollbacks", "ROLLBACK"));
        assert!(!has_keyword("INSERT INTO t VALUES (1)", "ROLLBACK"));
        assert!(has_keyword(
            "insert or RoLlBaCk into t values (1)",
            "ROLLBACK"
        ));
        assert!(has_keyword("SELECT RAISE(rollback, 'x')", "ROLLBACK"));
    }

    #[test]
    fn keywords_in_a_row_may_have_comments_between() {
        let pair = |sql| has_keywords_in_a_row(sql, "INITIALLY", "DEFERRED");
        assert!(pair("REFERENCES p DEFERRABLE initially deferred"));
        assert!(pair("REFERENCES p DEFERRABLE INITIALLY/* x */\n DEFERRED)"));
        assert!(!pair("REFERENCES p DEFERRABLE INITIALLY IMMEDIATE"));
        assert!(!pair("SELECT 'initially deferred', deferred FROM t"));
        assert!(!pair("SELECT initially, x.deferred FROM t"));
    }

    /// Found by a review: SQLite reads `$a(')` as one parameter token, quote included;
    /// taken for a string, it hid the code up to the next quote.
    #[test]
    fn quotes_inside_parameter_tokens_open_no_literal() {
        for sql in [
            "WITH c(v) AS (SELECT $a(')) INSERT OR ROLLBACK INTO t SELECT v FROM c --'",
            "WITH c(v) AS (SELECT @a(')) INSERT OR ROLLBACK INTO t SELECT v FROM c --'",
            "WITH c(v) AS (SELECT :a(')) INSERT OR ROLLBACK INTO t SELECT v FROM c --'",
            "WITH c(v) AS (SELECT #a(')) INSERT OR ROLLBACK INTO t SELECT v FROM c --'",
            "WITH c(v) AS (SELECT $a::b(\"x)) INSERT OR ROLLBACK INTO t SELECT v FROM c --\"",
            "SELECT $a('\t) ROLLBACK",
        ] {
            assert!(has_keyword(sql, "ROLLBACK"), "{sql}");
        }
        // What SQLite reads as literals stays literal.
        assert!(!has_keyword("SELECT $a, 'rollback'", "ROLLBACK"));
        assert!(!has_keyword("SELECT a$b('rollback')", "ROLLBACK"));
        assert!(!has_keyword("SELECT $('rollback')", "ROLLBACK"));
        assert!(!has_keyword("SELECT :x || ' rollback'", "ROLLBACK"));
    }

    #[test]
    fn second_statements_are_found_outside_literals() {
        assert!(has_second_statement("SELECT 1; SELECT 2"));
        assert!(!has_second_statement("SELECT 1;"));
        assert!(!has_second_statement("SELECT ';x' ; -- y\n"));
        assert!(!has_second_statement("SELECT 1"));
    }

    #[test]
    fn spans_cover_code_only() {
        let sql = "a 'b' c -- d\ne";
        let code: Vec<&str> = code_spans(sql).iter().map(|&(s, e)| &sql[s..e]).collect();
        assert_eq!(code, vec!["a ", " c ", "\ne"]);
    }
}
