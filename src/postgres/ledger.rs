//! The tables redis-flusher keeps for itself: the ledger (one row per applied batch, which
//! makes retries safe) and the run history (one row per run, which `status` reads); their DDL
//! (with the lease's, `lease.rs`), pruning, and the Redis Cluster fence token.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Result};
use postgres::error::SqlState;
use postgres::types::Type;

use super::lease::lease_ddl;
use super::quarantine::quarantine_ddl;
use super::session::{get, Session};
use crate::config::{Ident, LedgerConfig};

/// The DDL of the ledger, for creating it and for a DBA when we may not.
pub fn ledger_ddl(ledger: &Ident) -> String {
    let base = ledger.name.rsplit('.').next().unwrap_or(&ledger.name);
    let index = Ident::parse("ledger index", &format!("{base}_applied_at"))
        .map(|i| i.quoted)
        .unwrap_or_else(|_| "\"redis_flusher_batches_applied_at\"".to_owned());
    format!(
        "CREATE TABLE IF NOT EXISTS {l} (\n    \
             batch_id       text PRIMARY KEY,\n    \
             applied_at     timestamptz NOT NULL DEFAULT now(),\n    \
             keys           bigint NOT NULL,\n    \
             hits           numeric NOT NULL,\n    \
             rows_updated   bigint NOT NULL,\n    \
             unknown_keys   bigint NOT NULL,\n    \
             unknown_hits   numeric NOT NULL,\n    \
             unknown_codes  text[] NOT NULL,\n    \
             unknown_counts bigint[] NOT NULL,\n    \
             recovered      boolean NOT NULL\n\
         );\n\
         CREATE INDEX IF NOT EXISTS {index} ON {l} (applied_at);",
        l = ledger.quoted
    )
}

/// The DDL of the run history, for creating it and for a DBA when we may not.
pub fn runs_ddl(runs: &Ident) -> String {
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

/// A transaction-level advisory lock key for a name.
pub fn lock_key(name: &str) -> i64 {
    crate::model::stable_hash(name) as i64
}

/// The runs of one flusher (its owner tag's `LIKE` pattern the parameter `$n`), with those
/// recorded before runs carried an owner.
fn own_runs(n: usize) -> String {
    format!("(run_id LIKE ${n} OR run_id NOT LIKE '%.%')")
}

/// The ledger row of a batch applied earlier, as recovery needs it.
pub struct LedgerRow {
    pub unknown: Vec<(String, i64)>,
}

/// One run, as the run history records it.
pub struct RunRecord<'a> {
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
    /// A token that only grows from run to run (a new transaction id), for Redis Cluster's
    /// fences.
    pub fn fence_token(&mut self) -> Result<i64> {
        let row = self.query_one(
            "taking a transaction id",
            "SELECT txid_current()::int8",
            &[],
        )?;
        get(&row, 0, "txid_current()")
    }

    /// Creates the ledger, the run history and the lease table if they are missing. A role
    /// that may not create tables gets the DDL of every missing one, to hand to a DBA.
    pub fn ensure_tables(&mut self, cfg: &LedgerConfig) -> Result<()> {
        let mut missing = Vec::new();
        for (table, ddl) in [
            (&cfg.ledger_table, ledger_ddl(&cfg.ledger_table)),
            (&cfg.runs_table, runs_ddl(&cfg.runs_table)),
            (&cfg.lease_table, lease_ddl(&cfg.lease_table)),
            (&cfg.quarantine_table, quarantine_ddl(&cfg.quarantine_table)),
        ] {
            if !self.table_exists(table)? {
                missing.push((table, ddl));
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        // Two runs creating the same table at once can collide in the catalog (a duplicate
        // key in pg_type, IF NOT EXISTS notwithstanding): one at a time, under a lock that
        // ends with the transaction.
        let key = lock_key(&format!("redis-flusher\0create\0{}", cfg.ledger_table.name));
        self.begin(false)?;
        let created = self.create(&missing, key);
        match created {
            Ok(()) => self.commit("creating tables"),
            Err(e) => {
                self.rollback();
                Err(e)
            }
        }
    }

    fn create(&mut self, missing: &[(&Ident, String)], key: i64) -> Result<()> {
        self.query(
            "waiting for another run creating tables",
            "SELECT pg_advisory_xact_lock($1)",
            &[(&key, Type::INT8)],
        )?;
        for (i, (table, ddl)) in missing.iter().enumerate() {
            let what = format!("creating table `{}`", table.name);
            let Err(e) = self.simple(&what, ddl) else {
                log::info!("created table `{}`", table.name);
                continue;
            };
            let denied = e
                .downcast_ref::<postgres::Error>()
                .and_then(|e| e.code())
                .is_some_and(|c| *c == SqlState::INSUFFICIENT_PRIVILEGE);
            if !denied {
                return Err(e);
            }
            let rest = &missing[i..];
            let one = rest.len() == 1;
            bail!(
                "{} {} missing and this role may not create {} (PostgreSQL at {}); \
                 ask a DBA to run:\n\n{}\n\nand to GRANT SELECT, INSERT, UPDATE, DELETE ON {} \
                 TO this role",
                rest.iter()
                    .map(|(t, _)| format!("table `{}`", t.name))
                    .collect::<Vec<_>>()
                    .join(" and "),
                if one { "is" } else { "are" },
                if one { "it" } else { "them" },
                self.display,
                rest.iter()
                    .map(|(_, d)| d.as_str())
                    .collect::<Vec<_>>()
                    .join("\n"),
                rest.iter()
                    .map(|(t, _)| t.quoted.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            );
        }
        Ok(())
    }

    /// Records a run in the run history (`status` reads it).
    pub fn record_run(&mut self, runs: &Ident, run: &RunRecord) -> Result<()> {
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

    /// The ledger row of `batch_id`, if that batch was applied.
    pub fn applied(&mut self, ledger: &Ident, batch_id: &str) -> Result<Option<LedgerRow>> {
        let what = format!("ledger table `{}`", ledger.name);
        let row = self.query_opt(
            &format!("reading {what}"),
            &format!(
                "SELECT unknown_codes, unknown_counts FROM {} WHERE batch_id = $1",
                ledger.quoted
            ),
            &[(&batch_id, Type::TEXT)],
        )?;
        let Some(r) = row else { return Ok(None) };
        let codes: Vec<String> = get(&r, 0, &what)?;
        let counts: Vec<i64> = get(&r, 1, &what)?;
        Ok(Some(LedgerRow {
            unknown: codes.into_iter().zip(counts).collect(),
        }))
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
    pub fn last_success_age(&mut self, runs: &Ident, owner: &str) -> Result<Option<f64>> {
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

    /// Deletes ledger and run rows older than `--ledger-days`. Call only after recovery has
    /// finished: a ledger row must outlive the journal it guards.
    ///
    /// Only this flusher's own rows (ids tagged `<owner>.`): another flusher sharing the
    /// ledger may still have a journal that one of its rows guards, and only its own recovery
    /// can tell. Ledger rows written before 0.2 carry no tag and stay (an operator deletes
    /// them once every flusher has run: the upgrade notes say how); run rows guard nothing, so
    /// untagged ones go by age.
    pub fn prune(&mut self, cfg: &LedgerConfig, owner: &str) -> Result<u64> {
        let mut pruned = 0;
        let mine = format!("{owner}.%");
        for (table, column, id, legacy) in [
            (&cfg.ledger_table, "applied_at", "batch_id", ""),
            (
                &cfg.runs_table,
                "finished_at",
                "run_id",
                " OR run_id NOT LIKE '%.%'",
            ),
        ] {
            let sql = format!(
                "DELETE FROM {} WHERE {column} < now() - make_interval(days => $1) \
                 AND ({id} LIKE $2{legacy})",
                table.quoted
            );
            let days = cfg.ledger_days as i32;
            pruned += self.execute(
                &format!("pruning table `{}`", table.name),
                &sql,
                &[(&days, Type::INT4), (&mine, Type::TEXT)],
            )?;
        }
        Ok(pruned)
    }

    /// The current database's name, as a target record names it.
    pub fn database(&mut self) -> Result<String> {
        let row = self.query_one(
            "reading the database's name",
            "SELECT current_database()::text",
            &[],
        )?;
        get(&row, 0, "current_database()")
    }
}
