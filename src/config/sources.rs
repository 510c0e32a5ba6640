//! Where each setting's value came from (a flag, the environment, a line of `.env`, the
//! default), for errors and for the resolved target a run shows; and the variables that look
//! like ours but are not (a typo would otherwise be ignored, and the default used).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::OnceLock;

use super::env::EnvFile;
use crate::cli::{Given, How};

/// Where one setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
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

/// Where this process's settings came from: the `.env` file it loaded, and the source of each
/// setting of its command.
struct Provenance {
    env_file: Option<EnvFile>,
    sources: BTreeMap<String, Source>,
}

/// Global because messages deep in the settings and the checks name a setting's source, and
/// it is recorded once, in `main`, before anything else runs.
static PROVENANCE: OnceLock<Provenance> = OnceLock::new();

/// Records where each setting of the command came from (once, after parsing), with the `.env`
/// file that was loaded, if any.
pub fn record(given: Vec<Given>, env_file: Option<EnvFile>) {
    let sources = given
        .into_iter()
        .filter_map(|g| Some((g.flag.clone(), source_of(g, env_file.as_ref())?)))
        .collect();
    let _ = PROVENANCE.set(Provenance { env_file, sources });
}

/// Where one setting came from, as clap saw it (`given`) and as `.env` set it: a flag wins,
/// then a variable (of `.env` when the file set it, else of the real environment, which the
/// file never overrides), then the default.
fn source_of(given: Given, env_file: Option<&EnvFile>) -> Option<Source> {
    Some(match (given.how, given.var) {
        (How::Flag, _) => Source::Flag(given.flag),
        (How::Env, Some(var)) => match env_file.and_then(|f| Some((f, *f.set.get(&var)?))) {
            Some((file, line)) => Source::DotEnv {
                var,
                file: file.path.display().to_string(),
                line,
            },
            None => Source::Env(var),
        },
        (How::Default, _) => Source::Default(given.flag),
        _ => return None,
    })
}

/// Where the setting of `flag` came from, if it is set (and was recorded).
pub fn of(flag: &str) -> Option<&'static Source> {
    PROVENANCE.get()?.sources.get(flag)
}

/// The `.env` file this process loaded, if any.
pub(crate) fn loaded() -> Option<&'static EnvFile> {
    PROVENANCE.get()?.env_file.as_ref()
}

/// Variables read outside clap (secrets, the test hook), which are ours too.
const OTHERS: [&str; 9] = [
    "REDIS_PASSWORD",
    "REDIS_PASSWORD_FILE",
    "DB_PASSWORD",
    "DB_PASSWORD_FILE",
    "REDIS_SENTINEL_PASSWORD",
    "REDIS_SENTINEL_PASSWORD_FILE",
    "REDIS_FLUSHER_FAULT",
    "REDIS_FLUSHER_SHARDS",
    "REDIS_FLUSHER_TEST_BATCH_KEYS",
];

/// A variable that looks like one of ours and is not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unknown {
    pub name: String,
    /// `the environment`, or `.env line 7`.
    pub place: String,
    /// The known variable it is most likely a typo of.
    pub closest: Option<String>,
}

/// The endings of our variables that name a server or hold a secret: a misspelling of one of
/// these leaves a run on a default target, or without its password.
const TARGETS_AND_SECRETS: [&str; 9] = [
    "_URL",
    "_HOST",
    "_PORT",
    "_PASSWORD",
    "_PASSWORD_FILE",
    "_USERNAME",
    "_USER",
    "_NAME",
    "_DB",
];

impl Unknown {
    /// Whether it names, or is taken for, a server or a secret (`REDIS_ULR`, `DB_PASWORD`):
    /// then a run must not go on without it.
    pub fn is_target_or_secret(&self) -> bool {
        std::iter::once(&self.name)
            .chain(&self.closest)
            .any(|n| TARGETS_AND_SECRETS.iter().any(|end| n.ends_with(end)))
    }
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
pub(crate) fn unknown_variables(known: &[String]) -> Vec<Unknown> {
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
            let closest = closest(&name, &known);
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

/// The known name `name` is most likely a typo of: the nearest by edits that count a swap of
/// two neighbours as one (`REDIS_ULR` is one from `REDIS_URL`), if it is near enough.
fn closest(name: &str, known: &[&str]) -> Option<String> {
    known
        .iter()
        .map(|k| (strsim::damerau_levenshtein(name, k), *k))
        .filter(|(d, k)| *d <= 3.max(k.len() / 5))
        .min()
        .map(|(_, k)| k.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typo_finds_the_name_it_was_meant_to_be_and_says_if_it_matters() {
        let known = [
            "REDIS_URL",
            "REDIS_TLS",
            "DB_PASSWORD",
            "REDIS_FLUSHER_PATTERN",
        ];
        let near = |n: &str| closest(n, &known);
        assert_eq!(near("REDIS_ULR").as_deref(), Some("REDIS_URL"));
        assert_eq!(near("DB_PASWORD").as_deref(), Some("DB_PASSWORD"));
        assert_eq!(
            near("REDIS_FLUSHER_PATERN").as_deref(),
            Some("REDIS_FLUSHER_PATTERN")
        );
        let unknown = |name: &str| Unknown {
            name: name.into(),
            place: "the environment".into(),
            closest: near(name),
        };
        assert!(unknown("REDIS_ULR").is_target_or_secret());
        assert!(unknown("DB_PASWORD").is_target_or_secret());
        assert!(unknown("REDIS_SENTINEL_HOST").is_target_or_secret());
        assert!(!unknown("REDIS_FLUSHER_PATERN").is_target_or_secret());
    }

    fn given(how: How, var: Option<&str>) -> Given {
        Given {
            flag: "--table".into(),
            var: var.map(str::to_owned),
            how,
        }
    }

    /// A flag wins; a variable is the `.env` line that set it when the file did, else the
    /// real environment's (which `.env` never overrides); else the default.
    #[test]
    fn a_setting_names_the_place_that_won() {
        let file = EnvFile {
            path: "/etc/redis-flusher/env".into(),
            set: [("REDIS_FLUSHER_TABLE".to_owned(), 7)].into(),
        };
        let var = Some("REDIS_FLUSHER_TABLE");
        assert_eq!(
            source_of(given(How::Flag, var), Some(&file)),
            Some(Source::Flag("--table".into()))
        );
        assert_eq!(
            source_of(given(How::Env, var), Some(&file)),
            Some(Source::DotEnv {
                var: "REDIS_FLUSHER_TABLE".into(),
                file: "/etc/redis-flusher/env".into(),
                line: 7
            })
        );
        let other = EnvFile {
            path: ".env".into(),
            set: BTreeMap::new(),
        };
        assert_eq!(
            source_of(given(How::Env, var), Some(&other)),
            Some(Source::Env("REDIS_FLUSHER_TABLE".into()))
        );
        assert_eq!(
            source_of(given(How::Default, var), None),
            Some(Source::Default("--table".into()))
        );
        assert_eq!(source_of(given(How::Absent, var), None), None);
        assert_eq!(
            Source::DotEnv {
                var: "X".into(),
                file: ".env".into(),
                line: 3
            }
            .to_string(),
            "`X` (.env line 3)"
        );
    }
}
