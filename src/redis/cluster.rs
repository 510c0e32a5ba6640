//! Redis Cluster: the same claims and journals as on one Redis, split by hash slot.
//!
//! A Lua script may touch keys of one slot only, so a chunk of keys is claimed slot by slot:
//! for each slot, one script on the master that owns it moves that slot's keys into the
//! batch's *sub-journal* for that slot, `<journal prefix>{<tag>}<batch id>`, where `<tag>` is
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

use std::collections::{BTreeMap, HashSet};

use anyhow::{Context, Result};
use redis::{Connection, Value};

use super::conn::{connect_to, facts, glob_escape, scan_all, scan_step, RedisFacts};
use super::scripts::{self, scripts, Contents};
use super::slots::{slot, tags, Topology, SLOTS};
use crate::config::{redis_address, RedisConfig, UsageError};
use crate::model::Claimed;

/// Runs a pipeline whose replies are all `T`. A failure is reported once, with how many
/// commands failed, not as the list of thousands that a fence pipeline can produce.
fn run_pipe<T: redis::FromRedisValue>(
    pipe: &mut redis::Pipeline,
    con: &mut Connection,
    addr: &str,
    what: &str,
) -> Result<Vec<T>> {
    let results: Vec<redis::RedisResult<T>> = pipe
        .ignore_errors()
        .query(con)
        .with_context(|| format!("Redis at {addr}: {what} failed"))?;
    let n = results.len();
    let failed = results.iter().filter(|r| r.is_err()).count();
    results
        .into_iter()
        .collect::<redis::RedisResult<Vec<T>>>()
        .with_context(|| format!("Redis at {addr}: {what} failed ({failed} of {n} commands)"))
}

struct Node {
    addr: String,
    con: Connection,
}

pub struct Cluster {
    nodes: Vec<Node>,
    /// slot → index in `nodes` of its master.
    owner: Vec<usize>,
    journal_prefix: String,
    /// Where SCAN is: (node, that node's cursor).
    scan_at: (usize, u64),
    /// The batch being claimed and the slots that already have its sub-journal.
    created: (String, HashSet<u16>),
    /// This run's token; claims carry it.
    pub token: i64,
}

impl Cluster {
    /// Reads the topology from the first seed that answers and connects to every master.
    pub fn connect(cfg: &RedisConfig, journal_prefix: &str) -> Result<Cluster> {
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
            scan_at: (0, 0),
            created: (String::new(), HashSet::new()),
            token: 0,
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
    /// 0 once every master's SCAN has ended.
    pub fn scan(
        &mut self,
        cursor: u64,
        pattern: &[u8],
        count: usize,
    ) -> Result<(u64, Vec<Vec<u8>>)> {
        if cursor == 0 {
            self.scan_at = (0, 0);
        }
        let (node, at) = self.scan_at;
        let n = &mut self.nodes[node];
        let (next, keys) = scan_step(&mut n.con, at, pattern, count)
            .with_context(|| format!("Redis at {}: SCAN failed", n.addr))?;
        self.scan_at = if next != 0 {
            (node, next)
        } else {
            (node + 1, 0)
        };
        let more = self.scan_at.0 < self.nodes.len();
        Ok((u64::from(more), keys))
    }

    /// Raises every slot's fence to `token` (pipelined, per master), so that no run with a
    /// lower token can claim anything any more.
    pub fn raise_fences(&mut self, token: i64) -> Result<()> {
        self.token = token;
        let hash = scripts().fence.get_hash();
        for (idx, node) in self.nodes.iter_mut().enumerate() {
            let mut pipe = redis::pipe();
            for s in 0..SLOTS {
                if self.owner[s] == idx {
                    let key = format!("{}{{{}}}fence", self.journal_prefix, tags()[s]);
                    pipe.cmd("EVALSHA").arg(hash).arg(1).arg(key).arg(token);
                }
            }
            run_pipe::<i64>(&mut pipe, &mut node.con, &node.addr, "raising the fences")?;
        }
        Ok(())
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

    /// Claims `keys` into batch `batch_id`'s sub-journals, field `field` in each; one script
    /// per slot, pipelined per master. Returns what was taken and the `<slot>/<field>` chunks
    /// written.
    pub fn claim(
        &mut self,
        batch_id: &str,
        field: &str,
        keys: &[Vec<u8>],
        prefix_len: usize,
        target: &str,
    ) -> Result<Claimed> {
        if self.created.0 != batch_id {
            self.created = (batch_id.to_owned(), HashSet::new());
        }
        let groups = self.by_node(keys);
        let mut out = Claimed::default();
        for (idx, slots) in groups {
            let mut pipe = redis::pipe();
            let order: Vec<u16> = slots.keys().copied().collect();
            for (&s, ks) in &slots {
                let create = !self.created.1.contains(&s);
                pipe.cmd("EVALSHA")
                    .arg(scripts().claim.get_hash())
                    .arg(2 + ks.len())
                    .arg(self.key(s, batch_id))
                    .arg(self.key(s, "fence"))
                    .arg(ks)
                    .arg(prefix_len)
                    .arg(field)
                    .arg(if create { "1" } else { "0" })
                    .arg(batch_id)
                    .arg(self.token)
                    .arg(target);
            }
            let node = &mut self.nodes[idx];
            let replies: Vec<(Vec<u8>, Vec<Vec<u8>>)> =
                run_pipe(&mut pipe, &mut node.con, &node.addr, "the claim script")?;
            for (s, (packed, bad)) in order.into_iter().zip(replies) {
                if !packed.is_empty() {
                    self.created.1.insert(s);
                    out.fields.push(format!("{s}/{field}"));
                }
                let claimed = scripts::claimed(&packed, bad)?;
                out.entries.extend(claimed.entries);
                out.bad.extend(claimed.bad);
            }
        }
        Ok(out)
    }

    /// Reads what a claim would take, per slot, changing nothing.
    pub fn inspect(&mut self, keys: &[Vec<u8>], prefix_len: usize) -> Result<Claimed> {
        let mut out = Claimed::default();
        for (idx, slots) in self.by_node(keys) {
            let mut pipe = redis::pipe();
            for ks in slots.values() {
                pipe.cmd("EVALSHA")
                    .arg(scripts().inspect.get_hash())
                    .arg(ks.len())
                    .arg(ks)
                    .arg(prefix_len);
            }
            let node = &mut self.nodes[idx];
            let replies: Vec<(Vec<u8>, Vec<Vec<u8>>)> = run_pipe(
                &mut pipe,
                &mut node.con,
                &node.addr,
                "the inspection script",
            )?;
            for (packed, bad) in replies {
                let claimed = scripts::claimed(&packed, bad)?;
                out.entries.extend(claimed.entries);
                out.bad.extend(claimed.bad);
            }
        }
        Ok(out)
    }

    /// Every batch with a sub-journal on any master (a SCAN of each master for the journal
    /// prefix), with the slots that hold one, sorted by id.
    pub fn journals(&mut self) -> Result<Vec<(String, Vec<u16>)>> {
        let pattern = format!("{}*", glob_escape(&self.journal_prefix));
        let mut located: BTreeMap<String, Vec<u16>> = BTreeMap::new();
        let prefix = self.journal_prefix.as_bytes();
        for node in &mut self.nodes {
            scan_all(&mut node.con, pattern.as_bytes(), |keys| {
                for k in keys {
                    let Some(rest) = k.strip_prefix(prefix) else {
                        continue;
                    };
                    let Some(close) = rest.iter().position(|&b| b == b'}') else {
                        continue;
                    };
                    let name = String::from_utf8(rest[close + 1..].to_vec()).context(
                        "a journal key is not UTF-8; it was not written by redis-flusher",
                    )?;
                    // `index`: the per-slot index that versions before 0.2 wrote.
                    if name == "index" || name == "fence" || name.is_empty() {
                        continue;
                    }
                    located.entry(name).or_default().push(slot(&k));
                }
                Ok(())
            })
            .with_context(|| format!("Redis at {}: SCAN for journals failed", node.addr))?;
        }
        Ok(located
            .into_iter()
            .map(|(id, mut slots)| {
                slots.sort_unstable();
                slots.dedup();
                (id, slots)
            })
            .collect())
    }

    /// Seals each sub-journal of `batch_id` (in `slots`) and returns their contents, chunks
    /// named `<slot>/<field>`; unless they record a target other than `target` (all of a
    /// batch's record the same): then that target, and they are left as they are.
    pub fn seal(
        &mut self,
        batch_id: &str,
        slots: &[u16],
        target: &str,
    ) -> Result<Result<Contents, String>> {
        let mut all = Contents::default();
        for &s in slots {
            // No index on a cluster: the journal stands in for it (seal.lua).
            let reply = self.at_master(s, batch_id, "sealing", |con, journal| {
                scripts()
                    .seal
                    .key(journal)
                    .key(journal)
                    .arg(batch_id)
                    .arg(target)
                    .invoke(con)
            })?;
            match scripts::sealed(reply)? {
                Ok(contents) => all.add(s, contents),
                Err(other) => return Ok(Err(other)),
            }
        }
        Ok(Ok(all))
    }

    /// Reads each sub-journal of `batch_id` (in `slots`), changing nothing.
    pub fn read(&mut self, batch_id: &str, slots: &[u16]) -> Result<Contents> {
        let mut all = Contents::default();
        for &s in slots {
            let flat = self.at_master(s, batch_id, "reading", |con, journal| {
                redis::cmd("HGETALL").arg(journal).query(con)
            })?;
            all.add(s, scripts::contents(flat)?);
        }
        Ok(all)
    }

    /// Runs `call` (connection, sub-journal key) at the master of `slot`'s sub-journal of
    /// `batch_id`; `doing` names the step in errors.
    fn at_master<T>(
        &mut self,
        slot: u16,
        batch_id: &str,
        doing: &str,
        call: impl FnOnce(&mut Connection, &str) -> redis::RedisResult<T>,
    ) -> Result<T> {
        let journal = self.key(slot, batch_id);
        let node = &mut self.nodes[self.owner[slot as usize]];
        call(&mut node.con, &journal)
            .with_context(|| format!("Redis at {}: {doing} journal {journal} failed", node.addr))
    }

    /// Deletes a committed batch's chunks, sub-journal by sub-journal. True if every one was
    /// still there.
    pub fn ack(&mut self, batch_id: &str, fields: &[String]) -> Result<bool> {
        let mut by_slot: BTreeMap<u16, Vec<&str>> = BTreeMap::new();
        for f in fields {
            let (s, field) = f
                .split_once('/')
                .and_then(|(s, field)| Some((s.parse::<u16>().ok()?, field)))
                .with_context(|| format!("BUG: chunk {f:?} names no slot"))?;
            by_slot.entry(s).or_default().push(field);
        }
        let mut all = true;
        for (s, fs) in by_slot {
            let journal = self.key(s, batch_id);
            let node = &mut self.nodes[self.owner[s as usize]];
            let mut inv = scripts().ack.prepare_invoke();
            // No index and nothing to park on a cluster: the journal stands in for both
            // (ack.lua).
            inv.key(&journal)
                .key(&journal)
                .key(&journal)
                .arg(batch_id)
                .arg(fs.len());
            for f in fs {
                inv.arg(f);
            }
            let (done, _): (i64, Vec<String>) = inv.invoke(&mut node.con).with_context(|| {
                format!("Redis at {}: deleting journal {journal} failed", node.addr)
            })?;
            all &= done == 1;
        }
        Ok(all)
    }
}
