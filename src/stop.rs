//! A graceful stop: the run claims nothing more, applies the batches it has already claimed,
//! and exits 1, so no journal is left behind. Asked for by SIGTERM or SIGINT (systemd stop, a
//! deploy, Ctrl-C), or by losing the run lock to another run (`postgres/lease.rs`). A second
//! signal ends the process at once, which is safe too: whatever was claimed and not committed
//! waits in its journal for the next run.
//!
//! The signal handler only sets a flag; `flush.rs` and `scan.rs` look at it between steps.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use signal_hook::consts::{SIGINT, SIGTERM};

static REQUESTED: AtomicBool = AtomicBool::new(false);
static LEASE_LOST: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// Stops the run, as a signal would, once `lost` is set (the run lock was taken over).
pub fn watch_lease(lost: Arc<AtomicBool>) {
    let _ = LEASE_LOST.set(lost);
}

fn lease_lost() -> bool {
    LEASE_LOST.get().is_some_and(|l| l.load(Ordering::SeqCst))
}

/// What asked the run to stop, for its error message.
pub fn why() -> &'static str {
    if lease_lost() {
        "another run taking over the run lock (this run could not renew it in time)"
    } else {
        "SIGTERM/SIGINT"
    }
}

/// Installs the handlers. Call once, from the main thread, before the flush starts and before
/// it spawns any thread.
///
/// A handler interrupts whatever system call its thread is in, and a `recv` on a socket with
/// a read timeout (our Redis connections have one) is never restarted: it fails with EINTR,
/// which broke a Redis reply half-way in testing. So the signals are delivered to a thread of
/// their own, which only waits, and are blocked in this thread and every thread it spawns
/// afterwards (threads inherit the signal mask).
pub fn install() -> std::io::Result<()> {
    for sig in [SIGTERM, SIGINT] {
        // Registered first, so that it runs first: a signal arriving when the flag is already
        // set (the second one) gets the default action and ends the process.
        signal_hook::flag::register_conditional_default(sig, &REQUESTED)?;
        signal_hook::flag::register(sig, &REQUESTED)?;
    }
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(|| loop {
            std::thread::park();
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

/// True once SIGTERM or SIGINT arrived, or the run lock was lost.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst) || lease_lost()
}
