//! The one place where flags, `ENVOI_*` variables, the profile and platform defaults
//! meet (fd's `construct_config`): every command asks [`resolve`] and then sees only
//! the plain [`Resolved`] answer.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::profile::route::{Connection, Route};

/// The environment variables that take part in precedence, read once. An empty
/// variable counts as unset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Env {
    /// `ENVOI_SMTP_URL`.
    pub smtp_url: Option<String>,
    /// `ENVOI_CONFIG`.
    pub config: Option<String>,
    /// `ENVOI_PROFILE`.
    pub profile: Option<String>,
    /// `ENVOI_OUTBOX_DIR`.
    pub outbox_dir: Option<PathBuf>,
    /// `ENVOI_IDEMPOTENCY_KEY`.
    pub idempotency_key: Option<String>,
    /// The platform config directory's `envoi/config.toml`, when the platform has one.
    pub platform_config: Option<PathBuf>,
    /// The platform data directory's `envoi/outbox`, when the platform has one.
    pub platform_outbox: Option<PathBuf>,
}

impl Env {
    /// Reads this process's environment.
    pub fn from_process() -> Env {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        use etcetera::BaseStrategy;
        let base = etcetera::choose_base_strategy().ok();
        Env {
            smtp_url: var("ENVOI_SMTP_URL"),
            config: var("ENVOI_CONFIG"),
            profile: var("ENVOI_PROFILE"),
            outbox_dir: var("ENVOI_OUTBOX_DIR").map(PathBuf::from),
            idempotency_key: var("ENVOI_IDEMPOTENCY_KEY"),
            platform_config: base
                .as_ref()
                .map(|b| b.config_dir().join("envoi").join("config.toml")),
            platform_outbox: base.map(|b| b.data_dir().join("envoi").join("outbox")),
        }
    }
}

/// What the command line said; each field beats its variable in [`Env`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flags {
    /// `--config`.
    pub config: Option<PathBuf>,
    /// `--profile`.
    pub profile: Option<String>,
    /// `--smtp-url`.
    pub smtp_url: Option<String>,
    /// `--outbox-dir`.
    pub outbox_dir: Option<PathBuf>,
    /// `--idempotency-key`.
    pub idempotency_key: Option<String>,
}

/// Where to send and where to keep state, decided once.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The connection: `--smtp-url`/`$ENVOI_SMTP_URL`, else the profile of the config
    /// file. `None` when there is no config file and nothing was named.
    pub connection: Option<Connection>,
    /// `--idempotency-key`, else `$ENVOI_IDEMPOTENCY_KEY`.
    pub idempotency_key: Option<String>,
    outbox_dir: Option<PathBuf>,
    config_flag: Option<PathBuf>,
    env: Env,
}

/// Applies the documented precedence (README, "Flags"): a flag, else its variable, else
/// the profile's key, else the platform default. Naming a URL and a profile at once, by
/// flag or variable, is a usage error.
pub fn resolve(flags: &Flags, env: &Env) -> Result<Resolved> {
    let smtp_url = flags.smtp_url.clone().or_else(|| env.smtp_url.clone());
    let profile = flags.profile.clone().or_else(|| env.profile.clone());
    if smtp_url.is_some() && profile.is_some() {
        return Err(Error::usage(
            "--profile and --smtp-url (or $ENVOI_SMTP_URL) both name a connection; give one",
        ));
    }
    let route = Route {
        config: flags.config.clone(),
        profile,
        smtp_url,
    };
    let connection = route.open(env)?;
    let outbox_dir = flags
        .outbox_dir
        .clone()
        .or_else(|| env.outbox_dir.clone())
        .or_else(|| connection.as_ref()?.profile.outbox_dir.clone())
        .or_else(|| env.platform_outbox.clone());
    Ok(Resolved {
        connection,
        idempotency_key: flags
            .idempotency_key
            .clone()
            .or_else(|| env.idempotency_key.clone()),
        outbox_dir,
        config_flag: flags.config.clone(),
        env: env.clone(),
    })
}

impl Resolved {
    /// The outbox (and idempotency ledger) directory.
    pub fn outbox_dir(&self) -> Result<&Path> {
        self.outbox_dir.as_deref().ok_or_else(|| {
            Error::config("this platform has no data directory for the outbox; give --outbox-dir")
        })
    }

    /// The connection an outbox entry was queued with. `--config` given now replaces the
    /// file recorded at enqueue (the file may have moved); otherwise the same rules as at
    /// enqueue apply.
    pub fn connection_for(&self, route: &Route) -> Result<Connection> {
        let route = Route {
            config: self.config_flag.clone().or_else(|| route.config.clone()),
            ..route.clone()
        };
        route.open(&self.env)?.ok_or_else(|| {
            Error::config("no config file or default profile for the queued message")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    /// A config file in a temp dir with two profiles, each with its own outbox_dir.
    fn config(dir: &Path) -> PathBuf {
        let path = dir.join("config.toml");
        let text = "default = \"a\"\n\
                    [profiles.a]\nhost = \"a.example\"\noutbox_dir = \"/outbox/a\"\n\
                    [profiles.b]\nhost = \"b.example\"\noutbox_dir = \"/outbox/b\"\n\
                    [profiles.c]\nhost = \"c.example\"\n";
        std::fs::write(&path, text).unwrap();
        path
    }

    fn env() -> Env {
        Env {
            platform_outbox: Some("/platform/outbox".into()),
            ..Env::default()
        }
    }

    fn outbox(flags: &Flags, env: &Env) -> PathBuf {
        resolve(flags, env)
            .unwrap()
            .outbox_dir()
            .unwrap()
            .to_path_buf()
    }

    #[test]
    fn outbox_dir_flag_then_variable_then_profile_then_platform() {
        let dir = tempfile::tempdir().unwrap();
        let path = config(dir.path());
        let mut flags = Flags {
            config: Some(path.clone()),
            ..Flags::default()
        };
        let mut env = env();
        assert_eq!(
            outbox(&flags, &env),
            PathBuf::from("/outbox/a"),
            "default profile"
        );
        env.profile = Some("b".into());
        assert_eq!(
            outbox(&flags, &env),
            PathBuf::from("/outbox/b"),
            "$ENVOI_PROFILE"
        );
        flags.profile = Some("c".into());
        assert_eq!(
            outbox(&flags, &env),
            PathBuf::from("/platform/outbox"),
            "no key"
        );
        env.outbox_dir = Some("/env/outbox".into());
        assert_eq!(outbox(&flags, &env), PathBuf::from("/env/outbox"));
        flags.outbox_dir = Some("/flag/outbox".into());
        assert_eq!(outbox(&flags, &env), PathBuf::from("/flag/outbox"));
    }

    #[test]
    fn config_flag_then_variable() {
        let dir = tempfile::tempdir().unwrap();
        let path = config(dir.path());
        let env = Env {
            config: Some(path.display().to_string()),
            ..env()
        };
        let resolved = resolve(&Flags::default(), &env).unwrap();
        let connection = resolved.connection.unwrap();
        assert_eq!(connection.name, "a");
        assert_eq!(connection.route.config.as_deref(), Some(path.as_path()));
        let flags = Flags {
            config: Some(dir.path().join("missing.toml")),
            ..Flags::default()
        };
        let err = resolve(&flags, &env).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "a named file must exist");
    }

    #[test]
    fn url_and_profile_from_any_source_conflict() {
        let url = || Some("smtp://mail.example".to_owned());
        let from_flags = Flags {
            smtp_url: url(),
            profile: Some("a".into()),
            ..Flags::default()
        };
        let err = resolve(&from_flags, &env()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Usage);
        let mixed = Env {
            profile: Some("a".into()),
            ..env()
        };
        let flags = Flags {
            smtp_url: url(),
            ..Flags::default()
        };
        assert_eq!(
            resolve(&flags, &mixed).unwrap_err().kind(),
            ErrorKind::Usage
        );
        let only_url = Env {
            smtp_url: url(),
            ..env()
        };
        let resolved = resolve(&Flags::default(), &only_url).unwrap();
        assert_eq!(resolved.connection.unwrap().name, "--smtp-url");
    }

    #[test]
    fn idempotency_key_flag_beats_variable() {
        let env = Env {
            idempotency_key: Some("from-env".into()),
            ..env()
        };
        let resolved = resolve(&Flags::default(), &env).unwrap();
        assert!(resolved.connection.is_none(), "no config file anywhere");
        assert_eq!(resolved.idempotency_key.as_deref(), Some("from-env"));
        let flags = Flags {
            idempotency_key: Some("from-flag".into()),
            ..Flags::default()
        };
        assert_eq!(
            resolve(&flags, &env).unwrap().idempotency_key.as_deref(),
            Some("from-flag")
        );
    }

    #[test]
    fn a_platform_config_file_is_optional_a_named_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let env = Env {
            platform_config: Some(dir.path().join("absent.toml")),
            ..env()
        };
        assert!(
            resolve(&Flags::default(), &env)
                .unwrap()
                .connection
                .is_none()
        );
        let env = Env {
            config: Some(dir.path().join("absent.toml").display().to_string()),
            ..env
        };
        let err = resolve(&Flags::default(), &env).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
    }
}
