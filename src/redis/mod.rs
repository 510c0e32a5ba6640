//! Everything that talks to Redis, behind one API: SCAN, the claim, journals (list, seal, read,
//! acknowledge), and the facts `check` reads.
//!
//! Two backends hold the counters: one server (`single.rs`) and a Redis Cluster (`cluster.rs`,
//! which splits each claim and journal by hash slot). How a server is reached is `conn.rs`'s
//! business, so another way to find it (Sentinel, say) adds a way to connect, not a backend.
//! The Lua lives in `lua/*.lua` (`scripts.rs`). A key's count is always in exactly one place,
//! its live key or a journal, because the claim moves it inside one Lua script, which Redis
//! runs atomically. What the counts mean and when a journal may be deleted is `flush/`'s
//! business.

mod cluster;
mod conn;
mod scripts;
mod single;
mod slots;

use std::time::Duration;

use anyhow::{bail, Result};

pub use conn::connect;
pub use conn::RedisFacts;
pub(crate) use conn::{glob_escape, scan_all};
pub use scripts::Acked;
pub use scripts::Contents;
pub use slots::slot;

use crate::config::{RedisConfig, SourceConfig};
use crate::model::Claimed;
use cluster::Cluster;
use single::Single;

/// The most bytes of keys one claim script takes (Redis runs a script alone: the app's
/// INCRs wait for it), whatever `--claim-size` says; at least one key.
pub const SCRIPT_BYTES: usize = 1 << 20;

/// A journal that recovery found: a batch's id, its key for messages, and where it lives.
#[derive(Debug, Clone)]
pub struct Journal {
    pub id: String,
    /// The journal's Redis key (on a cluster, with `{…}` for the slot tags).
    pub key: String,
    /// On a cluster, the slots holding one of its sub-journals; empty on one Redis.
    slots: Vec<u16>,
}

enum Backend {
    Single(Single),
    Cluster(Cluster),
}

pub struct RedisSource {
    backend: Backend,
    journal_prefix: String,
    /// The pattern's prefix; a code is a key past it.
    prefix: Vec<u8>,
    prefix_len: usize,
    unknown_key: String,
    /// `--redis-wait-replicas`, and how long `WAIT` may wait for them.
    wait: (u32, Duration),
    /// What this run's batches are for (pattern, table, columns, database), recorded in each
    /// journal it starts; a journal that records another is not this run's to recover.
    target: String,
}

impl RedisSource {
    pub fn connect(cfg: &RedisConfig, source: &SourceConfig) -> Result<RedisSource> {
        let backend = if cfg.cluster {
            Backend::Cluster(Cluster::connect(
                cfg,
                &source.journal_prefix,
                source.claim_size,
                source.shard.slots(),
            )?)
        } else {
            Backend::Single(Single::new(
                conn::connect(cfg)?,
                &cfg.display,
                &source.journal_prefix,
            ))
        };
        Ok(RedisSource {
            backend,
            journal_prefix: source.journal_prefix.clone(),
            prefix: source.prefix.clone(),
            prefix_len: source.prefix.len(),
            unknown_key: source.unknown_key.clone(),
            // Within the socket's read timeout, which would otherwise end the wait as an error.
            wait: (
                cfg.wait_replicas,
                (cfg.command_timeout * 3 / 4).max(Duration::from_millis(100)),
            ),
            target: String::new(),
        })
    }

    /// What the journals this source starts are for, and which it may seal: see
    /// [`crate::config::FlushConfig::target_record`]. Unset, journals record nothing and any
    /// may be sealed (as before 0.2).
    pub(crate) fn set_target(&mut self, target: &str) {
        self.target = target.to_owned();
    }

    /// On Redis Cluster: the masters' addresses.
    pub fn masters(&self) -> Option<Vec<String>> {
        match &self.backend {
            Backend::Single(_) => None,
            Backend::Cluster(c) => Some(c.masters()),
        }
    }

    /// On Redis Cluster, raises the fence of every slot this run owns to `token` so that an
    /// older run can claim nothing more there; must come before recovery lists the journals.
    /// Nothing to do on one Redis, where sealing suffices.
    pub fn raise_fences(&mut self, token: i64) -> Result<()> {
        match &mut self.backend {
            Backend::Single(_) => Ok(()),
            Backend::Cluster(c) => c.raise_fences(token),
        }
    }

    /// On Redis Cluster, raises the fences of `slots` to this run's token: false if a newer
    /// run has raised one of them higher (then this run must leave what is in those slots to
    /// it). Always true on one Redis, where sealing a journal suffices.
    pub fn fence_slots(&mut self, slots: std::ops::Range<u16>) -> Result<bool> {
        match &mut self.backend {
            Backend::Single(_) => Ok(true),
            Backend::Cluster(c) => c.fence_slots(slots),
        }
    }

    /// This run's token, for a claim connection that did not raise the fences itself.
    pub(crate) fn set_token(&mut self, token: i64) {
        if let Backend::Cluster(c) = &mut self.backend {
            c.token = token;
        }
    }

    /// Whether this user may touch the keys a run does (the counters, the journals and their
    /// index, and the unknown-codes hash if `parking`): an `EVAL` of nothing, naming them, which
    /// an ACL refuses as a claim would, but before anything has moved.
    pub(crate) fn may_touch(&mut self, parking: bool) -> Result<()> {
        let mut keys = vec![
            format!("{}~probe", String::from_utf8_lossy(&self.prefix)),
            format!("{}~probe", self.journal_prefix),
            format!("{}index", self.journal_prefix),
        ];
        if parking {
            keys.push(self.unknown_key.clone());
        }
        match &mut self.backend {
            Backend::Single(s) => s.probe(&keys),
            Backend::Cluster(c) => c.probe(&keys),
        }
    }

    /// One `SCAN` step. `count` is a hint to the server; keep it ≤ ~2000 so one call never
    /// stalls Redis for long.
    pub fn scan(
        &mut self,
        cursor: u64,
        pattern: &[u8],
        count: usize,
    ) -> Result<(u64, Vec<Vec<u8>>)> {
        match &mut self.backend {
            Backend::Single(s) => s.scan(cursor, pattern, count),
            Backend::Cluster(c) => c.scan(cursor, pattern, count),
        }
    }

    /// How far a SCAN is that returned `cursor`, from 0 to 1: the share of the keyspace's
    /// buckets it has visited. Redis walks the buckets in the order of the cursor's bits
    /// reversed, so the reversed cursor is that share. An estimate: what it is used for
    /// (batch sizes) needs no more. 0 (no estimate) on a cluster, whose servers may keep the
    /// slot in the cursor's low bits (Redis 7.4 and later).
    pub(crate) fn scan_progress(&self, cursor: u64) -> f64 {
        match &self.backend {
            Backend::Single(_) if cursor == 0 => 1.0,
            Backend::Single(_) => cursor.reverse_bits() as f64 / 2f64.powi(64),
            Backend::Cluster(_) => 0.0,
        }
    }

    /// The server's version, persistence, eviction policy, and whether we may run scripts
    /// (on a cluster, the first master's).
    pub fn facts(&mut self) -> Result<RedisFacts> {
        match &mut self.backend {
            Backend::Single(s) => s.facts(),
            Backend::Cluster(c) => c.facts(),
        }
    }

    /// With `--redis-wait-replicas N`, waits until N replicas have every write this connection
    /// made (a batch's claims, a journal's seal), or fails naming `what`: then the batch must
    /// not be committed, and it waits in its journal.
    pub(crate) fn confirm_replicated(&mut self, what: &str) -> Result<()> {
        let (wanted, timeout) = self.wait;
        if wanted == 0 {
            return Ok(());
        }
        let acked = match &mut self.backend {
            Backend::Single(s) => s.wait(wanted, timeout)?,
            Backend::Cluster(c) => c.wait(wanted, timeout)?,
        };
        if acked < i64::from(wanted) {
            bail!(
                "only {acked} of the {wanted} replicas `--redis-wait-replicas` asks for confirmed \
                 {what} within {} ms: it is not committed and waits in its journal for the next \
                 run (are the replicas up and connected?)",
                timeout.as_millis()
            );
        }
        Ok(())
    }

    /// Whether a claim should hold as many keys as its batch has room for (a cluster, which
    /// claims one script a slot: the more keys a claim holds, the more share a script), not
    /// one script's worth (`--claim-size`).
    pub fn groups_by_slot(&self) -> bool {
        matches!(self.backend, Backend::Cluster(_))
    }

    /// Claims `keys` into the chunk `field` of batch `batch_id`'s journal, atomically. Keys
    /// that are gone by now are skipped; bad values and wrong types are left untouched and
    /// reported. `create` for the batch's first chunk with entries (a cluster tracks that per
    /// slot itself).
    pub fn claim(
        &mut self,
        batch_id: &str,
        field: &str,
        create: bool,
        keys: &[Vec<u8>],
    ) -> Result<Claimed> {
        match &mut self.backend {
            Backend::Single(s) => {
                s.claim(batch_id, field, create, keys, self.prefix_len, &self.target)
            }
            Backend::Cluster(c) => c.claim(batch_id, field, keys, self.prefix_len, &self.target),
        }
    }

    /// Reads what `claim` would take, changing nothing (for `--dry-run` and `status`).
    pub fn inspect(&mut self, keys: &[Vec<u8>]) -> Result<Claimed> {
        match &mut self.backend {
            Backend::Single(s) => s.inspect(keys, self.prefix_len),
            Backend::Cluster(c) => c.inspect(keys, self.prefix_len),
        }
    }

    /// Every journal left by failed runs (or by a crash of this run). With `repair`, a lost
    /// journal index is rebuilt on one Redis (a cluster has none: each master is SCANned).
    pub fn journals(&mut self, repair: bool) -> Result<Vec<Journal>> {
        Ok(match &mut self.backend {
            Backend::Single(s) => s
                .journals(repair)?
                .into_iter()
                .map(|id| Journal {
                    key: s.journal_key(&id),
                    id,
                    slots: Vec::new(),
                })
                .collect(),
            Backend::Cluster(c) => c
                .journals()?
                .into_iter()
                .map(|(id, slots)| Journal {
                    key: format!("{}{{…}}{id}", self.journal_prefix),
                    id,
                    slots,
                })
                .collect(),
        })
    }

    /// Seals a journal (no more chunks can join it) and returns its contents; unless it
    /// records another target than this source's: then that target, and it is left alone.
    pub fn seal(&mut self, journal: &Journal) -> Result<std::result::Result<Contents, String>> {
        match &mut self.backend {
            Backend::Single(s) => s.seal(&journal.id, &self.target),
            Backend::Cluster(c) => c.seal(&journal.id, &journal.slots, &self.target),
        }
    }

    /// Whether `contents` is another target's than this source's (as `seal` would judge).
    pub(crate) fn is_other(&self, contents: &Contents) -> bool {
        contents.target.as_ref().is_some_and(|t| *t != self.target)
    }

    /// Reads a journal's contents without sealing it.
    pub fn read(&mut self, journal: &Journal) -> Result<Contents> {
        match &mut self.backend {
            Backend::Single(s) => s.read(&journal.id),
            Backend::Cluster(c) => c.read(&journal.id, &journal.slots),
        }
    }

    /// Deletes a batch's chunks from its journal, after its transaction committed, parking
    /// `park` (unknown codes' hits) in the unknown-codes hash in the same atomic step.
    pub fn ack(
        &mut self,
        batch_id: &str,
        fields: &[String],
        park: &[(String, i64)],
    ) -> Result<Acked> {
        if fields.is_empty() {
            return Ok(Acked::Done(Vec::new()));
        }
        match &mut self.backend {
            Backend::Single(s) => s.ack(batch_id, fields, &self.unknown_key, park),
            Backend::Cluster(c) => {
                // Config refuses --keep-unknown on a cluster: the hash is in a slot of its own.
                if !park.is_empty() {
                    bail!("BUG: parking unknown codes on Redis Cluster");
                }
                c.ack(batch_id, fields)?;
                Ok(Acked::Done(Vec::new()))
            }
        }
    }
}
