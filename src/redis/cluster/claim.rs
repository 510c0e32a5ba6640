//! A claim on a cluster: its keys grouped by slot, one script a slot (a slot's keys in pieces
//! of at most `--claim-size` keys and [`SCRIPT_BYTES`]), pipelined per master. A claim holds
//! what its batch has room for (`flush/scan.rs`), so a slot's script takes every key of that
//! slot the batch will hold: about keys / 16,384 of them, where a chunk's worth (250 keys)
//! made one script a key.

use std::collections::HashSet;

use anyhow::Result;

use super::{run_pipes, Cluster, Keys, PerNode};
use crate::model::Claimed;
use crate::redis::scripts::{self, scripts};
use crate::redis::SCRIPT_BYTES;

/// `keys` in pieces of at most `most` keys and [`SCRIPT_BYTES`] (one key at least).
fn pieces(keys: &[Vec<u8>], most: usize) -> Vec<&[Vec<u8>]> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < keys.len() {
        let mut end = start;
        let mut bytes = 0;
        while end < keys.len() && end - start < most.max(1) {
            bytes += keys[end].len();
            if bytes > SCRIPT_BYTES && end > start {
                break;
            }
            end += 1;
        }
        out.push(&keys[start..end]);
        start = end;
    }
    out
}

impl Cluster {
    /// Claims `keys` into batch `batch_id`'s sub-journals, one script a slot (a slot's keys
    /// in pieces: the first is field `field`, the next ones `field.1`, …), pipelined per
    /// master. Returns what was taken and the `<slot>/<field>` chunks written.
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
        let hash = scripts().claim.get_hash();
        let mut pipes = Vec::new();
        let mut sent: Vec<Vec<(u16, String)>> = Vec::new();
        for (idx, slots) in self.by_node(keys) {
            let mut pipe = redis::pipe();
            let mut names = Vec::new();
            for (&s, ks) in &slots {
                // Every piece of a slot without a sub-journal yet may create it: the first
                // may find all its keys gone. No run that sealed it can be raced: a run
                // that recovers raises the fences first, and this claim then fails FENCED.
                let create = if self.created.1.contains(&s) {
                    "0"
                } else {
                    "1"
                };
                for (k, piece) in pieces(ks, self.per_script).into_iter().enumerate() {
                    let f = match k {
                        0 => field.to_owned(),
                        k => format!("{field}.{k}"),
                    };
                    pipe.cmd("EVALSHA")
                        .arg(hash)
                        .arg(2 + piece.len())
                        .arg(self.key(s, batch_id))
                        .arg(self.key(s, "fence"))
                        .arg(piece)
                        .arg(prefix_len)
                        .arg(&f)
                        .arg(create)
                        .arg(batch_id)
                        .arg(self.token)
                        .arg(target);
                    names.push((s, f));
                }
            }
            pipes.push((idx, pipe));
            sent.push(names);
        }
        let replies: PerNode<(Vec<u8>, Keys)> =
            run_pipes(&mut self.nodes, pipes, "the claim script")?;
        let mut out = Claimed::default();
        for (names, (_, replies)) in sent.into_iter().zip(replies) {
            for ((s, f), (packed, bad)) in names.into_iter().zip(replies) {
                if !packed.is_empty() {
                    self.created.1.insert(s);
                    out.fields.push(format!("{s}/{f}"));
                }
                let claimed = scripts::claimed(&packed, bad)?;
                out.entries.extend(claimed.entries);
                out.bad.extend(claimed.bad);
            }
        }
        Ok(out)
    }

    /// Reads what a claim would take, one script a slot, changing nothing.
    pub fn inspect(&mut self, keys: &[Vec<u8>], prefix_len: usize) -> Result<Claimed> {
        let hash = scripts().inspect.get_hash();
        let mut pipes = Vec::new();
        for (idx, slots) in self.by_node(keys) {
            let mut pipe = redis::pipe();
            for ks in slots.values() {
                for piece in pieces(ks, self.per_script) {
                    pipe.cmd("EVALSHA")
                        .arg(hash)
                        .arg(piece.len())
                        .arg(piece)
                        .arg(prefix_len);
                }
            }
            pipes.push((idx, pipe));
        }
        let replies: PerNode<(Vec<u8>, Keys)> =
            run_pipes(&mut self.nodes, pipes, "the inspection script")?;
        let mut out = Claimed::default();
        for (packed, bad) in replies.into_iter().flat_map(|(_, r)| r) {
            let claimed = scripts::claimed(&packed, bad)?;
            out.entries.extend(claimed.entries);
            out.bad.extend(claimed.bad);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slots_keys_are_cut_at_the_claim_size_and_the_script_bytes() {
        let keys = vec![vec![0u8; 10]; 600];
        let sizes: Vec<usize> = pieces(&keys, 250).iter().map(|p| p.len()).collect();
        assert_eq!(sizes, [250, 250, 100]);
        let big = vec![vec![0u8; 400_000]; 5];
        let sizes: Vec<usize> = pieces(&big, 250).iter().map(|p| p.len()).collect();
        assert_eq!(sizes, [2, 2, 1]);
        let huge = vec![vec![0u8; 3 << 20]; 2];
        assert_eq!(pieces(&huge, 250).len(), 2);
        assert!(pieces(&[], 250).is_empty());
    }
}
