//! The Postgres side of a flush alone, the way redis-flusher applies it, to choose the batch
//! size and see what each choice costs: `bench/run.sh pgside` runs it on fresh data.
//!
//! Arguments: N BATCH [random|sorted] [each|one] [index|planner]
//! - N codes `c1..cN`, counts 1..100, over the `urls` that `../shared/bench/populate.py N` makes;
//! - BATCH codes per `UPDATE … FROM unnest(…) … RETURNING` (the statement `update_sql` builds),
//!   each batch sorted, as redis-flusher sorts its batches;
//! - `random` (default): batches in random order, as SCAN delivers keys; `sorted`: all N
//!   sorted first, as the Postgres floor does;
//! - `each` (default): a transaction per batch, as redis-flusher runs; `one`: one for all N;
//! - `index` (default): hash and merge joins off, as redis-flusher's session has them;
//!   `planner`: the planner's own choice.
//!
//! Connects with DB_HOST, DB_PORT, DB_USER, DB_NAME (default flusher_bench), PGPASSWORD.
//! Prints `pgside_s=` and the rows updated. `cargo bench` adds `--bench`, which is ignored.

use std::time::Instant;

use postgres::NoTls;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let usage = "usage: pgside N BATCH [random|sorted] [each|one] [index|planner]";
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
    let (random, each, index) = (
        word(2, "random", "sorted")?,
        word(3, "each", "one")?,
        word(4, "index", "planner")?,
    );
    let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_owned());
    let mut config = postgres::Config::new();
    config
        .host(&env("DB_HOST", "localhost"))
        .port(env("DB_PORT", "5432").parse()?)
        .user(&env("DB_USER", "postgres"))
        .dbname(&env("DB_NAME", "flusher_bench"));
    if let Ok(password) = std::env::var("PGPASSWORD") {
        config.password(password);
    }
    let mut client = config.connect(NoTls)?;
    if index {
        client.batch_execute("SET enable_hashjoin = off; SET enable_mergejoin = off")?;
    }
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
    let update = client.prepare(
        "UPDATE urls AS u SET access_count = u.access_count + d.count \
         FROM unnest($1::text[], $2::int8[]) AS d(code, count) \
         WHERE u.short_code = d.code RETURNING d.code",
    )?;

    let started = Instant::now();
    let mut updated = 0;
    let mut tx = client.transaction()?;
    for (i, (codes, counts)) in batches.iter().enumerate() {
        if each && i > 0 {
            tx.commit()?;
            tx = client.transaction()?;
        }
        updated += tx.query(&update, &[codes, counts])?.len();
    }
    tx.commit()?;
    println!(
        "keys={n} batch={batch} order={} transactions={} plan={} rows_updated={updated} pgside_s={:.3}",
        if random { "random" } else { "sorted" },
        if each { "each" } else { "one" },
        if index { "index" } else { "planner" },
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
