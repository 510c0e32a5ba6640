//! `redis-flusher run`: one flush (or, with `--dry-run`, what one would do), its report on
//! stdout, in the metrics file, to a Pushgateway and a cron monitor, as asked.

use anyhow::{Context, Result};

use crate::cli::RunArgs;
use crate::config::Config;
use crate::notify::{Notifier, Targets};
use crate::output::{finish, progress, Output};
use crate::report::{self, Status};
use crate::sys::deadline::{self, Expiry};
use crate::sys::stop;

pub fn run(args: RunArgs) -> Result<Status> {
    let cfg = Config::from_run_args(&args)?;
    let out = Output {
        json: args.json,
        dry_run: args.dry_run,
        metrics_file: args.monitor.metrics_file.clone(),
        quiet: false,
    };
    if args.dry_run {
        // A dry run changes nothing, so it may as well die at once on a signal; it tells
        // no monitor anything.
        on_hang(out.clone());
        return Ok(finish(&super::dry_run::run(&cfg), &out));
    }
    let targets = Targets::from_args(&args.monitor, &cfg.flush)?;
    stop::install(args.monitor.shutdown_timeout)
        .context("could not install the SIGTERM/SIGINT handler")?;
    on_hang(out.clone());
    if progress::wanted(out.json, args.no_progress) {
        progress::start();
    }
    let notifier = Notifier::start(targets);
    notifier.started();
    let report = crate::flush::run(&cfg);
    progress::finish();
    let status = finish(&report, &out);
    notifier.ended(&report);
    notifier.finish();
    Ok(status)
}

/// When the watchdog ends the process (a hung Postgres, or a stop past its timeout), the
/// report so far is printed as at any other end.
pub(super) fn on_hang(out: crate::output::Output) {
    deadline::on_expiry(move |why, e| {
        let mut report = report::so_far();
        match why {
            Expiry::Hung => report.fail(&e),
            Expiry::Shutdown => {
                report.fail(&stop::StopRequested(crate::sys::error::text(&e)).into())
            }
        }
        finish(&report, &out);
    });
}
