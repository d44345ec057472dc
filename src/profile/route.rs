//! A route: how to find a connection again later (an outbox entry stores one), and the
//! connection it leads to.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::profile::config::{self, Hop, Profile, Transport, profile_from_url};
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
    /// The file and profile actually used (absolute path), or the URL; the route's
    /// name when the connection is a route of `[routes]`.
    pub route: Route,
    /// The other profiles of a route (`[routes]`), in the order they are tried when the
    /// ones before certainly did not take a message; empty for a single profile.
    pub fallbacks: Vec<(String, Profile)>,
    /// A route's rules by recipient domain: the domain (lowercase) and the connection
    /// of its recipients; the others go through this one.
    pub by_domain: Vec<(String, Connection)>,
}

impl Connection {
    /// Its profiles with their names, in the order a message tries them: its own first.
    pub fn hops(&self) -> impl Iterator<Item = (&str, &Profile)> {
        std::iter::once((self.name.as_str(), &self.profile)).chain(
            self.fallbacks
                .iter()
                .map(|(name, profile)| (name.as_str(), profile)),
        )
    }

    /// Every profile a message may go through: [`Connection::hops`], then those of its
    /// domain rules.
    pub fn profiles(&self) -> Vec<(&str, &Profile)> {
        let mut all: Vec<(&str, &Profile)> = self.hops().collect();
        for (_, rule) in &self.by_domain {
            all.extend(rule.hops());
        }
        all
    }

    /// The profile called `name` among [`Connection::profiles`].
    pub fn hop(&self, name: &str) -> Option<&Profile> {
        self.profiles()
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, p)| p)
    }

    /// The connection of `recipient`'s domain rule, else this one.
    pub fn for_recipient(&self, recipient: &lettre::Address) -> &Connection {
        let domain = recipient.domain().to_lowercase();
        self.by_domain
            .iter()
            .find(|(d, _)| *d == domain)
            .map_or(self, |(_, rule)| rule)
    }
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
                fallbacks: Vec::new(),
                by_domain: Vec::new(),
            }));
        }
        let Some((path, source)) = config::locate(self.config.as_deref(), env) else {
            return Ok(None);
        };
        let file = config::load_located(&path, source, env)?;
        let path = std::path::absolute(&path).unwrap_or(path);
        let ready = |(name, profile): (String, Profile)| -> Result<(String, Profile)> {
            let profile = with_proxy_env(unless_starter(profile, &name, &path), env)?;
            Ok((name, profile))
        };
        if let Some(routing) = file.route(self.profile.as_deref())? {
            let route = Route {
                config: Some(path.clone()),
                profile: Some(routing.name),
                smtp_url: None,
            };
            let connect = |(first, rest): (Hop, Vec<Hop>)| -> Result<Connection> {
                let (name, profile) = ready(first)?;
                Ok(Connection {
                    name,
                    profile,
                    route: route.clone(),
                    fallbacks: rest.into_iter().map(ready).collect::<Result<_>>()?,
                    by_domain: Vec::new(),
                })
            };
            let by_domain = routing
                .domains
                .into_iter()
                .map(|(domain, chain)| Ok((domain, connect(chain)?)))
                .collect::<Result<_>>()?;
            return Ok(Some(Connection {
                by_domain,
                ..connect(routing.chain)?
            }));
        }
        file.select(self.profile.as_deref())?
            .map(|(name, profile)| {
                let (name, profile) = ready((name, profile))?;
                Ok(Connection {
                    route: Route {
                        config: Some(path.clone()),
                        profile: Some(name.clone()),
                        smtp_url: None,
                    },
                    name,
                    profile,
                    fallbacks: Vec::new(),
                    by_domain: Vec::new(),
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
