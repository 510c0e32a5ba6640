//! Private throwaway servers: a `redis-server` without persistence and an `initdb` cluster in
//! a temporary directory. The one place that knows how to start them here ([`find`],
//! [`redis_command`], [`initdb`], [`postgres_command`]), for `redis-flusher demo` on a machine
//! where nothing answers yet ([`Throwaway`]) and for the test suite's private servers
//! (`tests/common/servers.rs`, which adds what tests need: freezing, crashing, restarting).
//!
//! The demo's servers take the very address the demo was going to use, and are stopped and
//! deleted when the demo ends (also when it fails, and when the flusher is killed: they get
//! SIGTERM with their parent). Only for a local address with no password, TLS, cluster or
//! sentinel: anything configured that does not answer is an error to report, not a server to
//! stand in for.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::config::{Config, UsageError};

/// The servers started for one demo; stopped and removed on drop.
#[derive(Default)]
pub(crate) struct Throwaway {
    servers: Vec<Server>,
}

struct Server {
    what: &'static str,
    child: Child,
    /// Removed after the server stopped.
    dir: tempfile::TempDir,
    /// How to stop it cleanly: SIGTERM for Redis, SIGINT (fast shutdown) for Postgres.
    stop: i32,
}

impl Drop for Throwaway {
    fn drop(&mut self) {
        for s in self.servers.drain(..).rev() {
            // SAFETY: kill(2) on the pid of our own child, which has not been waited for.
            unsafe { libc::kill(s.child.id() as i32, s.stop) };
            let mut child = s.child;
            let deadline = Instant::now() + Duration::from_secs(10);
            while !matches!(child.try_wait(), Ok(Some(_))) {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            log::info!("stopped the throwaway {} and removed its files", s.what);
            drop(s.dir);
        }
    }
}

impl Throwaway {
    /// Starts what `cfg` names and does not answer, when it may stand in for it. Returns the
    /// servers started (none when both answer).
    pub(crate) fn start_missing(cfg: &Config) -> Result<Throwaway> {
        let mut out = Throwaway::default();
        if let Some(addr) = redis_to_start(cfg) {
            out.servers.push(start_redis(addr)?);
        }
        if let Some((addr, user, db)) = postgres_to_start(cfg) {
            out.servers.push(start_postgres(addr, &user, &db)?);
        }
        Ok(out)
    }

    pub fn started(&self) -> bool {
        !self.servers.is_empty()
    }
}

/// A local address where nothing listens (connection refused): the one case a demo starts
/// a server for.
fn refused_locally(host: &str, port: u16) -> Option<SocketAddr> {
    if !matches!(host, "localhost" | "127.0.0.1" | "::1") {
        return None;
    }
    let addrs: Vec<SocketAddr> = (host, port).to_socket_addrs().ok()?.collect();
    let refused = |a: &SocketAddr| {
        matches!(
            TcpStream::connect_timeout(a, Duration::from_secs(1)),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
        )
    };
    if addrs.iter().all(refused) {
        // IPv4 first: the servers listen where the demo will connect.
        addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or(addrs.first())
            .copied()
    } else {
        None
    }
}

fn redis_to_start(cfg: &Config) -> Option<SocketAddr> {
    let r = &cfg.redis;
    if r.cluster
        || r.sentinel.is_some()
        || r.tls.is_some()
        || r.info.redis_settings().password().is_some()
    {
        return None;
    }
    match r.info.addr() {
        redis::ConnectionAddr::Tcp(host, port) => refused_locally(host, *port),
        _ => None,
    }
}

fn postgres_to_start(cfg: &Config) -> Option<(SocketAddr, String, String)> {
    let c = &cfg.pg.config;
    if c.get_password().is_some() || c.get_hosts().len() != 1 {
        return None;
    }
    let postgres::config::Host::Tcp(host) = &c.get_hosts()[0] else {
        return None;
    };
    let port = c.get_ports().first().copied().unwrap_or(5432);
    let addr = refused_locally(host, port)?;
    Some((
        addr,
        c.get_user().unwrap_or("postgres").to_owned(),
        c.get_dbname().unwrap_or("postgres").to_owned(),
    ))
}

/// `name` on PATH, or in the highest `/usr/lib/postgresql/<version>/bin` (Debian's place).
pub fn find(name: &str) -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    let mut debian: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    debian.sort_by_key(|d| {
        d.parent()
            .and_then(|p| p.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    on_path
        .into_iter()
        .chain(debian.into_iter().rev())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn missing(addr: SocketAddr, program: &str, packages: &str) -> anyhow::Error {
    UsageError(format!(
        "nothing answers at {addr} and `{program}` is not installed, so the demo cannot start a \
         throwaway server there: install {packages}, or point the demo at a running server"
    ))
    .into()
}

/// Runs in the child before exec: it gets SIGTERM when the flusher dies, however it dies.
fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl(2) is async-signal-safe and touches only the child's own state.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
}

fn start_redis(addr: SocketAddr) -> Result<Server> {
    let program = find("redis-server").ok_or_else(|| {
        missing(
            addr,
            "redis-server",
            "Redis (Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis)",
        )
    })?;
    let dir = tempdir("redis")?;
    let mut cmd = redis_command(&program, addr, dir.path());
    die_with_parent(&mut cmd);
    let child = cmd
        .spawn()
        .with_context(|| format!("could not start {}", program.display()))?;
    let server = Server {
        what: "Redis",
        child,
        dir,
        stop: libc::SIGTERM,
    };
    wait_until_up(server, addr, || {
        redis::Client::open(format!("redis://{addr}/"))
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(1)))
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_ok()
    })
}

/// A `redis-server` at `addr`, keeping nothing on disk, its files in `dir`; its output
/// dropped.
pub fn redis_command(program: &Path, addr: SocketAddr, dir: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.args([
        "--port",
        &addr.port().to_string(),
        "--bind",
        &addr.ip().to_string(),
    ])
    .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
    .arg("--dir")
    .arg(dir)
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    cmd
}

/// As root, Postgres must run as another user: the `postgres` user the packages create (its
/// uid and gid); None when not root.
pub fn postgres_ids() -> Result<Option<(u32, u32)>> {
    // SAFETY: geteuid(2) cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").args([flag, "postgres"]).output().ok()?;
        String::from_utf8(out.stdout).ok()?.trim().parse().ok()
    };
    match (id("-u"), id("-g")) {
        (Some(u), Some(g)) => Ok(Some((u, g))),
        _ => Err(UsageError(
            "the demo runs as root and there is no `postgres` user to run a throwaway \
             PostgreSQL as (PostgreSQL refuses to run as root): run the demo as a normal user"
                .into(),
        )
        .into()),
    }
}

fn start_postgres(addr: SocketAddr, user: &str, db: &str) -> Result<Server> {
    let not_installed = || {
        missing(
            addr,
            "initdb",
            "the PostgreSQL server (Debian/Ubuntu: apt-get install postgresql; macOS: brew \
             install postgresql)",
        )
    };
    let initdb_program = find("initdb").ok_or_else(not_installed)?;
    let postgres = find("postgres").ok_or_else(not_installed)?;
    let ids = postgres_ids()?;
    let dir = tempdir("postgres")?;
    let data = dir.path().join("data");
    if let Some((uid, gid)) = ids {
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).with_context(|| {
            format!(
                "could not hand {} to the postgres user",
                dir.path().display()
            )
        })?;
    }
    initdb(&initdb_program, &data, user, ids)
        .context("initdb failed for the throwaway PostgreSQL")?;
    let mut cmd = postgres_command(&postgres, &data, addr, dir.path(), ids);
    die_with_parent(&mut cmd);
    let child = cmd
        .spawn()
        .with_context(|| format!("could not start {}", postgres.display()))?;
    let server = Server {
        what: "PostgreSQL",
        child,
        dir,
        stop: libc::SIGINT,
    };
    let url = |db: &str| {
        format!(
            "host={} port={} user={user} dbname={db}",
            addr.ip(),
            addr.port()
        )
    };
    let server = wait_until_up(server, addr, || {
        postgres::Client::connect(&url("postgres"), postgres::NoTls).is_ok()
    })?;
    if db != "postgres" {
        postgres::Client::connect(&url("postgres"), postgres::NoTls)
            .and_then(|mut c| {
                c.batch_execute(&format!("CREATE DATABASE \"{}\"", db.replace('"', "\"\"")))
            })
            .with_context(|| {
                format!("could not create database {db} in the throwaway PostgreSQL")
            })?;
    }
    Ok(server)
}

/// Runs `initdb` for a cluster in `data` whose superuser is `user`, trusting local logins,
/// as the `postgres` user (`ids`) when we are root.
pub fn initdb(program: &Path, data: &Path, user: &str, ids: Option<(u32, u32)>) -> Result<()> {
    let mut cmd = Command::new(program);
    cmd.args(["-U", user, "--auth=trust", "-E", "UTF8", "--no-sync", "-D"])
        .arg(data)
        .stdin(Stdio::null());
    as_owner(&mut cmd, ids);
    let out = cmd
        .output()
        .with_context(|| format!("could not run {}", program.display()))?;
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// A `postgres` serving `data` at `addr` (its socket in `socket_dir`), without fsync, as the
/// `postgres` user (`ids`) when we are root; its output dropped.
pub fn postgres_command(
    program: &Path,
    data: &Path,
    addr: SocketAddr,
    socket_dir: &Path,
    ids: Option<(u32, u32)>,
) -> Command {
    let mut cmd = Command::new(program);
    cmd.arg("-D")
        .arg(data)
        .args(["-p", &addr.port().to_string(), "-k"])
        .arg(socket_dir)
        .args(["-c", &format!("listen_addresses={}", addr.ip())])
        .args(["-c", "fsync=off"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    as_owner(&mut cmd, ids);
    cmd
}

/// Runs `cmd` as `ids` (uid, gid), if given.
fn as_owner(cmd: &mut Command, ids: Option<(u32, u32)>) {
    if let Some((uid, gid)) = ids {
        cmd.uid(uid).gid(gid);
    }
}

fn tempdir(what: &str) -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(&format!("redis-flusher-demo-{what}-"))
        .tempdir()
        .context("could not make a temporary directory for a throwaway server")
}

/// Waits up to 30 s for `up`; a server that exits or never answers is an error.
fn wait_until_up(mut server: Server, addr: SocketAddr, up: impl Fn() -> bool) -> Result<Server> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if up() {
            log::info!(
                "nothing answered at {addr}: started a throwaway {} there (files in {}), \
                 removed when the demo ends",
                server.what,
                server.dir.path().display()
            );
            return Ok(server);
        }
        if let Ok(Some(status)) = server.child.try_wait() {
            bail!(
                "the throwaway {} at {addr} exited at once ({status})",
                server.what
            );
        }
        if Instant::now() > deadline {
            let what = server.what;
            drop(Throwaway {
                servers: vec![server],
            });
            bail!("the throwaway {what} at {addr} did not answer within 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
