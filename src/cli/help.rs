//! The texts every command's help ends with (the exit codes, the environment, the `.env`
//! rules), and `redis-flusher help <command>`.

use clap::CommandFactory;

use super::Cli;

/// Exit codes, for every command's help (and the README, which quotes it).
macro_rules! exit_codes {
    () => {
        "\
Exit codes:
  0  done: flushed, nothing to flush, another run holds the lock, or stopped by SIGTERM or
     SIGINT (what it claimed is applied or waits in its journal)
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
  REDIS_FLUSHER_SHARDS         COUNT shards, this one's index in JOB_COMPLETION_INDEX
                               (a Kubernetes Indexed Job); or --shard INDEX/COUNT
  RUST_LOG                     log level (default info), e.g. RUST_LOG=debug
A variable named REDIS_*, DB_* or REDIS_FLUSHER_* that the flusher does not know (a typo)
is warned about, and `check` fails on it.

`.env` (or --env-file) is read as python-dotenv reads it: one NAME=value a line, the last
of two counting; `#` starts a comment at the start of a line or after a space; an unquoted
value is the rest of the line; \"double quotes\" take \\n and \\\" escapes, 'single quotes'
\\' alone; only ${VAR} and ${VAR:-default} expand ($VAR and $$ stay as written).
systemd's EnvironmentFile= parses differently (no expansion, no inline comments): give the
flusher its file with --env-file rather than EnvironmentFile=.

"
    };
}

pub(super) const SHORT_AFTER: &str = concat!(
    exit_codes!(),
    "\n\n`--help` for details, the environment and `.env` rules."
);
pub(super) const LONG_AFTER: &str = concat!(environment!(), exit_codes!());

/// `serve` runs until stopped: its own exit codes.
macro_rules! serve_exit_codes {
    () => {
        "\
Exit codes (a run that fails does not end `serve`: the log and /healthz say so):
  0  stopped by SIGTERM or SIGINT, at a safe point or at --shutdown-timeout
  1  a PostgreSQL call hung past its timeout (the watchdog ends the process; restart it)
  2  a person must change something first: a bad flag or value, an address it cannot
     listen on"
    };
}
pub(super) const SERVE_SHORT_AFTER: &str = concat!(
    serve_exit_codes!(),
    "\n\n`--help` for details, the environment and `.env` rules."
);
pub(super) const SERVE_LONG_AFTER: &str = concat!(environment!(), serve_exit_codes!());

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
pub(super) const CHECK_SHORT_AFTER: &str = concat!(
    check_exit_codes!(),
    "\n\n`--help` for details, the environment and `.env` rules."
);
pub(super) const CHECK_LONG_AFTER: &str = concat!(environment!(), check_exit_codes!());

pub(super) const TOP_HELP: &str = concat!(
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

/// The long help of `command` (or of the whole program), for `redis-flusher help <command>`.
pub(crate) fn long_help(command: Option<&str>) -> Result<String, String> {
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
