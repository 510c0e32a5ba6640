//! The run history: one row per run (its status, figures and error), which `status` reads.
//! Rows guard nothing, so they go by age (`ledger.rs` prunes them with the ledger's).

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Result;
use postgres::types::Type;

use super::session::{get, Session};
use crate::config::Ident;

/// The DDL of the run history, for creating it and for a DBA when we may not.
pub(crate) fn runs_ddl(runs: &Ident) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {r} (\n    \
             run_id            text PRIMARY KEY,\n    \
             started_at        timestamptz NOT NULL,\n    \
             finished_at       timestamptz NOT NULL DEFAULT now(),\n    \
             status            text NOT NULL,\n    \
             keys              bigint NOT NULL,\n    \
             hits              numeric NOT NULL,\n    \
             rows_updated      bigint NOT NULL,\n    \
             unknown_codes     bigint NOT NULL,\n    \
             unknown_hits      numeric NOT NULL,\n    \
             bad_keys          bigint NOT NULL,\n    \
             batches           bigint NOT NULL,\n    \
             batches_failed    bigint NOT NULL,\n    \
             recovered_batches bigint NOT NULL,\n    \
             pending_journals  bigint NOT NULL,\n    \
             error             text\n\
         );",
        r = runs.quoted
    )
}

/// The runs of one flusher (its owner tag's `LIKE` pattern the parameter `$n`), with those
/// recorded before runs carried an owner.
pub(super) fn own_runs(n: usize) -> String {
    format!("(run_id LIKE ${n} OR run_id NOT LIKE '%.%')")
}

/// One run, as the run history records it.
pub(crate) struct RunRecord<'a> {
    pub run_id: &'a str,
    pub started: SystemTime,
    /// `ok`, `locked` or `failed`.
    pub status: &'a str,
    pub keys: u64,
    pub hits: i128,
    pub rows_updated: u64,
    pub unknown_codes: u64,
    pub unknown_hits: i128,
    pub bad_keys: u64,
    pub batches: u64,
    pub batches_failed: u64,
    pub recovered_batches: u64,
    pub pending_journals: u64,
    pub error: Option<String>,
}

/// One run as `status` shows it.
#[derive(Debug, serde::Serialize)]
pub struct RunRow {
    pub run_id: String,
    /// UTC, `YYYY-MM-DDTHH:MM:SSZ`.
    pub finished_at: String,
    pub seconds: f64,
    pub status: String,
    pub keys: i64,
    pub hits: i128,
    pub unknown_codes: i64,
    pub unknown_hits: i128,
    pub bad_keys: i64,
    pub pending_journals: i64,
    pub error: Option<String>,
}

impl Session {
    /// Records a run in the run history (`status` reads it).
    pub(crate) fn record_run(&mut self, runs: &Ident, run: &RunRecord) -> Result<()> {
        let started_s = run
            .started
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as f64 / 1000.0)
            .unwrap_or(0.0);
        let sql = format!(
            "INSERT INTO {} (run_id, started_at, status, keys, hits, rows_updated, \
             unknown_codes, unknown_hits, bad_keys, batches, batches_failed, \
             recovered_batches, pending_journals, error) \
             VALUES ($1, to_timestamp($2), $3, $4, $5::text::numeric, $6, $7, \
             $8::text::numeric, $9, $10, $11, $12, $13, $14)",
            runs.quoted
        );
        let int = |n: u64| n as i64;
        let (keys, rows, codes, bad) = (
            int(run.keys),
            int(run.rows_updated),
            int(run.unknown_codes),
            int(run.bad_keys),
        );
        let (batches, failed, recovered, pending) = (
            int(run.batches),
            int(run.batches_failed),
            int(run.recovered_batches),
            int(run.pending_journals),
        );
        let (hits, unknown_hits) = (run.hits.to_string(), run.unknown_hits.to_string());
        self.execute(
            &format!("recording the run in table `{}`", runs.name),
            &sql,
            &[
                (&run.run_id, Type::TEXT),
                (&started_s, Type::FLOAT8),
                (&run.status, Type::TEXT),
                (&keys, Type::INT8),
                (&hits, Type::TEXT),
                (&rows, Type::INT8),
                (&codes, Type::INT8),
                (&unknown_hits, Type::TEXT),
                (&bad, Type::INT8),
                (&batches, Type::INT8),
                (&failed, Type::INT8),
                (&recovered, Type::INT8),
                (&pending, Type::INT8),
                (&run.error, Type::TEXT),
            ],
        )?;
        Ok(())
    }

    /// The last `limit` runs of this flusher (`owner`), newest first, with any run recorded
    /// before runs carried their owner.
    pub fn last_runs(&mut self, runs: &Ident, limit: u32, owner: &str) -> Result<Vec<RunRow>> {
        let what = format!("table `{}`", runs.name);
        let rows = self.query(
            &format!("reading {what}"),
            &format!(
                "SELECT run_id, to_char(finished_at AT TIME ZONE 'UTC', \
                 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), \
                 extract(epoch FROM finished_at - started_at)::float8, status, keys, \
                 hits::text, unknown_codes, unknown_hits::text, bad_keys, \
                 pending_journals, error \
                 FROM {} WHERE {} ORDER BY finished_at DESC LIMIT $1",
                runs.quoted,
                own_runs(2)
            ),
            &[
                (&i64::from(limit), Type::INT8),
                (&format!("{owner}.%"), Type::TEXT),
            ],
        )?;
        rows.iter()
            .map(|r| {
                // numeric columns that only ever hold the integers a run wrote
                let numeric = |i| get::<String>(r, i, &what).map(|s| s.parse().unwrap_or_default());
                Ok(RunRow {
                    run_id: get(r, 0, &what)?,
                    finished_at: get(r, 1, &what)?,
                    seconds: get(r, 2, &what)?,
                    status: get(r, 3, &what)?,
                    keys: get(r, 4, &what)?,
                    hits: numeric(5)?,
                    unknown_codes: get(r, 6, &what)?,
                    unknown_hits: numeric(7)?,
                    bad_keys: get(r, 8, &what)?,
                    pending_journals: get(r, 9, &what)?,
                    error: get(r, 10, &what)?,
                })
            })
            .collect()
    }

    /// Seconds since the last run of this flusher (`owner`) that ended ok, if any did.
    pub(crate) fn last_success_age(&mut self, runs: &Ident, owner: &str) -> Result<Option<f64>> {
        let what = format!("table `{}`", runs.name);
        let row = self.query_one(
            &format!("reading {what}"),
            &format!(
                "SELECT extract(epoch FROM now() - max(finished_at))::float8 FROM {} \
                 WHERE status = 'ok' AND {}",
                runs.quoted,
                own_runs(1)
            ),
            &[(&format!("{owner}.%"), Type::TEXT)],
        )?;
        get(&row, 0, &what)
    }
}
