//! The verbs, one file each: `run` (and its `--dry-run`), `serve`, `check`, `status`, `demo`, and the
//! documentation ones (`help`, `man`, `completions`). Each turns its arguments into settings,
//! calls the engine or the checks, and says how the command ended; `output::exit_code` turns
//! that into the exit code.

mod check;
mod demo;
mod docs;
mod dry_run;
mod run;
mod serve;
mod status;

use anyhow::Result;

use crate::cli::{Cli, Command};
use crate::config::UsageError;
use crate::report::Status;

/// Runs one command, and says how it ended. `Err` is a failure before its work began: a
/// [`crate::config::UsageError`] (a person must change something) or another (the next try
/// may work); a run's own failures are in its status.
pub fn execute(cli: Cli) -> Result<Status> {
    let flushes = match &cli.command {
        Command::Run(args) => !args.dry_run,
        Command::Serve(_) => true,
        _ => false,
    };
    // `check` lists them as failures; everything else warns, but a flush does not go on
    // without a server or a secret someone misspelt.
    if !matches!(cli.command, Command::Check(_)) {
        let unknown = crate::config::unknown_variables(&crate::cli::variables());
        let (fatal, harmless): (Vec<_>, Vec<_>) = unknown
            .into_iter()
            .partition(|u| flushes && u.is_target_or_secret());
        for u in harmless {
            log::warn!("{u}");
        }
        if !fatal.is_empty() {
            return Err(UsageError(format!(
                "{}; it names a server or a secret, so this run does not go on without it",
                fatal
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            ))
            .into());
        }
    }
    if flushes {
        crate::config::require_targets()?;
    }
    match cli.command {
        Command::Run(args) => run::run(args),
        Command::Serve(args) => serve::serve(args),
        Command::Check(args) => check::check(args),
        Command::Status(args) => status::status(args),
        Command::Demo(args) => demo::demo(args),
        Command::Completions { shell } => docs::completions(shell),
        Command::Help { command } => docs::help(command.as_deref()),
        Command::Man { dir } => docs::man(dir.as_deref()),
    }
}
