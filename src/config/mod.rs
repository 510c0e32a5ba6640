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
}

impl Config {
    /// The configuration `run`, `check` and `status` work with, from their parsed arguments.
    pub(crate) fn from_args(conn: &ConnArgs, target: &TargetArgs) -> anyhow::Result<Config> {
        Ok(Config {
            redis: RedisConfig::from_args(conn)?,
            pg: PgConfig::from_args(conn)?,
            flush: FlushConfig::from_args(target)?,
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
        vec![
            row("Redis", self.redis.display.clone(), redis),
            row(
                "pattern",
                String::from_utf8_lossy(&f.source.scan_match).into_owned(),
                from(&["--pattern"]),
            ),
            row(
                "journals",
                format!("{}…", f.source.journal_prefix),
                from(&["--journal-prefix"]),
            ),
            row("PostgreSQL", self.pg.display.clone(), pg),
            row("table", f.target.table.name.clone(), from(&["--table"])),
            row(
                "code column",
                f.target.code_column.name.clone(),
                from(&["--code-column"]),
            ),
            row(
                "count column",
                f.target.count_column.name.clone(),
                from(&["--count-column"]),
            ),
        ]
    }
}
