//! The one way a run applies batches, whether one alone or several gathered in a
//! transaction: the transaction (`postgres/`), then, only after its COMMIT, each batch's
//! journal deleted (`redis/`) and the batch counted in the tally.
//!
//! A kill between the COMMIT and a journal's delete is what the ledger is for: the next run
//! finds the batch id there and only deletes the journal.

use std::time::Instant;

use anyhow::Result;

use super::{Flusher, Run};
use crate::config::FlushConfig;
use crate::model::{Batch, Head};
use crate::output::progress;
use crate::postgres::{Applied, ApplyTo, BatchRejected, Session, TableFacts};
use crate::redis::Acked;
use crate::report::{quarantine_examples, show_bytes};
use crate::sys::fault;

/// Where a run's batches go.
pub(super) fn apply_to<'a>(
    cfg: &'a FlushConfig,
    facts: &'a TableFacts,
    run: &'a Run,
) -> ApplyTo<'a> {
    ApplyTo {
        target: &cfg.target,
        facts,
        ledger: &cfg.ledger.ledger_table,
        quarantine: &cfg.ledger.quarantine_table,
        owner: &run.owner,
    }
}

impl Flusher<'_> {
    /// Applies one batch in its own transaction, then deletes its journal. False when
    /// Postgres refused it as a whole (a locked row): it stays in its journal, and the run
    /// goes on.
    pub(super) fn commit_one(&mut self, batch: &Batch, recovered: bool) -> Result<bool> {
        self.commit(recovered, |pg, to, taken| {
            *taken = 1;
            let applied = pg.write_batch(to, batch, recovered)?;
            Ok(vec![(batch.head(), applied)])
        })
    }

    /// Runs `write`, one transaction of batches (it counts in `taken` those it took, so that a
    /// failure can say how many wait in their journals), then deletes each committed batch's
    /// journal and counts it. False when Postgres refused the transaction as a whole: its
    /// batches stay in their journals, and the run goes on.
    pub(super) fn commit(
        &mut self,
        recovered: bool,
        write: impl FnOnce(&mut Session, &ApplyTo, &mut usize) -> Result<Vec<(Head, Applied)>>,
    ) -> Result<bool> {
        let t = Instant::now();
        let to = apply_to(self.cfg, self.facts, self.run);
        let mut taken = 0;
        let result = write(self.pg, &to, &mut taken);
        self.tally.lock().postgres_seconds += t.elapsed().as_secs_f64();
        let done = match result {
            Ok(done) => done,
            Err(e) => return self.not_applied(e, taken as u64).map(|()| false),
        };
        // Committed. A crash from here until the journals are gone is what the ledger is for:
        // the next run finds these batch ids there and only deletes the journals.
        fault::point(if recovered {
            "recovery_after_commit"
        } else {
            "after_commit"
        });
        for (n, (head, applied)) in done.iter().enumerate() {
            if let Err(e) = self.acknowledge(head, &applied.unknown) {
                // This one is counted; the journals after it wait as well, applied.
                self.tally.lock().pending_journals += (done.len() - n - 1) as u64;
                return Err(e);
            }
            self.account(head, applied);
        }
        Ok(true)
    }

    /// Counts `batches` a failed transaction leaves in their journals. Postgres refusing
    /// them as a whole (a locked row, a deadlock) fails the run's report and lets it go on;
    /// any other error is the run's.
    fn not_applied(&mut self, e: anyhow::Error, batches: u64) -> Result<()> {
        let mut tally = self.tally.lock();
        tally.pending_journals += batches;
        if e.downcast_ref::<BatchRejected>().is_none() {
            return Err(e);
        }
        tally.batches_failed += batches;
        tally.fail(&e);
        Ok(())
    }

    /// Deletes the batch's chunks from its journal, parking unknown hits first if asked.
    /// Returns false when Redis would not park them (out of memory) and the journal stays,
    /// for the next run to park them: the batch is applied, and the run fails.
    pub(super) fn acknowledge(&mut self, batch: &Head, unknown: &[(String, i64)]) -> Result<bool> {
        let park: &[(String, i64)] = if self.cfg.source.keep_unknown {
            unknown
        } else {
            &[]
        };
        let t = Instant::now();
        let acked = match self.redis.ack(&batch.id, &batch.fields, park) {
            Ok(acked) => acked,
            Err(e) => {
                self.tally.lock().pending_journals += 1;
                return Err(e.context(format!(
                    "batch {} is committed but its journal could not be deleted; the next \
                     run will only delete it",
                    batch.id
                )));
            }
        };
        let mut tally = self.tally.lock();
        tally.redis_seconds += t.elapsed().as_secs_f64();
        let hash = &self.cfg.source.unknown_key;
        match acked {
            Acked::Done(failed) => {
                tally.unknown_parked += (park.len() - failed.len()) as u64;
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
                tally.pending_journals += 1;
                tally.fail(&anyhow::anyhow!(
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

    /// Counts an applied and acknowledged batch in the tally.
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
        let mut tally = self.tally.lock();
        tally.batches += 1;
        tally.keys += batch.keys;
        tally.hits += batch.hits;
        tally.rows_updated += applied.rows_updated;
        tally.add_unknown(&applied.unknown);
        if !applied.quarantined.is_empty() {
            tally.add_quarantined(&applied.quarantined);
            let e = anyhow::anyhow!(
                "batch {}: Postgres refused {} codes row by row ({} of them new there); their \
                 hits wait in table `{}` and every run tries them again, the rest of the batch \
                 is applied: {}",
                batch.id,
                applied.quarantined.len(),
                applied.newly_quarantined,
                self.cfg.ledger.quarantine_table.name,
                quarantine_examples(&applied.quarantined).join("; ")
            );
            // A code refused for the first time fails the run, so that someone looks; more
            // hits for a code already waiting there do not, again and again.
            if applied.newly_quarantined > 0 {
                tally.fail(&e);
            } else {
                log::warn!("{}", crate::sys::error::text(&e));
            }
        }
        crate::report::keep_so_far(&tally);
        drop(tally);
        progress::applied(batch.keys, batch.hits);
        log::debug!(
            "batch {}: {} keys, {} hits, {} rows updated",
            batch.id,
            batch.keys,
            batch.hits,
            applied.rows_updated
        );
    }
}
