//! How large a run's batches and transactions grow: small at first (Postgres starts while the
//! next batch is claimed), steady for a run's first million keys (short transactions), then,
//! for a backlog, doubling up to `--batch-size` (a large transaction costs less per key in a
//! large table); and the memory bounds that hold whatever `--batch-size` says.

use crate::sys::fault;

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
/// for nearly every code (docs/performance.md, "Batch size").
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
/// size while each transaction takes one sorted pass over many more rows: over a large table,
/// fewer and larger transactions cost Postgres less, and through the stage nearly as little
/// as from memory (docs/performance.md).
pub const BATCH_KEYS: usize = 250_000;

/// The most keys a claimed batch of this process holds ([`BATCH_KEYS`], or a test's fewer).
pub fn batch_keys() -> usize {
    fault::batch_keys(BATCH_KEYS)
}

/// The most bytes of codes the batches of a run hold at once, whatever `--batch-size` says:
/// memory follows a batch's bytes, not only its keys (long codes once took memory many times
/// their size). Up to N + 1 batches exist at once (N connections applying, one being
/// claimed), so each closes at its share: 8 MiB with the default two connections (one claim
/// at least). Ordinary codes never reach it.
pub const CODE_BYTES: usize = 24 << 20;

/// The most bytes of codes one batch of a run on `connections` connections holds.
pub fn batch_bytes(connections: usize) -> usize {
    CODE_BYTES / (connections.max(1) + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

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
