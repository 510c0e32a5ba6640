//! Reaching a Redis server: a connection with the configured timeouts and TLS, checked with a
//! PING, whose failure names the server and the settings to check; and the few commands every
//! backend sends the same way (SCAN, INFO).

use anyhow::{Context, Result};
use redis::Connection;

use crate::config::RedisConfig;

/// A connection to the configured server.
pub fn connect(cfg: &RedisConfig) -> Result<Connection> {
    connect_to(cfg, &cfg.info, &cfg.display)
}

/// A connection to `info` (the server, or a cluster node) with `cfg`'s timeouts and TLS,
/// checked with a PING, so that a wrong password or a server that is not Redis is reported
/// as a connection problem, naming the server (`name`) and the variables to check, rather
/// than half-way through the flush.
pub fn connect_to(
    cfg: &RedisConfig,
    info: &redis::ConnectionInfo,
    name: &str,
) -> Result<Connection> {
    let fail = || {
        format!(
            "could not connect to Redis at {name}: check `REDIS_URL` or `REDIS_HOST`/`REDIS_PORT` \
             (and `REDIS_USERNAME`/`REDIS_PASSWORD` if it asks for them{})",
            if cfg.tls.is_some() {
                "; for TLS, `REDIS_CA_FILE` names the CA that signed the server's certificate, \
                 and `REDIS_CLIENT_CERT_FILE`/`REDIS_CLIENT_KEY_FILE` a client certificate if \
                 the server asks for one"
            } else {
                ""
            }
        )
    };
    let client = match &cfg.tls {
        Some(certs) => redis::Client::build_with_tls(info.clone(), certs.clone()),
        None => redis::Client::open(info.clone()),
    }
    .with_context(fail)?;
    let mut con = client
        .get_connection_with_timeout(cfg.connect_timeout)
        .with_context(fail)?;
    con.set_read_timeout(Some(cfg.command_timeout))
        .with_context(fail)?;
    con.set_write_timeout(Some(cfg.command_timeout))
        .with_context(fail)?;
    redis::cmd("PING")
        .query::<()>(&mut con)
        .with_context(fail)?;
    Ok(con)
}

/// One `SCAN cursor MATCH pattern COUNT count` on `con`: the next cursor and the keys.
pub fn scan_step(
    con: &mut Connection,
    cursor: u64,
    pattern: &[u8],
    count: usize,
) -> redis::RedisResult<(u64, Vec<Vec<u8>>)> {
    redis::cmd("SCAN")
        .arg(cursor)
        .arg("MATCH")
        .arg(pattern)
        .arg("COUNT")
        .arg(count)
        .query(con)
}

/// Escapes glob characters so that a literal prefix matches only itself in `SCAN MATCH`.
pub fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// What `check` reads off a Redis server. `None`: the server would not say (a managed Redis
/// or an ACL user may not run CONFIG).
pub struct RedisFacts {
    pub version: String,
    pub aof: Option<bool>,
    /// `CONFIG GET save`: empty when RDB snapshots are off.
    pub rdb_save: Option<String>,
    pub maxmemory_policy: Option<String>,
    /// Whether this user may run Lua scripts (every claim is one); the error otherwise.
    pub scripting: std::result::Result<(), String>,
}

/// The server's version, persistence, eviction policy, and whether we may run scripts.
/// `name` is the server as errors name it.
pub fn facts(con: &mut Connection, name: &str) -> Result<RedisFacts> {
    let info: String = redis::cmd("INFO")
        .arg("server")
        .arg("persistence")
        .arg("memory")
        .query(con)
        .or_else(|_| redis::cmd("INFO").query(con)) // before Redis 7: one section
        .with_context(|| format!("Redis at {name}: INFO failed"))?;
    let config = |con: &mut Connection, name: &str| -> Option<String> {
        let pair: Vec<String> = redis::cmd("CONFIG").arg("GET").arg(name).query(con).ok()?;
        pair.into_iter().nth(1)
    };
    let aof = config(con, "appendonly")
        .map(|v| v == "yes")
        .or_else(|| info_field(&info, "aof_enabled").map(|v| v == "1"));
    let rdb_save = config(con, "save");
    let scripting = redis::cmd("EVAL")
        .arg("return 1")
        .arg(0)
        .query::<i64>(con)
        .map(|_| ())
        .map_err(|e| e.to_string());
    Ok(RedisFacts {
        version: info_field(&info, "redis_version").unwrap_or_else(|| "unknown".into()),
        aof,
        rdb_save,
        maxmemory_policy: info_field(&info, "maxmemory_policy"),
        scripting,
    })
}

/// A field of `INFO` output (`name:value` lines).
fn info_field(info: &str, name: &str) -> Option<String> {
    info.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(|v| v.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(glob_escape("a*b?c[d]e\\"), "a\\*b\\?c\\[d\\]e\\\\");
        assert_eq!(
            glob_escape("redis_flusher:journal:"),
            "redis_flusher:journal:"
        );
    }
}
