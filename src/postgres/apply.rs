//! Applying one batch: the bulk UPDATE and the batch's ledger row, in one transaction that
//! commits both or neither; and the read-only look a dry run takes instead.
//!
//! Table and column names reach SQL only as `Ident`s (checked and quoted in `config`); codes
//! and counts are always bound parameters.

use std::collections::HashSet;
use std::fmt;

use anyhow::Result;
use postgres::error::SqlState;
use postgres::types::{ToSql, Type};

use super::catalog::TableFacts;
use super::session::{get, Param, Session};
use crate::config::{Ident, TargetConfig, UpdateForm};
use crate::fault;
use crate::model::Batch;

/// A batch Postgres refused for what it holds: a count that overflows the column, or a row
/// that another session keeps locked. The run goes on with the other batches; this one stays
/// in its journal.
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
    /// Rows the UPDATE changed (more than codes if the code column is not unique).
    pub rows_updated: u64,
    /// Codes with no row, and their hits.
    pub unknown: Vec<(String, i64)>,
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

/// How many rows each statement of a batch of `codes` codes takes: unnest takes the whole
/// batch in one; VALUES binds two parameters a row and Postgres takes at most 65,535, so a
/// large batch is several.
pub fn statement_rows(form: UpdateForm, codes: usize) -> usize {
    match form {
        UpdateForm::Unnest => codes.max(1),
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
}

impl Session {
    /// Applies one batch in one transaction: the UPDATE and the ledger row commit together
    /// or not at all. `batch.hits` is sorted by code, so that every writer locks rows in one
    /// order. A refusal for what the batch holds is a [`BatchRejected`].
    pub fn apply(&mut self, to: &ApplyTo, batch: &Batch, recovered: bool) -> Result<Applied> {
        self.begin(false)?;
        match self.apply_in_transaction(to, batch, recovered) {
            Ok(applied) => {
                fault::point(if recovered {
                    "recovery_before_commit"
                } else {
                    "before_commit"
                });
                self.commit(&format!("batch {}", batch.id))?;
                Ok(applied)
            }
            Err(e) => {
                self.rollback();
                Err(e)
            }
        }
    }

    fn apply_in_transaction(
        &mut self,
        to: &ApplyTo,
        batch: &Batch,
        recovered: bool,
    ) -> Result<Applied> {
        let codes: Vec<&str> = batch.hits.keys().map(String::as_str).collect();
        let counts: Vec<i64> = batch.hits.values().copied().collect();
        let part = statement_rows(to.target.form, codes.len());
        // The UPDATE returns the code of every row it changed. Rows are read as they arrive,
        // not collected: the batch's codes are its memory, whatever the batch size.
        let mut found = vec![false; codes.len()];
        let mut rows_updated = 0u64;
        let what = format!("the UPDATE of table `{}`", to.target.table.name);
        for (part_codes, part_counts) in codes.chunks(part).zip(counts.chunks(part)) {
            let sql = update_sql(to.target, part_codes.len());
            let params = update_params(to.target.form, &part_codes, &part_counts);
            self.for_each_row(&what, &sql, params, |row| {
                let code: &str = get(row, 0, "the UPDATE's RETURNING")?;
                // `codes` is sorted (a BTreeMap's keys); a returned code is one of them.
                let i = codes.binary_search(&code).map_err(|_| {
                    anyhow::anyhow!("BUG: the UPDATE returned code {code:?}, not in the batch")
                })?;
                found[i] = true;
                rows_updated += 1;
                Ok(())
            })?
            .map_err(|e| self.refusal(e, to, batch))?;
        }
        let unknown: Vec<(String, i64)> = batch
            .hits
            .iter()
            .zip(&found)
            .filter(|(_, &found)| !found)
            .map(|((c, h), _)| (c.clone(), *h))
            .collect();
        let unknown_total = unknown.iter().map(|(_, h)| i128::from(*h)).sum::<i128>();
        let unknown_codes: Vec<&str> = unknown.iter().map(|(c, _)| c.as_str()).collect();
        let unknown_counts: Vec<i64> = unknown.iter().map(|(_, h)| *h).collect();
        let (keys, hits) = (batch.keys as i64, batch.total_hits().to_string());
        let (rows, unknown_keys) = (rows_updated as i64, unknown.len() as i64);
        let unknown_hits = unknown_total.to_string();
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
        Ok(Applied {
            rows_updated,
            unknown,
        })
    }

    /// What a failed UPDATE means for its batch: refused for what it holds (it waits in its
    /// journal and the run goes on), or a failure of the run.
    fn refusal(&self, e: postgres::Error, to: &ApplyTo, batch: &Batch) -> anyhow::Error {
        let (t, id) = (to.target, &batch.id);
        if e.code() == Some(&SqlState::NUMERIC_VALUE_OUT_OF_RANGE) {
            return BatchRejected(format!(
                "batch {id} would overflow column `{}.{}` ({}): widen it with \
                 `ALTER TABLE {} ALTER COLUMN {} TYPE bigint`; the batch stays in its \
                 journal and the next run applies it",
                t.table.name,
                t.count_column.name,
                to.facts.count_type,
                t.table.quoted,
                t.count_column.quoted
            ))
            .into();
        }
        if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) {
            return BatchRejected(format!(
                "batch {id} waited more than {} s for a row of `{}` that another \
                 session holds locked (the app, or a long transaction); the batch stays in \
                 its journal and the next run applies it (`--lock-timeout` sets the wait)",
                self.lock_timeout.as_secs(),
                t.table.name
            ))
            .into();
        }
        if e.code() == Some(&SqlState::QUERY_CANCELED) {
            // Not a rejection: the next batch would most likely time out as well, and
            // this one comes back whole from its journal, however --batch-size is set.
            return anyhow::Error::new(e).context(format!(
                "PostgreSQL at {}: the UPDATE of batch {id} ({} codes) was \
                 canceled: it took longer than --statement-timeout ({} s), or an operator \
                 canceled it. The batch stays in its journal and the next run applies it \
                 whole: raise --statement-timeout if Postgres is just slow",
                self.display,
                batch.hits.len(),
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
