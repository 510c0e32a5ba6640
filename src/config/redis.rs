//! How to reach Redis: `REDIS_URL` or the `REDIS_*` parts, a password from the environment,
//! TLS certificates, a cluster's seeds; and a name for the server that is safe to log.

use std::time::Duration;

use redis::IntoConnectionInfo;

use super::env::secret_env;
use super::usage::usage;
use super::{empty, named};
use crate::cli::ConnArgs;

/// The sentinels to ask for the master, and its name there.
#[derive(Clone)]
pub struct Sentinel {
    pub nodes: Vec<redis::ConnectionInfo>,
    pub master: String,
}

/// How to reach Redis.
#[derive(Clone)]
pub struct RedisConfig {
    pub info: redis::ConnectionInfo,
    /// Certificates for a TLS connection (`rediss://` or `REDIS_TLS`); None for plain TCP.
    pub tls: Option<redis::TlsCertificates>,
    /// A Redis Cluster (`--redis-cluster`); `seeds` are the nodes to ask for its topology.
    pub cluster: bool,
    pub seeds: Vec<redis::ConnectionInfo>,
    /// Found through Redis Sentinel: `info` has the master's settings but not its address.
    pub sentinel: Option<Sentinel>,
    /// `--redis-wait-replicas`: replicas that must have a batch's claims before its COMMIT.
    pub wait_replicas: u32,
    /// `host:port db N`, without credentials: safe for logs and errors.
    pub display: String,
    pub connect_timeout: Duration,
    /// Read/write timeout of every command.
    pub command_timeout: Duration,
}

impl RedisConfig {
    pub(crate) fn from_args(c: &ConnArgs) -> anyhow::Result<RedisConfig> {
        let password = secret_env("REDIS_PASSWORD")?;
        if let Some(url) = c.redis_url.as_deref().filter(|u| u.trim().is_empty()) {
            return Err(empty("--redis-url", "REDIS_URL", url));
        }
        // Several seeds, comma-separated, only for a cluster: a single URL's password may
        // hold a comma.
        let url = c.redis_url.as_deref().unwrap_or_default();
        let urls: Vec<&str> = if c.redis_cluster {
            url.split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .collect()
        } else {
            Some(url.trim())
                .filter(|u| !u.is_empty())
                .into_iter()
                .collect()
        };
        // The parser's own message may quote the URL, password and all: say what is wrong in
        // our words instead, naming where the setting came from.
        let invalid = |url: &str, which: &str| {
            usage(format!(
                "{which}{} is not a valid Redis URL: {}; expected \
                 redis://[user:password@]host[:port][/db] (rediss:// for TLS)",
                named(
                    "--redis-url",
                    "REDIS_URL",
                    c.redis_url.as_deref().unwrap_or_default()
                ),
                redis_url_problem(url)
            ))
        };
        let mut seeds = Vec::new();
        for url in urls.iter().skip(1) {
            let seed = url
                .into_connection_info()
                .map_err(|_| invalid(url, "a seed in "))?;
            seeds.push(seed);
        }
        let info = match urls.first().copied() {
            Some(url) => {
                let info = url.into_connection_info().map_err(|_| invalid(url, ""))?;
                // A URL wins over the parts, but a URL without a password may still be
                // given one from `REDIS_PASSWORD` (as managed platforms hand them out).
                let mut settings = info.redis_settings().clone();
                if settings.password().is_none() {
                    if let Some(p) = password {
                        settings = settings.set_password(p);
                    }
                }
                // Likewise the ACL user, if the URL names none.
                if settings.username().is_none() {
                    if let Some(u) = c.redis_username.as_deref().filter(|u| !u.is_empty()) {
                        settings = settings.set_username(u);
                    }
                }
                info.set_redis_settings(settings)
            }
            None => {
                if c.redis_host.trim().is_empty() {
                    return Err(empty("--redis-host", "REDIS_HOST", &c.redis_host));
                }
                let mut settings = redis::RedisConnectionInfo::default().set_db(c.redis_db);
                if let Some(u) = c.redis_username.as_deref().filter(|u| !u.is_empty()) {
                    settings = settings.set_username(u);
                }
                if let Some(p) = password {
                    settings = settings.set_password(p);
                }
                redis_address(&c.redis_host, c.redis_port, c.redis_tls)
                    .map_err(|e| usage(format!("invalid Redis address: {e}")))?
                    .set_redis_settings(settings)
            }
        };
        let is_tls = matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. });
        if c.redis_cluster && info.redis_settings().db() != 0 {
            return Err(usage(
                "a Redis Cluster has only database 0: unset `REDIS_DB`",
            ));
        }
        // Every seed logs in as the first does.
        let settings = info.redis_settings().clone();
        let seeds: Vec<redis::ConnectionInfo> = std::iter::once(info.clone())
            .chain(
                seeds
                    .into_iter()
                    .map(|s| s.set_redis_settings(settings.clone())),
            )
            .collect();
        let files = [
            ("REDIS_CA_FILE", &c.redis_ca_file),
            ("REDIS_CLIENT_CERT_FILE", &c.redis_client_cert_file),
            ("REDIS_CLIENT_KEY_FILE", &c.redis_client_key_file),
        ];
        let tls = if is_tls {
            Some(
                crate::tls::redis_certs(
                    c.redis_ca_file.as_deref(),
                    c.redis_client_cert_file.as_deref(),
                    c.redis_client_key_file.as_deref(),
                )
                .map_err(|e| usage(format!("{e:#}")))?,
            )
        } else if let Some((var, _)) = files.iter().find(|(_, f)| f.is_some()) {
            return Err(usage(format!(
                "`{var}` is set but the Redis connection is not TLS: use a `rediss://` URL or \
                 `REDIS_TLS=true`"
            )));
        } else {
            None
        };
        let sentinel = match c.redis_sentinels.as_deref() {
            None => None,
            Some(list) => Some(sentinels(c, list, is_tls)?),
        };
        let display = if let Some(s) = &sentinel {
            format!(
                "master `{}` via sentinels {} db {}{}",
                s.master,
                s.nodes
                    .iter()
                    .map(|n| n.addr().to_string())
                    .collect::<Vec<_>>()
                    .join(","),
                info.redis_settings().db(),
                if is_tls { " (TLS)" } else { "" }
            )
        } else if c.redis_cluster {
            format!(
                "cluster {}",
                seeds
                    .iter()
                    .map(|s| s.addr().to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            )
        } else {
            format!(
                "{} db {}{}",
                info.addr(),
                info.redis_settings().db(),
                if is_tls { " (TLS)" } else { "" }
            )
        };
        Ok(RedisConfig {
            info,
            tls,
            cluster: c.redis_cluster,
            seeds,
            sentinel,
            wait_replicas: c.redis_wait_replicas,
            display,
            connect_timeout: Duration::from_secs(c.connect_timeout),
            command_timeout: Duration::from_secs(c.command_timeout),
        })
    }
}

/// What is wrong with a Redis URL the redis crate refused, said without any part of it but
/// its scheme (the rest may hold a password).
fn redis_url_problem(url: &str) -> String {
    let parsed = match url::Url::parse(url) {
        Ok(u) => u,
        Err(e) => return format!("it does not parse as a URL ({e})"),
    };
    let scheme = parsed.scheme();
    if !matches!(scheme, "redis" | "rediss" | "unix" | "redis+unix") {
        return format!("its scheme is `{scheme}`, not redis or rediss");
    }
    if scheme.starts_with("redis") && !scheme.ends_with("unix") {
        if parsed.host_str().is_none_or(str::is_empty) {
            return "it names no host (two slashes after the scheme: redis://host)".into();
        }
        let db = parsed.path().trim_start_matches('/');
        if !db.is_empty() && db.parse::<i64>().is_err() {
            return "the database after the host's `/` is not a number".into();
        }
    }
    "the redis crate refused it".into()
}

/// The sentinels `REDIS_SENTINELS` lists (`host:port`, comma-separated), reached over TLS when
/// Redis is, logging in as `REDIS_SENTINEL_USERNAME`/`REDIS_SENTINEL_PASSWORD` if set.
fn sentinels(c: &ConnArgs, list: &str, tls: bool) -> anyhow::Result<Sentinel> {
    if c.redis_cluster {
        return Err(usage(
            "`REDIS_SENTINELS` and `REDIS_CLUSTER` do not go together: a Redis Cluster finds \
             its own masters",
        ));
    }
    if c.redis_url.as_deref().is_some_and(|u| !u.trim().is_empty()) {
        return Err(usage(
            "`REDIS_SENTINELS` finds the master, so `REDIS_URL` would name it twice: unset \
             `REDIS_URL` and give the master's `REDIS_PASSWORD`, `REDIS_USERNAME`, `REDIS_DB` \
             and `REDIS_TLS` instead",
        ));
    }
    if c.redis_sentinel_master.trim().is_empty() {
        return Err(usage(
            "`REDIS_SENTINEL_MASTER` is empty: name the master (`mymaster`)",
        ));
    }
    let password = secret_env("REDIS_SENTINEL_PASSWORD")?;
    let mut settings = redis::RedisConnectionInfo::default();
    if let Some(u) = c
        .redis_sentinel_username
        .as_deref()
        .filter(|u| !u.is_empty())
    {
        settings = settings.set_username(u);
    }
    if let Some(p) = password {
        settings = settings.set_password(p);
    }
    let mut nodes = Vec::new();
    for node in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let bare = node
            .strip_prefix("redis://")
            .or_else(|| node.strip_prefix("rediss://"))
            .unwrap_or(node)
            .trim_end_matches('/');
        let bad = || {
            usage(format!(
                "`REDIS_SENTINELS`: {node:?} is not host:port (e.g. 10.0.0.5:26379)"
            ))
        };
        let (host, port) = bare.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(bad());
        }
        let addr = redis_address(host, port, tls).map_err(|_| bad())?;
        nodes.push(addr.set_redis_settings(settings.clone()));
    }
    if nodes.is_empty() {
        return Err(usage(
            "`REDIS_SENTINELS` is empty: list the sentinels as host:port,host:port",
        ));
    }
    Ok(Sentinel {
        nodes,
        master: c.redis_sentinel_master.trim().to_owned(),
    })
}

/// The address of a Redis server at `host:port`, over TLS when `tls` (an IPv6 host is
/// bracketed, as a URL needs).
pub(crate) fn redis_address(
    host: &str,
    port: u16,
    tls: bool,
) -> redis::RedisResult<redis::ConnectionInfo> {
    if tls {
        // A URL, since the TLS address's parameters cannot be built by hand.
        let h = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_owned()
        };
        format!("rediss://{h}:{port}").into_connection_info()
    } else {
        redis::ConnectionAddr::Tcp(host.to_owned(), port).into_connection_info()
    }
}
