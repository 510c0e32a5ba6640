//! The Lua scripts (`lua/*.lua`, each with a header naming its KEYS and ARGV) and the shapes
//! of their replies. One set for the process: a script is its text and its SHA1.

use std::sync::OnceLock;

use anyhow::{bail, Context, Result};
use redis::Script;

use crate::model::{self, BadKey, BadReason, Claimed};

const COLLECT: &str = include_str!("lua/collect.lua");

pub struct Scripts {
    /// `collect.lua` + `claim.lua`.
    pub claim: Script,
    /// `collect.lua` + `inspect.lua`.
    pub inspect: Script,
    pub seal: Script,
    pub ack: Script,
    pub fence: Script,
}

/// The scripts, made once.
pub fn scripts() -> &'static Scripts {
    static SCRIPTS: OnceLock<Scripts> = OnceLock::new();
    SCRIPTS.get_or_init(|| Scripts {
        claim: Script::new(&[COLLECT, include_str!("lua/claim.lua")].concat()),
        inspect: Script::new(&[COLLECT, include_str!("lua/inspect.lua")].concat()),
        seal: Script::new(include_str!("lua/seal.lua")),
        ack: Script::new(include_str!("lua/ack.lua")),
        fence: Script::new(include_str!("lua/fence.lua")),
    })
}

/// Decodes a claim's or an inspection's `{packed, bad}` reply.
pub fn claimed(packed: &[u8], bad: Vec<Vec<u8>>) -> Result<Claimed> {
    Ok(Claimed {
        entries: model::decode(packed)
            .context("BUG: a claim script packed a chunk we cannot read")?,
        bad: bad_keys(bad)?,
        fields: Vec::new(),
    })
}

/// The flat `{key, reason, …}` list of keys a claim left alone.
fn bad_keys(flat: Vec<Vec<u8>>) -> Result<Vec<BadKey>> {
    if !flat.len().is_multiple_of(2) {
        bail!("BUG: the claim script returned an odd list of bad keys");
    }
    let mut out = Vec::with_capacity(flat.len() / 2);
    let mut it = flat.into_iter();
    while let (Some(key), Some(reason)) = (it.next(), it.next()) {
        let reason = match reason.as_slice() {
            b"wrong_type" => BadReason::WrongType,
            b"not_integer" => BadReason::NotInteger,
            other => bail!(
                "BUG: the claim script returned reason {:?}",
                String::from_utf8_lossy(other)
            ),
        };
        out.push(BadKey { key, reason });
    }
    Ok(out)
}

/// A journal's flat `HGETALL` (or seal) reply as (field, value), without the `open` mark.
pub fn chunks(flat: Vec<Vec<u8>>) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::with_capacity(flat.len() / 2);
    let mut it = flat.into_iter();
    while let (Some(f), Some(v)) = (it.next(), it.next()) {
        let field = String::from_utf8(f)
            .context("a journal field is not UTF-8; it was not written by redis-flusher")?;
        if field != OPEN_FIELD {
            out.push((field, v));
        }
    }
    Ok(out)
}

/// Field that marks a journal as still open for more chunks. Recovery removes it first
/// ("seals" the journal), so a run that lost its lock can no longer add to a journal that
/// another run is applying: its next claim fails instead of being deleted unapplied.
pub const OPEN_FIELD: &str = "open";
