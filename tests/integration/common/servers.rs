//! Private servers for the tests: `redis-server` and PostgreSQL (`initdb` in a temp dir, run
//! as the `postgres` user when we are root) on free loopback ports, which a test may stop,
//! freeze and restart. Each binary shares one pair ([`servers`]); a test that breaks a server
//! starts its own.
//!
//! A server stops when its handle is dropped, and its files go with it unless the test
//! failed (the evidence is kept). The shared pair lives in a static, which is never dropped:
//! a watchdog shell stops every server and removes its files once the test binary has
//! exited, however it ended. A missing server binary fails the test with the package to
//! install: tests never skip.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use redis_flusher::throwaway;

use super::pki::Pki;

/// The binary's shared private pair.
pub struct Servers {
    pub redis_port: u16,
    pub pg_port: u16,
    pub pg: PgServer,
    _redis: RedisServer,
}

static SERVERS: OnceLock<Servers> = OnceLock::new();

pub fn servers() -> &'static Servers {
    SERVERS.get_or_init(|| {
        let (redis, pg) = (start_redis(&[]), start_postgres());
        Servers {
            redis_port: redis.port,
            pg_port: pg.port,
            pg,
            _redis: redis,
        }
    })
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

/// The `postgres` user's uid and gid when we are root (PostgreSQL refuses to run as root).
pub(super) fn postgres_ids() -> Option<(u32, u32)> {
    throwaway::postgres_ids().expect(
        "running as root, but there is no `postgres` user to run PostgreSQL as: install the \
         postgresql package (apt-get install postgresql)",
    )
}

/// Stops `pid` with `signal` and removes `dir` once this test process has exited.
/// The shell outlives us on purpose (statics are never dropped), so it is never waited for.
#[allow(clippy::zombie_processes)]
pub(super) fn watchdog(pid: u32, signal: &str, dir: &Path) {
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

/// A PostgreSQL server program (`initdb`, `postgres`, `pg_ctl`…), as the demo finds it.
pub(super) fn find_pg_bin(name: &str) -> PathBuf {
    throwaway::find(name).unwrap_or_else(|| {
        panic!(
            "`{name}` not found on PATH nor under /usr/lib/postgresql/*/bin: install the \
             PostgreSQL server (apt-get install postgresql)"
        )
    })
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
    let program = throwaway::find("redis-server").unwrap_or_else(|| {
        panic!("`redis-server` is not installed: install it (apt-get install redis-server)")
    });
    let child = throwaway::redis_command(&program, ([127, 0, 0, 1], port).into(), dir)
        .args(extra)
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
        reap(self.pid);
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

impl Drop for RedisServer {
    fn drop(&mut self) {
        stop(self.pid, libc::SIGKILL, &self.dir);
    }
}

/// Stops a server (it may be stopped already) and removes its files, unless the test failed:
/// then they stay as evidence until the binary exits.
pub(super) fn stop(pid: u32, sig: i32, dir: &Path) {
    // SAFETY: kill(2) with a pid this harness started and a constant signal; an error (it
    // has exited) is fine.
    unsafe { libc::kill(pid as i32, sig) };
    reap(pid);
    if !std::thread::panicking() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Waits for our child `pid` to end, so that it does not stay a zombie until the binary exits.
fn reap(pid: u32) {
    // SAFETY: waitpid(2) on a pid this process spawned, with no status pointer; an error (not
    // our child, or reaped already) is fine.
    unsafe { libc::waitpid(pid as i32, std::ptr::null_mut(), 0) };
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
    pub ids: Option<(u32, u32)>,
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
    if let Some((uid, gid)) = postgres_ids() {
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

/// A hot standby of `primary` (`pg_basebackup -R`): read-only, replaying the primary's WAL.
pub fn start_standby(primary: &PgServer) -> PgServer {
    let dir = tempfile::Builder::new()
        .prefix("flusher-pg-standby-")
        .tempdir()
        .expect("temp dir")
        .keep();
    if let Some((uid, gid)) = primary.ids {
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown the standby dir");
    }
    let data = dir.join("data");
    let mut backup = Command::new(find_pg_bin("pg_basebackup"));
    backup
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &primary.port.to_string(),
            "-U",
            "postgres",
        ])
        // A fast checkpoint: else it waits for the next one, minutes away.
        .args(["-R", "-X", "stream", "-c", "fast", "-D"])
        .arg(&data)
        .stdout(Stdio::null());
    as_pg(&mut backup, primary.ids);
    let out = backup.output().expect("run pg_basebackup");
    assert!(
        out.status.success(),
        "pg_basebackup failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut server = PgServer {
        port: 0,
        pid: 0,
        dir,
        data,
        ids: primary.ids,
        extra: Vec::new(),
    };
    for _ in 0..5 {
        server.port = free_port();
        if let Some(pid) = server.spawn() {
            server.pid = pid;
            return server;
        }
    }
    panic!("the standby did not start on a free port (5 tries)");
}

fn start_postgres_with(extra: &[&str]) -> PgServer {
    let ids = postgres_ids();
    let dir = tempfile::Builder::new()
        .prefix("flusher-pg-")
        .tempdir()
        .expect("temp dir")
        .keep();
    let data = dir.join("data");
    if let Some((uid, gid)) = ids {
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown the PostgreSQL dir");
    }
    if let Err(e) = throwaway::initdb(&find_pg_bin("initdb"), &data, "postgres", ids) {
        panic!("initdb failed: {e:#}");
    }
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

pub(super) fn as_pg(cmd: &mut Command, ids: Option<(u32, u32)>) {
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
        let mut cmd = throwaway::postgres_command(
            &find_pg_bin("postgres"),
            &self.data,
            ([127, 0, 0, 1], self.port).into(),
            &self.dir,
            self.ids,
        );
        cmd.args(["-c", "synchronous_commit=off", "-c", "full_page_writes=off"])
            .args(["-c", "max_connections=300", "-c", "shared_buffers=128MB"])
            .args(&self.extra);
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
        reap(self.pid);
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

impl PgServer {
    /// Puts `rule` first in pg_hba.conf and reloads: it wins over the rules below.
    pub fn hba_first(&self, rule: &str) {
        let hba = self.data.join("pg_hba.conf");
        let rules = std::fs::read_to_string(&hba).expect("read pg_hba.conf");
        std::fs::write(&hba, format!("{rule}\n{rules}")).expect("write pg_hba.conf");
        pg_connect(self.port, "postgres")
            .and_then(|mut c| c.batch_execute("SELECT pg_reload_conf()"))
            .expect("reload pg_hba.conf");
        // The postmaster rereads it on SIGHUP, a moment later.
        std::thread::sleep(Duration::from_millis(300));
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        // SIGQUIT: the immediate shutdown, which takes the backends along.
        stop(self.pid, libc::SIGQUIT, &self.dir);
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
