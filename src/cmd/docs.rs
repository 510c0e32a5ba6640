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

/// `man [--dir DIR]`: the man page on stdout, or one page per command into `dir`
/// (`redis-flusher.1`, `redis-flusher-run.1`, …).
pub fn man(dir: Option<&Path>) -> Result<Status> {
    let mut cmd = for_man(<Cli as clap::CommandFactory>::command());
    cmd.build();
    let Some(dir) = dir else {
        let mut page = Vec::new();
        render(&cmd, &mut page).context("could not render the man page")?;
        return write_stdout(&page).map(|()| Status::Ok);
    };
    let mut commands = vec![cmd.clone()];
    commands.extend(cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
    for c in commands {
        let name = format!("{}.1", c.get_display_name().unwrap_or_else(|| c.get_name()));
        let path = dir.join(&name);
        let mut page = Vec::new();
        render(&c, &mut page)
            .and_then(|()| std::fs::write(&path, page))
            .with_context(|| format!("could not write the man page {}", path.display()))?;
    }
    Ok(Status::Ok)
}

/// The command as its pages show it: every option with its description (`-h` leaves some
/// out, and the man pages would show them bare).
fn for_man(cmd: clap::Command) -> clap::Command {
    cmd.mut_args(|a| a.hide_short_help(false))
        .mut_subcommands(for_man)
}

/// One page: clap_mangen's sections, and the text after the options (the environment, the
/// `.env` rules, the exit codes) as written, line by line, not filled into a paragraph.
fn render(cmd: &clap::Command, w: &mut Vec<u8>) -> std::io::Result<()> {
    use std::io::Write;
    let after = cmd
        .get_after_long_help()
        .or_else(|| cmd.get_after_help())
        .map(|t| t.to_string());
    let man = clap_mangen::Man::new(cmd.clone());
    man.render_title(w)?;
    man.render_name_section(w)?;
    man.render_synopsis_section(w)?;
    man.render_description_section(w)?;
    man.render_options_section(w)?;
    if cmd.has_subcommands() {
        man.render_subcommands_section(w)?;
    }
    if let Some(text) = after {
        writeln!(w, ".SH EXTRA\n.nf")?;
        for line in text.lines() {
            let line = line.replace('\\', "\\e");
            // A line that starts with `.` or `'` would be a roff request.
            let guard = if line.starts_with(['.', '\'']) {
                "\\&"
            } else {
                ""
            };
            writeln!(w, "{guard}{line}")?;
        }
        writeln!(w, ".fi")?;
    }
    if cmd.get_version().is_some() {
        man.render_version_section(w)?;
    }
    Ok(())
}
