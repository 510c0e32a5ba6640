//! `redis-flusher check`: everything a flush needs, checked before the first cron run, each
//! finding with what to do about it. Changes nothing.

use serde::Serialize;

use crate::config::{Config, FlushConfig, PgConfig, RedisConfig};
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
    pub findings: Vec<Finding>,
}

impl Findings {
    fn add(&mut self, level: Level, message: impl Into<String>) {
        self.findings.push(Finding {
            level,
            message: message.into(),
        });
    }

    /// True when nothing would stop a flush.
    pub fn ok(&self) -> bool {
        !self.findings.iter().any(|f| f.level == Level::Fail)
    }

    pub fn text(&self) -> String {
        let mut out = String::new();
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

/// Runs every check; never fails itself (a failed connection is a finding).
pub fn run(cfg: &Config) -> Findings {
    let mut out = Findings::default();
    check_postgres(&cfg.pg, &cfg.flush, &mut out);
    check_redis(&cfg.redis, &cfg.flush, &mut out);
    out
}

fn check_postgres(pg: &PgConfig, f: &FlushConfig, out: &mut Findings) {
    let mut sink = match Session::connect(pg) {
        Ok(s) => s,
        Err(e) => return out.add(Level::Fail, format!("{e:#}")),
    };
    match sink.server_facts() {
        Ok((version, sync)) => {
            out.add(
                Level::Good,
                format!(
                    "PostgreSQL at {}: connected (version {version})",
                    pg.display
                ),
            );
            if sync == "off" {
                // Session::connect raised it for this session; say so, as it is the server's.
                out.add(
                    Level::Good,
                    "synchronous_commit is off on this server; redis-flusher turns it on for \
                     its own transactions, so a Postgres crash cannot forget a committed batch",
                );
            }
        }
        Err(e) => out.add(Level::Fail, format!("{e:#}")),
    }
    let target = &f.target;
    let facts = match sink.check_target(target) {
        Ok(t) => t,
        Err(e) => return out.add(Level::Fail, format!("{e:#}")),
    };
    check_types(f, &facts, out);
    if facts.indexed {
        out.add(
            Level::Good,
            format!("`{}` is indexed", target.code_column.name),
        );
    } else {
        out.add(Level::Warn, TableFacts::index_advice(target));
    }
    match sink.missing_privileges(&target.table, &["SELECT", "UPDATE"]) {
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
        Err(e) => out.add(Level::Fail, format!("{e:#}")),
    }
    let ledger = &f.ledger;
    const WRITE: &[&str] = &["SELECT", "INSERT", "DELETE"];
    const ALL: &[&str] = &["SELECT", "INSERT", "UPDATE", "DELETE"];
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
        let exists = match sink.table_exists(table) {
            Ok(e) => e,
            Err(e) => {
                out.add(Level::Fail, format!("{e:#}"));
                continue;
            }
        };
        let (t, tq) = (&table.name, &table.quoted);
        let result = if exists {
            sink.missing_privileges(table, needed)
                .map(|m| match m.is_empty() {
                    true => out.add(
                        Level::Good,
                        format!("table `{t}` exists and this role may use it"),
                    ),
                    false => out.add(
                        Level::Fail,
                        format!(
                            "this role lacks {} on `{t}`: GRANT {} ON {tq} TO <this role>",
                            m.join(" and "),
                            needed.join(", "),
                        ),
                    ),
                })
        } else {
            sink.may_create(table).map(|may| match may {
                true => out.add(
                    Level::Good,
                    format!("table `{t}` does not exist yet; the first run creates it"),
                ),
                false => out.add(
                    Level::Fail,
                    format!(
                        "table `{t}` does not exist and this role may not create it; ask a DBA \
                         to run:\n\n{ddl}\n\nand to GRANT {} ON {tq} TO <this role>",
                        needed.join(", "),
                    ),
                ),
            })
        };
        if let Err(e) = result {
            out.add(Level::Fail, format!("{e:#}"));
        }
    }
}

fn check_types(f: &FlushConfig, facts: &TableFacts, out: &mut Findings) {
    let target = &f.target;
    let (t, code, count) = (
        &target.table.name,
        &target.code_column.name,
        &target.count_column.name,
    );
    let count_type = facts.count_type.as_str();
    match count_type {
        "bigint" | "numeric" => out.add(Level::Good, format!("`{t}.{count}` is {count_type}")),
        "integer" | "smallint" => out.add(
            Level::Warn,
            format!(
                "`{t}.{count}` is {count_type}: it holds at most {}; a batch that would pass \
                 it waits in its journal until the column is widened: ALTER TABLE {} ALTER \
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
            format!("`{t}.{count}` is {other}, not a number the hits can be added to; use bigint"),
        ),
    }
    let code_type = facts.code_type.as_str();
    if code_type == "text" || code_type.starts_with("character") {
        out.add(Level::Good, format!("`{t}.{code}` is {code_type}"));
    } else {
        out.add(
            Level::Fail,
            format!("`{t}.{code}` is {code_type}; codes are text: use text or varchar"),
        );
    }
}

fn check_redis(redis: &RedisConfig, f: &FlushConfig, out: &mut Findings) {
    let mut source = match RedisSource::connect(redis, &f.source) {
        Ok(s) => s,
        Err(e) => return out.add(Level::Fail, format!("{e:#}")),
    };
    let facts = match source.facts() {
        Ok(f) => f,
        Err(e) => return out.add(Level::Fail, format!("{e:#}")),
    };
    out.add(
        Level::Good,
        format!(
            "Redis at {}: connected (version {})",
            redis.display, facts.version
        ),
    );
    match facts.scripting {
        Ok(()) => out.add(
            Level::Good,
            "this Redis user may run Lua scripts (each claim is one)",
        ),
        Err(e) => out.add(
            Level::Fail,
            format!(
                "this Redis user may not run Lua scripts, and each claim is one ({e}); allow \
                 EVAL, EVALSHA and SCRIPT in its ACL (README, Deployment)"
            ),
        ),
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
    match source.journals(false) {
        Ok(j) if j.is_empty() => out.add(Level::Good, "no journals pending from failed runs"),
        Ok(j) => out.add(
            Level::Warn,
            format!(
                "{} journals pending from failed runs; the next run applies them first \
                 (`status` shows them)",
                j.len()
            ),
        ),
        Err(e) => out.add(Level::Fail, format!("{e:#}")),
    }
}
