//! `--metrics-file`: the last run's figures in the Prometheus text format, for
//! node_exporter's textfile collector. Written to a temp file in the same directory and
//! renamed over the old one, so the collector never reads half a file.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};

use crate::report::{Report, Status};

const SUCCESS: &str = "redis_flusher_last_success_timestamp_seconds";

/// The file's text for `report`, ending at `now`. `last_success` is carried over from the
/// previous file when this run failed, so that an alert can say since when.
pub fn render(report: &Report, now: f64, last_success: Option<f64>) -> String {
    let ok = report.status == Status::Ok;
    let last_success = if ok { Some(now) } else { last_success };
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, value: f64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
        );
    };
    gauge(
        "redis_flusher_last_run_timestamp_seconds",
        "When the last run ended, in Unix time.",
        now,
    );
    gauge(
        "redis_flusher_last_run_success",
        "1 if the last run flushed everything it found, 0 if it failed (nothing is lost; the \
         next run finishes the job).",
        if ok { 1.0 } else { 0.0 },
    );
    if let Some(t) = last_success {
        gauge(
            SUCCESS,
            "When the last successful run ended, in Unix time.",
            t,
        );
    }
    gauge(
        "redis_flusher_last_run_duration_seconds",
        "How long the last run took.",
        report.seconds,
    );
    gauge(
        "redis_flusher_last_run_keys",
        "Counters the last run flushed.",
        report.keys as f64,
    );
    gauge(
        "redis_flusher_last_run_hits",
        "Hits the last run flushed, unknown codes' included.",
        report.hits as f64,
    );
    gauge(
        "redis_flusher_last_run_unknown_codes",
        "Codes with no row in the table, in the last run.",
        report.unknown_codes as f64,
    );
    gauge(
        "redis_flusher_last_run_unknown_hits",
        "Hits of codes with no row, in the last run.",
        report.unknown_hits as f64,
    );
    gauge(
        "redis_flusher_last_run_bad_keys",
        "Keys the last run left in Redis because they cannot be flushed.",
        report.bad_keys as f64,
    );
    gauge(
        "redis_flusher_last_run_batches",
        "Batches the last run applied.",
        report.batches as f64,
    );
    gauge(
        "redis_flusher_quarantined_codes",
        "Codes whose hits wait in the quarantine table after the last run (Postgres refused their rows; every run tries them again).",
        report.quarantine_waiting as f64,
    );
    gauge(
        "redis_flusher_pending_journals",
        "Batches waiting in Redis journals after the last run, for the next run to apply.",
        report.pending_journals as f64,
    );
    out
}

/// Writes the metrics for `report` to `path`: a temporary file in the same directory, renamed
/// over the old one (readable by all, as node_exporter runs as its own user).
pub fn write(path: &Path, report: &Report) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
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

    #[test]
    fn a_failed_run_keeps_the_last_success_time() {
        let mut r = Report::new(false, None);
        r.status = Status::Failed;
        let text = render(&r, 2000.0, Some(1000.0));
        assert!(
            text.contains("\nredis_flusher_last_run_success 0\n"),
            "{text}"
        );
        assert!(text.contains(&format!("\n{SUCCESS} 1000\n")), "{text}");
        let ok = render(&Report::new(false, None), 3000.0, Some(1000.0));
        assert!(ok.contains(&format!("\n{SUCCESS} 3000\n")), "{ok}");
    }
}
