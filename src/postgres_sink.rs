//! Everything that talks to PostgreSQL: connect, the advisory lock, the ledger, and the bulk
//! `UPDATE … FROM (VALUES …)` that applies one batch in one transaction.
//!
//! Table and column names reach SQL only as `Ident`s (checked and quoted in `config.rs`);
//! codes and counts are always bound parameters.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::time::Duration;

use anyhow::{Context, Result};
use postgres::error::SqlState;
use postgres::types::ToSql;
use postgres::{Client, NoTls, Statement};

use crate::cli;
use crate::config::{FlushConfig, Ident, PgConfig};
use crate::deadline::{self, Guard};
use crate::fault;

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

/// The ledger row of a batch applied earlier, as recovery needs it.
pub struct LedgerRow {
    pub unknown: Vec<(String, i64)>,
}

/// Keeps every batch's UPDATE on the code column's index (a nested loop). Without it, the
/// planner turns to a hash join over a sequential scan of the whole table once a batch is
/// large enough for the table's size (measured at 2M rows: at 20k rows for unnest, 10k for
/// VALUES), which made a 1M-key flush 3x slower. Only this session's statements are affected.
const SESSION_PLAN: &str = "SET enable_hashjoin = off; SET enable_mergejoin = off";

/// A COMMIT must be durable before the journal is deleted: with `synchronous_commit = off`
/// (a server may set it for speed) a Postgres crash forgets the last committed transactions,
/// ledger rows included, while their journals are already gone, and the hits are lost (seen
/// in testing: `pg_ctl stop -m immediate` right after our COMMITs). Stronger settings
/// (`remote_write`, `remote_apply`, `local`) are all durable locally and are kept.
const SESSION_DURABLE: &str =
    "SELECT set_config('synchronous_commit', 'on', false) WHERE current_setting('synchronous_commit') = 'off'";

/// The DDL of the ledger, for creating it and for a DBA when we may not.
pub fn ledger_ddl(ledger: &Ident) -> String {
    let index = Ident::parse(
        "ledger index",
        &format!("{}_applied_at", ledger_base(ledger)),
    )
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

/// The table part of a possibly schema-qualified name, for the index name.
fn ledger_base(ledger: &Ident) -> &str {
    ledger.name.rsplit('.').next().unwrap_or(&ledger.name)
}

/// The advisory lock key: one flusher per journal prefix and table at a time.
pub fn lock_key(cfg: &FlushConfig) -> i64 {
    // FNV-1a, so that the key is stable across versions and platforms.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in format!("redis-flusher\0{}\0{}", cfg.journal_prefix, cfg.table.name).bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h as i64
}

/// How much longer than its own timeout a Postgres call may take before the watchdog gives
/// up on the server: time for the server's error to travel back.
const GRACE: Duration = Duration::from_secs(5);

/// A plain connection, whose failure names the server and the variables to check.
pub fn connect_client(cfg: &PgConfig) -> Result<Client> {
    // The crate's connect timeout covers the TCP connect only; a server that accepts and then
    // never answers (stopped) would hold the startup exchange for ever.
    let connect_timeout = cfg.config.get_connect_timeout().copied().unwrap_or(GRACE);
    let _watch = deadline::arm(
        format!("connecting to PostgreSQL at {}", cfg.display),
        connect_timeout + GRACE,
    );
    cfg.config.connect(NoTls).with_context(|| {
        format!(
            "could not connect to PostgreSQL at {}: check `DATABASE_URL` or \
             `DB_HOST`/`DB_PORT`/`DB_NAME`/`DB_USER`/`DB_PASSWORD`",
            cfg.display
        )
    })
}

/// The context of a failed step: which server, and what it was doing.
fn failed(display: &str, what: &str) -> String {
    format!("PostgreSQL at {display}: {what} failed")
}

pub struct PgSink {
    client: Client,
    display: String,
    /// Prepared UPDATEs by number of rows: full batches reuse one plan.
    updates: HashMap<usize, Statement>,
    /// The count column's type as Postgres names it, for the overflow advice.
    count_type: String,
    /// For the advice when a batch waited too long for a locked row.
    lock_timeout: Duration,
    /// How long one call may wait before the watchdog gives up on the server.
    call_limit: Duration,
}

impl PgSink {
    pub fn connect(cfg: &PgConfig) -> Result<PgSink> {
        let mut client = connect_client(cfg)?;
        let call_limit = cfg.statement_timeout + GRACE;
        let _watch = deadline::arm(
            format!("PostgreSQL at {}: setting up the session", cfg.display),
            call_limit,
        );
        client
            .batch_execute(&format!(
                "SET statement_timeout = {}; SET lock_timeout = {}; {SESSION_PLAN}; {SESSION_DURABLE}",
                cfg.statement_timeout.as_millis(),
                cfg.lock_timeout.as_millis()
            ))
            .with_context(|| {
                format!(
                    "PostgreSQL at {}: setting up the session failed",
                    cfg.display
                )
            })?;
        Ok(PgSink {
            client,
            display: cfg.display.clone(),
            lock_timeout: cfg.lock_timeout,
            call_limit,
            updates: HashMap::new(),
            count_type: String::new(),
        })
    }

    fn ctx(&self, what: &str) -> String {
        failed(&self.display, what)
    }

    /// Arms the watchdog for one call (`deadline.rs`): the crate has no client-side timeout.
    fn watch(&self, what: &str) -> Guard {
        deadline::arm(
            format!("PostgreSQL at {}: {what}", self.display),
            self.call_limit,
        )
    }

    /// Takes the session-level advisory lock without waiting. Held until the connection
    /// closes, so a killed run cannot keep it.
    pub fn try_lock(&mut self, key: i64) -> Result<bool> {
        let _watch = self.watch("taking the advisory lock");
        let row = self
            .client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
            .with_context(|| self.ctx("taking the advisory lock"))?;
        Ok(row.get(0))
    }

    /// Checks that the table and both columns exist, and remembers the count column's type.
    pub fn check_target(&mut self, cfg: &FlushConfig) -> Result<()> {
        let _watch = self.watch("looking up the table");
        let rows = self
            .client
            .query(
                "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) \
                 FROM pg_attribute a \
                 WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped",
                &[&cfg.table.quoted],
            )
            .with_context(|| self.ctx(&format!("looking up table `{}`", cfg.table.name)))?;
        if rows.is_empty() {
            anyhow::bail!(
                "table `{}` does not exist in PostgreSQL at {} (or this role cannot see it): \
                 check `DB_NAME` and `--table`",
                cfg.table.name,
                self.display
            );
        }
        let columns: BTreeMap<String, String> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        for (flag, col) in [
            ("--code-column", &cfg.code_column),
            ("--count-column", &cfg.count_column),
        ] {
            if !columns.contains_key(&col.name) {
                anyhow::bail!(
                    "table `{}` has no column `{}`: set `{flag}` (columns: {})",
                    cfg.table.name,
                    col.name,
                    columns.keys().cloned().collect::<Vec<_>>().join(", ")
                );
            }
        }
        self.count_type = columns[&cfg.count_column.name].clone();
        let indexed: bool = self
            .client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a \
                 ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] \
                 WHERE i.indrelid = to_regclass($1) AND a.attname = $2)",
                &[&cfg.table.quoted, &cfg.code_column.name],
            )
            .with_context(|| self.ctx(&format!("looking up the indexes of `{}`", cfg.table.name)))?
            .get(0);
        if !indexed {
            log::warn!(
                "table `{t}` has no index on `{c}`: every batch reads the whole table; \
                 create one with `CREATE UNIQUE INDEX ON {tq} ({cq})`",
                t = cfg.table.name,
                c = cfg.code_column.name,
                tq = cfg.table.quoted,
                cq = cfg.code_column.quoted
            );
        }
        Ok(())
    }

    pub fn ledger_exists(&mut self, ledger: &Ident) -> Result<bool> {
        let _watch = self.watch("looking up the ledger table");
        let row = self
            .client
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&ledger.quoted])
            .with_context(|| self.ctx(&format!("looking up ledger table `{}`", ledger.name)))?;
        Ok(row.get(0))
    }

    /// Creates the ledger if it is missing. A role that may not create tables gets the DDL
    /// to hand to a DBA.
    pub fn ensure_ledger(&mut self, ledger: &Ident) -> Result<()> {
        let _watch = self.watch("creating the ledger table");
        if self.ledger_exists(ledger)? {
            return Ok(());
        }
        let ddl = ledger_ddl(ledger);
        if let Err(e) = self.client.batch_execute(&ddl) {
            if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) {
                anyhow::bail!(
                    "the ledger table `{}` is missing and this role may not create it \
                     (PostgreSQL at {}); ask a DBA to run:\n\n{ddl}\n\n\
                     and to GRANT SELECT, INSERT, DELETE ON {} TO this role",
                    ledger.name,
                    self.display,
                    ledger.quoted
                );
            }
            return Err(e)
                .with_context(|| self.ctx(&format!("creating ledger table `{}`", ledger.name)));
        }
        log::info!("created ledger table `{}`", ledger.name);
        Ok(())
    }

    /// The ledger row of `batch_id`, if that batch was applied.
    pub fn applied(&mut self, ledger: &Ident, batch_id: &str) -> Result<Option<LedgerRow>> {
        let _watch = self.watch("reading the ledger");
        let row = self
            .client
            .query_opt(
                &format!(
                    "SELECT unknown_codes, unknown_counts FROM {} WHERE batch_id = $1",
                    ledger.quoted
                ),
                &[&batch_id],
            )
            .with_context(|| self.ctx(&format!("reading ledger table `{}`", ledger.name)))?;
        Ok(row.map(|r| {
            let codes: Vec<String> = r.get(0);
            let counts: Vec<i64> = r.get(1);
            LedgerRow {
                unknown: codes.into_iter().zip(counts).collect(),
            }
        }))
    }

    /// Applies one batch in one transaction: the UPDATE and the ledger row commit together
    /// or not at all. `hits` is sorted by code, so that every writer locks rows in one order.
    pub fn apply(
        &mut self,
        cfg: &FlushConfig,
        batch_id: &str,
        hits: &BTreeMap<String, i64>,
        keys: u64,
        recovered: bool,
    ) -> Result<Applied> {
        // Four statements (five with the first PREPARE), each bounded by statement_timeout
        // but the COMMIT: the UPDATE's worst case, and as long again for the rest.
        let _watch = deadline::arm(
            format!("PostgreSQL at {}: applying batch {batch_id}", self.display),
            self.call_limit + self.call_limit,
        );
        let n = hits.len();
        // unnest takes any number of rows in one statement; VALUES needs one per row count.
        let shape = match cfg.statement {
            cli::Statement::Unnest => 0,
            cli::Statement::Values => n,
        };
        if !self.updates.contains_key(&shape) {
            let stmt = self.client.prepare(&update_sql(cfg, n)).with_context(|| {
                self.ctx(&format!(
                    "preparing the UPDATE of table `{}`",
                    cfg.table.name
                ))
            })?;
            self.updates.insert(shape, stmt);
        }
        let stmt = &self.updates[&shape];
        let codes: Vec<&str> = hits.keys().map(String::as_str).collect();
        let counts: Vec<i64> = hits.values().copied().collect();
        let params: Vec<&(dyn ToSql + Sync)> = match cfg.statement {
            cli::Statement::Unnest => vec![&codes, &counts],
            cli::Statement::Values => hits
                .iter()
                .flat_map(|(code, count)| [code as &(dyn ToSql + Sync), count])
                .collect(),
        };
        // A field of its own, so it can be borrowed while the transaction holds the client.
        let display = &self.display;
        let ctx = |what: &str| failed(display, what);

        let mut tx = self.client.transaction().with_context(|| ctx("BEGIN"))?;
        let matched = match tx.query(stmt, &params) {
            Ok(rows) => rows,
            Err(e) if e.code() == Some(&SqlState::NUMERIC_VALUE_OUT_OF_RANGE) => {
                return Err(BatchRejected(format!(
                    "batch {batch_id} would overflow column `{}.{}` ({}): widen it with \
                     `ALTER TABLE {} ALTER COLUMN {} TYPE bigint`; the batch stays in its \
                     journal and the next run applies it",
                    cfg.table.name,
                    cfg.count_column.name,
                    self.count_type,
                    cfg.table.quoted,
                    cfg.count_column.quoted
                ))
                .into());
            }
            Err(e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => {
                return Err(BatchRejected(format!(
                    "batch {batch_id} waited more than {} s for a row of `{}` that another \
                     session holds locked (the app, or a long transaction); the batch stays in \
                     its journal and the next run applies it (`--lock-timeout` sets the wait)",
                    self.lock_timeout.as_secs(),
                    cfg.table.name
                ))
                .into());
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| ctx(&format!("the UPDATE of table `{}`", cfg.table.name)));
            }
        };
        let rows_updated = matched.len() as u64;
        let found: HashSet<String> = matched.iter().map(|r| r.get(0)).collect();
        let unknown: Vec<(String, i64)> = hits
            .iter()
            .filter(|(code, _)| !found.contains(*code))
            .map(|(c, h)| (c.clone(), *h))
            .collect();
        let total: i128 = hits.values().map(|&h| i128::from(h)).sum();
        let unknown_total: i128 = unknown.iter().map(|(_, h)| i128::from(*h)).sum();
        let unknown_codes: Vec<&str> = unknown.iter().map(|(c, _)| c.as_str()).collect();
        let unknown_counts: Vec<i64> = unknown.iter().map(|(_, h)| *h).collect();
        tx.execute(
            &format!(
                "INSERT INTO {} (batch_id, keys, hits, rows_updated, unknown_keys, unknown_hits, \
                 unknown_codes, unknown_counts, recovered) \
                 VALUES ($1, $2, $3::text::numeric, $4, $5, $6::text::numeric, $7, $8, $9)",
                cfg.ledger_table.quoted
            ),
            &[
                &batch_id,
                &(keys as i64),
                &total.to_string(),
                &(rows_updated as i64),
                &(unknown.len() as i64),
                &unknown_total.to_string(),
                &unknown_codes,
                &unknown_counts,
                &recovered,
            ],
        )
        .with_context(|| {
            ctx(&format!(
                "recording batch {batch_id} in ledger table `{}`",
                cfg.ledger_table.name
            ))
        })?;
        fault::point(if recovered {
            "recovery_before_commit"
        } else {
            "before_commit"
        });
        tx.commit()
            .with_context(|| ctx(&format!("COMMIT of batch {batch_id}")))?;
        Ok(Applied {
            rows_updated,
            unknown,
        })
    }

    /// Read-only: the codes among `codes` that have a row, and how many rows they match.
    pub fn existing(
        &mut self,
        cfg: &FlushConfig,
        codes: &[&str],
    ) -> Result<(HashSet<String>, u64)> {
        let _watch = self.watch("reading the table");
        let rows = self
            .client
            .query(
                &format!(
                    "SELECT {c}::text FROM {t} WHERE {c} = ANY($1::text[])",
                    c = cfg.code_column.quoted,
                    t = cfg.table.quoted
                ),
                &[&codes],
            )
            .with_context(|| self.ctx(&format!("reading table `{}`", cfg.table.name)))?;
        let n = rows.len() as u64;
        Ok((rows.iter().map(|r| r.get(0)).collect(), n))
    }

    /// Deletes ledger rows older than `days`. Call only after recovery has finished: a ledger
    /// row must outlive the journal it guards.
    pub fn prune(&mut self, ledger: &Ident, days: u32) -> Result<u64> {
        let _watch = self.watch("pruning the ledger");
        self.client
            .execute(
                &format!(
                    "DELETE FROM {} WHERE applied_at < now() - make_interval(days => $1)",
                    ledger.quoted
                ),
                &[&(days as i32)],
            )
            .with_context(|| self.ctx(&format!("pruning ledger table `{}`", ledger.name)))
    }

    /// Runs the read-only part of a dry run inside one READ ONLY transaction.
    pub fn begin_read_only(&mut self) -> Result<()> {
        let _watch = self.watch("BEGIN READ ONLY");
        self.client
            .batch_execute("BEGIN TRANSACTION READ ONLY")
            .with_context(|| self.ctx("BEGIN READ ONLY"))
    }
}

/// The bulk UPDATE for `rows` rows, as `cfg.statement` says:
/// `UPDATE t AS u SET n = u.n + d.count FROM <rows> AS d(code, count) WHERE u.code = d.code
/// RETURNING d.code`, where `<rows>` is `unnest($1::text[], $2::int8[])` or
/// `(VALUES ($1::text,$2::int8), …)`.
pub fn update_sql(cfg: &FlushConfig, rows: usize) -> String {
    let from = match cfg.statement {
        cli::Statement::Unnest => "unnest($1::text[], $2::int8[])".to_owned(),
        cli::Statement::Values => {
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
        t = cfg.table.quoted,
        n = cfg.count_column.quoted,
        c = cfg.code_column.quoted,
    )
}
