//! Test-only fault injection: kills the process with SIGKILL at a named point of the flush,
//! so tests can prove that a crash *exactly there* loses nothing and doubles nothing.
//!
//! Set `REDIS_FLUSHER_FAULT=<point>` (or `<point>:<n>` to die the n-th time the point is
//! reached, counting from 1). Only debug builds honour it; in release builds `point` is empty
//! and the variable is ignored, so production binaries cannot be killed this way.
//!
//! | point | where |
//! |---|---|
//! | `after_scan` | a SCAN step returned keys, before any of them is claimed |
//! | `after_claim` | a claim chunk is in the journal, before its batch is applied |
//! | `before_commit` | the batch's UPDATE and ledger row are done, before COMMIT |
//! | `after_commit` | COMMIT returned, before the journal is deleted |
//! | `recovery_before_commit` | as `before_commit`, while recovering a failed run's journal |
//! | `recovery_after_commit` | as `after_commit`, while recovering a failed run's journal |
//! | `quarantine_before_commit` | quarantined codes tried again, before COMMIT |
//! | `after_stage` | a batch's codes are in the stage of a transaction that gathers batches, before the next is taken |
//!
//! `REDIS_FLUSHER_TEST_BATCH_KEYS=<n>` lowers the most keys a claimed batch holds
//! (`scan::BATCH_KEYS`), so that a test's few keys make transactions that gather several
//! batches. Debug builds only, like the rest.

#[cfg(debug_assertions)]
pub fn point(name: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static HITS: AtomicU64 = AtomicU64::new(0);

    let Ok(spec) = std::env::var("REDIS_FLUSHER_FAULT") else {
        return;
    };
    let (want, nth) = match spec.split_once(':') {
        Some((p, n)) => (p, n.parse::<u64>().unwrap_or(1)),
        None => (spec.as_str(), 1),
    };
    if want != name {
        return;
    }
    if HITS.fetch_add(1, Ordering::SeqCst) + 1 >= nth {
        log::warn!("fault injection: killing this process at {name}");
        // SAFETY: kill(2) on our own pid with a constant signal has no memory effects.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}

#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn point(_name: &str) {}

/// The most keys a claimed batch holds: `most`, or less in a test (see above).
#[cfg(debug_assertions)]
pub fn batch_keys(most: usize) -> usize {
    std::env::var("REDIS_FLUSHER_TEST_BATCH_KEYS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(most, |n| n.clamp(1, most))
}

#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn batch_keys(most: usize) -> usize {
    most
}
