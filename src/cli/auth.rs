//! `envoi auth login|status|logout`: the OAuth2 tokens envoi fetches itself, from the
//! user's side. Nothing here ever prints a token.

use std::io::{self, Write};
use std::time::Duration;

use envoi::durable::unix_now;

use envoi::deliver::{LoginStep, Stored, auth_login, auth_logout, auth_status};
use envoi::error::{Error, Result};
use envoi::profile::{Connection, Env, Flags, OAuth2, config_path, list_profiles, resolve};
use serde::Serialize;

use crate::cli::args::{AuthCommand, ConnectionArgs};

/// `envoi auth …`.
pub fn run(command: AuthCommand) -> Result<()> {
    match command {
        AuthCommand::Login {
            connection,
            timeout,
        } => login(&connection, Duration::from_secs(timeout)),
        AuthCommand::Status { connection, json } => status(&connection, json),
        AuthCommand::Logout { connection } => {
            let connection = named(&connection)?;
            let forgot = auth_logout(&connection.profile)?;
            let mut err = io::stderr().lock();
            let _ = if forgot {
                writeln!(
                    err,
                    "envoi: forgot the tokens of profile {}",
                    connection.name
                )
            } else {
                writeln!(
                    err,
                    "envoi: profile {} had no cached tokens",
                    connection.name
                )
            };
            Ok(())
        }
    }
}

/// The profile the flags (else `$ENVOI_PROFILE`, else the file's default) name.
fn named(args: &ConnectionArgs) -> Result<Connection> {
    resolve(&args.flags(), &Env::from_process()?)?
        .connection
        .ok_or_else(|| Error::config("no profile: give --profile (and --config)"))
}

fn login(args: &ConnectionArgs, wait: Duration) -> Result<()> {
    let connection = named(args)?;
    let mut tell = |step: LoginStep| {
        let mut err = io::stderr().lock();
        let _ = match step {
            LoginStep::EnterCode { url, code } => writeln!(
                err,
                "To sign in, open {url} on any device and enter the code {code}\n\
                 (envoi waits up to {} min; Ctrl-C stops)",
                wait.as_secs().div_ceil(60)
            ),
            LoginStep::OpenUrl { url } => writeln!(
                err,
                "To sign in, open this page in a browser on this machine:\n\n  {url}\n\n\
                 (envoi waits up to {} min for the browser to come back; Ctrl-C stops)",
                wait.as_secs().div_ceil(60)
            ),
        };
    };
    let stored = auth_login(&connection.profile, wait, &mut tell)?;
    let _ = writeln!(
        io::stderr().lock(),
        "envoi: signed in for profile {}; the refresh token is in {}{}",
        connection.name,
        stored.path.display(),
        stored
            .access_expires_at
            .map(|at| format!("; the access token is valid for {}", left(at)))
            .unwrap_or_default()
    );
    Ok(())
}

/// One profile's line of `auth status`.
#[derive(Serialize)]
struct StatusLine {
    profile: String,
    user: String,
    flow: &'static str,
    cache: Option<String>,
    access_token_expires_at: Option<u64>,
    access_token_valid_secs: Option<u64>,
    refresh_token: bool,
    from_login: bool,
}

fn status(args: &ConnectionArgs, json: bool) -> Result<()> {
    let env = Env::from_process()?;
    let named = args.profile.is_some() || env.profile.is_some();
    let names: Vec<Option<String>> = match args.profile.clone().or(env.profile.clone()) {
        Some(name) => vec![Some(name)],
        None => {
            let (path, _) = config_path(&args.flags(), &env).ok_or_else(|| {
                Error::config("this platform has no config directory; give --config")
            })?;
            list_profiles(&path)?
                .into_iter()
                .map(|p| Some(p.name))
                .collect()
        }
    };
    let mut lines = Vec::new();
    for name in names {
        let flags = Flags {
            config: args.config.clone(),
            profile: name,
            ..Flags::default()
        };
        // Listing the whole file, a profile that cannot be used is not this command's
        // business (a send with it says what is wrong); a named one is.
        let connection = match resolve(&flags, &env) {
            Ok(resolved) => resolved.connection,
            Err(_) if !named => None,
            Err(e) => return Err(e),
        };
        let Some(connection) = connection else {
            continue;
        };
        let Some((user, oauth)) = connection.profile.oauth2() else {
            continue;
        };
        let stored = auth_status(&connection.profile)?;
        lines.push(status_line(&connection.name, user, oauth, stored.as_ref()));
    }
    let mut out = io::stdout().lock();
    if json {
        let _ = serde_json::to_writer(&mut out, &lines);
        let _ = writeln!(out);
        return Ok(());
    }
    if lines.is_empty() {
        let _ = writeln!(out, "no profile with an [oauth2] table");
    }
    for line in &lines {
        let state = match (
            &line.cache,
            line.refresh_token,
            line.access_token_valid_secs,
        ) {
            (None, _, _) if line.flow == "refresh_token" => {
                format!(
                    "no tokens (run: envoi auth login --profile {})",
                    line.profile
                )
            }
            (None, _, _) => "no token cached (the next send fetches one)".to_owned(),
            (Some(_), refresh, valid) => {
                let access = match valid {
                    Some(0) | None => "access token expired".to_owned(),
                    Some(secs) => format!("access token valid for {}", duration(secs)),
                };
                let refresh = match (refresh, line.from_login) {
                    (true, true) => "; refresh token from envoi auth login",
                    (true, false) => "; refresh token kept",
                    (false, _) => "",
                };
                format!("{access}{refresh}")
            }
        };
        let _ = writeln!(out, "{:<12} {:<28} {state}", line.profile, line.user);
    }
    Ok(())
}

/// The user name and `[oauth2]` table of a profile that has one.
fn status_line(profile: &str, user: &str, oauth: &OAuth2, stored: Option<&Stored>) -> StatusLine {
    let now = unix_now();
    StatusLine {
        profile: profile.to_owned(),
        user: user.to_owned(),
        flow: oauth.flow.name(),
        cache: stored.map(|s| s.path.display().to_string()),
        access_token_expires_at: stored.and_then(|s| s.access_expires_at),
        access_token_valid_secs: stored
            .and_then(|s| s.access_expires_at)
            .map(|at| at.saturating_sub(now)),
        refresh_token: stored.is_some_and(|s| s.has_refresh_token),
        from_login: stored.is_some_and(|s| s.from_login),
    }
}

/// Time left until the Unix time `at`, in words.
fn left(at: u64) -> String {
    duration(at.saturating_sub(unix_now()))
}

fn duration(secs: u64) -> String {
    match secs {
        0..120 => format!("{secs} s"),
        120..7200 => format!("{} min", secs / 60),
        _ => format!("{} h", secs / 3600),
    }
}
