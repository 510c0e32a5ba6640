//! What reaches stdout and the metrics file at the end of a run, and the exit code cron and
//! monitoring see.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::metrics;
use crate::report::{Report, Status};

/// Where and how a run's report goes.
#[derive(Debug, Clone, Default)]
pub struct Output {
    pub json: bool,
    pub dry_run: bool,
    pub metrics_file: Option<PathBuf>,
}

/// Prints the report as asked, writes the metrics file, and maps the report to the exit code
/// cron and monitoring see.
pub fn finish(report: &Report, out: &Output) -> ExitCode {
    if let Some(path) = &out.metrics_file {
        // A dry run flushed nothing, and a run that found the lock taken did nothing: the
        // run that holds the lock writes its own figures.
        if !out.dry_run && report.status != Status::Locked {
            if let Err(e) = metrics::write(path, report) {
                log::warn!("{e:#}");
            }
        }
    }
    if matches!(report.status, Status::Failed | Status::SetupError) {
        log::warn!("{}", report.summary());
    } else {
        log::info!("{}", report.summary());
    }
    if out.json {
        match serde_json::to_string(report) {
            Ok(s) => println!("{s}"),
            Err(e) => log::error!("BUG: the report cannot be written as JSON: {e}"),
        }
    } else if out.dry_run {
        print!("{}", report.dry_run_text());
    }
    match report.status {
        Status::Ok | Status::Locked => ExitCode::SUCCESS,
        Status::Failed => ExitCode::from(1),
        Status::SetupError => ExitCode::from(2),
    }
}

/// Writes generated text to stdout; a reader that went away (`| head`) is not an error.
pub fn write_stdout(bytes: &[u8]) -> Result<ExitCode> {
    use std::io::Write;
    match std::io::stdout().write_all(bytes) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(e).context("could not write to stdout")
        }
        _ => Ok(ExitCode::SUCCESS),
    }
}
