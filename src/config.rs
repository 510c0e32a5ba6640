//! Turns flags and environment into a validated `Config`: defaults, identifier checks,
//! the pattern rule, and redacted names for the servers that are safe to log.
//!
//! Every problem found here is a [`UsageError`] (exit code 2); nothing here connects.
//! Passwords are read from the environment (`REDIS_PASSWORD`, `DB_PASSWORD`, or the files
//! `REDIS_PASSWORD_FILE`, `DB_PASSWORD_FILE` name), never from flags, and never appear in a
//! `Display` of anything in this module.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use redis::IntoConnectionInfo;

use crate::cli::{ConnArgs, Statement, TargetArgs};

/// A mistake in flags, environment or `.env`: the run did not start. Exit code 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

fn usage(msg: impl Into<String>) -> anyhow::Error {
    UsageError(msg.into()).into()
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
    /// `host:port db N`, without credentials: safe for logs and errors.
    pub display: String,
    pub connect_timeout: Duration,
    /// Read/write timeout of every command.
    pub command_timeout: Duration,
}

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
}

/// A table or column name, checked and quoted for SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ident {
    /// As the user wrote it (for messages).
    pub name: String,
    /// Double-quoted, each part of `schema.table` on its own: safe to splice into SQL.
    pub quoted: String,
}

impl Ident {
    /// Accepts `name` or `schema.name`, each part a plain identifier of at most 63 bytes.
    pub fn parse(what: &str, value: &str) -> anyhow::Result<Ident> {
        let parts: Vec<&str> = value.split('.').collect();
        let plain = |p: &str| {
            !p.is_empty()
                && p.len() <= 63
                && p.chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
        };
        if parts.len() > 2 || !parts.iter().all(|p| plain(p)) {
            return Err(usage(format!(
                "`{what}` must be a plain SQL name (letters, digits, `_`, at most 63 bytes, \
                 optionally `schema.name`), got {value:?}"
            )));
        }
        let quoted = parts
            .iter()
            .map(|p| format!("\"{p}\""))
            .collect::<Vec<_>>()
            .join(".");
        Ok(Ident {
            name: value.to_owned(),
            quoted,
        })
    }
}

/// What to flush and how. Borrowed by the flush; knows nothing about connections.
#[derive(Debug, Clone)]
pub struct FlushConfig {
    /// The literal prefix of the pattern; a key's code is the key minus this.
    pub prefix: Vec<u8>,
    /// The pattern for `SCAN MATCH`, with the prefix's glob characters escaped.
    pub scan_match: Vec<u8>,
    pub table: Ident,
    pub code_column: Ident,
    pub count_column: Ident,
    pub ledger_table: Ident,
    pub runs_table: Ident,
    pub ledger_days: u32,
    pub batch_size: usize,
    pub claim_size: usize,
    pub statement: Statement,
    pub keep_unknown: bool,
    pub unknown_key: String,
    pub journal_prefix: String,
}

/// Splits `prefix*` into its prefix. Anything but a non-empty literal prefix and one trailing
/// `*` is refused: the code must be exactly "key minus prefix".
pub fn parse_pattern(pattern: &str) -> anyhow::Result<String> {
    let Some(prefix) = pattern.strip_suffix('*') else {
        return Err(usage(format!(
            "`--pattern` must end in one `*` (like `url_hits:*`), got {pattern:?}"
        )));
    };
    if prefix.is_empty() {
        return Err(usage(
            "`--pattern` needs a literal prefix before the `*` (like `url_hits:*`): \
             `*` alone would flush every key in Redis",
        ));
    }
    if let Some(c) = prefix
        .chars()
        .find(|c| matches!(c, '*' | '?' | '[' | ']' | '\\'))
    {
        return Err(usage(format!(
            "`--pattern` may hold only one `*`, at the end, and no other glob character; \
             found {c:?} in {pattern:?}"
        )));
    }
    Ok(prefix.to_owned())
}

impl FlushConfig {
    pub fn from_args(t: &TargetArgs) -> anyhow::Result<FlushConfig> {
        let prefix = parse_pattern(&t.pattern)?;
        // Neither a journal nor the unknown hash may ever be scanned as a counter: that would
        // flush our own bookkeeping into the table. A journal key is the journal prefix and a
        // batch id, so neither prefix may start with the other (`url_` and `url_1*` would
        // match journal `url_19a…`).
        if t.journal_prefix.is_empty()
            || t.journal_prefix.starts_with(&prefix)
            || prefix.starts_with(&t.journal_prefix)
        {
            return Err(usage(format!(
                "`--journal-prefix` {:?} must be non-empty, and neither it nor the pattern's \
                 prefix {prefix:?} may start with the other",
                t.journal_prefix
            )));
        }
        if t.unknown_key.starts_with(&prefix) || t.unknown_key.starts_with(&t.journal_prefix) {
            return Err(usage(format!(
                "`--unknown-key` {:?} must not match `--pattern` or `--journal-prefix`",
                t.unknown_key
            )));
        }
        Ok(FlushConfig {
            scan_match: format!("{prefix}*").into_bytes(),
            prefix: prefix.into_bytes(),
            table: Ident::parse("--table", &t.table)?,
            code_column: Ident::parse("--code-column", &t.code_column)?,
            count_column: Ident::parse("--count-column", &t.count_column)?,
            ledger_table: Ident::parse("--ledger-table", &t.ledger_table)?,
            runs_table: Ident::parse("--runs-table", &t.runs_table)?,
            ledger_days: t.ledger_days,
            batch_size: t.batch_size as usize,
            claim_size: t.claim_size as usize,
            statement: t.statement,
            keep_unknown: t.keep_unknown,
            unknown_key: t.unknown_key.clone(),
            journal_prefix: t.journal_prefix.clone(),
        })
    }
}

/// Reads a secret that must not be given as a flag: the variable `name`, or the file that
/// `<name>_FILE` names (the container convention: Docker and Kubernetes secrets, systemd
/// credentials), less one trailing newline. Empty counts as unset, as the Python flusher
/// treated it. Both set is a usage error; so is a file that cannot be read. Messages name
/// the variable and the path, never the content.
fn secret_env(name: &str) -> anyhow::Result<Option<String>> {
    let direct = std::env::var(name).ok().filter(|v| !v.is_empty());
    let file_var = format!("{name}_FILE");
    let Some(path) = std::env::var_os(&file_var).filter(|p| !p.is_empty()) else {
        return Ok(direct);
    };
    if direct.is_some() {
        return Err(usage(format!(
            "both `{name}` and `{file_var}` are set: keep one"
        )));
    }
    let path = std::path::PathBuf::from(path);
    let bytes = std::fs::read(&path).map_err(|e| {
        usage(format!(
            "`{file_var}` names {}, which cannot be read: {e}",
            path.display()
        ))
    })?;
    let mut text = String::from_utf8(bytes).map_err(|_| {
        usage(format!(
            "`{file_var}` names {}, which is not UTF-8 text",
            path.display()
        ))
    })?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Ok(Some(text).filter(|t| !t.is_empty()))
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

impl PgConfig {
    pub fn from_args(c: &ConnArgs) -> anyhow::Result<PgConfig> {
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
        let mut config = match c.database_url.as_deref().filter(|u| !u.is_empty()) {
            // The parser's messages name the option, never its value, so they are safe.
            Some(url) => {
                let (url, in_url) = crate::tls::split_url(url)
                    .map_err(|e| usage(format!("`DATABASE_URL`: {e}")))?;
                tls.mode = in_url.mode.or(tls.mode);
                tls.rootcert = in_url.rootcert.or(tls.rootcert);
                tls.cert = in_url.cert;
                tls.key = in_url.key;
                postgres::Config::from_str(&url).map_err(|e| {
                    usage(format!(
                        "`DATABASE_URL` is not a valid PostgreSQL URL \
                     (expected postgres://user[:password]@host[:port]/dbname): {e}"
                    ))
                })?
            }
            None => {
                if c.db_host.is_empty() {
                    return Err(usage("`DB_HOST` is empty: set it or `DATABASE_URL`"));
                }
                let mut config = postgres::Config::new();
                config
                    .host(&c.db_host)
                    .port(c.db_port)
                    .dbname(&c.db_name)
                    .user(&c.db_user);
                config
            }
        };
        if config.get_password().is_none() {
            if let Some(p) = password {
                config.password(p);
            }
        }
        if config.get_user().is_none() {
            config.user(&c.db_user);
        }
        let mode = tls.mode.unwrap_or(crate::tls::SslMode::Prefer);
        config.ssl_mode(mode.for_crate());
        let connector = crate::tls::pg_connector(&tls).map_err(|e| usage(format!("{e:#}")))?;
        config
            .connect_timeout(Duration::from_secs(c.connect_timeout.max(1)))
            .application_name("redis-flusher")
            // Notices ("relation … already exists, skipping") are not news to an operator.
            .notice_callback(|n| log::debug!("PostgreSQL notice: {}", n.message()));
        let host = match config.get_hosts().first() {
            Some(postgres::config::Host::Tcp(h)) => h.clone(),
            Some(postgres::config::Host::Unix(p)) => p.display().to_string(),
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
            statement_timeout: Duration::from_secs(c.statement_timeout.max(1)),
            lock_timeout: Duration::from_secs(c.lock_timeout.max(1)),
        })
    }
}

/// Loads `--env-file PATH` or `./.env` into the environment, without overriding variables that
/// are already set (real environment wins over the file). Looks for `--env-file` itself,
/// before clap parses, because clap reads the environment while parsing.
pub fn load_env_file(args: &[String]) -> anyhow::Result<()> {
    let mut explicit = None;
    for (i, a) in args.iter().enumerate() {
        if let Some(v) = a.strip_prefix("--env-file=") {
            explicit = Some(v.to_owned());
        } else if a == "--env-file" {
            explicit = args.get(i + 1).cloned();
        }
    }
    match explicit {
        Some(path) => dotenvy::from_path(&path)
            .map_err(|e| usage(format!("could not read `--env-file` {path}: {e}"))),
        None => match dotenvy::dotenv() {
            Ok(_) => Ok(()),
            Err(e) if e.not_found() => Ok(()),
            Err(e) => Err(usage(format!("could not read ./.env: {e}"))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_is_a_prefix_and_one_trailing_star() {
        assert_eq!(parse_pattern("url_hits:*").unwrap(), "url_hits:");
        assert_eq!(parse_pattern("a*").unwrap(), "a");
        for bad in [
            "url_hits:",
            "*",
            "url_*:*",
            "url_hits:**",
            "u?l:*",
            "u[r]l:*",
            "a\\*",
        ] {
            let err = parse_pattern(bad).unwrap_err();
            assert!(err.downcast_ref::<UsageError>().is_some(), "{bad} accepted");
        }
    }

    fn target(pattern: &str, journal_prefix: &str, unknown_key: &str) -> TargetArgs {
        use clap::Parser;
        let cli = crate::cli::Cli::try_parse_from([
            "redis-flusher",
            "run",
            "--pattern",
            pattern,
            "--journal-prefix",
            journal_prefix,
            "--unknown-key",
            unknown_key,
        ])
        .unwrap();
        match cli.command {
            crate::cli::Command::Run(r) => r.target,
            other => unreachable!("parsed `run`, got {other:?}"),
        }
    }

    #[test]
    fn bookkeeping_keys_can_never_match_the_pattern() {
        let ok = |p, j, u| FlushConfig::from_args(&target(p, j, u)).is_ok();
        assert!(ok(
            "url_hits:*",
            "redis_flusher:journal:",
            "redis_flusher:unknown"
        ));
        assert!(
            !ok("url_hits:*", "url_hits:journal:", "x"),
            "journal under the pattern"
        );
        assert!(
            !ok("url_1*", "url_", "x"),
            "pattern under the journal prefix"
        );
        assert!(!ok("url_hits:*", "", "x"), "empty journal prefix");
        assert!(
            !ok("url_hits:*", "j:", "url_hits:unknown"),
            "unknown hash under the pattern"
        );
        assert!(
            !ok("url_hits:*", "j:", "j:unknown"),
            "unknown hash under the journal prefix"
        );
    }

    #[test]
    fn identifiers_are_checked_and_quoted() {
        assert_eq!(Ident::parse("--table", "urls").unwrap().quoted, "\"urls\"");
        assert_eq!(
            Ident::parse("--table", "app.Urls_2").unwrap().quoted,
            "\"app\".\"Urls_2\""
        );
        for bad in [
            "",
            "1urls",
            "urls; drop table x",
            "a.b.c",
            "u\"rls",
            ".urls",
            &"x".repeat(64),
        ] {
            assert!(Ident::parse("--table", bad).is_err(), "{bad} accepted");
        }
    }
}
