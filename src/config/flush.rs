//! What to flush and how, apart from the connections: the pattern and the journals (the Redis
//! side's slice, [`SourceConfig`]), the table and its columns ([`TargetConfig`]), our own
//! tables ([`LedgerConfig`]), and checked SQL names ([`Ident`]).

use super::named;
use super::usage::usage;
use crate::cli::{Statement, TargetArgs};
use crate::model::Shard;

/// A table or column name, checked and quoted for SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ident {
    /// As the user wrote it (for messages).
    pub name: String,
    /// Double-quoted, each part of `schema.table` on its own: safe to splice into SQL.
    pub quoted: String,
}

impl Ident {
    /// Accepts `name` or `schema.name`, each part a plain identifier of at most 63 bytes.
    /// `what` names the setting in errors (see [`named`]).
    pub fn parse(what: &str, value: &str) -> anyhow::Result<Ident> {
        let parts: Vec<&str> = value.split('.').collect();
        let plain = |p: &str| {
            !p.is_empty()
                && p.len() <= 63
                && p.chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
        };
        if parts.len() > 2 || !parts.iter().all(|p| plain(p)) {
            return Err(usage(format!(
                "{what} must be a plain SQL name (letters, digits, `_`, at most 63 bytes, \
                 optionally `schema.name`), got {value:?}"
            )));
        }
        let quoted = parts
            .iter()
            .map(|p| format!("\"{p}\""))
            .collect::<Vec<_>>()
            .join(".");
        Ok(Ident {
            name: value.to_owned(),
            quoted,
        })
    }
}

/// The form of the bulk UPDATE (`--statement`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateForm {
    /// `… FROM unnest($1::text[], $2::int8[]) AS d(code, count) …`
    Unnest,
    /// `… FROM (VALUES ($1::text, $2::int8), …) AS d(code, count) …`
    Values,
}

/// What the Redis side needs: which keys, how many per claim, where the journals live.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// The literal prefix of the pattern; a key's code is the key minus this.
    pub prefix: Vec<u8>,
    /// The pattern for `SCAN MATCH`: the prefix (which holds no glob character) and `*`.
    pub scan_match: Vec<u8>,
    /// Keys per claim script (`--claim-size`).
    pub claim_size: usize,
    pub journal_prefix: String,
    /// `--keep-unknown`: park hits of codes with no row in `unknown_key`.
    pub keep_unknown: bool,
    pub unknown_key: String,
    /// The slots this run owns (`--shard`, or `REDIS_FLUSHER_SHARDS` and
    /// `JOB_COMPLETION_INDEX`); every slot without.
    pub shard: Shard,
}

impl SourceConfig {
    /// The hash unknown codes' hits are parked in, if they are (`--keep-unknown`).
    pub(crate) fn parked_in(&self) -> Option<&str> {
        self.keep_unknown.then_some(self.unknown_key.as_str())
    }
}

/// The table the hits are added to, and how.
#[derive(Debug, Clone)]
pub struct TargetConfig {
    pub table: Ident,
    pub code_column: Ident,
    pub count_column: Ident,
    pub form: UpdateForm,
}

/// The tables redis-flusher keeps for itself, and how long their rows stay.
#[derive(Debug, Clone)]
pub struct LedgerConfig {
    pub ledger_table: Ident,
    pub runs_table: Ident,
    /// The run lock's table (`postgres/lease.rs`).
    pub lease_table: Ident,
    /// Where refused codes' hits wait (`postgres/quarantine.rs`).
    pub quarantine_table: Ident,
    pub ledger_days: u32,
}

/// What to flush and how. Knows nothing about connections.
#[derive(Debug, Clone)]
pub struct FlushConfig {
    pub source: SourceConfig,
    pub target: TargetConfig,
    pub ledger: LedgerConfig,
    /// The most keys one Postgres transaction applies (`--batch-size`; `scan::Growth`).
    pub batch_size: usize,
    /// How long the run lock outlives its last renewal (`--lock-ttl`).
    pub lock_ttl: std::time::Duration,
    /// Postgres connections applying batches at once (`--pg-connections`).
    pub pg_connections: usize,
}

/// The shard `--shard` (or `REDIS_FLUSHER_SHARD`) names; else `REDIS_FLUSHER_SHARDS=COUNT`
/// with the index in `JOB_COMPLETION_INDEX`, which a Kubernetes Indexed Job sets; else every
/// slot.
fn shard(flag: Option<&str>) -> anyhow::Result<Shard> {
    if let Some(s) = flag {
        return Shard::parse(s).map_err(|e| {
            usage(format!(
                "{} must be INDEX/COUNT: {e}",
                named("--shard", "REDIS_FLUSHER_SHARD", s)
            ))
        });
    }
    let Some(count) = std::env::var("REDIS_FLUSHER_SHARDS").ok() else {
        return Ok(Shard::ALL);
    };
    let count: u16 = count
        .trim()
        .parse()
        .ok()
        .filter(|&n| (1..=crate::model::SLOTS).contains(&n))
        .ok_or_else(|| {
            usage(format!(
                "REDIS_FLUSHER_SHARDS={count:?} must be a number of shards from 1 to {}",
                crate::model::SLOTS
            ))
        })?;
    let Ok(index) = std::env::var("JOB_COMPLETION_INDEX") else {
        return Err(usage(format!(
            "REDIS_FLUSHER_SHARDS={count} needs this shard's index in JOB_COMPLETION_INDEX              (a Kubernetes Indexed Job sets it); elsewhere give --shard INDEX/{count}"
        )));
    };
    Shard::of(index.trim(), count).map_err(|e| {
        usage(format!(
            "JOB_COMPLETION_INDEX={index:?} with REDIS_FLUSHER_SHARDS={count}: {e}"
        ))
    })
}

/// A table or column name from the setting `flag`/`var`.
fn ident(flag: &str, var: &str, value: &str) -> anyhow::Result<Ident> {
    Ident::parse(&named(flag, var, value), value)
}

/// Splits `prefix*` into its prefix. Anything but a non-empty literal prefix and one trailing
/// `*` is refused: the code must be exactly "key minus prefix". The error says what is wrong
/// with the pattern, for the caller to name the setting.
pub(crate) fn parse_pattern(pattern: &str) -> anyhow::Result<String> {
    let Some(prefix) = pattern.strip_suffix('*') else {
        return Err(usage(format!(
            "must end in one `*` (like `url_hits:*`), got {pattern:?}"
        )));
    };
    if prefix.is_empty() {
        return Err(usage(
            "needs a literal prefix before the `*` (like `url_hits:*`): \
             `*` alone would flush every key in Redis",
        ));
    }
    if let Some(c) = prefix
        .chars()
        .find(|c| matches!(c, '*' | '?' | '[' | ']' | '\\'))
    {
        return Err(usage(format!(
            "may hold only one `*`, at the end, and no other glob character; \
             found {c:?} in {pattern:?}"
        )));
    }
    Ok(prefix.to_owned())
}

impl FlushConfig {
    pub(crate) fn from_args(t: &TargetArgs) -> anyhow::Result<FlushConfig> {
        let prefix = parse_pattern(&t.pattern).map_err(|e| {
            let name = named("--pattern", "REDIS_FLUSHER_PATTERN", &t.pattern);
            usage(format!("{name} {e}"))
        })?;
        // Neither a journal nor the unknown hash may ever be scanned as a counter: that would
        // flush our own bookkeeping into the table. A journal key is the journal prefix and a
        // batch id, so neither prefix may start with the other (`url_` and `url_1*` would
        // match journal `url_19a…`).
        if t.journal_prefix.is_empty()
            || t.journal_prefix.starts_with(&prefix)
            || prefix.starts_with(&t.journal_prefix)
        {
            return Err(usage(format!(
                "`--journal-prefix` {:?} must be non-empty, and neither it nor the pattern's \
                 prefix {prefix:?} may start with the other",
                t.journal_prefix
            )));
        }
        if t.unknown_key.starts_with(&prefix) || t.unknown_key.starts_with(&t.journal_prefix) {
            return Err(usage(format!(
                "`--unknown-key` {:?} must not match `--pattern` or `--journal-prefix`",
                t.unknown_key
            )));
        }
        Ok(FlushConfig {
            source: SourceConfig {
                scan_match: format!("{prefix}*").into_bytes(),
                prefix: prefix.into_bytes(),
                claim_size: t.claim_size as usize,
                journal_prefix: t.journal_prefix.clone(),
                keep_unknown: t.keep_unknown,
                unknown_key: t.unknown_key.clone(),
                shard: shard(t.shard.as_deref())?,
            },
            target: TargetConfig {
                table: ident("--table", "REDIS_FLUSHER_TABLE", &t.table)?,
                code_column: ident("--code-column", "REDIS_FLUSHER_CODE_COLUMN", &t.code_column)?,
                count_column: ident(
                    "--count-column",
                    "REDIS_FLUSHER_COUNT_COLUMN",
                    &t.count_column,
                )?,
                form: match t.statement {
                    Statement::Unnest => UpdateForm::Unnest,
                    Statement::Values => UpdateForm::Values,
                },
            },
            ledger: LedgerConfig {
                ledger_table: ident(
                    "--ledger-table",
                    "REDIS_FLUSHER_LEDGER_TABLE",
                    &t.ledger_table,
                )?,
                runs_table: ident("--runs-table", "REDIS_FLUSHER_RUNS_TABLE", &t.runs_table)?,
                lease_table: ident("--lease-table", "REDIS_FLUSHER_LEASE_TABLE", &t.lease_table)?,
                quarantine_table: ident(
                    "--quarantine-table",
                    "REDIS_FLUSHER_QUARANTINE_TABLE",
                    &t.quarantine_table,
                )?,
                ledger_days: t.ledger_days,
            },
            batch_size: t.batch_size as usize,
            lock_ttl: std::time::Duration::from_secs(t.lock_ttl),
            pg_connections: t.pg_connections as usize,
        })
    }

    /// What this flusher's batches are for, as its journals record it (`for`): the pattern, the
    /// table and its columns, and the database (`current_database()`). Only a run with the
    /// same record recovers a journal, so that two flushers sharing a Redis and a journal
    /// prefix never apply each other's hits.
    pub(crate) fn target_record(&self, database: &str) -> String {
        format!(
            "pattern {}*, table {} (code {}, count {}), database {database}",
            String::from_utf8_lossy(&self.source.prefix),
            self.target.table.name,
            self.target.code_column.name,
            self.target.count_column.name,
        )
    }

    /// The tag this flusher's batch and run ids start with (`<owner>.`): 8 hex digits of its
    /// journal prefix and target record. A flusher prunes only ledger rows with its own tag,
    /// because only its own recovery tells it that no journal they guard is left.
    pub fn owner(&self, target_record: &str) -> String {
        let hash =
            crate::model::stable_hash(&format!("{}\0{target_record}", self.source.journal_prefix));
        format!("{:08x}", hash as u32)
    }

    /// What the run lock is named by: one flusher per journal prefix and table at a time,
    /// and per shard (a shard's run never waits for another shard's).
    pub fn lock_name(&self) -> String {
        let s = self.source.shard;
        let shard = match s.is_all() {
            true => String::new(),
            false => format!(" shard {}/{}", s.index, s.count),
        };
        format!(
            "{} -> {}{shard}",
            self.source.journal_prefix, self.target.table.name
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::UsageError;

    #[test]
    fn pattern_is_a_prefix_and_one_trailing_star() {
        assert_eq!(parse_pattern("url_hits:*").unwrap(), "url_hits:");
        assert_eq!(parse_pattern("a*").unwrap(), "a");
        for bad in [
            "url_hits:",
            "*",
            "url_*:*",
            "url_hits:**",
            "u?l:*",
            "u[r]l:*",
            "a\\*",
        ] {
            let err = parse_pattern(bad).unwrap_err();
            assert!(err.downcast_ref::<UsageError>().is_some(), "{bad} accepted");
        }
    }

    fn target(pattern: &str, journal_prefix: &str, unknown_key: &str) -> TargetArgs {
        crate::cli::run_args([
            "run",
            "--pattern",
            pattern,
            "--journal-prefix",
            journal_prefix,
            "--unknown-key",
            unknown_key,
        ])
        .unwrap()
        .target
    }

    #[test]
    fn bookkeeping_keys_can_never_match_the_pattern() {
        let ok = |p, j, u| FlushConfig::from_args(&target(p, j, u)).is_ok();
        assert!(ok(
            "url_hits:*",
            "redis_flusher:journal:",
            "redis_flusher:unknown"
        ));
        assert!(
            !ok("url_hits:*", "url_hits:journal:", "x"),
            "journal under the pattern"
        );
        assert!(
            !ok("url_1*", "url_", "x"),
            "pattern under the journal prefix"
        );
        assert!(!ok("url_hits:*", "", "x"), "empty journal prefix");
        assert!(
            !ok("url_hits:*", "j:", "url_hits:unknown"),
            "unknown hash under the pattern"
        );
        assert!(
            !ok("url_hits:*", "j:", "j:unknown"),
            "unknown hash under the journal prefix"
        );
    }

    #[test]
    fn identifiers_are_checked_and_quoted() {
        assert_eq!(
            Ident::parse("`--table`", "urls").unwrap().quoted,
            "\"urls\""
        );
        assert_eq!(
            Ident::parse("`--table`", "app.Urls_2").unwrap().quoted,
            "\"app\".\"Urls_2\""
        );
        for bad in [
            "",
            "1urls",
            "urls; drop table x",
            "a.b.c",
            "u\"rls",
            ".urls",
            &"x".repeat(64),
        ] {
            assert!(Ident::parse("--table", bad).is_err(), "{bad} accepted");
        }
    }
}
