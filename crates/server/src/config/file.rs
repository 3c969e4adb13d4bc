//! The `--config` file. Its keys are the flags without `--` (`max-connections`
//! or `max_connections`); its values become the defaults of those flags, so
//! clap itself ranks the sources: flags, then `HERALD_*` variables, then the
//! file, then the built-in defaults. The keys it knows are the flags of
//! [`Settings`]: the file cannot drift from them.

use std::{ffi::OsString, path::PathBuf};

use clap::{ArgAction, ArgMatches, Args as _, Command, Parser};

use super::Settings;

/// Parses the command line as `T::parse()` does (`--help` and clap's errors
/// exit), with the `--config` file's settings as the defaults of the flags
/// they name. The file's own errors (unreadable, unknown keys, values of the
/// wrong shape) are returned beside the parse, to be reported with every
/// other invalid setting.
pub fn parse_args<T: Parser>() -> (T, Vec<String>) {
    parse_args_from(std::env::args_os())
}

/// [`parse_args`] from the given arguments (the program's name first).
pub fn parse_args_from<T: Parser>(args: impl IntoIterator<Item = impl Into<OsString>>) -> (T, Vec<String>) {
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let matches = T::command().get_matches_from(&args);
    let (path, config) = chosen(&matches);
    let Some(config) = config else { return (parsed(T::command(), &args), Vec::new()) };
    let (values, errors) = read(&config);
    (parsed(in_subcommand(T::command(), &path, &values), &args), errors)
}

fn parsed<T: Parser>(command: Command, args: &[OsString]) -> T {
    let mut matches = command.get_matches_from(args);
    T::from_arg_matches_mut(&mut matches).unwrap_or_else(|e| e.exit())
}

/// The subcommands taken, and the `--config` given to the last of them.
fn chosen(matches: &ArgMatches) -> (Vec<String>, Option<PathBuf>) {
    match matches.subcommand() {
        Some((name, sub)) => {
            let (mut path, config) = chosen(sub);
            path.insert(0, name.to_owned());
            (path, config)
        }
        None => (Vec::new(), matches.try_get_one::<PathBuf>("config").ok().flatten().cloned()),
    }
}

/// The file's values as defaults in the subcommand at `path`.
fn in_subcommand(command: Command, path: &[String], values: &[(String, Vec<String>)]) -> Command {
    match path.split_first() {
        None => with_defaults(command, values),
        Some((name, rest)) => command.mut_subcommand(name, |sub| in_subcommand(sub, rest, values)),
    }
}

/// The file's values as the defaults of the flags `command` has; the others
/// are settings of the server that this command does not use.
fn with_defaults(command: Command, values: &[(String, Vec<String>)]) -> Command {
    values.iter().fold(command, |command, (id, value)| {
        if command.get_arguments().any(|arg| arg.get_id() == id.as_str()) {
            command.mut_arg(id, |arg| arg.default_values(value.iter().cloned()))
        } else {
            command
        }
    })
}

/// The file's settings by argument id, and every problem found in it.
fn read(path: &std::path::Path) -> (Vec<(String, Vec<String>)>, Vec<String>) {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => return (Vec::new(), vec![format!("cannot read config file {}: {e}", path.display())]),
    };
    let table: toml::Table = match text.parse() {
        Ok(table) => table,
        Err(e) => return (Vec::new(), vec![format!("config file {} is not valid TOML: {e}", path.display())]),
    };
    let settings = Settings::augment_args(Command::new("herald"));
    let mut values = Vec::new();
    let mut errors = Vec::new();
    for (key, value) in table {
        let flag = key.replace('_', "-");
        // `config` is where the file came from, not a setting in it.
        let arg = settings.get_arguments().find(|arg| arg.get_long() == Some(&flag) && flag != "config");
        let Some(arg) = arg else {
            errors.push(format!("unknown setting `{key}` in config file {}", path.display()));
            continue;
        };
        let list = matches!(arg.get_action(), ArgAction::Append);
        match texts(value, list) {
            Ok(texts) => values.push((arg.get_id().to_string(), texts)),
            Err(why) => errors.push(format!("--{flag} in config file {}: {why}", path.display())),
        }
    }
    (values, errors)
}

/// A TOML value as the text(s) a flag would take: a list setting takes an
/// array or a comma-separated string, the others one string, number or boolean.
fn texts(value: toml::Value, list: bool) -> Result<Vec<String>, String> {
    match value {
        toml::Value::Array(items) if list => items.into_iter().map(scalar).collect(),
        toml::Value::String(text) if list => {
            Ok(text.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect())
        }
        toml::Value::Array(_) => Err("takes one value, not a list".into()),
        value => Ok(vec![scalar(value)?]),
    }
}

fn scalar(value: toml::Value) -> Result<String, String> {
    match value {
        toml::Value::String(text) => Ok(text),
        toml::Value::Integer(n) => Ok(n.to_string()),
        toml::Value::Float(n) => Ok(n.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        other => Err(format!("`{other}` is not a string, number or boolean")),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser;

    use super::*;
    use crate::Config;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        settings: Settings,
    }

    fn config(args: &[&str]) -> (Result<Config, Vec<String>>, Vec<String>) {
        let (cli, file_errors) = parse_args_from::<Cli>(std::iter::once("herald").chain(args.iter().copied()));
        (Config::from_settings(&cli.settings), file_errors)
    }

    /// A config file holding `text`, in a directory that lasts as long as the guard.
    fn config_file(text: &str) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("herald.toml");
        std::fs::write(&file, text).unwrap();
        let path = file.to_str().unwrap().to_owned();
        (dir, path)
    }

    #[test]
    fn file_settings_fill_gaps_but_flags_win() {
        let (_dir, path) = config_file(
            "listen = \"127.0.0.1:9000\"\nheartbeat = \"2s\"\nmax-connections = 50\npublic-subscribe = [\"news.*\"]\n\
             body-timeout = \"3s\"\ncors-credentials = true\ndashboard-rows = 7\ntrusted_proxies = \"10.0.0.1, 10.0.0.2\"\n",
        );
        let (config, file_errors) = config(&["--config", &path, "--heartbeat", "5s"]);
        assert!(file_errors.is_empty(), "{file_errors:?}");
        let config = config.unwrap();
        assert_eq!(config.listen[0].port(), 9000);
        assert_eq!(config.heartbeat, Duration::from_secs(5));
        assert_eq!(config.max_connections, 50);
        assert_eq!(config.public_subscribe.len(), 1);
        assert_eq!(config.body_timeout, Duration::from_secs(3));
        assert!(config.cors_credentials);
        assert_eq!(config.dashboard_rows, 7);
        assert_eq!(config.trusted_proxies.len(), 2, "a comma-separated string is a list");
        assert!(!Config::for_tests("0123456789abcdef0123456789abcdef").cors_credentials, "off by default");
    }

    #[test]
    fn every_problem_in_the_file_is_reported() {
        let (_dir, path) =
            config_file("lisen = \"x\"\ncolour = 1\nheartbeat = [\"1s\"]\nlog = { a = 1 }\nconfig = \"other.toml\"\n");
        let (_, errors) = config(&["--config", &path]);
        assert_eq!(errors.len(), 5, "{errors:#?}");
        for needle in [
            "unknown setting `lisen`",
            "unknown setting `colour`",
            "--heartbeat in config file",
            "--log in config file",
            "unknown setting `config`",
        ] {
            assert!(errors.iter().any(|e| e.contains(needle)), "{needle}: {errors:#?}");
        }
    }
}
