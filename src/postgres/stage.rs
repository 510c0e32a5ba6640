//! A backlog's transactions: several claimed batches applied in one transaction, through a
//! stage. Each batch's codes are copied (binary `COPY`) into a temporary table as the batch
//! comes, and its memory is freed; once the transaction holds its keys (`Batch::gather`, up
//! to `--batch-size`), the staged codes are numbered in code order and applied in one pass
//! over the table, in statements of [`MERGED_ROWS`] rows taken in that order. Why: a batch
//! small beside the table visits a page for nearly every code (docs/performance.md).
//!
//! Exactly once is kept as for one batch: each batch keeps its journal and gets its ledger
//! row in the transaction, and the journals are deleted only after its COMMIT
//! (`flush/commit.rs`). Killed before COMMIT, every batch waits in its journal.
//!
//! Unknown codes are the numbers the UPDATE's rows skip. A code matching several rows, a code
//! two of the batches hold (met twice by one statement), a row-level error, or too many
//! unknown codes: the merged UPDATE is rolled back to its savepoint and each batch is read
//! back and applied on its own, under savepoints (the quarantine). A batch with a code the
//! database's encoding cannot hold (the stage refuses it) is applied on its own afterwards.

use std::collections::HashMap;

use anyhow::{Context, Result};
use postgres::error::SqlState;
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::{ToSql, Type};

use super::applied::{Applied, ApplyTo};
use super::quarantine::row_level;
use super::session::{get, Session};
use crate::model::{Batch, Head};
use crate::sys::fault;

/// The stage: each batch's codes, numbered by batch.
const STAGE: &str = "pg_temp.redis_flusher_stage";
/// The staged codes numbered (`i`) in code order.
const MERGED: &str = "pg_temp.redis_flusher_merged";

/// Rows per statement of the merged UPDATE. The statements take the codes in order, so the
/// transaction's pass over the table stays one, and each statement stays well under
/// `--statement-timeout`.
pub(crate) const MERGED_ROWS: i64 = 100_000;

/// More unknown codes than this in one transaction: its batches are applied one by one
/// instead, each finding its own, so that the numbers kept stay few.
const MOST_UNKNOWN: usize = 100_000;

/// What a transaction that gathers batches holds so far.
#[derive(Default)]
struct Gathered {
    /// Batches whose codes are in the stage; a batch's number there is its index here.
    staged: Vec<Head>,
    /// Batches the stage refused a code of (the database's encoding cannot hold it): applied
    /// on their own after the merged UPDATE, so that their rows are not locked while the
    /// transaction still gathers.
    alone: Vec<Batch>,
}

impl Session {
    /// Applies `first` and the batches `next` hands over after it (None: no more), in one
    /// transaction. `taken` counts the batches it took, so that a failure can say how many
    /// wait in their journals. Returns each batch with what it did.
    pub fn write_gathered(
        &mut self,
        to: &ApplyTo,
        first: Batch,
        mut next: impl FnMut() -> Option<Batch>,
        taken: &mut usize,
    ) -> Result<Vec<(Head, Applied)>> {
        let what = format!("batch {} and the batches after it", first.id);
        self.transaction(&what, Some("before_commit"), |pg| {
            pg.simple(
                "creating the stage (a temporary table)",
                &format!(
                    "CREATE TEMP TABLE {STAGE} (batch int4 NOT NULL, code text NOT NULL, \
                     count int8 NOT NULL) ON COMMIT DROP"
                ),
            )?;
            let mut g = Gathered::default();
            let mut batch = Some(first);
            // The transaction waits idle while the next batch is claimed: the gap an
            // idle_in_transaction_session_timeout must allow (`check` warns about it).
            let mut idle = std::time::Duration::ZERO;
            while let Some(b) = batch {
                *taken += 1;
                pg.stage(to, &mut g, b)?;
                fault::point("after_stage");
                let waited = std::time::Instant::now();
                batch = next();
                idle = idle.max(waited.elapsed());
            }
            log::debug!(
                "{what}: {} batches ({} keys) gathered, waited idle {:.2} s at most for one",
                g.staged.len() + g.alone.len(),
                g.staged.iter().map(|h| h.keys).sum::<u64>()
                    + g.alone.iter().map(|b| b.keys).sum::<u64>(),
                idle.as_secs_f64()
            );
            pg.apply_stage(to, g)
        })
    }

    /// Copies a finished batch's codes into the stage, under a savepoint; the batch is then
    /// only its head. A code the stage refuses (one the database's encoding cannot hold):
    /// the batch is applied on its own instead, its refused codes quarantined.
    fn stage(&mut self, to: &ApplyTo, g: &mut Gathered, batch: Batch) -> Result<()> {
        let n = i32::try_from(g.staged.len()).context("BUG: too many batches in a transaction")?;
        self.simple("setting a savepoint", "SAVEPOINT stage")?;
        let copied = self.copy_in(
            &format!("copying batch {} into the stage", batch.id),
            &format!("COPY {STAGE} (batch, code, count) FROM STDIN (FORMAT binary)"),
            &[Type::INT4, Type::TEXT, Type::INT8],
            |w| {
                for (code, hits) in batch.hits.iter() {
                    w.write(&[&n, &code, &hits])?;
                }
                Ok(())
            },
        );
        match copied {
            Ok(_) => {
                self.simple("releasing a savepoint", "RELEASE SAVEPOINT stage")?;
                g.staged.push(batch.head());
            }
            Err(e) if row_level(&e, to.target, to.facts).is_some() => {
                self.simple(
                    "rolling back to a savepoint",
                    "ROLLBACK TO SAVEPOINT stage; RELEASE SAVEPOINT stage",
                )?;
                log::debug!(
                    "batch {}: the stage refused a code ({}); it is applied on its own",
                    batch.id,
                    crate::sys::error::text(&anyhow::Error::new(e))
                );
                g.alone.push(batch);
            }
            Err(e) => {
                return Err(
                    self.stage_failed(e, &format!("copying batch {} into the stage", batch.id))
                )
            }
        }
        Ok(())
    }

    /// Applies what the stage holds: numbered in code order, then the UPDATE in ranges of
    /// those numbers; each batch's ledger row.
    fn apply_stage(&mut self, to: &ApplyTo, g: Gathered) -> Result<Vec<(Head, Applied)>> {
        let Gathered { staged, alone } = g;
        let mut done = Vec::with_capacity(staged.len() + alone.len());
        if !staged.is_empty() {
            self.apply_merged(to, staged, &mut done)?;
        }
        for batch in alone {
            let applied = self.apply_within(to, &batch)?;
            done.push((batch.head(), applied));
        }
        Ok(done)
    }

    /// The staged batches: numbered, updated, settled; each batch's ledger row.
    fn apply_merged(
        &mut self,
        to: &ApplyTo,
        staged: Vec<Head>,
        done: &mut Vec<(Head, Applied)>,
    ) -> Result<()> {
        // Numbered in byte order (COLLATE "C"), as a batch in memory is sorted: every
        // transaction of ours locks rows in one order. Not summed: a code two batches hold
        // (rare: its key was INCRed again after its claim, and SCAN listed it again) is two
        // rows here, next to each other, and the UPDATE that meets both in one statement
        // takes only the first; `settle_merged` finds that, and the batches are applied one
        // by one. Summing would cost a second pass over the stage for every transaction.
        let merged = self.stage_step(
            "numbering the stage",
            &format!(
                "CREATE TEMP TABLE {MERGED} ON COMMIT DROP AS \
                 SELECT row_number() OVER (ORDER BY code COLLATE \"C\", batch) AS i, batch, \
                 code, count FROM {STAGE}"
            ),
        )?;
        let merged = i64::try_from(merged).context("BUG: the stage's row count")?;
        self.stage_step(
            "indexing the numbered stage",
            &format!("CREATE INDEX ON {MERGED} (i)"),
        )?;
        self.simple("setting a savepoint", "SAVEPOINT merged")?;
        match self.update_merged(to, merged, &staged)? {
            Some((unknown, rows)) => match self.settle_merged(to, &staged, unknown, rows)? {
                Some(applied) => {
                    self.simple("releasing a savepoint", "RELEASE SAVEPOINT merged")?;
                    for (head, applied) in staged.into_iter().zip(applied) {
                        self.record_batch(to, &head, &applied, false)?;
                        done.push((head, applied));
                    }
                }
                None => {
                    self.simple(
                        "rolling back to a savepoint",
                        "ROLLBACK TO SAVEPOINT merged; RELEASE SAVEPOINT merged",
                    )?;
                    self.apply_one_by_one(to, staged, done)?;
                }
            },
            None => {
                self.simple(
                    "rolling back to a savepoint",
                    "ROLLBACK TO SAVEPOINT merged; RELEASE SAVEPOINT merged",
                )?;
                self.apply_one_by_one(to, staged, done)?;
            }
        }
        Ok(())
    }

    /// One statement of the stage's own (no rows of the table): its rows, or its failure,
    /// with advice when it took longer than `--statement-timeout`.
    fn stage_step(&mut self, what: &str, sql: &str) -> Result<u64> {
        let step = self.call(what, |c| {
            let mut rows = c.query_typed_raw(sql, Vec::<(&(dyn ToSql + Sync), Type)>::new())?;
            while rows.next()?.is_some() {}
            Ok(rows.rows_affected().unwrap_or(0))
        });
        step.map_err(|e| match e.downcast::<postgres::Error>() {
            Ok(e) => self.stage_failed(e, what),
            Err(e) => e,
        })
    }

    /// The failure of a step of the stage: the run's, with advice when it took longer than
    /// `--statement-timeout` (the batches wait in their journals either way).
    fn stage_failed(&self, e: postgres::Error, what: &str) -> anyhow::Error {
        let canceled = e.code() == Some(&SqlState::QUERY_CANCELED);
        let e = anyhow::Error::new(e).context(self.failed(what));
        if !canceled {
            return e;
        }
        e.context(format!(
            "{what} took longer than --statement-timeout ({} s) in a transaction that gathers \
             a backlog's batches; they wait in their journals, and the next run applies them \
             (each on its own): lower --batch-size or raise --statement-timeout",
            self.statement_timeout.as_secs()
        ))
    }

    /// Each staged batch read back and applied on its own, under savepoints (`apply.rs`):
    /// the way for a transaction whose merged UPDATE was rolled back.
    fn apply_one_by_one(
        &mut self,
        to: &ApplyTo,
        staged: Vec<Head>,
        done: &mut Vec<(Head, Applied)>,
    ) -> Result<()> {
        for (n, head) in staged.into_iter().enumerate() {
            let batch = self.staged_batch(n, &head)?;
            let applied = self.apply_within(to, &batch)?;
            done.push((head, applied));
        }
        Ok(())
    }

    /// The UPDATE of the numbered stage, `merged` rows, in statements of [`MERGED_ROWS`] in code
    /// order. Returns the unknown codes' numbers and the rows updated; None when it must be
    /// applied batch by batch (see the module's comment), the UPDATE to be rolled back.
    fn update_merged(
        &mut self,
        to: &ApplyTo,
        merged: i64,
        staged: &[Head],
    ) -> Result<Option<(Vec<i64>, u64)>> {
        let t = to.target;
        // The numbers come back as one sorted array a statement, not a row each: a row each
        // cost Postgres and the client about a microsecond a code.
        let sql = format!(
            "WITH done AS (UPDATE {tq} AS u SET {n} = u.{n} + d.count \
             FROM (SELECT i, code, count FROM {MERGED} WHERE i >= $1 AND i < $2 ORDER BY i) AS d \
             WHERE u.{c} = d.code RETURNING d.i) \
             SELECT coalesce(array_agg(i ORDER BY i), '{{}}') FROM done",
            tq = t.table.quoted,
            n = t.count_column.quoted,
            c = t.code_column.quoted,
        );
        let what = format!("the UPDATE of table `{}`", t.table.name);
        let (mut unknown, mut rows) = (Vec::new(), 0u64);
        // The next number expected: those skipped are unknown; one again is a code matching
        // several rows.
        let mut expected = 1i64;
        let mut start = 1i64;
        while start <= merged {
            let end = (start + MERGED_ROWS).min(merged + 1);
            let mut refused = false;
            let done = self.for_each_row(
                &what,
                &sql,
                vec![(&start, Type::INT8), (&end, Type::INT8)],
                |row| {
                    let found: Vec<i64> = get(row, 0, "the UPDATE's numbers")?;
                    for i in found {
                        rows += 1;
                        if i < expected {
                            refused = true;
                            break;
                        }
                        unknown.extend(expected..i);
                        expected = i + 1;
                    }
                    Ok(())
                },
            )?;
            if let Err(e) = done {
                return match row_level(&e, t, to.facts) {
                    Some(_) => Ok(None),
                    None => Err(self.refusal(
                        e,
                        to,
                        (
                            &format!(
                                "the {} batches from {} to {} (one transaction)",
                                staged.len(),
                                staged.first().map_or("", |h| h.id.as_str()),
                                staged.last().map_or("", |h| h.id.as_str())
                            ),
                            true,
                        ),
                        merged as usize,
                        MERGED_ROWS as usize,
                    )),
                };
            }
            unknown.extend(expected..end);
            expected = end;
            if refused || unknown.len() > MOST_UNKNOWN {
                return Ok(None);
            }
            start = end;
        }
        Ok(Some((unknown, rows)))
    }

    /// What each staged batch did, once the merged UPDATE went: its unknown codes (looked up
    /// by their numbers), and its share of the rows updated. None when a skipped number's
    /// code has a row after all: a code two batches hold, met twice by one statement, which
    /// took one batch's hits only; the UPDATE must then be rolled back.
    fn settle_merged(
        &mut self,
        to: &ApplyTo,
        staged: &[Head],
        unknown: Vec<i64>,
        rows: u64,
    ) -> Result<Option<Vec<Applied>>> {
        let mut applied: Vec<Applied> = staged.iter().map(|_| Applied::default()).collect();
        if !unknown.is_empty() {
            let t = to.target;
            let found = self.query(
                "reading the unknown codes from the stage",
                &format!(
                    "SELECT m.batch, m.code, m.count, \
                     EXISTS (SELECT 1 FROM {tq} AS u WHERE u.{c} = m.code) \
                     FROM {MERGED} m WHERE m.i = ANY($1::int8[])",
                    tq = t.table.quoted,
                    c = t.code_column.quoted,
                ),
                &[(&unknown, Type::INT8_ARRAY)],
            )?;
            let mut by_batch: HashMap<usize, Vec<(String, i64)>> = HashMap::new();
            for r in &found {
                if get::<bool>(r, 3, "the stage")? {
                    return Ok(None);
                }
                let n: i32 = get(r, 0, "the stage")?;
                by_batch
                    .entry(n as usize)
                    .or_default()
                    .push((get(r, 1, "the stage")?, get(r, 2, "the stage")?));
            }
            for (n, mut codes) in by_batch {
                let a = applied
                    .get_mut(n)
                    .context("BUG: the stage names a batch it does not hold")?;
                codes.sort();
                a.unknown = codes;
            }
        }
        share_rows(staged, &mut applied, rows);
        Ok(Some(applied))
    }

    /// Batch `n` of the stage, read back to be applied on its own.
    fn staged_batch(&mut self, n: usize, head: &Head) -> Result<Batch> {
        let rows = self.query(
            &format!("reading batch {} back from the stage", head.id),
            &format!("SELECT code, count FROM {STAGE} WHERE batch = $1"),
            &[(&(n as i32), Type::INT4)],
        )?;
        let mut batch = Batch::new(head.id.clone());
        for r in &rows {
            let (code, hits): (&str, i64) = (get(r, 0, "the stage")?, get(r, 1, "the stage")?);
            batch.hits.push(code, hits)?;
        }
        batch.finish()?;
        batch.keys = head.keys;
        batch.fields = head.fields.clone();
        Ok(batch)
    }
}

/// Shares the `rows` the merged UPDATE changed out among the staged batches (whose unknown
/// codes are known by now): each its codes that have a row. A code in two of the batches
/// updated its row once, so the sum may be too many: the last batches give it back.
fn share_rows(staged: &[Head], applied: &mut [Applied], rows: u64) {
    let mut excess = staged
        .iter()
        .zip(applied.iter())
        .map(|(h, a)| (h.codes - a.unknown.len()) as u64)
        .sum::<u64>()
        .saturating_sub(rows);
    for (h, a) in staged.iter().zip(applied.iter_mut()).rev() {
        let own = (h.codes - a.unknown.len()) as u64;
        let back = own.min(excess);
        excess -= back;
        a.rows_updated = own - back;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(codes: usize) -> Head {
        Head {
            codes,
            ..Head::default()
        }
    }

    fn unknown(n: usize) -> Applied {
        Applied {
            unknown: (0..n).map(|i| (format!("u{i}"), 1)).collect(),
            ..Applied::default()
        }
    }

    #[test]
    fn each_staged_batch_gets_its_codes_that_have_a_row() {
        let staged = [head(10), head(5), head(7)];
        let mut applied = [unknown(2), unknown(0), unknown(7)];
        share_rows(&staged, &mut applied, 13);
        let rows: Vec<u64> = applied.iter().map(|a| a.rows_updated).collect();
        assert_eq!(rows, [8, 5, 0]);
    }

    /// Two batches held one code: its row was updated once, and the later batch gives back
    /// the row the sum counts twice, so the ledger's rows add up to the table's.
    #[test]
    fn a_code_two_batches_hold_is_one_row_counted_once() {
        let staged = [head(4), head(3), head(2)];
        let mut applied = [unknown(0), unknown(1), unknown(0)];
        share_rows(&staged, &mut applied, 6);
        let rows: Vec<u64> = applied.iter().map(|a| a.rows_updated).collect();
        assert_eq!(rows, [4, 2, 0]);
        assert_eq!(rows.iter().sum::<u64>(), 6);
    }
}
