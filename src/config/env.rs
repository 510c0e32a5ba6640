//! The environment as redis-flusher reads it: `.env` (or `--env-file`) loaded beneath the real
//! environment, with where each of its values came from; and the secrets that never come from
//! a flag.
//!
//! `.env` is parsed by dotenvy (quoting, `export`, `${VAR}`), but its errors are ours: a line
//! that does not parse is named by file, line number and variable, never shown, since the
//! value it holds is often a password.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::usage::usage;

/// The `.env` file that was loaded: its path, and the line of each variable it set (those the
/// real environment did not already have).
#[derive(Debug, Default)]
pub struct EnvFile {
    pub path: PathBuf,
    pub set: BTreeMap<String, usize>,
}

/// Loads `--env-file PATH` or `./.env` into the environment, without overriding variables that
/// are already set (real environment wins over the file), and returns what it loaded (for
/// `sources.rs` to keep). Looks for `--env-file` itself, before clap parses, because clap
/// reads the environment while parsing.
pub fn load_env_file(args: &[String]) -> anyhow::Result<Option<EnvFile>> {
    let mut explicit = None;
    for (i, a) in args.iter().enumerate() {
        if let Some(v) = a.strip_prefix("--env-file=") {
            explicit = Some(PathBuf::from(v));
        } else if a == "--env-file" {
            explicit = args.get(i + 1).map(PathBuf::from);
        }
    }
    let (path, what) = match explicit {
        Some(path) => (path, "`--env-file`"),
        None => (PathBuf::from(".env"), "./.env"),
    };
    let text = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && what == "./.env" => {
            return Ok(None);
        }
        Err(e) => {
            return Err(usage(format!(
                "could not read {what} {}: {e}",
                path.display()
            )))
        }
    };
    let mut set = BTreeMap::new();
    for (name, (value, line)) in parse(&path, &text)? {
        if std::env::var_os(&name).is_none() {
            // This runs in `main` before any thread starts, as set_var asks.
            std::env::set_var(&name, value);
            set.insert(name, line);
        }
    }
    Ok(Some(EnvFile { path, set }))
}

/// The variables of a `.env` file: name → (value, line of its first definition, which is the
/// one that counts).
fn parse(path: &Path, text: &[u8]) -> anyhow::Result<BTreeMap<String, (String, usize)>> {
    let content = String::from_utf8_lossy(text);
    let mut out = BTreeMap::new();
    for item in dotenvy::from_read_iter(text) {
        match item {
            Ok((name, value)) => {
                let line = line_of(&content, &name).unwrap_or(0);
                out.entry(name).or_insert((value, line));
            }
            Err(dotenvy::Error::LineParse(bad, _)) => {
                let at = content
                    .find(bad.as_str())
                    .map(|i| content[..i].bytes().filter(|&b| b == b'\n').count() + 1);
                let name = bad
                    .split('=')
                    .next()
                    .map(|n| n.trim().trim_start_matches("export ").trim())
                    .filter(|n| {
                        !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    });
                return Err(usage(format!(
                    "{} {}{} does not parse (an unbalanced quote, or a character that needs \
                     quoting?); its value is not shown here",
                    path.display(),
                    at.map_or_else(|| "a line".to_owned(), |n| format!("line {n}")),
                    name.map(|n| format!(" (`{n}`)")).unwrap_or_default(),
                )));
            }
            Err(e) => {
                return Err(usage(format!("could not read {}: {e}", path.display())));
            }
        }
    }
    Ok(out)
}

/// The line (from 1) where `name` is first defined in a `.env` text.
fn line_of(content: &str, name: &str) -> Option<usize> {
    content
        .lines()
        .position(|l| {
            let l = l.trim_start();
            let l = l.strip_prefix("export ").map_or(l, str::trim_start);
            l.strip_prefix(name)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map(|i| i + 1)
}

/// Reads a secret that must not be given as a flag: the variable `name`, or the file that
/// `<name>_FILE` names (the container convention: Docker and Kubernetes secrets, systemd
/// credentials), less one trailing newline. Empty counts as unset, as the Python flusher
/// treated it. Both set is a usage error; so is a file that cannot be read. Messages name
/// the variable and the path, never the content.
pub(super) fn secret_env(name: &str) -> anyhow::Result<Option<String>> {
    let direct = std::env::var(name).ok().filter(|v| !v.is_empty());
    let file_var = format!("{name}_FILE");
    let Some(path) = std::env::var_os(&file_var).filter(|p| !p.is_empty()) else {
        return Ok(direct);
    };
    if direct.is_some() {
        return Err(usage(format!(
            "both `{name}` and `{file_var}` are set: keep one"
        )));
    }
    let path = std::path::PathBuf::from(path);
    let bytes = std::fs::read(&path).map_err(|e| {
        usage(format!(
            "`{file_var}` names {}, which cannot be read: {e}",
            path.display()
        ))
    })?;
    let mut text = String::from_utf8(bytes).map_err(|_| {
        usage(format!(
            "`{file_var}` names {}, which is not UTF-8 text",
            path.display()
        ))
    })?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Ok(Some(text).filter(|t| !t.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_that_does_not_parse_is_named_but_not_shown() {
        let text = b"A=1\n\n# c\nexport DB_PASSWORD=\"hunter2\nB=2\n";
        let err = parse(Path::new(".env"), text).unwrap_err().to_string();
        assert!(
            err.starts_with(".env line 4 (`DB_PASSWORD`) does not parse"),
            "{err}"
        );
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn values_come_with_the_line_that_set_them() {
        let text = b"# c\nA=1\n export B = 'x y'\nA=2\n";
        let vars = parse(Path::new(".env"), text).unwrap();
        assert_eq!(vars["A"], ("1".to_owned(), 2));
        assert_eq!(vars["B"], ("x y".to_owned(), 3));
    }
}
