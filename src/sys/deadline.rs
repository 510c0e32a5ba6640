//! The last resort against a PostgreSQL server that stops answering: a watchdog thread that
//! ends the process when one call has waited far longer than any server-side timeout allows.
//!
//! Redis connections have socket read and write timeouts, so a hung Redis fails the command
//! that waits on it. The `postgres` crate has none: its synchronous client waits for ever
//! on a server that is stopped (SIGSTOP, a frozen VM) or behind a network that dropped the
//! connection without a reset, and `statement_timeout` cannot fire on a server that is not
//! running. So every Postgres call is armed here with its limit; if it has not returned by
//! then, the watchdog hands the error to the caller's `on_expiry` (which logs it and prints
//! the report so far) and exits 1.
//!
//! It also ends a graceful stop that takes longer than `--shutdown-timeout` (`stop.rs`): a
//! platform that asked for the stop kills the process soon after anyway.
//!
//! Exiting at any instant is safe by design: the flush survives SIGKILL at every step
//! (`fault.rs`). Whatever was claimed and not committed waits in its journal, and a batch
//! whose COMMIT reached the server is found in the ledger by the next run.

use std::collections::BTreeMap;
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

type OnExpiry = Box<dyn Fn(Expiry, anyhow::Error) + Send + Sync>;

/// Why the watchdog ends the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// A Postgres call got no answer in time: the run failed (exit 1).
    Hung,
    /// A stop asked for by a signal took longer than `--shutdown-timeout`: the process ends
    /// as asked (exit 0).
    Shutdown,
}

struct Watch {
    state: Mutex<State>,
    changed: Condvar,
    /// What is done with the error before the process exits ([`on_expiry`]).
    on_expiry: OnceLock<OnExpiry>,
}

#[derive(Default)]
struct State {
    next_id: u64,
    /// Armed calls: id → (deadline, what is waited on, its limit).
    armed: BTreeMap<u64, Armed>,
}

/// Global because there is one watchdog thread for the process, and every Postgres call of
/// every thread arms it.
static WATCH: OnceLock<Watch> = OnceLock::new();

/// Disarms its call when dropped (the call returned, with a result or an error).
#[must_use = "the call is watched only while the guard lives"]
pub struct Guard(u64);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(w) = WATCH.get() {
            if let Ok(mut s) = w.state.lock() {
                s.armed.remove(&self.0);
            }
        }
    }
}

/// An armed call: its deadline, what is waited on, its limit, and what no answer means.
#[derive(Clone)]
struct Armed {
    at: Instant,
    what: String,
    limit: Duration,
    meaning: String,
    kind: Expiry,
}

/// Watches a call that must return within `limit`; `what` names the server and the step for
/// the log line if it does not.
pub fn arm(what: impl Into<String>, limit: Duration) -> Guard {
    arm_meaning(what, limit, "so the server or the network to it hangs")
}

/// As [`arm`], with what no answer means, for the log line.
pub fn arm_meaning(what: impl Into<String>, limit: Duration, meaning: &str) -> Guard {
    let w = watch();
    let mut s = w.state.lock().unwrap_or_else(|p| p.into_inner());
    s.next_id += 1;
    let id = s.next_id;
    s.armed.insert(
        id,
        Armed {
            at: Instant::now() + limit,
            what: what.into(),
            limit,
            meaning: meaning.to_owned(),
            kind: Expiry::Hung,
        },
    );
    w.changed.notify_one();
    Guard(id)
}

/// Ends the process (exit 0) if it still runs `limit` from now: the bound of a graceful stop.
pub fn arm_shutdown(limit: Duration) {
    let w = watch();
    let mut s = w.state.lock().unwrap_or_else(|p| p.into_inner());
    s.next_id += 1;
    let id = s.next_id;
    s.armed.insert(
        id,
        Armed {
            at: Instant::now() + limit,
            what: "the stop SIGTERM/SIGINT asked for".into(),
            limit,
            meaning: "so the batch in flight is given up (it waits in its journal, and Postgres \
                      rolls back its transaction with the connection)"
                .into(),
            kind: Expiry::Shutdown,
        },
    );
    w.changed.notify_one();
}

/// Sets what is done with the error when the watchdog fires, before the process exits (once
/// per process; later calls are ignored). Without it, the error is logged.
pub fn on_expiry(f: impl Fn(Expiry, anyhow::Error) + Send + Sync + 'static) {
    let _ = watch().on_expiry.set(Box::new(f));
}

fn watch() -> &'static Watch {
    WATCH.get_or_init(|| {
        // If the thread cannot start, calls go unwatched, as the postgres crate leaves them.
        if let Err(e) = std::thread::Builder::new()
            .name("deadline".into())
            .spawn(run)
        {
            log::warn!(
                "could not start the watchdog thread ({e}); a hung PostgreSQL would hang this run"
            );
        }
        Watch {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            on_expiry: OnceLock::new(),
        }
    })
}

fn run() {
    let w = watch();
    let mut s = w.state.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        let now = Instant::now();
        let first = s.armed.values().min_by_key(|a| a.at).cloned();
        match first {
            None => s = w.changed.wait(s).unwrap_or_else(|p| p.into_inner()),
            Some(a) if a.at > now => {
                s = w
                    .changed
                    .wait_timeout(s, a.at - now)
                    .unwrap_or_else(|p| p.into_inner())
                    .0
            }
            Some(a) => {
                let e = anyhow::anyhow!(
                    "{}: {} in {} s, {}; giving up. Nothing is lost: claimed batches wait in \
                     their journals and the next run applies them",
                    a.what,
                    match a.kind {
                        Expiry::Hung => "no answer",
                        Expiry::Shutdown => "not done",
                    },
                    a.limit.as_secs(),
                    a.meaning
                );
                match w.on_expiry.get() {
                    Some(f) => f(a.kind, e),
                    None => log::error!("{}", crate::sys::error::text(&e)),
                }
                if a.kind == Expiry::Shutdown {
                    // A stop that was asked for is not a failure.
                    std::process::exit(0);
                }
                // The last resort, and the one exit outside main.rs: the thread that waits
                // on the server cannot be woken, and the process must end for the next run
                // (or a restarted `serve`) to get a fresh connection.
                std::process::exit(1);
            }
        }
    }
}
