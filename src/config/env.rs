//! The environment as redis-flusher reads it: `.env` (or `--env-file`) loaded beneath the real
//! environment, with where each of its values came from; and the secrets that never come from
//! a flag.
//!
//! `.env` is read as python-dotenv reads it (`dotenv.rs`), as the Python flusher did, but its
//! errors are ours: a line that does not parse is named by file, line number and variable,
//! never shown, since the value it holds is often a password.

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

/// The variables of a `.env` file: name → (value, line), read as python-dotenv reads them
/// (`dotenv.rs`): where a name is set twice, the last one counts, as there. A statement that
/// does not parse is named by line and variable, never shown (its value is often a password).
fn parse(path: &Path, bytes: &[u8]) -> anyhow::Result<BTreeMap<String, (String, usize)>> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        usage(format!(
            "{} is not UTF-8 text (a byte that is not, near byte {}); save it as UTF-8",
            path.display(),
            e.valid_up_to()
        ))
    })?;
    let entries = super::dotenv::parse(text, |name| std::env::var(name).ok()).map_err(|e| {
        usage(format!(
            "{} {e} does not parse (an unbalanced quote, or something after a quoted value?); \
             its value is not shown here",
            path.display()
        ))
    })?;
    Ok(entries
        .into_iter()
        .map(|e| (e.name, (e.value, e.line)))
        .collect())
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
    fn values_come_with_the_line_that_set_them_and_the_last_one_counts() {
        let text = b"# c\nA=1\n export B = 'x y'\nA=2\n";
        let vars = parse(Path::new(".env"), text).unwrap();
        assert_eq!(vars["A"], ("2".to_owned(), 4));
        assert_eq!(vars["B"], ("x y".to_owned(), 3));
    }

    #[test]
    fn a_dollar_without_braces_is_part_of_the_value() {
        let vars = parse(Path::new(".env"), b"DB_PASSWORD=pa$word1\n").unwrap();
        assert_eq!(vars["DB_PASSWORD"].0, "pa$word1");
    }
}
