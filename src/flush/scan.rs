//! The SCAN that a run, a dry run and `status` all walk: every key under the pattern, its code
//! checked, the good keys taken in chunks of `--claim-size` (claimed into a journal, or only
//! read), gathered into batches of at most `--batch-size` keys.

use std::time::Instant;

use anyhow::Result;

use super::growth::{batch_bytes, batch_keys, Growth};
use super::Halt;
use crate::config::FlushConfig;
use crate::model::{check_code, slot, BadKey, Batch, ScanStats};
use crate::output::progress;
use crate::redis::{RedisSource, SCRIPT_BYTES};
use crate::sys::fault;

/// `SCAN … COUNT`: how many slots one SCAN call visits. Fewer calls cost Redis less in all,
/// but each call stalls the app's INCRs for longer: 1000 keeps a call under a millisecond,
/// 10000 does not (docs/performance.md, "Redis").
pub const SCAN_COUNT: usize = 1000;

/// On a cluster, the SCANned keys a claim waits for: up to three batches' worth, sorted by
/// slot, so that a claim takes the keys of about a third of the master's slots, three times
/// as many keys a slot's script as a claim of the first keys SCAN lists; no more than this
/// many keys in all (memory).
const GROUPED_PENDING: usize = 150_000;

/// How many of `pending`'s first keys the next claim takes: up to `most` keys, and up to
/// `bytes` of them (one at least).
fn chunk_len(pending: &[(u16, Vec<u8>)], most: usize, bytes: usize) -> usize {
    let mut total = 0;
    for (i, (_, k)) in pending.iter().take(most).enumerate() {
        total += k.len();
        if total > bytes && i > 0 {
            return i;
        }
    }
    pending.len().min(most)
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
/// failure left one half claimed. Bad keys and Redis time go into `stats`. Once `halt` is
/// cancelled (a connection applying the batches failed), it stops at the next SCAN step, and
/// the batch being filled waits in its journal; once `halt` has a reason (a signal, the lease
/// lost), it hands over the batch being filled and claims no more.
#[allow(clippy::too_many_arguments)]
pub fn scan_in_batches(
    redis: &mut RedisSource,
    flush: &FlushConfig,
    take: Take,
    run: &str,
    batch: &mut Batch,
    stats: &mut ScanStats,
    halt: &Halt,
    mut send: impl FnMut(Batch) -> Result<bool>,
) -> Result<Claiming> {
    let (cfg, batch_size) = (&flush.source, flush.batch_size);
    let max_bytes = batch_bytes(flush.pg_connections);
    let most_keys = batch_keys();
    let chunk = cfg.claim_size.min(batch_size).min(most_keys);
    let grouped = redis.groups_by_slot();
    let mut batches = Batches {
        run,
        seq: 0,
        growth: Growth::default(),
        batch_size,
    };
    *batch = batches.start();
    // Keys waiting for a claim, each with its slot: computed once, where it is needed (a
    // cluster sorts by it, a shard keeps only its own), else 0.
    let slotted = grouped || !cfg.shard.is_all();
    let mut pending: Vec<(u16, Vec<u8>)> = Vec::with_capacity(2 * chunk);
    let mut cursor = 0;
    loop {
        // Checked once per SCAN step: a step and its claims take a few milliseconds.
        if halt.cancelled() {
            return Ok(Claiming::Stopped); // the applier's error is the run's
        }
        if let Some(why) = halt.reason() {
            log::warn!(
                "stopping ({why}): applying the batches already claimed, claiming no \
                 more (signal again to stop at once)"
            );
            if !batch.is_empty() {
                hand_over(redis, take, batch, &mut send)?;
            }
            return Ok(Claiming::Stopped);
        }
        let t = Instant::now();
        let (next, keys) = redis.scan(cursor, &cfg.scan_match, SCAN_COUNT)?;
        stats.redis_seconds += t.elapsed().as_secs_f64();
        if !keys.is_empty() {
            fault::point("after_scan");
        }
        for key in keys {
            let s = if slotted { slot(&key) } else { 0 };
            // Another shard's (on a cluster, only where a master holds slots of both).
            if !cfg.shard.owns_slot(s) {
                continue;
            }
            match check_code(&key, cfg.prefix.len()) {
                Some(reason) => stats.add_bad(BadKey { key, reason }),
                None => pending.push((s, key)),
            }
        }
        let done = next == 0;
        loop {
            let limit = batches.limit();
            // One Redis: a claim is one script of up to `chunk` keys. A cluster: a claim is
            // what the batch has room for, one script a slot, so that the more keys a claim
            // holds, the more of them share a slot's script (redis/cluster/claim.rs).
            let (most, bytes) = if grouped {
                // Full, or so nearly that the claim of its rest would be a small one (the
                // keys of a claim that are gone by then leave room unfilled).
                let room = limit.saturating_sub(batch.keys as usize);
                if !batch.is_empty() && (room < limit / 8 || batch.bytes >= max_bytes) {
                    if !batches.next(redis, take, batch, next, &mut send)? {
                        return Ok(Claiming::Stopped);
                    }
                    continue;
                }
                (room, max_bytes - batch.bytes)
            } else {
                (chunk, SCRIPT_BYTES)
            };
            // Enough keys for the claim, or the SCAN's last ones.
            let last = done && !pending.is_empty();
            let wanted = match grouped {
                true => (3 * most).min(GROUPED_PENDING.max(most)),
                false => most,
            };
            if pending.len() < wanted && !last {
                break;
            }
            if grouped {
                // Stable: what is left of the last sort stays a sorted run, and only the
                // keys SCANned since are sorted into it.
                pending.sort_by_key(|&(s, _)| s);
            }
            let n = chunk_len(&pending, most, bytes);
            let keys: Vec<Vec<u8>> = pending.drain(..n).map(|(_, k)| k).collect();
            // A batch never holds more keys than --batch-size, so never more codes, nor more
            // than its share of CODE_BYTES of codes.
            let bytes: usize = keys.iter().map(|k| k.len() - cfg.prefix.len()).sum();
            let full = batch.keys as usize + keys.len() > limit || batch.bytes + bytes > max_bytes;
            if full && !batch.is_empty() && !batches.next(redis, take, batch, next, &mut send)? {
                return Ok(Claiming::Stopped); // the applier stopped: its error is reported
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
            stats.redis_seconds += t.elapsed().as_secs_f64();
            for b in bad {
                stats.add_bad(b);
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

/// A run's batches: named `<run>-<n>`, sized by their [`Growth`].
struct Batches<'a> {
    run: &'a str,
    seq: u64,
    growth: Growth,
    batch_size: usize,
}

impl Batches<'_> {
    /// A new batch, `<run>-<seq>`; a transaction gathers batches only when it may be larger
    /// than one.
    fn start(&self) -> Batch {
        let mut b = Batch::new(format!("{}-{}", self.run, self.seq));
        b.gather = Some(self.growth.limit(self.batch_size))
            .filter(|&l| l > batch_keys())
            .unwrap_or(0);
        b
    }

    /// The most keys the batch being filled may hold.
    fn limit(&self) -> usize {
        self.growth.limit(self.batch_size).min(batch_keys())
    }

    /// Hands the batch being filled over (its growth counted, SCAN at `cursor`) and starts
    /// the next; false when the receiver went away.
    fn next(
        &mut self,
        redis: &mut RedisSource,
        take: Take,
        batch: &mut Batch,
        cursor: u64,
        send: &mut impl FnMut(Batch) -> Result<bool>,
    ) -> Result<bool> {
        self.seq += 1;
        self.growth.handed(batch.keys, redis.scan_progress(cursor));
        if !hand_over(redis, take, batch, send)? {
            return Ok(false);
        }
        *batch = self.start();
        Ok(true)
    }
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
        let small = vec![(0u16, vec![0u8; 10]); 300];
        assert_eq!(chunk_len(&small, 250, SCRIPT_BYTES), 250);
        assert_eq!(chunk_len(&small[..7], 250, SCRIPT_BYTES), 7);
        let big = vec![(0u16, vec![0u8; 400_000]); 5];
        assert_eq!(chunk_len(&big, 250, SCRIPT_BYTES), 2);
        let huge = vec![(0u16, vec![0u8; 3 << 20]); 2];
        assert_eq!(chunk_len(&huge, 250, SCRIPT_BYTES), 1);
    }
}
