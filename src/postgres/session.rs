//! A connection to PostgreSQL set up for a flush, and the one path every call takes: armed
//! with the watchdog (the client has no timeout of its own), its failure named with the server
//! and the step, its rows read with `try_get` so that an unexpected column type is an error
//! naming the table and column, never a panic.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, Result};
use postgres::types::FromSql;
use postgres::{Client, Row, Statement};

use crate::config::PgConfig;
use crate::deadline::{self, Guard};

/// How much longer than its own timeout a Postgres call may take before the watchdog gives
/// up on the server: time for the server's error to travel back.
pub const GRACE: Duration = Duration::from_secs(5);

/// Keeps every batch's UPDATE on the code column's index (a nested loop). Without it, the
/// planner turns to a hash join over a sequential scan of the whole table once a batch is
/// large enough for the table's size (measured at 2M rows: at 20k rows for unnest, 10k for
/// VALUES), which made a 1M-key flush 3x slower. Only this session's statements are affected.
pub const SESSION_PLAN: &str = "SET enable_hashjoin = off; SET enable_mergejoin = off";

/// A COMMIT must be durable before the journal is deleted: with `synchronous_commit = off`
/// (a server may set it for speed) a Postgres crash forgets the last committed transactions,
/// ledger rows included, while their journals are already gone, and the hits are lost (seen
/// in testing: `pg_ctl stop -m immediate` right after our COMMITs). Stronger settings
/// (`remote_write`, `remote_apply`, `local`) are all durable locally and are kept.
pub const SESSION_DURABLE: &str = "SELECT set_config('synchronous_commit', 'on', false) \
     WHERE current_setting('synchronous_commit') = 'off'";

/// The settings a flush's session runs with: timeouts, the plan, durability.
pub fn session_settings(statement_timeout: Duration, lock_timeout: Duration) -> String {
    format!(
        "SET statement_timeout = {}; SET lock_timeout = {}; {SESSION_PLAN}; {SESSION_DURABLE}",
        statement_timeout.as_millis(),
        lock_timeout.as_millis()
    )
}

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

/// A connection with the flush's session settings.
pub struct Session {
    pub(super) client: Client,
    /// `user@host:port/db`, for messages.
    pub display: String,
    /// For the advice when a batch waited too long for a locked row.
    pub(super) lock_timeout: Duration,
    /// For the advice when a batch's UPDATE took too long.
    pub(super) statement_timeout: Duration,
    /// How long one call may wait before the watchdog gives up on the server.
    pub(super) call_limit: Duration,
    /// Prepared UPDATEs by number of rows (`apply.rs`): full batches reuse one plan.
    pub(super) updates: HashMap<usize, Statement>,
}

impl Session {
    pub fn connect(cfg: &PgConfig) -> Result<Session> {
        let client = connect_client(cfg)?;
        let mut session = Session {
            client,
            display: cfg.display.clone(),
            lock_timeout: cfg.lock_timeout,
            statement_timeout: cfg.statement_timeout,
            call_limit: cfg.statement_timeout + GRACE,
            updates: HashMap::new(),
        };
        let settings = session_settings(cfg.statement_timeout, cfg.lock_timeout);
        session.call("setting up the session", |c| c.batch_execute(&settings))?;
        Ok(session)
    }

    /// The context of a failed step: which server, and what it was doing.
    pub(super) fn failed(&self, what: &str) -> String {
        format!("PostgreSQL at {}: {what} failed", self.display)
    }

    /// Arms the watchdog for `limit` (`deadline.rs`): the crate has no client-side timeout.
    pub(super) fn watch(&self, what: &str, limit: Duration) -> Guard {
        deadline::arm(format!("PostgreSQL at {}: {what}", self.display), limit)
    }

    /// Runs one call on the server: watched, and its failure named `what`.
    pub fn call<T>(
        &mut self,
        what: &str,
        f: impl FnOnce(&mut Client) -> Result<T, postgres::Error>,
    ) -> Result<T> {
        let _watch = self.watch(what, self.call_limit);
        let result = f(&mut self.client);
        result.with_context(|| self.failed(what))
    }
}

/// Column `idx` of `row`, read as `T`; a column of another type (a table a DBA changed, say)
/// is an error naming `table` and the column, not a panic.
pub fn get<'a, T: FromSql<'a>>(row: &'a Row, idx: usize, table: &str) -> Result<T> {
    row.try_get(idx).with_context(|| {
        let column = row.columns().get(idx).map_or("?", |c| c.name());
        format!("could not read column `{column}` of {table}")
    })
}
