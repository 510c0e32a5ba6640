//! The last run's figures as Prometheus metrics ([`RunGauges`]): the families `--metrics-file`
//! writes for node_exporter's textfile collector, that a push to a Pushgateway carries, and
//! that `serve`'s /metrics shows beside its counters; in the classic text format (0.0.4),
//! which all three read. The file is written to a temp file in the same directory and renamed
//! over the old one, so the collector never reads half a file.

use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::report::{Report, Status};

const SUCCESS: &str = "redis_flusher_last_success_timestamp_seconds";

/// The content type of what [`encode`] writes.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

type Value = Gauge<f64, AtomicU64>;

/// The last run's figures, one gauge each.
#[derive(Debug, Default, Clone)]
pub struct RunGauges {
    ended: Value,
    success: Value,
    last_success: Value,
    duration: Value,
    keys: Value,
    hits: Value,
    unknown_codes: Value,
    unknown_hits: Value,
    bad_keys: Value,
    batches: Value,
    quarantined: Value,
    pending: Value,
}

/// A registry of redis-flusher's metrics: names start `redis_flusher_`.
pub fn registry() -> Registry {
    Registry::with_prefix("redis_flusher")
}

/// The metrics of `registry`, in the classic text format.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_text::encode(&mut out, registry);
    out
}

/// Now, in Unix time.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl RunGauges {
    /// Registers the gauges; `last_success` is left out when no successful run is known yet.
    pub fn register(&self, r: &mut Registry, last_success: bool) {
        let g = |g: &Value| g.clone();
        r.register(
            "last_run_timestamp_seconds",
            "When the last run ended, in Unix time",
            g(&self.ended),
        );
        r.register(
            "last_run_success",
            "1 if the last run flushed everything it found, 0 if not (nothing is lost; the \
             next run finishes the job)",
            g(&self.success),
        );
        if last_success {
            r.register(
                "last_success_timestamp_seconds",
                "When the last successful run ended, in Unix time",
                g(&self.last_success),
            );
        }
        let per_run: [(&str, &str, &Value); 9] = [
            (
                "last_run_duration_seconds",
                "How long the last run took",
                &self.duration,
            ),
            ("last_run_keys", "Counters the last run flushed", &self.keys),
            (
                "last_run_hits",
                "Hits the last run flushed, unknown codes' included",
                &self.hits,
            ),
            (
                "last_run_unknown_codes",
                "Codes with no row in the table, in the last run",
                &self.unknown_codes,
            ),
            (
                "last_run_unknown_hits",
                "Hits of codes with no row, in the last run",
                &self.unknown_hits,
            ),
            (
                "last_run_bad_keys",
                "Keys the last run left in Redis because they cannot be flushed",
                &self.bad_keys,
            ),
            (
                "last_run_batches",
                "Batches the last run applied",
                &self.batches,
            ),
            (
                "quarantined_codes",
                "Codes whose hits wait in the quarantine table after the last run (Postgres \
                 refused their rows; every run tries them again)",
                &self.quarantined,
            ),
            (
                "pending_journals",
                "Batches waiting in Redis journals after the last run, for the next run to \
                 apply",
                &self.pending,
            ),
        ];
        for (name, help, gauge) in per_run {
            r.register(name, help, g(gauge));
        }
    }

    /// Sets them to `report`'s figures, the run having ended at `now`; the last success time
    /// too when the run succeeded.
    pub fn set(&self, report: &Report, now: f64) {
        let ok = report.status == Status::Ok;
        self.ended.set(now);
        self.success.set(if ok { 1.0 } else { 0.0 });
        if ok {
            self.last_success.set(now);
        }
        self.duration.set(report.seconds);
        self.keys.set(report.keys as f64);
        self.hits.set(report.hits as f64);
        self.unknown_codes.set(report.unknown_codes as f64);
        self.unknown_hits.set(report.unknown_hits as f64);
        self.bad_keys.set(report.bad_keys as f64);
        self.batches.set(report.batches as f64);
        self.quarantined.set(report.quarantine_waiting as f64);
        self.pending.set(report.pending_journals as f64);
    }

    /// Sets the last success time (carried over from before this run).
    pub fn set_last_success(&self, at: f64) {
        self.last_success.set(at);
    }
}

/// The text for `report`, ending at `now`. `last_success` is carried over (from the previous
/// file) when this run did not succeed, so that an alert can say since when; without one, the
/// family is left out.
pub fn render(report: &Report, now: f64, last_success: Option<f64>) -> String {
    let gauges = RunGauges::default();
    let last = if report.status == Status::Ok {
        Some(now)
    } else {
        last_success
    };
    if let Some(t) = last {
        gauges.set_last_success(t);
    }
    gauges.set(report, now);
    let mut r = registry();
    gauges.register(&mut r, last.is_some());
    encode(&r)
}

/// Writes the metrics for `report` to `path`: a temporary file in the same directory, renamed
/// over the old one (readable by all, as node_exporter runs as its own user).
pub fn write(path: &Path, report: &Report) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let now = unix_now();
    let previous = std::fs::read_to_string(path).ok();
    let last_success = previous.as_deref().and_then(|text| {
        text.lines()
            .find_map(|l| l.strip_prefix(SUCCESS)?.trim().parse::<f64>().ok())
    });
    let text = render(report, now, last_success);
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".redis-flusher-metrics")
        .permissions(std::fs::Permissions::from_mode(0o644))
        .tempfile_in(dir)
        .with_context(|| {
            format!(
                "could not write the metrics file {}: no temporary file in {}",
                path.display(),
                dir.display()
            )
        })?;
    tmp.write_all(text.as_bytes())
        .with_context(|| format!("could not write the metrics file {}", path.display()))?;
    tmp.persist(path).map_err(|e| e.error).with_context(|| {
        format!(
            "could not move the metrics file into place at {}",
            path.display()
        )
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of metric `name` in `text`, as a number.
    fn value(text: &str, name: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn a_failed_run_keeps_the_last_success_time() {
        let mut r = Report::new(false, None);
        r.status = Status::Failed;
        let text = render(&r, 2000.0, Some(1000.0));
        assert_eq!(
            value(&text, "redis_flusher_last_run_success"),
            Some(0.0),
            "{text}"
        );
        assert_eq!(value(&text, SUCCESS), Some(1000.0), "{text}");
        let ok = render(&Report::new(false, None), 3000.0, Some(1000.0));
        assert_eq!(value(&ok, SUCCESS), Some(3000.0), "{ok}");
        assert_eq!(value(&render(&r, 2000.0, None), SUCCESS), None);
    }

    /// What node_exporter and a Pushgateway read: the classic format, a HELP and a TYPE line
    /// a family, nothing of OpenMetrics' (`# EOF`, `_created`), a newline at the end.
    #[test]
    fn the_text_is_the_classic_format() {
        let mut r = Report::new(false, None);
        r.keys = 7;
        let text = render(&r, 2000.0, None);
        assert!(
            text.contains("# TYPE redis_flusher_last_run_keys gauge\n"),
            "{text}"
        );
        assert_eq!(value(&text, "redis_flusher_last_run_keys"), Some(7.0));
        assert!(
            !text.contains("# EOF") && !text.contains("_created"),
            "{text}"
        );
        assert!(text.ends_with('\n'));
    }
}
