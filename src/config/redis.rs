//! How to reach Redis: `REDIS_URL` or the `REDIS_*` parts, a password from the environment,
//! TLS certificates, a cluster's seeds; and a name for the server that is safe to log.

use std::time::Duration;

use redis::IntoConnectionInfo;

use super::env::secret_env;
use super::usage::usage;
use crate::cli::ConnArgs;

/// How to reach Redis.
#[derive(Clone)]
pub struct RedisConfig {
    pub info: redis::ConnectionInfo,
    /// Certificates for a TLS connection (`rediss://` or `REDIS_TLS`); None for plain TCP.
    pub tls: Option<redis::TlsCertificates>,
    /// A Redis Cluster (`--redis-cluster`); `seeds` are the nodes to ask for its topology.
    pub cluster: bool,
    pub seeds: Vec<redis::ConnectionInfo>,
    /// `host:port db N`, without credentials: safe for logs and errors.
    pub display: String,
    pub connect_timeout: Duration,
    /// Read/write timeout of every command.
    pub command_timeout: Duration,
}

impl RedisConfig {
    pub fn from_args(c: &ConnArgs) -> anyhow::Result<RedisConfig> {
        let password = secret_env("REDIS_PASSWORD")?;
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
        let mut seeds = Vec::new();
        for url in urls.iter().skip(1) {
            let seed = url.into_connection_info().map_err(|_| {
                usage("a seed in `REDIS_URL` is not a valid Redis URL (expected redis://host:port)")
            })?;
            seeds.push(seed);
        }
        let info = match urls.first().copied() {
            Some(url) => {
                // The parser's own message may quote the URL, password and all: say it in
                // our words instead.
                let info = url.into_connection_info().map_err(|_| {
                    usage(
                        "`REDIS_URL` is not a valid Redis URL \
                         (expected redis://[user:password@]host[:port][/db])",
                    )
                })?;
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
                if c.redis_host.is_empty() {
                    return Err(usage("`REDIS_HOST` is empty: set it or `REDIS_URL`"));
                }
                let mut settings = redis::RedisConnectionInfo::default().set_db(c.redis_db);
                if let Some(u) = c.redis_username.as_deref().filter(|u| !u.is_empty()) {
                    settings = settings.set_username(u);
                }
                if let Some(p) = password {
                    settings = settings.set_password(p);
                }
                let addr = if c.redis_tls {
                    // A URL, since the TLS address's parameters cannot be built by hand.
                    let host = if c.redis_host.contains(':') {
                        format!("[{}]", c.redis_host)
                    } else {
                        c.redis_host.clone()
                    };
                    format!("rediss://{host}:{}", c.redis_port).into_connection_info()
                } else {
                    redis::ConnectionAddr::Tcp(c.redis_host.clone(), c.redis_port)
                        .into_connection_info()
                };
                addr.map_err(|e| usage(format!("invalid Redis address: {e}")))?
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
        let display = if c.redis_cluster {
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
            display,
            connect_timeout: Duration::from_secs(c.connect_timeout.max(1)),
            command_timeout: Duration::from_secs(c.command_timeout.max(1)),
        })
    }
}
