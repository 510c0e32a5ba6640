//! redis-flusher moves URL hit counters from Redis into PostgreSQL, exactly once.
//!
//! `main.rs` parses and calls [`execute`], which runs one command. Data flows `config` →
//! `redis` (the source) → `flush` (the order of steps) → `postgres` (the sink) → `report` →
//! `output`; each module says at its top what it owns. docs/design.md ("Module map") has the
//! whole map.

pub mod check;
pub mod cli;
pub mod config;
pub mod deadline;
pub mod demo;
pub mod dry_run;
pub mod error;
pub mod fault;
pub mod flush;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod output;
pub mod postgres;
pub mod progress;
pub mod redis;
pub mod report;
pub mod scan;
pub mod status;
pub mod stop;
pub mod tls;

use std::process::ExitCode;

use anyhow::{Context, Result};

use cli::{Cli, Command};
use config::{Config, UsageError};
use output::{finish, write_stdout, Output};

/// Runs one command. `Err` is a failure before its work began: a [`UsageError`] (exit 2) or
/// one the caller reports with exit 1; a run's own failures are in its report.
pub fn execute(cli: Cli) -> Result<ExitCode> {
    // `check` lists them as failures; everything else warns.
    if !matches!(cli.command, Command::Check(_)) {
        for unknown in config::unknown_variables(&cli::variables()) {
            log::warn!("{unknown}");
        }
    }
    match cli.command {
        Command::Run(args) => {
            let cfg = Config::from_run_args(&args)?;
            if cfg.redis.cluster && cfg.flush.source.keep_unknown {
                return Err(UsageError(
                    "`--keep-unknown` is not supported on a Redis Cluster yet (the hash would \
                     be in a slot of its own, and parking must be atomic with the journal's \
                     delete); unknown codes are recorded in the ledger either way"
                        .into(),
                )
                .into());
            }
            if !args.dry_run {
                // A dry run changes nothing, so it may as well die at once on a signal.
                stop::install().context("could not install the SIGTERM/SIGINT handler")?;
            }
            let out = Output {
                json: args.json,
                dry_run: args.dry_run,
                metrics_file: args.metrics_file,
            };
            // A hung Postgres ends the process from the watchdog thread; the report so far is
            // printed as at any other end.
            let on_hang = out.clone();
            deadline::on_expiry(move |e| {
                let mut report = report::so_far();
                report.fail(&e);
                finish(&report, &on_hang);
            });
            if args.dry_run {
                return Ok(finish(&dry_run::run(&cfg), &out));
            }
            if progress::wanted(out.json, args.no_progress) {
                progress::start();
            }
            let report = flush::run(&cfg);
            progress::finish();
            Ok(finish(&report, &out))
        }
        Command::Check(args) => {
            let cfg = Config::from_args(&args.conn, &args.target)?;
            let findings = check::run(&cfg);
            if args.json {
                write_stdout(format!("{}\n", serde_json::to_string(&findings)?).as_bytes())?;
            } else {
                write_stdout(findings.text().as_bytes())?;
            }
            Ok(if findings.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Status(args) => {
            let cfg = Config::from_args(&args.conn, &args.target)?;
            let status = match status::gather(&cfg, args.runs, args.max_age) {
                Ok(s) => s,
                // A person must act (a wrong password): exit 2, as for `run`.
                Err(e) if e.downcast_ref::<UsageError>().is_some() => return Err(e),
                Err(e) => {
                    log::error!("{}", crate::error::text(&e));
                    return Ok(ExitCode::from(1));
                }
            };
            if args.json {
                write_stdout(format!("{}\n", serde_json::to_string(&status)?).as_bytes())?;
            } else {
                write_stdout(status.text(&cfg.flush).as_bytes())?;
            }
            Ok(if status.healthy == Some(false) {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Completions { shell } => {
            // Into a buffer first: the generator panics on a failed write (a closed pipe).
            let mut script = Vec::new();
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "redis-flusher", &mut script);
            write_stdout(&script).map(|()| ExitCode::SUCCESS)
        }
        Command::Help { command } => {
            let text = cli::long_help(command.as_deref()).map_err(UsageError)?;
            write_stdout(text.as_bytes()).map(|()| ExitCode::SUCCESS)
        }
        Command::Man { dir } => {
            let cmd = <Cli as clap::CommandFactory>::command();
            if let Some(dir) = dir {
                clap_mangen::generate_to(cmd, &dir)
                    .with_context(|| format!("could not write man pages into {}", dir.display()))?;
                return Ok(ExitCode::SUCCESS);
            }
            let mut page = Vec::new();
            clap_mangen::Man::new(cmd)
                .render(&mut page)
                .context("could not render the man page")?;
            write_stdout(&page).map(|()| ExitCode::SUCCESS)
        }
        Command::Demo(args) => {
            let mut run = cli::run_args(demo::args(&args.table, &args.pattern))
                .map_err(|e| UsageError(e.to_string()))?;
            run.conn = args.conn;
            let cfg = Config::from_run_args(&run)?;
            if args.clean {
                return demo::clean(&cfg).map(|()| ExitCode::SUCCESS);
            }
            // Stopped and removed when the demo ends, whichever way.
            let servers = demo::Throwaway::start_missing(&cfg)?;
            match demo::run(&cfg, servers.started()) {
                Ok(r) => Ok(finish(&r, &Output::default())),
                Err(e) => {
                    log::error!("{}", crate::error::text(&e));
                    Ok(ExitCode::from(1))
                }
            }
        }
    }
}
