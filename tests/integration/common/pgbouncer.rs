//! A private PgBouncer (Debian's `pgbouncer`) in front of a private PostgreSQL, as the
//! deployments that put one there run it.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::servers::{as_pg, free_port, pg_connect, postgres_ids, stop, watchdog};

pub struct PgBouncer {
    pub port: u16,
    pub pid: u32,
    dir: PathBuf,
}

/// Starts `pgbouncer` on a free port in front of the PostgreSQL on `pg_port`, any database,
/// pooling as `mode` (`transaction`, `session`, `statement`) with `pool_size` server
/// connections per database and user. Users log in without a password (`trust`). It runs
/// until dropped (or the watchdog stops it), so its child handle is not waited for.
#[allow(clippy::zombie_processes)]
pub fn start_pgbouncer(pg_port: u16, mode: &str, pool_size: u32) -> PgBouncer {
    let dir = tempfile::Builder::new()
        .prefix("flusher-pgbouncer-")
        .tempdir()
        .expect("temp dir")
        .keep();
    // It refuses to run as root: as the postgres user, like the server.
    let ids = postgres_ids();
    if let Some((uid, gid)) = ids {
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown the pgbouncer dir");
    }
    std::fs::write(dir.join("users.txt"), "\"postgres\" \"\"\n").expect("write the users");
    for _ in 0..5 {
        let port = free_port();
        let ini = dir.join("pgbouncer.ini");
        std::fs::write(
            &ini,
            format!(
                "[databases]\n* = host=127.0.0.1 port={pg_port}\n\n[pgbouncer]\n\
                 listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
                 auth_type = trust\nauth_file = {dir}/users.txt\npool_mode = {mode}\n\
                 default_pool_size = {pool_size}\nmax_client_conn = 200\n\
                 logfile = {dir}/pgbouncer.log\npidfile = {dir}/pgbouncer.pid\n",
                dir = dir.display()
            ),
        )
        .expect("write pgbouncer.ini");
        let mut cmd = Command::new("pgbouncer");
        cmd.arg(&ini)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        as_pg(&mut cmd, ids);
        let mut child = cmd.spawn().unwrap_or_else(|e| {
            panic!("could not start `pgbouncer` ({e}): install it (apt-get install pgbouncer)")
        });
        watchdog(child.id(), "INT", &dir);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break; // the port was taken: another
            }
            if pg_connect(port, "postgres").is_ok() {
                return PgBouncer {
                    port,
                    pid: child.id(),
                    dir,
                };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
    }
    panic!("pgbouncer did not start on a free port (5 tries)");
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        stop(self.pid, libc::SIGINT, &self.dir);
    }
}
