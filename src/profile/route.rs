//! A route: how to find a connection again later (an outbox entry stores one), and the
//! connection it leads to.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::profile::config::{self, Profile, profile_from_url};
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
        let Some((path, source)) = config::locate(
            self.config.as_deref(),
            env.config.as_deref(),
            env.platform_config.as_deref(),
        ) else {
            return Ok(None);
        };
        let file = config::load(&path, source.is_explicit())?;
        let path = std::path::absolute(&path).unwrap_or(path);
        file.select(self.profile.as_deref())?
            .map(|(name, profile)| {
                Ok(Connection {
                    route: Route {
                        config: Some(path),
                        profile: Some(name.clone()),
                        smtp_url: None,
                    },
                    name,
                    profile: with_proxy_env(profile, env)?,
                })
            })
            .transpose()
    }
}

/// `profile` with the proxies the environment chooses for it (its transport's, its
/// token endpoint's), when its `proxy` key leaves the choice to the environment.
fn with_proxy_env(mut profile: Profile, env: &Env) -> Result<Profile> {
    profile.take_proxy_env(&env.proxy)?;
    Ok(profile)
}
