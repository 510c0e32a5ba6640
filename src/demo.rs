//! `redis-flusher demo`: a first run for a newcomer. Creates a small table of its own and a
//! few hits, runs a real flush over them, and prints the table before and after.
//!
//! It uses its own table, key prefix, journal prefix and ledger, so it cannot touch real data.

use anyhow::{Context, Result};

use crate::config::{Config, Ident};
use crate::flush;
use crate::postgres::connect_client;
use crate::report::Report;

/// A line on stdout; a reader that went away is not an error (`output::write_stdout`).
macro_rules! say {
    ($($arg:tt)*) => {
        crate::output::write_stdout(format!("{}\n", format_args!($($arg)*)).as_bytes())?
    };
}

/// Codes the demo creates, and the INCRs it makes for each.
const CODES: [(&str, i64); 5] = [
    ("home", 3),
    ("docs", 5),
    ("blog", 2),
    ("pricing", 7),
    ("about", 1),
];
/// A code with hits but no row, to show what happens to unknown codes.
const UNKNOWN: &str = "no-such-code";

/// The demo's own target: `table` and the keys under `pattern`, with journals, ledger, run
/// history and unknown hash of its own, so that it cannot touch real data. Everything else
/// is as `run` would have it.
pub fn args(table: &str, pattern: &str) -> Vec<String> {
    [
        "run",
        "--pattern",
        pattern,
        "--table",
        table,
        "--code-column",
        "short_code",
        "--count-column",
        "access_count",
        "--journal-prefix",
        "redis_flusher:demo_journal:",
        "--unknown-key",
        "redis_flusher:demo_unknown",
        "--ledger-table",
        &format!("{table}_batches"),
        "--runs-table",
        &format!("{table}_runs"),
        "--lease-table",
        &format!("{table}_leases"),
        "--quarantine-table",
        &format!("{table}_quarantine"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

pub fn run(cfg: &Config) -> Result<Report> {
    let (redis, pg, flush_cfg) = (&cfg.redis, &cfg.pg, &cfg.flush);
    let table = &flush_cfg.target.table;
    let mut client = connect_client(pg)?;
    client
        .batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {t} (id serial PRIMARY KEY, \
             short_code varchar(255) UNIQUE NOT NULL, original_url text NOT NULL, \
             access_count integer NOT NULL DEFAULT 0)",
            t = table.quoted
        ))
        .with_context(|| {
            format!(
                "could not create demo table `{}` at {}",
                table.name, pg.display
            )
        })?;
    for (code, _) in CODES {
        client
            .execute(
                &format!(
                    "INSERT INTO {} (short_code, original_url) VALUES ($1, $2) \
                     ON CONFLICT (short_code) DO NOTHING",
                    table.quoted
                ),
                &[&code, &format!("https://example.com/{code}")],
            )
            .with_context(|| format!("could not fill demo table `{}`", table.name))?;
    }

    let mut con = crate::redis::connect(redis)?;
    let prefix = String::from_utf8_lossy(&flush_cfg.source.prefix).into_owned();
    for (code, n) in CODES.iter().copied().chain([(UNKNOWN, 4)]) {
        for _ in 0..n {
            redis::cmd("INCR")
                .arg(format!("{prefix}{code}"))
                .query::<i64>(&mut con)
                .with_context(|| format!("INCR at Redis {} failed", redis.display))?;
        }
    }
    say!(
        "app: INCRed {} hits on {} keys {prefix}<code>",
        CODES.iter().map(|c| c.1).sum::<i64>() + 4,
        CODES.len() + 1
    );
    print_table(&mut client, table, "before the flush")?;
    let report = flush::run(cfg);
    print_table(&mut client, table, "after the flush")?;
    say!(
        "\nthe hits of `{UNKNOWN}` had no row: they were {}. Try `redis-flusher demo` again: \
         counts grow by the same amounts, exactly once.",
        if flush_cfg.source.keep_unknown {
            "kept in Redis"
        } else {
            "dropped and recorded in the ledger"
        }
    );
    Ok(report)
}

fn print_table(client: &mut postgres::Client, table: &Ident, when: &str) -> Result<()> {
    say!("\n{} {when}:", table.name);
    let rows = client
        .query(
            &format!(
                "SELECT short_code, access_count FROM {} WHERE short_code = ANY($1) \
                 ORDER BY short_code",
                table.quoted
            ),
            &[&CODES.iter().map(|c| c.0).collect::<Vec<_>>()],
        )
        .with_context(|| format!("could not read demo table `{}`", table.name))?;
    for r in rows {
        let code: String = r.try_get(0)?;
        let n: i32 = r.try_get(1)?;
        say!("  {code:<10} {n}");
    }
    Ok(())
}
