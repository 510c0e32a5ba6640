//! redis-flusher moves URL hit counters from Redis into PostgreSQL, exactly once.
//!
//! `main.rs` parses and calls [`execute`]; data flows `config` → `redis_source` → `flush` →
//! `postgres_sink` → `report`, and each module says at its top what it owns.

pub mod cli;
pub mod config;
pub mod deadline;
pub mod demo;
pub mod fault;
pub mod flush;
pub mod journal;
pub mod postgres_sink;
pub mod redis_source;
pub mod report;
pub mod stop;

use std::process::ExitCode;

use anyhow::{Context, Result};

use cli::{Cli, Command, TargetArgs};
use config::{FlushConfig, PgConfig, RedisConfig};
use report::{Report, Status};

/// Runs one command; `Err` is for usage errors found before any work started.
pub fn execute(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Run(args) => {
            let cfg = flush::Config {
                redis: RedisConfig::from_args(&args.conn)?,
                pg: PgConfig::from_args(&args.conn)?,
                flush: FlushConfig::from_args(&args.target)?,
            };
            if !args.dry_run {
                // A dry run changes nothing, so it may as well die at once on a signal.
                stop::install().context("could not install the SIGTERM/SIGINT handler")?;
            }
            let (json, dry_run) = (args.json, args.dry_run);
            // A hung Postgres ends the process from the watchdog thread; the report so far is
            // printed as at any other end.
            deadline::on_expiry(move |report| {
                finish(report, json, dry_run);
            });
            let report = flush::run(&cfg, dry_run);
            Ok(finish(&report, json, dry_run))
        }
        Command::Demo(args) => {
            let target = TargetArgs {
                pattern: args.pattern,
                table: args.table.clone(),
                code_column: "short_code".into(),
                count_column: "access_count".into(),
                batch_size: 10000,
                claim_size: 250,
                statement: cli::Statement::Unnest,
                keep_unknown: false,
                unknown_key: "redis_flusher:demo_unknown".into(),
                ledger_table: format!("{}_batches", args.table),
                ledger_days: 30,
                journal_prefix: "redis_flusher:demo_journal:".into(),
            };
            let flush_cfg = FlushConfig::from_args(&target)?;
            let report = demo::run(
                RedisConfig::from_args(&args.conn)?,
                PgConfig::from_args(&args.conn)?,
                flush_cfg,
            );
            match report {
                Ok(r) => Ok(finish(&r, false, false)),
                Err(e) => {
                    log::error!("{e:#}");
                    Ok(ExitCode::from(1))
                }
            }
        }
    }
}

/// Prints the report as asked and maps it to the exit code cron and monitoring see.
fn finish(report: &Report, json: bool, dry_run: bool) -> ExitCode {
    if report.status == Status::Failed {
        log::warn!("{}", report.summary());
    } else {
        log::info!("{}", report.summary());
    }
    if json {
        match serde_json::to_string(report) {
            Ok(s) => println!("{s}"),
            Err(e) => log::error!("BUG: the report cannot be written as JSON: {e}"),
        }
    } else if dry_run {
        print!("{}", report.dry_run_text());
    }
    match report.status {
        Status::Ok | Status::Locked => ExitCode::SUCCESS,
        Status::Failed => ExitCode::from(1),
    }
}
