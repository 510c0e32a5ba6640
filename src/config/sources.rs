//! Where each setting's value came from (a flag, the environment, a line of `.env`, the
//! default), for errors and for the resolved target a run shows; and the variables that look
//! like ours but are not (a typo would otherwise be ignored, and the default used).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::OnceLock;

use super::env::loaded;
use crate::cli::{Given, How};

/// Where one setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The flag, `--table`.
    Flag(String),
    /// A variable of the real environment.
    Env(String),
    /// A variable that `.env` (or `--env-file`) set, at this line.
    DotEnv {
        var: String,
        file: String,
        line: usize,
    },
    /// The default (of flag `--table`).
    Default(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Flag(flag) => write!(f, "`{flag}`"),
            Source::Env(var) => write!(f, "`{var}`"),
            Source::DotEnv { var, file, line } => write!(f, "`{var}` ({file} line {line})"),
            Source::Default(flag) => write!(f, "`{flag}`'s default"),
        }
    }
}

impl Source {
    /// A short form for a table of settings: `flag`, `env REDIS_URL`, `.env:7`, `default`.
    pub fn short(&self) -> String {
        match self {
            Source::Flag(flag) => flag.clone(),
            Source::Env(var) => format!("env {var}"),
            Source::DotEnv { var, file, line } => format!("{file}:{line} {var}"),
            Source::Default(_) => "default".into(),
        }
    }
}

static SOURCES: OnceLock<BTreeMap<String, Source>> = OnceLock::new();

/// Records where each setting of the command came from (once, after parsing; `.env` loaded).
pub fn record(given: Vec<Given>) {
    let dotenv = loaded();
    let sources = given
        .into_iter()
        .filter_map(|g| {
            let source = match (g.how, g.var) {
                (How::Flag, _) => Source::Flag(g.flag.clone()),
                (How::Env, Some(var)) => match dotenv.and_then(|f| Some((f, *f.set.get(&var)?))) {
                    Some((file, line)) => Source::DotEnv {
                        var,
                        file: file.path.display().to_string(),
                        line,
                    },
                    None => Source::Env(var),
                },
                (How::Default, _) => Source::Default(g.flag.clone()),
                _ => return None,
            };
            Some((g.flag, source))
        })
        .collect();
    let _ = SOURCES.set(sources);
}

/// Where the setting of `flag` came from, if it is set (and was recorded).
pub fn of(flag: &str) -> Option<&'static Source> {
    SOURCES.get()?.get(flag)
}

/// Variables read outside clap (secrets, the test hook), which are ours too.
const OTHERS: [&str; 8] = [
    "REDIS_PASSWORD",
    "REDIS_PASSWORD_FILE",
    "DB_PASSWORD",
    "DB_PASSWORD_FILE",
    "REDIS_SENTINEL_PASSWORD",
    "REDIS_SENTINEL_PASSWORD_FILE",
    "REDIS_FLUSHER_FAULT",
    "REDIS_FLUSHER_TEST_BATCH_KEYS",
];

/// A variable that looks like one of ours and is not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unknown {
    pub name: String,
    /// `the environment`, or `.env line 7`.
    pub place: String,
    /// The known variable it is most likely a typo of.
    pub closest: Option<String>,
}

impl fmt::Display for Unknown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` (in {}) is not a setting of redis-flusher, so it changes nothing",
            self.name, self.place
        )?;
        match &self.closest {
            Some(c) => write!(f, ": did you mean `{c}`?"),
            None => write!(f, ": `redis-flusher run --help` lists the variables"),
        }
    }
}

/// Every variable named `REDIS_FLUSHER_*`, `REDIS_*` or `DB_*`, in the environment or `.env`,
/// that is not one of `known` (clap's) or ours besides.
pub fn unknown_variables(known: &[String]) -> Vec<Unknown> {
    let known: Vec<&str> = known.iter().map(String::as_str).chain(OTHERS).collect();
    let dotenv = loaded();
    let mut out: Vec<Unknown> = std::env::vars_os()
        .filter_map(|(name, _)| name.into_string().ok())
        .filter(|name| name.starts_with("REDIS_") || name.starts_with("DB_"))
        .filter(|name| !known.contains(&name.as_str()))
        .map(|name| {
            let place = match dotenv.and_then(|f| Some((f, *f.set.get(&name)?))) {
                Some((file, line)) => format!("{} line {line}", file.path.display()),
                None => "the environment".into(),
            };
            let closest = known
                .iter()
                .map(|k| (distance(&name, k), *k))
                .filter(|(d, k)| *d <= 3.max(k.len() / 5))
                .min()
                .map(|(_, k)| k.to_owned());
            Unknown {
                name,
                place,
                closest,
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The edit distance between two names (insertions, deletions, substitutions).
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let here = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(here + 1);
            prev = here;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typo_finds_the_name_it_was_meant_to_be() {
        assert_eq!(distance("REDIS_FLUSHER_PATERN", "REDIS_FLUSHER_PATTERN"), 1);
        assert_eq!(distance("DB_PASWORD", "DB_PASSWORD"), 1);
        assert_eq!(distance("abc", "abc"), 0);
        assert_eq!(distance("", "ab"), 2);
    }
}
