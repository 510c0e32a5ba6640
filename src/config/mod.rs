//! Turns flags and environment into a validated [`Config`]: defaults, identifier checks, the
//! pattern rule, and names for the servers that are safe to log.
//!
//! Every problem found here is a [`UsageError`] (exit code 2); nothing here connects. Each
//! stage gets only its slice: the Redis code a [`SourceConfig`], the Postgres code a
//! [`TargetConfig`] and a [`LedgerConfig`]. `redis.rs` and `postgres.rs` build the connection
//! settings; `env.rs` reads `.env` and the secrets that never come from flags.

mod conninfo;
pub mod dotenv;
mod env;
mod flush;
mod postgres;
mod redis;
mod sources;
mod usage;

pub use self::env::{load_env_file, EnvFile};
pub use self::flush::{FlushConfig, Ident, LedgerConfig, SourceConfig, TargetConfig, UpdateForm};
pub use self::postgres::PgConfig;
pub(crate) use self::redis::redis_address;
pub use self::redis::{RedisConfig, Sentinel};
use self::sources::loaded;
pub use self::sources::record as record_sources;
pub(crate) use self::sources::{unknown_variables, Source};
use self::usage::usage;
pub(crate) use self::usage::UsageError;

use crate::cli::{ConnArgs, RunArgs, TargetArgs};

/// Everything one run needs.
pub struct Config {
    pub redis: RedisConfig,
    pub pg: PgConfig,
    pub flush: FlushConfig,
    /// Who chose the target when no setting did (the demo, for its own table and keys):
    /// what [`Config::settings`] names as their source instead of "default".
    pub chosen_by: Option<&'static str>,
}

impl Config {
    /// The configuration `run`, `check` and `status` work with, from their parsed arguments.
    pub(crate) fn from_args(conn: &ConnArgs, target: &TargetArgs) -> anyhow::Result<Config> {
        warn_password_in_flag(conn);
        Ok(Config {
            redis: RedisConfig::from_args(conn)?,
            pg: PgConfig::from_args(conn)?,
            flush: FlushConfig::from_args(target)?,
            chosen_by: None,
        })
    }

    /// As [`Config::from_args`], from `run`'s arguments, with the rules only a flush has.
    pub fn from_run_args(args: &RunArgs) -> anyhow::Result<Config> {
        Config::for_flush(&args.conn, &args.target)
    }

    /// As [`Config::from_args`], with the rules only a flush has (`run`, `serve`).
    pub fn for_flush(conn: &ConnArgs, target: &TargetArgs) -> anyhow::Result<Config> {
        let cfg = Config::from_args(conn, target)?;
        if cfg.redis.cluster && cfg.flush.source.keep_unknown {
            return Err(usage(
                "`--keep-unknown` is not supported on a Redis Cluster yet (the hash would be in \
                 a slot of its own, and parking must be atomic with the journal's delete); \
                 unknown codes are recorded in the ledger either way",
            ));
        }
        Ok(cfg)
    }
}

/// A flush deletes keys: it must be told where from and where to, never fall back on
/// localhost by default (a cron line without `--env-file` would). Call before connecting.
pub(crate) fn require_targets() -> anyhow::Result<()> {
    let given = |flags: &[&str]| {
        flags
            .iter()
            .any(|f| sources::of(f).is_some_and(|s| !matches!(s, Source::Default(_))))
    };
    let redis = given(&[
        "--redis-url",
        "--redis-host",
        "--redis-port",
        "--redis-sentinels",
    ]);
    let pg = given(&["--database-url", "--db-host", "--db-port", "--db-name"]);
    let missing: Vec<&str> = [
        (!redis).then_some(
            "Redis (`REDIS_URL`, or `REDIS_HOST` and `REDIS_PORT`, or `REDIS_SENTINELS`)",
        ),
        (!pg).then_some("PostgreSQL (`DATABASE_URL`, or `DB_HOST`, `DB_PORT` and `DB_NAME`)"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(usage(format!(
        "no target was given for {}, so a run would flush from and into the defaults \
         (localhost); it deletes what it flushes from Redis, so it does not guess: set them in \
         the environment, in ./.env, or in a file named with `--env-file` (cron: `redis-flusher \
         run --env-file /etc/redis-flusher/env`), or as flags; `redis-flusher help run` lists \
         them",
        missing.join(" and ")
    )))
}

/// Warns when a URL given as a flag holds a password: every local user can read a process's
/// arguments (`ps`, `/proc/<pid>/cmdline`).
fn warn_password_in_flag(conn: &ConnArgs) {
    for (flag, var, url) in [
        ("--redis-url", "REDIS_URL", &conn.redis_url),
        ("--database-url", "DATABASE_URL", &conn.database_url),
    ] {
        let as_flag = matches!(sources::of(flag), Some(Source::Flag(_)));
        if as_flag && url.as_deref().is_some_and(holds_password) {
            log::warn!(
                "`{flag}` holds a password, which every local user can read in this process's \
                 arguments (`ps`): give the URL in `{var}` (the environment or the env file) \
                 instead, or the password alone in `{}_FILE`",
                if var == "REDIS_URL" {
                    "REDIS_PASSWORD"
                } else {
                    "DB_PASSWORD"
                }
            );
        }
    }
}

/// Whether a connection URL (or libpq `key=value` string, or a cluster's list of URLs) holds
/// a password.
fn holds_password(s: &str) -> bool {
    let s = s.trim();
    if s.contains("://") {
        s.split(',')
            .filter_map(|u| url::Url::parse(u.trim()).ok())
            .any(|u| u.password().is_some_and(|p| !p.is_empty()))
    } else {
        s.split_whitespace()
            .any(|kv| kv.trim_start().starts_with("password"))
    }
}

/// How an error names a setting: as the variable it came from (with its `.env` line when it
/// came from there), as the flag, or as the flag's default. `value` is what the setting holds
/// (for settings built outside the command line, where the source is a guess).
pub fn named(flag: &str, var: &str, value: &str) -> String {
    if let Some(source) = sources::of(flag) {
        return source.to_string();
    }
    if std::env::var(var).is_ok_and(|v| v == value) {
        match loaded().and_then(|f| Some((f, *f.set.get(var)?))) {
            Some((file, line)) => format!("`{var}` ({} line {line})", file.path.display()),
            None => format!("`{var}`"),
        }
    } else {
        format!("`{flag}`")
    }
}

/// The error for a setting that is set, but empty (or blank: `value`).
pub(crate) fn empty(flag: &str, var: &str, value: &str) -> anyhow::Error {
    usage(format!(
        "{} is empty: set it, or unset it for the default",
        named(flag, var, value)
    ))
}

/// One setting of the resolved target, as `run`, `--dry-run` and `check` show it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Setting {
    pub what: &'static str,
    pub value: String,
    /// Where it came from: `--table`, `env REDIS_URL`, `.env:7 DB_NAME`, `default`.
    pub source: String,
}

impl Config {
    /// What a run touches, and where each of those settings came from.
    pub fn settings(&self) -> Vec<Setting> {
        let from = |flags: &[&str]| -> String {
            let mut set: Vec<String> = flags
                .iter()
                .filter_map(|f| sources::of(f))
                .filter(|s| !matches!(s, Source::Default(_)))
                .map(Source::short)
                .collect();
            set.dedup();
            if set.is_empty() {
                "default".into()
            } else {
                set.join(" + ")
            }
        };
        let f = &self.flush;
        let redis = if sources::of("--redis-url").is_some() {
            from(&["--redis-url"])
        } else if sources::of("--redis-sentinels").is_some() {
            from(&["--redis-sentinels", "--redis-sentinel-master", "--redis-db"])
        } else {
            from(&["--redis-host", "--redis-port", "--redis-db", "--redis-tls"])
        };
        let pg = if sources::of("--database-url").is_some() {
            from(&["--database-url"])
        } else {
            from(&["--db-host", "--db-port", "--db-name", "--db-user"])
        };
        let row = |what, value: String, source: String| Setting {
            what,
            value,
            source,
        };
        // What no setting chose and someone else did (the demo's own table).
        let mine = |source: String| match self.chosen_by {
            Some(by) if source == "default" => by.to_owned(),
            _ => source,
        };
        vec![
            row("Redis", self.redis.display.clone(), redis),
            row(
                "pattern",
                String::from_utf8_lossy(&f.source.scan_match).into_owned(),
                mine(from(&["--pattern"])),
            ),
            row(
                "journals",
                format!("{}…", f.source.journal_prefix),
                mine(from(&["--journal-prefix"])),
            ),
            row("PostgreSQL", self.pg.display.clone(), pg),
            row(
                "table",
                f.target.table.name.clone(),
                mine(from(&["--table"])),
            ),
            row(
                "code column",
                f.target.code_column.name.clone(),
                mine(from(&["--code-column"])),
            ),
            row(
                "count column",
                f.target.count_column.name.clone(),
                mine(from(&["--count-column"])),
            ),
        ]
    }
}
