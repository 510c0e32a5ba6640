//! The ledger: one row per applied batch, written in the batch's own transaction, which makes
//! retries safe (a batch found there was applied; its journal is only deleted); its pruning;
//! and the small facts a run takes from Postgres (the database's name, the Redis Cluster
//! fence token).

use anyhow::Result;
use postgres::types::Type;

use super::session::{get, Session};
use crate::config::{Ident, LedgerConfig};

/// The DDL of the ledger, for creating it and for a DBA when we may not.
pub(crate) fn ledger_ddl(ledger: &Ident) -> String {
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

/// A transaction-level advisory lock key for a name.
pub(crate) fn lock_key(name: &str) -> i64 {
    crate::model::stable_hash(name) as i64
}

/// The ledger row of a batch applied earlier, as recovery needs it.
pub struct LedgerRow {
    pub unknown: Vec<(String, i64)>,
}

impl Session {
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

    /// Deletes ledger and run rows older than `--ledger-days`. Call only after recovery has
    /// finished: a ledger row must outlive the journal it guards.
    ///
    /// Only this flusher's own rows (ids tagged `<owner>.`): another flusher sharing the
    /// ledger may still have a journal that one of its rows guards, and only its own recovery
    /// can tell. Ledger rows written before 0.2 carry no tag and stay (an operator deletes
    /// them once every flusher has run: the upgrade notes say how); run rows guard nothing, so
    /// untagged ones go by age.
    ///
    /// A shard (`scope`, its slots; `None` without `--shard`) prunes only the ledger rows of
    /// batches whose range starts in its slots: the journals whose recovery it has just
    /// finished. A batch of a run without shards starts at slot 0.
    pub fn prune(
        &mut self,
        cfg: &LedgerConfig,
        owner: &str,
        scope: Option<std::ops::Range<u16>>,
    ) -> Result<u64> {
        let mut pruned = 0;
        let mine = format!("{owner}.%");
        let (from, to) = scope.map_or((0, i32::MAX), |r| (i32::from(r.start), i32::from(r.end)));
        for (table, column, id, legacy) in [
            (&cfg.ledger_table, "applied_at", "batch_id", ""),
            (
                &cfg.runs_table,
                "finished_at",
                "run_id",
                " OR run_id NOT LIKE '%.%'",
            ),
        ] {
            // `~<first slot>-<end slot>` in a shard's ids (model/shard.rs).
            let sql = format!(
                "DELETE FROM {} WHERE {column} < now() - make_interval(days => $1) \
                 AND ({id} LIKE $2{legacy}) \
                 AND coalesce(substring({id} from '~([0-9]+)-')::int, 0) >= $3 \
                 AND coalesce(substring({id} from '~([0-9]+)-')::int, 0) < $4",
                table.quoted
            );
            let days = cfg.ledger_days as i32;
            pruned += self.execute(
                &format!("pruning table `{}`", table.name),
                &sql,
                &[
                    (&days, Type::INT4),
                    (&mine, Type::TEXT),
                    (&from, Type::INT4),
                    (&to, Type::INT4),
                ],
            )?;
        }
        Ok(pruned)
    }

    /// A token that only grows from run to run (a new transaction id), for Redis Cluster's
    /// fences.
    pub(crate) fn fence_token(&mut self) -> Result<i64> {
        let row = self.query_one(
            "taking a transaction id",
            "SELECT txid_current()::int8",
            &[],
        )?;
        get(&row, 0, "txid_current()")
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
