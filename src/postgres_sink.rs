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
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::ToSql;
use postgres::{Client, Statement};

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

/// One run as the run history records it, for `status`.
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

/// What `check_target` found out about the table.
pub struct Target {
    pub code_type: String,
    pub count_type: String,
    /// Whether an index starts with the code column; without one every batch reads the whole
    /// table.
    pub indexed: bool,
}

impl Target {
    /// The advice for a table without an index on the code column.
    pub fn index_advice(cfg: &FlushConfig) -> String {
        format!(
            "table `{t}` has no index on `{c}`: every batch reads the whole table; create one \
             with `CREATE UNIQUE INDEX ON {tq} ({cq})`",
            t = cfg.table.name,
            c = cfg.code_column.name,
            tq = cfg.table.quoted,
            cq = cfg.code_column.quoted
        )
    }
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

/// Rows per `VALUES` statement: Postgres binds at most 65,535 parameters, two per row.
const VALUES_ROWS: usize = 30_000;

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
    cfg.config.connect(cfg.tls.clone()).with_context(|| {
        format!(
            "could not connect to PostgreSQL at {}: check `DATABASE_URL` or \
             `DB_HOST`/`DB_PORT`/`DB_NAME`/`DB_USER`/`DB_PASSWORD`, and for TLS `sslmode` and \
             `sslrootcert` (the CA that signed the server's certificate)",
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
    /// For the advice when a batch's UPDATE took too long.
    statement_timeout: Duration,
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
            statement_timeout: cfg.statement_timeout,
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

    /// A token that only grows from run to run (a new transaction id), for Redis Cluster's
    /// fences.
    pub fn fence_token(&mut self) -> Result<i64> {
        let _watch = self.watch("taking a transaction id");
        let row = self
            .client
            .query_one("SELECT txid_current()::int8", &[])
            .with_context(|| self.ctx("taking a transaction id"))?;
        Ok(row.get(0))
    }

    /// Checks that the table and both columns exist, remembers the count column's type, and
    /// says whether the code column is indexed.
    pub fn check_target(&mut self, cfg: &FlushConfig) -> Result<Target> {
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
        Ok(Target {
            code_type: columns[&cfg.code_column.name].clone(),
            count_type: self.count_type.clone(),
            indexed,
        })
    }

    /// The server's version and its `synchronous_commit` (the server's or role's, not the
    /// value this session raised it to).
    pub fn server_facts(&mut self) -> Result<(String, String)> {
        let _watch = self.watch("reading the server settings");
        let row = self
            .client
            .query_one(
                "SELECT current_setting('server_version'), \
                 (SELECT reset_val FROM pg_settings WHERE name = 'synchronous_commit')",
                &[],
            )
            .with_context(|| self.ctx("reading the server settings"))?;
        Ok((row.get(0), row.get(1)))
    }

    /// Which of `privileges` (`SELECT`, `UPDATE`, …) this role lacks on `table`.
    pub fn missing_privileges(
        &mut self,
        table: &Ident,
        privileges: &[&str],
    ) -> Result<Vec<String>> {
        let _watch = self.watch("reading privileges");
        let mut missing = Vec::new();
        for p in privileges {
            let has: bool = self
                .client
                .query_one("SELECT has_table_privilege($1, $2)", &[&table.quoted, p])
                .with_context(|| self.ctx(&format!("reading privileges on `{}`", table.name)))?
                .get(0);
            if !has {
                missing.push((*p).to_owned());
            }
        }
        Ok(missing)
    }

    /// Whether this role may create `table` (CREATE on its schema, or on the first schema of
    /// the search path when the name has none).
    pub fn may_create(&mut self, table: &Ident) -> Result<bool> {
        let _watch = self.watch("reading privileges");
        let schema = table.name.rsplit_once('.').map(|(s, _)| s.to_owned());
        let row = self
            .client
            .query_one(
                "SELECT coalesce(has_schema_privilege(coalesce($1, current_schema()), 'CREATE'), false)",
                &[&schema],
            )
            .with_context(|| self.ctx("reading schema privileges"))?;
        Ok(row.get(0))
    }

    pub fn table_exists(&mut self, table: &Ident) -> Result<bool> {
        let _watch = self.watch("looking up a table");
        let row = self
            .client
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table.quoted])
            .with_context(|| self.ctx(&format!("looking up table `{}`", table.name)))?;
        Ok(row.get(0))
    }

    /// Creates the ledger and the run history if they are missing. A role that may not
    /// create tables gets the DDL of every missing one, to hand to a DBA.
    pub fn ensure_ledger(&mut self, cfg: &FlushConfig) -> Result<()> {
        let mut missing = Vec::new();
        for (table, ddl) in [
            (&cfg.ledger_table, ledger_ddl(&cfg.ledger_table)),
            (&cfg.runs_table, runs_ddl(&cfg.runs_table)),
        ] {
            if !self.table_exists(table)? {
                missing.push((table, ddl));
            }
        }
        for (i, (table, ddl)) in missing.iter().enumerate() {
            let _watch = self.watch("creating a table");
            let Err(e) = self.client.batch_execute(ddl) else {
                log::info!("created table `{}`", table.name);
                continue;
            };
            if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) {
                let rest = &missing[i..];
                anyhow::bail!(
                    "{} {} missing and this role may not create {} (PostgreSQL at {}); \
                     ask a DBA to run:\n\n{}\n\nand to GRANT SELECT, INSERT, DELETE ON {} TO \
                     this role",
                    rest.iter()
                        .map(|(t, _)| format!("table `{}`", t.name))
                        .collect::<Vec<_>>()
                        .join(" and "),
                    if rest.len() == 1 { "is" } else { "are" },
                    if rest.len() == 1 { "it" } else { "them" },
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
            return Err(e).with_context(|| self.ctx(&format!("creating table `{}`", table.name)));
        }
        Ok(())
    }

    /// Records a run in the run history (`status` reads it).
    pub fn record_run(
        &mut self,
        runs: &Ident,
        run_id: &str,
        started: std::time::SystemTime,
        report: &crate::report::Report,
    ) -> Result<()> {
        let _watch = self.watch("recording the run");
        let started_ms = started
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as f64 / 1000.0)
            .unwrap_or(0.0);
        let error = (!report.errors.is_empty()).then(|| report.errors.join("\n"));
        let status = match report.status {
            crate::report::Status::Ok => "ok",
            crate::report::Status::Locked => "locked",
            crate::report::Status::Failed => "failed",
        };
        self.client
            .execute(
                &format!(
                    "INSERT INTO {} (run_id, started_at, status, keys, hits, rows_updated, \
                     unknown_codes, unknown_hits, bad_keys, batches, batches_failed, \
                     recovered_batches, pending_journals, error) \
                     VALUES ($1, to_timestamp($2), $3, $4, $5::text::numeric, $6, $7, \
                     $8::text::numeric, $9, $10, $11, $12, $13, $14)",
                    runs.quoted
                ),
                &[
                    &run_id,
                    &started_ms,
                    &status,
                    &(report.keys as i64),
                    &report.hits.to_string(),
                    &(report.rows_updated as i64),
                    &(report.unknown_codes as i64),
                    &report.unknown_hits.to_string(),
                    &(report.bad_keys as i64),
                    &(report.batches as i64),
                    &(report.batches_failed as i64),
                    &(report.recovered_batches as i64),
                    &(report.pending_journals as i64),
                    &error,
                ],
            )
            .with_context(|| self.ctx(&format!("recording the run in table `{}`", runs.name)))?;
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

    /// The prepared UPDATE for `rows` rows, prepared once: unnest has one shape for every
    /// size, VALUES one per row count.
    fn update(&mut self, cfg: &FlushConfig, rows: usize) -> Result<Statement> {
        let shape = match cfg.statement {
            cli::Statement::Unnest => 0,
            cli::Statement::Values => rows,
        };
        if let Some(stmt) = self.updates.get(&shape) {
            return Ok(stmt.clone());
        }
        let _watch = self.watch("preparing the UPDATE");
        let stmt = self
            .client
            .prepare(&update_sql(cfg, rows))
            .with_context(|| {
                self.ctx(&format!(
                    "preparing the UPDATE of table `{}`",
                    cfg.table.name
                ))
            })?;
        self.updates.insert(shape, stmt.clone());
        Ok(stmt)
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
        let codes: Vec<&str> = hits.keys().map(String::as_str).collect();
        let counts: Vec<i64> = hits.values().copied().collect();
        // unnest takes the whole batch in one statement. VALUES binds two parameters a row
        // and Postgres takes at most 65,535, so a large batch is several statements.
        let part = match cfg.statement {
            cli::Statement::Unnest => codes.len().max(1),
            cli::Statement::Values => VALUES_ROWS,
        };
        let mut statements = Vec::new();
        for rows in codes.chunks(part).map(<[&str]>::len) {
            statements.push(self.update(cfg, rows)?);
        }
        // Each statement is bounded by statement_timeout but the COMMIT: their worst case,
        // and as long again for the rest.
        let _watch = deadline::arm(
            format!("PostgreSQL at {}: applying batch {batch_id}", self.display),
            self.call_limit * (statements.len() as u32 + 1),
        );
        // A field of its own, so it can be borrowed while the transaction holds the client.
        let display = &self.display;
        let ctx = |what: &str| failed(display, what);
        let rejected = |e: postgres::Error| -> anyhow::Error {
            if e.code() == Some(&SqlState::NUMERIC_VALUE_OUT_OF_RANGE) {
                return BatchRejected(format!(
                    "batch {batch_id} would overflow column `{}.{}` ({}): widen it with \
                     `ALTER TABLE {} ALTER COLUMN {} TYPE bigint`; the batch stays in its \
                     journal and the next run applies it",
                    cfg.table.name,
                    cfg.count_column.name,
                    self.count_type,
                    cfg.table.quoted,
                    cfg.count_column.quoted
                ))
                .into();
            }
            if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) {
                return BatchRejected(format!(
                    "batch {batch_id} waited more than {} s for a row of `{}` that another \
                     session holds locked (the app, or a long transaction); the batch stays in \
                     its journal and the next run applies it (`--lock-timeout` sets the wait)",
                    self.lock_timeout.as_secs(),
                    cfg.table.name
                ))
                .into();
            }
            if e.code() == Some(&SqlState::QUERY_CANCELED) {
                // Not a rejection: the next batch would most likely time out as well, and
                // this one comes back whole from its journal, however --batch-size is set.
                return anyhow::Error::new(e).context(format!(
                    "PostgreSQL at {display}: the UPDATE of batch {batch_id} ({} codes) was \
                     canceled: it took longer than --statement-timeout ({} s), or an operator \
                     canceled it. The batch stays in its journal and the next run applies it \
                     whole: raise --statement-timeout if Postgres is just slow",
                    codes.len(),
                    self.statement_timeout.as_secs(),
                ));
            }
            anyhow::Error::new(e).context(ctx(&format!("the UPDATE of table `{}`", cfg.table.name)))
        };

        let mut tx = self.client.transaction().with_context(|| ctx("BEGIN"))?;
        // The UPDATE returns the code of every row it changed. Rows are read as they arrive,
        // not collected: the batch's codes are its memory, whatever the batch size.
        let mut found = vec![false; codes.len()];
        let mut rows_updated = 0u64;
        for ((part_codes, part_counts), stmt) in
            codes.chunks(part).zip(counts.chunks(part)).zip(&statements)
        {
            let params: Vec<&(dyn ToSql + Sync)> = match cfg.statement {
                cli::Statement::Unnest => vec![&part_codes, &part_counts],
                cli::Statement::Values => part_codes
                    .iter()
                    .zip(part_counts)
                    .flat_map(|(code, count)| [code as &(dyn ToSql + Sync), count])
                    .collect(),
            };
            let mut rows = tx.query_raw(stmt, params).map_err(rejected)?;
            while let Some(row) = rows.next().map_err(rejected)? {
                let code: &str = row.get(0);
                // `codes` is sorted (a BTreeMap's keys); a returned code is one of them.
                let i = codes.binary_search(&code).map_err(|_| {
                    anyhow::anyhow!("BUG: the UPDATE returned code {code:?}, not in the batch")
                })?;
                found[i] = true;
                rows_updated += 1;
            }
        }
        let unknown: Vec<(String, i64)> = hits
            .iter()
            .zip(&found)
            .filter(|(_, &found)| !found)
            .map(|((c, h), _)| (c.clone(), *h))
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

    /// The last `limit` runs, newest first.
    pub fn last_runs(&mut self, runs: &Ident, limit: u32) -> Result<Vec<RunRow>> {
        let _watch = self.watch("reading the run history");
        let rows = self
            .client
            .query(
                &format!(
                    "SELECT run_id, to_char(finished_at AT TIME ZONE 'UTC', \
                     'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), \
                     extract(epoch FROM finished_at - started_at)::float8, status, keys, \
                     hits::text, unknown_codes, unknown_hits::text, bad_keys, \
                     pending_journals, error \
                     FROM {} ORDER BY finished_at DESC LIMIT $1",
                    runs.quoted
                ),
                &[&i64::from(limit)],
            )
            .with_context(|| self.ctx(&format!("reading table `{}`", runs.name)))?;
        Ok(rows
            .iter()
            .map(|r| RunRow {
                run_id: r.get(0),
                finished_at: r.get(1),
                seconds: r.get(2),
                status: r.get(3),
                keys: r.get(4),
                // numeric columns that only ever hold the integers a run wrote
                hits: r.get::<_, String>(5).parse().unwrap_or_default(),
                unknown_codes: r.get(6),
                unknown_hits: r.get::<_, String>(7).parse().unwrap_or_default(),
                bad_keys: r.get(8),
                pending_journals: r.get(9),
                error: r.get(10),
            })
            .collect())
    }

    /// Seconds since the last run that ended ok, if any did.
    pub fn last_success_age(&mut self, runs: &Ident) -> Result<Option<f64>> {
        let _watch = self.watch("reading the run history");
        let row = self
            .client
            .query_one(
                &format!(
                    "SELECT extract(epoch FROM now() - max(finished_at))::float8 FROM {} \
                     WHERE status = 'ok'",
                    runs.quoted
                ),
                &[],
            )
            .with_context(|| self.ctx(&format!("reading table `{}`", runs.name)))?;
        Ok(row.get(0))
    }

    /// Deletes ledger and run rows older than `days`. Call only after recovery has
    /// finished: a ledger row must outlive the journal it guards.
    pub fn prune(&mut self, cfg: &FlushConfig) -> Result<u64> {
        let _watch = self.watch("pruning the ledger");
        let mut pruned = 0;
        for (table, column) in [
            (&cfg.ledger_table, "applied_at"),
            (&cfg.runs_table, "finished_at"),
        ] {
            pruned += self
                .client
                .execute(
                    &format!(
                        "DELETE FROM {} WHERE {column} < now() - make_interval(days => $1)",
                        table.quoted
                    ),
                    &[&(cfg.ledger_days as i32)],
                )
                .with_context(|| self.ctx(&format!("pruning table `{}`", table.name)))?;
        }
        Ok(pruned)
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
