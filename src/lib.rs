//! redis-flusher moves URL hit counters from Redis into PostgreSQL, exactly once.
//!
//! `main.rs` parses and calls [`execute`], which runs one command (`cmd/`, a file per verb).
//! The layers, each importing only those below it (docs/design.md, "Module map"):
//!
//! | layer | modules |
//! |---|---|
//! | verbs | `cmd/` |
//! | runs on a schedule | `serve/` (the loop, its HTTP endpoints and health) |
//! | the engine, and news of it | `flush/` (a run's steps, its threads, its SCAN); `notify/` (pushes, pings) |
//! | what a run shows | `output/` (stdout, the exit code, metrics, progress, logs) |
//! | what a run knows | `preflight` (what `check` checks), `report/` (the tally and its text) |
//! | the servers | `redis/`, `postgres/`, `throwaway` (private servers for the demo and the tests) |
//! | settings | `config/` |
//! | below all | `cli/` (flags and help), `tls`, `sys/` (watchdog, signals, faults, errors), `model` (plain data) |
//!
//! Only what the binary, the benchmark and the tests use is public.

pub mod cli;
mod cmd;
pub mod config;
pub(crate) mod flush;
pub mod model;
mod notify;
mod output;
pub mod postgres;
mod preflight;
pub mod redis;
mod report;
mod serve;
mod sys;
pub mod throwaway;
mod tls;

pub use cmd::execute;
pub use output::{exit_code, fail_before_start, logging::init as init_logging};
