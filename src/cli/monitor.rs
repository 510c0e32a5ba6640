//! How a run is watched from outside: the metrics file, a Pushgateway, a cron monitor's pings;
//! and how long a stop may take. The flags `run` and `serve` share.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

#[derive(Debug, Args, Clone)]
pub struct MonitorArgs {
    /// After each run, write its figures to this file for Prometheus
    ///
    /// In the Prometheus text format, for node_exporter's textfile collector, e.g.
    /// /var/lib/node_exporter/textfile_collector/redis_flusher.prom
    #[arg(
        long,
        env = "REDIS_FLUSHER_METRICS_FILE",
        value_name = "PATH",
        help_heading = "Monitoring"
    )]
    pub metrics_file: Option<PathBuf>,

    /// After each run, push its figures to this Prometheus Pushgateway (its base URL)
    ///
    /// Grouped as job="redis-flusher" and journal_prefix (so that two flushers stay apart). A
    /// run that succeeded replaces the group (PUT); one that did not replaces its own figures
    /// and keeps the last success time (POST). A few seconds at most, after the run; never
    /// changes its exit code.
    #[arg(
        long,
        env = "REDIS_FLUSHER_METRICS_PUSH_URL",
        hide_env_values = true,
        value_name = "URL",
        help_heading = "Monitoring"
    )]
    pub metrics_push_url: Option<String>,

    /// Ping a cron monitor here (healthchecks.io's protocol): URL/start, then URL/<exit code>
    ///
    /// The run's summary line is the end ping's body. A healthchecks.io ping URL, or a
    /// self-hosted Healthchecks'. A few seconds at most; never changes the run's exit code.
    /// The URL is a secret: it is shown as its host only.
    #[arg(
        hide_short_help = true,
        long,
        env = "REDIS_FLUSHER_PING_URL",
        hide_env_values = true,
        value_name = "URL",
        help_heading = "Monitoring"
    )]
    pub ping_url: Option<String>,

    /// How long a stop (SIGTERM, SIGINT) may take: seconds, or a duration like `20s`
    ///
    /// The run claims nothing more and commits (or rolls back) the transaction it is in; past
    /// this, the process ends anyway, which is safe (what is not committed waits in its
    /// journal). Keep it under the platform's grace period (Kubernetes: 30 s).
    #[arg(
        hide_short_help = true,
        long,
        env = "REDIS_FLUSHER_SHUTDOWN_TIMEOUT",
        default_value = "20s",
        value_name = "DURATION",
        value_parser = parse_duration,
        help_heading = "Monitoring"
    )]
    pub shutdown_timeout: Duration,
}

/// A duration as an operator writes it: a number of seconds (`60`), or humantime's `5m`,
/// `1h 30m`, `500ms`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(s)
        .map_err(|e| format!("{e} (a number of seconds, or a duration like `90s`, `5m`, `1h`)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_seconds_or_humantime() {
        assert_eq!(parse_duration("60"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration(" 5m "), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("5 minutes please").is_err());
        assert!(parse_duration("-5").is_err());
    }
}
