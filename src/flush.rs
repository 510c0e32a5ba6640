//! The run: lock → recover → claim and apply → acknowledge → prune → record, in that order,
//! and why that order.
//!
//! Knows the order of the steps, not the SQL (`postgres/`) or the Lua (`redis/`). The
//! invariant every step keeps: a hit is always in exactly one of its live key, a journal, or
//! a committed transaction whose ledger row names its batch.
//!
//! It also runs the claim-and-apply step's threads (one claimer, one applier a Postgres
//! connection: `claim_and_apply`). They stay here rather than in a module of their own
//! because each applier is a [`Flusher`] running the same apply-then-acknowledge step as
//! recovery does; what the threads add is only who takes the next batch and who stops when.
//! A backlog's applier takes several batches into one transaction (`apply_gathered`,
//! `postgres/stage.rs`), and acknowledges each after its COMMIT, as for one.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::Result;

use crate::check::{self, Findings};
use crate::config::{Config, FlushConfig};
use crate::fault;
use crate::model::{Batch, Head};
use crate::postgres::{
    Acquired, Applied, ApplyTo, BatchRejected, Holder, Lease, RunRecord, Session, TableFacts,
};
use crate::progress;
use crate::redis::{Acked, RedisSource};
use crate::report::{self, show_bytes, Report, Status};
use crate::scan::{scan_in_batches, Claiming, Take};
use crate::stop;

/// Runs a flush. Failures are recorded in the report (status failed, exit 1), never panics;
/// nothing claimed is lost by a failure.
pub fn run(cfg: &Config) -> Report {
    Report::collect(false, cfg.flush.source.parked_in(), |report| {
        report.target = cfg.settings();
        flush(cfg, report)
    })
}

/// The error of a run that was asked to stop (a signal, or its lock taken over): exit 1, as
/// the next run finishes the job.
fn stopped(when: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "stopped by {} {when}; every claimed batch was applied or waits in its journal, and \
         the next run flushes the rest",
        stop::why()
    )
}

/// Who a run is: its id, and what its batches are for.
struct Run {
    /// `<owner>.<time>-<random>`, unique across runs and hosts; its batches are `<id>-<n>`.
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
        // RandomState is seeded from the OS's randomness; no extra crate for 32 random bits.
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(ms);
        h.write_u32(std::process::id());
        Run {
            id: format!("{owner}.{ms:x}-{:08x}", h.finish() as u32),
            owner,
            target,
        }
    }
}

/// One Postgres connection's part of a run, with the Redis connection that acknowledges
/// what it applies. A run has `--pg-connections` of them; they share the report.
struct Flusher<'a> {
    cfg: &'a FlushConfig,
    run: &'a Run,
    facts: &'a TableFacts,
    redis: RedisSource,
    pg: &'a mut Session,
    report: &'a Mutex<Report>,
}

fn flush(cfg: &Config, report: &mut Report) -> Result<()> {
    // The first line: what this run touches, and where each of those settings came from.
    log::info!(
        "flushing {} from Redis at {} into {}.{} at {} (settings from: {})",
        String::from_utf8_lossy(&cfg.flush.source.scan_match),
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
    let facts = check::postgres(&mut pg, &cfg.flush, false, &mut findings);
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
    stop::watch_lease(lease.lost_flag());
    let result = flush_locked(cfg, report, &mut pg, facts, &run);
    if let Err(e) = lease.release(&mut pg) {
        // It expires by itself.
        log::warn!("{}", crate::error::text(&e));
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
) -> Result<()> {
    let mut redis = RedisSource::connect(&cfg.redis, &cfg.flush.source)?;
    let mut findings = Findings::default();
    check::redis_checks(&mut redis, &cfg.flush, false, &mut findings);
    findings.for_run()?;
    redis.set_target(&run.target);
    // On a cluster, before recovery looks: no older run may claim from here on. (One Redis
    // needs no fence: sealing a journal stops an older run's claims into it.)
    let mut token = 0;
    if let Some(masters) = redis.masters() {
        log::info!("Redis Cluster masters: {}", masters.join(", "));
        token = pg.fence_token()?;
        redis.raise_fences(token)?;
    }

    let started = SystemTime::now();
    let shared = Mutex::new(std::mem::replace(report, Report::new(false, None)));
    let mut f = Flusher {
        cfg: &cfg.flush,
        run,
        facts: &facts,
        redis,
        pg,
        report: &shared,
    };
    if let Err(e) = f.steps(cfg, token) {
        f.report().fail(&e);
    }
    f.record(started);
    *report = shared.into_inner().unwrap_or_else(|p| p.into_inner());
    Ok(())
}

impl<'a> Flusher<'a> {
    /// The run's report, shared by its connections.
    fn report(&self) -> MutexGuard<'a, Report> {
        let report: &'a Mutex<Report> = self.report;
        report.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What a run does once it holds the lock: recover, retry the quarantine, claim and
    /// apply, prune.
    fn steps(&mut self, cfg: &Config, token: i64) -> Result<()> {
        self.recover()?;
        self.retry_quarantine()?;
        let mut claimer = RedisSource::connect(&cfg.redis, &self.cfg.source)?;
        claimer.set_token(token);
        claimer.set_target(&self.run.target);
        if self.claim_and_apply(cfg, claimer)? == Claiming::Stopped {
            return Err(stopped("before the end of the SCAN"));
        }
        let (waiting, _) = self
            .pg
            .quarantined(&self.cfg.ledger.quarantine_table, &self.run.owner)?;
        self.report().quarantine_waiting = waiting as u64;
        if self.report().status == Status::Ok {
            // Only after every journal was recovered: a ledger row must outlive its journal.
            let pruned = self.pg.prune(&self.cfg.ledger, &self.run.owner)?;
            if pruned > 0 {
                log::debug!(
                    "pruned {pruned} ledger and run rows older than {} days",
                    self.cfg.ledger.ledger_days
                );
            }
        }
        Ok(())
    }

    /// Finishes the journals that failed or killed runs left: applies each once, or only
    /// deletes it when the ledger shows it was applied (killed after COMMIT).
    fn recover(&mut self) -> Result<()> {
        let journals = self.redis.journals(true)?;
        if !journals.is_empty() {
            log::info!("recovering {} journals left by failed runs", journals.len());
        }
        for journal in journals {
            if stop::requested() {
                return Err(stopped("while recovering journals"));
            }
            // Sealed before reading: no run can add to it any more, so what we apply is
            // everything the ledger row will stand for. On the replicas asked for, with the
            // claims before it, before anything of it is committed.
            let contents = match self.redis.seal(&journal)? {
                Ok(contents) => contents,
                Err(other) => {
                    log::warn!(
                        "journal {} belongs to another target ({other}), not this run's \
                         ({}): left alone for the flusher of that target",
                        journal.key,
                        self.run.target
                    );
                    self.report().other_targets_journals += 1;
                    continue;
                }
            };
            self.redis
                .confirm_replicated(&format!("the journal of batch {}", journal.id))?;
            let batch = match Batch::from_chunks(&journal.id, contents.chunks) {
                Ok(b) => b,
                Err(e) => {
                    self.report().pending_journals += 1;
                    self.report().fail(&e.context(format!(
                        "journal {} cannot be applied and was left in Redis for an operator",
                        journal.key
                    )));
                    continue;
                }
            };
            if batch.fields.is_empty() {
                continue; // an empty journal: sealing removed its last field
            }
            if let Some(row) = self.pg.applied(&self.cfg.ledger.ledger_table, &batch.id)? {
                log::debug!(
                    "batch {}: already in the ledger (a run died after COMMIT); deleting its \
                     journal",
                    batch.id
                );
                self.acknowledge(&batch.head(), &row.unknown)?;
                continue;
            }
            log::debug!(
                "batch {}: not in the ledger; applying {} codes",
                batch.id,
                batch.hits.len()
            );
            if self.apply_and_acknowledge(&batch, true)? {
                self.report().recovered_batches += 1;
            }
        }
        Ok(())
    }

    /// Tries the codes Postgres refused before again (as many as
    /// [`crate::postgres::RETRY_LIMIT`]): those it
    /// takes now are applied and leave the quarantine, in one transaction.
    fn retry_quarantine(&mut self) -> Result<()> {
        let t = Instant::now();
        let to = apply_to(self.cfg, self.facts, self.run);
        let id = format!("{}-q", self.run.id);
        let retried = self.pg.retry_quarantine(&to, &id)?;
        self.report().postgres_seconds += t.elapsed().as_secs_f64();
        let Some((batch, applied)) = retried else {
            return Ok(());
        };
        let again = applied.quarantined.len();
        let head = batch.head();
        self.report().released_from_quarantine += (batch.hits.len() - again) as u64;
        self.report().released_hits += applied.hits_applied(&head);
        self.report().rows_updated += applied.rows_updated;
        self.report().add_unknown(&applied.unknown);
        if again > 0 {
            log::warn!(
                "{again} codes in table `{}` are still refused (tried again; they keep \
                 waiting there): {}",
                self.cfg.ledger.quarantine_table.name,
                report::quarantine_examples(&applied.quarantined).join("; ")
            );
        }
        if again < batch.hits.len() {
            log::info!(
                "{} codes left the quarantine: Postgres took their {} hits this time",
                batch.hits.len() - again,
                applied.hits_applied(&head)
            );
        }
        Ok(())
    }

    /// Claims batches on a thread of its own while this connection and `--pg-connections` - 1
    /// more apply them, so that Redis and Postgres work at the same time and Postgres on
    /// several connections. At most N + 1 batches exist at once (N connections): the channel
    /// holds none, so a claimed batch waits in the claim thread until a connection takes it.
    /// If any side fails, the others stop soon after; every batch claimed and not applied
    /// stays in its journal.
    ///
    /// The other connections are opened on their own threads once a second batch is claimed,
    /// while the first is applied.
    ///
    /// Batches applied at once do not deadlock each other: each locks its rows in code order
    /// (its codes are sorted; the UPDATE is a nested loop over them), so two that share a code
    /// (SCAN returned its key twice) take their rows in the same order, and one waits.
    fn claim_and_apply(&mut self, all: &Config, claimer: RedisSource) -> Result<Claiming> {
        let (to_apply, batches) = mpsc::sync_channel::<Batch>(0);
        // Taken out and dropped once every connection is done: that is what stops a claimer
        // still sending.
        let batches = Mutex::new(Some(batches));
        let failed = AtomicBool::new(false);
        let (cfg, run, facts, report) = (self.cfg, self.run, self.facts, self.report);
        std::thread::scope(|s| {
            let (batches, failed) = (&batches, &failed);
            // The other connections open once a second batch is claimed: a run of one batch
            // (most small runs) opens none.
            let (starts, started): (Vec<_>, Vec<_>) = (1..cfg.pg_connections)
                .map(|_| mpsc::channel::<()>())
                .unzip();
            let claim =
                s.spawn(move || claim_batches(claimer, cfg, &run.id, to_apply, failed, starts));
            // A panic here must not leave the claimer blocked in a send for ever.
            let _close = CloseOnDrop(batches);
            let appliers: Vec<_> = started
                .into_iter()
                .map(|start| {
                    s.spawn(move || {
                        if start.recv().is_err() {
                            return Ok(()); // the claimer ended first
                        }
                        let connected = Session::connect(&all.pg).and_then(|pg| {
                            let mut redis = RedisSource::connect(&all.redis, &cfg.source)?;
                            redis.set_target(&run.target);
                            Ok((pg, redis))
                        });
                        let (mut pg, redis) = match connected {
                            Ok(c) => c,
                            Err(e) => {
                                // The run goes on with the connections it has (a pooler's
                                // pool, or max_connections, may be full).
                                log::warn!(
                                    "could not open one more connection to apply batches \
                                     (--pg-connections {}), so this run uses fewer: {}",
                                    cfg.pg_connections,
                                    crate::error::text(&e)
                                );
                                return Ok(());
                            }
                        };
                        let mut other = Flusher {
                            cfg,
                            run,
                            facts,
                            redis,
                            pg: &mut pg,
                            report,
                        };
                        other.apply_claimed(batches, failed)
                    })
                })
                .collect();
            let mut error = self.apply_claimed(batches, failed).err();
            for applier in appliers {
                let result = applier
                    .join()
                    .map_err(|_| anyhow::anyhow!("BUG: an apply thread panicked"))
                    .and_then(|r| r);
                match (result, &error) {
                    (Err(e), None) => error = Some(e),
                    (Err(e), Some(_)) => self.report().fail(&e),
                    (Ok(()), _) => {}
                }
            }
            if let Some(batches) = batches.lock().unwrap_or_else(|p| p.into_inner()).take() {
                // Claimed but never applied: they wait in their journals for the next run.
                self.report().pending_journals += batches.try_iter().count() as u64;
            } // the claimer's next send fails, and it stops
            let claimed = claim
                .join()
                .map_err(|_| anyhow::anyhow!("BUG: the claim thread panicked"))?;
            let mut report = self.report();
            report.merge_claims(&claimed.report);
            report.pending_journals += claimed.unsent;
            match (error, claimed.result) {
                (Some(e), _) => Err(e),
                (None, Err(e)) => Err(e),
                (None, Ok(how)) => Ok(how),
            }
        })
    }

    /// Applies claimed batches on this connection until the claimer ends, or a connection
    /// fails (`failed`: then a batch taken is left in its journal). A backlog's batches are
    /// gathered several to a transaction (`postgres/stage.rs`) when the role may create a
    /// temporary table.
    fn apply_claimed(
        &mut self,
        batches: &Mutex<Option<Receiver<Batch>>>,
        failed: &AtomicBool,
    ) -> Result<()> {
        loop {
            // The others wait for the lock while one waits for the claimer.
            let receiver = batches.lock().unwrap_or_else(|p| p.into_inner());
            let Some(batch) = next_batch(&receiver, failed, self.report) else {
                return Ok(());
            };
            // Gathered when its transaction may take another batch besides.
            let room = batch.gather.saturating_sub(batch.keys as usize);
            let applied = if self.facts.can_stage && room >= crate::scan::batch_keys() {
                self.apply_gathered(batch, receiver, failed)
            } else {
                drop(receiver);
                self.apply_and_acknowledge(&batch, false).map(|_| ())
            };
            if let Err(e) = applied {
                failed.store(true, Ordering::SeqCst);
                return Err(e);
            }
        }
    }

    /// Applies `first` and the claimed batches after it, up to `first.gather` keys (never
    /// more), in one transaction, then deletes their journals. A transaction Postgres refused
    /// as a whole (a locked row) leaves all of them in their journals, and the run goes on.
    ///
    /// This connection keeps the claimed batches to itself (`receiver`) until its transaction
    /// is full, and lets go before the UPDATE: so the connections take turns, one gathering
    /// at the pace of the claims while the others apply, instead of all gathering at once
    /// and then all applying while the claims wait.
    fn apply_gathered(
        &mut self,
        first: Batch,
        receiver: MutexGuard<'_, Option<Receiver<Batch>>>,
        failed: &AtomicBool,
    ) -> Result<()> {
        let t = Instant::now();
        let to = apply_to(self.cfg, self.facts, self.run);
        let report = self.report;
        // Another batch is taken only while one more, as large as a batch may be, keeps the
        // transaction within its keys (never more than --batch-size).
        let (gather, most) = (first.gather, crate::scan::batch_keys());
        let mut keys = first.keys as usize;
        let mut receiver = (keys + most <= gather).then_some(receiver);
        let mut taken = 0;
        let result = self.pg.apply_gathered(
            &to,
            first,
            || {
                let batch = next_batch(receiver.as_ref()?, failed, report);
                keys += batch.as_ref().map_or(0, |b| b.keys as usize);
                if batch.is_none() || keys + most > gather {
                    receiver = None; // full: the next connection gathers
                }
                batch
            },
            &mut taken,
        );
        self.report().postgres_seconds += t.elapsed().as_secs_f64();
        let done = match result {
            Ok(done) => done,
            Err(e) => return self.not_applied(e, taken as u64),
        };
        fault::point("after_commit");
        for (n, (head, applied)) in done.iter().enumerate() {
            if let Err(e) = self.acknowledge(head, &applied.unknown) {
                // This one is counted; the journals after it wait as well, applied.
                self.report().pending_journals += (done.len() - n - 1) as u64;
                return Err(e);
            }
            self.account(head, applied);
        }
        Ok(())
    }

    /// Applies one batch, then deletes its journal. Returns false when Postgres refused the
    /// batch for its data: it stays in its journal, and the run goes on.
    fn apply_and_acknowledge(&mut self, batch: &Batch, recovered: bool) -> Result<bool> {
        let Some(applied) = self.apply(batch, recovered)? else {
            return Ok(false);
        };
        // Committed. A crash from here until the journal is gone is what the ledger is for:
        // the next run finds this batch id there and only deletes the journal.
        fault::point(if recovered {
            "recovery_after_commit"
        } else {
            "after_commit"
        });
        let head = batch.head();
        self.acknowledge(&head, &applied.unknown)?;
        self.account(&head, &applied);
        Ok(true)
    }

    /// The batch's transaction: its UPDATE, its ledger row, and the quarantine of codes
    /// Postgres refuses row by row. None when Postgres refused the whole batch (a locked
    /// row; the refusal is in the report).
    fn apply(&mut self, batch: &Batch, recovered: bool) -> Result<Option<Applied>> {
        let t = Instant::now();
        let to = apply_to(self.cfg, self.facts, self.run);
        let result = self.pg.apply(&to, batch, recovered);
        self.report().postgres_seconds += t.elapsed().as_secs_f64();
        match result {
            Ok(applied) => Ok(Some(applied)),
            Err(e) => self.not_applied(e, 1).map(|()| None),
        }
    }

    /// Counts `batches` a failed transaction leaves in their journals. Postgres refusing
    /// them as a whole (a locked row, a deadlock) fails the run's report and lets it go on;
    /// any other error is the run's.
    fn not_applied(&mut self, e: anyhow::Error, batches: u64) -> Result<()> {
        let mut report = self.report();
        report.pending_journals += batches;
        if e.downcast_ref::<BatchRejected>().is_none() {
            return Err(e);
        }
        report.batches_failed += batches;
        report.fail(&e);
        Ok(())
    }

    /// Deletes the batch's chunks from its journal, parking unknown hits first if asked.
    /// Returns false when Redis would not park them (out of memory) and the journal stays,
    /// for the next run to park them: the batch is applied, and the run fails.
    fn acknowledge(&mut self, batch: &Head, unknown: &[(String, i64)]) -> Result<bool> {
        let park: &[(String, i64)] = if self.cfg.source.keep_unknown {
            unknown
        } else {
            &[]
        };
        let t = Instant::now();
        let acked = match self.redis.ack(&batch.id, &batch.fields, park) {
            Ok(acked) => acked,
            Err(e) => {
                self.report().pending_journals += 1;
                return Err(e.context(format!(
                    "batch {} is committed but its journal could not be deleted; the next \
                     run will only delete it",
                    batch.id
                )));
            }
        };
        self.report().redis_seconds += t.elapsed().as_secs_f64();
        let hash = &self.cfg.source.unknown_key;
        match acked {
            Acked::Done(failed) => {
                self.report().unknown_parked += (park.len() - failed.len()) as u64;
                if !failed.is_empty() {
                    log::warn!(
                        "batch {}: the hits of {} unknown codes could not be parked in {hash} \
                         ({}); they are recorded in the ledger only: {}",
                        batch.id,
                        failed.len(),
                        failed[0].1,
                        failed
                            .iter()
                            .map(|(c, _)| show_bytes(c.as_bytes()))
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                }
                Ok(true)
            }
            Acked::Kept(why) => {
                self.report().pending_journals += 1;
                self.report().fail(&anyhow::anyhow!(
                    "batch {}: Redis is out of memory ({why}), so the hits of its {} unknown \
                     codes could not be parked in {hash}; the batch is applied and its journal \
                     stays, so that the next run parks them (free memory, or raise \
                     maxmemory)",
                    batch.id,
                    park.len()
                ));
                Ok(false)
            }
        }
    }

    /// Counts an applied and acknowledged batch in the report.
    fn account(&mut self, batch: &Head, applied: &Applied) {
        if !applied.unknown.is_empty() {
            log::debug!(
                "batch {}: {} codes unknown ({}), {}",
                batch.id,
                applied.unknown.len(),
                applied
                    .unknown
                    .iter()
                    .take(3)
                    .map(|(c, _)| show_bytes(c.as_bytes()))
                    .collect::<Vec<_>>()
                    .join(", "),
                if self.cfg.source.keep_unknown {
                    "parked"
                } else {
                    "dropped (recorded in the ledger)"
                }
            );
        }
        let mut report = self.report();
        report.batches += 1;
        report.keys += batch.keys;
        report.hits += batch.hits;
        report.rows_updated += applied.rows_updated;
        report.add_unknown(&applied.unknown);
        if !applied.quarantined.is_empty() {
            report.add_quarantined(&applied.quarantined);
            let e = anyhow::anyhow!(
                "batch {}: Postgres refused {} codes row by row ({} of them new there); their \
                 hits wait in table `{}` and every run tries them again, the rest of the batch \
                 is applied: {}",
                batch.id,
                applied.quarantined.len(),
                applied.newly_quarantined,
                self.cfg.ledger.quarantine_table.name,
                report::quarantine_examples(&applied.quarantined).join("; ")
            );
            // A code refused for the first time fails the run, so that someone looks; more
            // hits for a code already waiting there do not, again and again.
            if applied.newly_quarantined > 0 {
                report.fail(&e);
            } else {
                log::warn!("{}", crate::error::text(&e));
            }
        }
        report::keep_so_far(&report);
        drop(report);
        progress::applied(batch.keys, batch.hits);
        log::debug!(
            "batch {}: {} keys, {} hits, {} rows updated",
            batch.id,
            batch.keys,
            batch.hits,
            applied.rows_updated
        );
    }

    /// Records the run in the run history, for `status`. A Postgres that just failed may
    /// refuse this too; the run's outcome and its exit code stand either way.
    fn record(&mut self, started: SystemTime) {
        let r = self.report();
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
            log::warn!("{}", crate::error::text(&e));
        }
    }
}

/// Where a run's batches go.
fn apply_to<'a>(cfg: &'a FlushConfig, facts: &'a TableFacts, run: &'a Run) -> ApplyTo<'a> {
    ApplyTo {
        target: &cfg.target,
        facts,
        ledger: &cfg.ledger.ledger_table,
        quarantine: &cfg.ledger.quarantine_table,
        owner: &run.owner,
    }
}

/// The next claimed batch from `receiver` (the lock on it held), once the claimer hands one
/// over; None when it ended, or when a connection failed (a batch taken then is left in its
/// journal, and counted).
fn next_batch(
    receiver: &Option<Receiver<Batch>>,
    failed: &AtomicBool,
    report: &Mutex<Report>,
) -> Option<Batch> {
    let next = match receiver {
        Some(b) if !failed.load(Ordering::SeqCst) => b.recv(),
        _ => return None,
    };
    let batch = next.ok()?; // the claimer ended
    if failed.load(Ordering::SeqCst) {
        report
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pending_journals += 1;
        return None;
    }
    Some(batch)
}

/// Drops the receiver of claimed batches when dropped, so that a claimer blocked in a send
/// gets an error, even when the thread that holds this unwinds.
struct CloseOnDrop<'a>(&'a Mutex<Option<Receiver<Batch>>>);

impl Drop for CloseOnDrop<'_> {
    fn drop(&mut self) {
        drop(self.0.lock().unwrap_or_else(|p| p.into_inner()).take());
    }
}

/// What the claim thread hands back: its counts (bad keys, Redis time), how it ended, and
/// how many claimed batches it could not hand over.
struct ClaimOutcome {
    report: Report,
    result: Result<Claiming>,
    unsent: u64,
}

/// The claim thread: SCANs the pattern, claims chunks into batches, and sends each full
/// batch to be applied. Stops at the end of the SCAN, at an error, or when nobody receives.
fn claim_batches(
    mut redis: RedisSource,
    cfg: &FlushConfig,
    run: &str,
    out: SyncSender<Batch>,
    failed: &AtomicBool,
    mut starts: Vec<mpsc::Sender<()>>,
) -> ClaimOutcome {
    let mut report = Report::new(false, None);
    let mut unsent = 0;
    let mut sent = 0;
    let mut batch = Batch::default();
    let result = scan_in_batches(
        &mut redis,
        cfg,
        Take::Claim,
        run,
        &mut batch,
        &mut report,
        failed,
        |batch| {
            if sent == 1 {
                // A second batch: the other connections open now.
                for start in starts.drain(..) {
                    let _ = start.send(());
                }
            }
            match out.send(batch) {
                Ok(()) => {
                    sent += 1;
                    Ok(true)
                }
                Err(_) => {
                    unsent += 1;
                    Ok(false)
                }
            }
        },
    );
    drop(starts); // connections not opened yet never will be
    if !batch.is_empty() {
        unsent += 1; // claimed into a journal before an error, or an applier's failure
    }
    ClaimOutcome {
        report,
        result,
        unsent,
    }
}
