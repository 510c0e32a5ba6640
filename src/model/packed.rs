//! A claimed chunk as it is stored in Redis: one packed value, for each claimed key
//! `<byte length of code>:<code><value>\n`. The code is length-prefixed because it may hold
//! any UTF-8 text, newlines and colons included; the value is a base-10 integer that the claim
//! script has already checked, so it never holds `\n`. The same decoder reads what a claim
//! returns and what recovery finds, so a batch is applied from exactly the bytes that were
//! journaled.

use anyhow::{bail, Context, Result};

use super::Entry;

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
pub(crate) fn decode(packed: &[u8]) -> Result<Vec<Entry>> {
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
