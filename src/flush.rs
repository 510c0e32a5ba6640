//! The run: lock, recover, claim, apply, acknowledge, in that order, and why that order.
//!
//! Knows the order of the steps, not the SQL (`postgres_sink.rs`) or the Lua
//! (`redis_source.rs`). The invariant every step keeps: a hit is always in exactly one of
//! its live key, a journal, or a committed transaction whose ledger row names its batch.

use std::hash::{BuildHasher, Hasher};
use std::sync::mpsc::{self, SyncSender};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};

use crate::config::{FlushConfig, PgConfig, RedisConfig};
use crate::deadline;
use crate::fault;
use crate::journal::{self, Batch};
use crate::postgres_sink::{self, BatchRejected, PgSink, Target};
use crate::progress;
use crate::redis_source::{check_code, BadKey, Claimed, RedisSource};
use crate::report::{show_bytes, Report, Status};
use crate::stop;

/// Everything one run needs.
pub struct Config {
    pub redis: RedisConfig,
    pub pg: PgConfig,
    pub flush: FlushConfig,
}

/// Runs a flush (or, with `dry_run`, reports what one would do). Failures are recorded in
/// the report (status failed, exit 1), never panics; nothing claimed is lost by a failure.
pub fn run(cfg: &Config, dry_run: bool) -> Report {
    let started = Instant::now();
    let parked = cfg
        .flush
        .keep_unknown
        .then_some(cfg.flush.unknown_key.as_str());
    let mut report = Report::new(dry_run, parked);
    deadline::progress(&report);
    let result = if dry_run {
        dry(cfg, &mut report)
    } else {
        flush(cfg, &mut report)
    };
    if let Err(e) = result {
        report.fail(&e);
    }
    report.seconds = started.elapsed().as_secs_f64();
    report
}

/// The error of a run that a signal stopped: exit 1, as the next run finishes the job.
fn stopped(when: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "stopped by SIGTERM/SIGINT {when}; every claimed batch was applied or waits in its \
         journal, and the next run flushes the rest"
    )
}

/// A batch id unique across runs and hosts: time, randomness, sequence.
fn run_id() -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    // RandomState is seeded from the OS's randomness; no extra crate for 32 random bits.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(ms);
    h.write_u32(std::process::id());
    format!("{ms:x}-{:08x}", h.finish() as u32)
}

struct Flusher<'a> {
    cfg: &'a FlushConfig,
    source: RedisSource,
    sink: PgSink,
    report: &'a mut Report,
}

fn flush(cfg: &Config, report: &mut Report) -> Result<()> {
    let mut sink = PgSink::connect(&cfg.pg)?;
    if !sink.try_lock(postgres_sink::lock_key(&cfg.flush))? {
        log::info!("another redis-flusher run holds the lock (a flush is in progress); exiting");
        report.status = Status::Locked;
        return Ok(());
    }
    if !sink.check_target(&cfg.flush)?.indexed {
        log::warn!("{}", Target::index_advice(&cfg.flush));
    }
    sink.ensure_ledger(&cfg.flush)?;
    let mut source = RedisSource::connect(&cfg.redis, &cfg.flush.journal_prefix)?;
    // On a cluster, before recovery looks: no older run may claim from here on. (One Redis
    // needs no fence: sealing a journal stops an older run's claims into it.)
    let mut token = 0;
    if let Some(masters) = source.masters() {
        log::info!("Redis Cluster masters: {}", masters.join(", "));
        token = sink.fence_token()?;
        source.raise_fences(token)?;
    }
    log::info!(
        "flushing {} from Redis at {} into {}.{} at {}",
        String::from_utf8_lossy(&cfg.flush.scan_match),
        cfg.redis.display,
        cfg.flush.table.name,
        cfg.flush.count_column.name,
        cfg.pg.display
    );
    let started = SystemTime::now();
    let run = run_id();
    let mut f = Flusher {
        cfg: &cfg.flush,
        source,
        sink,
        report,
    };
    if let Err(e) = f.steps(&cfg.redis, &run, token) {
        f.report.fail(&e);
    }
    // For `status`. A Postgres that just failed may refuse this too; the run's outcome and
    // its exit code stand either way.
    if let Err(e) = f
        .sink
        .record_run(&f.cfg.runs_table, &run, started, f.report)
    {
        log::warn!("{e:#}");
    }
    Ok(())
}

impl Flusher<'_> {
    /// What a run does once it holds the lock: recover, claim and apply, prune.
    fn steps(&mut self, redis: &RedisConfig, run: &str, token: i64) -> Result<()> {
        self.recover()?;
        let mut claimer = RedisSource::connect(redis, &self.cfg.journal_prefix)?;
        claimer.set_token(token);
        if self.claim_and_apply(claimer, run)? == Claiming::Stopped {
            return Err(stopped("before the end of the SCAN"));
        }
        if self.report.status == Status::Ok {
            // Only after every journal was recovered: a ledger row must outlive its journal.
            let pruned = self.sink.prune(self.cfg)?;
            if pruned > 0 {
                log::debug!(
                    "pruned {pruned} ledger and run rows older than {} days",
                    self.cfg.ledger_days
                );
            }
        }
        Ok(())
    }

    /// Finishes the journals that failed or killed runs left: applies each once, or only
    /// deletes it when the ledger shows it was applied (killed after COMMIT).
    fn recover(&mut self) -> Result<()> {
        let journals = self.source.journals(true)?;
        if !journals.is_empty() {
            log::info!("recovering {} journals left by failed runs", journals.len());
        }
        for id in journals {
            if stop::requested() {
                return Err(stopped("while recovering journals"));
            }
            let key = self.source.journal_key(&id);
            // Sealed before reading: no run can add to it any more, so what we apply is
            // everything the ledger row will stand for.
            let chunks = self.source.seal(&id)?;
            let mut batch = Batch::new(id);
            let mut corrupt = None;
            for (field, packed) in chunks {
                match journal::decode(&packed) {
                    Ok(entries) => {
                        if let Err(e) = batch.add(entries) {
                            corrupt = Some(e);
                        }
                        batch.fields.push(field);
                    }
                    Err(e) => corrupt = Some(e.context(format!("chunk {field}"))),
                }
            }
            if let Some(e) = corrupt {
                self.report.pending_journals += 1;
                self.report.fail(&e.context(format!(
                    "journal {key} cannot be applied and was left in Redis for an operator"
                )));
                continue;
            }
            if batch.fields.is_empty() {
                continue; // an empty journal: sealing removed its last field
            }
            if let Some(row) = self.sink.applied(&self.cfg.ledger_table, &batch.id)? {
                log::debug!(
                    "batch {}: already in the ledger (a run died after COMMIT); deleting its journal",
                    batch.id
                );
                self.ack(&batch, &row.unknown)?;
                continue;
            }
            log::debug!(
                "batch {}: not in the ledger; applying {} codes",
                batch.id,
                batch.hits.len()
            );
            if self.apply(&batch, true)? {
                self.report.recovered_batches += 1;
            }
        }
        Ok(())
    }

    /// Claims batches on a second thread while this one applies them, so that Redis and
    /// Postgres work at the same time. At most two batches exist at once: the channel holds
    /// none, so a claimed batch waits in the claim thread until this one takes it. (Claiming
    /// a batch takes about half as long as applying it, so a deeper queue would not be
    /// emptied any sooner.) If either side fails, the other stops soon after; every batch it
    /// claimed and did not apply stays in its journal.
    fn claim_and_apply(&mut self, claimer: RedisSource, run: &str) -> Result<Claiming> {
        let (to_apply, batches) = mpsc::sync_channel::<Batch>(0);
        let cfg = self.cfg;
        std::thread::scope(|s| {
            let claim = s.spawn(move || claim_batches(claimer, cfg, run, to_apply));
            let mut failed = None;
            for batch in batches.iter() {
                if let Err(e) = self.apply(&batch, false) {
                    failed = Some(e);
                    break;
                }
            }
            // Claimed but never applied: they wait in their journals for the next run.
            self.report.pending_journals += batches.try_iter().count() as u64;
            drop(batches); // the claimer's next send fails, and it stops
            let claimed = claim
                .join()
                .map_err(|_| anyhow::anyhow!("BUG: the claim thread panicked"))?;
            self.report.merge_claims(&claimed.report);
            self.report.pending_journals += claimed.unsent;
            match (failed, claimed.result) {
                (Some(e), _) => Err(e),
                (None, Err(e)) => Err(e),
                (None, Ok(how)) => Ok(how),
            }
        })
    }

    /// Applies one batch and then deletes its journal. Returns false when Postgres refused
    /// the batch for its data: it stays in its journal, and the run goes on.
    fn apply(&mut self, batch: &Batch, recovered: bool) -> Result<bool> {
        let t = Instant::now();
        let result = self
            .sink
            .apply(self.cfg, &batch.id, &batch.hits, batch.keys, recovered);
        self.report.postgres_seconds += t.elapsed().as_secs_f64();
        let applied = match result {
            Ok(a) => a,
            Err(e) if e.downcast_ref::<BatchRejected>().is_some() => {
                self.report.batches_failed += 1;
                self.report.pending_journals += 1;
                self.report.fail(&e);
                return Ok(false);
            }
            Err(e) => {
                self.report.pending_journals += 1;
                return Err(e);
            }
        };
        // Committed. A crash from here until the journal is gone is what the ledger is for:
        // the next run finds this batch id there and only deletes the journal.
        fault::point(if recovered {
            "recovery_after_commit"
        } else {
            "after_commit"
        });
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
                if self.cfg.keep_unknown {
                    "parked"
                } else {
                    "dropped (recorded in the ledger)"
                }
            );
        }
        self.ack(batch, &applied.unknown)?;
        self.report.batches += 1;
        self.report.keys += batch.keys;
        self.report.hits += batch.total_hits();
        self.report.rows_updated += applied.rows_updated;
        self.report.add_unknown(&applied.unknown);
        deadline::progress(self.report);
        progress::applied(batch.keys, batch.total_hits());
        log::debug!(
            "batch {}: {} keys, {} hits, {} rows updated",
            batch.id,
            batch.keys,
            batch.total_hits(),
            applied.rows_updated
        );
        Ok(true)
    }

    /// Deletes the batch's chunks from its journal, parking unknown hits first if asked.
    fn ack(&mut self, batch: &Batch, unknown: &[(String, i64)]) -> Result<()> {
        let park: &[(String, i64)] = if self.cfg.keep_unknown { unknown } else { &[] };
        let t = Instant::now();
        let (_, failed) = self
            .source
            .ack(&batch.id, &batch.fields, &self.cfg.unknown_key, park)
            .with_context(|| {
                format!(
                    "batch {} is committed but its journal could not be deleted; \
                     the next run will only delete it",
                    batch.id
                )
            })?;
        self.report.redis_seconds += t.elapsed().as_secs_f64();
        if !failed.is_empty() {
            log::warn!(
                "batch {}: hits of {} unknown codes would overflow their field in {} and were \
                 not parked (they are in the ledger): {}",
                batch.id,
                failed.len(),
                self.cfg.unknown_key,
                failed
                    .iter()
                    .map(|c| show_bytes(c.as_bytes()))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        Ok(())
    }
}

/// `SCAN … COUNT`: how many slots one SCAN call visits. Measured at 1M keys: 500 cost Redis
/// 1.30 s in all (0.43 ms a call), 1000 cost 1.19 s (0.59 ms a call); DESIGN.md: 10000 stalls
/// Redis 7 ms a call, too long for the app's INCRs to wait.
const SCAN_COUNT: usize = 1000;

/// What the claim thread hands back: its counts (bad keys, Redis time), how it ended, and
/// how many claimed batches it could not hand over.
struct ClaimOutcome {
    report: Report,
    result: Result<Claiming>,
    unsent: u64,
}

/// How the claim thread ended when nothing failed.
#[derive(Debug, PartialEq, Eq)]
enum Claiming {
    /// The SCAN reached its end: every key it listed was claimed (or judged bad).
    Done,
    /// A signal stopped it before the end of the SCAN: keys are left for the next run.
    Stopped,
}

/// The claim thread: SCANs the pattern, claims chunks into batches, and sends each full
/// batch to be applied. Stops at the end of the SCAN, at an error, or when nobody receives.
fn claim_batches(
    mut source: RedisSource,
    cfg: &FlushConfig,
    run: &str,
    out: SyncSender<Batch>,
) -> ClaimOutcome {
    let mut report = Report::new(false, None);
    let mut unsent = 0;
    let mut batch = Batch::new(format!("{run}-0"));
    let prefix_len = cfg.prefix.len();
    let result = scan_in_batches(
        &mut source,
        cfg,
        &mut report,
        run,
        &mut batch,
        &mut |source, batch, keys| claim_chunk(source, batch, keys, prefix_len),
        |batch| match out.send(batch) {
            Ok(()) => Ok(true),
            Err(_) => {
                unsent += 1;
                Ok(false)
            }
        },
    );
    if result.is_err() && !batch.is_empty() {
        unsent += 1; // claimed into a journal before the error
    }
    ClaimOutcome {
        report,
        result,
        unsent,
    }
}

/// What one chunk of keys yields: the counters taken (claimed into the batch's journal, or
/// only read for a dry run) and the keys left alone.
type TakeChunk<'a> =
    dyn FnMut(&mut RedisSource, &mut Batch, &[Vec<u8>]) -> Result<Vec<BadKey>> + 'a;

/// The first batch of a run holds at most this many keys, and each next one twice as many,
/// up to `--batch-size`: Postgres starts on the first batch while the claim of a full one
/// would still be under way. Claiming takes about half as long as applying, so each doubled
/// batch is claimed while the one before it is applied.
const FIRST_BATCH: usize = 10_000;

/// How many keys batch number `seq` (from 0) of a run may hold.
fn batch_limit(batch_size: usize, seq: u64) -> usize {
    let doublings = seq.min(u64::from(usize::BITS)) as u32;
    let factor = 1usize.checked_shl(doublings).unwrap_or(usize::MAX);
    FIRST_BATCH.saturating_mul(factor).min(batch_size)
}

/// The SCAN both a run and a dry run walk: checks each key's code, takes the good keys in
/// chunks of `--claim-size` with `take`, and hands each batch (at most `--batch-size` keys;
/// the first few fewer, [`batch_limit`]) to `send` (false: nobody receives any more). Bad
/// keys and Redis time go into `report`.
fn scan_in_batches(
    source: &mut RedisSource,
    cfg: &FlushConfig,
    report: &mut Report,
    run: &str,
    batch: &mut Batch,
    take: &mut TakeChunk,
    mut send: impl FnMut(Batch) -> Result<bool>,
) -> Result<Claiming> {
    let chunk = cfg.claim_size.min(cfg.batch_size);
    let mut seq = 0u64;
    let mut pending: Vec<Vec<u8>> = Vec::with_capacity(2 * chunk);
    let mut cursor = 0;
    loop {
        // Checked once per SCAN step: a step and its claims take a few milliseconds.
        if stop::requested() {
            log::warn!(
                "stopping on a signal: applying the batches already claimed, claiming no \
                 more (signal again to stop at once)"
            );
            if !batch.is_empty() {
                send(std::mem::take(batch))?;
            }
            return Ok(Claiming::Stopped);
        }
        let t = Instant::now();
        let (next, keys) = source.scan(cursor, &cfg.scan_match, SCAN_COUNT)?;
        report.redis_seconds += t.elapsed().as_secs_f64();
        if !keys.is_empty() {
            fault::point("after_scan");
        }
        for key in keys {
            match check_code(&key, cfg.prefix.len()) {
                Some(reason) => report.add_bad(&BadKey { key, reason }),
                None => pending.push(key),
            }
        }
        let done = next == 0;
        while pending.len() >= chunk || (done && !pending.is_empty()) {
            let keys: Vec<Vec<u8>> = pending.drain(..pending.len().min(chunk)).collect();
            // A batch never holds more keys than --batch-size, so never more codes.
            if batch.keys as usize + keys.len() > batch_limit(cfg.batch_size, seq)
                && !batch.is_empty()
            {
                seq += 1;
                let full = std::mem::replace(batch, Batch::new(format!("{run}-{seq}")));
                if !send(full)? {
                    return Ok(Claiming::Stopped); // the applier stopped: its error is reported
                }
            }
            let t = Instant::now();
            let bad = take(source, batch, &keys)?;
            report.redis_seconds += t.elapsed().as_secs_f64();
            for b in &bad {
                report.add_bad(b);
            }
        }
        if done {
            break;
        }
        cursor = next;
    }
    if !batch.is_empty() {
        send(std::mem::take(batch))?;
    }
    Ok(Claiming::Done)
}

/// Claims a chunk into the batch's journal (a run's [`TakeChunk`]).
fn claim_chunk(
    source: &mut RedisSource,
    batch: &mut Batch,
    keys: &[Vec<u8>],
    prefix_len: usize,
) -> Result<Vec<BadKey>> {
    let field = format!("c{}", batch.chunks);
    let claimed = source.claim(&batch.id, &field, batch.fields.is_empty(), keys, prefix_len)?;
    if !claimed.entries.is_empty() {
        batch.chunks += 1;
        batch.fields.extend(claimed.fields);
        log::trace!("batch {}: claimed {} keys", batch.id, claimed.entries.len());
        progress::claimed(claimed.entries.len() as u64);
        batch.add(claimed.entries)?;
        fault::point("after_claim");
    }
    Ok(claimed.bad)
}

/// Reads a chunk into the batch without taking it (a dry run's and `status`'s [`TakeChunk`]).
fn inspect_chunk(
    source: &mut RedisSource,
    batch: &mut Batch,
    keys: &[Vec<u8>],
    prefix_len: usize,
) -> Result<Vec<BadKey>> {
    let Claimed { entries, bad, .. } = source.inspect(keys, prefix_len)?;
    batch.add(entries)?;
    Ok(bad)
}

/// `--dry-run`: the same SCAN and checks as a run, a read-only look at Postgres, and no write
/// anywhere (not even the ledger table is created).
fn dry(cfg: &Config, report: &mut Report) -> Result<()> {
    let f = &cfg.flush;
    let mut sink = PgSink::connect(&cfg.pg)?;
    sink.begin_read_only()?;
    if !sink.check_target(f)?.indexed {
        log::warn!("{}", Target::index_advice(f));
    }
    let mut source = RedisSource::connect(&cfg.redis, &f.journal_prefix)?;

    let ledger = sink.table_exists(&f.ledger_table)?;
    // Without `repair`: a dry run writes nothing, not even a missing journal index.
    for id in source.journals(false)? {
        let key = source.journal_key(&id);
        let applied = ledger && sink.applied(&f.ledger_table, &id)?.is_some();
        let chunks = source.read_journal(&id)?;
        let keys: usize = chunks
            .iter()
            .map(|(_, p)| journal::decode(p).map(|e| e.len()).unwrap_or(0))
            .sum();
        report.pending_journals += 1;
        log::info!(
            "journal {key} ({keys} keys) is pending from a failed run; {}",
            if applied {
                "already applied, a run only deletes it"
            } else {
                "a run applies it first"
            }
        );
    }

    // The run's own SCAN and batching, with a read-only look instead of a claim. Bad keys
    // and Redis time are counted apart and merged, as the run merges its claim thread's.
    let mut scanned = Report::new(true, None);
    let mut batch = Batch::new("dry-run-0".into());
    let prefix_len = f.prefix.len();
    scan_in_batches(
        &mut source,
        f,
        &mut scanned,
        "dry-run",
        &mut batch,
        &mut |source, batch, keys| inspect_chunk(source, batch, keys, prefix_len),
        |batch| dry_batch(&mut sink, f, &batch, report).map(|()| true),
    )?;
    report.merge_claims(&scanned);
    Ok(())
}

/// What a run would find under the pattern now: counters, hits, bad keys (no Postgres).
pub fn waiting(source: &mut RedisSource, f: &FlushConfig) -> Result<Report> {
    let mut report = Report::new(true, None);
    let (mut keys, mut hits) = (0, 0);
    let mut batch = Batch::new("status-0".into());
    let prefix_len = f.prefix.len();
    scan_in_batches(
        source,
        f,
        &mut report,
        "status",
        &mut batch,
        &mut |source, batch, keys| inspect_chunk(source, batch, keys, prefix_len),
        |batch| {
            keys += batch.keys;
            hits += batch.total_hits();
            Ok(true)
        },
    )?;
    report.keys = keys;
    report.hits = hits;
    Ok(report)
}

/// The keys and hits a pending journal holds.
pub fn journal_totals(source: &mut RedisSource, id: &str) -> Result<(u64, i128)> {
    let mut batch = Batch::new(id.to_owned());
    for (field, packed) in source.read_journal(id)? {
        let entries = journal::decode(&packed)
            .with_context(|| format!("journal {} chunk {field}", source.journal_key(id)))?;
        batch.add(entries)?;
    }
    Ok((batch.keys, batch.total_hits()))
}

fn dry_batch(sink: &mut PgSink, f: &FlushConfig, batch: &Batch, report: &mut Report) -> Result<()> {
    let codes: Vec<&str> = batch.hits.keys().map(String::as_str).collect();
    let (found, rows) = sink.existing(f, &codes)?;
    let unknown: Vec<(String, i64)> = batch
        .hits
        .iter()
        .filter(|(c, _)| !found.contains(*c))
        .map(|(c, h)| (c.clone(), *h))
        .collect();
    report.batches += 1;
    report.keys += batch.keys;
    report.hits += batch.total_hits();
    report.rows_updated += rows;
    report.add_unknown(&unknown);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_start_small_and_double_up_to_the_batch_size() {
        let limits: Vec<usize> = (0..5).map(|seq| batch_limit(50_000, seq)).collect();
        assert_eq!(limits, [10_000, 20_000, 40_000, 50_000, 50_000]);
        assert_eq!(batch_limit(50_000, 64), 50_000);
        assert_eq!(batch_limit(50_000, u64::MAX), 50_000);
        assert_eq!(batch_limit(usize::MAX, 70), usize::MAX);
        // Up to the first batch's size, every batch is full size.
        assert_eq!(batch_limit(500, 0), 500);
        assert_eq!(batch_limit(10_000, 0), 10_000);
    }
}
