//! Finishing what failed or killed runs left, before a run claims anything of its own: each
//! journal applied once (or only deleted, when the ledger shows it was applied), then the
//! codes Postgres refused before tried again.

use std::time::Instant;

use anyhow::Result;

use super::commit::apply_to;
use super::Flusher;
use crate::model::{scope_of, Batch};
use crate::report::quarantine_examples;

impl Flusher<'_> {
    /// Finishes the journals that failed or killed runs left: applies each once, or only
    /// deletes it when the ledger shows it was applied (killed after COMMIT).
    pub(super) fn recover(&mut self) -> Result<()> {
        let mut journals = self.redis.journals(true)?;
        // A shard recovers the journals whose range starts in its slots: each journal has
        // exactly one such shard in any layout, and a run without shards owns them all.
        let own = self.cfg.source.shard.slots();
        journals.retain(|j| own.contains(&scope_of(&j.id).start));
        if !journals.is_empty() {
            log::info!(
                "recovering {} left by failed runs",
                crate::report::count(journals.len() as u64, "journal", "journals")
            );
        }
        for journal in journals {
            if self.halt.reason().is_some() {
                return Err(self.halt.stopped("while recovering journals"));
            }
            // A journal of another layout (or of a run without shards) may reach past this
            // run's slots, where only this run's own fences were raised: fence its slots
            // too, unless a newer run (another shard) holds one of them: then the journal
            // waits for a later run of this shard, which will have a newer token.
            let scope = scope_of(&journal.id);
            if (scope.start < own.start || scope.end > own.end)
                && !self.redis.fence_slots(scope.clone())?
            {
                log::info!(
                    "journal {} (slots {}-{}) left for a later run: a newer run (another \
                     shard) holds some of its slots",
                    journal.key,
                    scope.start,
                    scope.end - 1
                );
                self.tally.lock().pending_journals += 1;
                continue;
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
                    self.tally.lock().other_targets_journals += 1;
                    continue;
                }
            };
            self.redis
                .confirm_replicated(&format!("the journal of batch {}", journal.id))?;
            let batch = match Batch::from_chunks(&journal.id, contents.chunks) {
                Ok(b) => b,
                Err(e) => {
                    let mut tally = self.tally.lock();
                    tally.pending_journals += 1;
                    tally.fail(&e.context(format!(
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
            if self.commit_one(&batch, true)? {
                self.tally.lock().recovered_batches += 1;
            }
        }
        Ok(())
    }

    /// Tries the codes Postgres refused before again (as many as
    /// `RETRY_LIMIT`, `postgres/quarantine.rs`): those it takes now are applied and leave the
    /// quarantine, in one transaction.
    pub(super) fn retry_quarantine(&mut self) -> Result<()> {
        let t = Instant::now();
        let to = apply_to(self.cfg, self.facts, self.run);
        let id = format!("{}-q", self.run.id);
        let retried = self.pg.retry_quarantine(&to, &id)?;
        self.tally.lock().postgres_seconds += t.elapsed().as_secs_f64();
        let Some((batch, applied)) = retried else {
            return Ok(());
        };
        let again = applied.quarantined.len();
        let head = batch.head();
        let released = applied.hits_applied(&head);
        {
            let mut tally = self.tally.lock();
            tally.released_from_quarantine += (batch.hits.len() - again) as u64;
            tally.released_hits += released;
            tally.rows_updated += applied.rows_updated;
            tally.add_unknown(&applied.unknown);
        }
        if again > 0 {
            log::warn!(
                "{again} codes in table `{}` are still refused (tried again; they keep \
                 waiting there): {}",
                self.cfg.ledger.quarantine_table.name,
                quarantine_examples(&applied.quarantined).join("; ")
            );
        }
        if again < batch.hits.len() {
            log::info!(
                "{} codes left the quarantine: Postgres took their {released} hits this time",
                batch.hits.len() - again,
            );
        }
        Ok(())
    }
}
