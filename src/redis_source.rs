//! Everything that talks to Redis: connect, SCAN, the claim script, journal read/seal/delete.
//!
//! The journal of a batch is one hash, `<journal prefix><batch id>`: one field per claimed
//! chunk (`c0`, `c1`, …) holding that chunk's entries packed as `journal.rs` describes, and a
//! field `open` while the run that owns it may still add chunks. A key's count is always in
//! exactly one place, its live key or a journal, because the claim moves it inside one Lua
//! script, which Redis runs atomically.
//!
//! What the counts mean and when a journal may be deleted is `flush.rs`'s business.

use anyhow::{bail, Context, Result};
use redis::{Connection, Script, ScriptInvocation};

use crate::config::RedisConfig;
use crate::journal::{self, Entry};
use crate::redis_cluster::Cluster;

/// Field that marks a journal as still open for more chunks. Recovery removes it first
/// ("seals" the journal), so a run that lost its lock can no longer add to a journal that
/// another run is applying: its next claim fails instead of being deleted unapplied.
const OPEN_FIELD: &str = "open";

/// Shared by the claim and the read-only inspection, so that `--dry-run` and `run` judge
/// keys alike. `valid`: a base-10 integer within i64. `collect`: reads KEYS[first..], returns
/// the valid ones packed as `journal.rs` describes, the bad ones as {key, reason, …}, and how
/// many were packed; with `take`, deletes the valid keys. Invalid and wrong-type keys are
/// never touched.
const LUA_COMMON: &str = r#"
local function valid(v)
  if not string.find(v, '^-?%d+$') then return false end
  if #v < 19 then return true end -- 18 digits cannot overflow: the common case stops here
  local neg = string.sub(v, 1, 1) == '-'
  local d = string.gsub(string.gsub(v, '^-', ''), '^0+', '')
  if #d < 19 then return true end
  if #d > 19 then return false end
  if neg then return d <= '9223372036854775808' end
  return d <= '9223372036854775807'
end
local function collect(first, plen, take)
  local out, bad, del = {}, {}, {}
  if #KEYS < first then return '', bad, 0 end
  -- One MGET and one DEL per chunk, not a GET and a DEL per key: each call from Lua costs
  -- a full command dispatch, and this is most of what a claim costs Redis.
  local vals = redis.call('MGET', unpack(KEYS, first))
  local seen = {}
  for j = 1, #vals do
    local k, v = KEYS[first + j - 1], vals[j]
    -- SCAN may return a key twice (while Redis rehashes), and MGET would then read its count
    -- twice: each key is judged once per chunk.
    if not seen[k] then
      seen[k] = true
      if not v then
        -- MGET answers nil for a hash, list, set… as for a missing key
        if redis.call('EXISTS', k) == 1 then
          bad[#bad + 1] = k; bad[#bad + 1] = 'wrong_type'
        end
      elseif valid(v) then
        del[#del + 1] = k
        local code = string.sub(k, plen + 1)
        out[#out + 1] = #code .. ':' .. code .. v .. '\n'
      else
        bad[#bad + 1] = k; bad[#bad + 1] = 'not_integer'
      end
    end
  end
  if take and #del > 0 then redis.call('DEL', unpack(del)) end
  return table.concat(out), bad, #out
end
"#;

/// KEYS[1] the journal, KEYS[2] the journal index, KEYS[3..] the counters. ARGV[1] prefix
/// length, ARGV[2] the chunk's field, ARGV[3] '1' when this chunk creates the journal,
/// ARGV[4] the batch id. Returns {packed, bad}. Preceded by `LUA_CLAIM_SINGLE` or
/// `LUA_CLAIM_FENCED`, which set `first`, the index in KEYS of the first counter.
const LUA_CLAIM_BODY: &str = r#"
local journal = KEYS[1]
if ARGV[3] ~= '1' and redis.call('HEXISTS', journal, 'open') == 0 then
  return redis.error_reply('SEALED journal ' .. journal .. ' was sealed or removed by another run')
end
local packed, bad, n = collect(first, tonumber(ARGV[1]), true)
if n > 0 then
  if ARGV[3] == '1' then
    redis.call('HSET', journal, 'open', '1', ARGV[2], packed)
    redis.call('SADD', KEYS[2], ARGV[4])
  else
    redis.call('HSET', journal, ARGV[2], packed)
  end
end
return {packed, bad}
"#;

/// The claim on one Redis: the counters start at KEYS[3].
const LUA_CLAIM_SINGLE: &str = "local first = 3\n";

/// The claim on Redis Cluster (`redis_cluster.rs`): KEYS[3] is the slot's fence and the
/// counters start at KEYS[4]; ARGV[5] is this run's token. A run whose token is below the
/// fence (a newer run has started) claims nothing.
const LUA_CLAIM_FENCED: &str = r#"
local first = 4
local fence = redis.call('GET', KEYS[3])
if fence and tonumber(fence) > tonumber(ARGV[5]) then
  return redis.error_reply('FENCED a newer run (token ' .. fence .. ') has started since this one (token ' .. ARGV[5] .. ')')
end
"#;

/// Read-only twin of the claim for `--dry-run`: KEYS the counters, ARGV[1] prefix length.
const LUA_INSPECT_BODY: &str = r#"
local packed, bad = collect(1, tonumber(ARGV[1]), false)
return {packed, bad}
"#;

/// KEYS[1] the journal, KEYS[2] the index, ARGV[1] the batch id. Removes the `open` field and
/// returns the remaining fields and values; an empty journal leaves the index.
const LUA_SEAL: &str = r#"
redis.call('HDEL', KEYS[1], 'open')
local all = redis.call('HGETALL', KEYS[1])
if #all == 0 then redis.call('SREM', KEYS[2], ARGV[1]) end
return all
"#;

/// KEYS[1] the journal, KEYS[2] the unknown-codes hash, KEYS[3] the index. ARGV[1] the batch
/// id, ARGV[2] the number of chunk fields, then the fields, then code, hits pairs to park.
/// Runs only if the journal still holds the first field: parking and deleting happen
/// together or not at all, so a retry after a crash can never park twice. The journal
/// leaves the index in the same step as its last field goes.
const LUA_ACK: &str = r#"
local n = tonumber(ARGV[2])
if redis.call('HEXISTS', KEYS[1], ARGV[3]) == 0 then
  if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('SREM', KEYS[3], ARGV[1]) end
  return {0, {}}
end
local failed = {}
for i = n + 3, #ARGV, 2 do
  local r = redis.pcall('HINCRBY', KEYS[2], ARGV[i], ARGV[i + 1])
  if type(r) == 'table' then failed[#failed + 1] = ARGV[i] end
end
redis.call('HDEL', KEYS[1], 'open', unpack(ARGV, 3, n + 2))
if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('SREM', KEYS[3], ARGV[1]) end
return {1, failed}
"#;

/// The index of journals is a set at `<journal prefix>index` holding the id of every journal
/// that exists, so recovery need not SCAN the whole keyspace (at 1M keys that SCAN cost
/// 0.6 s before any work). This member keeps the set from vanishing when it has no journal:
/// a missing index means it was lost, and recovery then falls back to a full SCAN.
const INDEX_SENTINEL: &str = "-";

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

/// A key left untouched, and why.
#[derive(Debug, Clone)]
pub struct BadKey {
    pub key: Vec<u8>,
    pub reason: BadReason,
}

/// What one claim (or inspection) found.
#[derive(Debug, Default)]
pub struct Claimed {
    /// The valid counters taken (an inspection: that would be taken), decoded from the
    /// same packed bytes the claim wrote to the journal.
    pub entries: Vec<Entry>,
    pub bad: Vec<BadKey>,
    /// The journal fields the claim wrote (none if it took nothing; on a cluster, one per
    /// slot, named `<slot>/<field>`).
    pub fields: Vec<String>,
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

/// A connection with the configured timeouts, checked with a PING, so that a wrong password
/// or a server that is not Redis is reported as a connection problem, naming the server and
/// the variables to check, rather than half-way through the flush.
pub fn connect_raw(cfg: &RedisConfig) -> Result<Connection> {
    connect_to(cfg, &cfg.info)
}

/// As [`connect_raw`], to `info` (a cluster node) with `cfg`'s timeouts and TLS.
pub fn connect_to(cfg: &RedisConfig, info: &redis::ConnectionInfo) -> Result<Connection> {
    let name = if cfg.cluster {
        format!("{} (a node of {})", info.addr(), cfg.display)
    } else {
        cfg.display.clone()
    };
    let fail = || {
        format!(
            "could not connect to Redis at {}: check `REDIS_URL` or `REDIS_HOST`/`REDIS_PORT` \
             (and `REDIS_USERNAME`/`REDIS_PASSWORD` if it asks for them{})",
            name,
            if cfg.tls.is_some() {
                "; for TLS, `REDIS_CA_FILE` names the CA that signed the server's certificate, \
                 and `REDIS_CLIENT_CERT_FILE`/`REDIS_CLIENT_KEY_FILE` a client certificate if \
                 the server asks for one"
            } else {
                ""
            }
        )
    };
    let client = match &cfg.tls {
        Some(certs) => redis::Client::build_with_tls(info.clone(), certs.clone()),
        None => redis::Client::open(info.clone()),
    }
    .with_context(fail)?;
    let mut con = client
        .get_connection_with_timeout(cfg.connect_timeout)
        .with_context(fail)?;
    con.set_read_timeout(Some(cfg.command_timeout))
        .with_context(fail)?;
    con.set_write_timeout(Some(cfg.command_timeout))
        .with_context(fail)?;
    redis::cmd("PING")
        .query::<()>(&mut con)
        .with_context(fail)?;
    Ok(con)
}

/// What `check` reads off a Redis server. `None`: the server would not say (a managed Redis
/// or an ACL user may not run CONFIG).
pub struct RedisFacts {
    pub version: String,
    pub aof: Option<bool>,
    /// `CONFIG GET save`: empty when RDB snapshots are off.
    pub rdb_save: Option<String>,
    pub maxmemory_policy: Option<String>,
    /// Whether this user may run Lua scripts (every claim is one); the error otherwise.
    pub scripting: std::result::Result<(), String>,
}

/// A field of `INFO` output (`name:value` lines).
fn info_field(info: &str, name: &str) -> Option<String> {
    info.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(|v| v.trim().to_owned())
}

pub struct RedisSource {
    con: Connection,
    /// On Redis Cluster: the masters, and the per-slot journals (`redis_cluster.rs`).
    cluster: Option<Cluster>,
    claim_cluster: Script,
    display: String,
    journal_prefix: String,
    claim: Script,
    inspect: Script,
    seal: Script,
    ack: Script,
}

impl RedisSource {
    /// Connects; `journal_prefix` names this flusher's journals (`--journal-prefix`).
    pub fn connect(cfg: &RedisConfig, journal_prefix: &str) -> Result<RedisSource> {
        let claim_cluster = Script::new(&format!("{LUA_COMMON}{LUA_CLAIM_FENCED}{LUA_CLAIM_BODY}"));
        let inspect = Script::new(&format!("{LUA_COMMON}{LUA_INSPECT_BODY}"));
        let (seal, ack) = (Script::new(LUA_SEAL), Script::new(LUA_ACK));
        let cluster = if cfg.cluster {
            Some(Cluster::connect(
                cfg,
                journal_prefix,
                &[&claim_cluster, &inspect, &seal, &ack],
            )?)
        } else {
            None
        };
        Ok(RedisSource {
            con: connect_raw(cfg)?,
            cluster,
            claim_cluster,
            display: cfg.display.clone(),
            journal_prefix: journal_prefix.to_owned(),
            claim: Script::new(&format!("{LUA_COMMON}{LUA_CLAIM_SINGLE}{LUA_CLAIM_BODY}")),
            inspect,
            seal,
            ack,
        })
    }

    /// On Redis Cluster: the masters' addresses.
    pub fn masters(&self) -> Option<Vec<String>> {
        self.cluster.as_ref().map(Cluster::masters)
    }

    /// On Redis Cluster, raises every slot's fence to `token` so that an older run can claim
    /// nothing more; must come before recovery lists the journals. Nothing to do on one
    /// Redis, where sealing suffices.
    pub fn raise_fences(&mut self, token: i64) -> Result<()> {
        match self.cluster.as_mut() {
            Some(c) => c.raise_fences(token),
            None => Ok(()),
        }
    }

    /// This run's token, for a claim connection that did not raise the fences itself.
    pub fn set_token(&mut self, token: i64) {
        if let Some(c) = self.cluster.as_mut() {
            c.token = token;
        }
    }

    fn ctx(&self, what: &str) -> String {
        format!("Redis at {}: {what} failed", self.display)
    }

    /// One `SCAN` step. `count` is a hint to the server; keep it ≤ ~2000 so one call never
    /// stalls Redis for long.
    pub fn scan(
        &mut self,
        cursor: u64,
        pattern: &[u8],
        count: usize,
    ) -> Result<(u64, Vec<Vec<u8>>)> {
        if let Some(c) = self.cluster.as_mut() {
            return c.scan(cursor, pattern, count);
        }
        scan_step(&mut self.con, cursor, pattern, count).with_context(|| self.ctx("SCAN"))
    }

    /// The server's version, persistence, eviction policy, and whether we may run scripts.
    pub fn facts(&mut self) -> Result<RedisFacts> {
        let info: String = redis::cmd("INFO")
            .arg("server")
            .arg("persistence")
            .arg("memory")
            .query(&mut self.con)
            .or_else(|_| redis::cmd("INFO").query(&mut self.con)) // before Redis 7: one section
            .with_context(|| self.ctx("INFO"))?;
        let config = |con: &mut Connection, name: &str| -> Option<String> {
            let pair: Vec<String> = redis::cmd("CONFIG").arg("GET").arg(name).query(con).ok()?;
            pair.into_iter().nth(1)
        };
        let aof = config(&mut self.con, "appendonly")
            .map(|v| v == "yes")
            .or_else(|| info_field(&info, "aof_enabled").map(|v| v == "1"));
        let rdb_save = config(&mut self.con, "save");
        let scripting = redis::cmd("EVAL")
            .arg("return 1")
            .arg(0)
            .query::<i64>(&mut self.con)
            .map(|_| ())
            .map_err(|e| e.to_string());
        Ok(RedisFacts {
            version: info_field(&info, "redis_version").unwrap_or_else(|| "unknown".into()),
            aof,
            rdb_save,
            maxmemory_policy: info_field(&info, "maxmemory_policy"),
            scripting,
        })
    }

    /// The Redis key of a batch's journal.
    pub fn journal_key(&self, batch_id: &str) -> String {
        if self.cluster.is_some() {
            return format!("{}{{…}}{batch_id}", self.journal_prefix);
        }
        format!("{}{batch_id}", self.journal_prefix)
    }

    fn index_key(&self) -> String {
        format!("{}index", self.journal_prefix)
    }

    /// Claims `keys` into the chunk `field` of batch `batch_id`'s journal, atomically. Keys
    /// that are gone by now are skipped; bad values and wrong types are left untouched and
    /// reported. `create` for the batch's first chunk with entries.
    pub fn claim(
        &mut self,
        batch_id: &str,
        field: &str,
        create: bool,
        keys: &[Vec<u8>],
        prefix_len: usize,
    ) -> Result<Claimed> {
        if let Some(c) = self.cluster.as_mut() {
            return c.claim(&self.claim_cluster, batch_id, field, keys, prefix_len);
        }
        let mut inv = self.claim.prepare_invoke();
        inv.key(self.journal_key(batch_id)).key(self.index_key());
        for k in keys {
            inv.key(k.as_slice());
        }
        inv.arg(prefix_len)
            .arg(field)
            .arg(if create { "1" } else { "0" })
            .arg(batch_id);
        let ctx = self.ctx("the claim script");
        let mut claimed = collect(&mut self.con, &inv, ctx)?;
        if !claimed.entries.is_empty() {
            claimed.fields.push(field.to_owned());
        }
        Ok(claimed)
    }

    /// Reads what `claim` would take, changing nothing (for `--dry-run`).
    pub fn inspect(&mut self, keys: &[Vec<u8>], prefix_len: usize) -> Result<Claimed> {
        if let Some(c) = self.cluster.as_mut() {
            return c.inspect(&self.inspect, keys, prefix_len);
        }
        let mut inv = self.inspect.prepare_invoke();
        for k in keys {
            inv.key(k.as_slice());
        }
        inv.arg(prefix_len);
        let ctx = self.ctx("the inspection script");
        collect(&mut self.con, &inv, ctx)
    }

    /// The ids of every journal (left by failed runs, or by a crash of this run), from the
    /// index. When the index is missing or lacks its sentinel (never made, or lost; a claim
    /// of a run that lost its lock may have made it anew, with only its own journal), SCANs
    /// for journal keys instead and, with `repair`, rebuilds the index from what it found.
    pub fn journals(&mut self, repair: bool) -> Result<Vec<String>> {
        if let Some(c) = self.cluster.as_mut() {
            return c.journals();
        }
        let index = self.index_key();
        let members: Vec<String> = redis::cmd("SMEMBERS")
            .arg(&index)
            .query(&mut self.con)
            .with_context(|| self.ctx("reading the journal index"))?;
        if members.iter().any(|m| m == INDEX_SENTINEL) {
            return Ok(members
                .into_iter()
                .filter(|m| m != INDEX_SENTINEL)
                .collect());
        }
        let pattern = format!("{}*", glob_escape(&self.journal_prefix));
        let mut cursor = 0;
        let mut found = Vec::new();
        loop {
            let (next, keys) = self.scan(cursor, pattern.as_bytes(), 1000)?;
            for k in keys {
                if k == index.as_bytes() {
                    continue;
                }
                let key = String::from_utf8(k)
                    .context("a journal key is not UTF-8; it was not written by redis-flusher")?;
                found.push(key[self.journal_prefix.len()..].to_owned());
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        found.sort();
        found.dedup();
        if repair {
            redis::cmd("SADD")
                .arg(&index)
                .arg(INDEX_SENTINEL)
                .arg(&found)
                .query::<()>(&mut self.con)
                .with_context(|| self.ctx("creating the journal index"))?;
        }
        Ok(found)
    }

    /// Seals a batch's journal (no more chunks can join it) and returns its chunks as
    /// (field, packed).
    pub fn seal(&mut self, batch_id: &str) -> Result<Vec<(String, Vec<u8>)>> {
        if let Some(c) = self.cluster.as_mut() {
            return c.seal(&self.seal, batch_id);
        }
        let journal = self.journal_key(batch_id);
        let flat: Vec<Vec<u8>> = self
            .seal
            .key(&journal)
            .key(self.index_key())
            .arg(batch_id)
            .invoke(&mut self.con)
            .with_context(|| self.ctx(&format!("sealing journal {journal}")))?;
        pairs(flat)
    }

    /// Reads a batch's journal without sealing it (for `--dry-run`).
    pub fn read_journal(&mut self, batch_id: &str) -> Result<Vec<(String, Vec<u8>)>> {
        if let Some(c) = self.cluster.as_mut() {
            return c.read_journal(batch_id);
        }
        let journal = self.journal_key(batch_id);
        let flat: Vec<Vec<u8>> = redis::cmd("HGETALL")
            .arg(&journal)
            .query(&mut self.con)
            .with_context(|| self.ctx(&format!("reading journal {journal}")))?;
        Ok(pairs(flat)?
            .into_iter()
            .filter(|(f, _)| f != OPEN_FIELD)
            .collect())
    }

    /// Deletes a batch's chunks from its journal, after its transaction committed, parking
    /// `unknown` hits in `unknown_key` in the same atomic step. Returns false when the chunks
    /// were already gone (another run acknowledged them), and the codes that could not be
    /// parked (their hash field would overflow).
    pub fn ack(
        &mut self,
        batch_id: &str,
        fields: &[String],
        unknown_key: &str,
        unknown: &[(String, i64)],
    ) -> Result<(bool, Vec<String>)> {
        if fields.is_empty() {
            return Ok((true, Vec::new()));
        }
        if let Some(c) = self.cluster.as_mut() {
            // Config refuses --keep-unknown on a cluster: the hash is in a slot of its own.
            if !unknown.is_empty() {
                bail!("BUG: parking unknown codes on Redis Cluster");
            }
            return Ok((c.ack(&self.ack, batch_id, fields)?, Vec::new()));
        }
        let journal = self.journal_key(batch_id);
        let mut inv = self.ack.prepare_invoke();
        inv.key(&journal)
            .key(unknown_key)
            .key(self.index_key())
            .arg(batch_id)
            .arg(fields.len());
        for f in fields {
            inv.arg(f);
        }
        for (code, hits) in unknown {
            inv.arg(code).arg(*hits);
        }
        let (done, failed): (i64, Vec<String>) = inv
            .invoke(&mut self.con)
            .with_context(|| self.ctx(&format!("deleting journal {journal}")))?;
        Ok((done == 1, failed))
    }
}

/// One `SCAN cursor MATCH pattern COUNT count` on `con`: the next cursor and the keys.
pub(crate) fn scan_step(
    con: &mut Connection,
    cursor: u64,
    pattern: &[u8],
    count: usize,
) -> redis::RedisResult<(u64, Vec<Vec<u8>>)> {
    redis::cmd("SCAN")
        .arg(cursor)
        .arg("MATCH")
        .arg(pattern)
        .arg("COUNT")
        .arg(count)
        .query(con)
}

/// Escapes glob characters so that a literal prefix matches only itself in `SCAN MATCH`.
pub fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Runs a claim or inspection and decodes its {packed, bad} answer.
fn collect(con: &mut Connection, inv: &ScriptInvocation, ctx: String) -> Result<Claimed> {
    let (packed, bad): (Vec<u8>, Vec<Vec<u8>>) = inv.invoke(con).context(ctx)?;
    Ok(Claimed {
        entries: journal::decode(&packed)
            .context("BUG: a claim script packed a chunk we cannot read")?,
        bad: bad_pairs(bad)?,
        fields: Vec::new(),
    })
}

pub(crate) fn bad_pairs(flat: Vec<Vec<u8>>) -> Result<Vec<BadKey>> {
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

pub(crate) fn pairs(flat: Vec<Vec<u8>>) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::with_capacity(flat.len() / 2);
    let mut it = flat.into_iter();
    while let (Some(f), Some(v)) = (it.next(), it.next()) {
        out.push((
            String::from_utf8(f)
                .context("a journal field is not UTF-8; it was not written by redis-flusher")?,
            v,
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_that_cannot_be_in_a_table_are_refused_before_a_claim() {
        assert_eq!(check_code(b"p:abc", 2), None);
        assert_eq!(check_code(b"p:", 2), Some(BadReason::CodeEmpty));
        assert_eq!(check_code(b"p:\xff\xfe", 2), Some(BadReason::CodeNotUtf8));
        assert_eq!(check_code(b"p:a\0b", 2), Some(BadReason::CodeHasNul));
        assert_eq!(check_code("p:😀".as_bytes(), 2), None);
    }

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(glob_escape("a*b?c[d]e\\"), "a\\*b\\?c\\[d\\]e\\\\");
        assert_eq!(
            glob_escape("redis_flusher:journal:"),
            "redis_flusher:journal:"
        );
    }
}
