//! What a run did: counts, examples, timings; the summary log line, the dry run's text and
//! `--json`; and the report so far, for a run that must end early.
//!
//! Filled in by `flush.rs` and `dry_run.rs`; printed by `output.rs`. Knows no SQL and no Lua.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;

use crate::config::{Setting, UsageError};
use crate::model::{BadKey, BadReason};
use crate::postgres::Poisoned;

/// How many example keys or codes a report names.
pub const EXAMPLES: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Everything claimed was applied (or nothing was there to flush).
    Ok,
    /// Another run holds the lock; this one did nothing.
    Locked,
    /// Something failed; what was claimed stays in journals for the next run.
    Failed,
    /// The setup is wrong (a setting, the table, a privilege, the servers' roles): a person
    /// must change something before any run can work. Found before anything was claimed.
    SetupError,
}

impl Status {
    /// As the run history and `--json` name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Locked => "locked",
            Status::Failed => "failed",
            Status::SetupError => "setup_error",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct BadExample {
    /// The key, with bytes that are not UTF-8 shown as `\xNN`.
    pub key: String,
    pub reason: BadReason,
}

/// The report of one run; `--json` prints exactly these fields.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub status: Status,
    pub dry_run: bool,
    /// Counters claimed and applied (a dry run: that would be), recovered ones included.
    pub keys: u64,
    /// Their hits, unknown codes' included.
    pub hits: i128,
    /// Rows of the table whose count changed (would change).
    pub rows_updated: u64,
    /// Codes with no row in the table.
    pub unknown_codes: u64,
    pub unknown_hits: i128,
    pub unknown_examples: Vec<String>,
    /// The Redis hash holding unknown codes' hits (`--keep-unknown`); null when dropped.
    pub unknown_parked_in: Option<String>,
    /// Unknown codes this run parked there (those of earlier runs' batches it acknowledged
    /// included). Others are recorded in the ledger only, or, with Redis out of memory, wait
    /// in their journal for the next run to park them.
    pub unknown_parked: u64,
    /// Keys left untouched in Redis because they cannot be flushed.
    pub bad_keys: u64,
    pub bad_by_reason: BTreeMap<BadReason, u64>,
    pub bad_examples: Vec<BadExample>,
    /// Batches applied (would be applied).
    pub batches: u64,
    /// Batches that failed and wait in their journal for the next run.
    pub batches_failed: u64,
    /// Journals of earlier failed runs that this run finished.
    pub recovered_batches: u64,
    /// Journals still waiting (in a dry run: found waiting; in a run: left after a failure).
    pub pending_journals: u64,
    /// Codes Postgres refused row by row in this run's batches, and their hits: in the
    /// quarantine table now, tried again by every run.
    pub quarantined_codes: u64,
    pub quarantined_hits: i128,
    /// A few of them, with why.
    pub quarantine_examples: Vec<String>,
    /// Quarantined codes this run applied (or found without a row) on trying them again,
    /// and the hits that reached a row.
    pub released_from_quarantine: u64,
    pub released_hits: i128,
    /// Codes waiting in the quarantine when the run ended.
    pub quarantine_waiting: u64,
    /// Journals under this journal prefix that record another target (another flusher's,
    /// sharing the Redis and the prefix): left alone.
    pub other_targets_journals: u64,
    pub seconds: f64,
    /// What the run touches, and where each of those settings came from.
    pub target: Vec<Setting>,
    /// Time spent waiting for Redis (SCAN, claims, journal deletes) and for Postgres (the
    /// batches' transactions). Claims run beside the transactions, so these overlap.
    pub redis_seconds: f64,
    pub postgres_seconds: f64,
    pub errors: Vec<String>,
}

impl Report {
    pub fn new(dry_run: bool, keep_unknown: Option<&str>) -> Report {
        Report {
            status: Status::Ok,
            dry_run,
            keys: 0,
            hits: 0,
            rows_updated: 0,
            unknown_codes: 0,
            unknown_hits: 0,
            unknown_examples: Vec::new(),
            unknown_parked_in: keep_unknown.map(str::to_owned),
            unknown_parked: 0,
            bad_keys: 0,
            bad_by_reason: BTreeMap::new(),
            bad_examples: Vec::new(),
            batches: 0,
            batches_failed: 0,
            recovered_batches: 0,
            pending_journals: 0,
            other_targets_journals: 0,
            quarantined_codes: 0,
            quarantined_hits: 0,
            quarantine_examples: Vec::new(),
            released_from_quarantine: 0,
            released_hits: 0,
            quarantine_waiting: 0,
            target: Vec::new(),
            seconds: 0.0,
            redis_seconds: 0.0,
            postgres_seconds: 0.0,
            errors: Vec::new(),
        }
    }

    /// Runs `work` with a fresh report and returns it: a failure of `work` is recorded in it
    /// (status failed), and so is the time taken. It is the report so far from the start.
    pub fn collect(
        dry_run: bool,
        keep_unknown: Option<&str>,
        work: impl FnOnce(&mut Report) -> anyhow::Result<()>,
    ) -> Report {
        let started = Instant::now();
        let mut report = Report::new(dry_run, keep_unknown);
        keep_so_far(&report);
        if let Err(e) = work(&mut report) {
            report.fail(&e);
        }
        report.seconds = started.elapsed().as_secs_f64();
        report
    }

    pub fn add_bad(&mut self, bad: &BadKey) {
        self.bad_keys += 1;
        *self.bad_by_reason.entry(bad.reason).or_insert(0) += 1;
        if self.bad_examples.len() < EXAMPLES {
            self.bad_examples.push(BadExample {
                key: show_bytes(&bad.key),
                reason: bad.reason,
            });
        }
    }

    pub fn add_unknown(&mut self, unknown: &[(String, i64)]) {
        self.unknown_codes += unknown.len() as u64;
        for (code, hits) in unknown {
            self.unknown_hits += i128::from(*hits);
            if self.unknown_examples.len() < EXAMPLES {
                self.unknown_examples.push(capped(code));
            }
        }
    }

    /// Counts codes refused row by row (now in the quarantine).
    pub fn add_quarantined(&mut self, poisoned: &[Poisoned]) {
        self.quarantined_codes += poisoned.len() as u64;
        self.quarantined_hits += poisoned.iter().map(|p| i128::from(p.hits)).sum::<i128>();
        let room = EXAMPLES.saturating_sub(self.quarantine_examples.len());
        self.quarantine_examples
            .extend(quarantine_examples(&poisoned[..poisoned.len().min(room)]));
    }

    /// Adds what the claim thread counted (bad keys, its time waiting on Redis).
    pub fn merge_claims(&mut self, claims: &Report) {
        self.bad_keys += claims.bad_keys;
        for (reason, n) in &claims.bad_by_reason {
            *self.bad_by_reason.entry(*reason).or_insert(0) += n;
        }
        for ex in &claims.bad_examples {
            if self.bad_examples.len() < EXAMPLES {
                self.bad_examples.push(ex.clone());
            }
        }
        self.redis_seconds += claims.redis_seconds;
    }

    /// Records an error; the run's status becomes failed, or a setup error when the error
    /// is one a person must fix ([`UsageError`]) and nothing else failed first.
    pub fn fail(&mut self, err: &anyhow::Error) {
        let text = crate::error::text(err);
        log::error!("{text}");
        self.status = match self.status {
            Status::Ok if err.downcast_ref::<UsageError>().is_some() => Status::SetupError,
            Status::SetupError => Status::SetupError,
            _ => Status::Failed,
        };
        self.errors.push(text);
    }

    /// The one info line a run ends with.
    pub fn summary(&self) -> String {
        if self.status == Status::Locked {
            return "another run holds the lock; nothing done".to_owned();
        }
        if self.status == Status::SetupError {
            return format!(
                "{} did not start: the setup needs a fix (the error above says what); nothing \
                 was claimed; {:.2} s",
                if self.dry_run { "dry run" } else { "run" },
                self.seconds
            );
        }
        let verb = match (self.dry_run, self.status) {
            (true, Status::Failed) => "dry run failed; it got as far as: would flush",
            (true, _) => "would flush",
            (false, Status::Failed) => "run failed (the error above says why); it flushed",
            (false, _) => "flushed",
        };
        let mut s = format!(
            "{verb} {} keys ({} hits) into {} rows in {} batches",
            self.keys, self.hits, self.rows_updated, self.batches
        );
        if self.recovered_batches > 0 {
            let _ = write!(
                s,
                " ({} recovered from failed runs)",
                self.recovered_batches
            );
        }
        let _ = write!(
            s,
            "; {} unknown codes ({} hits",
            self.unknown_codes, self.unknown_hits
        );
        let shown = self.shown_unknown().join(", ");
        match (&self.unknown_parked_in, self.unknown_codes) {
            (_, 0) => s.push(')'),
            (Some(k), n) if self.dry_run || self.unknown_parked >= n => {
                let _ = write!(s, ", kept in {k}: {shown})");
            }
            (Some(k), n) => {
                let _ = write!(
                    s,
                    ", {} kept in {k}, {} not (see above): {shown})",
                    self.unknown_parked,
                    n.saturating_sub(self.unknown_parked)
                );
            }
            (None, _) => {
                let _ = write!(s, ", dropped: {shown})");
            }
        }
        let _ = write!(s, "; {} bad keys left in Redis", self.bad_keys);
        if !self.bad_examples.is_empty() {
            let ex: Vec<String> = self
                .bad_examples
                .iter()
                .map(|b| format!("{} ({})", b.key, b.reason.text()))
                .collect();
            let _ = write!(s, ": {}", ex.join(", "));
        }
        if self.quarantined_codes > 0 {
            let _ = write!(
                s,
                "; {} codes ({} hits) refused by Postgres row by row, put in quarantine",
                self.quarantined_codes, self.quarantined_hits
            );
        }
        if self.released_from_quarantine > 0 {
            let _ = write!(
                s,
                "; {} codes ({} hits) taken out of quarantine",
                self.released_from_quarantine, self.released_hits
            );
        }
        if self.quarantine_waiting > 0 {
            let _ = write!(
                s,
                "; {} codes wait in quarantine, tried again every run",
                self.quarantine_waiting
            );
        }
        if self.batches_failed > 0 || self.pending_journals > 0 {
            let _ = write!(
                s,
                "; {} batches failed, {} journals wait for the next run (nothing in them is \
                 lost)",
                self.batches_failed, self.pending_journals
            );
        }
        let _ = write!(s, "; {:.2} s", self.seconds);
        s
    }

    /// Unknown codes as a log line may show them (see [`show_bytes`]; they are kept cut).
    fn shown_unknown(&self) -> Vec<String> {
        self.unknown_examples
            .iter()
            .map(|c| escape(c.as_bytes()))
            .collect()
    }

    /// The multi-line report `--dry-run` prints on stdout.
    pub fn dry_run_text(&self) -> String {
        let failed = matches!(self.status, Status::Failed | Status::SetupError);
        let mut s = if failed {
            format!(
                "dry run FAILED (nothing was changed): {}\n",
                self.errors.join("; ")
            )
        } else {
            String::from("dry run: nothing was changed\n")
        };
        if !self.target.is_empty() {
            s.push_str("target (what a run would touch, and where each setting came from):\n");
            for t in &self.target {
                let _ = writeln!(s, "  {:<13} {:<40} {}", t.what, t.value, t.source);
            }
        }
        if failed {
            // Counts gathered before the failure would read as the answer; there is none.
            s.push_str("what a run would do: unknown, the dry run did not get that far\n");
            return s;
        }
        let _ = writeln!(s, "keys to flush:        {}", self.keys);
        let _ = writeln!(s, "hits:                 {}", self.hits);
        let _ = writeln!(s, "rows that would change: {}", self.rows_updated);
        let _ = writeln!(s, "batches:              {}", self.batches);
        let _ = writeln!(
            s,
            "unknown codes:        {} ({} hits){}",
            self.unknown_codes,
            self.unknown_hits,
            list(&self.shown_unknown())
        );
        let bad: Vec<String> = self
            .bad_examples
            .iter()
            .map(|b| format!("{} ({})", b.key, b.reason.text()))
            .collect();
        let _ = writeln!(s, "bad keys:             {}{}", self.bad_keys, list(&bad));
        let _ = writeln!(s, "journals pending:     {}", self.pending_journals);
        s
    }
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        String::new()
    } else {
        format!(", e.g. {}", items.join(", "))
    }
}

/// Quarantined codes as a log line names them: the code, Postgres' error, and the advice.
pub fn quarantine_examples(poisoned: &[Poisoned]) -> Vec<String> {
    poisoned
        .iter()
        .take(EXAMPLES)
        .map(|p| {
            format!(
                "{} ({}: {})",
                show_bytes(p.code.as_bytes()),
                p.error.message,
                p.error.advice
            )
        })
        .collect()
}

/// The report as of the run's last finished step, kept for a run that must end before it
/// can return its report (the watchdog, `deadline.rs`); with the time the first was kept.
static SO_FAR: Mutex<Option<(Instant, Report)>> = Mutex::new(None);

/// Keeps `report` as the report so far.
pub fn keep_so_far(report: &Report) {
    let mut so_far = SO_FAR.lock().unwrap_or_else(|p| p.into_inner());
    let started = so_far.as_ref().map_or_else(Instant::now, |(t, _)| *t);
    *so_far = Some((started, report.clone()));
}

/// The report so far, its time running up to now (an empty run's report if none was kept).
pub fn so_far() -> Report {
    let so_far = SO_FAR.lock().unwrap_or_else(|p| p.into_inner());
    match &*so_far {
        Some((started, report)) => {
            let mut r = report.clone();
            r.seconds = started.elapsed().as_secs_f64();
            r
        }
        None => Report::new(false, None),
    }
}

/// How much of a key or code a report shows: room for a long code (a path, a slug), not for a
/// pasted blob (ten 10 KB codes made a 51 KB summary line).
const SHOWN: usize = 320;

/// Shows a key or code safely on one log line: UTF-8 as is, but control characters (NUL,
/// newline, ESC…) and bytes that are not UTF-8 as `\xNN` / `\u{NNNN}`, so that a key can
/// neither forge a log line nor drive the terminal; past [`SHOWN`] bytes, cut, with its size.
pub fn show_bytes(b: &[u8]) -> String {
    let cut = shown_len(b);
    if cut < b.len() {
        return format!("{}…({} bytes)", escape(&b[..cut]), b.len());
    }
    escape(b)
}

/// A code as the report keeps it (`--json` shows it as is): past [`SHOWN`] bytes, cut, with
/// its size.
fn capped(code: &str) -> String {
    let cut = shown_len(code.as_bytes());
    if cut < code.len() {
        return format!("{}…({} bytes)", &code[..cut], code.len());
    }
    code.to_owned()
}

/// How many of `b`'s first bytes are shown: all, or [`SHOWN`] less a broken character.
fn shown_len(b: &[u8]) -> usize {
    if b.len() <= SHOWN {
        return b.len();
    }
    let mut cut = SHOWN;
    while cut > 0 && b[cut] & 0xc0 == 0x80 {
        cut -= 1;
    }
    cut
}

/// [`show_bytes`] without the cut.
fn escape(b: &[u8]) -> String {
    let mut out = String::new();
    for chunk in b.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                c if c.is_control() && (c as u32) < 0x80 => {
                    let _ = write!(out, "\\x{:02x}", c as u32);
                }
                c if c.is_control() => {
                    let _ = write!(out, "\\u{{{:04x}}}", c as u32);
                }
                c => out.push(c),
            }
        }
        for byte in chunk.invalid() {
            let _ = write!(out, "\\x{byte:02x}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows_invalid_bytes_escaped() {
        assert_eq!(show_bytes(b"url_hits:a\xffb"), "url_hits:a\\xffb");
        assert_eq!(show_bytes(b"a\0b\nc\x1b[31m"), "a\\x00b\\x0ac\\x1b[31m");
        assert_eq!(show_bytes("a\u{85}b".as_bytes()), "a\\u{0085}b");
        assert_eq!(show_bytes("é".as_bytes()), "é");
        let long = "é".repeat(200);
        assert_eq!(
            show_bytes(long.as_bytes()),
            format!("{}…(400 bytes)", "é".repeat(160))
        );
    }
}
