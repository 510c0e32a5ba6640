//! Private servers for the integration tests, and a per-test namespace on them.
//!
//! Each test binary starts one `redis-server` and one PostgreSQL cluster (`initdb` in a temp
//! dir, run as the `postgres` user when we are root) on free loopback ports, the first time a
//! test asks. A watchdog shell stops them and removes their files when the test binary exits.
//! Each [`TestEnv`] gets its own database and its own key prefix, so tests run in parallel.
//! A missing server binary fails the test with the package to install: tests never skip.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use assert_cmd::cargo::CommandCargoExt;

pub struct Servers {
    pub redis_port: u16,
    pub pg_port: u16,
}

static SERVERS: OnceLock<Servers> = OnceLock::new();
static NEXT: AtomicUsize = AtomicUsize::new(0);

pub fn servers() -> &'static Servers {
    SERVERS.get_or_init(|| Servers {
        redis_port: start_redis(&[]).port,
        pg_port: start_postgres().port,
    })
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn id_of(flag: &str, user: &str) -> u32 {
    let out = Command::new("id")
        .args([flag, user])
        .output()
        .expect("run id");
    assert!(
        out.status.success(),
        "running as root, but there is no `{user}` user to run PostgreSQL as: \
         install the postgresql package (apt-get install postgresql)"
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("numeric id")
}

/// Stops `pid` with `signal` and removes `dir` once this test process has exited.
/// The shell outlives us on purpose (statics are never dropped), so it is never waited for.
#[allow(clippy::zombie_processes)]
fn watchdog(pid: u32, signal: &str, dir: &Path) {
    let script = format!(
        "while kill -0 {parent} 2>/dev/null; do sleep 0.5; done; \
         kill -{signal} {pid} 2>/dev/null; sleep 3; kill -KILL {pid} 2>/dev/null; rm -rf '{dir}'",
        parent = std::process::id(),
        dir = dir.display()
    );
    Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the watchdog shell");
}

fn find_pg_bin(name: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    dirs.sort_by_key(|d| {
        d.parent()
            .and_then(|p| p.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    for d in dirs.iter().rev() {
        if d.join(name).exists() {
            return d.join(name);
        }
    }
    panic!(
        "`{name}` not found under /usr/lib/postgresql/*/bin: install the PostgreSQL server \
         (apt-get install postgresql)"
    );
}

/// A private Redis server, which a test may stop, freeze and restart.
pub struct RedisServer {
    pub port: u16,
    pub pid: u32,
    pub dir: PathBuf,
    extra: Vec<String>,
}

/// Starts a `redis-server` on a free port with `extra` arguments (e.g. persistence).
pub fn start_redis(extra: &[&str]) -> RedisServer {
    let dir = tempfile::Builder::new()
        .prefix("flusher-redis-")
        .tempdir()
        .expect("temp dir")
        .keep();
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    for _ in 0..5 {
        let port = free_port();
        if let Some(pid) = spawn_redis(port, &dir, &extra) {
            return RedisServer {
                port,
                pid,
                dir,
                extra,
            };
        }
    }
    panic!("redis-server did not start on a free port (5 tries)");
}

/// Spawns `redis-server` on `port`; its pid once it answers, None if it exited first (the
/// port was taken). It runs until the watchdog stops it, so it is never waited for.
#[allow(clippy::zombie_processes)]
fn spawn_redis(port: u16, dir: &Path, extra: &[String]) -> Option<u32> {
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--appendonly", "no", "--dir"])
        .arg(dir)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            panic!(
                "could not start `redis-server` ({e}): install it (apt-get install redis-server)"
            )
        }
    };
    watchdog(child.id(), "TERM", dir);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return None; // port taken between our probe and its bind: try another
        }
        if redis_ping(port) {
            return Some(child.id());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    None
}

impl RedisServer {
    /// SIGKILL: a crash. What it keeps is what its persistence options wrote.
    pub fn kill(&self) {
        signal(self.pid, libc::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(10);
        while redis_ping(self.port) {
            assert!(Instant::now() < deadline, "redis-server survived SIGKILL");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts it again on the same port and directory, with the same options.
    pub fn restart(&mut self) {
        self.pid = spawn_redis(self.port, &self.dir, &self.extra)
            .unwrap_or_else(|| panic!("redis-server did not restart on port {}", self.port));
    }

    /// SIGSTOP: it keeps its connections and answers nothing, like a hung host.
    pub fn freeze(&self) {
        signal(self.pid, libc::SIGSTOP);
    }

    pub fn thaw(&self) {
        signal(self.pid, libc::SIGCONT);
    }
}

pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) with a pid this harness started and a constant signal.
    let rc = unsafe { libc::kill(pid as i32, sig) };
    assert_eq!(rc, 0, "kill -{sig} {pid}");
}

/// The pids whose parent is `pid` (from /proc).
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid …`; comm may hold spaces, so split after its `)`.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(child);
        }
    }
    out
}

/// True once the server answers a PING with `+PONG`, or `-NOAUTH` when it asks for a
/// password: it is up.
fn redis_ping(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut reply = [0u8; 7];
    // `-LOADING` (restarted, still reading its AOF) is not up yet.
    s.write_all(b"PING\r\n").is_ok()
        && s.read_exact(&mut reply).is_ok()
        && (reply.starts_with(b"+PONG") || reply.starts_with(b"-NOAUTH"))
}

/// A private PostgreSQL cluster, which a test may stop, freeze and restart.
pub struct PgServer {
    pub port: u16,
    pub pid: u32,
    pub dir: PathBuf,
    data: PathBuf,
    /// The `postgres` user's uid and gid when we are root.
    ids: Option<(u32, u32)>,
    extra: Vec<String>,
}

/// `initdb` in a temp dir and a `postgres` on a free port, tuned for tests (no fsync).
pub fn start_postgres() -> PgServer {
    start_postgres_with(&[])
}

/// A PostgreSQL with `ssl=on`, serving `pki`'s server certificate.
pub fn start_postgres_tls(pki: &Pki) -> PgServer {
    // The server wants its key private to its own user.
    let key = pki.dir.join("pg_server.key");
    std::fs::copy(&pki.server_key, &key).expect("copy the server key");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod key");
    std::fs::set_permissions(&pki.dir, std::fs::Permissions::from_mode(0o755)).expect("chmod dir");
    std::fs::set_permissions(&pki.server_cert, std::fs::Permissions::from_mode(0o644))
        .expect("chmod cert");
    if is_root() {
        let (uid, gid) = (id_of("-u", "postgres"), id_of("-g", "postgres"));
        std::os::unix::fs::chown(&key, Some(uid), Some(gid)).expect("chown the server key");
    }
    start_postgres_with(&[
        "-c",
        "ssl=on",
        "-c",
        &format!("ssl_cert_file={}", pki.server_cert.display()),
        "-c",
        &format!("ssl_key_file={}", key.display()),
    ])
}

fn start_postgres_with(extra: &[&str]) -> PgServer {
    let root = is_root();
    let ids = root.then(|| (id_of("-u", "postgres"), id_of("-g", "postgres")));
    let dir = tempfile::Builder::new()
        .prefix("flusher-pg-")
        .tempdir()
        .expect("temp dir")
        .keep();
    let data = dir.join("data");
    if let Some((uid, gid)) = ids {
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown the PostgreSQL dir");
    }
    let mut initdb = Command::new(find_pg_bin("initdb"));
    initdb
        .args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
            "-D",
        ])
        .arg(&data)
        .stdout(Stdio::null());
    as_pg(&mut initdb, ids);
    let out = initdb.output().expect("run initdb");
    assert!(
        out.status.success(),
        "initdb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Trust for everyone but members of `password_users`, who must give their password, and
    // of `tls_users`, who must come over TLS (for the tests of passwords and of TLS).
    let hba = data.join("pg_hba.conf");
    let rules = std::fs::read_to_string(&hba).expect("read pg_hba.conf");
    std::fs::write(
        &hba,
        format!(
            "host all +password_users 127.0.0.1/32 scram-sha-256\n\
             hostnossl all +tls_users 127.0.0.1/32 reject\n{rules}"
        ),
    )
    .expect("write pg_hba.conf");
    let mut server = PgServer {
        port: 0,
        pid: 0,
        dir,
        data,
        ids,
        extra: extra.iter().map(|s| s.to_string()).collect(),
    };
    for _ in 0..5 {
        server.port = free_port();
        if let Some(pid) = server.spawn() {
            server.pid = pid;
            pg_connect(server.port, "postgres")
                .and_then(|mut c| {
                    c.batch_execute(
                        "CREATE ROLE password_users NOLOGIN; CREATE ROLE tls_users NOLOGIN",
                    )
                })
                .expect("create the password_users and tls_users roles");
            return server;
        }
    }
    panic!("postgres did not start on a free port (5 tries)");
}

fn as_pg(cmd: &mut Command, ids: Option<(u32, u32)>) {
    if let Some((uid, gid)) = ids {
        use std::os::unix::process::CommandExt;
        cmd.uid(uid).gid(gid);
    }
}

impl PgServer {
    /// Spawns `postgres` on `self.port`; its pid once it accepts connections, None if it
    /// exited first. It runs until the watchdog stops it, so it is never waited for.
    #[allow(clippy::zombie_processes)]
    fn spawn(&self) -> Option<u32> {
        let mut cmd = Command::new(find_pg_bin("postgres"));
        cmd.arg("-D")
            .arg(&self.data)
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(&self.dir)
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .args(["-c", "synchronous_commit=off", "-c", "full_page_writes=off"])
            .args(["-c", "max_connections=300", "-c", "shared_buffers=128MB"])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        as_pg(&mut cmd, self.ids);
        let mut child = cmd.spawn().expect("start postgres");
        watchdog(child.id(), "QUIT", &self.dir);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return None;
            }
            if pg_connect(self.port, "postgres").is_ok() {
                return Some(child.id());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        None
    }

    /// `pg_ctl stop -m immediate`: every backend dies at once, as in a crash; the next start
    /// runs crash recovery.
    pub fn stop_immediate(&self) {
        let mut cmd = Command::new(find_pg_bin("pg_ctl"));
        cmd.args(["stop", "-m", "immediate", "-D"])
            .arg(&self.data)
            .stdout(Stdio::null());
        as_pg(&mut cmd, self.ids);
        let out = cmd.output().expect("run pg_ctl");
        assert!(
            out.status.success(),
            "pg_ctl stop failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts it again on the same port and data directory.
    pub fn restart(&mut self) {
        self.pid = self
            .spawn()
            .unwrap_or_else(|| panic!("postgres did not restart on port {}", self.port));
    }

    /// SIGSTOP to the postmaster and every backend: connections stay open and nothing
    /// answers, like a hung host. Server-side timeouts cannot fire.
    pub fn freeze(&self) {
        signal(self.pid, libc::SIGSTOP);
        for c in children(self.pid) {
            signal(c, libc::SIGSTOP);
        }
    }

    pub fn thaw(&self) {
        for c in children(self.pid) {
            signal(c, libc::SIGCONT);
        }
        signal(self.pid, libc::SIGCONT);
    }
}

pub fn pg_connect(port: u16, db: &str) -> Result<postgres::Client, postgres::Error> {
    postgres::Config::new()
        .host("127.0.0.1")
        .port(port)
        .user("postgres")
        .dbname(db)
        .connect_timeout(Duration::from_secs(5))
        .connect(postgres::NoTls)
}

/// One test's own database, key prefix, journal prefix and unknown hash.
pub struct TestEnv {
    pub n: usize,
    pub db: String,
    /// The pattern prefix, e.g. `t3_1234:hits:`.
    pub prefix: String,
    pub journal_prefix: String,
    pub unknown_key: String,
    pub redis_port: u16,
    pub pg_port: u16,
    pub workdir: tempfile::TempDir,
}

impl TestEnv {
    /// A fresh namespace on the shared private servers, with a `urls` table of `rows` codes
    /// `c1..c<rows>`, all at 0.
    pub fn new(rows: u32) -> TestEnv {
        let s = servers();
        Self::on(s.redis_port, s.pg_port, rows)
    }

    /// A fresh namespace on the given servers (tests that stop or break a server own one).
    pub fn on(redis_port: u16, pg_port: u16, rows: u32) -> TestEnv {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let tag = format!("t{n}_{}", std::process::id());
        let mut admin = pg_connect(pg_port, "postgres").expect("connect to the test PostgreSQL");
        admin
            .batch_execute(&format!("CREATE DATABASE {tag}"))
            .expect("create the test database");
        let env = TestEnv {
            n,
            db: tag.clone(),
            prefix: format!("{tag}:hits:"),
            journal_prefix: format!("{tag}:journal:"),
            unknown_key: format!("{tag}:unknown"),
            redis_port,
            pg_port,
            workdir: tempfile::tempdir().expect("temp dir"),
        };
        env.pg()
            .batch_execute(&format!(
                "CREATE TABLE urls (id serial PRIMARY KEY, short_code varchar(255) UNIQUE NOT NULL, \
                 original_url text NOT NULL DEFAULT '', access_count integer NOT NULL DEFAULT 0);
                 INSERT INTO urls (short_code) SELECT 'c' || g FROM generate_series(1, {rows}) g;"
            ))
            .expect("create urls");
        env
    }

    pub fn pg(&self) -> postgres::Client {
        pg_connect(self.pg_port, &self.db).expect("connect to the test database")
    }

    pub fn redis(&self) -> redis::Connection {
        redis::Client::open(format!("redis://127.0.0.1:{}/", self.redis_port))
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(5)))
            .expect("connect to the test Redis")
    }

    pub fn key(&self, code: &str) -> String {
        format!("{}{code}", self.prefix)
    }

    /// The binary, pointed at this namespace through the environment the way an operator
    /// would, in a working directory of its own (so no stray `.env` is read).
    pub fn cmd(&self) -> Command {
        let mut cmd = Command::cargo_bin("redis-flusher").expect("the redis-flusher binary");
        for var in [
            "REDIS_URL",
            "DATABASE_URL",
            "REDIS_PASSWORD",
            "DB_PASSWORD",
            "REDIS_PASSWORD_FILE",
            "DB_PASSWORD_FILE",
            "REDIS_USERNAME",
            "REDIS_DB",
            "REDIS_FLUSHER_FAULT",
            "RUST_LOG",
        ] {
            cmd.env_remove(var);
        }
        cmd.current_dir(self.workdir.path())
            .env("REDIS_HOST", "127.0.0.1")
            .env("REDIS_PORT", self.redis_port.to_string())
            .env("DB_HOST", "127.0.0.1")
            .env("DB_PORT", self.pg_port.to_string())
            .env("DB_NAME", &self.db)
            .env("DB_USER", "postgres")
            .env("REDIS_FLUSHER_PATTERN", format!("{}*", self.prefix))
            .env("REDIS_FLUSHER_JOURNAL_PREFIX", &self.journal_prefix)
            .env("REDIS_FLUSHER_UNKNOWN_KEY", &self.unknown_key)
            .env("REDIS_FLUSHER_STATEMENT_TIMEOUT", "30")
            .env("REDIS_FLUSHER_CONNECT_TIMEOUT", "5");
        cmd
    }

    /// Runs `redis-flusher <args>`; returns (exit code or None if killed, stdout, stderr).
    pub fn run(&self, args: &[&str]) -> Outcome {
        self.run_with(args, &[])
    }

    pub fn run_with(&self, args: &[&str], env: &[(&str, &str)]) -> Outcome {
        let mut cmd = self.cmd();
        cmd.args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        self.output(cmd)
    }

    /// Runs a command built from [`TestEnv::cmd`] to its end.
    pub fn output(&self, mut cmd: Command) -> Outcome {
        let out = cmd.output().expect("run redis-flusher");
        self.wait_for_unlock();
        Outcome {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn set(&self, code: &str, value: &str) {
        redis::cmd("SET")
            .arg(self.key(code))
            .arg(value)
            .query::<()>(&mut self.redis())
            .expect("SET");
    }

    /// Waits until no redis-flusher session holds an advisory lock in this database. A run
    /// killed with SIGKILL leaves its Postgres backend alive for a few milliseconds, lock and
    /// all; a run started in that window rightly exits "locked" and does nothing, which would
    /// make the next assertion race. (Cron runs minutes apart; tests run back to back.)
    pub fn wait_for_unlock(&self) {
        let mut pg = self.pg();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let held: i64 = pg
                .query_one(
                    "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
                     WHERE l.locktype = 'advisory' AND a.application_name = 'redis-flusher' \
                     AND a.datname = current_database()",
                    &[],
                )
                .expect("read pg_locks")
                .get(0);
            if held == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "a redis-flusher session kept its lock for 10 s"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The README's ACL line, for a test namespace: only the commands and keys a flusher needs.
    pub fn least_acl(&self, user: &str, password: &str) -> Vec<String> {
        [
            user,
            "on",
            &format!(">{password}"),
            "resetkeys",
            &format!("~{}*", self.prefix),
            &format!("~{}*", self.journal_prefix),
            &format!("~{}", self.unknown_key),
            "resetchannels",
            "-@all",
            "+ping",
            "+info",
            "+scan",
            "+evalsha",
            "+eval",
            "+script|load",
            "+mget",
            "+del",
            "+exists",
            "+hset",
            "+hdel",
            "+hexists",
            "+hgetall",
            "+hincrby",
            "+sadd",
            "+srem",
            "+smembers",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// Waits until the ledger holds at least `rows` rows (a run is that far along).
    pub fn wait_for_ledger_rows(&self, rows: i64) {
        let mut pg = self.pg();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let exists: bool = pg
                .query_one(
                    "SELECT to_regclass('redis_flusher_batches') IS NOT NULL",
                    &[],
                )
                .expect("look up the ledger")
                .get(0);
            let n: i64 = if exists {
                pg.query_one("SELECT count(*) FROM redis_flusher_batches", &[])
                    .expect("count ledger rows")
                    .get(0)
            } else {
                0
            };
            if n >= rows {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the ledger did not reach {rows} rows in 30 s"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// `set` on a Redis that asks for a password.
    pub fn set_with_password(&self, code: &str, value: &str, password: &str) {
        let mut con = redis::Client::open(format!(
            "redis://:{password}@127.0.0.1:{}/",
            self.redis_port
        ))
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(5)))
        .expect("connect with a password");
        redis::cmd("SET")
            .arg(self.key(code))
            .arg(value)
            .query::<()>(&mut con)
            .expect("SET");
    }

    /// Sets `<prefix>c1..c<n>` to `f(i)`, pipelined; returns the sum.
    pub fn set_many(&self, n: u32, f: impl Fn(u32) -> i64) -> i64 {
        let mut pipe = redis::pipe();
        let mut sum = 0;
        for i in 1..=n {
            pipe.cmd("SET")
                .arg(self.key(&format!("c{i}")))
                .arg(f(i))
                .ignore();
            sum += f(i);
        }
        pipe.query::<()>(&mut self.redis()).expect("SET many");
        sum
    }

    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        redis::cmd("GET")
            .arg(key)
            .query(&mut self.redis())
            .expect("GET")
    }

    /// Every key under a prefix (SCAN).
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let mut out = scan_keys(&mut self.redis(), prefix);
        out.sort();
        out.dedup();
        out
    }

    /// Journal keys (the journal index, `<journal prefix>index`, is not one).
    pub fn journals(&self) -> Vec<String> {
        let index = self.index_key();
        self.keys(&self.journal_prefix)
            .into_iter()
            .filter(|k| *k != index)
            .collect()
    }

    pub fn index_key(&self) -> String {
        format!("{}index", self.journal_prefix)
    }

    /// Deletes the journal index, as an operator or a lost write could.
    pub fn lose_index(&self) {
        redis::cmd("DEL")
            .arg(self.index_key())
            .query::<()>(&mut self.redis())
            .expect("DEL the journal index");
    }

    /// A run killed right after its first claim: its journal waits for the next run.
    pub fn kill_after_first_claim(&self) {
        self.run_with(&["run"], &[("REDIS_FLUSHER_FAULT", "after_claim")])
            .expect_killed();
    }

    /// The members of the journal index.
    pub fn index(&self) -> Vec<String> {
        let mut m: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.index_key())
            .query(&mut self.redis())
            .expect("SMEMBERS");
        m.sort();
        m
    }

    pub fn count(&self, code: &str) -> i64 {
        let row = self
            .pg()
            .query_one(
                "SELECT access_count::int8 FROM urls WHERE short_code = $1",
                &[&code],
            )
            .expect("read a count");
        row.get(0)
    }

    pub fn total(&self) -> i64 {
        self.pg()
            .query_one("SELECT coalesce(sum(access_count), 0)::int8 FROM urls", &[])
            .expect("sum counts")
            .get(0)
    }

    /// The hits of unknown codes that the ledger records as dropped or parked.
    pub fn ledger_unknown_hits(&self) -> i64 {
        self.pg()
            .query_one(
                "SELECT coalesce(sum(unknown_hits), 0)::int8 FROM redis_flusher_batches",
                &[],
            )
            .expect("sum the ledger's unknown hits")
            .get(0)
    }

    /// `INCRBY <prefix><code> n` for each pair, pipelined.
    pub fn incr_many<'a>(&self, incrs: impl IntoIterator<Item = (&'a str, i64)>) {
        let mut pipe = redis::pipe();
        for (code, n) in incrs {
            pipe.cmd("INCRBY").arg(self.key(code)).arg(n).ignore();
        }
        pipe.query::<()>(&mut self.redis()).expect("INCRBY many");
    }

    pub fn ledger_rows(&self) -> i64 {
        self.pg()
            .query_one("SELECT count(*) FROM redis_flusher_batches", &[])
            .expect("count ledger rows")
            .get(0)
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        // Keep the evidence of a failed test; clean up after a passing one.
        if std::thread::panicking() {
            eprintln!(
                "test state kept: database {} on 127.0.0.1:{}, keys {}* / {}* on 127.0.0.1:{}",
                self.db, self.pg_port, self.prefix, self.journal_prefix, self.redis_port
            );
            return;
        }
        if let Ok(mut admin) = pg_connect(self.pg_port, "postgres") {
            let _ =
                admin.batch_execute(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.db));
        }
        if let Ok(mut con) = redis::Client::open(format!("redis://127.0.0.1:{}/", self.redis_port))
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(1)))
        {
            let tag = self.prefix.split(':').next().unwrap_or_default().to_owned();
            let keys: Vec<Vec<u8>> = redis::cmd("KEYS")
                .arg(format!("{tag}:*"))
                .query(&mut con)
                .unwrap_or_default();
            for k in keys {
                let _ = redis::cmd("DEL").arg(k).query::<()>(&mut con);
            }
        }
    }
}

/// Every key under `prefix` on one server (SCAN; a key may come twice), bytes that are not
/// UTF-8 shown lossily.
pub fn scan_keys(con: &mut redis::Connection, prefix: &str) -> Vec<String> {
    redis::cmd("SCAN")
        .cursor_arg(0)
        .arg("MATCH")
        .arg(format!("{prefix}*"))
        .arg("COUNT")
        .arg(1000)
        .clone()
        .iter::<Vec<u8>>(con)
        .expect("SCAN")
        .map(|k| String::from_utf8_lossy(&k.expect("SCAN key")).into_owned())
        .collect()
}

pub struct Outcome {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "stdout is not one JSON object ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    /// Asserts the exit code, showing the output when it differs.
    pub fn expect(&self, code: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    /// Asserts that the process was killed by a signal (the fault hook).
    pub fn expect_killed(&self) -> &Self {
        assert_eq!(
            self.code, None,
            "expected a kill\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// A private certificate authority and what it signed, made with the openssl CLI: a server
/// certificate for `localhost` (not for 127.0.0.1, so that verify-ca and verify-full differ),
/// a client certificate, and a second CA that signed nothing of ours.
pub struct Pki {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub other_ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

pub fn make_pki() -> Pki {
    let dir = tempfile::Builder::new()
        .prefix("flusher-pki-")
        .tempdir()
        .expect("temp dir")
        .keep();
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap_or_else(|e| {
                panic!("could not run openssl ({e}): install it (apt-get install openssl)")
            });
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    for ca in ["ca", "other_ca"] {
        openssl(
            &[
                &["req", "-x509"][..],
                &ec,
                &[
                    "-keyout",
                    &format!("{ca}.key"),
                    "-out",
                    &format!("{ca}.crt"),
                    "-days",
                    "2",
                    "-subj",
                    &format!("/CN=redis-flusher test {ca}"),
                ],
            ]
            .concat(),
        );
    }
    for (name, ext) in [
        // Client use too: Redis Cluster nodes present it to each other on the bus.
        (
            "server",
            "subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n",
        ),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ] {
        openssl(
            &[
                &["req"][..],
                &ec,
                &[
                    "-keyout",
                    &format!("{name}.key"),
                    "-out",
                    &format!("{name}.csr"),
                    "-subj",
                    &format!("/CN={name}"),
                ],
            ]
            .concat(),
        );
        std::fs::write(dir.join(format!("{name}.ext")), ext).expect("write the extensions");
        openssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &format!("{name}.crt"),
            "-extfile",
            &format!("{name}.ext"),
        ]);
    }
    Pki {
        ca: dir.join("ca.crt"),
        other_ca: dir.join("other_ca.crt"),
        server_cert: dir.join("server.crt"),
        server_key: dir.join("server.key"),
        client_cert: dir.join("client.crt"),
        client_key: dir.join("client.key"),
        dir,
    }
}

/// A private Redis Cluster: `masters` masters with `replicas` replicas each, made with
/// `redis-cli --cluster create`, with AOF on.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
    /// With TLS: each node's TLS port, in `nodes`' order.
    pub tls_ports: Vec<u16>,
}

pub fn start_cluster(masters: usize, replicas: usize) -> RedisCluster {
    start_cluster_with(masters, replicas, None)
}

/// As [`start_cluster`], with TLS for clients and the cluster bus (`pki`'s certificate, which
/// names `localhost`: the nodes announce that name). The plain ports stay open for the
/// harness; `tls_ports` are for the flusher.
pub fn start_cluster_with(masters: usize, replicas: usize, pki: Option<&Pki>) -> RedisCluster {
    let mut tls_ports = Vec::new();
    let nodes: Vec<RedisServer> = (0..masters * (1 + replicas))
        .map(|_| {
            // The bus port defaults to the port + 10000 (the TLS port's with --tls-cluster),
            // past 65535 for a free port above 55535. A plain node is given its bus port; a
            // TLS node a TLS port whose +10000 is free, as `redis-cli --cluster create` meets
            // TLS nodes there.
            let bus = free_port().to_string();
            let mut args: Vec<String> = [
                if pki.is_none() {
                    "--cluster-port"
                } else {
                    "--cluster-enabled"
                },
                if pki.is_none() { bus.as_str() } else { "yes" },
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000",
                "--appendonly",
                "yes",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            if let Some(pki) = pki {
                let port = loop {
                    let p = free_port();
                    if p <= 55535 && TcpListener::bind(("127.0.0.1", p + 10000)).is_ok() {
                        break p;
                    }
                };
                tls_ports.push(port);
                for a in [
                    "--tls-port".to_owned(),
                    port.to_string(),
                    "--tls-cert-file".into(),
                    pki.server_cert.display().to_string(),
                    "--tls-key-file".into(),
                    pki.server_key.display().to_string(),
                    "--tls-ca-cert-file".into(),
                    pki.ca.display().to_string(),
                    "--tls-auth-clients".into(),
                    "no".into(),
                    "--tls-cluster".into(),
                    "yes".into(),
                    "--tls-replication".into(),
                    "yes".into(),
                    "--cluster-announce-hostname".into(),
                    "localhost".into(),
                    "--cluster-preferred-endpoint-type".into(),
                    "hostname".into(),
                ] {
                    args.push(a);
                }
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            start_redis(&args)
        })
        .collect();
    let mut create = Command::new("redis-cli");
    match pki {
        Some(pki) => {
            create.arg("--tls").arg("--cacert").arg(&pki.ca);
            create
                .args(["--cluster", "create"])
                .args(tls_ports.iter().map(|p| format!("127.0.0.1:{p}")));
        }
        None => {
            create
                .args(["--cluster", "create"])
                .args(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)));
        }
    }
    let out = create
        .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
        .output()
        .unwrap_or_else(|e| panic!("could not run redis-cli ({e}): install redis-tools"));
    assert!(
        out.status.success(),
        "redis-cli --cluster create: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let cluster = RedisCluster { nodes, tls_ports };
    cluster.wait_until_ok(masters * (1 + replicas));
    cluster
}

impl RedisCluster {
    /// `REDIS_URL` with every node as a seed.
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn con(&self, port: u16) -> redis::Connection {
        redis::Client::open(format!("redis://127.0.0.1:{port}/"))
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(5)))
            .expect("connect to a cluster node")
    }

    /// Waits until every node says cluster_state:ok and knows `nodes` nodes, and the masters
    /// cover every slot.
    pub fn wait_until_ok(&self, nodes: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ok = self.nodes.iter().all(|n| {
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query(&mut self.con(n.port))
                    .unwrap_or_default();
                info.contains("cluster_state:ok")
                    && info.contains(&format!("cluster_known_nodes:{nodes}"))
            });
            if ok && self.masters().values().map(|r| r.len()).sum::<usize>() == 16384 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster did not become ok in 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Master port → the slots it owns (from `CLUSTER SLOTS` on the first node that answers).
    pub fn masters(&self) -> std::collections::BTreeMap<u16, Vec<u16>> {
        let mut out: std::collections::BTreeMap<u16, Vec<u16>> = Default::default();
        use redis::Value;
        for n in &self.nodes {
            let Ok(Value::Array(ranges)) = redis::cmd("CLUSTER")
                .arg("SLOTS")
                .query::<Value>(&mut self.con(n.port))
            else {
                continue;
            };
            // [start, end, [ip, port, id, …], replicas…]
            for range in ranges {
                if let Value::Array(r) = range {
                    if let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(m))) =
                        (r.first(), r.get(1), r.get(2))
                    {
                        if let Some(Value::Int(port)) = m.get(1) {
                            out.entry(*port as u16)
                                .or_default()
                                .extend(*start as u16..=*end as u16);
                        }
                    }
                }
            }
            return out;
        }
        out
    }

    /// Sets `<prefix>c1..c<n>` to `f(i)` on the masters that own them; returns the sum.
    pub fn set_many(&self, prefix: &str, n: u32, f: impl Fn(u32) -> i64) -> i64 {
        let mut owner = vec![0u16; 16384];
        for (port, slots) in self.masters() {
            for s in slots {
                owner[s as usize] = port;
            }
        }
        let mut pipes: std::collections::BTreeMap<u16, redis::Pipeline> = Default::default();
        let mut sum = 0;
        for i in 1..=n {
            let key = format!("{prefix}c{i}");
            let port = owner[redis_flusher::redis_cluster::slot(key.as_bytes()) as usize];
            pipes
                .entry(port)
                .or_insert_with(redis::pipe)
                .cmd("SET")
                .arg(&key)
                .arg(f(i))
                .ignore();
            sum += f(i);
        }
        for (port, pipe) in pipes {
            pipe.query::<()>(&mut self.con(port))
                .expect("SET on a master");
        }
        sum
    }

    /// Keys under `prefix` on every master, sorted.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let mut out = Vec::new();
        for port in self.masters().keys() {
            out.extend(scan_keys(&mut self.con(*port), prefix));
        }
        out.sort();
        out.dedup();
        out
    }

    /// Journal keys under `journal_prefix` on every master (the fences are not journals).
    pub fn journals(&self, journal_prefix: &str) -> Vec<String> {
        self.keys(journal_prefix)
            .into_iter()
            .filter(|k| !k.ends_with("}fence") && !k.ends_with("}index"))
            .collect()
    }
}
