//! The plain data every stage shares: claimed entries, keys left alone and why, and the batch
//! one Postgres transaction applies; and the packed format a claimed chunk has in a journal.
//!
//! No I/O lives here, and nothing here knows Redis, Postgres or the command line.
//! `batch.rs` holds the batch and its compact codes; `packed.rs` the format of a claimed
//! chunk in a journal; `shard.rs` hash slots and the shard a run owns.

mod batch;
mod packed;
mod shard;

pub use batch::{Batch, Head};
pub(crate) use packed::decode;
pub use packed::encode;
pub use shard::{scope_of, slot, Shard, SLOTS};

/// One claimed counter: the code (the key minus the pattern prefix) and the hits it held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub code: String,
    pub hits: i64,
}

/// Why a key was left in Redis instead of being flushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BadReason {
    /// The value is not a base-10 integer within 64 bits.
    NotInteger,
    /// The key is a hash, list, set, stream… not a string.
    WrongType,
    /// The key minus the prefix is not UTF-8, so it cannot be a code in the table.
    CodeNotUtf8,
    /// The key is the prefix alone.
    CodeEmpty,
    /// The code holds a NUL byte, which Postgres text cannot store.
    CodeHasNul,
}

impl BadReason {
    /// How a log line or report says it.
    pub fn text(self) -> &'static str {
        match self {
            BadReason::NotInteger => "value is not an integer",
            BadReason::WrongType => "not a string key",
            BadReason::CodeNotUtf8 => "code is not UTF-8",
            BadReason::CodeEmpty => "code is empty",
            BadReason::CodeHasNul => "code holds a NUL byte",
        }
    }
}

/// A key left untouched, and why.
#[derive(Debug, Clone)]
pub struct BadKey {
    pub key: Vec<u8>,
    pub reason: BadReason,
}

/// How many example keys or codes a report names.
pub(crate) const EXAMPLES: usize = 5;

/// What a SCAN saw besides the counters it handed over: the keys it left alone, and its time
/// waiting on Redis.
#[derive(Debug, Default)]
pub(crate) struct ScanStats {
    pub bad_keys: u64,
    pub bad_by_reason: std::collections::BTreeMap<BadReason, u64>,
    /// The first [`EXAMPLES`] of them.
    pub bad_examples: Vec<BadKey>,
    pub redis_seconds: f64,
}

impl ScanStats {
    pub(crate) fn add_bad(&mut self, bad: BadKey) {
        self.bad_keys += 1;
        *self.bad_by_reason.entry(bad.reason).or_insert(0) += 1;
        if self.bad_examples.len() < EXAMPLES {
            self.bad_examples.push(bad);
        }
    }
}

/// Why Postgres refused one code's row.
#[derive(Debug, Clone)]
pub struct RowError {
    pub sqlstate: String,
    /// Postgres' message (and detail), or ours for a code that matched several rows.
    pub message: String,
    /// What to do about it.
    pub advice: String,
}

/// A code whose hits went to the quarantine, and why.
#[derive(Debug, Clone)]
pub struct Poisoned {
    pub code: String,
    pub hits: i64,
    pub error: RowError,
}

/// What one claim (or a read-only inspection) found.
#[derive(Debug, Default)]
pub struct Claimed {
    /// The valid counters taken (an inspection: that would be taken), decoded from the same
    /// packed bytes the claim wrote to the journal.
    pub entries: Vec<Entry>,
    pub bad: Vec<BadKey>,
    /// The journal fields the claim wrote (none if it took nothing; on a cluster, one per
    /// slot, named `<slot>/<field>`).
    pub fields: Vec<String>,
}

/// A 64-bit hash of `s` that is the same across versions and platforms (FNV-1a), for names
/// that are stored or shared: lock keys, owner tags.
pub(crate) fn stable_hash(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Checks the code part of a key before it is ever claimed: a key with a code that cannot
/// be in the table is left alone and reported, never moved to a journal.
pub(crate) fn check_code(key: &[u8], prefix_len: usize) -> Option<BadReason> {
    let code = &key[prefix_len.min(key.len())..];
    if code.is_empty() {
        Some(BadReason::CodeEmpty)
    } else if std::str::from_utf8(code).is_err() {
        Some(BadReason::CodeNotUtf8)
    } else if code.contains(&0) {
        Some(BadReason::CodeHasNul)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(code: &str, hits: i64) -> Entry {
        Entry {
            code: code.into(),
            hits,
        }
    }

    #[test]
    fn codes_that_cannot_be_in_a_table_are_refused_before_a_claim() {
        assert_eq!(check_code(b"p:abc", 2), None);
        assert_eq!(check_code(b"p:", 2), Some(BadReason::CodeEmpty));
        assert_eq!(check_code(b"p:\xff\xfe", 2), Some(BadReason::CodeNotUtf8));
        assert_eq!(check_code(b"p:a\0b", 2), Some(BadReason::CodeHasNul));
        assert_eq!(check_code("p:😀".as_bytes(), 2), None);
    }

    #[test]
    fn round_trips_codes_with_separators_in_them() {
        let entries = vec![
            e("abc", 5),
            e("a:b\nc", -3),
            e("😀", i64::MAX),
            e("12:34", i64::MIN),
            e("x", 0),
        ];
        assert_eq!(decode(&encode(&entries)).unwrap(), entries);
    }

    #[test]
    fn decodes_what_the_lua_script_writes() {
        // Byte for byte what the claim script builds for codes "ab" (7) and "é" (-1, 2 bytes),
        // including a leading zero that Redis keeps in the value as the app wrote it.
        let packed = b"2:ab7\n2:\xc3\xa9-01\n";
        assert_eq!(decode(packed).unwrap(), vec![e("ab", 7), e("é", -1)]);
    }

    #[test]
    fn rejects_corrupt_journals_instead_of_guessing() {
        for bad in [
            &b"5:ab7\n"[..],
            b"2:ab\n",
            b"2:ab7",
            b"x:ab7\n",
            b"ab7\n",
            b"2:ab1.5\n",
        ] {
            assert!(
                decode(bad).is_err(),
                "{:?} decoded",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(decode(b"").unwrap(), vec![]);
    }

    #[test]
    fn batch_sums_duplicate_codes_and_sorts_them() {
        let mut b = Batch::new("b1".into());
        b.add(vec![e("b", 2), e("a", 1), e("é", 7)]).unwrap();
        b.add(vec![e("b", 3), e("b", -1), e("ab", 4)]).unwrap();
        b.finish().unwrap();
        assert_eq!(b.keys, 6);
        assert_eq!(
            b.hits.iter().collect::<Vec<_>>(),
            [("a", 1), ("ab", 4), ("b", 4), ("é", 7)]
        );
        assert_eq!(b.hits.get("b"), Some(4));
        assert_eq!(b.hits.get("c"), None);
        assert_eq!(b.hits.columns(1, 3), (vec!["ab", "b"], vec![4, 4]));
        assert_eq!(b.total_hits(), 16);
    }

    #[test]
    fn batch_refuses_a_sum_past_64_bits() {
        let mut b = Batch::new("b1".into());
        b.add(vec![e("a", i64::MAX), e("a", 1)]).unwrap();
        assert!(b.finish().is_err());
    }

    #[test]
    fn a_batch_from_chunks_keeps_their_fields_and_names_a_bad_one() {
        let b = Batch::from_chunks(
            "b1",
            vec![
                ("c0".into(), encode(&[e("a", 2)])),
                ("c1".into(), encode(&[e("a", 3), e("b", 1)])),
            ],
        )
        .unwrap();
        assert_eq!(b.fields, ["c0", "c1"]);
        assert_eq!((b.keys, b.total_hits()), (3, 6));
        let err = Batch::from_chunks("b1", vec![("c7".into(), b"x".to_vec())]).unwrap_err();
        assert!(format!("{err:#}").starts_with("chunk c7: "), "{err:#}");
    }
}
