//! Redis Cluster: the same claims and journals as on one Redis, split by hash slot.
//!
//! A Lua script may touch keys of one slot only, so a claim is made slot by slot: for each
//! slot, one script on the master that owns it moves that slot's keys into the batch's
//! *sub-journal* for that slot, `<journal prefix>{<tag>}<batch id>`, where `<tag>` is
//! a short string that hashes to that slot (so the sub-journal lives beside the keys). A
//! batch is still applied in one Postgres transaction with one ledger row; its chunks are
//! named `<slot>/<field>` so that each can be deleted from its own sub-journal.
//!
//! Sealing guards one journal, but a run that lost its lock could still create a new
//! sub-journal for its batch in a slot that recovery never saw, and recovery would find the
//! batch in the ledger and delete those hits unapplied. So every run first raises a *fence*
//! in every slot (`<journal prefix>{<tag>}fence`) to its token, a Postgres transaction id
//! (`txid_current()`, which only grows), and every claim checks it: a run whose token is
//! lower than a slot's fence claims nothing there.
//!
//! Only masters are read (`CLUSTER SLOTS`); a topology change during a run (a failover)
//! fails the run's next command (`MOVED`, `READONLY`), nothing is lost, and the next run
//! reads the new topology and recovers.
//!
//! | file | holds |
//! |---|---|
//! | `mod.rs` | the masters, SCAN, the fences, `WAIT` |
//! | `claim.rs` | a claim: its keys grouped by slot, one script a slot, pipelined per master |
//! | `journals.rs` | listing, sealing, reading and deleting sub-journals, pipelined per master |

mod claim;
mod journals;

use std::collections::{BTreeMap, HashSet};
use std::ops::Range;

use anyhow::{Context, Result};
use redis::{Connection, Value};

use super::conn::{connect_to, facts, RedisFacts};
use super::scripts::scripts;
use super::slots::{slot, tags, Topology};
use crate::config::{redis_address, RedisConfig, UsageError};

/// Sends each master its pipeline (index in `nodes`, pipeline), then reads each one's
/// replies, all of type `T`: the masters work at the same time, where one pipeline after the
/// other would add up their times. A failure is reported once per master, with how many
/// commands failed, not as the list of thousands that a fence pipeline can produce; after
/// one, the connections are not used again (the run fails).
fn run_pipes<T: redis::FromRedisValue>(
    nodes: &mut [Node],
    pipes: Vec<(usize, redis::Pipeline)>,
    what: &str,
) -> Result<PerNode<T>> {
    for (idx, pipe) in &pipes {
        let node = &mut nodes[*idx];
        node.con
            .send_packed_command(&pipe.get_packed_pipeline())
            .with_context(|| format!("Redis at {}: {what} failed", node.addr))?;
    }
    let mut out = Vec::with_capacity(pipes.len());
    for (idx, pipe) in pipes {
        let node = &mut nodes[idx];
        let n = pipe.len();
        let mut replies = Vec::with_capacity(n);
        let mut first_error = None;
        let mut failed = 0;
        while replies.len() + failed < n {
            let value = node
                .con
                .recv_response()
                .with_context(|| format!("Redis at {}: {what} failed", node.addr))?;
            let reply = match value {
                Value::Push { .. } => continue, // RESP3 pushes are not replies
                Value::ServerError(e) => Err(redis::RedisError::from(e)),
                v => redis::from_redis_value::<T>(v).map_err(redis::RedisError::from),
            };
            match reply {
                Ok(r) => replies.push(r),
                Err(e) => {
                    failed += 1;
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            return Err(anyhow::Error::new(e).context(format!(
                "Redis at {}: {what} failed ({failed} of {n} commands)",
                node.addr
            )));
        }
        out.push((idx, replies));
    }
    Ok(out)
}

/// Each master's replies (index in `nodes`, its replies in the order sent).
type PerNode<T> = Vec<(usize, Vec<T>)>;

/// Keys, as SCAN lists them and a claim takes them.
type Keys = Vec<Vec<u8>>;

struct Node {
    addr: String,
    con: Connection,
}

pub struct Cluster {
    nodes: Vec<Node>,
    /// slot → index in `nodes` of its master.
    owner: Vec<usize>,
    journal_prefix: String,
    /// Where SCAN is on each master: its cursor, or `None` once its SCAN has ended.
    scan_at: Vec<Option<u64>>,
    /// The batch being claimed and the slots that already have its sub-journal.
    created: (String, HashSet<u16>),
    /// This run's token; claims carry it.
    pub token: i64,
    /// Keys a claim script takes at most (`--claim-size`).
    per_script: usize,
    /// The slots this run owns (`--shard`; every slot without): it SCANs only the masters
    /// that hold one of them and raises only their fences.
    scope: Range<u16>,
}

impl Cluster {
    /// Reads the topology from the first seed that answers and connects to every master.
    pub fn connect(
        cfg: &RedisConfig,
        journal_prefix: &str,
        per_script: usize,
        scope: Range<u16>,
    ) -> Result<Cluster> {
        let mut last = None;
        let mut topology = None;
        for seed in &cfg.seeds {
            let name = format!("{} (a node of {})", seed.addr(), cfg.display);
            match connect_to(cfg, seed, &name).and_then(|mut con| {
                redis::cmd("CLUSTER")
                    .arg("SLOTS")
                    .query::<Value>(&mut con)
                    .with_context(|| {
                        format!(
                            "CLUSTER SLOTS at {} failed (is it a cluster node?)",
                            seed.addr()
                        )
                    })
            }) {
                Ok(v) => {
                    topology = Some(v);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let Some(topology) = topology else {
            let e = last.unwrap_or_else(|| anyhow::anyhow!("no Redis Cluster seed given"));
            if crate::sys::error::text(&e).contains("cluster support disabled") {
                // A setting to change, not a server to wait for.
                return Err(UsageError(format!(
                    "Redis at {} is not a node of a Redis Cluster (cluster support is \
                     disabled there): unset `REDIS_CLUSTER` (`--redis-cluster`) to flush it as \
                     one Redis, or point `REDIS_URL` at a cluster node",
                    cfg.display
                ))
                .into());
            }
            return Err(e);
        };
        let Topology { owner, masters } = Topology::parse(topology)
            .with_context(|| format!("Redis Cluster at {}: reading CLUSTER SLOTS", cfg.display))?;
        let mut nodes = Vec::with_capacity(masters.len());
        let seed = cfg.seeds.first().context("no Redis Cluster seed given")?;
        for (host, port) in masters {
            // Over TLS when the seeds are (`rediss://`), checked against the name the cluster
            // announces (set `cluster-preferred-endpoint-type hostname` for certificates that
            // name hosts).
            let info = redis_address(&host, port, cfg.tls.is_some())
                .with_context(|| {
                    format!("CLUSTER SLOTS named a master {host}:{port} we cannot address")
                })?
                .set_redis_settings(seed.redis_settings().clone());
            let mut con = connect_to(
                cfg,
                &info,
                &format!("{host}:{port} (a node of {})", cfg.display),
            )?;
            let all = scripts();
            for s in [&all.claim, &all.inspect, &all.seal, &all.ack, &all.fence] {
                s.prepare_invoke()
                    .load(&mut con)
                    .with_context(|| format!("loading a script into Redis at {host}:{port}"))?;
            }
            nodes.push(Node {
                addr: format!("{host}:{port}"),
                con,
            });
        }
        Ok(Cluster {
            nodes,
            owner,
            journal_prefix: journal_prefix.to_owned(),
            scan_at: Vec::new(),
            created: (String::new(), HashSet::new()),
            token: 0,
            per_script,
            scope,
        })
    }

    /// The first master's facts (`check` reads them).
    pub fn facts(&mut self) -> Result<RedisFacts> {
        let node = &mut self.nodes[0];
        facts(&mut node.con, &node.addr)
    }

    pub fn masters(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.addr.clone()).collect()
    }

    /// `<journal prefix>{<tag of slot>}<name>`.
    pub fn key(&self, slot: u16, name: &str) -> String {
        format!("{}{{{}}}{name}", self.journal_prefix, tags()[slot as usize])
    }

    /// One SCAN step over the masters in turn: `cursor` 0 starts, and the returned cursor is
    /// 0 once every master's SCAN has ended. One master at a time, not all at once: a batch
    /// then holds keys of one master's slots (a third of them, with three masters), and its
    /// claim has about three times as many keys a slot, so a third as many scripts.
    pub fn scan(
        &mut self,
        cursor: u64,
        pattern: &[u8],
        count: usize,
    ) -> Result<(u64, Vec<Vec<u8>>)> {
        if cursor == 0 {
            // Only the masters that hold a slot of this run's.
            let mut holds = vec![false; self.nodes.len()];
            for s in self.scope.clone() {
                holds[self.owner[s as usize]] = true;
            }
            self.scan_at = holds.into_iter().map(|h| h.then_some(0)).collect();
        }
        let Some((idx, at)) =
            (self.scan_at.iter().enumerate()).find_map(|(i, c)| c.map(|c| (i, c)))
        else {
            return Ok((0, Vec::new()));
        };
        let mut keys = Vec::new();
        for (idx, next, found) in self.scan_steps(&[(idx, at)], pattern, count)? {
            self.scan_at[idx] = (next != 0).then_some(next);
            keys = found;
        }
        let more = self.scan_at.iter().any(Option::is_some);
        Ok((u64::from(more), keys))
    }

    /// One `SCAN cursor MATCH pattern COUNT count` on each (master, cursor) of `at`, sent to
    /// all before any reply is read: each master's next cursor and keys.
    fn scan_steps(
        &mut self,
        at: &[(usize, u64)],
        pattern: &[u8],
        count: usize,
    ) -> Result<Vec<(usize, u64, Keys)>> {
        let pipes = at
            .iter()
            .map(|&(idx, cursor)| {
                let mut pipe = redis::pipe();
                pipe.cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(count);
                (idx, pipe)
            })
            .collect();
        let replies: PerNode<(u64, Keys)> = run_pipes(&mut self.nodes, pipes, "SCAN")?;
        Ok(replies
            .into_iter()
            .flat_map(|(idx, r)| r.into_iter().map(move |(next, keys)| (idx, next, keys)))
            .collect())
    }

    /// Walks a whole SCAN of `pattern` on every master at once, handing each step's keys to
    /// `each`.
    fn scan_every_master(
        &mut self,
        pattern: &[u8],
        mut each: impl FnMut(Vec<Vec<u8>>) -> Result<()>,
    ) -> Result<()> {
        let mut at: Vec<(usize, u64)> = (0..self.nodes.len()).map(|i| (i, 0)).collect();
        while !at.is_empty() {
            let mut next_at = Vec::with_capacity(at.len());
            for (idx, next, keys) in self.scan_steps(&at, pattern, 1000)? {
                each(keys)?;
                if next != 0 {
                    next_at.push((idx, next));
                }
            }
            at = next_at;
        }
        Ok(())
    }

    /// Raises the fence of each slot this run owns (every slot without `--shard`) to
    /// `token`, pipelined per master, so that no run with a lower token can claim anything
    /// there any more.
    pub fn raise_fences(&mut self, token: i64) -> Result<()> {
        self.token = token;
        self.fence(self.scope.clone())?;
        Ok(())
    }

    /// Raises the fences of `slots` to this run's token: true if none is higher (no newer
    /// run has started on them), so that no older run can claim there any more. Recovery
    /// fences a journal's slots this way when they reach past the run's own (a journal a run
    /// of another `--shard` layout, or one without shards, left).
    pub fn fence_slots(&mut self, slots: Range<u16>) -> Result<bool> {
        Ok(self.fence(slots)? <= self.token)
    }

    /// Raises the fences of `slots` to this run's token; the highest fence among them after.
    fn fence(&mut self, slots: Range<u16>) -> Result<i64> {
        let hash = scripts().fence.get_hash();
        let mut pipes: Vec<(usize, redis::Pipeline)> =
            (0..self.nodes.len()).map(|i| (i, redis::pipe())).collect();
        for s in slots {
            let key = self.key(s, "fence");
            pipes[self.owner[s as usize]]
                .1
                .cmd("EVALSHA")
                .arg(hash)
                .arg(1)
                .arg(key)
                .arg(self.token);
        }
        pipes.retain(|(_, p)| !p.is_empty());
        let replies = run_pipes::<i64>(&mut self.nodes, pipes, "raising the fences")?;
        Ok(replies.into_iter().flat_map(|(_, r)| r).max().unwrap_or(0))
    }

    /// `EVAL "return 1"` naming each of `keys`, at its slot's master: refused if this user may
    /// not touch it.
    pub fn probe(&mut self, keys: &[String]) -> Result<()> {
        for key in keys {
            let node = &mut self.nodes[self.owner[slot(key.as_bytes()) as usize]];
            redis::cmd("EVAL")
                .arg("return 1")
                .arg(1)
                .arg(key)
                .query::<i64>(&mut node.con)
                .with_context(|| {
                    format!(
                        "Redis at {}: a script naming the keys a run touches failed",
                        node.addr
                    )
                })?;
        }
        Ok(())
    }

    /// `WAIT replicas timeout` on every master: the fewest replicas any of them reached.
    pub fn wait(&mut self, replicas: u32, timeout: std::time::Duration) -> Result<i64> {
        let mut fewest = i64::MAX;
        for node in &mut self.nodes {
            let n: i64 = redis::cmd("WAIT")
                .arg(replicas)
                .arg(timeout.as_millis() as u64)
                .query(&mut node.con)
                .with_context(|| format!("Redis at {}: WAIT failed", node.addr))?;
            fewest = fewest.min(n);
        }
        Ok(fewest)
    }

    /// Groups keys by slot, and slots by master.
    fn by_node(&self, keys: &[Vec<u8>]) -> BTreeMap<usize, BTreeMap<u16, Vec<Vec<u8>>>> {
        let mut out: BTreeMap<usize, BTreeMap<u16, Vec<Vec<u8>>>> = BTreeMap::new();
        for k in keys {
            let s = slot(k);
            out.entry(self.owner[s as usize])
                .or_default()
                .entry(s)
                .or_default()
                .push(k.clone());
        }
        out
    }
}
