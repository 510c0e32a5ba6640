//! Redis Cluster's hash slots: which slot a key is in, a short hash tag for each slot (so
//! that a journal or fence key can be placed in the slot it belongs to), and which master
//! owns each slot.

use std::collections::HashMap;
use std::sync::OnceLock;

use anyhow::{bail, Result};
use redis::Value;

pub const SLOTS: usize = crate::model::SLOTS as usize;

pub use crate::model::slot;

/// A short hash tag for each slot: `tags()[s]` hashes to slot `s`.
pub fn tags() -> &'static [String] {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    TAGS.get_or_init(|| {
        let mut tags = vec![String::new(); SLOTS];
        let mut left = SLOTS;
        let mut i: u64 = 0;
        while left > 0 {
            let t = i.to_string();
            let s = slot(t.as_bytes()) as usize;
            if tags[s].is_empty() {
                tags[s] = t;
                left -= 1;
            }
            i += 1;
        }
        tags
    })
}

/// Which master owns each slot, from `CLUSTER SLOTS`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Topology {
    /// slot → index in `masters` of its master.
    pub owner: Vec<usize>,
    /// The masters' (host, port), in the order `CLUSTER SLOTS` first names them.
    pub masters: Vec<(String, u16)>,
}

impl Topology {
    /// Reads a `CLUSTER SLOTS` reply: `[[start, end, [host, port, …], replicas…], …]`.
    /// Every slot must have a master.
    pub fn parse(reply: Value) -> Result<Topology> {
        let mut owner = vec![usize::MAX; SLOTS];
        let mut masters = Vec::new();
        let mut index: HashMap<(String, u16), usize> = HashMap::new();
        let Value::Array(ranges) = reply else {
            bail!("unexpected reply {reply:?}");
        };
        for range in ranges {
            let Value::Array(parts) = range else {
                bail!("unexpected range")
            };
            let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(master))) =
                (parts.first(), parts.get(1), parts.get(2))
            else {
                bail!("unexpected range {parts:?}");
            };
            let host = match master.first() {
                Some(Value::BulkString(h)) => String::from_utf8_lossy(h).into_owned(),
                Some(Value::SimpleString(h)) => h.clone(),
                other => bail!("unexpected host {other:?}"),
            };
            let Some(Value::Int(port)) = master.get(1) else {
                bail!("unexpected port");
            };
            let (Ok(port), Ok(first), Ok(last)) = (
                u16::try_from(*port),
                usize::try_from(*start),
                usize::try_from(*end),
            ) else {
                bail!("unexpected range {parts:?}");
            };
            if first > last || last >= SLOTS {
                bail!("unexpected range {first}-{last}");
            }
            let idx = *index.entry((host.clone(), port)).or_insert_with(|| {
                masters.push((host, port));
                masters.len() - 1
            });
            owner[first..=last].fill(idx);
        }
        if let Some(s) = owner.iter().position(|&o| o == usize::MAX) {
            bail!(
                "slot {s} has no master (the cluster is not fully set up, or is failing over); \
                 try again once `CLUSTER INFO` says cluster_state:ok"
            );
        }
        Ok(Topology { owner, masters })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_the_cluster_spec() {
        // Examples from the Redis Cluster specification and redis-cli CLUSTER KEYSLOT.
        assert_eq!(slot(b"123456789"), 12739);
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"{user1000}.following"), slot(b"user1000"));
        assert_eq!(slot(b"foo{}{bar}"), slot(b"foo{}{bar}")); // empty tag: the whole key
        assert_ne!(slot(b"foo{}{bar}"), slot(b"bar"));
        assert_eq!(slot(b"foo{{bar}}zap"), slot(b"{bar"));
    }

    #[test]
    fn the_topology_names_each_slots_master() {
        let range = |a: i64, b: i64, host: &str, port: i64| {
            Value::Array(vec![
                Value::Int(a),
                Value::Int(b),
                Value::Array(vec![Value::BulkString(host.into()), Value::Int(port)]),
            ])
        };
        let t = Topology::parse(Value::Array(vec![
            range(0, 5460, "10.0.0.1", 7000),
            range(5461, 10922, "10.0.0.2", 7001),
            range(10923, 16383, "10.0.0.1", 7000),
        ]))
        .unwrap();
        assert_eq!(
            t.masters,
            [("10.0.0.1".to_owned(), 7000), ("10.0.0.2".to_owned(), 7001)]
        );
        assert_eq!((t.owner[0], t.owner[5461], t.owner[16383]), (0, 1, 0));
        let gap = Topology::parse(Value::Array(vec![range(0, 100, "h", 1)])).unwrap_err();
        assert!(gap.to_string().contains("slot 101 has no master"), "{gap}");
        assert!(Topology::parse(Value::Array(vec![range(0, 16384, "h", 1)])).is_err());
    }

    #[test]
    fn every_slot_has_a_tag_that_hashes_to_it() {
        for (s, tag) in tags().iter().enumerate() {
            assert_eq!(slot(format!("x{{{tag}}}y").as_bytes()) as usize, s);
        }
    }
}
