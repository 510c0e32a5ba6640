//! The plain data every stage shares: claimed entries, keys left alone and why, and the batch
//! one Postgres transaction applies; and the packed format a claimed chunk has in a journal.
//!
//! No I/O lives here, and nothing here knows Redis, Postgres or the command line.
//!
//! A claimed chunk is stored in Redis as one packed value: for each claimed key,
//! `<byte length of code>:<code><value>\n`. The code is length-prefixed because it may hold
//! any UTF-8 text, newlines and colons included; the value is a base-10 integer that the claim
//! script has already checked, so it never holds `\n`. The same decoder reads what a claim
//! returns and what recovery finds, so a batch is applied from exactly the bytes that were
//! journaled.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};

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
pub fn stable_hash(s: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Checks the code part of a key before it is ever claimed: a key with a code that cannot
/// be in the table is left alone and reported, never moved to a journal.
pub fn check_code(key: &[u8], prefix_len: usize) -> Option<BadReason> {
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

/// Encodes entries in the journal format. The claim script builds the same bytes in Lua;
/// this is used by tests and by anything that writes a journal from Rust.
pub fn encode(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        out.extend_from_slice(format!("{}:", e.code.len()).as_bytes());
        out.extend_from_slice(e.code.as_bytes());
        out.extend_from_slice(e.hits.to_string().as_bytes());
        out.push(b'\n');
    }
    out
}

/// Decodes one packed chunk. An error means the journal was not written by redis-flusher
/// (or was edited by hand): the caller must leave it in place, never drop it.
pub fn decode(packed: &[u8]) -> Result<Vec<Entry>> {
    let mut entries = Vec::new();
    let mut rest = packed;
    while !rest.is_empty() {
        let colon = rest
            .iter()
            .position(|&b| b == b':')
            .context("journal entry has no length prefix")?;
        let len: usize = std::str::from_utf8(&rest[..colon])
            .ok()
            .and_then(|s| s.parse().ok())
            .context("journal entry has a malformed length prefix")?;
        rest = &rest[colon + 1..];
        if rest.len() < len {
            bail!("journal entry is shorter than its length prefix says");
        }
        let code = std::str::from_utf8(&rest[..len])
            .context("journal entry holds a code that is not UTF-8")?
            .to_owned();
        rest = &rest[len..];
        let nl = rest
            .iter()
            .position(|&b| b == b'\n')
            .context("journal entry is not terminated by a newline")?;
        let hits: i64 = std::str::from_utf8(&rest[..nl])
            .ok()
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("journal entry for code {code:?} holds a malformed count"))?;
        rest = &rest[nl + 1..];
        entries.push(Entry { code, hits });
    }
    Ok(entries)
}

/// A batch: everything one Postgres transaction applies, and the journal that holds it.
#[derive(Debug, Default)]
pub struct Batch {
    /// Unique across runs; the journal key's suffix and the ledger's primary key.
    pub id: String,
    /// Hash fields of the journal that hold this batch's chunks, in claim order (on Redis
    /// Cluster, `<slot>/<field>`: one per slot the chunk touched).
    pub fields: Vec<String>,
    /// Chunks claimed into this batch so far; names the next one (`c<n>`).
    pub chunks: u32,
    /// Hits per code, summed: Postgres applies only one of two rows with the same code, so
    /// duplicates must never reach the UPDATE. Sorted, so every batch locks rows in the same
    /// order as every other (no deadlocks between overlapping writers).
    pub hits: BTreeMap<String, i64>,
    /// Keys claimed (before summing), for the report.
    pub keys: u64,
    /// The bytes of its codes: what its memory grows with.
    pub bytes: usize,
}

impl Batch {
    pub fn new(id: String) -> Batch {
        Batch {
            id,
            ..Batch::default()
        }
    }

    /// The batch a journal holds: its chunks as (field, packed), decoded and summed. An error
    /// names the chunk that cannot be read; the journal must then be left for an operator.
    pub fn from_chunks(id: &str, chunks: Vec<(String, Vec<u8>)>) -> Result<Batch> {
        let mut batch = Batch::new(id.to_owned());
        for (field, packed) in chunks {
            let entries = decode(&packed).with_context(|| format!("chunk {field}"))?;
            batch.add(entries)?;
            batch.fields.push(field);
        }
        Ok(batch)
    }

    /// Adds claimed entries. Fails when one code's hits overflow 64 bits, which no column
    /// could hold either; the batch then stays in its journal for an operator to look at.
    pub fn add(&mut self, entries: Vec<Entry>) -> Result<()> {
        for e in entries {
            self.keys += 1;
            self.bytes += e.code.len();
            let slot = self.hits.entry(e.code).or_insert(0);
            *slot = slot.checked_add(e.hits).with_context(|| {
                format!(
                    "the hits for one code in batch {} overflow 64 bits",
                    self.id
                )
            })?;
        }
        Ok(())
    }

    pub fn total_hits(&self) -> i128 {
        self.hits.values().map(|&h| i128::from(h)).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.keys == 0
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
    fn batch_sums_duplicate_codes() {
        let mut b = Batch::new("b1".into());
        b.add(vec![e("a", 2), e("b", 1)]).unwrap();
        b.add(vec![e("a", 3), e("a", -1)]).unwrap();
        assert_eq!(b.keys, 4);
        assert_eq!(b.hits.get("a"), Some(&4));
        assert_eq!(b.hits.get("b"), Some(&1));
        assert_eq!(b.total_hits(), 5);
    }

    #[test]
    fn batch_refuses_a_sum_past_64_bits() {
        let mut b = Batch::new("b1".into());
        assert!(b.add(vec![e("a", i64::MAX), e("a", 1)]).is_err());
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
