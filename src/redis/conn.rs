//! Reaching a Redis server: a connection with the configured timeouts and TLS, checked with a
//! PING, whose failure names the server and the settings to check; the master Redis Sentinel
//! names; the check that a server is a master, not a replica; and the few commands every
//! backend sends the same way (SCAN, INFO).
//!
//! Sentinel is a way to find the server, nothing more: what is claimed there, and how, is the
//! single-Redis backend's. The `redis` crate's own Sentinel client connects without timeouts,
//! which a hung sentinel would turn into a hung run; here every sentinel and master is reached
//! with the configured ones.

use anyhow::{Context, Result};
use redis::Connection;

use crate::config::{redis_address, RedisConfig, Sentinel, UsageError};

/// A connection to the configured server (the master Sentinel names, if it is found that
/// way), checked to be a master: a replica would refuse the claims' writes, or take them and
/// lose them.
pub fn connect(cfg: &RedisConfig) -> Result<Connection> {
    let (mut con, name) = match &cfg.sentinel {
        Some(s) => {
            let (con, addr) = master_from_sentinels(cfg, s)?;
            (con, format!("{addr} (master `{}`)", s.master))
        }
        None => (
            connect_to(cfg, &cfg.info, &cfg.display)?,
            cfg.display.clone(),
        ),
    };
    if let Some(Role::Replica(of)) = role(&mut con) {
        return Err(UsageError(format!(
            "Redis at {name} is a replica (of {of}), and claims must be made on the master: \
             point `REDIS_URL` (or `REDIS_HOST`/`REDIS_PORT`) at the master{}",
            if cfg.sentinel.is_some() {
                "; the sentinels named it as the master (a failover in progress?): try again"
            } else {
                ", or let Sentinel find it (`REDIS_SENTINELS`)"
            }
        ))
        .into());
    }
    Ok(con)
}

/// What a server says it is (`INFO replication`): None when it will not say (an ACL without
/// INFO), and then it is taken for what it was configured as.
enum Role {
    Master,
    /// A replica, of `host:port`.
    Replica(String),
}

fn role(con: &mut Connection) -> Option<Role> {
    let info: String = redis::cmd("INFO").arg("replication").query(con).ok()?;
    match info_field(&info, "role").as_deref() {
        Some("master") => Some(Role::Master),
        Some("slave") | Some("replica") => Some(Role::Replica(format!(
            "{}:{}",
            info_field(&info, "master_host").unwrap_or_default(),
            info_field(&info, "master_port").unwrap_or_default()
        ))),
        _ => None,
    }
}

/// Asks each sentinel in turn for the master's address, and connects to the first it names
/// that answers as a master. Returns the connection and the master's `host:port`.
fn master_from_sentinels(cfg: &RedisConfig, s: &Sentinel) -> Result<(Connection, String)> {
    let mut tried = Vec::new();
    // Attempts refused for a setting (a password a sentinel or the master refused).
    let mut refused = 0;
    let mut note = |tried: &mut Vec<String>, e: &anyhow::Error| {
        refused += usize::from(e.downcast_ref::<UsageError>().is_some());
        tried.push(crate::sys::error::text(e));
    };
    for node in &s.nodes {
        let sentinel = node.addr().to_string();
        let named =
            connect_to(cfg, node, &format!("{sentinel} (a sentinel)")).and_then(|mut con| {
                redis::cmd("SENTINEL")
                    .arg("GET-MASTER-ADDR-BY-NAME")
                    .arg(&s.master)
                    .query::<Option<(String, u16)>>(&mut con)
                    .with_context(|| {
                        format!("sentinel {sentinel}: SENTINEL GET-MASTER-ADDR-BY-NAME failed")
                    })
            });
        let (host, port) = match named {
            Ok(Some(addr)) => addr,
            Ok(None) => {
                tried.push(format!("{sentinel} knows no master `{}`", s.master));
                continue;
            }
            Err(e) => {
                note(&mut tried, &e);
                continue;
            }
        };
        let addr = format!("{host}:{port}");
        let info = master_info(cfg, &host, port)?;
        match connect_to(
            cfg,
            &info,
            &format!("{addr} (master `{}` per sentinel {sentinel})", s.master),
        ) {
            Ok(mut con) => match role(&mut con) {
                Some(Role::Replica(of)) => tried.push(format!(
                    "{sentinel} named {addr}, which is a replica of {of}"
                )),
                _ => return Ok((con, addr)),
            },
            Err(e) => note(&mut tried, &e),
        }
    }
    let message = format!(
        "no sentinel named a master `{}` that answers as one ({}): check `REDIS_SENTINELS`, \
         `REDIS_SENTINEL_MASTER`, and `REDIS_SENTINEL_USERNAME`/`REDIS_SENTINEL_PASSWORD` if \
         the sentinels ask for them",
        s.master,
        tried.join("; ")
    );
    // Every one refused who we are: a password to fix, not a failover to wait for.
    if refused > 0 && refused == tried.len() {
        return Err(UsageError(message).into());
    }
    Err(anyhow::anyhow!(message))
}

/// The master at `host:port`, with the master's settings (user, password, db) and TLS.
fn master_info(cfg: &RedisConfig, host: &str, port: u16) -> Result<redis::ConnectionInfo> {
    Ok(redis_address(host, port, cfg.tls.is_some())
        .with_context(|| format!("the sentinels named a master {host}:{port} we cannot address"))?
        .set_redis_settings(cfg.info.redis_settings().clone()))
}

/// A connection to `info` (the server, or a cluster node) with `cfg`'s timeouts and TLS,
/// checked with a PING, so that a wrong password or a server that is not Redis is reported
/// as a connection problem, naming the server (`name`) and the variables to check, rather
/// than half-way through the flush.
pub(crate) fn connect_to(
    cfg: &RedisConfig,
    info: &redis::ConnectionInfo,
    name: &str,
) -> Result<Connection> {
    let settings = || {
        format!(
            "check `REDIS_URL` or `REDIS_HOST`/`REDIS_PORT` (and `REDIS_USERNAME`/\
             `REDIS_PASSWORD` if it asks for them{})",
            if cfg.tls.is_some() {
                "; for TLS, `REDIS_CA_FILE` names the CA that signed the server's certificate, \
                 and `REDIS_CLIENT_CERT_FILE`/`REDIS_CLIENT_KEY_FILE` a client certificate if \
                 the server asks for one"
            } else {
                ""
            }
        )
    };
    // What happened first, then what to do.
    let fail = || format!("could not connect to Redis at {name}: {}", settings());
    let client = match &cfg.tls {
        Some(certs) => redis::Client::build_with_tls(info.clone(), certs.clone()),
        None => redis::Client::open(info.clone()),
    }
    .with_context(fail)?;
    // Refused for who we are, or a name that does not resolve: a person must change a
    // setting before any run can work.
    let setup = |e: redis::RedisError| -> anyhow::Error {
        let auth = e.kind() == redis::ErrorKind::AuthenticationFailed;
        let text = crate::sys::error::text(&anyhow::Error::new(e));
        let unknown_host = crate::sys::error::unknown_host(&text);
        let message = format!(
            "could not connect to Redis at {name}: {text}; {}",
            if unknown_host {
                "the host name does not resolve: check `REDIS_HOST` (or the host in \
                 `REDIS_URL`)"
                    .to_owned()
            } else {
                settings()
            }
        );
        if auth
            || unknown_host
            || text.contains("NOAUTH")
            || text.contains("WRONGPASS")
            || text.contains("certificate")
        {
            UsageError(message).into()
        } else {
            anyhow::anyhow!(message)
        }
    };
    let mut con = match client.get_connection_with_timeout(cfg.connect_timeout) {
        Ok(con) => con,
        Err(e) if cfg.tls.is_some() && (e.is_timeout() || timed_out(&e)) => {
            // A setting to change, not a server to wait for: exit 2.
            return Err(UsageError(format!(
                "the TLS handshake with Redis at {name} got no answer in {} s: that is likely \
                 not a TLS port (a plain Redis port stays silent to a TLS handshake); use a \
                 redis:// URL (no REDIS_TLS), or the port of the server's `tls-port`",
                cfg.connect_timeout.as_secs()
            ))
            .into());
        }
        Err(e) => return Err(setup(e)),
    };
    con.set_read_timeout(Some(cfg.command_timeout))
        .with_context(fail)?;
    con.set_write_timeout(Some(cfg.command_timeout))
        .with_context(fail)?;
    redis::cmd("PING").query::<()>(&mut con).map_err(setup)?;
    Ok(con)
}

/// Whether `e` is a read that timed out (a socket timeout reads as "would block").
fn timed_out(e: &redis::RedisError) -> bool {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .is_some_and(|io| {
            matches!(
                io.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            )
        })
        || e.to_string().contains("os error 11")
}

/// One `SCAN cursor MATCH pattern COUNT count` on `con`: the next cursor and the keys.
pub(crate) fn scan_step(
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

/// Walks a whole SCAN of `pattern` on `con` (1,000 slots a step), handing each step's keys to
/// `each`. For the small walks (journal keys, a demo's keys); a run's own SCAN goes a step at a
/// time between claims (`flush/scan.rs`).
pub(crate) fn scan_all(
    con: &mut Connection,
    pattern: &[u8],
    mut each: impl FnMut(Vec<Vec<u8>>) -> Result<()>,
) -> Result<()> {
    let mut cursor = 0;
    loop {
        let (next, keys) = scan_step(con, cursor, pattern, 1000)?;
        each(keys)?;
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

/// Escapes glob characters so that a literal prefix matches only itself in `SCAN MATCH`.
pub(crate) fn glob_escape(s: &str) -> String {
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
