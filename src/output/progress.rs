//! A progress line on a terminal for long flushes: keys claimed and applied, hits, rate,
//! elapsed. None under cron (stderr is not a terminal), with `--json`, or `--no-progress`.
//!
//! Log lines are written through [`LogWriter`], which lifts the bar while a line is printed,
//! so that the two never garble each other.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The bar and its counts. Global because the logger, set up once for the process, writes
/// through it, and the claim and apply threads report to it.
static BAR: OnceLock<Bar> = OnceLock::new();

struct Bar {
    bar: ProgressBar,
    claimed: AtomicU64,
    hits: AtomicI64,
}

/// Whether a bar would be shown: stderr is a terminal and nothing asked for quiet.
pub fn wanted(json: bool, no_progress: bool) -> bool {
    !json && !no_progress && std::io::stderr().is_terminal()
}

/// Shows the bar (once per process).
pub fn start() {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {elapsed_precise} flushed {human_pos} keys ({msg}), {per_sec}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let _ = BAR.set(Bar {
        bar,
        claimed: AtomicU64::new(0),
        hits: AtomicI64::new(0),
    });
}

/// The claim thread took `keys` more keys into journals.
pub fn claimed(keys: u64) {
    if let Some(b) = BAR.get() {
        let claimed = b.claimed.fetch_add(keys, Ordering::Relaxed) + keys;
        b.bar.set_message(format!(
            "{} hits; {claimed} claimed",
            b.hits.load(Ordering::Relaxed)
        ));
    }
}

/// A batch of `keys` keys and `hits` hits was committed.
pub fn applied(keys: u64, hits: i128) {
    if let Some(b) = BAR.get() {
        let hits = i64::try_from(hits).unwrap_or(i64::MAX);
        let hits = b
            .hits
            .fetch_add(hits, Ordering::Relaxed)
            .saturating_add(hits);
        b.bar.inc(keys);
        b.bar.set_message(format!(
            "{hits} hits; {} claimed",
            b.claimed.load(Ordering::Relaxed)
        ));
    }
}

/// Removes the bar; the run's summary line follows.
pub fn finish() {
    if let Some(b) = BAR.get() {
        b.bar.finish_and_clear();
    }
}

/// stderr for the logger: lifts the bar, if one is shown, while a line is written.
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match BAR.get() {
            Some(b) if !b.bar.is_finished() => {
                b.bar.suspend(|| std::io::stderr().write_all(buf))?
            }
            _ => std::io::stderr().write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}
