//! The binary: load `.env`, parse, set up logging, call the library, map to an exit code.

use std::process::ExitCode;

use redis_flusher::cli::LogFormat;
use redis_flusher::config::load_env_file;

fn main() -> ExitCode {
    limit_malloc_caching();
    let args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    // Before parsing: clap reads the environment, and `.env` feeds it.
    let (env_file, env_error) = match load_env_file(&args) {
        Ok(file) => (file, None),
        Err(e) => (None, Some(e)),
    };
    let (cli, given) = match redis_flusher::cli::parse_with_sources(std::env::args_os()) {
        Ok(parsed) => parsed,
        // `--help`, `--version` (exit 0) and usage errors (exit 2), printed as clap prints
        // them: the one exit outside the table below.
        Err(e) => e.exit(),
    };
    redis_flusher::config::record_sources(given, env_file);
    redis_flusher::init_logging(cli.log_format == LogFormat::Json);
    let json_result = cli.command.json();
    let result = match env_error {
        Some(e) => Err(e),
        None => redis_flusher::execute(cli),
    };
    let status = result.unwrap_or_else(|e| redis_flusher::fail_before_start(&e, json_result));
    redis_flusher::exit_code(status)
}

/// glibc's malloc raises its mmap threshold each time a large block is freed (up to 32 MiB),
/// after which a batch's large buffers come from the heap and their memory stays with the
/// process when they are freed (a peak RSS nearly twice the live heap, measured). A fixed
/// threshold gives such buffers back when they are freed, at no measured cost in time.
fn limit_malloc_caching() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets malloc's parameters; called first thing, before any thread.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}
