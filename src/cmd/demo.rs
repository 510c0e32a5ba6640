//! `redis-flusher demo`: a first run for a newcomer. Creates a small table of its own and a
//! few hits, runs a real flush over them, and prints the table before and after.
//!
//! It uses its own table, key prefix, journal prefix and ledger, so it cannot touch real data;
//! `--clean` removes them all. Where no server answers, it starts throwaway ones
//! ([`crate::throwaway`]).

use anyhow::{Context, Result};

use crate::cli::DemoArgs;
use crate::config::{Config, Ident, UsageError};
use crate::flush;
use crate::output::{finish, Output};
use crate::postgres::connect_client;
use crate::report::{count, Report, Status};
use crate::throwaway::Throwaway;

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
fn demo_args(table: &str, pattern: &str) -> Vec<String> {
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
        &format!("{table}_journal:"),
        "--unknown-key",
        &format!("{table}_unknown"),
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

/// `demo`: a demo table and hits on the configured servers (or throwaway ones where nothing
/// answers), a real flush, the table before and after; or, with `--clean`, what a demo made
/// removed.
pub fn demo(args: DemoArgs) -> Result<Status> {
    let mut run_args = crate::cli::run_args(demo_args(&args.table, &args.pattern))
        .map_err(|e| UsageError(e.to_string()))?;
    run_args.conn = args.conn;
    let mut cfg = Config::from_run_args(&run_args)?;
    cfg.chosen_by = Some("the demo's own");
    if args.clean {
        return clean(&cfg).map(|()| Status::Ok);
    }
    // Stopped and removed when the demo ends, whichever way.
    let servers = Throwaway::start_missing(&cfg)?;
    match run(&cfg, servers.started()) {
        Ok(r) => Ok(finish(&r, &Output::default())),
        Err(e) => {
            log::error!("{}", crate::sys::error::text(&e));
            Ok(Status::Failed)
        }
    }
}

/// The demo itself; `throwaway` when it runs on servers it started (and will remove).
fn run(cfg: &Config, throwaway: bool) -> Result<Report> {
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
    say!("\nthe hits of `{UNKNOWN}` had no row: they were dropped and recorded in the ledger.");
    if throwaway {
        say!(
            "the servers were throwaway ones, removed now. Start Redis and PostgreSQL (or \
             point REDIS_URL and DATABASE_URL at yours) to keep what a demo does."
        );
    } else {
        let me = invocation();
        say!(
            "Try `{me} demo` again: counts grow by the same amounts, exactly once. `{me} demo \
             --clean` removes the demo's tables and keys."
        );
    }
    Ok(report)
}

/// The bookkeeping tables a demo on `table` makes, as [`demo_args`] names them.
fn bookkeeping(table: &str) -> [String; 4] {
    ["batches", "runs", "leases", "quarantine"].map(|t| format!("{table}_{t}"))
}

/// `demo --clean`: drops the demo's tables and deletes every key it made: its counters, its
/// journals (and their index), its unknown hash. Refuses a table holding rows the demo did not
/// make (`--table urls` by mistake), and touches no other key under the pattern.
fn clean(cfg: &Config) -> Result<()> {
    let (pg, f) = (&cfg.pg, &cfg.flush);
    let table = &f.target.table;
    let mut client = connect_client(pg)?;
    let exists: bool = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table.quoted])
        .and_then(|r| r.try_get(0))
        .with_context(|| format!("could not look for table `{}`", table.name))?;
    let codes: Vec<&str> = CODES.iter().map(|c| c.0).collect();
    if exists {
        let foreign: i64 = client
            .query_one(
                &format!(
                    "SELECT count(*) FROM {} WHERE short_code <> ALL($1)",
                    table.quoted
                ),
                &[&codes],
            )
            .and_then(|r| r.try_get(0))
            .map_err(|_| {
                UsageError(format!(
                    "table `{}` is not a demo table (it has no `short_code` column): not \
                     dropping it",
                    table.name
                ))
            })?;
        if foreign > 0 {
            return Err(UsageError(format!(
                "table `{}` holds {foreign} rows the demo did not make: not dropping it",
                table.name
            ))
            .into());
        }
    }
    let mut dropped = Vec::new();
    for name in std::iter::once(table.name.clone()).chain(bookkeeping(&table.name)) {
        let ident = Ident::parse("`--table`", &name)?;
        let gone: bool = client
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&ident.quoted])
            .and_then(|r| r.try_get(0))
            .with_context(|| format!("could not look for table `{name}`"))?;
        if gone {
            client
                .batch_execute(&format!("DROP TABLE {}", ident.quoted))
                .with_context(|| format!("could not drop demo table `{name}`"))?;
            dropped.push(name);
        }
    }

    let mut con = crate::redis::connect(&cfg.redis)?;
    let prefix = String::from_utf8_lossy(&f.source.prefix).into_owned();
    let journal_prefix = &f.source.journal_prefix;
    let mut keys: Vec<Vec<u8>> = CODES
        .iter()
        .map(|c| c.0)
        .chain([UNKNOWN])
        .map(|code| format!("{prefix}{code}").into_bytes())
        .chain([f.source.unknown_key.clone().into_bytes()])
        .collect();
    // Version 0.1's demo kept its journals and unknown hash here.
    let legacy = table.name == "redis_flusher_demo";
    if legacy {
        keys.push(b"redis_flusher:demo_unknown".to_vec());
    }
    for journals in std::iter::once(journal_prefix.as_str())
        .chain(legacy.then_some("redis_flusher:demo_journal:"))
    {
        let pattern = format!("{}*", crate::redis::glob_escape(journals));
        crate::redis::scan_all(&mut con, pattern.as_bytes(), |found| {
            keys.extend(found);
            Ok(())
        })
        .with_context(|| {
            format!(
                "could not SCAN Redis {} for demo journals",
                cfg.redis.display
            )
        })?;
    }
    let deleted: i64 = redis::cmd("DEL")
        .arg(&keys)
        .query(&mut con)
        .with_context(|| {
            format!(
                "could not delete the demo keys at Redis {}",
                cfg.redis.display
            )
        })?;
    let looked = format!(
        "keys {prefix}<code>, {journal_prefix}* and {}",
        f.source.unknown_key
    );
    if dropped.is_empty() && deleted == 0 {
        say!("nothing to remove: no demo table, and none of the demo's {looked}");
    } else {
        say!(
            "removed {}{} and {} (of the demo's {looked})",
            count(dropped.len() as u64, "demo table", "demo tables"),
            if dropped.is_empty() {
                String::new()
            } else {
                format!(" ({})", dropped.join(", "))
            },
            count(deleted, "key", "keys"),
        );
    }
    Ok(())
}

/// How this binary was started, as a command to type again: `redis-flusher` when it is on
/// PATH, `cargo run --release --` from a cargo build, else the path it was started by.
fn invocation() -> String {
    let arg0 = std::env::args().next().unwrap_or_default();
    let path = std::path::Path::new(&arg0);
    if arg0.contains("/target/release/") || arg0.contains("/target/debug/") {
        let release = if arg0.contains("/target/release/") {
            " --release"
        } else {
            ""
        };
        return format!("cargo run{release} --");
    }
    let on_path = crate::throwaway::find("redis-flusher").is_some_and(|found| {
        path.file_name() == found.file_name()
            && (!arg0.contains('/')
                || std::fs::canonicalize(path).ok() == std::fs::canonicalize(&found).ok())
    });
    if on_path {
        "redis-flusher".into()
    } else {
        arg0
    }
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
