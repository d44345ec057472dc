//! `envoi config path|init|show` and `envoi profiles`: the config file, seen from outside.

use std::io::{self, Write};
use std::path::PathBuf;

use envoi::error::{Error, Result};
use envoi::profile::{
    ConfigSource, Env, Flags, Origin, Shown, config_path, list_profiles, show, write_starter,
};
use serde::Serialize;

use crate::cli::args::{ConfigCommand, ShowArgs};

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
        ConfigSource::System => {
            "the system-wide file: you have no file of your own in the platform's config \
             directory"
        }
    }
}

/// `envoi config path|init|show`.
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
        ConfigCommand::Show(args) => return show_settings(&args),
        ConfigCommand::Init { config } => {
            let (path, source) = located(config)?;
            // Without a file of their own a user reads the system's; init writes theirs.
            let path = match (source, Env::from_process()?.platform_config) {
                (ConfigSource::System, Some(own)) => own,
                _ => path,
            };
            write_starter(&path)?;
            let _ = writeln!(
                out,
                "wrote {} (mode 0600); edit the profile `work` (host, username, \
                 password_env, from), then try `envoi config show` and `envoi check`",
                path.display()
            );
        }
    }
    Ok(())
}

/// `envoi profiles`; with `names`, the bare names the shell completions offer after
/// `--profile` (none without a config file: a completion has no one to tell how to make one).
pub fn profiles(config: Option<PathBuf>, json: bool, names: bool) -> Result<()> {
    let (path, source) = located(config)?;
    if names {
        if !path.exists() {
            return Ok(());
        }
        let mut out = io::stdout().lock();
        for p in list_profiles(&path)? {
            let _ = writeln!(out, "{}", p.name);
        }
        return Ok(());
    }
    if !path.exists() {
        // Trial 1.3: a newcomer's first `envoi profiles` must say where envoi looked and
        // how to make the file, not "No such file or directory".
        let init = match source {
            ConfigSource::Flag => format!("envoi config init --config {}", path.display()),
            ConfigSource::Variable | ConfigSource::Platform | ConfigSource::System => {
                "envoi config init".to_owned()
            }
        };
        return Err(Error::config(format!(
            "no config file: envoi looked for {} (from {}); `{init}` writes a commented \
             starter there to edit",
            path.display(),
            why(source)
        )));
    }
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

/// An origin in words: the flag or `$VARIABLE` by name, `config file`, or `default`.
fn origin_words(origin: Origin) -> String {
    match origin {
        Origin::Flag(flag) => flag.to_owned(),
        Origin::Variable(name) => format!("${name}"),
        Origin::File => "config file".to_owned(),
        Origin::Default => "default".to_owned(),
    }
}

/// An origin in `--json`: `source` is flag, environment, file or default; `via` names the
/// flag or variable.
#[derive(Serialize)]
struct OriginReport {
    source: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    via: Option<&'static str>,
}

impl From<Origin> for OriginReport {
    fn from(origin: Origin) -> OriginReport {
        let (source, via) = match origin {
            Origin::Flag(flag) => ("flag", Some(flag)),
            Origin::Variable(name) => ("environment", Some(name)),
            Origin::File => ("file", None),
            Origin::Default => ("default", None),
        };
        OriginReport { source, via }
    }
}

/// `envoi config show`: the report, then 78 if something would stop a send.
fn show_settings(args: &ShowArgs) -> Result<()> {
    let shown = show(&args.flags(), &Env::from_process()?)?;
    let mut out = io::stdout().lock();
    let _ = if args.json {
        write_show_json(&mut out, &shown)
    } else {
        write_show_text(&mut out, &shown)
    };
    shown.verdict()
}

fn write_show_text(out: &mut impl Write, shown: &Shown) -> io::Result<()> {
    match &shown.config {
        Some((path, source)) => {
            let state = if path.is_file() {
                ""
            } else {
                "; does not exist"
            };
            writeln!(
                out,
                "config file  {} (from {}{state})",
                path.display(),
                why(*source)
            )?
        }
        None if shown.connection.is_some() => {
            writeln!(out, "config file  not read (the connection is a URL)")?
        }
        None => writeln!(
            out,
            "config file  none (this platform has no config directory)"
        )?,
    }
    match &shown.connection {
        Some((name, origin)) => {
            let chosen = match origin {
                Origin::File => "the file's default".to_owned(),
                other => origin_words(*other),
            };
            writeln!(out, "connection   {name} (chosen by {chosen})")?
        }
        None => writeln!(
            out,
            "connection   none: no profile named and no default (send needs --profile or \
             --smtp-url)"
        )?,
    }
    writeln!(out)?;
    let width = shown
        .settings
        .iter()
        .filter_map(|s| s.value.as_ref().map(String::len))
        .max()
        .unwrap_or(1)
        .clamp(1, 48);
    for setting in &shown.settings {
        let value = setting.value.as_deref().unwrap_or("-");
        writeln!(
            out,
            "{:<22} {value:<width$}  {}",
            setting.key,
            origin_words(setting.origin)
        )?;
    }
    if !shown.policy.is_empty() {
        writeln!(out, "\nrecipient policy (and where each rule is written):")?;
        for (key, value, origin) in &shown.policy {
            writeln!(out, "{key:<34} {value}  ({origin})")?;
        }
    }
    for problem in &shown.problems {
        writeln!(out, "\nproblem: {problem}")?;
    }
    Ok(())
}

fn write_show_json(out: &mut impl Write, shown: &Shown) -> io::Result<()> {
    #[derive(Serialize)]
    struct ConfigReport<'a> {
        path: &'a std::path::Path,
        source: &'a str,
        exists: bool,
    }
    #[derive(Serialize)]
    struct ConnectionReport<'a> {
        name: &'a str,
        #[serde(flatten)]
        origin: OriginReport,
    }
    #[derive(Serialize)]
    struct SettingReport<'a> {
        key: &'a str,
        value: Option<&'a str>,
        #[serde(flatten)]
        origin: OriginReport,
    }
    #[derive(Serialize)]
    struct RuleReport<'a> {
        key: &'a str,
        value: &'a str,
        from: &'a str,
    }
    #[derive(Serialize)]
    struct ShowReport<'a> {
        config: Option<ConfigReport<'a>>,
        connection: Option<ConnectionReport<'a>>,
        settings: Vec<SettingReport<'a>>,
        policy: Vec<RuleReport<'a>>,
        problems: &'a [String],
    }
    let report = ShowReport {
        config: shown.config.as_ref().map(|(path, source)| ConfigReport {
            path,
            source: why(*source),
            exists: path.is_file(),
        }),
        connection: shown
            .connection
            .as_ref()
            .map(|(name, origin)| ConnectionReport {
                name,
                origin: (*origin).into(),
            }),
        settings: shown
            .settings
            .iter()
            .map(|s| SettingReport {
                key: s.key,
                value: s.value.as_deref(),
                origin: s.origin.into(),
            })
            .collect(),
        policy: shown
            .policy
            .iter()
            .map(|(key, value, from)| RuleReport { key, value, from })
            .collect(),
        problems: &shown.problems,
    };
    serde_json::to_writer(&mut *out, &report).map_err(io::Error::other)?;
    writeln!(out)
}
