//! The run: check → lock → fence (a cluster) → recover → retry the quarantine → claim and
//! apply → prune → record, in that order, and why that order ([`Flusher::steps`]).
//!
//! Knows the order of the steps, not the SQL (`postgres/`) or the Lua (`redis/`). The
//! invariant every step keeps: a hit is always in exactly one of its live key, a journal, or
//! a committed transaction whose ledger row names its batch.
//!
//! | file | holds |
//! |---|---|
//! | `mod.rs` | the steps in order; who a run is; the run's shared tally |
//! | `recover.rs` | finishing what failed runs left: journals, then the quarantine |
//! | `pipeline.rs` | the claim thread and the appliers, one a Postgres connection |
//! | `commit.rs` | the one way batches are applied: a transaction, then each journal deleted and counted |
//! | `scan.rs` | the SCAN a run, a dry run and `status` walk, in batches |
//! | `growth.rs` | how large a run's batches and transactions grow |

mod commit;
mod growth;
mod pipeline;
mod recover;
pub mod scan;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Result;

use crate::config::{Config, FlushConfig};
use crate::postgres::{Acquired, Holder, Lease, RunRecord, Session, TableFacts};
use crate::preflight::{self, Findings};
use crate::redis::RedisSource;
use crate::report::{Report, Status};
use crate::sys::stop::{self, StopRequested};
use scan::Claiming;

/// Runs a flush. Failures are recorded in the report (status failed, exit 1), never panics;
/// nothing claimed is lost by a failure.
pub fn run(cfg: &Config) -> Report {
    Report::collect(false, cfg.flush.source.parked_in(), |report| {
        report.target = cfg.settings();
        flush(cfg, report)
    })
}

/// Who a run is: its id, and what its batches are for.
struct Run {
    /// `<owner>.<time>-<random>`, and `~<first slot>-<end slot>` for a shard
    /// ([`crate::model::scope_of`]); unique across runs and hosts; its batches are `<id>-<n>`.
    id: String,
    /// This flusher's tag ([`FlushConfig::owner`]).
    owner: String,
    /// What its journals record they are for ([`FlushConfig::target_record`]).
    target: String,
}

impl Run {
    fn new(cfg: &FlushConfig, database: &str) -> Run {
        let target = cfg.target_record(database);
        let owner = cfg.owner(&target);
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        Run {
            id: format!(
                "{owner}.{ms:x}-{:08x}{}",
                fastrand::u32(..),
                cfg.source.shard.id_suffix()
            ),
            owner,
            target,
        }
    }
}

/// Why a run stops claiming before the end of its SCAN: a signal, or its lease taken over by
/// another run. Per run, so that a process that runs many (`serve`) starts each afresh.
#[derive(Debug, Default)]
pub struct Halt {
    /// Set by the lease's renewal thread when another run has taken the lease over.
    lease_lost: Arc<AtomicBool>,
    /// Set when a connection applying the batches failed: the claims stop without a word
    /// (that connection's error is the run's).
    cancel: AtomicBool,
}

impl Halt {
    /// Stops the claims after a connection's failure.
    fn cancel(&self) {
        self.cancel.store(true, Ordering::SeqCst);
    }

    /// Whether a connection failed ([`Halt::cancel`]).
    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::SeqCst)
    }

    /// What asked the run to stop, if anything did.
    pub fn reason(&self) -> Option<&'static str> {
        if self.lease_lost.load(Ordering::SeqCst) {
            Some("another run taking over the run lock (this run could not renew it in time)")
        } else if stop::requested() {
            Some("SIGTERM/SIGINT")
        } else {
            None
        }
    }

    /// The error of a run that was asked to stop `when`: not a failure when a signal asked
    /// (exit 0); a failure when its lease was taken over (exit 1: the run that took it
    /// finishes the job).
    fn stopped(&self, when: &str) -> anyhow::Error {
        let text = format!(
            "stopped by {} {when}; every claimed batch was applied or waits in its journal, and \
             the next run flushes the rest",
            self.reason().unwrap_or("a request")
        );
        if self.lease_lost.load(Ordering::SeqCst) {
            anyhow::anyhow!(text)
        } else {
            StopRequested(text).into()
        }
    }
}

/// The run's report, shared by its connections' threads.
struct Tally(Mutex<Report>);

impl Tally {
    fn lock(&self) -> MutexGuard<'_, Report> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One Postgres connection's part of a run, with the Redis connection that acknowledges
/// what it applies. A run has `--pg-connections` of them; they share the tally.
struct Flusher<'a> {
    cfg: &'a FlushConfig,
    run: &'a Run,
    facts: &'a TableFacts,
    redis: RedisSource,
    pg: &'a mut Session,
    tally: &'a Tally,
    halt: &'a Halt,
}

fn flush(cfg: &Config, report: &mut Report) -> Result<()> {
    // The first line: what this run touches, and where each of those settings came from.
    log::info!(
        "flushing {}{} from Redis at {} into {}.{} at {} (settings from: {})",
        String::from_utf8_lossy(&cfg.flush.source.scan_match),
        match cfg.flush.source.shard {
            s if s.is_all() => String::new(),
            s => format!(", {s},"),
        },
        cfg.redis.display,
        cfg.flush.target.table.name,
        cfg.flush.target.count_column.name,
        cfg.pg.display,
        report
            .target
            .iter()
            .map(|t| format!("{}: {}", t.what, t.source))
            .collect::<Vec<_>>()
            .join("; ")
    );
    let mut pg = Session::connect(&cfg.pg)?;
    // What `check` calls a failure stops the run here, before anything is claimed.
    let mut findings = Findings::default();
    let facts = preflight::postgres(&mut pg, &cfg.flush, false, &mut findings);
    findings.for_run()?;
    let facts = facts.ok_or_else(|| anyhow::anyhow!("BUG: no facts of the table"))?;
    pg.ensure_tables(&cfg.flush.ledger)?;
    let run = Run::new(&cfg.flush, &pg.database()?);
    // Lock: one run per journal prefix and table at a time.
    let lease = match Lease::acquire(
        &mut pg,
        &cfg.pg,
        &cfg.flush.ledger.lease_table,
        &cfg.flush.lock_name(),
        Holder::this_process(&run.id),
        cfg.flush.lock_ttl,
    )? {
        Acquired::Held(lease) => lease,
        Acquired::Taken(t) => {
            log::info!(
                "another redis-flusher run holds the lock (a flush is in progress): run {} \
                 on {} (pid {}) since {}, renewed until {:.0} s from now; exiting",
                t.holder.run_id,
                t.holder.host,
                t.holder.pid,
                t.since,
                t.expires_in.max(0.0)
            );
            report.status = Status::Locked;
            return Ok(());
        }
    };
    let halt = Halt {
        lease_lost: lease.lost_flag(),
        ..Halt::default()
    };
    let result = flush_locked(cfg, report, &mut pg, facts, &run, &halt);
    if let Err(e) = lease.release(&mut pg) {
        // It expires by itself.
        log::warn!("{}", crate::sys::error::text(&e));
    }
    result
}

/// A run from the moment it holds the lock.
fn flush_locked(
    cfg: &Config,
    report: &mut Report,
    pg: &mut Session,
    facts: TableFacts,
    run: &Run,
    halt: &Halt,
) -> Result<()> {
    let mut redis = RedisSource::connect(&cfg.redis, &cfg.flush.source)?;
    let mut findings = Findings::default();
    preflight::redis_checks(&mut redis, &cfg.flush, false, &mut findings);
    findings.for_run()?;
    redis.set_target(&run.target);
    let started = SystemTime::now();
    let tally = Tally(Mutex::new(std::mem::replace(
        report,
        Report::new(false, None),
    )));
    let mut f = Flusher {
        cfg: &cfg.flush,
        run,
        facts: &facts,
        redis,
        pg,
        tally: &tally,
        halt,
    };
    if let Err(e) = f.steps(cfg) {
        f.tally.lock().fail(&e);
    }
    f.record(started);
    *report = tally.0.into_inner().unwrap_or_else(|p| p.into_inner());
    Ok(())
}

impl Flusher<'_> {
    /// What a run does once it holds the lock, in this order:
    /// 1. on a cluster, raises the fence of every slot it owns (all of them without
    ///    `--shard`) to a token from Postgres, before recovery looks: no older run may claim
    ///    there from here on (one Redis needs none: sealing a journal stops an older run's
    ///    claims into it);
    /// 2. recovers what failed runs left in journals, then tries the quarantine again, so
    ///    that nothing older waits behind this run's batches;
    /// 3. claims and applies (`pipeline.rs`);
    /// 4. prunes the ledger (a shard: the rows of its slots' batches), only when every
    ///    journal was finished: a ledger row must outlive the journal it guards.
    fn steps(&mut self, all: &Config) -> Result<()> {
        let mut token = 0;
        if let Some(masters) = self.redis.masters() {
            log::info!("Redis Cluster masters: {}", masters.join(", "));
            token = self.pg.fence_token()?;
            self.redis.raise_fences(token)?;
        }
        self.recover()?;
        self.retry_quarantine()?;
        let mut claimer = RedisSource::connect(&all.redis, &self.cfg.source)?;
        claimer.set_token(token);
        claimer.set_target(&self.run.target);
        let claimed = self.claim_and_apply(all, claimer);
        self.warn_bad_keys();
        if claimed? == Claiming::Stopped {
            return Err(self.halt.stopped("before the end of the SCAN"));
        }
        let (waiting, _) = self
            .pg
            .quarantined(&self.cfg.ledger.quarantine_table, &self.run.owner)?;
        self.tally.lock().quarantine_waiting = waiting as u64;
        let finished = {
            let tally = self.tally.lock();
            tally.status == Status::Ok && tally.pending_journals == 0
        };
        if finished {
            let shard = self.cfg.source.shard;
            let scope = (!shard.is_all()).then(|| shard.slots());
            let pruned = self.pg.prune(&self.cfg.ledger, &self.run.owner, scope)?;
            if pruned > 0 {
                log::debug!(
                    "pruned {pruned} ledger and run rows older than {} days",
                    self.cfg.ledger.ledger_days
                );
            }
        }
        Ok(())
    }

    /// Keys the SCAN left in Redis because they cannot be flushed: one warning a run, so that
    /// they are seen (they stay there until someone fixes or deletes them).
    fn warn_bad_keys(&self) {
        let tally = self.tally.lock();
        if tally.bad_keys == 0 {
            return;
        }
        log::warn!(
            "{} under {} cannot be flushed and stay in Redis ({}), e.g. {}: fix or delete them \
             (`redis-flusher status` names some)",
            crate::report::count(tally.bad_keys, "key", "keys"),
            String::from_utf8_lossy(&self.cfg.source.scan_match),
            tally
                .bad_by_reason
                .iter()
                .map(|(r, n)| format!("{}: {n}", r.text()))
                .collect::<Vec<_>>()
                .join(", "),
            tally
                .bad_examples
                .iter()
                .map(|b| b.key.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }

    /// Records the run in the run history, for `status`. A Postgres that just failed may
    /// refuse this too; the run's outcome and its exit code stand either way.
    fn record(&mut self, started: SystemTime) {
        let r = self.tally.lock().clone();
        let record = RunRecord {
            run_id: &self.run.id,
            started,
            status: r.status.as_str(),
            keys: r.keys,
            hits: r.hits,
            rows_updated: r.rows_updated,
            unknown_codes: r.unknown_codes,
            unknown_hits: r.unknown_hits,
            bad_keys: r.bad_keys,
            batches: r.batches,
            batches_failed: r.batches_failed,
            recovered_batches: r.recovered_batches,
            pending_journals: r.pending_journals,
            error: (!r.errors.is_empty()).then(|| r.errors.join("\n")),
        };
        if let Err(e) = self.pg.record_run(&self.cfg.ledger.runs_table, &record) {
            log::warn!("{}", crate::sys::error::text(&e));
        }
    }
}
