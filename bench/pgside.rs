//! The Postgres side of a flush alone, the way redis-flusher applies it, to choose the batch
//! size and see what each choice costs: `bench/run.sh pgside` runs it on fresh data.
//!
//! Arguments: N BATCH [random|sorted] [each|one] [index|planner] [unnamed|prepared]
//! - N codes `c1..cN`, counts 1..100, over the `urls` that `bench/populate.py N` makes;
//! - BATCH codes per UPDATE, the statement `redis_flusher::postgres::update_sql` builds for
//!   `run` (`--statement` in REDIS_FLUSHER_STATEMENT), sent unnamed as `run` sends it, each
//!   batch sorted, as redis-flusher sorts its batches, in transactions that begin as `run`'s
//!   do (`Session::begin`);
//! - `random` (default): batches in random order, as SCAN delivers keys; `sorted`: all N
//!   sorted first, as the Postgres floor does;
//! - `each` (default): a transaction per batch, as redis-flusher runs; `one`: one for all N;
//! - `index` (default): hash and merge joins off, as redis-flusher's session has them;
//!   `planner`: the planner's own choice;
//! - `unnamed` (default): each UPDATE sent unnamed, as `run` sends it (it works through
//!   PgBouncer in transaction mode); `prepared`: a named statement prepared once per SQL
//!   text and reused, as 0.1.0 did, to measure what unnamed statements cost.
//!
//! Connects as `run` would (DATABASE_URL or DB_HOST, DB_PORT, DB_USER, DB_NAME, DB_PASSWORD;
//! `bench/run.sh` points them at the bench database). Prints `pgside_s=` and the rows
//! updated. `cargo bench` adds `--bench`, which is ignored.

use std::time::Instant;

use redis_flusher::config::Config;
use redis_flusher::postgres::{statement_rows, update_params, update_sql, Session};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let usage = "usage: pgside N BATCH [random|sorted] [each|one] [index|planner] \
                 [unnamed|prepared]";
    let (n, batch) = match (args.first(), args.get(1)) {
        (Some(n), Some(b)) => (n.parse::<usize>()?, b.parse::<usize>()?.max(1)),
        _ => return Err(usage.into()),
    };
    let word = |i: usize, default: &'static str, other: &str| -> Result<bool, String> {
        match args.get(i).map(String::as_str).unwrap_or(default) {
            w if w == default => Ok(true),
            w if w == other => Ok(false),
            w => Err(format!("{w:?}? {usage}")),
        }
    };
    let (random, each, index, unnamed) = (
        word(2, "random", "sorted")?,
        word(3, "each", "one")?,
        word(4, "index", "planner")?,
        word(5, "unnamed", "prepared")?,
    );
    let mut prepared = std::collections::HashMap::new();
    // `run`'s own settings, with room for a whole run's transaction.
    let run = redis_flusher::cli::run_args(["run", "--statement-timeout", "3600"])?;
    let cfg = Config::from_run_args(&run)?;
    let target = &cfg.flush.target;
    let mut pg = Session::connect(&cfg.pg)?;
    // A transaction as `run` begins one (its SET LOCALs), then the planner's choice if asked.
    let begin = |pg: &mut Session| -> Result<(), Box<dyn std::error::Error>> {
        pg.begin(false)?;
        if !index {
            pg.simple(
                "letting the planner choose",
                "SET LOCAL enable_hashjoin = on; SET LOCAL enable_mergejoin = on",
            )?;
        }
        Ok(())
    };
    let mut rows: Vec<(String, i64)> = (1..=n)
        .map(|i| (format!("c{i}"), (i % 100 + 1) as i64))
        .collect();
    if random {
        fastrand::seed(7);
        fastrand::shuffle(&mut rows);
    } else {
        rows.sort();
    }
    let batches: Vec<(Vec<String>, Vec<i64>)> = rows
        .chunks(batch)
        .map(|part| {
            let mut part = part.to_vec();
            part.sort();
            part.into_iter().unzip()
        })
        .collect();

    let started = Instant::now();
    let mut updated = 0;
    begin(&mut pg)?;
    for (i, (codes, counts)) in batches.iter().enumerate() {
        if each && i > 0 {
            pg.commit("a batch")?;
            begin(&mut pg)?;
        }
        let codes: Vec<&str> = codes.iter().map(String::as_str).collect();
        let part = statement_rows(target.form, codes.len());
        for (codes, counts) in codes.chunks(part).zip(counts.chunks(part)) {
            let params = update_params(target.form, &codes, &counts);
            let sql = update_sql(target, codes.len());
            updated += if unnamed {
                pg.query("the UPDATE", &sql, &params)?.len()
            } else {
                let types: Vec<_> = params.iter().map(|(_, t)| t.clone()).collect();
                let values: Vec<_> = params.iter().map(|(v, _)| *v).collect();
                if !prepared.contains_key(&sql) {
                    let statement = pg.call("PREPARE", |c| c.prepare_typed(&sql, &types))?;
                    prepared.insert(sql.clone(), statement);
                }
                let statement = &prepared[&sql];
                pg.call("the UPDATE", |c| c.query(statement, &values))?
                    .len()
            };
        }
    }
    pg.commit("the last batch")?;
    println!(
        "keys={n} batch={batch} order={} transactions={} plan={} statements={} rows_updated={updated} \
         pgside_s={:.3}",
        if random { "random" } else { "sorted" },
        if each { "each" } else { "one" },
        if index { "index" } else { "planner" },
        if unnamed { "unnamed" } else { "prepared" },
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
