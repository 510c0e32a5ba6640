//! Graceful stop on SIGTERM or SIGINT (systemd stop, a deploy, Ctrl-C): the run claims
//! nothing more, applies the batches it has already claimed, and exits 1, so no journal is
//! left behind. A second signal ends the process at once, which is safe too: whatever was
//! claimed and not committed waits in its journal for the next run.
//!
//! The signal handler only sets a flag; `flush.rs` looks at it between steps.

use std::sync::atomic::{AtomicBool, Ordering};

use signal_hook::consts::{SIGINT, SIGTERM};

static REQUESTED: AtomicBool = AtomicBool::new(false);

/// Installs the handlers. Call once, before the flush starts.
pub fn install() -> std::io::Result<()> {
    for sig in [SIGTERM, SIGINT] {
        // Registered first, so that it runs first: a signal arriving when the flag is already
        // set (the second one) gets the default action and ends the process.
        signal_hook::flag::register_conditional_default(sig, &REQUESTED)?;
        signal_hook::flag::register(sig, &REQUESTED)?;
    }
    Ok(())
}

/// True once SIGTERM or SIGINT arrived.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}
