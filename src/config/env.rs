//! The environment as redis-flusher reads it: `.env` (or `--env-file`) loaded beneath the real
//! environment, and the secrets that never come from a flag.

use super::usage::usage;

/// Loads `--env-file PATH` or `./.env` into the environment, without overriding variables that
/// are already set (real environment wins over the file). Looks for `--env-file` itself,
/// before clap parses, because clap reads the environment while parsing.
pub fn load_env_file(args: &[String]) -> anyhow::Result<()> {
    let mut explicit = None;
    for (i, a) in args.iter().enumerate() {
        if let Some(v) = a.strip_prefix("--env-file=") {
            explicit = Some(v.to_owned());
        } else if a == "--env-file" {
            explicit = args.get(i + 1).cloned();
        }
    }
    match explicit {
        Some(path) => dotenvy::from_path(&path)
            .map_err(|e| usage(format!("could not read `--env-file` {path}: {e}"))),
        None => match dotenvy::dotenv() {
            Ok(_) => Ok(()),
            Err(e) if e.not_found() => Ok(()),
            Err(e) => Err(usage(format!("could not read ./.env: {e}"))),
        },
    }
}

/// Reads a secret that must not be given as a flag: the variable `name`, or the file that
/// `<name>_FILE` names (the container convention: Docker and Kubernetes secrets, systemd
/// credentials), less one trailing newline. Empty counts as unset, as the Python flusher
/// treated it. Both set is a usage error; so is a file that cannot be read. Messages name
/// the variable and the path, never the content.
pub(super) fn secret_env(name: &str) -> anyhow::Result<Option<String>> {
    let direct = std::env::var(name).ok().filter(|v| !v.is_empty());
    let file_var = format!("{name}_FILE");
    let Some(path) = std::env::var_os(&file_var).filter(|p| !p.is_empty()) else {
        return Ok(direct);
    };
    if direct.is_some() {
        return Err(usage(format!(
            "both `{name}` and `{file_var}` are set: keep one"
        )));
    }
    let path = std::path::PathBuf::from(path);
    let bytes = std::fs::read(&path).map_err(|e| {
        usage(format!(
            "`{file_var}` names {}, which cannot be read: {e}",
            path.display()
        ))
    })?;
    let mut text = String::from_utf8(bytes).map_err(|_| {
        usage(format!(
            "`{file_var}` names {}, which is not UTF-8 text",
            path.display()
        ))
    })?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Ok(Some(text).filter(|t| !t.is_empty()))
}
