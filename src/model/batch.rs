//! The batch one Postgres transaction applies, and the compact form of its codes and hits.

use anyhow::{bail, Context, Result};

use super::{decode, Entry};

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
    pub(crate) fn columns(&self, from: usize, until: usize) -> (Vec<&str>, Vec<i64>) {
        let part = &self.index[from..until];
        (
            part.iter().map(|e| self.code(e)).collect(),
            part.iter().map(|e| e.2).collect(),
        )
    }

    /// The hits of `code`, in a finished batch (the tests' way to look one up).
    #[cfg(test)]
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
    pub(crate) fn from_chunks(id: &str, chunks: Vec<(String, Vec<u8>)>) -> Result<Batch> {
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
    pub(crate) fn add(&mut self, entries: Vec<Entry>) -> Result<()> {
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

    pub(crate) fn total_hits(&self) -> i128 {
        self.hits.total()
    }

    /// The batch without its codes.
    pub(crate) fn head(&self) -> Head {
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
