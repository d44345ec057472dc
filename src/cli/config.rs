//! `envoi config path|init` and `envoi profiles`: the config file, seen from outside.

use std::io::{self, Write};
use std::path::PathBuf;

use envoi::error::{Error, Result};
use envoi::profile::{ConfigSource, Env, Flags, config_path, list_profiles, write_starter};
use serde::Serialize;

use crate::cli::args::ConfigCommand;

/// The file `--config` (else the environment, else the platform) names.
fn located(config: Option<PathBuf>) -> Result<(PathBuf, ConfigSource)> {
    let flags = Flags {
        config,
        ..Flags::default()
    };
    config_path(&flags, &Env::from_process()?).ok_or_else(|| {
        Error::config("this platform has no config directory; give --config or $ENVOI_CONFIG")
    })
}

fn why(source: ConfigSource) -> &'static str {
    match source {
        ConfigSource::Flag => "--config",
        ConfigSource::Variable => "$ENVOI_CONFIG",
        ConfigSource::Platform => "the platform's config directory",
    }
}

/// `envoi config path|init`.
pub fn run(command: ConfigCommand) -> Result<()> {
    let mut out = io::stdout().lock();
    match command {
        ConfigCommand::Path { config, json } => {
            let (path, source) = located(config)?;
            let exists = path.is_file();
            #[derive(Serialize)]
            struct PathReport<'a> {
                path: &'a std::path::Path,
                source: &'a str,
                exists: bool,
            }
            let _ = if json {
                serde_json::to_writer(
                    &mut out,
                    &PathReport {
                        path: &path,
                        source: why(source),
                        exists,
                    },
                )
                .map_err(io::Error::other)
                .and_then(|()| writeln!(out))
            } else {
                let state = if exists {
                    "exists"
                } else {
                    "does not exist (envoi config init writes a starter)"
                };
                writeln!(out, "{} (from {}; {state})", path.display(), why(source))
            };
        }
        ConfigCommand::Init { config } => {
            let (path, _) = located(config)?;
            write_starter(&path)?;
            let _ = writeln!(
                out,
                "wrote {} (mode 0600); edit the profile `work`",
                path.display()
            );
        }
    }
    Ok(())
}

/// `envoi profiles`.
pub fn profiles(config: Option<PathBuf>, json: bool) -> Result<()> {
    let (path, _) = located(config)?;
    let list = list_profiles(&path)?;
    let mut out = io::stdout().lock();
    if json {
        #[derive(Serialize)]
        struct Listed<'a> {
            name: &'a str,
            default: bool,
            target: &'a str,
            user: Option<&'a str>,
        }
        let listed: Vec<Listed> = list
            .iter()
            .map(|p| Listed {
                name: &p.name,
                default: p.is_default,
                target: &p.target,
                user: p.user.as_deref(),
            })
            .collect();
        let _ = serde_json::to_writer(&mut out, &listed);
        let _ = writeln!(out);
        return Ok(());
    }
    for p in &list {
        let mark = if p.is_default { "*" } else { " " };
        let user = p
            .user
            .as_deref()
            .map(|u| format!("  as {u}"))
            .unwrap_or_default();
        let _ = writeln!(out, "{mark} {:<12} {}{user}", p.name, p.target);
    }
    Ok(())
}
