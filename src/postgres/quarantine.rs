//! The quarantine: where the hits of codes Postgres refused row by row wait, in a table of
//! ours, committed with the rest of their batch, so that one poisoned row never stalls a run.
//!
//! A row-level error (a trigger, a check constraint, a count past the column's range, a code
//! the database's encoding cannot hold, a code that matches two rows) is narrowed to its codes
//! by `apply.rs`; their hits go here, by flusher (`owner`) and code, with Postgres' error and
//! what to do. Each run tries them again first; once the cause is fixed they are applied, and
//! leave, in the same transaction. Codes are kept as the bytes Redis held (`bytea`): a code
//! the database's encoding cannot hold could not be kept as text.

use anyhow::Result;
use postgres::error::{DbError, SqlState};
use postgres::types::Type;

use super::catalog::TableFacts;
use super::session::{get, Session};
use crate::config::{Ident, TargetConfig};
use crate::model::{Poisoned, RowError};

/// The DDL of the quarantine, for creating it and for a DBA when we may not.
pub(crate) fn quarantine_ddl(quarantine: &Ident) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {q} (\n    \
             owner           text NOT NULL,\n    \
             code            bytea NOT NULL,\n    \
             hits            numeric NOT NULL,\n    \
             batch_id        text NOT NULL,\n    \
             sqlstate        text NOT NULL,\n    \
             error           text NOT NULL,\n    \
             first_failed_at timestamptz NOT NULL DEFAULT now(),\n    \
             last_tried_at   timestamptz NOT NULL DEFAULT now(),\n    \
             PRIMARY KEY (owner, code)\n\
         );",
        q = quarantine.quoted
    )
}

/// SQLSTATE classes of errors that one row's values cause, which other rows of the batch do
/// not share: data exceptions (22: a count past the range, a code the encoding cannot hold),
/// integrity constraints (23), triggered data change (27), routine exceptions (2F, 38, 39),
/// WITH CHECK OPTION (44), PL/pgSQL's RAISE (P0).
const ROW_LEVEL: [&str; 8] = ["22", "23", "27", "2F", "38", "39", "44", "P0"];

/// `e` as a row-level error, if it is one.
pub(super) fn row_level(
    e: &postgres::Error,
    target: &TargetConfig,
    facts: &TableFacts,
) -> Option<RowError> {
    let db = e.as_db_error()?;
    let state = db.code().code();
    if !ROW_LEVEL.iter().any(|class| state.starts_with(class)) {
        return None;
    }
    Some(RowError {
        sqlstate: state.to_owned(),
        message: message(db),
        advice: advice(db, target, facts),
    })
}

/// A code the UPDATE matched in `rows` rows.
pub(super) fn duplicate(target: &TargetConfig, rows: usize) -> RowError {
    RowError {
        sqlstate: "dupe".into(),
        message: format!(
            "matches {rows} rows of `{}`, and would add its hits to each",
            target.table.name
        ),
        advice: format!(
            "the code column needs a unique index: `CREATE UNIQUE INDEX ON {} ({})`, once \
             the duplicate rows are merged",
            target.table.quoted, target.code_column.quoted
        ),
    }
}

fn message(db: &DbError) -> String {
    match db.detail() {
        Some(detail) => format!("{} ({detail})", db.message()),
        None => db.message().to_owned(),
    }
}

/// What to do about a row-level error, as far as its SQLSTATE tells.
fn advice(db: &DbError, target: &TargetConfig, facts: &TableFacts) -> String {
    let (t, n) = (&target.table, &target.count_column);
    let column = format!("`{}.{}` ({})", t.name, n.name, facts.count_type);
    match db.code() {
        c if *c == SqlState::NUMERIC_VALUE_OUT_OF_RANGE => match facts.count_type.as_str() {
            "integer" | "smallint" => format!(
                "the count would pass what {column} holds: widen it with `ALTER TABLE {} \
                 ALTER COLUMN {} TYPE bigint`",
                t.quoted, n.quoted
            ),
            "bigint" => format!(
                "the count would pass bigint's range (9,223,372,036,854,775,807) in {column}: \
                 its value or these hits are wrong; fix the row, or delete the code from the \
                 quarantine"
            ),
            _ => format!("the count would pass what {column} holds: widen the column"),
        },
        c if *c == SqlState::CHARACTER_NOT_IN_REPERTOIRE
            || *c == SqlState::UNTRANSLATABLE_CHARACTER =>
        {
            "the database's encoding cannot hold this code, so no row can have it: delete it \
             from the quarantine (or flush into a UTF8 database)"
                .into()
        }
        _ if db.constraint().is_some() => format!(
            "constraint `{}` refuses the new count: fix the row or the constraint",
            db.constraint().unwrap_or_default()
        ),
        _ => format!(
            "a trigger, rule or constraint on `{}` refuses the new count: fix the row or it",
            t.name
        ),
    }
}

/// A code's bytes in the quarantine's `bytea` column.
fn bytes(codes: &[&str]) -> Vec<Vec<u8>> {
    codes.iter().map(|c| c.as_bytes().to_vec()).collect()
}

impl Session {
    /// Adds `poisoned` (from batch `batch_id`) to the quarantine of `owner`: a code already
    /// there gains these hits, and the latest error. Returns how many codes are new there.
    pub(super) fn quarantine(
        &mut self,
        table: &Ident,
        owner: &str,
        batch_id: &str,
        poisoned: &[Poisoned],
    ) -> Result<usize> {
        let codes: Vec<&str> = poisoned.iter().map(|p| p.code.as_str()).collect();
        let hits: Vec<i64> = poisoned.iter().map(|p| p.hits).collect();
        let states: Vec<&str> = poisoned.iter().map(|p| p.error.sqlstate.as_str()).collect();
        let errors: Vec<String> = poisoned
            .iter()
            .map(|p| format!("{}: {}", p.error.message, p.error.advice))
            .collect();
        let rows = self.query(
            &format!("putting codes in table `{}`", table.name),
            &format!(
                "INSERT INTO {q} AS q (owner, code, hits, batch_id, sqlstate, error) \
                 SELECT $1, c, h, $2, s, e \
                 FROM unnest($3::bytea[], $4::int8[], $5::text[], $6::text[]) AS t(c, h, s, e) \
                 ON CONFLICT (owner, code) DO UPDATE SET hits = q.hits + EXCLUDED.hits, \
                 sqlstate = EXCLUDED.sqlstate, error = EXCLUDED.error, last_tried_at = now() \
                 RETURNING xmax = 0",
                q = table.quoted
            ),
            &[
                (&owner, Type::TEXT),
                (&batch_id, Type::TEXT),
                (&bytes(&codes), Type::BYTEA_ARRAY),
                (&hits, Type::INT8_ARRAY),
                (&states, Type::TEXT_ARRAY),
                (&errors, Type::TEXT_ARRAY),
            ],
        )?;
        let mut new = 0;
        for r in &rows {
            // xmax is 0 on a row the INSERT made, not on one its ON CONFLICT updated.
            new += usize::from(get::<bool>(r, 0, "the quarantine's INSERT")?);
        }
        Ok(new)
    }

    /// Up to `limit` of `owner`'s quarantined codes and their hits, those tried longest ago
    /// first, locked for this transaction (another run skips them). A code whose hits have
    /// grown past 64 bits, or that is not UTF-8, waits for an operator.
    pub(super) fn take_quarantined(
        &mut self,
        table: &Ident,
        owner: &str,
        limit: i64,
    ) -> Result<Vec<(String, i64)>> {
        let what = format!("table `{}`", table.name);
        let rows = self.query(
            &format!("reading {what}"),
            &format!(
                "SELECT code, hits::text FROM {} WHERE owner = $1 \
                 ORDER BY last_tried_at LIMIT $2 FOR UPDATE SKIP LOCKED",
                table.quoted
            ),
            &[(&owner, Type::TEXT), (&limit, Type::INT8)],
        )?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let code: Vec<u8> = get(r, 0, &what)?;
            let hits: String = get(r, 1, &what)?;
            match (String::from_utf8(code), hits.parse::<i64>()) {
                (Ok(code), Ok(hits)) => out.push((code, hits)),
                (code, _) => log::warn!(
                    "a code in `{}` cannot be retried (its hits pass 64 bits, or it is not \
                     UTF-8): {}",
                    table.name,
                    code.unwrap_or_else(|e| format!("{:?}", e.into_bytes()))
                ),
            }
        }
        Ok(out)
    }

    /// After a retry of `owner`'s quarantined codes: those in `done` (applied, or without a
    /// row now) leave; those in `again` stay, with their latest error.
    pub(super) fn settle_quarantine(
        &mut self,
        table: &Ident,
        owner: &str,
        done: &[&str],
        again: &[Poisoned],
    ) -> Result<()> {
        self.execute(
            &format!("deleting codes from table `{}`", table.name),
            &format!(
                "DELETE FROM {} WHERE owner = $1 AND code = ANY($2::bytea[])",
                table.quoted
            ),
            &[(&owner, Type::TEXT), (&bytes(done), Type::BYTEA_ARRAY)],
        )?;
        let codes: Vec<&str> = again.iter().map(|p| p.code.as_str()).collect();
        let states: Vec<&str> = again.iter().map(|p| p.error.sqlstate.as_str()).collect();
        let errors: Vec<String> = again
            .iter()
            .map(|p| format!("{}: {}", p.error.message, p.error.advice))
            .collect();
        self.execute(
            &format!("updating table `{}`", table.name),
            &format!(
                "UPDATE {} AS q SET sqlstate = t.s, error = t.e, last_tried_at = now() \
                 FROM unnest($2::bytea[], $3::text[], $4::text[]) AS t(c, s, e) \
                 WHERE q.owner = $1 AND q.code = t.c",
                table.quoted
            ),
            &[
                (&owner, Type::TEXT),
                (&bytes(&codes), Type::BYTEA_ARRAY),
                (&states, Type::TEXT_ARRAY),
                (&errors, Type::TEXT_ARRAY),
            ],
        )?;
        Ok(())
    }

    /// How many codes and hits wait in `owner`'s quarantine.
    pub(crate) fn quarantined(&mut self, table: &Ident, owner: &str) -> Result<(i64, i128)> {
        let what = format!("table `{}`", table.name);
        let row = self.query_one(
            &format!("reading {what}"),
            &format!(
                "SELECT count(*), coalesce(sum(hits), 0)::text FROM {} WHERE owner = $1",
                table.quoted
            ),
            &[(&owner, Type::TEXT)],
        )?;
        let hits: String = get(&row, 1, &what)?;
        Ok((get(&row, 0, &what)?, hits.parse().unwrap_or_default()))
    }
}
