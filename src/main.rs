//! The binary: load `.env`, parse, set up logging, call the library, map to an exit code.

use std::io::Write;
use std::process::ExitCode;

use redis_flusher::cli::LogFormat;
use redis_flusher::config::{load_env_file, UsageError};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    // Before parsing: clap reads the environment, and `.env` feeds it.
    let env_loaded = load_env_file(&args);
    let (cli, given) = redis_flusher::cli::parse_with_sources(std::env::args_os());
    redis_flusher::config::record_sources(given);
    let json = cli.log_format == LogFormat::Json;
    redis_flusher::logging::init(json);
    let result = env_loaded.and_then(|()| redis_flusher::execute(cli));
    match result {
        Ok(code) => code,
        Err(e) => {
            if json {
                log::error!("{}", redis_flusher::error::text(&e));
            } else {
                // Not eprintln!, which panics when stderr is closed.
                let _ = writeln!(
                    std::io::stderr(),
                    "error: {}",
                    redis_flusher::error::text(&e)
                );
            }
            if e.downcast_ref::<UsageError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}
