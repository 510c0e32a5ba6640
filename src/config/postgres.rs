//! How to reach PostgreSQL: `DATABASE_URL` or the `DB_*` parts, a password from the
//! environment, libpq's `sslmode`; and a name for the server that is safe to log.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use postgres::config::Host;

use super::env::secret_env;
use super::usage::usage;
use super::{empty, named};
use crate::cli::ConnArgs;

/// How to reach PostgreSQL.
#[derive(Clone)]
pub struct PgConfig {
    pub config: postgres::Config,
    /// The TLS connector, checking what `sslmode` asks for (`tls.rs`).
    pub tls: tokio_postgres_rustls::MakeRustlsConnect,
    /// `user@host:port/dbname`, without the password: safe for logs and errors.
    pub display: String,
    pub statement_timeout: Duration,
    /// How long a statement waits for a row lock (`lock_timeout`).
    pub lock_timeout: Duration,
    /// Every host is a Unix socket directory: no TLS (libpq never uses it over a socket).
    pub unix_socket: bool,
}

impl PgConfig {
    pub(crate) fn from_args(c: &ConnArgs) -> anyhow::Result<PgConfig> {
        let password = secret_env("DB_PASSWORD")?;
        let mut tls = crate::tls::PgTls {
            mode: c
                .db_sslmode
                .as_deref()
                .filter(|m| !m.is_empty())
                .map(|m| {
                    m.parse()
                        .map_err(|e: String| usage(format!("`DB_SSLMODE`: {e}")))
                })
                .transpose()?,
            rootcert: c.db_sslrootcert.clone(),
            cert: None,
            key: None,
        };
        if let Some(url) = &c.database_url {
            if url.trim().is_empty() {
                return Err(empty("--database-url", "DATABASE_URL", url));
            }
        }
        let url_given = c.database_url.is_some();
        let mut config = match c.database_url.as_deref() {
            // The parser's messages name the option, never its value, so they are safe.
            Some(url) => {
                let name = named("--database-url", "DATABASE_URL", url);
                let (url, in_url) = super::conninfo::split_conninfo(url)
                    .map_err(|e| usage(format!("{name}: {e}")))?;
                tls.mode = in_url.mode.or(tls.mode);
                tls.rootcert = in_url.rootcert.or(tls.rootcert);
                tls.cert = in_url.cert;
                tls.key = in_url.key;
                postgres::Config::from_str(&url).map_err(|e| {
                    usage(format!(
                        "{name} is not a valid PostgreSQL URL (expected \
                         postgres://user[:password]@host[:port]/dbname, or libpq's \
                         `host=… dbname=…`): {e}"
                    ))
                })?
            }
            None => {
                for (flag, var, value) in [
                    ("--db-host", "DB_HOST", &c.db_host),
                    ("--db-name", "DB_NAME", &c.db_name),
                ] {
                    if value.trim().is_empty() {
                        return Err(empty(flag, var, value));
                    }
                }
                let mut config = postgres::Config::new();
                config.host(&c.db_host).port(c.db_port).dbname(&c.db_name);
                config
            }
        };
        if let Some(user) = c.db_user.as_deref().filter(|u| u.trim().is_empty()) {
            return Err(empty("--db-user", "DB_USER", user));
        }
        if config.get_password().is_none() {
            if let Some(p) = password {
                config.password(p);
            }
        }
        if config.get_user().is_none() {
            // As the Python flusher did for the parts; as psql does for a URL.
            let user = match (&c.db_user, url_given) {
                (Some(u), _) => u.clone(),
                (None, false) => "postgres".to_owned(),
                (None, true) => os_user(),
            };
            config.user(&user);
        }
        if config.get_hosts().is_empty() {
            // libpq's default: the local socket directory (Debian's, else the usual one).
            let dir = ["/var/run/postgresql", "/tmp"]
                .into_iter()
                .find(|d| Path::new(d).is_dir())
                .unwrap_or("/tmp");
            config.host(dir);
        }
        let unix_socket = config
            .get_hosts()
            .iter()
            .all(|h| matches!(h, Host::Unix(_)));
        let mode = if unix_socket {
            // libpq ignores sslmode over a socket: there is nothing to encrypt.
            crate::tls::SslMode::Disable
        } else {
            tls.mode.unwrap_or(crate::tls::SslMode::Prefer)
        };
        config.ssl_mode(mode.for_crate());
        let connector = crate::tls::pg_connector(&tls).map_err(|e| usage(format!("{e:#}")))?;
        config
            .connect_timeout(Duration::from_secs(c.connect_timeout))
            .application_name("redis-flusher")
            // Notices ("relation … already exists, skipping") are not news to an operator.
            .notice_callback(|n| log::debug!("PostgreSQL notice: {}", n.message()));
        let host = match config.get_hosts().first() {
            Some(Host::Tcp(h)) => h.clone(),
            Some(Host::Unix(p)) => p.display().to_string(),
            None => "localhost".to_owned(),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let user = config.get_user().unwrap_or_default();
        let display = format!(
            "{user}@{host}:{port}/{}{}",
            config.get_dbname().unwrap_or(user),
            match mode {
                crate::tls::SslMode::Disable | crate::tls::SslMode::Prefer => String::new(),
                m => format!(" (sslmode={})", m.as_str()),
            }
        );
        Ok(PgConfig {
            config,
            tls: connector,
            display,
            statement_timeout: Duration::from_secs(c.statement_timeout),
            lock_timeout: Duration::from_secs(c.lock_timeout),
            unix_socket,
        })
    }
}

/// The name of the user this process runs as, as libpq takes it for a URL without one.
fn os_user() -> String {
    whoami::username()
        .ok()
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "postgres".into())
}
