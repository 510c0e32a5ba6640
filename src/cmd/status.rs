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
use crate::report::Status;

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
    Ok(if status.healthy == Some(false) {
        Status::Failed
    } else {
        Status::Ok
    })
}

#[derive(Debug, Default, Serialize)]
pub struct Waiting {
    /// Counters under the pattern that a run would flush, and their hits.
    pub keys: u64,
    pub hits: i128,
    /// Keys under the pattern that a run would leave alone (bad values, wrong types).
    pub bad_keys: u64,
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
}

/// Gathers the status. `runs` is how many recent runs to list.
fn gather(cfg: &Config, runs: u32, max_age: Option<Duration>) -> Result<StatusReport> {
    let f = &cfg.flush;
    let mut pg = Session::connect(&cfg.pg)?;
    pg.begin(true)?;
    let target = f.target_record(&pg.database()?);
    let owner = f.owner(&target);

    let mut redis = RedisSource::connect(&cfg.redis, &f.source)?;
    redis.set_target(&target);
    let mut pending = Pending::default();
    for journal in redis.journals(false)? {
        let contents = redis.read(&journal)?;
        if redis.is_other(&contents) {
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

    let quarantine = if pg.table_exists(&f.ledger.quarantine_table)? {
        let (codes, hits) = pg.quarantined(&f.ledger.quarantine_table, &owner)?;
        Quarantine { codes, hits }
    } else {
        Quarantine::default()
    };
    let runs_table = &f.ledger.runs_table;
    let (last_runs, last_success_age_seconds) = if pg.table_exists(runs_table)? {
        (
            pg.last_runs(runs_table, runs, &owner)?,
            pg.last_success_age(runs_table, &owner)?,
        )
    } else {
        log::info!(
            "no run recorded yet: table `{}` does not exist (the first run creates it)",
            runs_table.name
        );
        (Vec::new(), None)
    };
    let healthy =
        max_age.map(|max| last_success_age_seconds.is_some_and(|age| age <= max.as_secs_f64()));
    Ok(StatusReport {
        waiting,
        pending,
        quarantine,
        last_runs,
        last_success_age_seconds,
        max_age_seconds: max_age.map(|d| d.as_secs()),
        healthy,
    })
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
    })
}

impl StatusReport {
    /// The text an operator reads.
    pub fn text(&self, f: &FlushConfig) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "waiting in Redis: {} counters ({} hits) under {}{}",
            self.waiting.keys,
            self.waiting.hits,
            String::from_utf8_lossy(&f.source.scan_match),
            if self.waiting.bad_keys > 0 {
                format!(
                    ", and {} bad keys a run leaves alone (`run --dry-run` names them)",
                    self.waiting.bad_keys
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
                "pending journals: {} batches ({} keys, {} hits) left by failed runs; the next \
                 run applies them first",
                self.pending.batches, self.pending.keys, self.pending.hits
            );
        }
        if self.quarantine.codes > 0 {
            let _ = writeln!(
                out,
                "quarantine: {} codes ({} hits) Postgres refused row by row, in table `{}`; \
                 every run tries them again (`SELECT * FROM {}` says why)",
                self.quarantine.codes,
                self.quarantine.hits,
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
