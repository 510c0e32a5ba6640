//! What Redis must allow for a flush (scripts, the keys a run touches), and what will hurt
//! (persistence, eviction, pending journals).

use super::{Findings, Level};
use crate::config::FlushConfig;
use crate::redis::RedisSource;

/// What Redis must allow for a flush: scripts, and the keys a run touches (the counters, the
/// journals, the unknown-codes hash with `--keep-unknown`); with `all` (`check`), what will
/// hurt too: persistence, eviction, pending journals.
pub fn redis_checks(redis: &mut RedisSource, f: &FlushConfig, all: bool, out: &mut Findings) {
    let facts = match redis.facts() {
        Ok(f) => f,
        Err(e) => return out.failed("redis.facts", &e),
    };
    if all {
        out.add(
            Level::Good,
            "redis.version",
            format!("Redis version {}", facts.version),
        );
    }
    match facts.scripting {
        Ok(()) => {
            if all {
                out.add(
                    Level::Good,
                    "redis.scripting",
                    "this Redis user may run Lua scripts (each claim is one)",
                );
            }
        }
        Err(e) => out.add(
            Level::Fail,
            "redis.scripting",
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
            "redis.acl",
            format!(
                "this Redis user may not touch every key a run needs ({}): its ACL needs \
                 `~{}*` and `~{}*`{} (docs/deployment.md, Least privilege)",
                crate::sys::error::text(&e),
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
        (Some(true), _) => out.add(Level::Good, "redis.persistence", "AOF persistence is on"),
        (Some(false), Some(true)) => out.add(
            Level::Warn,
            "redis.persistence",
            format!(
                "only RDB snapshots are on: a Redis restart loses the counts since the last \
                 snapshot; {AOF}"
            ),
        ),
        (Some(false), Some(false)) => out.add(
            Level::Warn,
            "redis.persistence",
            format!(
                "neither AOF nor RDB persistence is on: counts die with a Redis restart; {AOF}"
            ),
        ),
        (Some(false), None) => out.add(
            Level::Warn,
            "redis.persistence",
            format!(
                "AOF is off and this user may not read the RDB settings (CONFIG GET save): \
                 unless snapshots are on, counts die with a Redis restart; {AOF}"
            ),
        ),
        (None, _) => out.add(
            Level::Warn,
            "redis.persistence",
            "could not read the persistence settings (INFO or CONFIG refused); make sure AOF \
             is on (appendonly yes)",
        ),
    }
    match facts.maxmemory_policy.as_deref() {
        Some(p) if p.starts_with("allkeys-") => out.add(
            Level::Warn,
            "redis.eviction",
            format!(
                "maxmemory-policy is {p}: under memory pressure Redis evicts counters, and \
                 their hits are lost; use noeviction (or volatile-*: counters have no TTL)"
            ),
        ),
        Some(p) => out.add(
            Level::Good,
            "redis.eviction",
            format!("maxmemory-policy is {p}: counters are never evicted"),
        ),
        None => out.add(
            Level::Warn,
            "redis.eviction",
            "could not read maxmemory-policy; make sure it is not allkeys-*, which evicts \
             counters",
        ),
    }
    match redis.journals(false) {
        Ok(j) if j.is_empty() => out.add(
            Level::Good,
            "redis.journals",
            "no journals pending from failed runs",
        ),
        Ok(j) => out.add(
            Level::Warn,
            "redis.journals",
            format!(
                "{} pending from failed runs; the next run applies them first (`status` shows \
                 them)",
                crate::report::count(j.len() as u64, "journal", "journals")
            ),
        ),
        Err(e) => out.failed("redis.journals", &e),
    }
}
