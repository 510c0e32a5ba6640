//! The Lua scripts (`lua/*.lua`, each with a header naming its KEYS and ARGV) and the shapes
//! of their replies. One set for the process: a script is its text and its SHA1.

use std::sync::OnceLock;

use anyhow::{bail, Context, Result};
use redis::Script;

use crate::model::{self, BadKey, BadReason, Claimed};

const COLLECT: &str = include_str!("lua/collect.lua");

pub(crate) struct Scripts {
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

/// A journal's contents: what it is for, if it says, and its chunks as (field, value).
#[derive(Debug, Default)]
pub struct Contents {
    pub target: Option<String>,
    pub chunks: Vec<(String, Vec<u8>)>,
}

impl Contents {
    /// Adds a cluster's sub-journal of slot `slot`: its chunks named `<slot>/<field>`.
    pub(crate) fn add(&mut self, slot: u16, sub: Contents) {
        self.target = self.target.take().or(sub.target);
        self.chunks.extend(
            sub.chunks
                .into_iter()
                .map(|(f, v)| (format!("{slot}/{f}"), v)),
        );
    }
}

/// A journal's flat `HGETALL` (or seal) reply, read into its contents: the `open` mark is
/// left out, the `for` field is its target.
pub(crate) fn contents(flat: Vec<Vec<u8>>) -> Result<Contents> {
    let mut out = Contents::default();
    let mut it = flat.into_iter();
    while let (Some(f), Some(v)) = (it.next(), it.next()) {
        let field = String::from_utf8(f)
            .context("a journal field is not UTF-8; it was not written by redis-flusher")?;
        match field.as_str() {
            OPEN_FIELD => {}
            FOR_FIELD => out.target = Some(String::from_utf8_lossy(&v).into_owned()),
            _ => out.chunks.push((field, v)),
        }
    }
    Ok(out)
}

/// A seal's `{'ours', flat}` or `{'other', target}` reply: the contents, or the other target.
pub fn sealed(reply: (String, redis::Value)) -> Result<std::result::Result<Contents, String>> {
    match reply {
        (ours, flat) if ours == "ours" => Ok(Ok(contents(redis::from_redis_value(flat)?)?)),
        (other, target) if other == "other" => Ok(Err(redis::from_redis_value(target)?)),
        (what, _) => bail!("BUG: the seal script answered {what:?}"),
    }
}

/// What acknowledging a batch came to.
#[derive(Debug)]
pub enum Acked {
    /// Its journal is gone, and its unknown codes were parked, but for these (code, why):
    /// a field that would overflow. The ledger has their hits.
    Done(Vec<(String, String)>),
    /// Redis would not park (out of memory): nothing was parked and the journal stays, so
    /// that the next run parks it all. Why, as Redis said.
    Kept(String),
}

/// The field in which a journal records what it is for (claim.lua).
pub(crate) const FOR_FIELD: &str = "for";

/// Field that marks a journal as still open for more chunks. Recovery removes it first
/// ("seals" the journal), so a run that lost its lock can no longer add to a journal that
/// another run is applying: its next claim fails instead of being deleted unapplied.
pub(crate) const OPEN_FIELD: &str = "open";
