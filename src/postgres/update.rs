//! The bulk UPDATE of a batch's codes, `unnest` or `VALUES`, in statements of a bounded size,
//! its rows read as they arrive; what a failed UPDATE means (refused as a whole, or the run's
//! failure); and the dry run's read-only look, which must find the rows that UPDATE would.

use std::collections::HashSet;

use anyhow::Result;
use postgres::error::SqlState;
use postgres::types::{ToSql, Type};

use super::applied::{ApplyTo, BatchRejected};
use super::quarantine::{duplicate, row_level};
use super::session::{get, Param, Session};
use crate::config::{TargetConfig, UpdateForm};
use crate::model::{Batch, RowError};

/// Rows per `VALUES` statement: Postgres binds at most 65,535 parameters, two per row.
pub(crate) const VALUES_ROWS: usize = 30_000;

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
pub(crate) const UNNEST_ROWS: usize = 25_000;

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

/// How the UPDATE of a part of a batch went.
pub(super) enum Part {
    /// Its rows, by code in the part: whether each got its hits.
    Done(Vec<bool>, u64),
    /// A row-level error, or codes that matched several rows (index in the part, rows).
    Refused(RowError, Vec<(usize, usize)>),
}

impl Session {
    /// The UPDATE of codes `from..until` of the batch, in statements of at most
    /// [`statement_rows`]. Rows are read as they arrive, not collected: the batch's codes are
    /// its memory. A row-level error, and codes the UPDATE returned more than once, are a
    /// [`Part::Refused`]; any other error is the run's.
    pub(super) fn update_part(
        &mut self,
        to: &ApplyTo,
        batch: &Batch,
        from: usize,
        until: usize,
    ) -> Result<Part> {
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

    /// Read-only: the codes among `codes` that have a row, and how many rows they match.
    pub(crate) fn existing(
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
