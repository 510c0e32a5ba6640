//! The command line: clap derive types whose doc comments are `--help`, the man pages and the
//! completions. `help.rs` holds the texts every command's help ends with; `given.rs` parses
//! and says where each setting came from.
//!
//! Nothing here validates or connects; `config/` turns these into a `Config`.
//! Passwords are deliberately not flags (they would show in `ps` and shell history):
//! they come from the environment or `.env` only, and `config/` reads them.

mod conn;
mod given;
mod help;
mod monitor;
mod target;

pub use conn::ConnArgs;
pub use given::Given;
pub use given::{parse_with_sources, run_args, variables, How};
pub(crate) use help::long_help;
use help::{
    CHECK_LONG_AFTER, CHECK_SHORT_AFTER, LONG_AFTER, SERVE_LONG_AFTER, SERVE_SHORT_AFTER,
    SHORT_AFTER, TOP_HELP,
};
pub use monitor::{parse_duration, MonitorArgs};
pub use target::{Statement, TargetArgs};

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

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

    /// Run a flush every `--interval`, for as long as it runs: for Kubernetes and systemd.
    ///
    /// Each run is what `run` does (the lock, recovery first, the same log lines); a run that
    /// fails does not end it, and a run that finds the lock held (another replica flushing)
    /// waits for the next tick, so two replicas are a hot standby. With `--listen`, it serves
    /// /metrics, /healthz and /readyz. SIGTERM or SIGINT stops it at the next safe point:
    /// exit 0 within `--shutdown-timeout`.
    ///
    /// Examples:
    ///   redis-flusher serve --interval 1m --listen 0.0.0.0:8397
    ///   redis-flusher serve --interval 5m --metrics-push-url http://pushgateway:9091
    #[command(after_help = SERVE_SHORT_AFTER, after_long_help = SERVE_LONG_AFTER, verbatim_doc_comment)]
    Serve(ServeArgs),

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
    Completions {
        /// The shell: bash, zsh, fish, elvish or powershell
        shell: clap_complete::Shell,
    },

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

impl Command {
    /// Whether the command's result goes to stdout as JSON (`--json`).
    pub fn json(&self) -> bool {
        match self {
            Command::Run(a) => a.json,
            Command::Check(a) => a.json,
            Command::Status(a) => a.json,
            _ => false,
        }
    }
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

    #[command(flatten)]
    pub monitor: MonitorArgs,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub conn: ConnArgs,

    #[command(flatten)]
    pub target: TargetArgs,

    /// How often a run starts: seconds, or a duration like `5m`
    ///
    /// From the start of one run to the start of the next; a run that takes longer starts the
    /// next at once, never two at a time.
    #[arg(
        long,
        env = "REDIS_FLUSHER_INTERVAL",
        default_value = "60s",
        value_name = "DURATION",
        value_parser = parse_duration,
        help_heading = "Serving"
    )]
    pub interval: Duration,

    /// Serve /metrics, /healthz and /readyz over HTTP here, e.g. `0.0.0.0:8397`
    ///
    /// None unless set. /metrics: Prometheus text, cumulative since start. /healthz: 200
    /// while the last run that flushed (or found another replica flushing) is younger than
    /// `--max-age`, else 503 and why. /readyz: 200 once the first run has finished.
    #[arg(
        long,
        env = "REDIS_FLUSHER_LISTEN",
        value_name = "HOST:PORT",
        help_heading = "Serving"
    )]
    pub listen: Option<String>,

    /// /healthz turns 503 when no run has flushed for this long [default: 3 intervals]
    #[arg(
        long,
        env = "REDIS_FLUSHER_MAX_AGE",
        value_name = "DURATION",
        value_parser = parse_duration,
        help_heading = "Serving"
    )]
    pub max_age: Option<Duration>,

    #[command(flatten)]
    pub monitor: MonitorArgs,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub conn: ConnArgs,

    #[command(flatten)]
    pub target: TargetArgs,

    /// The metrics file runs will write: checked to be writable
    #[arg(
        hide_short_help = true,
        long,
        env = "REDIS_FLUSHER_METRICS_FILE",
        value_name = "PATH",
        help_heading = "Monitoring"
    )]
    pub metrics_file: Option<PathBuf>,

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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

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
