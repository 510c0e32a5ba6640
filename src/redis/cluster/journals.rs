//! A cluster's journals: a batch's sub-journals, one a slot, listed by a SCAN of every master,
//! and sealed, read and acknowledged one script a slot, pipelined per master.

use std::collections::BTreeMap;

use anyhow::{Context, Result};

use super::{run_pipes, Cluster};
use crate::redis::conn::glob_escape;
use crate::redis::scripts::{self, scripts, Contents};
use crate::redis::slots::slot;

impl Cluster {
    /// Every batch with a sub-journal on any master (a SCAN of each master for the journal
    /// prefix), with the slots that hold one, sorted by id.
    pub fn journals(&mut self) -> Result<Vec<(String, Vec<u16>)>> {
        let pattern = format!("{}*", glob_escape(&self.journal_prefix));
        let mut located: BTreeMap<String, Vec<u16>> = BTreeMap::new();
        let prefix = self.journal_prefix.clone();
        self.scan_every_master(pattern.as_bytes(), |keys| {
            for k in keys {
                let Some(rest) = k.strip_prefix(prefix.as_bytes()) else {
                    continue;
                };
                let Some(close) = rest.iter().position(|&b| b == b'}') else {
                    continue;
                };
                let name = String::from_utf8(rest[close + 1..].to_vec())
                    .context("a journal key is not UTF-8; it was not written by redis-flusher")?;
                // `index`: the per-slot index that versions before 0.2 wrote.
                if name == "index" || name == "fence" || name.is_empty() {
                    continue;
                }
                located.entry(name).or_default().push(slot(&k));
            }
            Ok(())
        })
        .context("listing the journals")?;
        Ok(located
            .into_iter()
            .map(|(id, mut slots)| {
                slots.sort_unstable();
                slots.dedup();
                (id, slots)
            })
            .collect())
    }

    /// `slots` grouped by the index of their master.
    fn slots_by_node(&self, slots: &[u16]) -> BTreeMap<usize, Vec<u16>> {
        let mut out: BTreeMap<usize, Vec<u16>> = BTreeMap::new();
        for &s in slots {
            out.entry(self.owner[s as usize]).or_default().push(s);
        }
        out
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
        let hash = scripts().seal.get_hash();
        let by_node = self.slots_by_node(slots);
        let mut pipes = Vec::new();
        for (&idx, slots) in &by_node {
            let mut pipe = redis::pipe();
            for &s in slots {
                // No index on a cluster: the journal stands in for it (seal.lua).
                let journal = self.key(s, batch_id);
                pipe.cmd("EVALSHA")
                    .arg(hash)
                    .arg(2)
                    .arg(&journal)
                    .arg(&journal)
                    .arg(batch_id)
                    .arg(target);
            }
            pipes.push((idx, pipe));
        }
        let what = format!("sealing the journals of batch {batch_id}");
        let replies: Vec<(usize, Vec<(String, redis::Value)>)> =
            run_pipes(&mut self.nodes, pipes, &what)?;
        let mut all = Contents::default();
        for (slots, (_, replies)) in by_node.into_values().zip(replies) {
            for (s, reply) in slots.into_iter().zip(replies) {
                match scripts::sealed(reply)? {
                    Ok(contents) => all.add(s, contents),
                    Err(other) => return Ok(Err(other)),
                }
            }
        }
        Ok(Ok(all))
    }

    /// Reads each sub-journal of `batch_id` (in `slots`), changing nothing.
    pub fn read(&mut self, batch_id: &str, slots: &[u16]) -> Result<Contents> {
        let by_node = self.slots_by_node(slots);
        let mut pipes = Vec::new();
        for (&idx, slots) in &by_node {
            let mut pipe = redis::pipe();
            for &s in slots {
                pipe.cmd("HGETALL").arg(self.key(s, batch_id));
            }
            pipes.push((idx, pipe));
        }
        let what = format!("reading the journals of batch {batch_id}");
        let replies: Vec<(usize, Vec<Vec<Vec<u8>>>)> = run_pipes(&mut self.nodes, pipes, &what)?;
        let mut all = Contents::default();
        for (slots, (_, replies)) in by_node.into_values().zip(replies) {
            for (s, flat) in slots.into_iter().zip(replies) {
                all.add(s, scripts::contents(flat)?);
            }
        }
        Ok(all)
    }

    /// Deletes a committed batch's sub-journals: each holds only that batch's chunks, all
    /// of them applied now (a `DEL` each, pipelined per master, not ack.lua: nothing is
    /// parked on a cluster, and no run can add a chunk to them any more: the one that claimed
    /// them is done with the batch, and a run that lost its lock is fenced out). True if
    /// every one was still there.
    pub fn ack(&mut self, batch_id: &str, fields: &[String]) -> Result<bool> {
        let mut slots = Vec::with_capacity(fields.len());
        for f in fields {
            let s = f
                .split_once('/')
                .and_then(|(s, _)| s.parse::<u16>().ok())
                .with_context(|| format!("BUG: chunk {f:?} names no slot"))?;
            slots.push(s);
        }
        slots.sort_unstable();
        slots.dedup();
        let mut pipes = Vec::new();
        for (idx, slots) in self.slots_by_node(&slots) {
            let mut pipe = redis::pipe();
            for s in slots {
                pipe.cmd("DEL").arg(self.key(s, batch_id));
            }
            pipes.push((idx, pipe));
        }
        let what = format!("deleting the journals of batch {batch_id}");
        let replies: Vec<(usize, Vec<i64>)> = run_pipes(&mut self.nodes, pipes, &what)?;
        Ok(replies.iter().all(|(_, r)| r.iter().all(|&n| n == 1)))
    }
}
