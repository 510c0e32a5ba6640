//! A graceful stop on SIGTERM or SIGINT (systemd stop, a Kubernetes pod's end, a deploy,
//! Ctrl-C): the run claims nothing more, commits or rolls back the transaction it is in,
//! deletes the journals of what it committed, and the process exits 0; `serve` starts no
//! other run. If that takes longer than `--shutdown-timeout`, the process exits anyway (0,
//! `deadline.rs`), and a second signal ends it at once: both are safe too, since whatever was
//! claimed and not committed waits in its journal for the next run.
//!
//! The signal only sets a flag and wakes whoever waits for it; the run looks at the flag
//! between steps (`flush::Halt`, which also stops a run whose lease another run took over).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// Whether a stop was asked for, and a way to wait for it. Global because a signal reaches
/// the process, not a run: every run and the loop of `serve` look at the one flag.
static STOP: Stop = Stop {
    requested: AtomicBool::new(false),
    lock: Mutex::new(()),
    asked: Condvar::new(),
};

struct Stop {
    requested: AtomicBool,
    lock: Mutex<()>,
    asked: Condvar,
}

/// Installs the handlers; a stop must be over within `timeout` of the first signal. Call
/// once, from the main thread, before the flush starts and before it spawns any thread.
///
/// A handler interrupts whatever system call its thread is in, and a `recv` on a socket with
/// a read timeout (our Redis connections have one) is never restarted: it fails with EINTR,
/// which broke a Redis reply half-way in testing. So the signals are delivered to a thread of
/// their own, and are blocked in this thread and every thread it spawns afterwards (threads
/// inherit the signal mask).
pub fn install(timeout: Duration) -> std::io::Result<()> {
    let mut signals = Signals::new([SIGTERM, SIGINT])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                let name = if signal == SIGINT {
                    "SIGINT"
                } else {
                    "SIGTERM"
                };
                if STOP.requested.swap(true, Ordering::SeqCst) {
                    log::warn!("{name} again: stopping at once");
                    // The signal's own default action: the process ends by it.
                    let _ = signal_hook::low_level::emulate_default_handler(signal);
                    continue;
                }
                log::warn!(
                    "{name}: stopping at the next safe point, within {} s \
                     (--shutdown-timeout; a second signal stops at once)",
                    timeout.as_secs()
                );
                let _guard = STOP.lock.lock();
                STOP.asked.notify_all();
                super::deadline::arm_shutdown(timeout);
            }
        })?;
    // SAFETY: sigset_t is plain data, initialised by sigemptyset before use; the calls only
    // change this thread's signal mask.
    let rc = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, SIGTERM);
        libc::sigaddset(&mut set, SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut())
    };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

/// True once SIGTERM or SIGINT arrived.
pub fn requested() -> bool {
    STOP.requested.load(Ordering::SeqCst)
}

/// Waits until `until`, or until a stop is asked for; true if it was.
pub fn wait_until(until: Instant) -> bool {
    let guard = STOP.lock.lock().unwrap_or_else(|p| p.into_inner());
    let left = until.saturating_duration_since(Instant::now());
    let _ = STOP
        .asked
        .wait_timeout_while(guard, left, |_| !requested() && Instant::now() < until);
    requested()
}

/// The error of a run that stopped because a signal asked it to: not a failure (exit 0), as
/// nothing is lost and the next run flushes the rest.
#[derive(Debug)]
pub struct StopRequested(pub String);

impl std::fmt::Display for StopRequested {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StopRequested {}
