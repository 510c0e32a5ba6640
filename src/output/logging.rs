//! Log lines on stderr: env_logger with timestamps (cron logs), as text or one JSON object per
//! line, written through the progress bar so that the two never garble each other.

use std::io::Write;

use crate::output::progress::LogWriter;

/// `RUST_LOG` as env_logger reads it, but a bare level (`RUST_LOG=debug`) is redis-flusher's
/// own level: the libraries stay at info or below, since tokio-postgres at debug logs every
/// statement's parameters, every code of every batch. Filters naming a module
/// (`RUST_LOG=tokio_postgres=debug`) are taken as written.
pub fn log_filter(rust_log: Option<&str>) -> String {
    let Some(filter) = rust_log.map(str::trim).filter(|f| !f.is_empty()) else {
        return "info".to_owned();
    };
    match filter.parse::<log::LevelFilter>() {
        Ok(level) => format!(
            "{},redis_flusher={level}",
            level.min(log::LevelFilter::Info)
        ),
        Err(_) => filter.to_owned(),
    }
}

/// Sets up the logger: `json` for one object per line, else text; the filter from `RUST_LOG`.
pub fn init(json: bool) {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_level_is_our_own_and_module_filters_are_kept() {
        assert_eq!(log_filter(None), "info");
        assert_eq!(log_filter(Some(" ")), "info");
        assert_eq!(log_filter(Some("debug")), "INFO,redis_flusher=DEBUG");
        assert_eq!(log_filter(Some("TRACE")), "INFO,redis_flusher=TRACE");
        assert_eq!(log_filter(Some("warn")), "WARN,redis_flusher=WARN");
        assert_eq!(log_filter(Some("off")), "OFF,redis_flusher=OFF");
        assert_eq!(
            log_filter(Some("info,tokio_postgres=debug")),
            "info,tokio_postgres=debug"
        );
    }
}
