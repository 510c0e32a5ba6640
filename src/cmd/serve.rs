//! `redis-flusher serve`: settings read once, checked at start (exit 2), then `serve/`.

use anyhow::{Context, Result};

use crate::cli::ServeArgs;
use crate::config::Config;
use crate::notify::Targets;
use crate::output::Output;
use crate::report::Status;
use crate::serve::{serve as serve_runs, Schedule};
use crate::sys::stop;

pub fn serve(args: ServeArgs) -> Result<Status> {
    let cfg = Config::for_flush(&args.conn, &args.target)?;
    let targets = Targets::from_args(&args.monitor, &cfg.flush)?;
    if args.interval.is_zero() {
        return Err(crate::config::UsageError(
            "`--interval` (`REDIS_FLUSHER_INTERVAL`) is 0: give how often a run starts, e.g. \
             `60s` or `5m`"
                .into(),
        )
        .into());
    }
    let schedule = Schedule {
        interval: args.interval,
        max_age: args.max_age.unwrap_or(args.interval * 3),
        listen: args.listen.filter(|l| !l.trim().is_empty()),
    };
    stop::install(args.monitor.shutdown_timeout)
        .context("could not install the SIGTERM/SIGINT handler")?;
    let out = Output {
        metrics_file: args.monitor.metrics_file,
        quiet: true,
        ..Output::default()
    };
    super::run::on_hang(out.clone());
    serve_runs(&cfg, &schedule, &out, targets)
}
