//! The vocabulary of applying batches, below the files that do it: where a batch goes
//! ([`ApplyTo`]), what applying it did ([`Applied`]), and a batch Postgres refused as a whole
//! ([`BatchRejected`]).

use std::fmt;

use super::catalog::TableFacts;
use crate::config::{Ident, TargetConfig};
use crate::model::{Head, Poisoned};

/// A batch Postgres refused for what it holds as a whole: a row that another session keeps
/// locked. The run goes on with the other batches; this one stays in its journal.
#[derive(Debug)]
pub(crate) struct BatchRejected(pub String);

impl fmt::Display for BatchRejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BatchRejected {}

/// What one applied batch did.
#[derive(Debug, Default)]
pub struct Applied {
    /// Rows the UPDATE changed.
    pub rows_updated: u64,
    /// Codes with no row, and their hits.
    pub unknown: Vec<(String, i64)>,
    /// Codes Postgres refused row by row, and why: their hits are in the quarantine (for a
    /// batch from the quarantine: they stay there).
    pub quarantined: Vec<Poisoned>,
    /// How many of them were not in the quarantine before.
    pub newly_quarantined: usize,
}

impl Applied {
    /// The hits that reached a row.
    pub(crate) fn hits_applied(&self, batch: &Head) -> i128 {
        let aside: i128 = self
            .unknown
            .iter()
            .map(|(_, h)| i128::from(*h))
            .chain(self.quarantined.iter().map(|p| i128::from(p.hits)))
            .sum();
        batch.hits - aside
    }
}

/// Where one batch goes, and what the advice on a refusal needs.
pub struct ApplyTo<'a> {
    pub target: &'a TargetConfig,
    pub facts: &'a TableFacts,
    pub ledger: &'a Ident,
    pub quarantine: &'a Ident,
    /// This flusher's tag: its quarantined codes are its own.
    pub owner: &'a str,
}
