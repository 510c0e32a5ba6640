//! Applying one batch: the bulk UPDATE, the batch's ledger row and the quarantine of the codes
//! Postgres refuses row by row, in one transaction that commits all or nothing; trying the
//! quarantined codes again; and the read-only look a dry run takes instead.
//!
//! One piece because all three run the same UPDATE and narrow a refusal down the same way
//! (`update`, `isolate`, `settle`), and the dry run's look must find the rows that UPDATE
//! would; `stage.rs` reuses them for a batch applied on its own inside a larger transaction.
//!
//! Table and column names reach SQL only as `Ident`s (checked and quoted in `config`); codes
//! and counts are always bound parameters.

use std::collections::HashSet;
use std::fmt;

use anyhow::Result;
use postgres::error::SqlState;
use postgres::types::{ToSql, Type};

use super::catalog::TableFacts;
use super::quarantine::{duplicate, row_level, Poisoned, RowError};
use super::session::{get, Param, Session};
use crate::config::{Ident, TargetConfig, UpdateForm};
use crate::fault;
use crate::model::{Batch, Head};

/// A batch Postgres refused for what it holds as a whole: a row that another session keeps
/// locked. The run goes on with the other batches; this one stays in its journal.
#[derive(Debug)]
pub struct BatchRejected(pub String);

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
    pub fn hits_applied(&self, batch: &Head) -> i128 {
        let aside: i128 = self
            .unknown
            .iter()
            .map(|(_, h)| i128::from(*h))
            .chain(self.quarantined.iter().map(|p| i128::from(p.hits)))
            .sum();
        batch.hits - aside
    }
}

/// Rows per `VALUES` statement: Postgres binds at most 65,535 parameters, two per row.
pub const VALUES_ROWS: usize = 30_000;

/// The bulk UPDATE for `rows` rows, in `target.form`:
/// `UPDATE t AS u SET n = u.n + d.count FROM <rows> AS d(code, count) WHERE u.code = d.code
/// RETURNING d.code`, where `<rows>` is `unnest($1::text[], $2::int8[])` or
/// `(VALUES ($1::text,$2::int8), …)`.
pub fn update_sql(target: &TargetConfig, rows: usize) -> String {
    let from = match target.form {
        UpdateForm::Unnest => "unnest($1::text[], $2::int8[])".to_owned(),
        UpdateForm::Values => {
            let mut values = String::with_capacity(rows * 24 + 10);
            values.push_str("(VALUES ");
            for i in 0..rows {
                if i > 0 {
                    values.push(',');
                }
                values.push_str(&format!("(${}::text,${}::int8)", 2 * i + 1, 2 * i + 2));
            }
            values.push(')');
            values
        }
    };
    format!(
        "UPDATE {t} AS u SET {n} = u.{n} + d.count FROM {from} AS d(code, count) \
         WHERE u.{c} = d.code RETURNING d.code",
        t = target.table.quoted,
        n = target.count_column.quoted,
        c = target.code_column.quoted,
    )
}

/// Rows per `unnest` statement. The client encodes a statement's parameters whole (about 50
/// bytes a code, twice that while its buffer grows), so a larger batch is several
/// statements in its one transaction, and memory stays with the batch's compact codes. The
/// rows a batch locks, and the pages it visits, are the same either way.
pub const UNNEST_ROWS: usize = 25_000;

/// How many rows each statement of a batch of `codes` codes takes: unnest up to
/// [`UNNEST_ROWS`]; VALUES binds two parameters a row and Postgres takes at most 65,535.
pub fn statement_rows(form: UpdateForm, codes: usize) -> usize {
    match form {
        UpdateForm::Unnest => codes.clamp(1, UNNEST_ROWS),
        UpdateForm::Values => VALUES_ROWS,
    }
}

/// The parameters of one statement of [`update_sql`]: two arrays (unnest), or a code and a
/// count per row (VALUES).
pub fn update_params<'a>(
    form: UpdateForm,
    codes: &'a &'a [&'a str],
    counts: &'a &'a [i64],
) -> Vec<Param<'a>> {
    match form {
        UpdateForm::Unnest => vec![(codes, Type::TEXT_ARRAY), (counts, Type::INT8_ARRAY)],
        UpdateForm::Values => codes
            .iter()
            .zip(counts.iter())
            .flat_map(|(code, count)| {
                [
                    (code as &(dyn ToSql + Sync), Type::TEXT),
                    (count as &(dyn ToSql + Sync), Type::INT8),
                ]
            })
            .collect(),
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

/// What the UPDATEs of a batch (or a part of it) found.
struct Outcome {
    /// By code, in the batch's order: whether a row got its hits.
    found: Vec<bool>,
    rows_updated: u64,
    /// By index in the batch: codes refused row by row.
    poisoned: Vec<(usize, RowError)>,
}

/// How the UPDATE of a part of a batch went.
enum Part {
    /// Its rows, by code in the part: whether each got its hits.
    Done(Vec<bool>, u64),
    /// A row-level error, or codes that matched several rows (index in the part, rows).
    Refused(RowError, Vec<(usize, usize)>),
}

/// Parts of at most this many codes are tried code by code once they fail, rather than
/// halved again.
const ONE_BY_ONE: usize = 4;

/// How many quarantined codes a run tries again, those tried longest ago first.
pub const RETRY_LIMIT: i64 = 1000;

impl Session {
    /// Applies one batch in one transaction: the UPDATE, its ledger row, and the quarantine
    /// of any code Postgres refuses row by row (a trigger, a constraint, a count past the
    /// column's range, an encoding, a code matching several rows) commit together or not at
    /// all. `batch.hits` is sorted by code, so that every writer locks rows in one order. A
    /// refusal of the whole batch (a row locked too long) is a [`BatchRejected`].
    pub fn apply(&mut self, to: &ApplyTo, batch: &Batch, recovered: bool) -> Result<Applied> {
        let before_commit = if recovered {
            "recovery_before_commit"
        } else {
            "before_commit"
        };
        self.in_transaction(&batch.id, before_commit, |pg| {
            // The whole batch at once first: the common case, one statement (unnest).
            let outcome = match pg.update(to, batch, 0, batch.hits.len())? {
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

    /// Tries this flusher's quarantined codes again (up to [`RETRY_LIMIT`]), as batch
    /// `batch_id`: in one transaction, those that now reach a row (or have none) are applied
    /// and leave the quarantine, the others stay. None when nothing waits there.
    pub fn retry_quarantine(
        &mut self,
        to: &ApplyTo,
        batch_id: &str,
    ) -> Result<Option<(Batch, Applied)>> {
        let mut batch = Batch::new(batch_id.to_owned());
        let applied = self.in_transaction(batch_id, "quarantine_before_commit", |pg| {
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
        })?;
        Ok(applied.map(|a| (batch, a)))
    }

    /// Runs `f` in a transaction of ours and commits it (batch `id`'s), fault point
    /// `before_commit` just before; rolls back if `f` fails.
    pub(super) fn in_transaction<T>(
        &mut self,
        id: &str,
        before_commit: &str,
        f: impl FnOnce(&mut Session) -> Result<T>,
    ) -> Result<T> {
        self.begin(false)?;
        match f(self) {
            Ok(v) => {
                fault::point(before_commit);
                self.commit(&format!("batch {id}"))?;
                Ok(v)
            }
            Err(e) => {
                self.rollback();
                Err(e)
            }
        }
    }

    /// The UPDATE of codes `from..until` of the batch, in statements of at most
    /// [`statement_rows`]. Rows are read as they arrive, not collected: the batch's codes are
    /// its memory. A row-level error, and codes the UPDATE returned more than once, are a
    /// [`Part::Refused`]; any other error is the run's.
    fn update(&mut self, to: &ApplyTo, batch: &Batch, from: usize, until: usize) -> Result<Part> {
        let part = statement_rows(to.target.form, until - from);
        // Rows each code matched (4 bytes a code: the batch's memory is its codes').
        let mut seen = vec![0u32; until - from];
        let mut rows_updated = 0u64;
        let what = format!("the UPDATE of table `{}`", to.target.table.name);
        let mut start = from;
        while start < until {
            let end = (start + part).min(until);
            let (codes, counts) = batch.hits.columns(start, end);
            let (codes, counts): (&[&str], &[i64]) = (&codes, &counts);
            let sql = update_sql(to.target, codes.len());
            let params = update_params(to.target.form, &codes, &counts);
            let seen = &mut seen[start - from..end - from];
            let done = self.for_each_row(&what, &sql, params, |row| {
                let code: &str = get(row, 0, "the UPDATE's RETURNING")?;
                // `codes` is sorted (a finished batch's); a returned code is one of them.
                let i = codes.binary_search(&code).map_err(|_| {
                    anyhow::anyhow!("BUG: the UPDATE returned code {code:?}, not in the batch")
                })?;
                seen[i] = seen[i].saturating_add(1);
                rows_updated += 1;
                Ok(())
            })?;
            if let Err(e) = done {
                return match row_level(&e, to.target, to.facts) {
                    Some(refused) => Ok(Part::Refused(refused, Vec::new())),
                    None => Err(self.refusal(
                        e,
                        to,
                        (&format!("batch {}", batch.id), false),
                        batch.hits.len(),
                        part,
                    )),
                };
            }
            start = end;
        }
        let twice: Vec<(usize, usize)> = seen
            .iter()
            .enumerate()
            .filter(|(_, &n)| n > 1)
            .map(|(i, &n)| (i, n as usize))
            .collect();
        if let Some(&(_, rows)) = twice.first() {
            return Ok(Part::Refused(duplicate(to.target, rows), twice));
        }
        Ok(Part::Done(
            seen.iter().map(|&n| n == 1).collect(),
            rows_updated,
        ))
    }

    /// Applies the whole batch, part by part under savepoints, narrowing any refused part
    /// down to the codes that cause it.
    fn isolate_all(&mut self, to: &ApplyTo, batch: &Batch) -> Result<Outcome> {
        let mut outcome = Outcome {
            found: vec![false; batch.hits.len()],
            rows_updated: 0,
            poisoned: Vec::new(),
        };
        self.isolate(to, batch, 0, batch.hits.len(), &mut outcome)?;
        Ok(outcome)
    }

    /// Tries codes `from..until` under a savepoint; refused, rolls them back and tries their
    /// halves (parts of up to [`ONE_BY_ONE`] codes, code by code), until each refused code
    /// stands alone. Costs two statements a refused code a halving, none when all goes.
    fn isolate(
        &mut self,
        to: &ApplyTo,
        batch: &Batch,
        from: usize,
        until: usize,
        out: &mut Outcome,
    ) -> Result<()> {
        self.simple("setting a savepoint", "SAVEPOINT part")?;
        match self.update(to, batch, from, until)? {
            Part::Done(found, rows) => {
                self.simple("releasing a savepoint", "RELEASE SAVEPOINT part")?;
                out.found[from..until].copy_from_slice(&found);
                out.rows_updated += rows;
            }
            Part::Refused(error, twice) => {
                self.simple(
                    "rolling back to a savepoint",
                    "ROLLBACK TO SAVEPOINT part; RELEASE SAVEPOINT part",
                )?;
                if until - from == 1 {
                    out.poisoned.push((from, error));
                } else if !twice.is_empty() && twice.len() == until - from {
                    // Every code here matched several rows: each is refused as such.
                    for (i, rows) in twice {
                        out.poisoned.push((from + i, duplicate(to.target, rows)));
                    }
                } else if until - from <= ONE_BY_ONE {
                    for i in from..until {
                        self.isolate(to, batch, i, i + 1, out)?;
                    }
                } else {
                    let mid = from + (until - from) / 2;
                    self.isolate(to, batch, from, mid, out)?;
                    self.isolate(to, batch, mid, until, out)?;
                }
            }
        }
        Ok(())
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

    /// Read-only: the codes among `codes` that have a row, and how many rows they match.
    pub fn existing(
        &mut self,
        target: &TargetConfig,
        codes: &[&str],
    ) -> Result<(HashSet<String>, u64)> {
        let what = format!("table `{}`", target.table.name);
        let sql = format!(
            "SELECT {c}::text FROM {t} WHERE {c} = ANY($1::text[])",
            c = target.code_column.quoted,
            t = target.table.quoted
        );
        let rows = self.query(
            &format!("reading {what}"),
            &sql,
            &[(&codes, Type::TEXT_ARRAY)],
        )?;
        let mut found = HashSet::with_capacity(rows.len());
        for r in &rows {
            found.insert(get::<String>(r, 0, &what)?);
        }
        Ok((found, rows.len() as u64))
    }
}

/// The outcome of a batch's UPDATEs as what was applied: unknown codes (no row, not refused)
/// and quarantined ones, with their hits.
fn settle(batch: &Batch, outcome: Outcome) -> Applied {
    // Refused codes are few: looked up by index, not kept beside every code.
    let mut poisoned: std::collections::HashMap<usize, RowError> =
        outcome.poisoned.into_iter().collect();
    let mut applied = Applied {
        rows_updated: outcome.rows_updated,
        ..Applied::default()
    };
    for (i, ((code, hits), &found)) in batch.hits.iter().zip(&outcome.found).enumerate() {
        match (found, poisoned.remove(&i)) {
            (_, Some(error)) => applied.quarantined.push(Poisoned {
                code: code.to_owned(),
                hits,
                error,
            }),
            (false, None) => applied.unknown.push((code.to_owned(), hits)),
            (true, None) => {}
        }
    }
    applied
}
