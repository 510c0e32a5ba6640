//! A graceful stop on SIGTERM or SIGINT (systemd stop, a deploy, Ctrl-C): the run claims
//! nothing more, applies the batches it has already claimed, and exits 1, so no journal is
//! left behind. A second signal ends the process at once, which is safe too: whatever was
//! claimed and not committed waits in its journal for the next run.
//!
//! The signal handler only sets a flag; the run looks at it between steps (`flush::Halt`,
//! which also stops a run whose lease another run took over).

use std::sync::atomic::{AtomicBool, Ordering};

use signal_hook::consts::{SIGINT, SIGTERM};

/// Global because a signal handler can reach nothing else: the one flag it sets.
static REQUESTED: AtomicBool = AtomicBool::new(false);

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

/// True once SIGTERM or SIGINT arrived.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}
