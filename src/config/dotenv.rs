//! The `.env` reader: values read exactly as python-dotenv 1.2.4's `load_dotenv()` reads them
//! (its defaults: `override=False`, `interpolate=True`, the file as UTF-8 text), since the
//! Python flusher this replaces read its `.env` with it. Checked against python-dotenv itself:
//! `tests/integration/fixtures/dotenv/reference.py` writes what python-dotenv makes of each
//! tricky case to `cases.json`, and the `dotenv` tests read ours against it.
//!
//! Grammar (python-dotenv `parser.py` / `variables.py`), applied in this order:
//! * The text is read like Python's text mode: CRLF and lone CR become LF; one leading BOM is
//!   dropped. "Whitespace" is Python's `str.isspace()` (Unicode White_Space plus U+001C..U+001F);
//!   "blank" is whitespace other than LF (so U+0085 and U+2028 do not end a line).
//! * Statements start after any whitespace (blank lines included). `#` there starts a comment line.
//! * Optional `export` followed by one or more blanks (`exportA=1` is the key `exportA`; `export`
//!   alone is a key without value; `export ` followed by a line end is malformed).
//! * Key: `'...'` (one or more chars, may span lines, no escapes) or a run of chars that are not
//!   `=`, `#` or whitespace (quotes included: `"A"=1` has the key `"A"`). Blanks, then `=`, blanks.
//! * Value: if blanks followed `=` and the next char is `#`: empty (rest is a comment). Else
//!   `'...'` (may span lines; `\\` -> `\`, `\'` -> `'`, any other `\x` kept as-is), `"..."`
//!   (may span lines; `\\ \' \" \a \b \f \n \r \t \v` decoded, any other `\x` kept as-is), or
//!   unquoted: the rest of the line, cut at the first `#` that follows whitespace, then
//!   trailing whitespace removed (`a#b` stays `a#b`, `a #b` is `a`; no escapes at all).
//! * After a quoted value (or a key without `=`): blanks, an optional `#` comment, end of line.
//!   Anything else (`KEY="a" junk`, `A B=1`) makes the statement malformed.
//! * Expansion, in EVERY value after escapes are decoded, single-quoted ones included (python-dotenv
//!   does not know how a value was quoted when it expands): `${NAME}` and `${NAME:-default}`, NAME
//!   being any chars but `}` and `:`; anything else (`$VAR`, `${X:=y}`, `${X`, `$$`) is literal.
//!   NAME resolves to the real environment's value if set (even if empty: `${E:-d}` with E=""
//!   gives ""), else the latest earlier value in this file (a key without `=` gives ""), else
//!   the default, else "". Results are not expanded again. (With `dotenv_values()` or
//!   `override=True` python-dotenv would prefer the file over the environment; the old flusher
//!   used `load_dotenv()`, so the environment wins here.)
//!
//! Where we differ from python-dotenv, on purpose (each one is an error, never another value):
//! * A statement it cannot parse is skipped with a warning; we return [`ParseError`].
//! * A key that `load_dotenv()` would pass to `os.environ` and that makes it raise ValueError
//!   (key with `=` or NUL, value with NUL) is a [`ParseError`] here.
//! * A key without `=` is skipped (python-dotenv: value None, not set). But a key without `=`
//!   after an assignment of the same key makes python-dotenv un-set it; we cannot say that with
//!   `Entry`, so that is a [`ParseError`] too.
//! * Our line numbers are where the statement's first non-blank char is; python-dotenv's
//!   warnings count from the end of the previous statement (blank lines before it included).
//!
//! Duplicates: all are returned in file order. python-dotenv keeps the LAST value of a key
//! (and earlier occurrences only matter to `${...}` between them). `load_dotenv()` then sets
//! only keys that are not in the real environment already: the environment wins.

use std::collections::HashMap;
use std::fmt;

/// One `KEY=value` statement. `Debug` hides the value: values are passwords.
#[derive(Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub value: String,
    /// 1-based line where the statement (its `export` or key) starts.
    pub line: usize,
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Entry {{ name: {:?}, value: <hidden>, line: {} }}",
            self.name, self.line
        )
    }
}

/// A statement we refuse. Never holds any part of a value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line where the refused statement starts.
    pub line: usize,
    /// The key, only when it was followed by `=` (or is a re-declared key): before that we
    /// cannot tell a name from, say, a password pasted on a line of its own.
    pub name: Option<String>,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}", self.line)?;
        match &self.name {
            Some(n) => write!(f, " (`{n}`)"),
            None => Ok(()),
        }
    }
}

impl std::error::Error for ParseError {}

/// Python's `str.isspace()`, which is what `\s` and `str.rstrip()` use.
fn is_ws(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

fn is_blank(c: char) -> bool {
    c != '\n' && is_ws(c)
}

struct Reader {
    s: Vec<char>,
    i: usize,
    line: usize,
}

impl Reader {
    fn peek(&self) -> Option<char> {
        self.s.get(self.i).copied()
    }
    fn next(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.i += 1;
        if c == '\n' {
            self.line += 1;
        }
        Some(c)
    }
    fn take_while(&mut self, f: impl Fn(char) -> bool) -> String {
        let mut out = String::new();
        while let Some(c) = self.peek().filter(|&c| f(c)) {
            out.push(c);
            self.next();
        }
        out
    }
    /// After the opening quote `q`: the decoded content up to the closing quote, None if none.
    fn quoted(&mut self, q: char) -> Option<String> {
        let mut out = String::new();
        loop {
            match self.next()? {
                c if c == q => return Some(out),
                '\\' => {
                    let e = self.next()?;
                    let d = match (q, e) {
                        (_, '\\') => '\\',
                        (_, '\'') => '\'',
                        ('"', '"') => '"',
                        ('"', 'a') => '\u{7}',
                        ('"', 'b') => '\u{8}',
                        ('"', 'f') => '\u{c}',
                        ('"', 'n') => '\n',
                        ('"', 'r') => '\r',
                        ('"', 't') => '\t',
                        ('"', 'v') => '\u{b}',
                        _ => {
                            out.push('\\');
                            e
                        }
                    };
                    out.push(d);
                }
                c => out.push(c),
            }
        }
    }
}

/// Parses `.env` text. `lookup` gives the real environment's value of a name (used for
/// `${NAME}`; it is never called with an empty name or one holding `=` or NUL).
pub fn parse(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Vec<Entry>, ParseError> {
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut r = Reader {
        s: text.chars().collect(),
        i: 0,
        line: 1,
    };
    let mut known: HashMap<String, Option<String>> = HashMap::new(); // None: key without `=`
    let mut out = Vec::new();
    loop {
        r.take_while(is_ws);
        if r.peek().is_none() {
            return Ok(out);
        }
        let line = r.line;
        let fail = |name: Option<&String>| ParseError {
            line,
            name: name.cloned(),
        };
        let export: Vec<char> = "export".chars().collect();
        if r.s[r.i..].starts_with(&export) && r.s.get(r.i + 6).is_some_and(|&c| is_blank(c)) {
            r.i += 6;
            r.take_while(is_blank);
        }
        let key = match r.peek() {
            Some('#') => {
                r.take_while(|c| c != '\n');
                continue;
            }
            Some('\'') => {
                r.next();
                let k = r.take_while(|c| c != '\'');
                if r.next() != Some('\'') {
                    return Err(fail(None));
                }
                k
            }
            _ => r.take_while(|c| c != '=' && c != '#' && !is_ws(c)),
        };
        if key.is_empty() {
            return Err(fail(None));
        }
        r.take_while(is_blank);
        let mut value = None;
        if r.peek() == Some('=') {
            r.next();
            let spaced = !r.take_while(is_blank).is_empty();
            value = Some(match r.peek() {
                Some('#') if spaced => String::new(),
                Some(q @ ('\'' | '"')) => {
                    r.next();
                    r.quoted(q).ok_or_else(|| fail(Some(&key)))?
                }
                _ => {
                    let part: Vec<char> = r.take_while(|c| c != '\n').chars().collect();
                    let cut = (1..part.len()).find(|&k| part[k] == '#' && is_ws(part[k - 1]));
                    let part: String = part[..cut.unwrap_or(part.len())].iter().collect();
                    part.trim_end_matches(is_ws).to_string()
                }
            });
        }
        r.take_while(is_blank);
        if r.peek() == Some('#') {
            r.take_while(|c| c != '\n');
        }
        if r.peek().is_some_and(|c| c != '\n') {
            return Err(fail(value.as_ref().map(|_| &key)));
        }
        let Some(raw) = value else {
            if let Some(Some(_)) = known.get(&key) {
                return Err(fail(Some(&key)));
            }
            known.insert(key, None);
            continue;
        };
        if key.contains(['=', '\0']) {
            return Err(fail(None));
        }
        let value = expand(&raw, &known, &lookup);
        if value.contains('\0') {
            return Err(fail(Some(&key)));
        }
        known.insert(key.clone(), Some(value.clone()));
        out.push(Entry {
            name: key,
            value,
            line,
        });
    }
}

/// python-dotenv `_posix_variable`: `\$\{(?P<name>[^\}:]*)(?::-(?P<default>[^\}]*))?\}`.
fn expand(
    raw: &str,
    known: &HashMap<String, Option<String>>,
    lookup: &impl Fn(&str) -> Option<String>,
) -> String {
    let c: Vec<char> = raw.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < c.len() {
        if c[i] == '$' && c.get(i + 1) == Some(&'{') {
            let name_end = (i + 2..c.len()).find(|&j| c[j] == '}' || c[j] == ':');
            let var = match name_end.map(|j| (j, c[j])) {
                Some((j, '}')) => Some((j, None, j + 1)),
                Some((j, _)) if c.get(j + 1) == Some(&'-') => {
                    let close = (j + 2..c.len()).find(|&k| c[k] == '}');
                    close.map(|k| (j, Some(c[j + 2..k].iter().collect::<String>()), k + 1))
                }
                _ => None,
            };
            if let Some((j, default, end)) = var {
                let name: String = c[i + 2..j].iter().collect();
                let env = if name.is_empty() || name.contains(['=', '\0']) {
                    None
                } else {
                    lookup(&name)
                };
                let v = env
                    .or_else(|| known.get(&name).map(|v| v.clone().unwrap_or_default()))
                    .or(default)
                    .unwrap_or_default();
                out.push_str(&v);
                i = end;
                continue;
            }
        }
        out.push(c[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> String {
        parse(text, |_| None).unwrap().pop().unwrap().value
    }

    #[test]
    fn dollar_without_braces_is_literal() {
        assert_eq!(one("DB_PASSWORD=pa$word1\n"), "pa$word1");
        assert_eq!(one("DB_PASSWORD=\"pa$word1\"\n"), "pa$word1");
    }

    #[test]
    fn environment_wins_over_file_for_expansion() {
        let e = parse("A=file\nB=${A}\n", |n| {
            (n == "A").then(|| "env".to_string())
        })
        .unwrap();
        assert_eq!(e[1].value, "env");
    }

    #[test]
    fn whitespace_is_pythons_isspace() {
        let py: Vec<u32> = [
            0x9, 0xa, 0xb, 0xc, 0xd, 0x1c, 0x1d, 0x1e, 0x1f, 0x20, 0x85, 0xa0, 0x1680,
        ]
        .into_iter()
        .chain(0x2000..=0x200a)
        .chain([0x2028, 0x2029, 0x202f, 0x205f, 0x3000])
        .collect();
        let ours: Vec<u32> = (0..=0x10ffff)
            .filter_map(char::from_u32)
            .filter(|&c| is_ws(c))
            .map(u32::from)
            .collect();
        assert_eq!(ours, py);
    }

    #[test]
    fn secrets_never_leak_into_errors_or_debug() {
        let err = parse("A=1\nPASS=\"hunter2\" x\n", |_| None).unwrap_err();
        assert_eq!(
            err,
            ParseError {
                line: 2,
                name: Some("PASS".into())
            }
        );
        assert!(!format!("{err} {err:?}").contains("hunter2"));
        let err = parse("hunter2 x\n", |_| None).unwrap_err();
        assert_eq!(err.name, None);
        let e = parse("PASS=hunter2", |_| None).unwrap();
        assert!(!format!("{e:?}").contains("hunter2"));
    }
}
