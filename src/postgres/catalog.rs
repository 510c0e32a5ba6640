//! What the catalog says about the target and the role: the table's columns and their types,
//! an index on the code column, privileges, the server's settings. Reads only.

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use postgres::types::Type;

use super::session::{get, Session};
use crate::config::{named, Ident, TargetConfig};

/// What [`Session::check_target`] found out about the table.
#[derive(Debug, Clone)]
pub struct TableFacts {
    pub code_type: String,
    /// The count column's type as Postgres names it, for the overflow advice.
    pub count_type: String,
    /// Whether an index starts with the code column; without one every batch reads the whole
    /// table.
    pub indexed: bool,
    /// A table (plain or partitioned), not a view or a foreign table.
    pub is_table: bool,
    /// Whether Postgres can UPDATE it (a join view cannot).
    pub updatable: bool,
    /// Whether this role may create temporary tables (the TEMPORARY privilege on the
    /// database, which PUBLIC has unless a DBA revoked it): a backlog's transactions gather
    /// batches in one (`stage.rs`). Without it every batch is its own transaction.
    pub can_stage: bool,
}

impl TableFacts {
    /// The advice for a table without an index on the code column.
    pub(crate) fn index_advice(target: &TargetConfig) -> String {
        format!(
            "table `{t}` has no index on `{c}`: every batch reads the whole table; create one \
             with `CREATE UNIQUE INDEX ON {tq} ({cq})`",
            t = target.table.name,
            c = target.code_column.name,
            tq = target.table.quoted,
            cq = target.code_column.quoted
        )
    }
}

const CATALOG: &str = "the catalog";

impl Session {
    /// Checks that the table and both columns exist, reads their types, and says whether the
    /// code column is indexed.
    pub fn check_target(&mut self, target: &TargetConfig) -> Result<TableFacts> {
        let table = &target.table;
        let rows = self.query(
            &format!("looking up table `{}`", table.name),
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) \
             FROM pg_attribute a \
             WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped",
            &[(&table.quoted, Type::TEXT)],
        )?;
        if rows.is_empty() {
            bail!(
                "table `{}` does not exist in PostgreSQL at {} (or this role cannot see it): \
                 check the database (`DB_NAME`, or the one `DATABASE_URL` names) and {}",
                table.name,
                self.display,
                named("--table", "REDIS_FLUSHER_TABLE", &table.name)
            );
        }
        let mut columns = BTreeMap::new();
        for r in &rows {
            columns.insert(get::<String>(r, 0, CATALOG)?, get::<String>(r, 1, CATALOG)?);
        }
        for (flag, var, col) in [
            (
                "--code-column",
                "REDIS_FLUSHER_CODE_COLUMN",
                &target.code_column,
            ),
            (
                "--count-column",
                "REDIS_FLUSHER_COUNT_COLUMN",
                &target.count_column,
            ),
        ] {
            if !columns.contains_key(&col.name) {
                bail!(
                    "table `{}` has no column `{}`: change {} (columns: {})",
                    table.name,
                    col.name,
                    named(flag, var, &col.name),
                    columns.keys().cloned().collect::<Vec<_>>().join(", ")
                );
            }
        }
        // pg_relation_is_updatable: a bitmask of the commands it takes; UPDATE is 1 << 2.
        let row = self.query_one(
            &format!("looking up the indexes of `{}`", table.name),
            "SELECT EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a \
             ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] \
             WHERE i.indrelid = to_regclass($1) AND a.attname = $2), \
             (SELECT relkind IN ('r', 'p') FROM pg_class WHERE oid = to_regclass($1)), \
             pg_relation_is_updatable(to_regclass($1), false) & 4 = 4, \
             has_database_privilege(current_database(), 'TEMPORARY')",
            &[
                (&table.quoted, Type::TEXT),
                (&target.code_column.name, Type::TEXT),
            ],
        )?;
        Ok(TableFacts {
            code_type: columns[&target.code_column.name].clone(),
            count_type: columns[&target.count_column.name].clone(),
            indexed: get(&row, 0, CATALOG)?,
            is_table: get(&row, 1, CATALOG)?,
            updatable: get(&row, 2, CATALOG)?,
            can_stage: get(&row, 3, CATALOG)?,
        })
    }

    /// The server's version and its `synchronous_commit` (the server's or role's, not the
    /// value our transactions raise it to).
    pub(crate) fn server_facts(&mut self) -> Result<(String, String)> {
        let row = self.query_one(
            "reading the server settings",
            "SELECT current_setting('server_version'), \
             (SELECT reset_val FROM pg_settings WHERE name = 'synchronous_commit')",
            &[],
        )?;
        Ok((get(&row, 0, CATALOG)?, get(&row, 1, CATALOG)?))
    }

    /// Which of `privileges` (`SELECT`, `UPDATE`, …) this role lacks on `table`.
    pub(crate) fn missing_privileges(
        &mut self,
        table: &Ident,
        privileges: &[&str],
    ) -> Result<Vec<String>> {
        let mut missing = Vec::new();
        for p in privileges {
            let row = self.query_one(
                &format!("reading privileges on `{}`", table.name),
                "SELECT has_table_privilege($1, $2)",
                &[(&table.quoted, Type::TEXT), (p, Type::TEXT)],
            )?;
            if !get::<bool>(&row, 0, CATALOG)? {
                missing.push((*p).to_owned());
            }
        }
        Ok(missing)
    }

    /// Whether this role may create `table` (CREATE on its schema, or on the first schema of
    /// the search path when the name has none).
    pub(crate) fn may_create(&mut self, table: &Ident) -> Result<bool> {
        let schema = table.name.rsplit_once('.').map(|(s, _)| s.to_owned());
        let row = self.query_one(
            "reading schema privileges",
            "SELECT coalesce(has_schema_privilege(coalesce($1, current_schema()), 'CREATE'), \
             false)",
            &[(&schema, Type::TEXT)],
        )?;
        get(&row, 0, CATALOG)
    }

    /// Why this server would refuse our writes, if it would: a hot standby, or a database
    /// (or role) whose transactions are read-only by default.
    pub(crate) fn read_only(&mut self) -> Result<Option<String>> {
        let row = self.query_one(
            "reading whether the server takes writes",
            "SELECT pg_is_in_recovery(), current_setting('default_transaction_read_only')",
            &[],
        )?;
        let standby: bool = get(&row, 0, CATALOG)?;
        let read_only: String = get(&row, 1, CATALOG)?;
        Ok(if standby {
            Some(format!(
                "PostgreSQL at {} is a hot standby (a read-only replica): point `DATABASE_URL` \
                 (or `DB_HOST`/`DB_PORT`) at the primary",
                self.display
            ))
        } else if read_only == "on" {
            Some(format!(
                "PostgreSQL at {} makes transactions read-only by default \
                 (default_transaction_read_only = on, for the database, the role or the server): \
                 use a writable database or role, or `ALTER ROLE <role> SET \
                 default_transaction_read_only = off`",
                self.display
            ))
        } else {
            None
        })
    }

    /// `idle_in_transaction_session_timeout` as this role's sessions get it (0: none).
    pub(crate) fn idle_in_transaction_timeout(&mut self) -> Result<std::time::Duration> {
        let row = self.query_one(
            "reading idle_in_transaction_session_timeout",
            "SELECT setting::int8 FROM pg_settings \
             WHERE name = 'idle_in_transaction_session_timeout'",
            &[],
        )?;
        let ms: i64 = get(&row, 0, CATALOG)?;
        Ok(std::time::Duration::from_millis(ms.max(0) as u64))
    }

    /// The role this session is, for the GRANTs a message hands to a DBA.
    pub(crate) fn current_role(&mut self) -> Result<String> {
        let row = self.query_one("reading the role's name", "SELECT current_user::text", &[])?;
        get(&row, 0, CATALOG)
    }

    pub(crate) fn table_exists(&mut self, table: &Ident) -> Result<bool> {
        let row = self.query_one(
            &format!("looking up table `{}`", table.name),
            "SELECT to_regclass($1) IS NOT NULL",
            &[(&table.quoted, Type::TEXT)],
        )?;
        get(&row, 0, CATALOG)
    }
}
