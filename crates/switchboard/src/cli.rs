//! The command line.

use crate::config::{self, Config};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Switchboard routes customer contacts from every channel to a free agent.
#[derive(Debug, Parser)]
#[command(name = "switchboard", version)]
struct Cli {
    /// The configuration file [default: /etc/switchboard/switchboard.toml]
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon (the default).
    Run,
    /// Check the configuration and exit: 0 when valid, 2 when not.
    Validate {
        /// Also connect to Redis and fail (exit 1) if it does not answer.
        #[arg(long)]
        check_redis: bool,
    },
    /// Print one key of the merged configuration (file and environment),
    /// without checking the rest: `switchboard show-config redis.url`.
    ShowConfig { key: String },
}

/// Exit status for an invalid configuration (64-78 are sysexits; systemd
/// treats any non-zero the same).
const EXIT_CONFIG: u8 = 2;

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let path = cli.config.clone().unwrap_or_else(config::default_path);
    let command = cli.command.unwrap_or(Command::Run);
    if let Command::ShowConfig { key } = &command {
        return show_config(&path, key);
    }
    let env = match text_environment(std::env::vars_os()) {
        Ok(env) => env,
        Err(e) => {
            eprintln!("switchboard: invalid configuration {}: {e}", path.display());
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let config = match config::load(&path, env) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("switchboard: invalid configuration {}: {e}", path.display());
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match config.runtime.build() {
        Ok(rt) => rt,
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
            eprintln!("switchboard: invalid configuration {}: {e}", path.display());
            return ExitCode::from(EXIT_CONFIG);
        }
        Err(e) => {
            eprintln!("switchboard: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match command {
        Command::Validate { check_redis } => {
            runtime.block_on(validate(&path, &config, check_redis))
        }
        Command::Run => {
            // Held to the end: its drop writes out the queued lines.
            let logs = crate::telemetry::init_logs(&config.log);
            let metrics = match crate::telemetry::init_metrics() {
                Ok(m) => m,
                Err(e) => {
                    eprintln!("switchboard: cannot set up metrics: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let result = runtime.block_on(crate::app::run(config, metrics));
            // Dropping the runtime waits for its blocking threads without
            // end (a directory sweep on a hung NFS mount, a DNS lookup):
            // past the stop's time systemd would kill the process and mark
            // the unit failed. What is still running then is abandoned.
            runtime.shutdown_timeout(std::time::Duration::from_secs(1));
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "Switchboard failed.");
                    // The queued lines first, then the plain one.
                    drop(logs);
                    eprintln!("switchboard: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::ShowConfig { .. } => ExitCode::SUCCESS,
    }
}

async fn validate(path: &std::path::Path, config: &Config, check_redis: bool) -> ExitCode {
    if check_redis {
        let store = match config
            .store_config()
            .map_err(|e| e.to_string())
            .and_then(|c| switchboard_store::Store::new(c).map_err(|e| e.to_string()))
        {
            Ok(store) => store,
            Err(e) => {
                eprintln!(
                    "switchboard: invalid configuration {}: redis: {e}",
                    path.display()
                );
                return ExitCode::from(EXIT_CONFIG);
            }
        };
        let url = switchboard_store::redact_url(&config.redis.url);
        if let Err(e) = store.ping().await {
            eprintln!("switchboard: cannot reach Redis at {url}: {e}");
            return ExitCode::FAILURE;
        }
        if let Err(e) = store.check_layout().await {
            eprintln!("switchboard: Redis at {url}: {e}");
            return ExitCode::FAILURE;
        }
    }
    println!("configuration OK: {}", path.display());
    ExitCode::SUCCESS
}

/// The environment as text. One of our variables (`SWITCHBOARD__…`) that is
/// not UTF-8 is an error naming it, never its value (it may be a secret);
/// another one is not ours to read and is skipped. (`std::env::vars`
/// panicked on either, and its message printed the value.)
fn text_environment(
    vars: impl Iterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (key, value) in vars {
        let Ok(key) = key.into_string() else { continue };
        match value.into_string() {
            Ok(value) => out.push((key, value)),
            Err(_) if key.starts_with("SWITCHBOARD__") => {
                return Err(format!("{key}: the value is not UTF-8 text"));
            }
            Err(_) => {}
        }
    }
    Ok(out)
}

fn show_config(path: &std::path::Path, key: &str) -> ExitCode {
    let env = match text_environment(std::env::vars_os()) {
        Ok(env) => env,
        Err(e) => {
            eprintln!("switchboard: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match config::raw_value(path, env, key) {
        Ok(value) => {
            println!("{value}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("switchboard: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::text_environment;
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;

    #[test]
    fn a_variable_that_is_not_text_is_named_never_shown() {
        let bad = || OsString::from_vec(b"hunter2\xff".to_vec());
        let ours = [(OsString::from("SWITCHBOARD__REDIS__PASSWORD"), bad())];
        let e = text_environment(ours.into_iter()).unwrap_err();
        assert!(e.contains("SWITCHBOARD__REDIS__PASSWORD"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        let others = [
            (OsString::from("LANG_OLD"), bad()),
            (OsString::from("HOME"), OsString::from("/root")),
        ];
        assert_eq!(
            text_environment(others.into_iter()).unwrap(),
            [("HOME".to_owned(), "/root".to_owned())]
        );
    }
}
