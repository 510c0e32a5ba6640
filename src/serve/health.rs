//! What `serve`'s runs came to, for its probes and its metrics: whether it is ready (a run has
//! finished), and whether it is healthy (a run has flushed, or found another replica holding
//! the lock, within `--max-age`, and the last runs did not all fail).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::output::metrics::{self, RunGauges};
use crate::report::{Report, Status};

/// Failed runs in a row that make /healthz fail, however recent the last good run.
pub const FAILURES: u32 = 5;

/// A run's result, as `redis_flusher_runs_total` labels it.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
enum RunResult {
    ok,
    failed,
    locked,
    stopped,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    result: RunResult,
}

/// The cumulative metrics of `serve` (since it started), and the last run's gauges.
struct Counters {
    runs: Family<RunLabels, Counter>,
    keys: Counter,
    hits: Counter,
    unknown_hits: Counter,
    duration: Histogram,
    gauges: RunGauges,
}

struct State {
    started: Instant,
    /// When the last run that flushed, or found another replica flushing, ended.
    last_good: Option<Instant>,
    /// Failed runs in a row, and the last one's first error.
    failures: u32,
    last_error: Option<String>,
    finished_runs: u64,
}

/// `serve`'s state, shared with its HTTP thread.
pub struct Health {
    max_age: Duration,
    state: Mutex<State>,
    counters: Counters,
    registry: Registry,
}

impl Health {
    pub fn new(max_age: Duration) -> Health {
        let counters = Counters {
            runs: Family::default(),
            keys: Counter::default(),
            hits: Counter::default(),
            unknown_hits: Counter::default(),
            duration: Histogram::new([
                0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
            ]),
            gauges: RunGauges::default(),
        };
        let mut r = metrics::registry();
        r.register(
            "runs",
            "Runs since serve started, by result",
            counters.runs.clone(),
        );
        for result in [
            RunResult::ok,
            RunResult::failed,
            RunResult::locked,
            RunResult::stopped,
        ] {
            let _ = counters.runs.get_or_create(&RunLabels { result });
        }
        r.register(
            "keys_flushed",
            "Counters flushed since serve started",
            counters.keys.clone(),
        );
        r.register(
            "hits_flushed",
            "Hits flushed since serve started, unknown codes' included",
            counters.hits.clone(),
        );
        r.register(
            "unknown_hits",
            "Hits of codes with no row, since serve started",
            counters.unknown_hits.clone(),
        );
        r.register(
            "run_duration_seconds",
            "How long runs took",
            counters.duration.clone(),
        );
        // Until a run succeeds the last success time is 0 (1970): as stale as it gets.
        counters.gauges.register(&mut r, true);
        Health {
            max_age,
            state: Mutex::new(State {
                started: Instant::now(),
                last_good: None,
                failures: 0,
                last_error: None,
                finished_runs: 0,
            }),
            counters,
            registry: r,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a finished run.
    pub fn record(&self, report: &Report) {
        let c = &self.counters;
        let result = match report.status {
            Status::Ok => RunResult::ok,
            Status::Locked => RunResult::locked,
            Status::Stopped => RunResult::stopped,
            Status::Failed | Status::SetupError => RunResult::failed,
        };
        c.runs.get_or_create(&RunLabels { result }).inc();
        // Counters only grow: a run whose hits were negative (decrements) adds none.
        c.keys.inc_by(report.keys);
        c.hits.inc_by(u64::try_from(report.hits).unwrap_or(0));
        c.unknown_hits
            .inc_by(u64::try_from(report.unknown_hits).unwrap_or(0));
        c.duration.observe(report.seconds);
        // The last run's gauges are the flushing replica's: a standby's runs (the lock held)
        // leave them as they are, as they leave the metrics file.
        if report.status != Status::Locked {
            c.gauges.set(report, metrics::unix_now());
        }
        let mut s = self.state();
        s.finished_runs += 1;
        match report.status {
            Status::Ok | Status::Locked => {
                s.last_good = Some(Instant::now());
                s.failures = 0;
                s.last_error = None;
            }
            Status::Failed | Status::SetupError => {
                s.failures += 1;
                s.last_error = report.errors.first().cloned();
            }
            Status::Stopped => {}
        }
    }

    /// /readyz: whether a run has finished.
    pub fn ready(&self) -> bool {
        self.state().finished_runs > 0
    }

    /// /healthz: Ok, or why not.
    pub fn healthy(&self) -> std::result::Result<String, String> {
        let s = self.state();
        let since = s.last_good.unwrap_or(s.started);
        let age = since.elapsed();
        let why_failing = || match &s.last_error {
            Some(e) => format!("; the last failed: {e}"),
            None => String::new(),
        };
        if age > self.max_age {
            return Err(format!(
                "unhealthy: no run has flushed for {} s, more than --max-age ({} s){}; {} failed \
                 in a row",
                age.as_secs(),
                self.max_age.as_secs(),
                why_failing(),
                s.failures
            ));
        }
        if s.failures >= FAILURES {
            return Err(format!(
                "unhealthy: the last {} runs failed{}",
                s.failures,
                why_failing()
            ));
        }
        Ok(match s.last_good {
            Some(t) => format!(
                "ok: the last good run ended {} s ago",
                t.elapsed().as_secs()
            ),
            None => "ok: no run has finished yet".into(),
        })
    }

    /// /metrics.
    pub fn metrics(&self) -> String {
        metrics::encode(&self.registry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(status: Status) -> Report {
        let mut r = Report::new(false, None);
        r.status = status;
        r.keys = 3;
        r.hits = 10;
        if status == Status::Failed {
            r.errors.push("Postgres went away".into());
        }
        r
    }

    #[test]
    fn five_failures_in_a_row_are_unhealthy_and_a_good_run_mends_it() {
        let h = Health::new(Duration::from_secs(3600));
        assert!(!h.ready());
        assert!(h.healthy().is_ok());
        h.record(&report(Status::Ok));
        assert!(h.ready());
        for _ in 0..FAILURES - 1 {
            h.record(&report(Status::Failed));
        }
        assert!(h.healthy().is_ok());
        h.record(&report(Status::Failed));
        let why = h.healthy().unwrap_err();
        assert!(
            why.contains("the last 5 runs failed") && why.contains("Postgres went away"),
            "{why}"
        );
        // Another replica flushing is as good as flushing.
        h.record(&report(Status::Locked));
        assert!(h.healthy().is_ok());
    }

    #[test]
    fn no_good_run_within_max_age_is_unhealthy() {
        let h = Health::new(Duration::ZERO);
        std::thread::sleep(Duration::from_millis(5));
        assert!(h.healthy().unwrap_err().contains("no run has flushed"));
    }

    #[test]
    fn the_counters_add_up_runs() {
        let h = Health::new(Duration::from_secs(60));
        h.record(&report(Status::Ok));
        h.record(&report(Status::Ok));
        h.record(&report(Status::Locked));
        let text = h.metrics();
        for line in [
            "redis_flusher_runs_total{result=\"ok\"} 2",
            "redis_flusher_runs_total{result=\"locked\"} 1",
            "redis_flusher_runs_total{result=\"failed\"} 0",
            "redis_flusher_keys_flushed_total 9",
            "redis_flusher_hits_flushed_total 30",
            "redis_flusher_run_duration_seconds_count 3",
        ] {
            assert!(text.contains(&format!("{line}\n")), "{line}: {text}");
        }
    }
}
