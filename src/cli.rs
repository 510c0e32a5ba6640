//! The command line: clap derive types whose doc comments are `--help`.
//!
//! Nothing here validates or connects; `config.rs` turns these into a `Config`.
//! Passwords are deliberately not flags (they would show in `ps` and shell history):
//! they come from the environment or `.env` only, and `config.rs` reads them.

use std::path::PathBuf;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

/// Exit codes, for every command's help (and the README, which quotes it).
macro_rules! exit_codes {
    () => {
        "\
Exit codes:
  0  done: flushed, nothing to flush, or another run holds the lock
  1  the run failed and the next run can finish it (a server down or too slow, a batch
     Postgres gave up on); nothing is lost, claimed hits wait in their journal
  2  a person must change something before any run can work (a bad flag or value, a
     wrong password, a missing table, column or privilege, wrong column types, a replica
     or read-only server); nothing was claimed"
    };
}

/// The environment, shown after each command's long help (`--help`).
macro_rules! environment {
    () => {
        "\
Environment (a flag wins over the environment, which wins over `.env`):
  REDIS_URL / DATABASE_URL     a URL wins over the separate parts
  REDIS_HOST REDIS_PORT REDIS_USERNAME REDIS_PASSWORD REDIS_DB
  DB_HOST DB_PORT DB_NAME DB_USER DB_PASSWORD
  REDIS_SENTINEL_PASSWORD      the sentinels' password, if they require one
  REDIS_PASSWORD_FILE DB_PASSWORD_FILE REDIS_SENTINEL_PASSWORD_FILE
                               read the password from this file instead
  REDIS_FLUSHER_*              the flags above, as [env: …] names each
  RUST_LOG                     log level (default info), e.g. RUST_LOG=debug
A variable named REDIS_*, DB_* or REDIS_FLUSHER_* that the flusher does not know (a typo)
is warned about, and `check` fails on it.

`.env` (or --env-file): one NAME=value a line; `#` starts a comment at the start of a line
or after a space; an unquoted value ends at a space and expands $VAR, \"double quotes\"
expand $VAR and \\n, 'single quotes' keep everything as written (use them for a password
with `$`, `#`, a space or quotes). systemd's EnvironmentFile=
parses differently (no $ expansion, no inline comments): give the flusher its file with
--env-file rather than EnvironmentFile=.

"
    };
}

const SHORT_AFTER: &str = concat!(
    exit_codes!(),
    "\n\n`--help` for details, the environment and `.env` rules."
);
const LONG_AFTER: &str = concat!(environment!(), exit_codes!());

/// `check` reports rather than runs: its own exit codes.
macro_rules! check_exit_codes {
    () => {
        "\
Exit codes:
  0  a flush could work (warnings included)
  1  it could not: each FAIL line says what to change
  2  a bad flag or value, or a `.env` that does not parse"
    };
}
const CHECK_SHORT_AFTER: &str = concat!(
    check_exit_codes!(),
    "\n\n`--help` for details, the environment and `.env` rules."
);
const CHECK_LONG_AFTER: &str = concat!(environment!(), check_exit_codes!());

const TOP_HELP: &str = concat!(
    "\
Getting started:
  redis-flusher demo                    try it on a demo table, with a few hits
  redis-flusher check                   is everything in place for a flush?
  redis-flusher run --dry-run           what a run would touch and do, changing nothing
  redis-flusher run                     flush now (cron or the systemd timer: every 5 minutes)
  redis-flusher status --max-age 15m    what waits, what the last runs did; exit 1 if stale
  redis-flusher help <command>          each command's options, examples and environment

",
    exit_codes!()
);

/// Moves URL hit counters from Redis into PostgreSQL, exactly once.
///
/// Each `url_hits:<code>` counter that the app INCRs is added to `urls.access_count` for that
/// code and removed from Redis. Nothing is lost and nothing is counted twice, whatever fails:
/// a failed or killed run leaves its claimed hits in a Redis journal that the next run applies.
#[derive(Debug, Parser)]
#[command(
    name = "redis-flusher",
    version,
    after_help = TOP_HELP,
    disable_help_subcommand = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Log lines as `text` (for people) or `json` (one object per line, for log shippers)
    #[arg(
        long,
        global = true,
        env = "REDIS_FLUSHER_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text,
        help_heading = "Output"
    )]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// `2026-11-23T05:00:00Z INFO  flushed …`
    Text,
    /// `{"ts":"2026-11-23T05:00:00Z","level":"INFO","msg":"flushed …"}`
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Flush the counters now: the command cron runs every few minutes.
    ///
    /// Recovers batches a failed run left behind, then SCANs the pattern, claims the counters
    /// in small atomic chunks and applies each batch in one Postgres transaction. Its first
    /// log line names what it touches and where each setting came from.
    ///
    /// Examples:
    ///   redis-flusher run
    ///   redis-flusher run --dry-run
    ///   redis-flusher run --json --keep-unknown >>/var/log/redis-flusher/runs.jsonl
    #[command(after_help = SHORT_AFTER, after_long_help = LONG_AFTER, verbatim_doc_comment)]
    Run(RunArgs),

    /// Check that a flush would work: connections, table, privileges, ledger, Redis settings.
    ///
    /// Run it before the first cron run, and after changing the setup. Shows what a run would
    /// touch and where each setting came from, then checks both connections, the table and its
    /// columns' types, the index on the code column, the role's privileges, the bookkeeping
    /// tables, and Redis persistence, eviction policy and scripting. Changes nothing. Each
    /// finding says what to do. Exit 0 when a flush could work (warnings included), 1 when
    /// it could not.
    ///
    /// Examples:
    ///   redis-flusher check
    ///   redis-flusher check --env-file /etc/redis-flusher/env
    #[command(
        after_help = CHECK_SHORT_AFTER,
        after_long_help = CHECK_LONG_AFTER,
        verbatim_doc_comment
    )]
    Check(CheckArgs),

    /// Show what waits in Redis, what failed runs left, and what the last runs did.
    ///
    /// Reads only. With `--max-age`, also a health verdict for monitoring: exit 1 when the last
    /// successful run ended longer ago than that (or none is recorded).
    ///
    /// Examples:
    ///   redis-flusher status
    ///   redis-flusher status --max-age 15m     # for a monitoring check
    ///   redis-flusher status --json
    #[command(after_help = SHORT_AFTER, after_long_help = LONG_AFTER, verbatim_doc_comment)]
    Status(StatusArgs),

    /// Try it out: create a demo table and a few hits, then flush them and show the result.
    ///
    /// Uses its own table (`redis_flusher_demo`) and keys (`redis_flusher_demo:*`), so it
    /// never touches real data. When no Redis or PostgreSQL answers at the configured address
    /// and nothing was configured, it starts private throwaway servers (`redis-server`,
    /// `initdb` and `postgres` must be installed) and stops them afterwards. `--clean` removes
    /// what an earlier demo left: its tables and every key it made.
    ///
    /// Examples:
    ///   redis-flusher demo                       # local servers, or throwaway ones
    ///   DATABASE_URL=postgres://me@db/app redis-flusher demo
    ///   redis-flusher demo --clean
    #[command(after_help = SHORT_AFTER, after_long_help = LONG_AFTER, verbatim_doc_comment)]
    Demo(DemoArgs),

    /// Print a shell completion script: bash, zsh, fish, elvish or powershell.
    ///
    /// Examples:
    ///   redis-flusher completions bash > /etc/bash_completion.d/redis-flusher
    ///   redis-flusher completions zsh > "${fpath[1]}/_redis-flusher"
    ///   redis-flusher completions fish > ~/.config/fish/completions/redis-flusher.fish
    #[command(verbatim_doc_comment)]
    Completions { shell: clap_complete::Shell },

    /// Print the man page (roff), or write one page per subcommand into a directory.
    ///
    /// Examples:
    ///   redis-flusher man > /usr/local/share/man/man1/redis-flusher.1
    ///   redis-flusher man --dir /usr/local/share/man/man1   # also redis-flusher-run.1, …
    #[command(verbatim_doc_comment)]
    Man {
        /// Write redis-flusher.1 and redis-flusher-<subcommand>.1 here instead
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },

    /// Print the help of a command (the long form, as `<command> --help` does).
    ///
    /// Examples:
    ///   redis-flusher help run
    ///   redis-flusher help
    #[command(verbatim_doc_comment)]
    Help {
        /// The command; without one, the overview
        command: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub conn: ConnArgs,

    #[command(flatten)]
    pub target: TargetArgs,

    /// Show what a run would touch and do, and change nothing
    ///
    /// The target and where each setting came from, then the keys, hits, rows, unknown codes,
    /// bad keys and pending journals a run would handle; nothing changes in Redis or
    /// Postgres.
    #[arg(long)]
    pub dry_run: bool,

    /// Print the report as one JSON object on stdout
    #[arg(long, help_heading = "Output")]
    pub json: bool,

    /// No progress line, even on a terminal (there is none under cron or with `--json`)
    #[arg(long, help_heading = "Output")]
    pub no_progress: bool,

    /// After each run, write its figures to this file for Prometheus
    ///
    /// In the Prometheus text format, for node_exporter's textfile collector, e.g.
    /// /var/lib/node_exporter/textfile_collector/redis_flusher.prom
    #[arg(
        long,
        env = "REDIS_FLUSHER_METRICS_FILE",
        value_name = "PATH",
        help_heading = "Output"
    )]
    pub metrics_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub conn: ConnArgs,

    #[command(flatten)]
    pub target: TargetArgs,

    /// Print the findings as one JSON object on stdout
    #[arg(long, help_heading = "Output")]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub conn: ConnArgs,

    #[command(flatten)]
    pub target: TargetArgs,

    /// Exit 1 (unhealthy) when the last successful run ended longer ago than this: `15m`, `1h`
    #[arg(long, env = "REDIS_FLUSHER_MAX_AGE", value_parser = humantime::parse_duration)]
    pub max_age: Option<std::time::Duration>,

    /// How many recent runs to list
    #[arg(long, default_value_t = 10)]
    pub runs: u32,

    /// Print the status as one JSON object on stdout
    #[arg(long, help_heading = "Output")]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub conn: ConnArgs,

    /// Table the demo creates and fills
    #[arg(long, default_value = "redis_flusher_demo")]
    pub table: String,

    /// Keys the demo INCRs: a literal prefix and one trailing `*`
    #[arg(long, default_value = "redis_flusher_demo:*")]
    pub pattern: String,

    /// Remove what a demo made (its tables, its keys, its journals) and run nothing
    #[arg(long)]
    pub clean: bool,
}

/// Where Redis and Postgres are. Passwords: `REDIS_PASSWORD`, `DB_PASSWORD` (environment only),
/// or the files `REDIS_PASSWORD_FILE`, `DB_PASSWORD_FILE` name.
#[derive(Debug, Args, Clone)]
pub struct ConnArgs {
    /// Read variables from this file instead of `./.env` (real environment variables win)
    #[arg(long, value_name = "PATH")]
    pub env_file: Option<PathBuf>,

    /// Redis URL: redis://user:pass@host:6379/0 (or rediss:// for TLS)
    ///
    /// Wins over the REDIS_HOST.. parts. With --redis-cluster, one or more seed nodes,
    /// comma-separated.
    #[arg(
        long,
        env = "REDIS_URL",
        hide_env_values = true,
        value_name = "URL",
        help_heading = "Connection: Redis"
    )]
    pub redis_url: Option<String>,

    /// Redis is a Redis Cluster: SCAN every master, claim slot by slot
    ///
    /// `REDIS_URL` (or the host and port) names seed nodes; the masters are read from
    /// `CLUSTER SLOTS`.
    #[arg(long, env = "REDIS_CLUSTER", help_heading = "Connection: Redis")]
    pub redis_cluster: bool,

    /// Redis Sentinel nodes, `host:port,host:port,…`, instead of a Redis address
    ///
    /// They name the current master of `--redis-sentinel-master`, which is checked to be a
    /// master and flushed as one Redis (`REDIS_PASSWORD`, `REDIS_USERNAME`, `REDIS_DB`,
    /// `REDIS_TLS` apply to it).
    #[arg(
        long,
        env = "REDIS_SENTINELS",
        value_name = "HOST:PORT,…",
        help_heading = "Connection: Redis"
    )]
    pub redis_sentinels: Option<String>,

    /// The master's name in Sentinel (`sentinel monitor <name> …`)
    #[arg(
        long,
        env = "REDIS_SENTINEL_MASTER",
        default_value = "mymaster",
        help_heading = "Connection: Redis"
    )]
    pub redis_sentinel_master: String,

    /// Sentinel ACL user, for sentinels that require auth (with `REDIS_SENTINEL_PASSWORD`)
    #[arg(
        hide_short_help = true,
        long,
        env = "REDIS_SENTINEL_USERNAME",
        help_heading = "Connection: Redis"
    )]
    pub redis_sentinel_username: Option<String>,

    /// Redis host
    #[arg(
        long,
        env = "REDIS_HOST",
        default_value = "localhost",
        help_heading = "Connection: Redis"
    )]
    pub redis_host: String,

    /// Redis port
    #[arg(
        long,
        env = "REDIS_PORT",
        default_value_t = 6379,
        help_heading = "Connection: Redis"
    )]
    pub redis_port: u16,

    /// Redis ACL user (with `REDIS_PASSWORD`)
    #[arg(long, env = "REDIS_USERNAME", help_heading = "Connection: Redis")]
    pub redis_username: Option<String>,

    /// Redis database number
    #[arg(
        long,
        env = "REDIS_DB",
        default_value_t = 0,
        help_heading = "Connection: Redis"
    )]
    pub redis_db: i64,

    /// Connect to Redis over TLS (a `rediss://` URL says so by itself)
    #[arg(long, env = "REDIS_TLS", help_heading = "Connection: Redis")]
    pub redis_tls: bool,

    /// CA certificate (PEM) of the Redis server, for a private CA
    ///
    /// Without it, the system's trusted CAs.
    #[arg(
        hide_short_help = true,
        long,
        env = "REDIS_CA_FILE",
        value_name = "PATH",
        help_heading = "Connection: Redis"
    )]
    pub redis_ca_file: Option<PathBuf>,

    /// Client certificate (PEM) for Redis servers that ask for one (`tls-auth-clients yes`)
    #[arg(
        hide_short_help = true,
        long,
        env = "REDIS_CLIENT_CERT_FILE",
        value_name = "PATH",
        help_heading = "Connection: Redis"
    )]
    pub redis_client_cert_file: Option<PathBuf>,

    /// The client certificate's private key (PEM)
    #[arg(
        hide_short_help = true,
        long,
        env = "REDIS_CLIENT_KEY_FILE",
        value_name = "PATH",
        help_heading = "Connection: Redis"
    )]
    pub redis_client_key_file: Option<PathBuf>,

    /// PostgreSQL URL: postgres://user:pass@host:5432/app, or libpq's `host=… dbname=…`
    ///
    /// Wins over the DB_HOST.. parts. A host that is a directory (`?host=/var/run/postgresql`)
    /// is a Unix socket.
    #[arg(
        long,
        env = "DATABASE_URL",
        hide_env_values = true,
        value_name = "URL",
        help_heading = "Connection: PostgreSQL"
    )]
    pub database_url: Option<String>,

    /// PostgreSQL host, or the directory of its Unix socket
    #[arg(
        long,
        env = "DB_HOST",
        default_value = "localhost",
        help_heading = "Connection: PostgreSQL"
    )]
    pub db_host: String,

    /// PostgreSQL port
    #[arg(
        long,
        env = "DB_PORT",
        default_value_t = 5432,
        help_heading = "Connection: PostgreSQL"
    )]
    pub db_port: u16,

    /// PostgreSQL database
    #[arg(
        long,
        env = "DB_NAME",
        default_value = "postgres",
        help_heading = "Connection: PostgreSQL"
    )]
    pub db_name: String,

    /// PostgreSQL user [default: postgres]
    ///
    /// With a `DATABASE_URL` that names none, the user this runs as, as psql does; with the
    /// `DB_*` parts, `postgres` (Unix socket included: for peer authentication there, set it
    /// to the user this runs as).
    #[arg(long, env = "DB_USER", help_heading = "Connection: PostgreSQL")]
    pub db_user: Option<String>,

    /// TLS to PostgreSQL: disable, prefer, require, verify-ca or verify-full
    ///
    /// As libpq spells it: disable, prefer (TLS if the server offers it, unverified), require
    /// (TLS, unverified unless --db-sslrootcert), verify-ca (the certificate is signed by the
    /// CA), verify-full (and names the host). `sslmode=` in `DATABASE_URL` wins.
    #[arg(
        long,
        env = "DB_SSLMODE",
        value_name = "MODE",
        help_heading = "Connection: PostgreSQL"
    )]
    pub db_sslmode: Option<String>,

    /// CA certificate (PEM) for verify-ca and verify-full
    ///
    /// Without it, the system's trusted CAs. `sslrootcert=` in `DATABASE_URL` wins.
    #[arg(
        hide_short_help = true,
        long,
        env = "DB_SSLROOTCERT",
        value_name = "PATH",
        help_heading = "Connection: PostgreSQL"
    )]
    pub db_sslrootcert: Option<PathBuf>,

    /// Seconds to wait for a connection to Redis or Postgres
    #[arg(
        long,
        env = "REDIS_FLUSHER_CONNECT_TIMEOUT",
        default_value_t = 10,
        value_name = "SECS",
        value_parser = clap::value_parser!(u64).range(1..=86400),
        help_heading = "Safety: timeouts, locks, replicas"
    )]
    pub connect_timeout: u64,

    /// Seconds one Redis command may take before the run gives up
    ///
    /// A claim takes about a millisecond.
    #[arg(
        long,
        env = "REDIS_FLUSHER_COMMAND_TIMEOUT",
        default_value_t = 10,
        value_name = "SECS",
        value_parser = clap::value_parser!(u64).range(1..=86400),
        help_heading = "Safety: timeouts, locks, replicas"
    )]
    pub command_timeout: u64,

    /// Seconds one Postgres statement may take (`statement_timeout`)
    ///
    /// 1 to 2147483, what Postgres takes; a server that does not answer at all is given up on
    /// 5 s later.
    #[arg(
        long,
        env = "REDIS_FLUSHER_STATEMENT_TIMEOUT",
        default_value_t = 60,
        value_name = "SECS",
        value_parser = clap::value_parser!(u64).range(1..=2147483),
        help_heading = "Safety: timeouts, locks, replicas"
    )]
    pub statement_timeout: u64,

    /// Seconds a batch may wait for a row the app has locked
    ///
    /// Then that batch waits in its journal for the next run and the others go on.
    #[arg(
        long,
        env = "REDIS_FLUSHER_LOCK_TIMEOUT",
        default_value_t = 10,
        value_name = "SECS",
        value_parser = clap::value_parser!(u64).range(1..=2147483),
        help_heading = "Safety: timeouts, locks, replicas"
    )]
    pub lock_timeout: u64,

    /// Before each COMMIT, wait until this many Redis replicas have the batch's claims
    ///
    /// Redis `WAIT`; a batch they do not confirm within `--command-timeout` is not committed
    /// and waits in its journal. Closes the window where a failover loses a claim Postgres
    /// has committed.
    #[arg(
        long,
        env = "REDIS_FLUSHER_WAIT_REPLICAS",
        default_value_t = 0,
        value_name = "N",
        help_heading = "Safety: timeouts, locks, replicas"
    )]
    pub redis_wait_replicas: u32,
}

/// What to flush, and where to.
#[derive(Debug, Args, Clone)]
pub struct TargetArgs {
    /// Keys to flush: a literal prefix and one trailing `*`; the code is the key minus the prefix
    #[arg(
        long,
        env = "REDIS_FLUSHER_PATTERN",
        default_value = "url_hits:*",
        help_heading = "Target"
    )]
    pub pattern: String,

    /// Table that holds one row per code
    #[arg(
        long,
        env = "REDIS_FLUSHER_TABLE",
        default_value = "urls",
        help_heading = "Target"
    )]
    pub table: String,

    /// Column of that table that holds the code
    #[arg(
        long,
        env = "REDIS_FLUSHER_CODE_COLUMN",
        default_value = "short_code",
        help_heading = "Target"
    )]
    pub code_column: String,

    /// Column the hits are added to
    #[arg(
        long,
        env = "REDIS_FLUSHER_COUNT_COLUMN",
        default_value = "access_count",
        help_heading = "Target"
    )]
    pub count_column: String,

    /// Keep hits for codes that have no row, in the Redis hash `--unknown-key`
    ///
    /// Moved there (code → hits) instead of dropped. Either way they are counted in the
    /// ledger.
    #[arg(long, env = "REDIS_FLUSHER_KEEP_UNKNOWN", help_heading = "Target")]
    pub keep_unknown: bool,

    /// Redis hash that `--keep-unknown` moves unknown codes' hits into
    #[arg(
        hide_short_help = true,
        long,
        env = "REDIS_FLUSHER_UNKNOWN_KEY",
        default_value = "redis_flusher:unknown",
        help_heading = "Target"
    )]
    pub unknown_key: String,

    /// Prefix of the Redis keys holding claimed, not yet applied batches
    ///
    /// Two flushers that share a Redis must use different prefixes (and `check` says so when
    /// a journal under this one was made for another target).
    #[arg(
        long,
        env = "REDIS_FLUSHER_JOURNAL_PREFIX",
        default_value = "redis_flusher:journal:",
        help_heading = "Target"
    )]
    pub journal_prefix: String,

    /// The most keys one Postgres transaction applies
    ///
    /// Batches start at 10000 keys, doubling to 50000, which they keep for a run's first
    /// million keys; a run past that is a backlog, and its transactions double again up to
    /// this (a large transaction costs less per key in a large table: one sorted pass over
    /// it). Past 250000 keys a transaction gathers several claimed batches in a temporary
    /// table, so memory stays about (N + 1) x 250000 x (16 + code length) bytes whatever this
    /// says. Also the most rows one transaction locks: set 50000 to keep every transaction
    /// short. Measured in docs/performance.md.
    #[arg(long, env = "REDIS_FLUSHER_BATCH_SIZE", default_value_t = 2_000_000,
          value_parser = clap::value_parser!(u32).range(1..=10_000_000),
          help_heading = "Batching")]
    pub batch_size: u32,

    /// Postgres connections applying batches at once
    ///
    /// Each transaction runs on one connection; its rows are locked in code order, as every
    /// transaction's are, so the flusher's own transactions cannot deadlock. Memory: up to
    /// N + 1 claimed batches at once (N applied, one being claimed). Behind PgBouncer, the pool
    /// must allow N + 1 server connections (one more renews the run lock). Measured in
    /// docs/performance.md.
    #[arg(long, env = "REDIS_FLUSHER_PG_CONNECTIONS", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(1..=64),
          help_heading = "Batching")]
    pub pg_connections: u32,

    /// Form of the bulk UPDATE: `unnest` (two array parameters) or `values`
    ///
    /// Both apply the same; unnest measured faster. `values` is a VALUES list of bound
    /// parameters.
    #[arg(hide_short_help = true, long, env = "REDIS_FLUSHER_STATEMENT", value_enum,
          default_value_t = Statement::Unnest, help_heading = "Batching")]
    pub statement: Statement,

    /// Keys per atomic Redis claim (one Lua script, which the app's INCRs wait behind)
    ///
    /// 250 measured about 0.5 ms a script.
    #[arg(long, env = "REDIS_FLUSHER_CLAIM_SIZE", default_value_t = 250,
          value_parser = clap::value_parser!(u32).range(1..=10000),
          help_heading = "Batching")]
    pub claim_size: u32,

    /// Postgres table recording applied batches (created if missing); makes retries safe
    #[arg(
        hide_short_help = true,
        long,
        env = "REDIS_FLUSHER_LEDGER_TABLE",
        default_value = "redis_flusher_batches",
        help_heading = "Bookkeeping tables"
    )]
    pub ledger_table: String,

    /// Postgres table with one row per run, read by `status` (created if missing)
    #[arg(
        hide_short_help = true,
        long,
        env = "REDIS_FLUSHER_RUNS_TABLE",
        default_value = "redis_flusher_runs",
        help_heading = "Bookkeeping tables"
    )]
    pub runs_table: String,

    /// Postgres table where hits Postgres refuses row by row wait (created if missing)
    ///
    /// A trigger, a constraint, a count past the column's range, a code matching several
    /// rows: that code's hits wait here and every run tries them again.
    #[arg(
        hide_short_help = true,
        long,
        env = "REDIS_FLUSHER_QUARANTINE_TABLE",
        default_value = "redis_flusher_quarantine",
        help_heading = "Bookkeeping tables"
    )]
    pub quarantine_table: String,

    /// Postgres table holding the run lock (created if missing)
    ///
    /// A lease per journal prefix and table, renewed while a run lasts.
    #[arg(
        hide_short_help = true,
        long,
        env = "REDIS_FLUSHER_LEASE_TABLE",
        default_value = "redis_flusher_leases",
        help_heading = "Bookkeeping tables"
    )]
    pub lease_table: String,

    /// Days of ledger and run rows to keep (the run history)
    #[arg(hide_short_help = true, long, env = "REDIS_FLUSHER_LEDGER_DAYS", default_value_t = 30,
          value_parser = clap::value_parser!(u32).range(1..),
          help_heading = "Bookkeeping tables")]
    pub ledger_days: u32,

    /// Seconds a run's lock outlives its last renewal
    ///
    /// Renewed every quarter of this: how long a run that died on another machine can keep
    /// the next runs waiting. A run on the same machine takes a dead run's lock at once.
    #[arg(hide_short_help = true, long, env = "REDIS_FLUSHER_LOCK_TTL", default_value_t = 60, value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(4..=86400),
          help_heading = "Safety: timeouts, locks, replicas")]
    pub lock_ttl: u64,
}

/// The form of the bulk UPDATE (`config::UpdateForm` is what the core sees).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Statement {
    /// `… FROM unnest($1::text[], $2::int8[]) AS d(code, count) …`
    Unnest,
    /// `… FROM (VALUES ($1::text, $2::int8), …) AS d(code, count) …`, at most 30,000 rows a
    /// statement (Postgres binds at most 65,535 parameters); a larger batch takes several, in
    /// its one transaction
    Values,
}

/// Where the value of one setting of the command came from, as clap saw it.
#[derive(Debug, Clone)]
pub struct Given {
    /// The flag, `--table`.
    pub flag: String,
    /// Its variable, if it has one: `REDIS_FLUSHER_TABLE`.
    pub var: Option<String>,
    pub how: How,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    Flag,
    /// The environment (or `.env`, which `config` tells apart).
    Env,
    Default,
    /// Not set, and no default.
    Absent,
}

/// Parses the command line (exiting on a usage error, as clap does), and says where each of
/// the chosen command's settings came from.
pub fn parse_with_sources<I, T>(args: I) -> (Cli, Vec<Given>)
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cmd = Cli::command();
    let matches = cmd.clone().get_matches_from(args);
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let mut given = Vec::new();
    if let Some((name, sub)) = matches.subcommand() {
        if let Some(sub_cmd) = cmd.find_subcommand(name) {
            for arg in sub_cmd.get_arguments() {
                let Some(long) = arg.get_long() else { continue };
                let how = match sub.value_source(arg.get_id().as_str()) {
                    Some(clap::parser::ValueSource::CommandLine) => How::Flag,
                    Some(clap::parser::ValueSource::EnvVariable) => How::Env,
                    Some(clap::parser::ValueSource::DefaultValue) => How::Default,
                    _ => How::Absent,
                };
                given.push(Given {
                    flag: format!("--{long}"),
                    var: arg.get_env().map(|v| v.to_string_lossy().into_owned()),
                    how,
                });
            }
        }
    }
    (cli, given)
}

/// Every variable some flag of some command reads.
pub fn variables() -> Vec<String> {
    fn walk(cmd: &clap::Command, out: &mut Vec<String>) {
        for arg in cmd.get_arguments() {
            if let Some(var) = arg.get_env() {
                out.push(var.to_string_lossy().into_owned());
            }
        }
        for sub in cmd.get_subcommands() {
            walk(sub, out);
        }
    }
    let mut out = Vec::new();
    walk(&Cli::command(), &mut out);
    out.sort();
    out.dedup();
    out
}

/// `redis-flusher <args>` parsed as `run` would be (environment included): the one way the
/// demo, the benchmark and the tests build a run's settings, so that they share its defaults.
pub fn run_args<I, T>(args: I) -> Result<RunArgs, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let argv = std::iter::once(std::ffi::OsString::from("redis-flusher"))
        .chain(args.into_iter().map(Into::into));
    match Cli::try_parse_from(argv)?.command {
        Command::Run(run) => Ok(run),
        _ => Err(Cli::command().error(
            clap::error::ErrorKind::InvalidSubcommand,
            "expected `run` and its arguments",
        )),
    }
}

/// The long help of `command` (or of the whole program), for `redis-flusher help <command>`.
pub fn long_help(command: Option<&str>) -> Result<String, String> {
    let mut cmd = Cli::command();
    cmd.build();
    let mut target = match command {
        None => cmd,
        Some(name) => match cmd.find_subcommand(name) {
            Some(sub) => sub.clone(),
            None => {
                let names: Vec<&str> = cmd
                    .get_subcommands()
                    .map(|s| s.get_name())
                    .filter(|n| *n != "help")
                    .collect();
                return Err(format!(
                    "no command `{name}`; the commands: {}",
                    names.join(", ")
                ));
            }
        },
    };
    Ok(target.render_long_help().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_args_are_a_run_or_an_error() {
        let run = run_args(["run", "--table", "t"]).unwrap();
        assert_eq!(run.target.table, "t");
        assert!(run_args(["status"]).is_err());
    }
}
