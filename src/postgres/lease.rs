//! The run lock: a lease in a table, which works through any pooler and cannot be stranded.
//!
//! One run per lock name (the journal prefix and the table) holds it at a time. The holder
//! renews it every quarter of `--lock-ttl` from a thread with a connection of its own, and
//! deletes it when the run ends. A run that died (killed, OOM, a watchdog exit) stops
//! renewing, so its lease expires `--lock-ttl` after the last renewal at the latest; a run on
//! the same machine takes it over at once when the holder's process is gone. A session-level
//! advisory lock would stay with a pooled server connection after the run exits (PgBouncer in
//! transaction mode), blocking every later run for as long as the pooler runs.
//!
//! Correctness never depends on the lease: journals, sealing and the ledger keep overlapping
//! runs exact. It only saves work, so a run that finds its lease taken over stops claiming
//! and exits 1; the run that took it finishes the job.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use postgres::types::Type;

use super::session::{get, Param, Session};
use crate::config::{Ident, PgConfig};

/// The DDL of the lease table, for creating it and for a DBA when we may not.
pub(crate) fn lease_ddl(leases: &Ident) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {l} (\n    \
             name       text PRIMARY KEY,\n    \
             holder     text NOT NULL,\n    \
             host       text NOT NULL,\n    \
             pid        integer NOT NULL,\n    \
             machine    text NOT NULL,\n    \
             since      timestamptz NOT NULL,\n    \
             expires_at timestamptz NOT NULL\n\
         );",
        l = leases.quoted
    )
}

/// Who holds a lease: a run, on a host, as a process. `machine` tells apart two processes
/// that share a host name but not a kernel or pid namespace (containers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Holder {
    pub run_id: String,
    pub host: String,
    pub pid: i32,
    pub machine: String,
}

impl Holder {
    /// This process, as the holder for run `run_id`.
    pub(crate) fn this_process(run_id: &str) -> Holder {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let pidns = std::fs::read_link("/proc/self/ns/pid")
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        Holder {
            run_id: run_id.to_owned(),
            host: whoami::hostname().unwrap_or_else(|_| "unknown".into()),
            pid: std::process::id() as i32,
            machine: format!("{}/{pidns}", read("/proc/sys/kernel/random/boot_id").trim()),
        }
    }

    /// Whether this holder is a process on this machine that no longer exists: its lease is
    /// stale, whatever its expiry says.
    fn gone_from_here(&self, here: &Holder) -> bool {
        if self.machine != here.machine || self.machine.starts_with('/') || self.pid <= 0 {
            return false;
        }
        process_gone(self.pid)
    }
}

/// Whether process `pid` of this machine has ended: it does not exist, or is a zombie that
/// its parent has not collected yet.
pub fn process_gone(pid: i32) -> bool {
    // SAFETY: kill(2) with signal 0 only checks that the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    if rc != 0 {
        return std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
    }
    // `pid (comm) state …`; comm may hold spaces, so look after its `)`.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| Some(s.rsplit_once(')')?.1.trim_start().starts_with('Z')))
        .unwrap_or(false)
}

/// A lease someone else holds, as a run that found it taken reports it.
#[derive(Debug)]
pub(crate) struct Taken {
    pub holder: Holder,
    /// UTC, `YYYY-MM-DDTHH:MM:SSZ`.
    pub since: String,
    /// Seconds until it expires unless renewed.
    pub expires_in: f64,
}

/// What trying to take the lease came to.
pub(crate) enum Acquired {
    Held(Lease),
    Taken(Taken),
}

/// A lease this run holds, renewed by a thread of its own until [`Lease::release`].
pub(crate) struct Lease {
    name: String,
    holder: Holder,
    table: Ident,
    /// Set by the renewal thread when another run has taken the lease over.
    lost: Arc<AtomicBool>,
    /// Dropping it stops the renewal thread.
    stop: Option<std::sync::mpsc::Sender<()>>,
    renewer: Option<std::thread::JoinHandle<()>>,
}

const UTC: &str = "to_char(since AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')";

impl Session {
    /// Takes lease `name` for `holder` for `ttl`, if it is free, expired, or held by a
    /// process of this machine that no longer exists.
    fn take_lease(
        &mut self,
        table: &Ident,
        name: &str,
        holder: &Holder,
        ttl: Duration,
    ) -> Result<Option<Taken>> {
        let secs = ttl.as_secs_f64();
        // $1-$6 of both statements: the lease, its new holder, its time to live.
        let claim: [Param; 6] = [
            (&name, Type::TEXT),
            (&holder.run_id, Type::TEXT),
            (&holder.host, Type::TEXT),
            (&holder.pid, Type::INT4),
            (&holder.machine, Type::TEXT),
            (&secs, Type::FLOAT8),
        ];
        // Twice at most: a lease released between our two statements is free the second time.
        for _ in 0..2 {
            let taken = self.query_opt(
                "taking the run lock",
                &format!(
                    "INSERT INTO {t} AS l (name, holder, host, pid, machine, since, expires_at) \
                     VALUES ($1, $2, $3, $4, $5, now(), now() + make_interval(secs => $6)) \
                     ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, \
                     host = EXCLUDED.host, pid = EXCLUDED.pid, machine = EXCLUDED.machine, \
                     since = EXCLUDED.since, expires_at = EXCLUDED.expires_at \
                     WHERE l.expires_at < now() \
                     RETURNING holder",
                    t = table.quoted
                ),
                &claim,
            )?;
            if taken.is_some() {
                return Ok(None);
            }
            let Some(other) = self.lease_holder(table, name)? else {
                continue;
            };
            if !other.holder.gone_from_here(holder) {
                return Ok(Some(other));
            }
            // The holder's process is gone from this machine: its lease is stale.
            let replaced = self.execute(
                "taking over the run lock",
                &format!(
                    "UPDATE {t} SET holder = $2, host = $3, pid = $4, machine = $5, \
                     since = now(), expires_at = now() + make_interval(secs => $6) \
                     WHERE name = $1 AND holder = $7",
                    t = table.quoted
                ),
                &[&claim[..], &[(&other.holder.run_id, Type::TEXT)]].concat(),
            )?;
            if replaced == 1 {
                log::info!(
                    "run {} (pid {}) held the run lock and no longer runs here; took it over",
                    other.holder.run_id,
                    other.holder.pid
                );
                return Ok(None);
            }
        }
        // Released and taken again under us, twice: other runs are busy with it right now.
        match self.lease_holder(table, name)? {
            Some(other) => Ok(Some(other)),
            None => anyhow::bail!("the run lock changed hands while this run tried to take it"),
        }
    }

    /// Who holds lease `name`, if anyone.
    pub(crate) fn lease_holder(&mut self, table: &Ident, name: &str) -> Result<Option<Taken>> {
        let what = format!("table `{}`", table.name);
        let row = self.query_opt(
            &format!("reading {what}"),
            &format!(
                "SELECT holder, host, pid, machine, {UTC}, \
                 extract(epoch FROM expires_at - now())::float8 FROM {} WHERE name = $1",
                table.quoted
            ),
            &[(&name, Type::TEXT)],
        )?;
        let Some(r) = row else { return Ok(None) };
        Ok(Some(Taken {
            holder: Holder {
                run_id: get(&r, 0, &what)?,
                host: get(&r, 1, &what)?,
                pid: get(&r, 2, &what)?,
                machine: get(&r, 3, &what)?,
            },
            since: get(&r, 4, &what)?,
            expires_in: get(&r, 5, &what)?,
        }))
    }

    /// Extends the lease by `ttl`; false if it is no longer ours (another run took it over).
    fn renew_lease(
        &mut self,
        table: &Ident,
        name: &str,
        run_id: &str,
        ttl: Duration,
    ) -> Result<bool> {
        let secs = ttl.as_secs_f64();
        let n = self.execute(
            "renewing the run lock",
            &format!(
                "UPDATE {} SET expires_at = now() + make_interval(secs => $3) \
                 WHERE name = $1 AND holder = $2",
                table.quoted
            ),
            &[
                (&name, Type::TEXT),
                (&run_id, Type::TEXT),
                (&secs, Type::FLOAT8),
            ],
        )?;
        Ok(n == 1)
    }

    fn release_lease(&mut self, table: &Ident, name: &str, run_id: &str) -> Result<()> {
        self.execute(
            "releasing the run lock",
            &format!(
                "DELETE FROM {} WHERE name = $1 AND holder = $2",
                table.quoted
            ),
            &[(&name, Type::TEXT), (&run_id, Type::TEXT)],
        )?;
        Ok(())
    }
}

impl Lease {
    /// Takes lease `name` in `table` for `holder`, or says who holds it. Held, it is renewed
    /// every `ttl / 4` on a connection of its own (from `cfg`) until released.
    pub(crate) fn acquire(
        pg: &mut Session,
        cfg: &PgConfig,
        table: &Ident,
        name: &str,
        holder: Holder,
        ttl: Duration,
    ) -> Result<Acquired> {
        // In a transaction of ours, if only to find out before anything is claimed that a
        // pooler refuses transactions.
        let taken = pg.transaction("taking the run lock", None, |pg| {
            pg.take_lease(table, name, &holder, ttl)
        })?;
        if let Some(taken) = taken {
            return Ok(Acquired::Taken(taken));
        }
        let lost = Arc::new(AtomicBool::new(false));
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let renewer = {
            let (cfg, table, name, run_id, lost) = (
                cfg.clone(),
                table.clone(),
                name.to_owned(),
                holder.run_id.clone(),
                lost.clone(),
            );
            std::thread::Builder::new()
                .name("lease".into())
                .spawn(move || {
                    let mut pg = None;
                    // Until the run releases the lease (or drops it): a message, or the
                    // channel closing, ends the wait at once.
                    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                        stopped.recv_timeout(ttl / 4)
                    {
                        let renewed = match &mut pg {
                            Some(pg) => Session::renew_lease(pg, &table, &name, &run_id, ttl),
                            None => Session::connect(&cfg).and_then(|mut s| {
                                let r = s.renew_lease(&table, &name, &run_id, ttl);
                                pg = Some(s);
                                r
                            }),
                        };
                        match renewed {
                            Ok(true) => {}
                            Ok(false) => {
                                log::warn!(
                                    "another run took over the run lock (this run could not \
                                     renew it in time); this run claims nothing more"
                                );
                                lost.store(true, Ordering::SeqCst);
                                return;
                            }
                            Err(e) => {
                                // Tried again next time; the run notices a dead server itself.
                                log::warn!("{}", crate::sys::error::text(&e));
                                pg = None;
                            }
                        }
                    }
                })?
        };
        Ok(Acquired::Held(Lease {
            name: name.to_owned(),
            holder,
            table: table.clone(),
            lost,
            stop: Some(stop),
            renewer: Some(renewer),
        }))
    }

    /// A handle to the lost flag, for a thread that should stop when the lease is lost.
    pub(crate) fn lost_flag(&self) -> Arc<AtomicBool> {
        self.lost.clone()
    }

    /// Stops renewing and deletes the lease (if it is still ours) on `pg`.
    pub fn release(mut self, pg: &mut Session) -> Result<()> {
        self.stop.take();
        if let Some(r) = self.renewer.take() {
            let _ = r.join();
        }
        pg.release_lease(&self.table, &self.name, &self.holder.run_id)
    }
}
