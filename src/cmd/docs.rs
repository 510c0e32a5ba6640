//! The verbs that print documentation: `help <command>`, `man`, `completions`.

use std::path::Path;

use anyhow::{Context, Result};

use crate::cli::{self, Cli};
use crate::config::UsageError;
use crate::output::write_stdout;
use crate::report::Status;

/// `completions <shell>`: the completion script on stdout.
pub fn completions(shell: clap_complete::Shell) -> Result<Status> {
    // Into a buffer first: the generator panics on a failed write (a closed pipe).
    let mut script = Vec::new();
    let mut cmd = <Cli as clap::CommandFactory>::command();
    clap_complete::generate(shell, &mut cmd, "redis-flusher", &mut script);
    write_stdout(&script).map(|()| Status::Ok)
}

/// `help [command]`: the long help.
pub fn help(command: Option<&str>) -> Result<Status> {
    let text = cli::long_help(command).map_err(UsageError)?;
    write_stdout(text.as_bytes()).map(|()| Status::Ok)
}

/// `man [--dir DIR]`: the man page on stdout, or one page per subcommand into `dir`.
pub fn man(dir: Option<&Path>) -> Result<Status> {
    let cmd = <Cli as clap::CommandFactory>::command();
    if let Some(dir) = dir {
        clap_mangen::generate_to(cmd, dir)
            .with_context(|| format!("could not write man pages into {}", dir.display()))?;
        return Ok(Status::Ok);
    }
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd)
        .render(&mut page)
        .context("could not render the man page")?;
    write_stdout(&page).map(|()| Status::Ok)
}
