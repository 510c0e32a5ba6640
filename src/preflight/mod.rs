//! What a flush needs, checked: for `redis-flusher check` (everything, each finding with what to
//! do about it) and for `run`, which checks the same before it claims anything and refuses
//! (exit 2) what `check` calls a failure. Changes nothing. The findings are here; what is
//! checked on each server is in `postgres.rs` and `redis.rs`.

mod postgres;
mod redis;

pub use self::postgres::{postgres, quarantine};
pub use self::redis::redis_checks;

use anyhow::Result;
use serde::Serialize;

use crate::config::{Setting, UsageError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    #[serde(rename = "ok")]
    Good,
    /// A flush works, but something will hurt (lost counts on a restart, a slow plan, …).
    Warn,
    /// A flush could not work.
    Fail,
}

/// One thing `check` found. `code` names what was checked, and stays the same from release to
/// release (a script or a test can look for it); `message` is for people and may change.
#[derive(Debug, Serialize)]
pub struct Finding {
    pub level: Level,
    pub code: &'static str,
    pub message: String,
}

#[derive(Debug, Default, Serialize)]
pub struct Findings {
    /// What a run would touch, and where each of those settings came from.
    pub target: Vec<Setting>,
    pub findings: Vec<Finding>,
}

impl Findings {
    pub fn add(&mut self, level: Level, code: &'static str, message: impl Into<String>) {
        self.findings.push(Finding {
            level,
            code,
            message: message.into(),
        });
    }

    /// Adds a failure for `e`, the check `code` that could not be made.
    pub fn failed(&mut self, code: &'static str, e: &anyhow::Error) {
        self.add(Level::Fail, code, crate::sys::error::text(e));
    }

    /// True when nothing would stop a flush.
    pub fn ok(&self) -> bool {
        !self.findings.iter().any(|f| f.level == Level::Fail)
    }

    /// For a run: warnings go to the log; failures, if any, are its error (exit 2).
    pub fn for_run(self) -> Result<()> {
        let mut fails = Vec::new();
        for f in self.findings {
            match f.level {
                Level::Good => {}
                Level::Warn => log::warn!("{}", f.message),
                Level::Fail => fails.push(f.message),
            }
        }
        if fails.is_empty() {
            return Ok(());
        }
        Err(UsageError(format!(
            "a flush cannot work here, so nothing was claimed: {} (`redis-flusher check` \
             lists everything)",
            fails.join("; ")
        ))
        .into())
    }
}
