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
use crate::report::Status;

/// Runs one command, and says how it ended. `Err` is a failure before its work began: a
/// [`crate::config::UsageError`] (a person must change something) or another (the next try
/// may work); a run's own failures are in its status.
pub fn execute(cli: Cli) -> Result<Status> {
    // `check` lists them as failures; everything else warns.
    if !matches!(cli.command, Command::Check(_)) {
        for unknown in crate::config::unknown_variables(&crate::cli::variables()) {
            log::warn!("{unknown}");
        }
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
