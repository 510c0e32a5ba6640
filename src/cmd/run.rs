//! `redis-flusher run`: one flush (or, with `--dry-run`, what one would do), its report on
//! stdout and in the metrics file as asked.

use anyhow::{Context, Result};

use crate::cli::RunArgs;
use crate::config::Config;
use crate::output::{finish, progress, Output};
use crate::report::{self, Status};
use crate::sys::{deadline, stop};

pub fn run(args: RunArgs) -> Result<Status> {
    let cfg = Config::from_run_args(&args)?;
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
        return Ok(finish(&super::dry_run::run(&cfg), &out));
    }
    if progress::wanted(out.json, args.no_progress) {
        progress::start();
    }
    let report = crate::flush::run(&cfg);
    progress::finish();
    Ok(finish(&report, &out))
}
