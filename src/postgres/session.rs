//! A connection to PostgreSQL, and the one path every call takes: armed with the watchdog (the
//! client has no timeout of its own), its failure named with the server and the step, its rows
//! read with `try_get` so that an unexpected column type is an error naming the table and
//! column, never a panic.
//!
//! Nothing outlives our own transactions, so that the connection can be a pooler's (PgBouncer
//! in transaction mode hands each transaction a different server connection, and ours to the
//! app next): no named prepared statements outliving a transaction (statements with
//! parameters are sent unnamed, `query_typed`; those without, with the simple protocol; the
//! one exception, a backlog's `COPY`, which the client prepares by name, is prepared and
//! closed inside its transaction), no session settings (every
//! transaction sets what it needs with `SET LOCAL`), no session-level lock (`lease.rs`).

use std::time::Duration;

use anyhow::{Context, Result};
use postgres::binary_copy::BinaryCopyInWriter;
use postgres::error::SqlState;
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::{FromSql, ToSql, Type};
use postgres::{Client, Row};

use crate::config::{PgConfig, UsageError};
use crate::sys::deadline::{self, Guard};
use crate::sys::fault;

/// How much longer than its own timeout a Postgres call may take before the watchdog gives
/// up on the server: time for the server's error to travel back.
pub(crate) const GRACE: Duration = Duration::from_secs(5);

/// A statement parameter and its Postgres type (statements are sent unnamed, so the types
/// travel with the values).
pub(crate) type Param<'a> = (&'a (dyn ToSql + Sync), Type);

/// The settings every transaction of ours runs with, as `SET LOCAL`s, so that nothing outlives
/// it on a shared server connection:
/// - `statement_timeout` and `lock_timeout`, from the flags;
/// - hash and merge joins off, which keeps every batch's UPDATE on the code column's index (a
///   nested loop). Without it, the planner turns to a hash join over a sequential scan of the
///   whole table once a batch is large enough for the table's size, which made a large flush
///   several times slower (docs/performance.md);
/// - `synchronous_commit` raised from `off` to `on`: a COMMIT must be durable before the
///   journal is deleted. With `off` (a server may set it for speed) a Postgres crash forgets
///   the last committed transactions, ledger rows included, while their journals are already
///   gone, and the hits are lost (seen in testing: `pg_ctl stop -m immediate` right after our
///   COMMITs). Stronger settings (`remote_write`, `remote_apply`, `local`) are all durable
///   locally and are kept.
pub(crate) fn transaction_settings(statement_timeout: Duration, lock_timeout: Duration) -> String {
    format!(
        "SET LOCAL statement_timeout = {}; SET LOCAL lock_timeout = {}; \
         SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off; \
         SELECT set_config('synchronous_commit', 'on', true) \
         WHERE current_setting('synchronous_commit') = 'off'",
        statement_timeout.as_millis(),
        lock_timeout.as_millis()
    )
}

/// A plain connection, whose failure names the server and the variables to check.
pub(crate) fn connect_client(cfg: &PgConfig) -> Result<Client> {
    // The crate's connect timeout covers the TCP connect only; a server that accepts and then
    // never answers (stopped) would hold the startup exchange for ever.
    let connect_timeout = cfg.config.get_connect_timeout().copied().unwrap_or(GRACE);
    let _watch = deadline::arm_meaning(
        format!("connecting to PostgreSQL at {}", cfg.display),
        connect_timeout + Duration::from_secs(1),
        "though something there took the connection: it is not PostgreSQL (check `DB_PORT` \
         or the URL's port: a Redis there, say, stays silent), or the server hangs",
    );
    let connected = if cfg.unix_socket {
        // No TLS over a socket; the rustls connector would refuse its empty host name.
        cfg.config.connect(postgres::NoTls)
    } else {
        cfg.config.connect(cfg.tls.clone())
    };
    connected.map_err(|e| {
        // Refused for who we are or what we asked for, not for being away: a person must
        // change a setting before any run can work (exit 2).
        let refused = e.code().is_some_and(|c| {
            *c == SqlState::INVALID_PASSWORD
                || *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
                || *c == SqlState::INVALID_CATALOG_NAME
        });
        // The TLS cause is a source of the error, not its own text.
        let text = crate::sys::error::text(&anyhow::Error::new(e));
        let (setup, advice) = connect_advice(&text, refused);
        // What happened first, then what to do.
        let message = format!(
            "could not connect to PostgreSQL at {}: {text}; {advice}",
            cfg.display
        );
        if setup {
            UsageError(message).into()
        } else {
            anyhow::anyhow!(message)
        }
    })
}

/// What to do about a failed connection whose error reads `text`, and whether a person must
/// act first (a setting that cannot work: exit 2) rather than wait for the server (exit 1).
fn connect_advice(text: &str, refused: bool) -> (bool, &'static str) {
    const SETTINGS: &str = "check `DATABASE_URL` or `DB_HOST`/`DB_PORT`/`DB_NAME`/`DB_USER`/\
        `DB_PASSWORD`, and for TLS `sslmode` and `sslrootcert` (the CA that signed the server's \
        certificate)";
    if crate::sys::error::unknown_host(text) {
        (
            true,
            "the host name does not resolve: check `DB_HOST` (or the host in `DATABASE_URL`)",
        )
    } else if text.contains("password missing") {
        (
            true,
            "the server asks for a password and none was given: set `DB_PASSWORD` (or \
             `DB_PASSWORD_FILE`), or log in over the Unix socket as the OS user of the same \
             name (`DB_HOST=/var/run/postgresql`, peer authentication)",
        )
    } else if text.contains("server does not support TLS") {
        (
            true,
            "the server offers no TLS and `sslmode` requires it: turn on `ssl` on the server, \
             or set sslmode=prefer (TLS when offered) or disable",
        )
    } else {
        (refused || text.contains("certificate"), SETTINGS)
    }
}

/// A connection, and the settings its transactions run with.
pub struct Session {
    client: Client,
    /// `user@host:port/db`, for messages.
    pub display: String,
    /// For the advice when a batch waited too long for a locked row.
    pub(super) lock_timeout: Duration,
    /// For the advice when a batch's UPDATE took too long.
    pub(super) statement_timeout: Duration,
    /// How long one call may wait before the watchdog gives up on the server.
    call_limit: Duration,
    /// The `SET LOCAL`s that follow every BEGIN.
    settings: String,
    /// To connect again after a pooler closed the connection at BEGIN.
    cfg: PgConfig,
}

impl Session {
    pub fn connect(cfg: &PgConfig) -> Result<Session> {
        Ok(Session {
            client: connect_client(cfg)?,
            display: cfg.display.clone(),
            lock_timeout: cfg.lock_timeout,
            statement_timeout: cfg.statement_timeout,
            call_limit: cfg.statement_timeout + GRACE,
            settings: transaction_settings(cfg.statement_timeout, cfg.lock_timeout),
            cfg: cfg.clone(),
        })
    }

    /// The context of a failed step: which server, and what it was doing.
    pub(super) fn failed(&self, what: &str) -> String {
        format!("PostgreSQL at {}: {what} failed", self.display)
    }

    /// Arms the watchdog for one call (`sys/deadline.rs`): the crate has no client-side timeout.
    fn watch(&self, what: &str) -> Guard {
        deadline::arm(
            format!("PostgreSQL at {}: {what}", self.display),
            self.call_limit,
        )
    }

    /// Runs one call on the client: watched, and its failure named `what`.
    pub fn call<T>(
        &mut self,
        what: &str,
        f: impl FnOnce(&mut Client) -> Result<T, postgres::Error>,
    ) -> Result<T> {
        let _watch = self.watch(what);
        let result = f(&mut self.client);
        result.map_err(|e| {
            let idle = e.code() == Some(&SqlState::IDLE_IN_TRANSACTION_SESSION_TIMEOUT);
            let e = anyhow::Error::new(e).context(self.failed(what));
            if !idle {
                return e;
            }
            // A backlog's transaction waits, idle, while the next batch is claimed.
            e.context(format!(
                "PostgreSQL at {} ended a transaction of ours that waited, idle, longer than \
                 its idle_in_transaction_session_timeout (a backlog's transaction waits for \
                 each claimed batch it gathers); nothing is lost, the next run applies it: \
                 raise the timeout for this role (`ALTER ROLE <role> SET \
                 idle_in_transaction_session_timeout = 0`, or a minute at least), or lower \
                 --batch-size to 250000 (no gathering)",
                self.display
            ))
        })
    }

    /// Runs SQL without parameters (the simple protocol: nothing is prepared).
    pub fn simple(&mut self, what: &str, sql: &str) -> Result<()> {
        self.call(what, |c| c.batch_execute(sql))
    }

    /// Runs one statement, unnamed, and returns its rows.
    pub fn query(&mut self, what: &str, sql: &str, params: &[Param]) -> Result<Vec<Row>> {
        self.call(what, |c| c.query_typed(sql, params))
    }

    /// As [`Session::query`], for a statement that returns exactly one row.
    pub fn query_one(&mut self, what: &str, sql: &str, params: &[Param]) -> Result<Row> {
        self.call(what, |c| c.query_typed_one(sql, params))
    }

    /// As [`Session::query`], for a statement that returns at most one row.
    pub(crate) fn query_opt(
        &mut self,
        what: &str,
        sql: &str,
        params: &[Param],
    ) -> Result<Option<Row>> {
        self.call(what, |c| c.query_typed_opt(sql, params))
    }

    /// Runs one statement, unnamed, and returns how many rows it affected.
    pub fn execute(&mut self, what: &str, sql: &str, params: &[Param]) -> Result<u64> {
        self.call(what, |c| {
            let mut rows = c.query_typed_raw(sql, params.iter().map(|(v, t)| (*v, t.clone())))?;
            while rows.next()?.is_some() {}
            Ok(rows.rows_affected().unwrap_or(0))
        })
    }

    /// Runs one statement, unnamed, and hands each row to `each` as it arrives (the rows of
    /// a batch's UPDATE are not collected). `each`'s error ends the call.
    pub(crate) fn for_each_row(
        &mut self,
        what: &str,
        sql: &str,
        params: Vec<Param>,
        mut each: impl FnMut(&Row) -> Result<()>,
    ) -> Result<Result<(), postgres::Error>> {
        let _watch = self.watch(what);
        let mut rows = match self.client.query_typed_raw(sql, params) {
            Ok(rows) => rows,
            Err(e) => return Ok(Err(e)),
        };
        loop {
            match rows.next() {
                Ok(Some(row)) => each(&row)?,
                Ok(None) => return Ok(Ok(())),
                Err(e) => return Ok(Err(e)),
            }
        }
    }

    /// Runs a binary `COPY … FROM STDIN` of columns `types`, `write` writing its rows; returns
    /// how many rows the server took, or the server's error (a row it refused, say), which
    /// leaves the transaction to be rolled back.
    pub(crate) fn copy_in(
        &mut self,
        what: &str,
        sql: &str,
        types: &[Type],
        write: impl FnOnce(&mut BinaryCopyInWriter<'_>) -> Result<(), postgres::Error>,
    ) -> Result<u64, postgres::Error> {
        let _watch = self.watch(what);
        let mut writer = BinaryCopyInWriter::new(self.client.copy_in(sql)?, types);
        write(&mut writer)?;
        writer.finish()
    }

    /// Begins a transaction of ours, with its settings.
    pub fn begin(&mut self, read_only: bool) -> Result<()> {
        let sql = format!(
            "BEGIN{}; {}",
            if read_only { " READ ONLY" } else { "" },
            self.settings
        );
        let first = self.begin_once(&sql);
        // PgBouncer in statement pooling mode answers a transaction with a FATAL error and
        // closes; the client often reports only the closed connection. Once more on a new
        // connection tells that apart from a network that failed at that moment.
        match first {
            Err(e) if e.is_closed() => {
                self.client = connect_client(&self.cfg)?;
                match self.begin_once(&sql) {
                    Err(e) if e.is_closed() || statement_pooling(&e) => Err(self.refuses(false)),
                    other => other.map_err(|e| self.begin_failed(e)),
                }
            }
            Err(e) if statement_pooling(&e) => Err(self.refuses(true)),
            other => other.map_err(|e| self.begin_failed(e)),
        }
    }

    fn begin_once(&mut self, sql: &str) -> Result<(), postgres::Error> {
        let _watch = self.watch("BEGIN");
        self.client.batch_execute(sql)
    }

    fn begin_failed(&self, e: postgres::Error) -> anyhow::Error {
        anyhow::Error::new(e).context(self.failed("BEGIN"))
    }

    /// The error for a server (a pooler) that refuses transactions: `said` when it said so,
    /// else it closed the connection at BEGIN twice.
    fn refuses(&self, said: bool) -> anyhow::Error {
        UsageError(format!(
            "PostgreSQL at {} {}: a pooler in statement pooling mode does that (PgBouncer: \
             \"transaction blocks not allowed in statement pooling mode\"), and every batch is \
             a transaction: use transaction or session pooling for redis-flusher (PgBouncer: \
             `pool_mode = transaction`)",
            self.display,
            if said {
                "is reached through a pooler in statement pooling mode, which refuses \
                 transactions"
            } else {
                "closed the connection when a transaction began, twice, after answering \
                 queries"
            }
        ))
        .into()
    }

    /// Commits the transaction; `what` names it in errors.
    pub fn commit(&mut self, what: &str) -> Result<()> {
        self.simple(&format!("COMMIT of {what}"), "COMMIT")
    }

    /// Rolls the transaction back, after a failure inside it. Its own failure (a connection
    /// that broke) is not news: the server rolls back a transaction whose connection closed.
    pub fn rollback(&mut self) {
        let _watch = self.watch("ROLLBACK");
        let _ = self.client.batch_execute("ROLLBACK");
    }

    /// Runs `f` in a transaction of ours and commits it; rolls back if `f` fails. `what` names
    /// the transaction in errors; `before_commit` is the fault point just before its COMMIT
    /// (`sys/fault.rs`), if it has one. The one way our writes are wrapped.
    pub fn transaction<T>(
        &mut self,
        what: &str,
        before_commit: Option<&str>,
        f: impl FnOnce(&mut Session) -> Result<T>,
    ) -> Result<T> {
        self.begin(false)?;
        match f(self) {
            Ok(v) => {
                if let Some(point) = before_commit {
                    fault::point(point);
                }
                self.commit(what)?;
                Ok(v)
            }
            Err(e) => {
                self.rollback();
                Err(e)
            }
        }
    }
}

/// Whether `e` is PgBouncer refusing a transaction in statement pooling mode.
fn statement_pooling(e: &postgres::Error) -> bool {
    e.as_db_error()
        .is_some_and(|d| d.message().contains("statement pooling mode"))
}

/// Column `idx` of `row`, read as `T`; a column of another type (a table a DBA changed, say)
/// is an error naming `table` and the column, not a panic.
pub fn get<'a, T: FromSql<'a>>(row: &'a Row, idx: usize, table: &str) -> Result<T> {
    row.try_get(idx).with_context(|| {
        let column = row.columns().get(idx).map_or("?", |c| c.name());
        format!("could not read column `{column}` of {table}")
    })
}
