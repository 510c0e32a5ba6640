//! Where Redis and Postgres are, and the timeouts and safety settings of reaching them: the
//! flags every command that connects shares.

use std::path::PathBuf;

use clap::Args;

/// Where Redis and Postgres are. Passwords: `REDIS_PASSWORD`, `DB_PASSWORD` (environment only),
/// or the files `REDIS_PASSWORD_FILE`, `DB_PASSWORD_FILE` name.
#[derive(Debug, Args, Clone)]
pub struct ConnArgs {
    /// Read variables from this file instead of `./.env` (real environment variables win)
    #[arg(long, value_name = "PATH")]
    pub env_file: Option<PathBuf>,

    /// Redis URL: redis://user:pass@host:6379/0 (or rediss:// for TLS)
    ///
    /// Wins over the REDIS_HOST.. parts. With --redis-cluster, one or more seed nodes,
    /// comma-separated.
    #[arg(
        long,
        env = "REDIS_URL",
        hide_env_values = true,
        value_name = "URL",
        help_heading = "Connection: Redis"
    )]
    pub redis_url: Option<String>,

    /// Redis is a Redis Cluster: SCAN every master, claim slot by slot
    ///
    /// `REDIS_URL` (or the host and port) names seed nodes; the masters are read from
    /// `CLUSTER SLOTS`.
    #[arg(long, env = "REDIS_CLUSTER", help_heading = "Connection: Redis")]
    pub redis_cluster: bool,

    /// Redis Sentinel nodes, `host:port,host:port,…`, instead of a Redis address
    ///
    /// They name the current master of `--redis-sentinel-master`, which is checked to be a
    /// master and flushed as one Redis (`REDIS_PASSWORD`, `REDIS_USERNAME`, `REDIS_DB`,
    /// `REDIS_TLS` apply to it).
    #[arg(
        long,
        env = "REDIS_SENTINELS",
        value_name = "HOST:PORT,…",
        help_heading = "Connection: Redis"
    )]
    pub redis_sentinels: Option<String>,

    /// The master's name in Sentinel (`sentinel monitor <name> …`)
    #[arg(
        long,
        env = "REDIS_SENTINEL_MASTER",
        default_value = "mymaster",
        help_heading = "Connection: Redis"
    )]
    pub redis_sentinel_master: String,

    /// Sentinel ACL user, for sentinels that require auth (with `REDIS_SENTINEL_PASSWORD`)
    #[arg(
        hide_short_help = true,
        long,
        env = "REDIS_SENTINEL_USERNAME",
        help_heading = "Connection: Redis"
    )]
    pub redis_sentinel_username: Option<String>,

    /// Redis host
    #[arg(
        long,
        env = "REDIS_HOST",
        default_value = "localhost",
        help_heading = "Connection: Redis"
    )]
    pub redis_host: String,

    /// Redis port
    #[arg(
        long,
        env = "REDIS_PORT",
        default_value_t = 6379,
        help_heading = "Connection: Redis"
    )]
    pub redis_port: u16,

    /// Redis ACL user (with `REDIS_PASSWORD`)
    #[arg(long, env = "REDIS_USERNAME", help_heading = "Connection: Redis")]
    pub redis_username: Option<String>,

    /// Redis database number
    #[arg(
        long,
        env = "REDIS_DB",
        default_value_t = 0,
        help_heading = "Connection: Redis"
    )]
    pub redis_db: i64,

    /// Connect to Redis over TLS (a `rediss://` URL says so by itself)
    #[arg(long, env = "REDIS_TLS", help_heading = "Connection: Redis")]
    pub redis_tls: bool,

    /// CA certificate (PEM) of the Redis server, for a private CA
    ///
    /// Without it, the system's trusted CAs.
    #[arg(
        hide_short_help = true,
        long,
        env = "REDIS_CA_FILE",
        value_name = "PATH",
        help_heading = "Connection: Redis"
    )]
    pub redis_ca_file: Option<PathBuf>,

    /// Client certificate (PEM) for Redis servers that ask for one (`tls-auth-clients yes`)
    #[arg(
        hide_short_help = true,
        long,
        env = "REDIS_CLIENT_CERT_FILE",
        value_name = "PATH",
        help_heading = "Connection: Redis"
    )]
    pub redis_client_cert_file: Option<PathBuf>,

    /// The client certificate's private key (PEM)
    #[arg(
        hide_short_help = true,
        long,
        env = "REDIS_CLIENT_KEY_FILE",
        value_name = "PATH",
        help_heading = "Connection: Redis"
    )]
    pub redis_client_key_file: Option<PathBuf>,

    /// PostgreSQL URL: postgres://user:pass@host:5432/app, or libpq's `host=… dbname=…`
    ///
    /// Wins over the DB_HOST.. parts. A host that is a directory (`?host=/var/run/postgresql`)
    /// is a Unix socket.
    #[arg(
        long,
        env = "DATABASE_URL",
        hide_env_values = true,
        value_name = "URL",
        help_heading = "Connection: PostgreSQL"
    )]
    pub database_url: Option<String>,

    /// PostgreSQL host, or the directory of its Unix socket
    #[arg(
        long,
        env = "DB_HOST",
        default_value = "localhost",
        help_heading = "Connection: PostgreSQL"
    )]
    pub db_host: String,

    /// PostgreSQL port
    #[arg(
        long,
        env = "DB_PORT",
        default_value_t = 5432,
        help_heading = "Connection: PostgreSQL"
    )]
    pub db_port: u16,

    /// PostgreSQL database
    #[arg(
        long,
        env = "DB_NAME",
        default_value = "postgres",
        help_heading = "Connection: PostgreSQL"
    )]
    pub db_name: String,

    /// PostgreSQL user [default: postgres]
    ///
    /// With a `DATABASE_URL` that names none, the user this runs as, as psql does; with the
    /// `DB_*` parts, `postgres` (Unix socket included: for peer authentication there, set it
    /// to the user this runs as).
    #[arg(long, env = "DB_USER", help_heading = "Connection: PostgreSQL")]
    pub db_user: Option<String>,

    /// TLS to PostgreSQL: disable, prefer, require, verify-ca or verify-full
    ///
    /// As libpq spells it: disable, prefer (TLS if the server offers it, unverified), require
    /// (TLS, unverified unless --db-sslrootcert), verify-ca (the certificate is signed by the
    /// CA), verify-full (and names the host). `sslmode=` in `DATABASE_URL` wins.
    #[arg(
        long,
        env = "DB_SSLMODE",
        value_name = "MODE",
        help_heading = "Connection: PostgreSQL"
    )]
    pub db_sslmode: Option<String>,

    /// CA certificate (PEM) for verify-ca and verify-full
    ///
    /// Without it, the system's trusted CAs. `sslrootcert=` in `DATABASE_URL` wins.
    #[arg(
        hide_short_help = true,
        long,
        env = "DB_SSLROOTCERT",
        value_name = "PATH",
        help_heading = "Connection: PostgreSQL"
    )]
    pub db_sslrootcert: Option<PathBuf>,

    /// Seconds to wait for a connection to Redis or Postgres
    #[arg(
        long,
        env = "REDIS_FLUSHER_CONNECT_TIMEOUT",
        default_value_t = 10,
        value_name = "SECS",
        value_parser = clap::value_parser!(u64).range(1..=86400),
        help_heading = "Safety: timeouts, locks, replicas"
    )]
    pub connect_timeout: u64,

    /// Seconds one Redis command may take before the run gives up
    ///
    /// A claim takes about a millisecond.
    #[arg(
        long,
        env = "REDIS_FLUSHER_COMMAND_TIMEOUT",
        default_value_t = 10,
        value_name = "SECS",
        value_parser = clap::value_parser!(u64).range(1..=86400),
        help_heading = "Safety: timeouts, locks, replicas"
    )]
    pub command_timeout: u64,

    /// Seconds one Postgres statement may take (`statement_timeout`)
    ///
    /// 1 to 2147483, what Postgres takes; a server that does not answer at all is given up on
    /// 5 s later.
    #[arg(
        long,
        env = "REDIS_FLUSHER_STATEMENT_TIMEOUT",
        default_value_t = 60,
        value_name = "SECS",
        value_parser = clap::value_parser!(u64).range(1..=2147483),
        help_heading = "Safety: timeouts, locks, replicas"
    )]
    pub statement_timeout: u64,

    /// Seconds a batch may wait for a row the app has locked
    ///
    /// Then that batch waits in its journal for the next run and the others go on.
    #[arg(
        long,
        env = "REDIS_FLUSHER_LOCK_TIMEOUT",
        default_value_t = 10,
        value_name = "SECS",
        value_parser = clap::value_parser!(u64).range(1..=2147483),
        help_heading = "Safety: timeouts, locks, replicas"
    )]
    pub lock_timeout: u64,

    /// Before each COMMIT, wait until this many Redis replicas have the batch's claims
    ///
    /// Redis `WAIT`; a batch they do not confirm within `--command-timeout` is not committed
    /// and waits in its journal. Closes the window where a failover loses a claim Postgres
    /// has committed.
    #[arg(
        long,
        env = "REDIS_FLUSHER_WAIT_REPLICAS",
        default_value_t = 0,
        value_name = "N",
        help_heading = "Safety: timeouts, locks, replicas"
    )]
    pub redis_wait_replicas: u32,
}
