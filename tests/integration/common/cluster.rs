//! A private Redis Cluster, made with `redis-cli --cluster create`.

use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use super::env::scan_keys;
use super::pki::Pki;
use super::servers::{free_port, start_redis, RedisServer};

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

    /// Slot → the port of the master that owns it.
    pub fn owners(&self) -> Vec<u16> {
        let mut owner = vec![0u16; 16384];
        for (port, slots) in self.masters() {
            for s in slots {
                owner[s as usize] = port;
            }
        }
        owner
    }

    /// Sets `<prefix>c1..c<n>` to `f(i)` on the masters that own them; returns the sum.
    pub fn set_many(&self, prefix: &str, n: u32, f: impl Fn(u32) -> i64) -> i64 {
        let owner = self.owners();
        let mut pipes: std::collections::BTreeMap<u16, redis::Pipeline> = Default::default();
        let mut sum = 0;
        for i in 1..=n {
            let key = format!("{prefix}c{i}");
            let port = owner[redis_flusher::redis::slot(key.as_bytes()) as usize];
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
