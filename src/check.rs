//! What a flush needs, checked: for `redis-flusher check` (everything, each finding with what to
//! do about it) and for `run`, which checks the same before it claims anything and refuses
//! (exit 2) what `check` calls a failure. Changes nothing.

use anyhow::Result;
use serde::Serialize;

use crate::config::{unknown_variables, Config, FlushConfig, Setting, UsageError};
use crate::postgres::{lease_ddl, ledger_ddl, quarantine_ddl, runs_ddl, Session, TableFacts};
use crate::redis::RedisSource;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    #[serde(rename = "ok")]
    Good,
    /// A flush works, but something will hurt (lost counts on a restart, a slow plan, …).
    Warn,
    /// A flush could not work.
    Fail,
}

#[derive(Debug, Serialize)]
pub struct Finding {
    pub level: Level,
    pub message: String,
}

#[derive(Debug, Default, Serialize)]
pub struct Findings {
    /// What a run would touch, and where each of those settings came from.
    pub target: Vec<Setting>,
    pub findings: Vec<Finding>,
}

impl Findings {
    pub fn add(&mut self, level: Level, message: impl Into<String>) {
        self.findings.push(Finding {
            level,
            message: message.into(),
        });
    }

    /// Adds a failure for `e`, a check that could not be made.
    fn failed(&mut self, e: &anyhow::Error) {
        self.add(Level::Fail, crate::error::text(e));
    }

    /// True when nothing would stop a flush.
    pub fn ok(&self) -> bool {
        !self.findings.iter().any(|f| f.level == Level::Fail)
    }

    /// For a run: warnings go to the log; failures, if any, are its error (exit 2).
    pub fn for_run(self) -> Result<()> {
        let mut fails = Vec::new();
        for f in self.findings {
            match f.level {
                Level::Good => {}
                Level::Warn => log::warn!("{}", f.message),
                Level::Fail => fails.push(f.message),
            }
        }
        if fails.is_empty() {
            return Ok(());
        }
        Err(UsageError(format!(
            "a flush cannot work here, so nothing was claimed: {} (`redis-flusher check` \
             lists everything)",
            fails.join("; ")
        ))
        .into())
    }

    pub fn text(&self) -> String {
        let mut out = String::new();
        if !self.target.is_empty() {
            out.push_str("target (what a run would touch, and where each setting came from):\n");
            for t in &self.target {
                out.push_str(&format!("  {:<13} {:<40} {}\n", t.what, t.value, t.source));
            }
        }
        for f in &self.findings {
            let tag = match f.level {
                Level::Good => "ok  ",
                Level::Warn => "WARN",
                Level::Fail => "FAIL",
            };
            out.push_str(&format!("{tag}  {}\n", f.message));
        }
        let count = |l| self.findings.iter().filter(|f| f.level == l).count();
        let (fails, warns) = (count(Level::Fail), count(Level::Warn));
        out.push_str(&if fails > 0 {
            format!("{fails} problem(s) would stop a flush, {warns} warning(s)\n")
        } else {
            format!("a flush would work; {warns} warning(s)\n")
        });
        out
    }
}

/// Runs every check (`redis-flusher check`); never fails itself (a failed connection is a
/// finding).
pub fn run(cfg: &Config) -> Findings {
    let mut out = Findings {
        target: cfg.settings(),
        ..Findings::default()
    };
    for unknown in unknown_variables(&crate::cli::variables()) {
        out.add(Level::Fail, unknown.to_string());
    }
    match Session::connect(&cfg.pg) {
        Ok(mut pg) => {
            match pg.server_facts() {
                Ok((version, sync)) => {
                    out.add(
                        Level::Good,
                        format!(
                            "PostgreSQL at {}: connected (version {version})",
                            cfg.pg.display
                        ),
                    );
                    if sync == "off" {
                        out.add(
                            Level::Good,
                            "synchronous_commit is off on this server; redis-flusher turns it \
                             on for its own transactions, so a Postgres crash cannot forget a \
                             committed batch",
                        );
                    }
                }
                Err(e) => out.failed(&e),
            }
            postgres(&mut pg, &cfg.flush, true, &mut out);
            quarantine(&mut pg, &cfg.flush, &mut out);
        }
        Err(e) => out.failed(&e),
    }
    match RedisSource::connect(&cfg.redis, &cfg.flush.source) {
        Ok(mut redis) => {
            out.add(
                Level::Good,
                format!("Redis at {}: connected, a master", cfg.redis.display),
            );
            redis_checks(&mut redis, &cfg.flush, true, &mut out);
        }
        Err(e) => out.failed(&e),
    }
    out
}

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
        Ok(Some(why)) => out.add(Level::Fail, why),
        Ok(None) => {}
        Err(e) => out.failed(&e),
    }
    let target = &f.target;
    let facts = match pg.check_target(target) {
        Ok(t) => t,
        Err(e) => {
            out.failed(&e);
            return None;
        }
    };
    types(f, &facts, all, out);
    if !facts.updatable {
        out.add(
            Level::Fail,
            format!(
                "`{}` is a view Postgres cannot update (a join, an aggregate…): set `--table` \
                 to the table that holds the counts",
                target.table.name
            ),
        );
    } else if facts.indexed {
        out.add(
            Level::Good,
            format!("`{}` is indexed", target.code_column.name),
        );
    } else if facts.is_table {
        out.add(Level::Warn, TableFacts::index_advice(target));
    }
    if !facts.can_stage {
        out.add(
            Level::Warn,
            "this role lacks TEMPORARY on the database: a backlog's transactions cannot \
             gather batches in a temporary table, so each batch is its own transaction (as \
             exact, slower past a million keys): GRANT TEMPORARY ON DATABASE <db> TO <this role>",
        );
    }
    match pg.missing_privileges(&target.table, &["SELECT", "UPDATE"]) {
        Ok(m) if m.is_empty() => out.add(
            Level::Good,
            format!("this role may SELECT and UPDATE `{}`", target.table.name),
        ),
        Ok(m) => out.add(
            Level::Fail,
            format!(
                "this role lacks {} on `{t}`: GRANT {} ON {tq} TO <this role>",
                m.join(" and "),
                m.join(", "),
                t = target.table.name,
                tq = target.table.quoted
            ),
        ),
        Err(e) => out.failed(&e),
    }
    own_tables(pg, f, out);
    Some(facts)
}

/// The ledger, run history, lease and quarantine tables: there and usable, or creatable. The
/// ones this role may not create are one failure, with the DDL of all of them for a DBA.
fn own_tables(pg: &mut Session, f: &FlushConfig, out: &mut Findings) {
    let ledger = &f.ledger;
    const WRITE: &[&str] = &["SELECT", "INSERT", "DELETE"];
    const ALL: &[&str] = &["SELECT", "INSERT", "UPDATE", "DELETE"];
    let mut uncreatable = Vec::new();
    for (table, ddl, needed) in [
        (
            &ledger.ledger_table,
            ledger_ddl(&ledger.ledger_table),
            WRITE,
        ),
        (&ledger.runs_table, runs_ddl(&ledger.runs_table), WRITE),
        (&ledger.lease_table, lease_ddl(&ledger.lease_table), ALL),
        (
            &ledger.quarantine_table,
            quarantine_ddl(&ledger.quarantine_table),
            ALL,
        ),
    ] {
        let (t, tq) = (&table.name, &table.quoted);
        let found = pg.table_exists(table).and_then(|exists| {
            if !exists {
                return Ok(pg.may_create(table)?.then(|| {
                    (
                        Level::Good,
                        format!("table `{t}` does not exist yet; the first run creates it"),
                    )
                }));
            }
            let m = pg.missing_privileges(table, needed)?;
            Ok(Some(match m.is_empty() {
                true => (
                    Level::Good,
                    format!("table `{t}` exists and this role may use it"),
                ),
                false => (
                    Level::Fail,
                    format!(
                        "this role lacks {} on `{t}`: GRANT {} ON {tq} TO <this role>",
                        m.join(" and "),
                        needed.join(", "),
                    ),
                ),
            }))
        });
        match found {
            Ok(Some((level, message))) => out.add(level, message),
            Ok(None) => uncreatable.push((table, ddl, needed)),
            Err(e) => out.failed(&e),
        }
    }
    if uncreatable.is_empty() {
        return;
    }
    let one = uncreatable.len() == 1;
    out.add(
        Level::Fail,
        format!(
            "{} {} missing and this role may not create {}; ask a DBA to run:\n\n{}\n\nand \
             to grant this role {}",
            uncreatable
                .iter()
                .map(|(t, _, _)| format!("table `{}`", t.name))
                .collect::<Vec<_>>()
                .join(" and "),
            if one { "is" } else { "are" },
            if one { "it" } else { "them" },
            uncreatable
                .iter()
                .map(|(_, ddl, _)| ddl.as_str())
                .collect::<Vec<_>>()
                .join("\n"),
            uncreatable
                .iter()
                .map(|(t, _, needed)| format!("{} ON {}", needed.join(", "), t.quoted))
                .collect::<Vec<_>>()
                .join("; "),
        ),
    );
}

/// What waits in this flusher's quarantine (a warning: someone should look).
fn quarantine(pg: &mut Session, f: &FlushConfig, out: &mut Findings) {
    let table = &f.ledger.quarantine_table;
    let waiting = pg.table_exists(table).and_then(|exists| {
        if !exists {
            return Ok(0);
        }
        let owner = f.owner(&f.target_record(&pg.database()?));
        Ok(pg.quarantined(table, &owner)?.0)
    });
    match waiting {
        Ok(0) => out.add(Level::Good, "no codes wait in quarantine"),
        Ok(n) => out.add(
            Level::Warn,
            format!(
                "{n} codes wait in quarantine: Postgres refused their rows (`SELECT * FROM {}` \
                 says why); every run tries them again",
                table.quoted
            ),
        ),
        Err(e) => out.failed(&e),
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
        "bigint" | "numeric" => out.add(Level::Good, format!("`{t}.{count}` is {count_type}")),
        "integer" | "smallint" if !all => {}
        "integer" | "smallint" => out.add(
            Level::Warn,
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
        other if other.starts_with("numeric(") => {
            out.add(Level::Good, format!("`{t}.{count}` is {other}"))
        }
        other => out.add(
            Level::Fail,
            format!(
                "`{t}.{count}` is {other}, not a number the hits can be added to: set \
                 `--count-column`, or make it bigint"
            ),
        ),
    }
    let code_type = facts.code_type.as_str();
    if code_type == "text" || code_type.starts_with("character") {
        out.add(Level::Good, format!("`{t}.{code}` is {code_type}"));
    } else {
        out.add(
            Level::Fail,
            format!(
                "`{t}.{code}` is {code_type}, and codes are text: set `--code-column`, or make \
                 it text or varchar"
            ),
        );
    }
}

/// What Redis must allow for a flush: scripts, and the keys a run touches (the counters, the
/// journals, the unknown-codes hash with `--keep-unknown`); with `all` (`check`), what will
/// hurt too: persistence, eviction, pending journals.
pub fn redis_checks(redis: &mut RedisSource, f: &FlushConfig, all: bool, out: &mut Findings) {
    let facts = match redis.facts() {
        Ok(f) => f,
        Err(e) => return out.failed(&e),
    };
    if all {
        out.add(Level::Good, format!("Redis version {}", facts.version));
    }
    match facts.scripting {
        Ok(()) => {
            if all {
                out.add(
                    Level::Good,
                    "this Redis user may run Lua scripts (each claim is one)",
                );
            }
        }
        Err(e) => out.add(
            Level::Fail,
            format!(
                "this Redis user may not run Lua scripts, and each claim is one ({e}); allow \
                 EVAL, EVALSHA and SCRIPT in its ACL (docs/deployment.md, Least privilege)"
            ),
        ),
    }
    match redis.may_touch(f.source.keep_unknown) {
        Ok(()) => {}
        Err(e) => out.add(
            Level::Fail,
            format!(
                "this Redis user may not touch every key a run needs ({}): its ACL needs \
                 `~{}*` and `~{}*`{} (docs/deployment.md, Least privilege)",
                crate::error::text(&e),
                String::from_utf8_lossy(&f.source.prefix),
                f.source.journal_prefix,
                if f.source.keep_unknown {
                    format!(" and `~{}`", f.source.unknown_key)
                } else {
                    String::new()
                }
            ),
        ),
    }
    if !all {
        return;
    }
    const AOF: &str = "turn on AOF (appendonly yes)";
    let rdb = facts.rdb_save.as_deref().map(|s| !s.trim().is_empty());
    match (facts.aof, rdb) {
        (Some(true), _) => out.add(Level::Good, "AOF persistence is on"),
        (Some(false), Some(true)) => out.add(
            Level::Warn,
            format!(
                "only RDB snapshots are on: a Redis restart loses the counts since the last \
                 snapshot; {AOF}"
            ),
        ),
        (Some(false), Some(false)) => out.add(
            Level::Warn,
            format!(
                "neither AOF nor RDB persistence is on: counts die with a Redis restart; {AOF}"
            ),
        ),
        (Some(false), None) => out.add(
            Level::Warn,
            format!(
                "AOF is off and this user may not read the RDB settings (CONFIG GET save): \
                 unless snapshots are on, counts die with a Redis restart; {AOF}"
            ),
        ),
        (None, _) => out.add(
            Level::Warn,
            "could not read the persistence settings (INFO or CONFIG refused); make sure AOF \
             is on (appendonly yes)",
        ),
    }
    match facts.maxmemory_policy.as_deref() {
        Some(p) if p.starts_with("allkeys-") => out.add(
            Level::Warn,
            format!(
                "maxmemory-policy is {p}: under memory pressure Redis evicts counters, and \
                 their hits are lost; use noeviction (or volatile-*: counters have no TTL)"
            ),
        ),
        Some(p) => out.add(
            Level::Good,
            format!("maxmemory-policy is {p}: counters are never evicted"),
        ),
        None => out.add(
            Level::Warn,
            "could not read maxmemory-policy; make sure it is not allkeys-*, which evicts \
             counters",
        ),
    }
    match redis.journals(false) {
        Ok(j) if j.is_empty() => out.add(Level::Good, "no journals pending from failed runs"),
        Ok(j) => out.add(
            Level::Warn,
            format!(
                "{} journals pending from failed runs; the next run applies them first \
                 (`status` shows them)",
                j.len()
            ),
        ),
        Err(e) => out.failed(&e),
    }
}
