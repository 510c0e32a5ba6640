//! What the process needs below everything else, and knows nothing of the flush: the
//! watchdog that ends a run whose Postgres hangs (`deadline.rs`), a graceful stop on a signal
//! (`stop.rs`), test-only fault points (`fault.rs`), and how an error reads on one line
//! (`error.rs`).

pub mod deadline;
pub mod error;
pub mod fault;
pub mod stop;
