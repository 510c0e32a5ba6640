//! Narrowing a refused batch down to the codes Postgres refuses row by row: part by part under
//! savepoints, halving a refused part until each refused code stands alone; and what the
//! UPDATEs found, settled into what was applied (unknown codes, quarantined ones).

use std::collections::HashMap;

use anyhow::Result;

use super::applied::{Applied, ApplyTo};
use super::quarantine::duplicate;
use super::session::Session;
use super::update::Part;
use crate::model::{Batch, Poisoned, RowError};

/// Parts of at most this many codes are tried code by code once they fail, rather than
/// halved again.
const ONE_BY_ONE: usize = 4;

/// What the UPDATEs of a batch (or a part of it) found.
pub(super) struct Outcome {
    /// By code, in the batch's order: whether a row got its hits.
    pub(super) found: Vec<bool>,
    pub(super) rows_updated: u64,
    /// By index in the batch: codes refused row by row.
    pub(super) poisoned: Vec<(usize, RowError)>,
}

impl Session {
    /// Applies the whole batch, part by part under savepoints, narrowing any refused part
    /// down to the codes that cause it.
    pub(super) fn isolate_all(&mut self, to: &ApplyTo, batch: &Batch) -> Result<Outcome> {
        let mut outcome = Outcome {
            found: vec![false; batch.hits.len()],
            rows_updated: 0,
            poisoned: Vec::new(),
        };
        self.isolate(to, batch, 0, batch.hits.len(), &mut outcome)?;
        Ok(outcome)
    }

    /// Tries codes `from..until` under a savepoint; refused, rolls them back and tries their
    /// halves (parts of up to [`ONE_BY_ONE`] codes, code by code), until each refused code
    /// stands alone. Costs two statements a refused code a halving, none when all goes.
    fn isolate(
        &mut self,
        to: &ApplyTo,
        batch: &Batch,
        from: usize,
        until: usize,
        out: &mut Outcome,
    ) -> Result<()> {
        self.simple("setting a savepoint", "SAVEPOINT part")?;
        match self.update_part(to, batch, from, until)? {
            Part::Done(found, rows) => {
                self.simple("releasing a savepoint", "RELEASE SAVEPOINT part")?;
                out.found[from..until].copy_from_slice(&found);
                out.rows_updated += rows;
            }
            Part::Refused(error, twice) => {
                self.simple(
                    "rolling back to a savepoint",
                    "ROLLBACK TO SAVEPOINT part; RELEASE SAVEPOINT part",
                )?;
                if until - from == 1 {
                    out.poisoned.push((from, error));
                } else if !twice.is_empty() && twice.len() == until - from {
                    // Every code here matched several rows: each is refused as such.
                    for (i, rows) in twice {
                        out.poisoned.push((from + i, duplicate(to.target, rows)));
                    }
                } else if until - from <= ONE_BY_ONE {
                    for i in from..until {
                        self.isolate(to, batch, i, i + 1, out)?;
                    }
                } else {
                    let mid = from + (until - from) / 2;
                    self.isolate(to, batch, from, mid, out)?;
                    self.isolate(to, batch, mid, until, out)?;
                }
            }
        }
        Ok(())
    }
}

/// The outcome of a batch's UPDATEs as what was applied: unknown codes (no row, not refused)
/// and quarantined ones, with their hits.
pub(super) fn settle(batch: &Batch, outcome: Outcome) -> Applied {
    // Refused codes are few: looked up by index, not kept beside every code.
    let mut poisoned: HashMap<usize, RowError> = outcome.poisoned.into_iter().collect();
    let mut applied = Applied {
        rows_updated: outcome.rows_updated,
        ..Applied::default()
    };
    for (i, ((code, hits), &found)) in batch.hits.iter().zip(&outcome.found).enumerate() {
        match (found, poisoned.remove(&i)) {
            (_, Some(error)) => applied.quarantined.push(Poisoned {
                code: code.to_owned(),
                hits,
                error,
            }),
            (false, None) => applied.unknown.push((code.to_owned(), hits)),
            (true, None) => {}
        }
    }
    applied
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Entry;

    fn batch(codes: &[(&str, i64)]) -> Batch {
        let mut b = Batch::new("b".into());
        b.add(
            codes
                .iter()
                .map(|&(code, hits)| Entry {
                    code: code.into(),
                    hits,
                })
                .collect(),
        )
        .unwrap();
        b.finish().unwrap();
        b
    }

    fn refused(why: &str) -> RowError {
        RowError {
            sqlstate: "23514".into(),
            message: why.into(),
            advice: String::new(),
        }
    }

    /// A code with a row got its hits; one without is unknown; one Postgres refused is
    /// quarantined even if an earlier part had found its row; the hits that reached a row
    /// are what is left.
    #[test]
    fn what_the_updates_found_settles_into_unknown_and_quarantined_codes() {
        let b = batch(&[("a", 3), ("b", 4), ("c", 5), ("d", 6)]);
        let outcome = Outcome {
            found: vec![true, false, true, true],
            rows_updated: 3,
            poisoned: vec![(3, refused("check d"))],
        };
        let applied = settle(&b, outcome);
        assert_eq!(applied.rows_updated, 3);
        assert_eq!(applied.unknown, [("b".to_owned(), 4)]);
        assert_eq!(applied.quarantined.len(), 1);
        assert_eq!(
            (
                applied.quarantined[0].code.as_str(),
                applied.quarantined[0].hits
            ),
            ("d", 6)
        );
        assert_eq!(applied.quarantined[0].error.message, "check d");
        assert_eq!(applied.hits_applied(&b.head()), 3 + 5);
    }
}
