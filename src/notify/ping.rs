//! A cron monitor's pings (healthchecks.io's protocol): `URL/start` when a run starts,
//! `URL/<exit code>` when it ends, the run's summary line as its body, so that a run that
//! never starts, never ends or fails is noticed where cron would say nothing.

use super::http::{send, Endpoint};

/// The body a monitor keeps as the ping's log.
const TEXT: &str = "text/plain; charset=utf-8";

pub fn start(agent: &ureq::Agent, monitor: &Endpoint) {
    ping(agent, monitor, "/start", "");
}

pub fn end(agent: &ureq::Agent, monitor: &Endpoint, exit_code: u8, summary: &str) {
    ping(agent, monitor, &format!("/{exit_code}"), summary);
}

fn ping(agent: &ureq::Agent, monitor: &Endpoint, what: &str, body: &str) {
    let url = monitor.join(what);
    if let Err(e) = send(agent, monitor, "POST", &url, TEXT, body) {
        log::warn!(
            "could not ping the monitor at {} ({what}: {e}); the run's outcome stands",
            monitor.shown
        );
    }
}
