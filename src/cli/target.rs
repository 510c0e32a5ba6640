//! What to flush and where to, and how: the pattern, the table and its columns, the
//! bookkeeping tables, batching; the flags `run`, `check` and `status` share.

use clap::{Args, ValueEnum};

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

    /// This process's share of the keys: shard INDEX of COUNT, from 0 (`0/3`, `1/3`, `2/3`)
    ///
    /// Each shard owns a contiguous range of the 16,384 hash slots (a key's slot is the CRC16
    /// of its name, on one Redis as on a Cluster), claims only the keys in it, holds a run
    /// lock of its own, and recovers the journals of its range; COUNT may change between
    /// runs. Without it a run owns every slot. In a Kubernetes Indexed Job, set
    /// REDIS_FLUSHER_SHARDS=COUNT instead: the index comes from JOB_COMPLETION_INDEX.
    /// docs/scaling.md says when it helps.
    #[arg(
        long,
        env = "REDIS_FLUSHER_SHARD",
        value_name = "INDEX/COUNT",
        help_heading = "Target",
        hide_short_help = true
    )]
    pub shard: Option<String>,

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
    /// million keys. A run past that, or one its SCAN's progress says will pass two million,
    /// is a backlog: its transactions double again up to this (a large transaction costs
    /// less per key in a large table: one sorted pass over it), and its last ones shrink to
    /// half of what is left, so that the connections finish together. Past 250000 keys a
    /// transaction gathers several claimed batches in a temporary table, so memory stays
    /// about (N + 1) x 250000 x (16 + code length) bytes whatever this says. Also the most
    /// rows one transaction locks: set 50000 to keep every transaction short. Measured in
    /// docs/performance.md.
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
    /// The default keeps a script well under a millisecond (docs/performance.md).
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
