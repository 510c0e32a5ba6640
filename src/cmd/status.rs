//! `redis-flusher status`: what waits in Redis, what failed runs left, what the last runs did,
//! and a health verdict for monitoring. Reads only; never claims, applies or deletes.

use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::cli::StatusArgs;
use crate::config::{Config, FlushConfig, UsageError};
use crate::flush::scan::{scan_in_batches, Take};
use crate::flush::Halt;
use crate::model::{Batch, ScanStats};
use crate::output::write_stdout;
use crate::postgres::{RunRow, Session};
use crate::redis::RedisSource;
use crate::report::{count, show_bytes, Status};

/// `status`: what waits, what failed runs left, the last runs; exit 1 when `--max-age` finds
/// the last successful run too old.
pub fn status(args: StatusArgs) -> Result<Status> {
    let cfg = Config::from_args(&args.conn, &args.target)?;
    let status = match gather(&cfg, args.runs, args.max_age) {
        Ok(s) => s,
        // A person must act (a wrong password): exit 2, as for `run`.
        Err(e) if e.downcast_ref::<UsageError>().is_some() => return Err(e),
        Err(e) => {
            log::error!("{}", crate::sys::error::text(&e));
            return Ok(Status::Failed);
        }
    };
    if args.json {
        write_stdout(format!("{}\n", serde_json::to_string(&status)?).as_bytes())?;
    } else {
        write_stdout(status.text(&cfg.flush).as_bytes())?;
    }
    Ok(
        if status.healthy == Some(false) || status.postgres_error.is_some() {
            Status::Failed
        } else {
            Status::Ok
        },
    )
}

#[derive(Debug, Default, Serialize)]
pub struct Waiting {
    /// Counters under the pattern that a run would flush, and their hits.
    pub keys: u64,
    pub hits: i128,
    /// Keys under the pattern that a run would leave alone (bad values, wrong types).
    pub bad_keys: u64,
    /// A few of them, and why: `key (reason)`.
    pub bad_examples: Vec<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct Pending {
    /// Journals that failed or killed runs left; the next run applies them first.
    pub batches: u64,
    pub keys: u64,
    pub hits: i128,
    /// Journals under the journal prefix that another flusher (another target) left: its
    /// runs apply them, never this one's.
    pub other_targets: u64,
    /// Whether ours could be told from other targets' (Postgres names the database).
    pub target_known: bool,
}

#[derive(Debug, Default, Serialize)]
pub struct Quarantine {
    /// Codes whose hits Postgres refused row by row; every run tries them again.
    pub codes: i64,
    pub hits: i128,
}

#[derive(Debug, Serialize)]
pub struct StatusReport {
    pub waiting: Waiting,
    pub pending: Pending,
    pub quarantine: Quarantine,
    /// Newest first.
    pub last_runs: Vec<RunRow>,
    /// Seconds since the last run that ended ok; null when none is recorded.
    pub last_success_age_seconds: Option<f64>,
    /// `--max-age`, when given.
    pub max_age_seconds: Option<u64>,
    /// With `--max-age`: whether the last successful run is recent enough. Null without it.
    pub healthy: Option<bool>,
    /// Why PostgreSQL could not be asked (then what waits in Redis is shown alone).
    pub postgres_error: Option<String>,
}

/// Gathers the status. `runs` is how many recent runs to list. A Postgres that cannot be
/// reached is reported, and what waits in Redis is shown all the same.
fn gather(cfg: &Config, runs: u32, max_age: Option<Duration>) -> Result<StatusReport> {
    let f = &cfg.flush;
    let connected = Session::connect(&cfg.pg).and_then(|mut pg| {
        pg.begin(true)?;
        let database = pg.database()?;
        Ok((pg, database))
    });
    let (mut pg, target, postgres_error) = match connected {
        Ok((pg, database)) => (Some(pg), Some(f.target_record(&database)), None),
        Err(e) if e.downcast_ref::<UsageError>().is_some() => return Err(e),
        Err(e) => (None, None, Some(crate::sys::error::text(&e))),
    };
    let mut redis = RedisSource::connect(&cfg.redis, &f.source)?;
    let mut pending = Pending {
        target_known: target.is_some(),
        ..Pending::default()
    };
    if let Some(t) = &target {
        redis.set_target(t);
    }
    for journal in redis.journals(false)? {
        let contents = redis.read(&journal)?;
        if target.is_some() && redis.is_other(&contents) {
            pending.other_targets += 1;
            continue;
        }
        let batch = Batch::from_chunks(&journal.id, contents.chunks)
            .with_context(|| format!("journal {}", journal.key))?;
        pending.batches += 1;
        pending.keys += batch.keys;
        pending.hits += batch.total_hits();
    }
    let waiting = waiting(&mut redis, f)?;
    let mut report = StatusReport {
        waiting,
        pending,
        quarantine: Quarantine::default(),
        last_runs: Vec::new(),
        last_success_age_seconds: None,
        max_age_seconds: max_age.map(|d| d.as_secs()),
        healthy: None,
        postgres_error,
    };
    let (Some(pg), Some(target)) = (pg.as_mut(), target) else {
        return Ok(report);
    };
    let owner = f.owner(&target);
    if pg.table_exists(&f.ledger.quarantine_table)? {
        let (codes, hits) = pg.quarantined(&f.ledger.quarantine_table, &owner)?;
        report.quarantine = Quarantine { codes, hits };
    }
    let runs_table = &f.ledger.runs_table;
    if pg.table_exists(runs_table)? {
        report.last_runs = pg.last_runs(runs_table, runs, &owner)?;
        report.last_success_age_seconds = pg.last_success_age(runs_table, &owner)?;
    } else {
        log::info!(
            "no run recorded yet: table `{}` does not exist (the first run creates it)",
            runs_table.name
        );
    }
    report.healthy = max_age.map(|max| {
        report
            .last_success_age_seconds
            .is_some_and(|age| age <= max.as_secs_f64())
    });
    Ok(report)
}

/// What a run would find under the pattern now: counters, hits, bad keys (no Postgres).
fn waiting(redis: &mut RedisSource, f: &FlushConfig) -> Result<Waiting> {
    let mut seen = ScanStats::default();
    let (mut keys, mut hits) = (0, 0);
    scan_in_batches(
        redis,
        f,
        Take::Inspect,
        "status",
        &mut Batch::default(),
        &mut seen,
        &Halt::default(),
        |batch| {
            keys += batch.keys;
            hits += batch.total_hits();
            Ok(true)
        },
    )?;
    Ok(Waiting {
        keys,
        hits,
        bad_keys: seen.bad_keys,
        bad_examples: seen
            .bad_examples
            .iter()
            .map(|b| format!("{} ({})", show_bytes(&b.key), b.reason.text()))
            .collect(),
    })
}

impl StatusReport {
    /// The text an operator reads.
    pub fn text(&self, f: &FlushConfig) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "waiting in Redis: {} ({}) under {}{}",
            count(self.waiting.keys, "counter", "counters"),
            count(self.waiting.hits, "hit", "hits"),
            String::from_utf8_lossy(&f.source.scan_match),
            if self.waiting.bad_keys > 0 {
                format!(
                    ", and {} a run leaves alone: {}",
                    count(self.waiting.bad_keys, "bad key", "bad keys"),
                    self.waiting.bad_examples.join(", ")
                )
            } else {
                String::new()
            }
        );
        if self.pending.batches == 0 {
            let _ = writeln!(out, "pending journals: none");
        } else {
            let _ = writeln!(
                out,
                "pending journals: {} ({}, {}) left by failed runs{}; the next run applies \
                 them first",
                count(self.pending.batches, "batch", "batches"),
                count(self.pending.keys, "key", "keys"),
                count(self.pending.hits, "hit", "hits"),
                if self.pending.target_known {
                    ""
                } else {
                    " (some may be another flusher's: without PostgreSQL, whose is not known)"
                }
            );
        }
        if let Some(e) = &self.postgres_error {
            let _ = writeln!(
                out,
                "PostgreSQL: {e}; the quarantine and the last runs are not known"
            );
            return out;
        }
        if self.quarantine.codes > 0 {
            let _ = writeln!(
                out,
                "quarantine: {} ({}) Postgres refused row by row, in table `{}`; every run \
                 tries them again (`SELECT * FROM {}` says why)",
                count(self.quarantine.codes, "code", "codes"),
                count(self.quarantine.hits, "hit", "hits"),
                f.ledger.quarantine_table.name,
                f.ledger.quarantine_table.quoted
            );
        }
        if self.pending.other_targets > 0 {
            let _ = writeln!(
                out,
                "journals of other targets: {} under the same journal prefix, left to the \
                 flushers they belong to",
                self.pending.other_targets
            );
        }
        if self.last_runs.is_empty() {
            let _ = writeln!(out, "last runs: none recorded");
        } else {
            let _ = writeln!(out, "last runs (newest first):");
            for r in &self.last_runs {
                let _ = writeln!(
                    out,
                    "  {}  {:<6}  {:>8} keys  {:>10} hits  {:>6} unknown  {:>7.2} s{}",
                    r.finished_at,
                    r.status,
                    r.keys,
                    r.hits,
                    r.unknown_codes,
                    r.seconds,
                    r.error
                        .as_deref()
                        .map(|e| format!("  {}", e.lines().next().unwrap_or_default()))
                        .unwrap_or_default()
                );
            }
        }
        match (self.last_success_age_seconds, self.healthy) {
            (None, Some(_)) => {
                let _ = writeln!(out, "health: UNHEALTHY: no successful run recorded");
            }
            (Some(age), Some(ok)) => {
                let _ = writeln!(
                    out,
                    "health: {}: last successful run {} ago (--max-age {})",
                    if ok { "ok" } else { "UNHEALTHY" },
                    humantime::format_duration(Duration::from_secs(age as u64)),
                    humantime::format_duration(Duration::from_secs(
                        self.max_age_seconds.unwrap_or(0)
                    ))
                );
            }
            (Some(age), None) => {
                let _ = writeln!(
                    out,
                    "last successful run: {} ago",
                    humantime::format_duration(Duration::from_secs(age as u64))
                );
            }
            (None, None) => {
                let _ = writeln!(out, "last successful run: none recorded");
            }
        }
        out
    }
}
