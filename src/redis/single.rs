//! One Redis server: a batch's journal is one hash, `<journal prefix><batch id>`, and the ids
//! of all journals are kept in the set `<journal prefix>index`, so that recovery need not SCAN
//! the keyspace.

use anyhow::{Context, Result};
use redis::Connection;

use super::conn::{facts, glob_escape, scan_all, scan_step, RedisFacts};
use super::scripts::{self, scripts, Acked, Contents};
use crate::model::Claimed;

/// This member keeps the index from vanishing when it has no journal: a missing index means
/// it was lost, and recovery then falls back to a full SCAN (a pass over the whole keyspace
/// before any work).
const INDEX_SENTINEL: &str = "-";

pub(crate) struct Single {
    con: Connection,
    /// The server as errors name it.
    display: String,
    journal_prefix: String,
}

impl Single {
    pub fn new(con: Connection, display: &str, journal_prefix: &str) -> Single {
        Single {
            con,
            display: display.to_owned(),
            journal_prefix: journal_prefix.to_owned(),
        }
    }

    fn ctx(&self, what: &str) -> String {
        format!("Redis at {}: {what} failed", self.display)
    }

    /// The Redis key of a batch's journal.
    pub(crate) fn journal_key(&self, batch_id: &str) -> String {
        format!("{}{batch_id}", self.journal_prefix)
    }

    fn index_key(&self) -> String {
        format!("{}index", self.journal_prefix)
    }

    pub fn facts(&mut self) -> Result<RedisFacts> {
        facts(&mut self.con, &self.display)
    }

    pub fn scan(
        &mut self,
        cursor: u64,
        pattern: &[u8],
        count: usize,
    ) -> Result<(u64, Vec<Vec<u8>>)> {
        scan_step(&mut self.con, cursor, pattern, count).with_context(|| self.ctx("SCAN"))
    }

    pub fn claim(
        &mut self,
        batch_id: &str,
        field: &str,
        create: bool,
        keys: &[Vec<u8>],
        prefix_len: usize,
        target: &str,
    ) -> Result<Claimed> {
        let mut inv = scripts().claim.prepare_invoke();
        inv.key(self.journal_key(batch_id)).key(self.index_key());
        for k in keys {
            inv.key(k.as_slice());
        }
        inv.arg(prefix_len)
            .arg(field)
            .arg(if create { "1" } else { "0" })
            .arg(batch_id)
            .arg("")
            .arg(target);
        let (packed, bad): (Vec<u8>, Vec<Vec<u8>>) = inv
            .invoke(&mut self.con)
            .with_context(|| self.ctx("the claim script"))?;
        let mut claimed = scripts::claimed(&packed, bad)?;
        if !claimed.entries.is_empty() {
            claimed.fields.push(field.to_owned());
        }
        Ok(claimed)
    }

    /// `EVAL "return 1"` naming `keys`: refused if this user may not touch one of them.
    pub fn probe(&mut self, keys: &[String]) -> Result<()> {
        redis::cmd("EVAL")
            .arg("return 1")
            .arg(keys.len())
            .arg(keys)
            .query::<i64>(&mut self.con)
            .with_context(|| self.ctx("a script naming the keys a run touches"))?;
        Ok(())
    }

    /// `WAIT replicas timeout`: how many replicas have this connection's writes.
    pub fn wait(&mut self, replicas: u32, timeout: std::time::Duration) -> Result<i64> {
        redis::cmd("WAIT")
            .arg(replicas)
            .arg(timeout.as_millis() as u64)
            .query(&mut self.con)
            .with_context(|| self.ctx("WAIT"))
    }

    pub fn inspect(&mut self, keys: &[Vec<u8>], prefix_len: usize) -> Result<Claimed> {
        let mut inv = scripts().inspect.prepare_invoke();
        for k in keys {
            inv.key(k.as_slice());
        }
        inv.arg(prefix_len);
        let (packed, bad): (Vec<u8>, Vec<Vec<u8>>) = inv
            .invoke(&mut self.con)
            .with_context(|| self.ctx("the inspection script"))?;
        scripts::claimed(&packed, bad)
    }

    /// The ids of every journal, from the index. When the index is missing or lacks its
    /// sentinel (never made, or lost; a claim of a run that lost its lock may have made it
    /// anew, with only its own journal), SCANs for journal keys instead and, with `repair`,
    /// rebuilds the index from what it found.
    pub fn journals(&mut self, repair: bool) -> Result<Vec<String>> {
        let index = self.index_key();
        let members: Vec<String> = redis::cmd("SMEMBERS")
            .arg(&index)
            .query(&mut self.con)
            .with_context(|| self.ctx("reading the journal index"))?;
        if members.iter().any(|m| m == INDEX_SENTINEL) {
            return Ok(members
                .into_iter()
                .filter(|m| m != INDEX_SENTINEL)
                .collect());
        }
        let pattern = format!("{}*", glob_escape(&self.journal_prefix));
        let mut found = Vec::new();
        let prefix = self.journal_prefix.len();
        scan_all(&mut self.con, pattern.as_bytes(), |keys| {
            for k in keys {
                if k == index.as_bytes() {
                    continue;
                }
                let key = String::from_utf8(k)
                    .context("a journal key is not UTF-8; it was not written by redis-flusher")?;
                found.push(key[prefix..].to_owned());
            }
            Ok(())
        })
        .with_context(|| self.ctx("SCAN"))?;
        found.sort();
        found.dedup();
        if repair {
            redis::cmd("SADD")
                .arg(&index)
                .arg(INDEX_SENTINEL)
                .arg(&found)
                .query::<()>(&mut self.con)
                .with_context(|| self.ctx("creating the journal index"))?;
        }
        Ok(found)
    }

    /// Seals a batch's journal (no more chunks can join it) and returns its contents, unless
    /// it records a target other than `target`: then that target, and it is left as it is.
    pub fn seal(&mut self, batch_id: &str, target: &str) -> Result<Result<Contents, String>> {
        let journal = self.journal_key(batch_id);
        let reply = scripts()
            .seal
            .key(&journal)
            .key(self.index_key())
            .arg(batch_id)
            .arg(target)
            .invoke(&mut self.con)
            .with_context(|| self.ctx(&format!("sealing journal {journal}")))?;
        scripts::sealed(reply)
    }

    /// Reads a batch's journal without sealing it.
    pub fn read(&mut self, batch_id: &str) -> Result<Contents> {
        let journal = self.journal_key(batch_id);
        let flat: Vec<Vec<u8>> = redis::cmd("HGETALL")
            .arg(&journal)
            .query(&mut self.con)
            .with_context(|| self.ctx(&format!("reading journal {journal}")))?;
        scripts::contents(flat)
    }

    /// Deletes a batch's chunks, parking `park` in `unknown_key` in the same atomic step.
    pub fn ack(
        &mut self,
        batch_id: &str,
        fields: &[String],
        unknown_key: &str,
        park: &[(String, i64)],
    ) -> Result<Acked> {
        let journal = self.journal_key(batch_id);
        let mut inv = scripts().ack.prepare_invoke();
        // The unknown-codes hash only when there is something to park: an ACL user without
        // `--keep-unknown` need not be given it (the journal stands in for it, ack.lua).
        inv.key(&journal)
            .key(if park.is_empty() {
                &journal
            } else {
                unknown_key
            })
            .key(self.index_key())
            .arg(batch_id)
            .arg(fields.len());
        for f in fields {
            inv.arg(f);
        }
        for (code, hits) in park {
            inv.arg(code).arg(*hits);
        }
        let (done, details): (i64, Vec<String>) = inv
            .invoke(&mut self.con)
            .with_context(|| self.ctx(&format!("deleting journal {journal}")))?;
        Ok(match done {
            2 => Acked::Kept(details.concat()),
            _ => Acked::Done(
                details
                    .chunks(2)
                    .map(|p| (p[0].clone(), p.get(1).cloned().unwrap_or_default()))
                    .collect(),
            ),
        })
    }
}
