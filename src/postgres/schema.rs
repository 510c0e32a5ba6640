//! The tables redis-flusher keeps for itself (the ledger, the run history, the lease, the
//! quarantine): their DDL in one list, created when missing, and handed to a DBA as SQL when
//! this role may not create them.

use anyhow::{bail, Result};
use postgres::error::SqlState;
use postgres::types::Type;

use super::history::runs_ddl;
use super::lease::lease_ddl;
use super::ledger::{ledger_ddl, lock_key};
use super::quarantine::quarantine_ddl;
use super::session::Session;
use crate::config::{Ident, LedgerConfig};

/// Privileges a run needs on a table that only grows and shrinks (the ledger, the history).
pub(crate) const WRITE: &[&str] = &["SELECT", "INSERT", "DELETE"];
/// Privileges a run needs on a table whose rows it changes (the lease, the quarantine).
pub const ALL: &[&str] = &["SELECT", "INSERT", "UPDATE", "DELETE"];

/// Our own tables: each with its DDL and the privileges a run needs on it.
pub(crate) fn own_tables(cfg: &LedgerConfig) -> [(&Ident, String, &'static [&'static str]); 4] {
    [
        (&cfg.ledger_table, ledger_ddl(&cfg.ledger_table), WRITE),
        (&cfg.runs_table, runs_ddl(&cfg.runs_table), WRITE),
        (&cfg.lease_table, lease_ddl(&cfg.lease_table), ALL),
        (
            &cfg.quarantine_table,
            quarantine_ddl(&cfg.quarantine_table),
            ALL,
        ),
    ]
}

/// An identifier as SQL writes it: double-quoted, a `"` in it doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `GRANT <privileges> ON <table> TO <role>;`, runnable as it is.
pub fn grant_sql(privileges: &[&str], table: &Ident, role: &str) -> String {
    format!(
        "GRANT {} ON {} TO {};",
        privileges.join(", "),
        table.quoted,
        quote_ident(role)
    )
}

/// What a DBA must run when our tables are missing and this role (`role`) may not create
/// them: each one's DDL and the GRANT it needs, as one SQL script.
pub fn for_a_dba(missing: &[(&Ident, String, &[&str])], role: &str) -> String {
    let one = missing.len() == 1;
    format!(
        "{} {} missing and this role may not create {}; ask a DBA to run:\n\n{}\n\n",
        missing
            .iter()
            .map(|(t, _, _)| format!("table `{}`", t.name))
            .collect::<Vec<_>>()
            .join(" and "),
        if one { "is" } else { "are" },
        if one { "it" } else { "them" },
        missing
            .iter()
            .map(|(t, ddl, needed)| format!("{ddl}\n{}", grant_sql(needed, t, role)))
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

impl Session {
    /// Creates our own tables where they are missing. A role that may not create tables gets
    /// the DDL of every missing one, to hand to a DBA.
    pub(crate) fn ensure_tables(&mut self, cfg: &LedgerConfig) -> Result<()> {
        let mut missing = Vec::new();
        for (table, ddl, needed) in own_tables(cfg) {
            if !self.table_exists(table)? {
                missing.push((table, ddl, needed));
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        // Two runs creating the same table at once can collide in the catalog (a duplicate
        // key in pg_type, IF NOT EXISTS notwithstanding): one at a time, under a lock that
        // ends with the transaction.
        let key = lock_key(&format!("redis-flusher\0create\0{}", cfg.ledger_table.name));
        let role = self.current_role()?;
        self.transaction("creating tables", None, |pg| {
            pg.create(&missing, key, &role)
        })
    }

    fn create(
        &mut self,
        missing: &[(&Ident, String, &[&str])],
        key: i64,
        role: &str,
    ) -> Result<()> {
        self.query(
            "waiting for another run creating tables",
            "SELECT pg_advisory_xact_lock($1)",
            &[(&key, Type::INT8)],
        )?;
        for (i, (table, ddl, _)) in missing.iter().enumerate() {
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
            bail!(
                "PostgreSQL at {}: {}",
                self.display,
                for_a_dba(&missing[i..], role)
            );
        }
        Ok(())
    }
}
