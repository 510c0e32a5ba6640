//! What a run shows: its report on stdout and in the metrics file at its end, and the one
//! place a command's outcome becomes the exit code cron and monitoring see ([`exit_code`]);
//! the progress line (`progress.rs`), the log lines (`logging.rs`), the metrics file's format
//! (`metrics.rs`).

pub mod logging;
pub mod metrics;
pub mod progress;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::report::{Report, Status};

/// Where and how a run's report goes.
#[derive(Debug, Clone, Default)]
pub struct Output {
    pub json: bool,
    pub dry_run: bool,
    pub metrics_file: Option<PathBuf>,
    /// Nothing on stdout (`serve`: its runs speak in the log).
    pub quiet: bool,
}

/// The exit code of a command that ended with `status`: 0 done (or locked out), 1 the next
/// run can finish it, 2 a person must change something first. The table every `--help`
/// prints (`cli/help.rs`).
pub fn exit_code(status: Status) -> ExitCode {
    ExitCode::from(code(status))
}

/// [`exit_code`] as a number (a cron monitor's ping carries it).
pub fn code(status: Status) -> u8 {
    match status {
        Status::Ok | Status::Locked | Status::Stopped => 0,
        Status::Failed => 1,
        Status::SetupError => 2,
    }
}

/// Prints the report as asked and writes the metrics file; returns how the run ended, as
/// the exit code will say it.
pub fn finish(report: &Report, out: &Output) -> Status {
    if let Some(path) = &out.metrics_file {
        // A dry run flushed nothing, and a run that found the lock taken did nothing: the
        // run that holds the lock writes its own figures.
        if !out.dry_run && report.status != Status::Locked {
            if let Err(e) = metrics::write(path, report) {
                log::warn!("{}", crate::sys::error::text(&e));
            }
        }
    }
    if matches!(report.status, Status::Failed | Status::SetupError) {
        log::warn!("{}", report.summary());
    } else {
        log::info!("{}", report.summary());
    }
    let text = if out.quiet {
        None
    } else if out.json {
        match serde_json::to_string(report) {
            Ok(s) => Some(s + "\n"),
            Err(e) => {
                log::error!("BUG: the report cannot be written as JSON: {e}");
                None
            }
        }
    } else if out.dry_run {
        Some(report.dry_run_text())
    } else if matches!(report.status, Status::Failed | Status::SetupError) {
        // Stdout says that it failed and what happened, for whoever reads only it; the
        // advice (a DBA's SQL, what to check) is in the log, once.
        let what: Vec<&str> = report
            .errors
            .iter()
            .map(|e| e.lines().next().unwrap_or_default())
            .collect();
        Some(format!(
            "run FAILED: {} (the log on stderr says what to do)\n",
            what.join("; ")
        ))
    } else {
        None
    };
    match text.map(|t| write_stdout(t.as_bytes())) {
        // The run's work is done either way; a report that could not be written is a
        // failure only when the run itself did not fail already.
        Some(Err(e)) => {
            log::error!(
                "could not write the report to stdout: {}",
                crate::sys::error::text(&e)
            );
            match report.status {
                Status::Ok | Status::Locked | Status::Stopped => Status::Failed,
                other => other,
            }
        }
        _ => report.status,
    }
}

/// Reports an error that ended a command before its work began, and says how the command
/// ended: logged (with a timestamp, as every line), and, when the command's result was asked
/// for as JSON, a JSON object on stdout too (`status`, `errors`), so that a reader of stdout
/// alone sees why.
pub fn fail_before_start(e: &anyhow::Error, json: bool) -> Status {
    let status = Status::of_error(e);
    let text = crate::sys::error::text(e);
    log::error!("{text}");
    if json {
        let object = serde_json::json!({ "status": status.as_str(), "errors": [text] });
        let _ = write_stdout(format!("{object}\n").as_bytes());
    }
    status
}

/// Writes text to stdout. A reader that went away (`| head`, a closed pipe) is not an error:
/// the output ends there, quietly, as ripgrep's does.
pub fn write_stdout(bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("could not write to stdout")
        }
        _ => Ok(()),
    }
}
