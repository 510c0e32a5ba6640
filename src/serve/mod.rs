//! `redis-flusher serve`: a flush every `--interval`, for as long as it runs, each one
//! exactly what `run` does (the lock, recovery first, the same log lines), for platforms that
//! run jobs as daemons (Kubernetes, systemd). A run that fails does not end it; a run that
//! finds the lock held (another replica flushing) waits for the next tick, so two replicas
//! are a hot standby. With `--listen`, /metrics, /healthz and /readyz (`http.rs`, from
//! `health.rs`).
//!
//! Each run connects afresh, as `run` does: a server that went away between runs is reached
//! again with the ordinary timeouts, and the measured cost of connecting (docs/performance.md)
//! is small beside an interval. Runs start an interval apart, start to start; one longer than
//! the interval is followed at once by the next, never two at a time.

mod health;
mod http;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;

use self::health::Health;
use crate::config::Config;
use crate::notify::{Notifier, Targets};
use crate::output::{finish, Output};
use crate::report::Status;
use crate::sys::stop;

/// How `serve` runs.
pub struct Schedule {
    pub interval: Duration,
    /// How long /healthz stays 200 without a run that flushed.
    pub max_age: Duration,
    /// Where /metrics, /healthz and /readyz are served, if anywhere.
    pub listen: Option<String>,
}

/// Runs flushes until a signal asks it to stop (then `Status::Stopped`, exit 0).
pub fn serve(cfg: &Config, schedule: &Schedule, out: &Output, targets: Targets) -> Result<Status> {
    let health = Arc::new(Health::new(schedule.max_age));
    let _listener = schedule
        .listen
        .as_deref()
        .map(|addr| http::Listener::start(addr, Arc::clone(&health)))
        .transpose()?;
    let notifier = Notifier::start(targets);
    log::info!(
        "serving: a run every {} (/healthz fails after {} without a run that flushed)",
        humantime::format_duration(schedule.interval),
        humantime::format_duration(schedule.max_age)
    );
    while !stop::requested() {
        let started = Instant::now();
        notifier.started();
        let report = crate::flush::run(cfg);
        finish(&report, out);
        health.record(&report);
        notifier.ended(&report);
        let next = started + schedule.interval;
        if !stop::requested() && next > Instant::now() {
            log::debug!(
                "next run in {:.1} s",
                next.saturating_duration_since(Instant::now()).as_secs_f64()
            );
        }
        if stop::wait_until(next) {
            break;
        }
    }
    notifier.finish();
    log::info!("stopped as asked; exiting");
    Ok(Status::Stopped)
}
