//! redis-flusher moves URL hit counters from Redis into PostgreSQL, exactly once.
//!
//! `main.rs` parses and calls [`execute`]; data flows `config` → `redis_source` → `flush` →
//! `postgres_sink` → `report`, and each module says at its top what it owns.

pub mod check;
pub mod cli;
pub mod config;
pub mod deadline;
pub mod demo;
pub mod fault;
pub mod flush;
pub mod journal;
pub mod metrics;
pub mod postgres_sink;
pub mod progress;
pub mod redis_cluster;
pub mod redis_source;
pub mod report;
pub mod status;
pub mod stop;
pub mod tls;

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
            if cfg.redis.cluster && cfg.flush.keep_unknown {
                return Err(config::UsageError(
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
            deadline::on_expiry(move |report| {
                finish(report, &on_hang);
            });
            if !out.dry_run && progress::wanted(out.json, args.no_progress) {
                progress::start();
            }
            let report = flush::run(&cfg, out.dry_run);
            progress::finish();
            Ok(finish(&report, &out))
        }
        Command::Check(args) => {
            let findings = check::run(
                &RedisConfig::from_args(&args.conn)?,
                &PgConfig::from_args(&args.conn)?,
                &FlushConfig::from_args(&args.target)?,
            );
            if args.json {
                println!("{}", serde_json::to_string(&findings)?);
            } else {
                print!("{}", findings.text());
            }
            Ok(if findings.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Status(args) => {
            let f = FlushConfig::from_args(&args.target)?;
            let status = status::gather(
                &RedisConfig::from_args(&args.conn)?,
                &PgConfig::from_args(&args.conn)?,
                &f,
                args.runs,
                args.max_age,
            );
            let status = match status {
                Ok(s) => s,
                Err(e) => {
                    log::error!("{e:#}");
                    return Ok(ExitCode::from(1));
                }
            };
            if args.json {
                println!("{}", serde_json::to_string(&status)?);
            } else {
                print!("{}", status.text(&f));
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
            write_stdout(&script)
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
            write_stdout(&page)
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
                runs_table: format!("{}_runs", args.table),
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
                Ok(r) => Ok(finish(&r, &Output::default())),
                Err(e) => {
                    log::error!("{e:#}");
                    Ok(ExitCode::from(1))
                }
            }
        }
    }
}

/// Writes generated text to stdout; a reader that went away (`| head`) is not an error.
fn write_stdout(bytes: &[u8]) -> Result<ExitCode> {
    use std::io::Write;
    match std::io::stdout().write_all(bytes) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("could not write to stdout")
        }
        _ => Ok(ExitCode::SUCCESS),
    }
}

/// Where and how a run's report goes.
#[derive(Debug, Clone, Default)]
struct Output {
    json: bool,
    dry_run: bool,
    metrics_file: Option<std::path::PathBuf>,
}

/// Prints the report as asked, writes the metrics file, and maps the report to the exit code
/// cron and monitoring see.
fn finish(report: &Report, out: &Output) -> ExitCode {
    let Output {
        json,
        dry_run,
        ref metrics_file,
    } = *out;
    if let Some(path) = metrics_file {
        // A dry run flushed nothing, and a run that found the lock taken did nothing: the
        // run that holds the lock writes its own figures.
        if !dry_run && report.status != Status::Locked {
            if let Err(e) = metrics::write(path, report) {
                log::warn!("{e:#}");
            }
        }
    }
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
