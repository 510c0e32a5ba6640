//! The SCAN that a run, a dry run and `status` all walk: every key under the pattern, its code
//! checked, the good keys taken in chunks of `--claim-size` (claimed into a journal, or only
//! read), gathered into batches of at most `--batch-size` keys.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::Result;

use crate::config::FlushConfig;
use crate::fault;
use crate::model::{check_code, BadKey, Batch};
use crate::progress;
use crate::redis::RedisSource;
use crate::report::Report;
use crate::stop;

/// `SCAN … COUNT`: how many slots one SCAN call visits. Measured at 1M keys: 500 cost Redis
/// 1.30 s in all (0.43 ms a call), 1000 cost 1.19 s (0.59 ms a call); DESIGN.md: 10000 stalls
/// Redis 7 ms a call, too long for the app's INCRs to wait.
pub const SCAN_COUNT: usize = 1000;

/// The first batch of a run holds at most this many keys, and each next one twice as many,
/// up to [`STEADY_BATCH`]: Postgres starts on the first batch while the claim of a full one
/// would still be under way. Claiming takes about half as long as applying, so each doubled
/// batch is claimed while the one before it is applied.
const FIRST_BATCH: usize = 10_000;

/// The batch size of a run's first [`GROW_AFTER`] keys: short transactions (rows locked well
/// under a second), and enough of them for the connections to overlap to the end.
const STEADY_BATCH: usize = 50_000;

/// Past this many keys a run is a backlog, and its batches double again, up to
/// `--batch-size`. A batch's cost per key grows with the table it lands in: its codes are
/// spread over the whole table, and a batch that is small beside the table visits a page
/// for nearly every code. Measured at 10M keys over 20M rows: 50,000-key batches took 2.2x
/// the single-connection floor, 500,000-key batches 1.3x (docs/performance.md).
const GROW_AFTER: u64 = 1_000_000;

/// A run that SCAN's progress says will hand over at least this many keys is a backlog from
/// its first batches: it need not pay for a million keys in small batches first.
const BACKLOG_KEYS: f64 = 2_000_000.0;

/// How large a run's batches may be: [`FIRST_BATCH`] doubling to [`STEADY_BATCH`], which it
/// keeps until the run is a backlog (it has handed over [`GROW_AFTER`] keys, or expects
/// [`BACKLOG_KEYS`]), then doubling again; never more than `--batch-size`, nor, near the
/// end, more than half the keys expected still (so that the last transactions are applied
/// side by side rather than one alone while the other connection waits).
#[derive(Debug, Clone, Copy)]
pub struct Growth {
    limit: usize,
    handed: u64,
    /// Keys the SCAN's progress says are still to come, once it says anything.
    remaining: Option<u64>,
}

impl Default for Growth {
    fn default() -> Growth {
        Growth {
            limit: FIRST_BATCH,
            handed: 0,
            remaining: None,
        }
    }
}

impl Growth {
    /// The most keys the next batch may hold.
    pub fn limit(&self, batch_size: usize) -> usize {
        let tail = self
            .remaining
            .map_or(usize::MAX, |r| usize::try_from(r / 2).unwrap_or(usize::MAX));
        self.limit.min(batch_size).min(tail.max(STEADY_BATCH))
    }

    /// A batch of `keys` keys was handed over, with the SCAN `progress` far (0 to 1): the
    /// next may be larger.
    pub fn handed(&mut self, keys: u64, progress: f64) {
        self.handed = self.handed.saturating_add(keys);
        // Estimates from a sliver of the keyspace are noise.
        let expected = (progress >= 0.001).then(|| self.handed as f64 / progress.min(1.0));
        self.remaining = expected.map(|e| (e - self.handed as f64).max(0.0).round() as u64);
        let backlog = self.handed >= GROW_AFTER || expected.is_some_and(|e| e >= BACKLOG_KEYS);
        if backlog {
            self.limit = self.limit.saturating_mul(2);
        } else if self.limit < STEADY_BATCH {
            self.limit = (self.limit * 2).min(STEADY_BATCH);
        }
    }
}

/// The most keys one claimed batch holds, whatever `--batch-size` says. A backlog's
/// transactions grow past it (up to `--batch-size`) by gathering several batches in
/// Postgres' stage (`postgres/stage.rs`), so that memory stays at N + 1 batches of this
/// size while each transaction takes one sorted pass over many more rows. Measured at 10M keys
/// over 20M rows, Postgres alone: 500,000-key transactions 66.0 s, 2,000,000-key ones 49.6 s
/// from memory and 55.5 s through the stage (docs/performance.md).
pub const BATCH_KEYS: usize = 250_000;

/// The most keys a claimed batch of this process holds ([`BATCH_KEYS`], or a test's fewer).
pub fn batch_keys() -> usize {
    fault::batch_keys(BATCH_KEYS)
}

/// The most bytes of codes the batches of a run hold at once, whatever `--batch-size` says:
/// memory follows a batch's bytes, not only its keys (100 MB of 10 KB codes took 487 MB). Up
/// to N + 1 batches exist at once (N connections applying, one being claimed), so each closes
/// at its share: 8 MiB with the default two connections (one chunk at least: a claim of up
/// to [`CHUNK_BYTES`]). Ordinary codes never reach it (500,000 codes of 10 bytes are 5 MB).
pub const CODE_BYTES: usize = 24 << 20;

/// The most bytes of codes one batch of a run on `connections` connections holds.
pub fn batch_bytes(connections: usize) -> usize {
    CODE_BYTES / (connections.max(1) + 1)
}

/// The most bytes of keys one claim takes (one Lua script, which Redis runs alone), whatever
/// `--claim-size` says; at least one key.
const CHUNK_BYTES: usize = 1 << 20;

/// How many of `pending`'s first keys the next chunk takes: up to `chunk` keys, and up to
/// [`CHUNK_BYTES`] of them (one at least).
fn chunk_len(pending: &[Vec<u8>], chunk: usize) -> usize {
    let mut bytes = 0;
    for (i, k) in pending.iter().take(chunk).enumerate() {
        bytes += k.len();
        if bytes > CHUNK_BYTES && i > 0 {
            return i;
        }
    }
    pending.len().min(chunk)
}

/// How the SCAN ended when nothing failed.
#[derive(Debug, PartialEq, Eq)]
pub enum Claiming {
    /// The SCAN reached its end: every key it listed was taken (or judged bad).
    Done,
    /// A signal stopped it, or the receiver of the batches went away, before the end of the
    /// SCAN: keys are left for the next run.
    Stopped,
}

/// What is done with each chunk of good keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// Claimed into the batch's journal (a run).
    Claim,
    /// Only read (a dry run, `status`).
    Inspect,
}

/// Walks the SCAN: checks each key's code, takes the good keys in chunks with `take`, and
/// hands each batch (at most `--batch-size` keys, most of them fewer, [`Growth`]; at
/// most [`BATCH_KEYS`] keys and [`batch_bytes`] of codes; the keys its transaction may
/// gather in [`Batch::gather`]) to `send` (false: nobody receives any more). Batches are
/// named `<run>-<n>`; `batch` is the one being filled, so that a caller can tell whether a
/// failure left one half claimed. Bad keys and Redis time go into `report`. Once `cancel` is
/// set (a connection applying the batches failed), it stops at the next SCAN step, and the
/// batch being filled waits in its journal.
#[allow(clippy::too_many_arguments)]
pub fn scan_in_batches(
    redis: &mut RedisSource,
    flush: &FlushConfig,
    take: Take,
    run: &str,
    batch: &mut Batch,
    report: &mut Report,
    cancel: &AtomicBool,
    mut send: impl FnMut(Batch) -> Result<bool>,
) -> Result<Claiming> {
    let (cfg, batch_size) = (&flush.source, flush.batch_size);
    let max_bytes = batch_bytes(flush.pg_connections);
    let most_keys = batch_keys();
    let chunk = cfg.claim_size.min(batch_size).min(most_keys);
    let mut seq = 0u64;
    let mut growth = Growth::default();
    // A transaction gathers batches only when it may be larger than one.
    let gather = |growth: &Growth| Some(growth.limit(batch_size)).filter(|&l| l > most_keys);
    *batch = Batch::new(format!("{run}-0"));
    batch.gather = gather(&growth).unwrap_or(0);
    let mut pending: Vec<Vec<u8>> = Vec::with_capacity(2 * chunk);
    let mut cursor = 0;
    loop {
        // Checked once per SCAN step: a step and its claims take a few milliseconds.
        if cancel.load(Ordering::SeqCst) {
            return Ok(Claiming::Stopped); // the applier's error is the run's
        }
        if stop::requested() {
            log::warn!(
                "stopping ({}): applying the batches already claimed, claiming no \
                 more (signal again to stop at once)",
                stop::why()
            );
            if !batch.is_empty() {
                hand_over(redis, take, batch, &mut send)?;
            }
            return Ok(Claiming::Stopped);
        }
        let t = Instant::now();
        let (next, keys) = redis.scan(cursor, &cfg.scan_match, SCAN_COUNT)?;
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
            let n = chunk_len(&pending, chunk);
            let keys: Vec<Vec<u8>> = pending.drain(..n).collect();
            // A batch never holds more keys than --batch-size, so never more codes, nor more
            // than its share of CODE_BYTES of codes.
            let bytes: usize = keys.iter().map(|k| k.len() - cfg.prefix.len()).sum();
            let limit = growth.limit(batch_size).min(most_keys);
            let full = batch.keys as usize + keys.len() > limit || batch.bytes + bytes > max_bytes;
            if full && !batch.is_empty() {
                seq += 1;
                growth.handed(batch.keys, redis.scan_progress(next));
                if !hand_over(redis, take, batch, &mut send)? {
                    return Ok(Claiming::Stopped); // the applier stopped: its error is reported
                }
                *batch = Batch::new(format!("{run}-{seq}"));
                batch.gather = gather(&growth).unwrap_or(0);
            }
            let t = Instant::now();
            let bad = match take {
                Take::Claim => claim_chunk(redis, batch, &keys)?,
                Take::Inspect => {
                    let seen = redis.inspect(&keys)?;
                    batch.add(seen.entries)?;
                    seen.bad
                }
            };
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
        hand_over(redis, take, batch, &mut send)?;
    }
    Ok(Claiming::Done)
}

/// Hands a finished batch to `send`; a claimed one only once its claims are on the replicas
/// `--redis-wait-replicas` asks for (else it stays, and fails the SCAN, in its journal).
fn hand_over(
    redis: &mut RedisSource,
    take: Take,
    batch: &mut Batch,
    send: &mut impl FnMut(Batch) -> Result<bool>,
) -> Result<bool> {
    if take == Take::Claim {
        redis.confirm_replicated(&format!("the claims of batch {}", batch.id))?;
    }
    batch.finish()?;
    send(std::mem::take(batch))
}

/// Claims a chunk into the batch's journal, as its next chunk (`c<n>`); returns the keys it
/// left alone.
fn claim_chunk(
    redis: &mut RedisSource,
    batch: &mut Batch,
    keys: &[Vec<u8>],
) -> Result<Vec<BadKey>> {
    let field = format!("c{}", batch.chunks);
    let claimed = redis.claim(&batch.id, &field, batch.fields.is_empty(), keys)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_stops_at_its_bytes_but_takes_one_key_at_least() {
        let small = vec![vec![0u8; 10]; 300];
        assert_eq!(chunk_len(&small, 250), 250);
        assert_eq!(chunk_len(&small[..7], 250), 7);
        let big = vec![vec![0u8; 400_000]; 5];
        assert_eq!(chunk_len(&big, 250), 2);
        let huge = vec![vec![0u8; 3 << 20]; 2];
        assert_eq!(chunk_len(&huge, 250), 1);
    }

    #[test]
    fn batches_start_small_stay_steady_and_grow_past_a_million_keys() {
        // No estimate from the SCAN (a sliver of the keyspace each time).
        let mut g = Growth::default();
        let mut limits = Vec::new();
        for _ in 0..28 {
            let limit = g.limit(500_000);
            limits.push(limit);
            g.handed(limit as u64, 0.0);
        }
        // 10k + 20k + 40k, then 50k until a million keys were handed over (19 batches of
        // 50k: 1,020,000 in all), then doubling up to --batch-size.
        let mut expected = vec![10_000, 20_000, 40_000];
        expected.extend([50_000; 19]);
        expected.extend([100_000, 200_000, 400_000, 500_000, 500_000, 500_000]);
        assert_eq!(limits, expected);
        // --batch-size caps every batch, the first ones included.
        assert_eq!(Growth::default().limit(500), 500);
        let mut g = Growth::default();
        g.handed(u64::MAX, 0.0);
        for _ in 0..70 {
            g.handed(1, 0.0);
        }
        assert_eq!(g.limit(usize::MAX), usize::MAX);
        assert_eq!(g.limit(1_000_000), 1_000_000);
    }

    /// The SCAN's progress says how many keys a run will hand over: a backlog grows from its
    /// first batches, a run of a million keys does not, and the last transactions shrink to
    /// half of what is left.
    #[test]
    fn a_run_the_scan_says_is_a_backlog_grows_at_once_and_its_end_shrinks() {
        // 10M keys: 10k keys handed at 0.1 %.
        let mut g = Growth::default();
        g.handed(10_000, 0.001);
        assert_eq!(g.limit(2_000_000), 20_000);
        let mut handed = 10_000u64;
        let mut limits = Vec::new();
        while handed < 10_000_000 {
            let limit = g.limit(2_000_000).min((10_000_000 - handed) as usize);
            limits.push(limit);
            handed += limit as u64;
            g.handed(limit as u64, handed as f64 / 10_000_000.0);
        }
        assert_eq!(
            limits,
            [
                // doubling from the first batches, up to --batch-size
                20_000, 40_000, 80_000, 160_000, 320_000, 640_000, 1_280_000, 2_000_000, 2_000_000,
                // half of what is left (3.45M, 1.725M, …), then 50k, then the rest
                1_725_000, 862_500, 431_250, 215_625, 107_812, 53_906, 50_000, 3_907
            ]
        );
        // 1M keys: no backlog, 50k batches.
        let mut g = Growth::default();
        for done in [10_000u64, 30_000, 70_000, 120_000] {
            g.handed(done - g.handed, done as f64 / 1_000_000.0);
        }
        assert_eq!(g.limit(2_000_000), 50_000);
    }
}
