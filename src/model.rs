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

/// Hits per code: a batch's codes back to back in one string, and an index of (offset,
/// length, hits) into it. A key costs its code's bytes and 16 more; a `BTreeMap<String, i64>`
/// cost about 80 more, which bounded how large a batch could be in the memory a run may take.
///
/// Codes are appended as claimed; [`Hits::finish`] sorts them by code and sums duplicates.
/// Everything that reads codes comes after it: a finished batch is sorted (so that every
/// batch locks rows in the same order as every other: no deadlocks between writers) and has
/// each code once (Postgres applies only one of two rows with the same code).
#[derive(Debug, Default, Clone)]
pub struct Hits {
    text: String,
    index: Vec<(u32, u32, i64)>,
}

impl Hits {
    /// Appends a code and its hits (duplicates are summed by `finish`). Fails past 4 GiB of
    /// codes, which no batch the flusher makes comes near (a batch closes at its share of
    /// `scan::CODE_BYTES`).
    pub fn push(&mut self, code: &str, hits: i64) -> Result<()> {
        let end = self.text.len() + code.len();
        let (Ok(at), Ok(len), Ok(_)) = (
            u32::try_from(self.text.len()),
            u32::try_from(code.len()),
            u32::try_from(end),
        ) else {
            bail!("a batch holds more than 4 GiB of codes");
        };
        self.text.push_str(code);
        self.index.push((at, len, hits));
        Ok(())
    }

    fn code(&self, e: &(u32, u32, i64)) -> &str {
        code_in(&self.text, e)
    }

    /// Sorts by code and sums the hits of a code pushed more than once. Fails when one code's
    /// hits overflow 64 bits, which no column could hold either.
    pub fn finish(&mut self) -> Result<()> {
        // The index is sorted in place, so its codes are read from the text alone.
        let text = &self.text;
        let code = |e: &(u32, u32, i64)| code_in(text, e);
        self.index.sort_unstable_by(|a, b| code(a).cmp(code(b)));
        // In place: `dedup_by` hands each entry with the one kept before it.
        let mut overflow = None;
        self.index.dedup_by(|later, kept| {
            if code(later) != code(kept) {
                return false;
            }
            match kept.2.checked_add(later.2) {
                Some(sum) => kept.2 = sum,
                None => overflow = Some(code(kept).to_owned()),
            }
            true
        });
        if let Some(c) = overflow {
            bail!("the hits for code {c:?} overflow 64 bits");
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Codes and their hits, in order (sorted by code once finished).
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, i64)> + '_ {
        self.index.iter().map(|e| (self.code(e), e.2))
    }

    /// The codes `from..until` and their hits, as the two arrays of an UPDATE.
    pub fn columns(&self, from: usize, until: usize) -> (Vec<&str>, Vec<i64>) {
        let part = &self.index[from..until];
        (
            part.iter().map(|e| self.code(e)).collect(),
            part.iter().map(|e| e.2).collect(),
        )
    }

    /// The hits of `code`, in a finished batch.
    pub fn get(&self, code: &str) -> Option<i64> {
        self.index
            .binary_search_by(|e| self.code(e).cmp(code))
            .ok()
            .map(|i| self.index[i].2)
    }

    pub fn total(&self) -> i128 {
        self.index.iter().map(|e| i128::from(e.2)).sum()
    }
}

/// The code an index entry of [`Hits`] names in its text.
fn code_in<'t>(text: &'t str, &(at, len, _): &(u32, u32, i64)) -> &'t str {
    let at = at as usize;
    &text[at..at + len as usize]
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
    /// Hits per code: sorted and summed once the batch is [`Batch::finish`]ed.
    pub hits: Hits,
    /// Keys claimed (before summing), for the report.
    pub keys: u64,
    /// The bytes of its codes: what its memory grows with.
    pub bytes: usize,
    /// The most keys the transaction that applies it may take, when that is more than a
    /// claimed batch may hold (a backlog's: batches are gathered in Postgres' stage,
    /// `postgres/stage.rs`); 0 when it applies this batch alone.
    pub gather: usize,
}

/// A batch without its codes: what its ledger row, its journal and the report need, and all
/// that is left of a batch once its codes are in Postgres' stage.
#[derive(Debug, Clone, Default)]
pub struct Head {
    pub id: String,
    /// Its journal's fields ([`Batch::fields`]).
    pub fields: Vec<String>,
    /// Keys claimed (before summing).
    pub keys: u64,
    /// Distinct codes.
    pub codes: usize,
    /// Hits of all its codes.
    pub hits: i128,
}

impl Batch {
    pub fn new(id: String) -> Batch {
        Batch {
            id,
            ..Batch::default()
        }
    }

    /// The batch a journal holds: its chunks as (field, packed), decoded, summed and sorted.
    /// An error names the chunk that cannot be read; the journal must then be left for an
    /// operator.
    pub fn from_chunks(id: &str, chunks: Vec<(String, Vec<u8>)>) -> Result<Batch> {
        let mut batch = Batch::new(id.to_owned());
        for (field, packed) in chunks {
            let entries = decode(&packed).with_context(|| format!("chunk {field}"))?;
            batch.add(entries)?;
            batch.fields.push(field);
        }
        batch.finish()?;
        Ok(batch)
    }

    /// Adds claimed entries; [`Batch::finish`] sums and sorts them once the batch is full.
    pub fn add(&mut self, entries: Vec<Entry>) -> Result<()> {
        for e in entries {
            self.keys += 1;
            self.bytes += e.code.len();
            self.hits
                .push(&e.code, e.hits)
                .with_context(|| format!("batch {}", self.id))?;
        }
        Ok(())
    }

    /// Sorts the batch by code and sums duplicates: it is ready to apply. Fails when one
    /// code's hits overflow 64 bits; the batch then stays in its journal for an operator to
    /// look at.
    pub fn finish(&mut self) -> Result<()> {
        self.hits
            .finish()
            .with_context(|| format!("batch {}", self.id))
    }

    pub fn total_hits(&self) -> i128 {
        self.hits.total()
    }

    /// The batch without its codes.
    pub fn head(&self) -> Head {
        Head {
            id: self.id.clone(),
            fields: self.fields.clone(),
            keys: self.keys,
            codes: self.hits.len(),
            hits: self.total_hits(),
        }
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
