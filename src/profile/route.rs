//! A route: how to find a connection again later (an outbox entry stores one), and the
//! connection it leads to.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::profile::config::{self, Profile, Transport, profile_from_url};
use crate::profile::env::Env;

/// How a message reaches its server: a profile of a config file, or a URL. Stored in
/// every outbox entry, so the field names are part of the on-disk format.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Route {
    /// The config file the profile came from, when a file was used.
    pub config: Option<PathBuf>,
    /// The profile name.
    pub profile: Option<String>,
    /// An `--smtp-url` (never with a password; that comes from `$ENVOI_PASSWORD`).
    pub smtp_url: Option<String>,
}

/// A profile ready to use, with its name for errors (`--smtp-url` for a URL) and the
/// route that finds it again.
#[derive(Debug, Clone)]
pub struct Connection {
    /// The profile's name, or `--smtp-url`.
    pub name: String,
    /// The checked profile.
    pub profile: Profile,
    /// The file and profile actually used (absolute path), or the URL.
    pub route: Route,
}

impl Route {
    /// The connection this route names: its URL, or its profile (else `default`) of its
    /// config file (else `$ENVOI_CONFIG`, else the platform path, as `env` says).
    /// `None` when no file exists and none was named.
    pub(crate) fn open(&self, env: &Env) -> Result<Option<Connection>> {
        if let Some(url) = &self.smtp_url {
            return Ok(Some(Connection {
                name: "--smtp-url".into(),
                profile: with_proxy_env(profile_from_url(url)?, env)?,
                route: self.clone(),
            }));
        }
        let Some((path, source)) = config::locate(self.config.as_deref(), env) else {
            return Ok(None);
        };
        let file = config::load_located(&path, source, env)?;
        let path = std::path::absolute(&path).unwrap_or(path);
        file.select(self.profile.as_deref())?
            .map(|(name, profile)| {
                let profile = with_proxy_env(unless_starter(profile, &name, &path), env)?;
                Ok(Connection {
                    route: Route {
                        config: Some(path),
                        profile: Some(name.clone()),
                        smtp_url: None,
                    },
                    name,
                    profile,
                })
            })
            .transpose()
    }
}

/// The host of the example profile in `config.example.toml`, the starter `envoi config
/// init` writes: a reserved name (RFC 2606) that no mail server answers to.
pub(crate) const STARTER_HOST: &str = "smtp.example.com";

/// `profile`, unless it still sends to the starter's placeholder host: then its login
/// becomes the error that says so, naming the profile, the file and the keys to edit.
/// The login is where a profile's errors wait for the delivery that needs them (every
/// SMTP delivery and `check` take it first), so a dry run, `config show` and the outbox
/// commands still work, and the newcomer reads what to edit instead of "ENVOI_PASSWORD
/// is not set" or, with it set, a name that does not resolve.
fn unless_starter(mut profile: Profile, name: &str, path: &Path) -> Profile {
    if let Transport::Smtp(smtp) = &mut profile.transport
        && smtp.host.eq_ignore_ascii_case(STARTER_HOST)
    {
        let file = path.display();
        smtp.login = Err(Error::config(format!(
            "profile {name:?} in {file} is still the starter's example: host = \
             \"{STARTER_HOST}\" is a placeholder, not a mail server. Edit [profiles.{name}] \
             in {file}: host (your SMTP server), port and security, username, password_env \
             (the variable that holds your password) and from, then try `envoi check`; or \
             choose another profile with --profile"
        )));
    }
    profile
}

/// `profile` with the proxies the environment chooses for it (its transport's, its
/// token endpoint's), when its `proxy` key leaves the choice to the environment.
fn with_proxy_env(mut profile: Profile, env: &Env) -> Result<Profile> {
    profile.take_proxy_env(&env.proxy)?;
    Ok(profile)
}
