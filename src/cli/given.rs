//! Parsing the command line, and where each setting's value came from as clap saw it (a flag,
//! a variable, the default), for `config/sources.rs` to resolve; the variables the flags read;
//! a `run`'s arguments parsed from a list.

use clap::{CommandFactory, FromArgMatches, Parser};

use super::{Cli, Command, RunArgs};

/// Where the value of one setting of the command came from, as clap saw it.
#[derive(Debug, Clone)]
pub struct Given {
    /// The flag, `--table`.
    pub flag: String,
    /// Its variable, if it has one: `REDIS_FLUSHER_TABLE`.
    pub var: Option<String>,
    pub how: How,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    Flag,
    /// The environment (or `.env`, which `config` tells apart).
    Env,
    Default,
    /// Not set, and no default.
    Absent,
}

/// Parses the command line, and says where each of the chosen command's settings came from.
/// `Err` is clap's: a usage error, or `--help`/`--version`, for `main` to print and exit with.
pub fn parse_with_sources<I, T>(args: I) -> Result<(Cli, Vec<Given>), clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cmd = Cli::command();
    let matches = cmd.clone().try_get_matches_from(args)?;
    let cli = Cli::from_arg_matches(&matches)?;
    let mut given = Vec::new();
    if let Some((name, sub)) = matches.subcommand() {
        if let Some(sub_cmd) = cmd.find_subcommand(name) {
            for arg in sub_cmd.get_arguments() {
                let Some(long) = arg.get_long() else { continue };
                let how = match sub.value_source(arg.get_id().as_str()) {
                    Some(clap::parser::ValueSource::CommandLine) => How::Flag,
                    Some(clap::parser::ValueSource::EnvVariable) => How::Env,
                    Some(clap::parser::ValueSource::DefaultValue) => How::Default,
                    _ => How::Absent,
                };
                given.push(Given {
                    flag: format!("--{long}"),
                    var: arg.get_env().map(|v| v.to_string_lossy().into_owned()),
                    how,
                });
            }
        }
    }
    Ok((cli, given))
}

/// Every variable some flag of some command reads.
pub fn variables() -> Vec<String> {
    fn walk(cmd: &clap::Command, out: &mut Vec<String>) {
        for arg in cmd.get_arguments() {
            if let Some(var) = arg.get_env() {
                out.push(var.to_string_lossy().into_owned());
            }
        }
        for sub in cmd.get_subcommands() {
            walk(sub, out);
        }
    }
    let mut out = Vec::new();
    walk(&Cli::command(), &mut out);
    out.sort();
    out.dedup();
    out
}

/// `redis-flusher <args>` parsed as `run` would be (environment included): the one way the
/// demo, the benchmark and the tests build a run's settings, so that they share its defaults.
pub fn run_args<I, T>(args: I) -> Result<RunArgs, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let argv = std::iter::once(std::ffi::OsString::from("redis-flusher"))
        .chain(args.into_iter().map(Into::into));
    match Cli::try_parse_from(argv)?.command {
        Command::Run(run) => Ok(run),
        _ => Err(Cli::command().error(
            clap::error::ErrorKind::InvalidSubcommand,
            "expected `run` and its arguments",
        )),
    }
}
