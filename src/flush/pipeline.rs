//! The claim-and-apply step's threads: one claimer SCANs and claims batches while
//! `--pg-connections` appliers (this connection and N - 1 more) apply them, so that Redis and
//! Postgres work at the same time and Postgres on several connections. What the threads add
//! to the apply step (`commit.rs`) is only who takes the next batch and who stops when.
//!
//! At most N + 1 batches exist at once (N connections): the channel holds none, so a claimed
//! batch waits in the claim thread until a connection takes it. If any side fails, the others
//! stop soon after; every batch claimed and not applied stays in its journal.
//!
//! Batches applied at once do not deadlock each other: each locks its rows in code order (its
//! codes are sorted; the UPDATE is a nested loop over them), so two that share a code (SCAN
//! returned its key twice) take their rows in the same order, and one waits.

use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Mutex, MutexGuard};

use anyhow::Result;

use super::growth::batch_keys;
use super::scan::{scan_in_batches, Claiming, Take};
use super::{Flusher, Halt, Tally};
use crate::config::{Config, FlushConfig};
use crate::model::{Batch, ScanStats};
use crate::postgres::Session;
use crate::redis::RedisSource;

/// Claimed batches on their way to the appliers; taken out and dropped once every applier is
/// done, which is what stops a claimer still sending.
type Queue = Mutex<Option<Receiver<Batch>>>;

impl Flusher<'_> {
    /// Claims batches on a thread of its own (`claimer`) while this connection and the others
    /// apply them; how the SCAN ended. The other connections are opened on their own threads
    /// once a second batch is claimed, while the first is applied: a run of one batch (most
    /// small runs) opens none.
    pub(super) fn claim_and_apply(
        &mut self,
        all: &Config,
        claimer: RedisSource,
    ) -> Result<Claiming> {
        let (to_apply, batches) = mpsc::sync_channel::<Batch>(0);
        let batches: Queue = Mutex::new(Some(batches));
        let (cfg, run, facts, tally, halt) =
            (self.cfg, self.run, self.facts, self.tally, self.halt);
        std::thread::scope(|s| {
            let batches = &batches;
            let (starts, started): (Vec<_>, Vec<_>) = (1..cfg.pg_connections)
                .map(|_| mpsc::channel::<()>())
                .unzip();
            let claim =
                s.spawn(move || claim_batches(claimer, cfg, &run.id, halt, to_apply, starts));
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
                                    crate::sys::error::text(&e)
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
                            tally,
                            halt,
                        };
                        other.apply_claimed(batches)
                    })
                })
                .collect();
            let mut error = self.apply_claimed(batches).err();
            for applier in appliers {
                let result = applier
                    .join()
                    .map_err(|_| anyhow::anyhow!("BUG: an apply thread panicked"))
                    .and_then(|r| r);
                match (result, &error) {
                    (Err(e), None) => error = Some(e),
                    (Err(e), Some(_)) => self.tally.lock().fail(&e),
                    (Ok(()), _) => {}
                }
            }
            if let Some(batches) = batches.lock().unwrap_or_else(|p| p.into_inner()).take() {
                // Claimed but never applied: they wait in their journals for the next run.
                self.tally.lock().pending_journals += batches.try_iter().count() as u64;
            } // the claimer's next send fails, and it stops
            let claimed = claim
                .join()
                .map_err(|_| anyhow::anyhow!("BUG: the claim thread panicked"))?;
            let mut tally = self.tally.lock();
            tally.merge_scan(&claimed.stats);
            tally.pending_journals += claimed.unsent;
            match (error, claimed.result) {
                (Some(e), _) => Err(e),
                (None, Err(e)) => Err(e),
                (None, Ok(how)) => Ok(how),
            }
        })
    }

    /// Applies claimed batches on this connection until the claimer ends, or a connection
    /// fails (the run's halt cancelled: then a batch taken is left in its journal). A
    /// backlog's batches are
    /// gathered several to a transaction (`postgres/stage.rs`) when the role may create a
    /// temporary table.
    fn apply_claimed(&mut self, batches: &Queue) -> Result<()> {
        loop {
            // The others wait for the lock while one waits for the claimer.
            let receiver = batches.lock().unwrap_or_else(|p| p.into_inner());
            let Some(batch) = next_batch(&receiver, self.halt, self.tally) else {
                return Ok(());
            };
            // Gathered when its transaction may take another batch besides.
            let room = batch.gather.saturating_sub(batch.keys as usize);
            let applied = if self.facts.can_stage && room >= batch_keys() {
                self.gather(batch, receiver).map(|_| ())
            } else {
                drop(receiver);
                self.commit_one(&batch, false).map(|_| ())
            };
            if let Err(e) = applied {
                self.halt.cancel();
                return Err(e);
            }
        }
    }

    /// Applies `first` and the claimed batches after it, up to `first.gather` keys (never
    /// more), in one transaction, then deletes their journals (`commit`).
    ///
    /// This connection keeps the claimed batches to itself (`receiver`) until its transaction
    /// is full, and lets go before the UPDATE: so the connections take turns, one gathering
    /// at the pace of the claims while the others apply, instead of all gathering at once
    /// and then all applying while the claims wait.
    fn gather(
        &mut self,
        first: Batch,
        receiver: MutexGuard<'_, Option<Receiver<Batch>>>,
    ) -> Result<bool> {
        let (tally, halt) = (self.tally, self.halt);
        // Another batch is taken only while one more, as large as a batch may be, keeps the
        // transaction within its keys (never more than --batch-size).
        let (gather, most) = (first.gather, batch_keys());
        let mut keys = first.keys as usize;
        let mut receiver = (keys + most <= gather).then_some(receiver);
        self.commit(false, |pg, to, taken| {
            let next = || {
                let batch = next_batch(receiver.as_ref()?, halt, tally);
                keys += batch.as_ref().map_or(0, |b| b.keys as usize);
                if batch.is_none() || keys + most > gather {
                    receiver = None; // full: the next connection gathers
                }
                batch
            };
            pg.write_gathered(to, first, next, taken)
        })
    }
}

/// The next claimed batch from `receiver` (the lock on it held), once the claimer hands one
/// over; None when it ended, or when a connection failed (a batch taken then is left in its
/// journal, and counted).
fn next_batch(receiver: &Option<Receiver<Batch>>, halt: &Halt, tally: &Tally) -> Option<Batch> {
    let next = match receiver {
        Some(b) if !halt.cancelled() => b.recv(),
        _ => return None,
    };
    let batch = next.ok()?; // the claimer ended
    if halt.cancelled() {
        tally.lock().pending_journals += 1;
        return None;
    }
    Some(batch)
}

/// Drops the receiver of claimed batches when dropped, so that a claimer blocked in a send
/// gets an error, even when the thread that holds this unwinds.
struct CloseOnDrop<'a>(&'a Queue);

impl Drop for CloseOnDrop<'_> {
    fn drop(&mut self) {
        drop(self.0.lock().unwrap_or_else(|p| p.into_inner()).take());
    }
}

/// What the claim thread hands back: what its SCAN saw (bad keys, Redis time), how it ended,
/// and how many claimed batches it could not hand over.
struct ClaimOutcome {
    stats: ScanStats,
    result: Result<Claiming>,
    unsent: u64,
}

/// The claim thread: SCANs the pattern, claims chunks into batches, and sends each full
/// batch to be applied. Stops at the end of the SCAN, at an error, when asked to (`halt`), or
/// when nobody receives.
fn claim_batches(
    mut redis: RedisSource,
    cfg: &FlushConfig,
    run: &str,
    halt: &Halt,
    out: SyncSender<Batch>,
    mut starts: Vec<mpsc::Sender<()>>,
) -> ClaimOutcome {
    let mut stats = ScanStats::default();
    let mut unsent = 0;
    let mut sent = 0;
    let mut batch = Batch::default();
    let result = scan_in_batches(
        &mut redis,
        cfg,
        Take::Claim,
        run,
        &mut batch,
        &mut stats,
        halt,
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
        stats,
        result,
        unsent,
    }
}
