//! `run --dry-run`: the same SCAN and checks as a run, a read-only look at Postgres, and no
//! write anywhere (not even the ledger table is created, nor a lost journal index rebuilt).

use anyhow::Result;

use crate::config::{Config, FlushConfig};
use crate::flush::scan::{scan_in_batches, Take};
use crate::flush::Halt;
use crate::model::{Batch, ScanStats};
use crate::postgres::Session;
use crate::preflight::{self, Findings};
use crate::redis::RedisSource;
use crate::report::Report;

/// Reports what a run would do now. Failures are recorded in the report, as a run's are.
pub fn run(cfg: &Config) -> Report {
    Report::collect(true, cfg.flush.source.parked_in(), |report| {
        report.target = cfg.settings();
        dry(cfg, report)
    })
}

fn dry(cfg: &Config, report: &mut Report) -> Result<()> {
    let f = &cfg.flush;
    let mut pg = Session::connect(&cfg.pg)?;
    pg.begin(true)?;
    // What would stop a run stops the dry run, as a setup error.
    let mut findings = Findings::default();
    preflight::postgres(&mut pg, f, false, &mut findings);
    findings.for_run()?;
    let mut redis = RedisSource::connect(&cfg.redis, &f.source)?;
    let mut findings = Findings::default();
    preflight::redis_checks(&mut redis, f, false, &mut findings);
    findings.for_run()?;
    let target = f.target_record(&pg.database()?);
    redis.set_target(&target);

    let ledger = pg.table_exists(&f.ledger.ledger_table)?;
    for journal in redis.journals(false)? {
        let contents = redis.read(&journal)?;
        if redis.is_other(&contents) {
            log::info!(
                "journal {} belongs to another target ({}); a run leaves it alone",
                journal.key,
                contents.target.unwrap_or_default()
            );
            report.other_targets_journals += 1;
            continue;
        }
        let applied = ledger && pg.applied(&f.ledger.ledger_table, &journal.id)?.is_some();
        let keys = Batch::from_chunks(&journal.id, contents.chunks).map_or(0, |b| b.keys);
        report.pending_journals += 1;
        log::info!(
            "journal {} ({keys} keys) is pending from a failed run; {}",
            journal.key,
            if applied {
                "already applied, a run only deletes it"
            } else {
                "a run applies it first"
            }
        );
    }

    // The run's own SCAN and batching, with a read-only look instead of a claim. Bad keys
    // and Redis time are counted apart and merged, as the run merges its claim thread's.
    let mut scanned = ScanStats::default();
    scan_in_batches(
        &mut redis,
        f,
        Take::Inspect,
        "dry-run",
        &mut Batch::default(),
        &mut scanned,
        &Halt::default(),
        |batch| would_apply(&mut pg, f, &batch, report).map(|()| true),
    )?;
    report.merge_scan(&scanned);
    Ok(())
}

/// What applying `batch` would do, read from the table.
fn would_apply(
    pg: &mut Session,
    f: &FlushConfig,
    batch: &Batch,
    report: &mut Report,
) -> Result<()> {
    let codes: Vec<&str> = batch.hits.iter().map(|(c, _)| c).collect();
    let (found, rows) = pg.existing(&f.target, &codes)?;
    let unknown: Vec<(String, i64)> = batch
        .hits
        .iter()
        .filter(|(c, _)| !found.contains(*c))
        .map(|(c, h)| (c.to_owned(), h))
        .collect();
    report.batches += 1;
    report.keys += batch.keys;
    report.hits += batch.total_hits();
    report.rows_updated += rows;
    report.add_unknown(&unknown);
    Ok(())
}
