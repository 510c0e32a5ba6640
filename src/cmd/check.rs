//! `redis-flusher check`: every check a flush needs (`preflight`), each finding with what to
//! do about it, as text or JSON; changes nothing. Exit 0 when a flush could work (warnings
//! included), 1 when it could not.

use anyhow::Result;

use crate::cli::CheckArgs;
use crate::config::{unknown_variables, Config};
use crate::output::write_stdout;
use crate::postgres::Session;
use crate::preflight::{self, Findings, Level};
use crate::redis::RedisSource;
use crate::report::Status;

pub fn check(args: CheckArgs) -> Result<Status> {
    let cfg = Config::from_args(&args.conn, &args.target)?;
    let mut findings = run(&cfg);
    if let Some(path) = &args.metrics_file {
        metrics_file(path, &mut findings);
    }
    if args.json {
        write_stdout(format!("{}\n", serde_json::to_string(&findings)?).as_bytes())?;
    } else {
        write_stdout(text(&findings).as_bytes())?;
    }
    Ok(if findings.ok() {
        Status::Ok
    } else {
        Status::Failed
    })
}

/// Runs every check (`redis-flusher check`); never fails itself (a failed connection is a
/// finding).
fn run(cfg: &Config) -> Findings {
    let mut out = Findings {
        target: cfg.settings(),
        ..Findings::default()
    };
    for unknown in unknown_variables(&crate::cli::variables()) {
        out.add(Level::Fail, "config.unknown_variable", unknown.to_string());
    }
    match Session::connect(&cfg.pg) {
        Ok(mut pg) => {
            match pg.server_facts() {
                Ok((version, sync)) => {
                    out.add(
                        Level::Good,
                        "pg.connect",
                        format!(
                            "PostgreSQL at {}: connected (version {version})",
                            cfg.pg.display
                        ),
                    );
                    if sync == "off" {
                        out.add(
                            Level::Good,
                            "pg.synchronous_commit",
                            "synchronous_commit is off on this server; redis-flusher turns it \
                             on for its own transactions, so a Postgres crash cannot forget a \
                             committed batch",
                        );
                    }
                }
                Err(e) => out.failed("pg.server", &e),
            }
            preflight::postgres(&mut pg, &cfg.flush, true, &mut out);
            preflight::quarantine(&mut pg, &cfg.flush, &mut out);
        }
        Err(e) => out.failed("pg.connect", &e),
    }
    match RedisSource::connect(&cfg.redis, &cfg.flush.source) {
        Ok(mut redis) => {
            out.add(
                Level::Good,
                "redis.connect",
                format!("Redis at {}: connected, a master", cfg.redis.display),
            );
            preflight::redis_checks(&mut redis, &cfg.flush, true, &mut out);
        }
        Err(e) => out.failed("redis.connect", &e),
    }
    out
}

/// Whether runs will be able to write the metrics file: its directory there, and writable
/// (a run only warns when it cannot, and an alert on the file's figures never fires).
fn metrics_file(path: &std::path::Path, out: &mut Findings) {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    match tempfile::Builder::new()
        .prefix(".redis-flusher-check")
        .tempfile_in(dir)
    {
        Ok(_) => out.add(
            Level::Good,
            "metrics.file",
            format!("the metrics file {} can be written", path.display()),
        ),
        Err(e) => out.add(
            Level::Fail,
            "metrics.file",
            format!(
                "the metrics file {} cannot be written ({e}): create {} and let the user runs \
                 run as write it (under systemd, `ReadWritePaths=`)",
                path.display(),
                dir.display()
            ),
        ),
    }
}

/// The findings as an operator reads them: the target, a line each, and the verdict.
fn text(findings: &Findings) -> String {
    let mut out = String::new();
    if !findings.target.is_empty() {
        out.push_str("target (what a run would touch, and where each setting came from):\n");
        for t in &findings.target {
            out.push_str(&format!("  {:<13} {:<40} {}\n", t.what, t.value, t.source));
        }
    }
    for f in &findings.findings {
        let tag = match f.level {
            Level::Good => "ok  ",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
        };
        out.push_str(&format!("{tag}  {}\n", f.message));
    }
    let count = |l| findings.findings.iter().filter(|f| f.level == l).count();
    let (fails, warns) = (count(Level::Fail), count(Level::Warn));
    out.push_str(&if fails > 0 {
        format!("{fails} problem(s) would stop a flush, {warns} warning(s)\n")
    } else {
        format!("a flush would work; {warns} warning(s)\n")
    });
    out
}
