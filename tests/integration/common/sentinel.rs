//! A private Redis with high availability: a master, a replica, and three sentinels
//! (`redis-server <conf> --sentinel`) watching them as `mymaster`.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::servers::{free_port, start_redis, stop, watchdog, RedisServer};

/// One sentinel process.
pub struct SentinelNode {
    pub port: u16,
    pid: u32,
    dir: PathBuf,
}

impl Drop for SentinelNode {
    fn drop(&mut self) {
        stop(self.pid, libc::SIGKILL, &self.dir);
    }
}

pub struct Sentinels {
    pub master: RedisServer,
    pub replica: RedisServer,
    pub nodes: Vec<SentinelNode>,
}

fn con(port: u16) -> redis::Connection {
    redis::Client::open(format!("redis://127.0.0.1:{port}/"))
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(5)))
        .expect("connect to a private Redis")
}

/// `INFO replication`'s `role`.
pub fn role(port: u16) -> String {
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query(&mut con(port))
        .expect("INFO replication");
    info.lines()
        .find_map(|l| l.strip_prefix("role:"))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// Spawns a sentinel watching the master on `master` as `mymaster`.
#[allow(clippy::zombie_processes)]
fn spawn_sentinel(master: u16) -> SentinelNode {
    let dir = tempfile::Builder::new()
        .prefix("flusher-sentinel-")
        .tempdir()
        .expect("temp dir")
        .keep();
    for _ in 0..5 {
        let port = free_port();
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\n\
                 sentinel monitor mymaster 127.0.0.1 {master} 2\n\
                 sentinel down-after-milliseconds mymaster 2000\n\
                 sentinel failover-timeout mymaster 10000\n\
                 sentinel parallel-syncs mymaster 1\n",
                dir.display()
            ),
        )
        .expect("write sentinel.conf");
        let mut child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("could not start `redis-server --sentinel` ({e}): install redis-server")
            });
        watchdog(child.id(), "KILL", &dir);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            if redis::Client::open(format!("redis://127.0.0.1:{port}/"))
                .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                .is_ok()
            {
                return SentinelNode {
                    port,
                    pid: child.id(),
                    dir,
                };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
    }
    panic!("a sentinel did not start on a free port (5 tries)");
}

/// Starts a master, a replica of it, and three sentinels, and waits until the sentinels know
/// the replica and each other.
pub fn start_sentinels() -> Sentinels {
    // No 5 s wait before a replica's first sync (the default, to batch replicas together).
    let fast = ["--appendonly", "yes", "--repl-diskless-sync-delay", "0"];
    let master = start_redis(&fast);
    let of = master.port.to_string();
    let replica = start_redis(&[&fast[..], &["--replicaof", "127.0.0.1", &of]].concat());
    let nodes: Vec<SentinelNode> = (0..3).map(|_| spawn_sentinel(master.port)).collect();
    let s = Sentinels {
        master,
        replica,
        nodes,
    };
    s.wait_until(s.master.port, |n| {
        n.replicas_known(s.replica.port) && n.sentinels_known() >= 2
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while !link_up(s.replica.port) {
        assert!(
            Instant::now() < deadline,
            "the replica did not sync in 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    s
}

impl Sentinels {
    /// `REDIS_SENTINELS` for these.
    pub fn list(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The port of the master the sentinels name now.
    pub fn master_port(&self) -> u16 {
        let (_, port): (String, u16) = redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg("mymaster")
            .query(&mut con(self.nodes[0].port))
            .expect("SENTINEL GET-MASTER-ADDR-BY-NAME");
        port
    }

    /// A connection to the current master.
    pub fn master_con(&self) -> redis::Connection {
        con(self.master_port())
    }

    /// Fails the master over to the replica (`SENTINEL FAILOVER`), and waits until the
    /// sentinels name it, it says it is a master, and the old master replicates from it.
    pub fn failover(&self) -> u16 {
        let old = self.master_port();
        let new = if old == self.master.port {
            self.replica.port
        } else {
            self.master.port
        };
        let _: () = redis::cmd("SENTINEL")
            .arg("FAILOVER")
            .arg("mymaster")
            .query(&mut con(self.nodes[0].port))
            .expect("SENTINEL FAILOVER");
        self.wait_until(new, |n| n.replicas_known(old));
        let deadline = Instant::now() + Duration::from_secs(60);
        while !(role(new) == "master" && role(old) == "slave" && link_up(old)) {
            assert!(
                Instant::now() < deadline,
                "the failover did not settle in 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        new
    }

    /// Waits until every sentinel names `master` and `ok` holds for it.
    fn wait_until(&self, master: u16, ok: impl Fn(&SentinelView) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let all = self.nodes.iter().all(|n| {
                let view = SentinelView { port: n.port };
                view.master() == Some(master) && ok(&view)
            });
            if all {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the sentinels did not agree on master {master} in 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Whether a replica's link to its master is up.
fn link_up(port: u16) -> bool {
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query(&mut con(port))
        .unwrap_or_default();
    info.contains("master_link_status:up")
}

/// What one sentinel knows.
struct SentinelView {
    port: u16,
}

impl SentinelView {
    fn master(&self) -> Option<u16> {
        redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg("mymaster")
            .query::<Option<(String, u16)>>(&mut con(self.port))
            .ok()
            .flatten()
            .map(|(_, p)| p)
    }

    fn replicas_known(&self, replica: u16) -> bool {
        let replicas: Vec<Vec<String>> = redis::cmd("SENTINEL")
            .arg("REPLICAS")
            .arg("mymaster")
            .query(&mut con(self.port))
            .unwrap_or_default();
        replicas.iter().any(|r| {
            r.windows(2)
                .any(|w| w[0] == "port" && w[1] == replica.to_string())
                && !r
                    .windows(2)
                    .any(|w| w[0] == "flags" && w[1].contains("down"))
        })
    }

    fn sentinels_known(&self) -> usize {
        let others: Vec<redis::Value> = redis::cmd("SENTINEL")
            .arg("SENTINELS")
            .arg("mymaster")
            .query(&mut con(self.port))
            .unwrap_or_default();
        others.len()
    }
}
