//! What a run did: counts, examples, timings (the tally, here), and how it reads (`text.rs`:
//! the summary log line, the dry run's text; `--json` is the struct itself); and the report so
//! far, for a run that must end early.
//!
//! Filled in by `flush/` and the dry run; printed by `output/`. Knows no SQL and no Lua.

mod text;

use text::capped;
pub use text::{count, quarantine_examples, show_bytes};

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;

use crate::config::{Setting, UsageError};
use crate::model::{BadReason, Poisoned, ScanStats, EXAMPLES};
use crate::sys::stop::StopRequested;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Everything claimed was applied (or nothing was there to flush).
    Ok,
    /// Another run holds the lock; this one did nothing.
    Locked,
    /// A signal asked it to stop before the end of its work: what it claimed is applied (or
    /// waits in its journal), and the next run flushes the rest.
    Stopped,
    /// Something failed; what was claimed stays in journals for the next run.
    Failed,
    /// The setup is wrong (a setting, the table, a privilege, the servers' roles): a person
    /// must change something before any run can work. Found before anything was claimed.
    SetupError,
}

impl Status {
    /// How a command that failed with `e` before its work began ended: a setup error when a
    /// person must change something ([`UsageError`]), else failed.
    pub fn of_error(e: &anyhow::Error) -> Status {
        if e.downcast_ref::<UsageError>().is_some() {
            Status::SetupError
        } else {
            Status::Failed
        }
    }

    /// As the run history and `--json` name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Locked => "locked",
            Status::Stopped => "stopped",
            Status::Failed => "failed",
            Status::SetupError => "setup_error",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct BadExample {
    /// The key, with bytes that are not UTF-8 shown as `\xNN`.
    pub key: String,
    pub reason: BadReason,
}

/// The report of one run; `--json` prints exactly these fields.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub status: Status,
    pub dry_run: bool,
    /// Counters claimed and applied (a dry run: that would be), recovered ones included.
    pub keys: u64,
    /// Their hits, unknown codes' included.
    pub hits: i128,
    /// Rows of the table whose count changed (would change).
    pub rows_updated: u64,
    /// Codes with no row in the table.
    pub unknown_codes: u64,
    pub unknown_hits: i128,
    pub unknown_examples: Vec<String>,
    /// The Redis hash holding unknown codes' hits (`--keep-unknown`); null when dropped.
    pub unknown_parked_in: Option<String>,
    /// Unknown codes this run parked there (those of earlier runs' batches it acknowledged
    /// included). Others are recorded in the ledger only, or, with Redis out of memory, wait
    /// in their journal for the next run to park them.
    pub unknown_parked: u64,
    /// Keys left untouched in Redis because they cannot be flushed.
    pub bad_keys: u64,
    pub bad_by_reason: BTreeMap<BadReason, u64>,
    pub bad_examples: Vec<BadExample>,
    /// Batches applied (would be applied).
    pub batches: u64,
    /// Batches that failed and wait in their journal for the next run.
    pub batches_failed: u64,
    /// Journals of earlier failed runs that this run finished.
    pub recovered_batches: u64,
    /// Journals still waiting (in a dry run: found waiting; in a run: left after a failure).
    pub pending_journals: u64,
    /// Codes Postgres refused row by row in this run's batches, and their hits: in the
    /// quarantine table now, tried again by every run.
    pub quarantined_codes: u64,
    pub quarantined_hits: i128,
    /// A few of them, with why.
    pub quarantine_examples: Vec<String>,
    /// Quarantined codes this run applied (or found without a row) on trying them again,
    /// and the hits that reached a row.
    pub released_from_quarantine: u64,
    pub released_hits: i128,
    /// Codes waiting in the quarantine when the run ended.
    pub quarantine_waiting: u64,
    /// Journals under this journal prefix that record another target (another flusher's,
    /// sharing the Redis and the prefix): left alone.
    pub other_targets_journals: u64,
    pub seconds: f64,
    /// What the run touches, and where each of those settings came from.
    pub target: Vec<Setting>,
    /// Time spent waiting for Redis (SCAN, claims, journal deletes) and for Postgres (the
    /// batches' transactions). Claims run beside the transactions, so these overlap.
    pub redis_seconds: f64,
    pub postgres_seconds: f64,
    pub errors: Vec<String>,
}

impl Report {
    pub fn new(dry_run: bool, keep_unknown: Option<&str>) -> Report {
        Report {
            status: Status::Ok,
            dry_run,
            keys: 0,
            hits: 0,
            rows_updated: 0,
            unknown_codes: 0,
            unknown_hits: 0,
            unknown_examples: Vec::new(),
            unknown_parked_in: keep_unknown.map(str::to_owned),
            unknown_parked: 0,
            bad_keys: 0,
            bad_by_reason: BTreeMap::new(),
            bad_examples: Vec::new(),
            batches: 0,
            batches_failed: 0,
            recovered_batches: 0,
            pending_journals: 0,
            other_targets_journals: 0,
            quarantined_codes: 0,
            quarantined_hits: 0,
            quarantine_examples: Vec::new(),
            released_from_quarantine: 0,
            released_hits: 0,
            quarantine_waiting: 0,
            target: Vec::new(),
            seconds: 0.0,
            redis_seconds: 0.0,
            postgres_seconds: 0.0,
            errors: Vec::new(),
        }
    }

    /// Runs `work` with a fresh report and returns it: a failure of `work` is recorded in it
    /// (status failed), and so is the time taken. It is the report so far from the start.
    pub fn collect(
        dry_run: bool,
        keep_unknown: Option<&str>,
        work: impl FnOnce(&mut Report) -> anyhow::Result<()>,
    ) -> Report {
        let started = Instant::now();
        let mut report = Report::new(dry_run, keep_unknown);
        begin_so_far(&report);
        if let Err(e) = work(&mut report) {
            report.fail(&e);
        }
        report.seconds = started.elapsed().as_secs_f64();
        report
    }

    pub fn add_unknown(&mut self, unknown: &[(String, i64)]) {
        self.unknown_codes += unknown.len() as u64;
        for (code, hits) in unknown {
            self.unknown_hits += i128::from(*hits);
            if self.unknown_examples.len() < EXAMPLES {
                self.unknown_examples.push(capped(code));
            }
        }
    }

    /// Counts codes refused row by row (now in the quarantine).
    pub fn add_quarantined(&mut self, poisoned: &[Poisoned]) {
        self.quarantined_codes += poisoned.len() as u64;
        self.quarantined_hits += poisoned.iter().map(|p| i128::from(p.hits)).sum::<i128>();
        let room = EXAMPLES.saturating_sub(self.quarantine_examples.len());
        self.quarantine_examples
            .extend(quarantine_examples(&poisoned[..poisoned.len().min(room)]));
    }

    /// Adds what a SCAN saw besides the counters (bad keys, its time waiting on Redis).
    pub fn merge_scan(&mut self, scan: &ScanStats) {
        self.bad_keys += scan.bad_keys;
        for (reason, n) in &scan.bad_by_reason {
            *self.bad_by_reason.entry(*reason).or_insert(0) += n;
        }
        for bad in &scan.bad_examples {
            if self.bad_examples.len() < EXAMPLES {
                self.bad_examples.push(BadExample {
                    key: show_bytes(&bad.key),
                    reason: bad.reason,
                });
            }
        }
        self.redis_seconds += scan.redis_seconds;
    }

    /// Records an error; the run's status becomes failed, or a setup error when the error
    /// is one a person must fix ([`UsageError`]) and nothing else failed first, or stopped
    /// when a signal asked for the stop ([`StopRequested`]) and nothing failed.
    pub fn fail(&mut self, err: &anyhow::Error) {
        let text = crate::sys::error::text(err);
        let stopped = err.downcast_ref::<StopRequested>().is_some();
        if stopped {
            log::warn!("{text}");
        } else {
            log::error!("{text}");
        }
        self.status = match self.status {
            Status::Ok | Status::Stopped if stopped => Status::Stopped,
            Status::Ok if err.downcast_ref::<UsageError>().is_some() => Status::SetupError,
            Status::SetupError => Status::SetupError,
            _ => Status::Failed,
        };
        self.errors.push(text);
    }
}

/// The report as of the run's last finished step, kept for a run that must end before it
/// can return its report (the watchdog, `sys/deadline.rs`); with the time its run started.
/// Global because the watchdog's thread reads it while the run's own threads hang.
static SO_FAR: Mutex<Option<(Instant, Report)>> = Mutex::new(None);

/// Starts the report so far of a new run.
fn begin_so_far(report: &Report) {
    *SO_FAR.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), report.clone()));
}

/// Keeps `report` as the report so far of the run under way.
pub fn keep_so_far(report: &Report) {
    let mut so_far = SO_FAR.lock().unwrap_or_else(|p| p.into_inner());
    let started = so_far.as_ref().map_or_else(Instant::now, |(t, _)| *t);
    *so_far = Some((started, report.clone()));
}

/// The report so far, its time running up to now (an empty run's report if none was kept).
pub fn so_far() -> Report {
    let so_far = SO_FAR.lock().unwrap_or_else(|p| p.into_inner());
    match &*so_far {
        Some((started, report)) => {
            let mut r = report.clone();
            r.seconds = started.elapsed().as_secs_f64();
            r
        }
        None => Report::new(false, None),
    }
}
