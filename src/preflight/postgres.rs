//! What Postgres must be for a flush: writable, the table and its columns there, of types the
//! hits can be added to, updatable, the role's privileges, our own tables there (or
//! creatable); what waits in the quarantine.

use super::{Findings, Level};
use crate::config::FlushConfig;
use crate::postgres::{for_a_dba, grant_sql, own_tables, quote_ident, Session, TableFacts};

/// What Postgres must be for a flush: writable, the table and its columns there, of types
/// the hits can be added to, updatable, the role's privileges, and our own tables there (or
/// creatable). Returns the table's facts when it could read them.
///
/// With `all` (`check`), also what only hurts: an integer count column, a missing index.
pub fn postgres(
    pg: &mut Session,
    f: &FlushConfig,
    all: bool,
    out: &mut Findings,
) -> Option<TableFacts> {
    match pg.read_only() {
        Ok(Some(why)) => out.add(Level::Fail, "pg.read_only", why),
        Ok(None) => {}
        Err(e) => out.failed("pg.read_only", &e),
    }
    let target = &f.target;
    let facts = match pg.check_target(target) {
        Ok(t) => t,
        Err(e) => {
            out.failed("table.lookup", &e);
            return None;
        }
    };
    types(f, &facts, all, out);
    if !facts.updatable {
        out.add(
            Level::Fail,
            "table.updatable",
            format!(
                "`{}` is a view Postgres cannot update (a join, an aggregate…): set `--table` \
                 to the table that holds the counts",
                target.table.name
            ),
        );
    } else if facts.indexed {
        out.add(
            Level::Good,
            "table.index",
            format!("`{}` is indexed", target.code_column.name),
        );
    } else if facts.is_table {
        out.add(Level::Warn, "table.index", TableFacts::index_advice(target));
    }
    // Named in the GRANTs a message hands to a DBA, so that they can be run as they are.
    let role = pg.current_role().unwrap_or_else(|_| "<this role>".into());
    if !facts.can_stage {
        let db = pg.database().unwrap_or_else(|_| "<database>".into());
        out.add(
            Level::Warn,
            "role.temporary",
            format!(
                "this role lacks TEMPORARY on the database: a backlog's transactions cannot \
                 gather batches in a temporary table, so each batch is its own transaction (as \
                 exact, slower past a million keys): GRANT TEMPORARY ON DATABASE {} TO {};",
                quote_ident(&db),
                quote_ident(&role)
            ),
        );
    }
    match pg.missing_privileges(&target.table, &["SELECT", "UPDATE"]) {
        Ok(m) if m.is_empty() => out.add(
            Level::Good,
            "role.privileges",
            format!("this role may SELECT and UPDATE `{}`", target.table.name),
        ),
        Ok(m) => out.add(
            Level::Fail,
            "role.privileges",
            format!(
                "this role lacks {} on `{}`: {}",
                m.join(" and "),
                target.table.name,
                grant_sql(
                    &m.iter().map(String::as_str).collect::<Vec<_>>(),
                    &target.table,
                    &role
                )
            ),
        ),
        Err(e) => out.failed("role.privileges", &e),
    }
    check_own_tables(pg, f, &role, out);
    if all {
        idle_timeout(pg, &role, out);
    }
    Some(facts)
}

/// The ledger, run history, lease and quarantine tables: there and usable, or creatable. The
/// ones this role may not create are one failure, with the DDL of all of them for a DBA.
fn check_own_tables(pg: &mut Session, f: &FlushConfig, role: &str, out: &mut Findings) {
    let mut uncreatable = Vec::new();
    for (table, ddl, needed) in own_tables(&f.ledger) {
        let t = &table.name;
        let found = pg.table_exists(table).and_then(|exists| {
            if !exists {
                return Ok(pg.may_create(table)?.then(|| {
                    (
                        Level::Good,
                        "own_table.creatable",
                        format!("table `{t}` does not exist yet; the first run creates it"),
                    )
                }));
            }
            let m = pg.missing_privileges(table, needed)?;
            Ok(Some(match m.is_empty() {
                true => (
                    Level::Good,
                    "own_table.ready",
                    format!("table `{t}` exists and this role may use it"),
                ),
                false => (
                    Level::Fail,
                    "own_table.privileges",
                    format!(
                        "this role lacks {} on `{t}`: {}",
                        m.join(" and "),
                        grant_sql(needed, table, role),
                    ),
                ),
            }))
        });
        match found {
            Ok(Some((level, code, message))) => out.add(level, code, message),
            Ok(None) => uncreatable.push((table, ddl, needed)),
            Err(e) => out.failed("own_table.lookup", &e),
        }
    }
    if uncreatable.is_empty() {
        return;
    }
    out.add(
        Level::Fail,
        "own_table.uncreatable",
        for_a_dba(&uncreatable, role),
    );
}

/// The shortest idle_in_transaction_session_timeout that a backlog's transactions, which wait
/// idle while each batch they gather is claimed, are safe with (docs/performance.md measures
/// the wait).
const IDLE_ENOUGH: std::time::Duration = std::time::Duration::from_secs(60);

/// An idle_in_transaction_session_timeout short enough to end a backlog's transaction.
fn idle_timeout(pg: &mut Session, role: &str, out: &mut Findings) {
    match pg.idle_in_transaction_timeout() {
        Ok(t) if !t.is_zero() && t < IDLE_ENOUGH => out.add(
            Level::Warn,
            "pg.idle_in_transaction_timeout",
            format!(
                "idle_in_transaction_session_timeout is {} ms for this role: a backlog's \
                 transaction waits, idle, while each batch it gathers is claimed (seconds at a \
                 time), and Postgres would end it (nothing is lost; the run fails and the next \
                 one applies it): ALTER ROLE {} SET idle_in_transaction_session_timeout = 0; \
                 (or a minute at least)",
                t.as_millis(),
                quote_ident(role)
            ),
        ),
        Ok(_) => {}
        Err(e) => out.failed("pg.idle_in_transaction_timeout", &e),
    }
}

/// What waits in this flusher's quarantine (a warning: someone should look).
pub fn quarantine(pg: &mut Session, f: &FlushConfig, out: &mut Findings) {
    let table = &f.ledger.quarantine_table;
    let waiting = pg.table_exists(table).and_then(|exists| {
        if !exists {
            return Ok(0);
        }
        let owner = f.owner(&f.target_record(&pg.database()?));
        Ok(pg.quarantined(table, &owner)?.0)
    });
    match waiting {
        Ok(0) => out.add(
            Level::Good,
            "quarantine.waiting",
            "no codes wait in quarantine",
        ),
        Ok(n) => out.add(
            Level::Warn,
            "quarantine.waiting",
            format!(
                "{} in quarantine: Postgres refused their rows (`SELECT * FROM {}` \
                 says why); every run tries them again",
                crate::report::count(n, "code waits", "codes wait"),
                table.quoted
            ),
        ),
        Err(e) => out.failed("quarantine.waiting", &e),
    }
}

fn types(f: &FlushConfig, facts: &TableFacts, all: bool, out: &mut Findings) {
    let target = &f.target;
    let (t, code, count) = (
        &target.table.name,
        &target.code_column.name,
        &target.count_column.name,
    );
    let count_type = facts.count_type.as_str();
    match count_type {
        "bigint" | "numeric" => out.add(
            Level::Good,
            "column.count_type",
            format!("`{t}.{count}` is {count_type}"),
        ),
        "integer" | "smallint" if !all => {}
        "integer" | "smallint" => out.add(
            Level::Warn,
            "column.count_type",
            format!(
                "`{t}.{count}` is {count_type}: it holds at most {}; a code whose count would \
                 pass it waits in quarantine until the column is widened: ALTER TABLE {} ALTER \
                 COLUMN {} TYPE bigint",
                if count_type == "integer" {
                    "2,147,483,647"
                } else {
                    "32,767"
                },
                target.table.quoted,
                target.count_column.quoted
            ),
        ),
        other if other.starts_with("numeric(") => out.add(
            Level::Good,
            "column.count_type",
            format!("`{t}.{count}` is {other}"),
        ),
        other => out.add(
            Level::Fail,
            "column.count_type",
            format!(
                "`{t}.{count}` is {other}, not a number the hits can be added to: set \
                 `--count-column`, or make it bigint"
            ),
        ),
    }
    let code_type = facts.code_type.as_str();
    if code_type == "text" || code_type.starts_with("character") {
        out.add(
            Level::Good,
            "column.code_type",
            format!("`{t}.{code}` is {code_type}"),
        );
    } else {
        out.add(
            Level::Fail,
            "column.code_type",
            format!(
                "`{t}.{code}` is {code_type}, and codes are text: set `--code-column`, or make \
                 it text or varchar"
            ),
        );
    }
}
