//! How a report reads: the one line a run ends with, the dry run's text, and keys and codes
//! shown safely on a log line.

use std::fmt::Write as _;

use super::{Report, Status};
use crate::model::{Poisoned, EXAMPLES};

impl Report {
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
            (false, Status::Stopped) => {
                "run stopped as asked (the next run flushes the rest); it flushed"
            }
            (false, _) => "flushed",
        };
        let mut s = format!(
            "{verb} {} ({}) into {} in {}",
            count(self.keys, "key", "keys"),
            count(self.hits, "hit", "hits"),
            count(self.rows_updated, "row", "rows"),
            count(self.batches, "batch", "batches")
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
            "; {} ({}",
            count(self.unknown_codes, "unknown code", "unknown codes"),
            count(self.unknown_hits, "hit", "hits")
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
        let _ = write!(
            s,
            "; {} left in Redis",
            count(self.bad_keys, "bad key", "bad keys")
        );
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
                "; {} ({}) refused by Postgres row by row, put in quarantine",
                count(self.quarantined_codes, "code", "codes"),
                count(self.quarantined_hits, "hit", "hits")
            );
        }
        if self.released_from_quarantine > 0 {
            let _ = write!(
                s,
                "; {} ({}) taken out of quarantine",
                count(self.released_from_quarantine, "code", "codes"),
                count(self.released_hits, "hit", "hits")
            );
        }
        if self.quarantine_waiting > 0 {
            let _ = write!(
                s,
                "; {} in quarantine, tried again every run",
                count(self.quarantine_waiting, "code waits", "codes wait")
            );
        }
        if self.batches_failed > 0 || self.pending_journals > 0 {
            let _ = write!(
                s,
                "; {} failed, {} for the next run (nothing in them is lost)",
                count(self.batches_failed, "batch", "batches"),
                count(self.pending_journals, "journal waits", "journals wait")
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
            // What happened; the advice is in the log, once.
            let what: Vec<&str> = self
                .errors
                .iter()
                .map(|e| e.lines().next().unwrap_or_default())
                .collect();
            format!(
                "dry run FAILED (nothing was changed): {}\n",
                what.join("; ")
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

/// `n` and the noun that goes with it: `1 batch`, `3 batches`, `0 batches`.
pub fn count(n: impl Into<i128>, one: &str, many: &str) -> String {
    let n = n.into();
    format!("{n} {}", if n == 1 { one } else { many })
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
pub(super) fn capped(code: &str) -> String {
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
