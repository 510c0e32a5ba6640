//! Applying one batch: the bulk UPDATE (`update.rs`), the batch's ledger row and the
//! quarantine of the codes Postgres refuses row by row (`isolate.rs`), in one transaction
//! that commits all or nothing; and trying the quarantined codes again, the same way.
//! `stage.rs` applies a backlog's batches several to a transaction, and falls back to these
//! for a batch on its own.
//!
//! Table and column names reach SQL only as `Ident`s (checked and quoted in `config`); codes
//! and counts are always bound parameters.

use std::collections::HashSet;

use anyhow::Result;
use postgres::types::Type;

use super::applied::{Applied, ApplyTo};
use super::isolate::{settle, Outcome};
use super::session::Session;
use super::update::Part;
use crate::model::{Batch, Head};

/// How many quarantined codes a run tries again, those tried longest ago first.
pub(crate) const RETRY_LIMIT: i64 = 1000;

impl Session {
    /// Applies one batch in one transaction: the UPDATE, its ledger row, and the quarantine
    /// of any code Postgres refuses row by row (a trigger, a constraint, a count past the
    /// column's range, an encoding, a code matching several rows) commit together or not at
    /// all. `batch.hits` is sorted by code, so that every writer locks rows in one order. A
    /// refusal of the whole batch (a row locked too long) is a [`BatchRejected`].
    pub(crate) fn write_batch(
        &mut self,
        to: &ApplyTo,
        batch: &Batch,
        recovered: bool,
    ) -> Result<Applied> {
        let before_commit = if recovered {
            "recovery_before_commit"
        } else {
            "before_commit"
        };
        self.transaction(&format!("batch {}", batch.id), Some(before_commit), |pg| {
            // The whole batch at once first: the common case, one statement (unnest).
            let outcome = match pg.update_part(to, batch, 0, batch.hits.len())? {
                Part::Done(found, rows) => Outcome {
                    found,
                    rows_updated: rows,
                    poisoned: Vec::new(),
                },
                Part::Refused(..) => {
                    // The error aborted the transaction: again, narrowing it down to the
                    // codes that cause it, each part under a savepoint.
                    pg.rollback();
                    pg.begin(false)?;
                    pg.isolate_all(to, batch)?
                }
            };
            pg.settle_and_record(to, batch, outcome, recovered)
        })
    }

    /// Applies one batch inside a transaction that is already open (one that gathers
    /// batches): part by part under savepoints, so that a refused code rolls back only
    /// itself; its quarantined codes and its ledger row are written in the same transaction.
    pub(super) fn apply_within(&mut self, to: &ApplyTo, batch: &Batch) -> Result<Applied> {
        let outcome = self.isolate_all(to, batch)?;
        self.settle_and_record(to, batch, outcome, false)
    }

    /// What the UPDATEs of a batch found, as what was applied: refused codes quarantined,
    /// and the batch's ledger row written.
    fn settle_and_record(
        &mut self,
        to: &ApplyTo,
        batch: &Batch,
        outcome: Outcome,
        recovered: bool,
    ) -> Result<Applied> {
        let mut applied = settle(batch, outcome);
        if !applied.quarantined.is_empty() {
            applied.newly_quarantined =
                self.quarantine(to.quarantine, to.owner, &batch.id, &applied.quarantined)?;
        }
        self.record_batch(to, &batch.head(), &applied, recovered)?;
        Ok(applied)
    }

    /// The batch's ledger row: the hits that reached a row or had none (quarantined ones are
    /// counted where they are applied in the end), and the unknown codes.
    pub(super) fn record_batch(
        &mut self,
        to: &ApplyTo,
        batch: &Head,
        applied: &Applied,
        recovered: bool,
    ) -> Result<()> {
        let unknown = &applied.unknown;
        let unknown_total = unknown.iter().map(|(_, h)| i128::from(*h)).sum::<i128>();
        let unknown_codes: Vec<&str> = unknown.iter().map(|(c, _)| c.as_str()).collect();
        let unknown_counts: Vec<i64> = unknown.iter().map(|(_, h)| *h).collect();
        let hits = (applied.hits_applied(batch) + unknown_total).to_string();
        let (keys, rows) = (batch.keys as i64, applied.rows_updated as i64);
        let (unknown_keys, unknown_hits) = (unknown.len() as i64, unknown_total.to_string());
        self.execute(
            &format!(
                "recording batch {} in ledger table `{}`",
                batch.id, to.ledger.name
            ),
            &format!(
                "INSERT INTO {} (batch_id, keys, hits, rows_updated, unknown_keys, unknown_hits, \
                 unknown_codes, unknown_counts, recovered) \
                 VALUES ($1, $2, $3::text::numeric, $4, $5, $6::text::numeric, $7, $8, $9)",
                to.ledger.quoted
            ),
            &[
                (&batch.id, Type::TEXT),
                (&keys, Type::INT8),
                (&hits, Type::TEXT),
                (&rows, Type::INT8),
                (&unknown_keys, Type::INT8),
                (&unknown_hits, Type::TEXT),
                (&unknown_codes, Type::TEXT_ARRAY),
                (&unknown_counts, Type::INT8_ARRAY),
                (&recovered, Type::BOOL),
            ],
        )?;
        Ok(())
    }

    /// Tries this flusher's quarantined codes again (up to [`RETRY_LIMIT`]), as batch
    /// `batch_id`: in one transaction, those that now reach a row (or have none) are applied
    /// and leave the quarantine, the others stay. None when nothing waits there.
    pub(crate) fn retry_quarantine(
        &mut self,
        to: &ApplyTo,
        batch_id: &str,
    ) -> Result<Option<(Batch, Applied)>> {
        let mut batch = Batch::new(batch_id.to_owned());
        let applied = self.transaction(
            &format!("batch {batch_id}"),
            Some("quarantine_before_commit"),
            |pg| {
                let taken = pg.take_quarantined(to.quarantine, to.owner, RETRY_LIMIT)?;
                if taken.is_empty() {
                    return Ok(None);
                }
                for (code, hits) in taken {
                    batch.hits.push(&code, hits)?;
                    batch.keys += 1;
                }
                batch.finish()?;
                let applied = settle(&batch, pg.isolate_all(to, &batch)?);
                let again: HashSet<&str> = applied
                    .quarantined
                    .iter()
                    .map(|p| p.code.as_str())
                    .collect();
                let done: Vec<&str> = batch
                    .hits
                    .iter()
                    .map(|(c, _)| c)
                    .filter(|c| !again.contains(c))
                    .collect();
                pg.settle_quarantine(to.quarantine, to.owner, &done, &applied.quarantined)?;
                pg.record_batch(to, &batch.head(), &applied, false)?;
                Ok(Some(applied))
            },
        )?;
        Ok(applied.map(|a| (batch, a)))
    }
}
