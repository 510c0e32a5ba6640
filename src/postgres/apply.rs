//! Applying one batch: the bulk UPDATE (`update.rs`), the batch's ledger row and the
//! quarantine of the codes Postgres refuses row by row (`isolate.rs`), in one transaction
//! that commits all or nothing; and what a failed UPDATE means for the batch (refused as a
//! whole, or the run's failure). `stage.rs` applies a backlog's batches several to a
//! transaction, and falls back to these for a batch on its own.
//!
//! Table and column names reach SQL only as `Ident`s (checked and quoted in `config`); codes
//! and counts are always bound parameters.

use std::fmt;

use anyhow::Result;
use postgres::error::SqlState;
use postgres::types::Type;

use super::catalog::TableFacts;
use super::isolate::{settle, Outcome};
use super::session::Session;
use super::update::Part;
use crate::config::{Ident, TargetConfig};
use crate::model::{Batch, Head, Poisoned};

/// A batch Postgres refused for what it holds as a whole: a row that another session keeps
/// locked. The run goes on with the other batches; this one stays in its journal.
#[derive(Debug)]
pub(crate) struct BatchRejected(pub String);

impl fmt::Display for BatchRejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BatchRejected {}

/// What one applied batch did.
#[derive(Debug, Default)]
pub struct Applied {
    /// Rows the UPDATE changed.
    pub rows_updated: u64,
    /// Codes with no row, and their hits.
    pub unknown: Vec<(String, i64)>,
    /// Codes Postgres refused row by row, and why: their hits are in the quarantine (for a
    /// batch from the quarantine: they stay there).
    pub quarantined: Vec<Poisoned>,
    /// How many of them were not in the quarantine before.
    pub newly_quarantined: usize,
}

impl Applied {
    /// The hits that reached a row.
    pub(crate) fn hits_applied(&self, batch: &Head) -> i128 {
        let aside: i128 = self
            .unknown
            .iter()
            .map(|(_, h)| i128::from(*h))
            .chain(self.quarantined.iter().map(|p| i128::from(p.hits)))
            .sum();
        batch.hits - aside
    }
}

/// Where one batch goes, and what the advice on a refusal needs.
pub struct ApplyTo<'a> {
    pub target: &'a TargetConfig,
    pub facts: &'a TableFacts,
    pub ledger: &'a Ident,
    pub quarantine: &'a Ident,
    /// This flusher's tag: its quarantined codes are its own.
    pub owner: &'a str,
}

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

    /// What a failed UPDATE means for what it applies (`what`: "batch <id>", or the
    /// batches of a transaction that gathers them, `several`; `codes` codes, in statements
    /// of `per_statement` rows), when no row in particular caused it: refused as a whole (it
    /// waits in its journals and the run goes on), or a failure of the run.
    pub(super) fn refusal(
        &self,
        e: postgres::Error,
        to: &ApplyTo,
        (what, several): (&str, bool),
        codes: usize,
        per_statement: usize,
    ) -> anyhow::Error {
        let t = to.target;
        let (waits, them) = match several {
            false => ("it stays in its journal", "it"),
            true => ("they stay in their journals", "them"),
        };
        if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) {
            return BatchRejected(format!(
                "{what} waited more than {} s for a row of `{}` that another session holds \
                 locked (the app, or a long transaction); {waits} and the next run applies \
                 {them} (`--lock-timeout` sets the wait)",
                self.lock_timeout.as_secs(),
                t.table.name
            ))
            .into();
        }
        if e.code() == Some(&SqlState::T_R_DEADLOCK_DETECTED) {
            // Our batches lock rows in code order; a transaction of the app's that locks them
            // in another order can still meet one of ours.
            return BatchRejected(format!(
                "{what} and another session's transaction locked rows of `{}` in opposite \
                 orders, and Postgres rolled it back (deadlock detected); {waits} and the next \
                 run applies {them}",
                t.table.name
            ))
            .into();
        }
        if e.code() == Some(&SqlState::QUERY_CANCELED) {
            // Not a rejection: the next batch would most likely time out as well, and
            // this one comes back whole from its journal, however --batch-size is set.
            return anyhow::Error::new(e).context(format!(
                "PostgreSQL at {}: an UPDATE of {what} ({codes} codes, in statements of up to \
                 {}) was canceled: it took longer than --statement-timeout ({} s), or an \
                 operator canceled it. What it holds waits in its journal, and the next run \
                 applies it whole: raise --statement-timeout if Postgres is just slow",
                self.display,
                per_statement,
                self.statement_timeout.as_secs(),
            ));
        }
        anyhow::Error::new(e)
            .context(self.failed(&format!("the UPDATE of table `{}`", t.table.name)))
    }
}
