//! The binary: load `.env`, parse, set up logging, call the library, map to an exit code.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use redis_flusher::cli::{log_filter, Cli, LogFormat};
use redis_flusher::config::{load_env_file, UsageError};
use redis_flusher::progress::LogWriter;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    // Before parsing: clap reads the environment, and `.env` feeds it.
    let env_loaded = load_env_file(&args);
    let cli = Cli::parse_from(std::env::args_os());
    let json = cli.log_format == LogFormat::Json;
    env_logger::Builder::new()
        .parse_filters(&log_filter(std::env::var("RUST_LOG").ok().as_deref()))
        .format(move |buf, record| {
            if json {
                let line = serde_json::json!({
                    "ts": buf.timestamp_seconds().to_string(),
                    "level": record.level().as_str(),
                    "msg": record.args().to_string(),
                });
                writeln!(buf, "{line}")
            } else {
                writeln!(
                    buf,
                    "{} {:<5} {}",
                    buf.timestamp_seconds(),
                    record.level(),
                    record.args()
                )
            }
        })
        // Through the progress bar, which steps aside while a line is written.
        .target(env_logger::Target::Pipe(Box::new(LogWriter)))
        .init();
    let result = env_loaded.and_then(|()| redis_flusher::execute(cli));
    match result {
        Ok(code) => code,
        Err(e) => {
            if json {
                log::error!("{e:#}");
            } else {
                eprintln!("error: {e:#}");
            }
            if e.downcast_ref::<UsageError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}
