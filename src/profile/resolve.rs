//! The one place where flags, `ENVOI_*` variables, the profile and platform defaults
//! meet (fd's `construct_config`): `send` asks [`resolve`], the outbox commands
//! [`resolve_outbox`], and both then see only the plain [`Resolved`] answer.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::profile::config;
use crate::profile::config::ConfigSource;
use crate::profile::env::{Env, Flags, Origin};
use crate::profile::log::{LogDest, LogSettings};
use crate::profile::password::PasswordSource;
use crate::profile::policy::RecipientPolicy;
use crate::profile::route::{Connection, Route};

/// The flag's value, else the variable's, with where it came from.
fn flag_or_variable<T: Clone>(
    flag: (&Option<T>, &'static str),
    variable: (&Option<T>, &'static str),
) -> Option<(T, Origin)> {
    let from_flag = flag.0.clone().map(|v| (v, Origin::Flag(flag.1)));
    from_flag.or_else(|| {
        variable
            .0
            .clone()
            .map(|v| (v, Origin::Variable(variable.1)))
    })
}

/// Where to send and where to keep state, decided once.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The connection: `--smtp-url`/`$ENVOI_SMTP_URL`, else the profile of the config
    /// file. `None` when there is no config file and nothing was named.
    pub connection: Option<Connection>,
    /// What chose the connection: the URL's flag or variable, the profile name's flag or
    /// variable, or the file's `default` key ([`Origin::File`]).
    pub connection_origin: Origin,
    /// What chose the outbox directory.
    pub outbox_dir_origin: Origin,
    /// `--idempotency-key`, else `$ENVOI_IDEMPOTENCY_KEY`.
    pub idempotency_key: Option<String>,
    /// `--log`, else `$ENVOI_LOG`: where the delivery log goes, over every profile's
    /// `log` key.
    pub log: Option<LogDest>,
    /// `--ledger`, else `$ENVOI_LEDGER`, else the profile's (or the file's) `ledger`:
    /// where idempotency keys are kept instead of the outbox folder, and what set it.
    pub ledger: Option<(String, Origin)>,
    /// Where the ledger's password comes from when the file's `ledger` is the one used
    /// and names a source beside it; else `$PGPASSWORD`.
    pub ledger_password: Option<PasswordSource>,
    /// The recipient policy every message through the connection is under: the system
    /// file's `[policy]` with that of every profile the message may go through.
    pub policy: RecipientPolicy,
    outbox_dir: Option<PathBuf>,
    config_flag: Option<PathBuf>,
    env: Env,
}

/// Applies the documented precedence (README, "Flags"): a flag, else its variable, else
/// the profile's key, else the platform default. Naming a URL and a profile at once, by
/// flag or variable, is a usage error.
pub fn resolve(flags: &Flags, env: &Env) -> Result<Resolved> {
    let smtp_url = flag_or_variable(
        (&flags.smtp_url, "--smtp-url"),
        (&env.smtp_url, "ENVOI_SMTP_URL"),
    );
    let profile = flag_or_variable(
        (&flags.profile, "--profile"),
        (&env.profile, "ENVOI_PROFILE"),
    );
    if smtp_url.is_some() && profile.is_some() {
        return Err(Error::usage(
            "--profile and --smtp-url (or $ENVOI_SMTP_URL) both name a connection; give one",
        ));
    }
    let connection_origin = smtp_url
        .as_ref()
        .or(profile.as_ref())
        .map_or(Origin::File, |(_, origin)| *origin);
    let route = Route {
        config: flags.config.clone(),
        profile: profile.map(|(name, _)| name),
        smtp_url: smtp_url.map(|(url, _)| url),
    };
    let connection = route.open(env)?;
    let (outbox_dir, outbox_dir_origin) = match flag_or_variable(
        (&flags.outbox_dir, "--outbox-dir"),
        (&env.outbox_dir, "ENVOI_OUTBOX_DIR"),
    ) {
        Some((dir, origin)) => (Some(dir), origin),
        None => match connection
            .as_ref()
            .and_then(|c| c.profile.outbox_dir.clone())
        {
            Some(dir) => (Some(dir), Origin::File),
            None => (env.platform_outbox.clone(), Origin::Default),
        },
    };
    let file_ledger = connection.as_ref().and_then(|c| c.profile.ledger.clone());
    let (ledger, ledger_password) =
        match flag_or_variable((&flags.ledger, "--ledger"), (&env.ledger, "ENVOI_LEDGER")) {
            Some(given) => (Some(given), None),
            None => match file_ledger {
                Some(keys) => (Some((keys.url, Origin::File)), keys.password),
                None => (None, None),
            },
        };
    let by_url = connection
        .as_ref()
        .is_some_and(|c| c.route.smtp_url.is_some());
    let mut policy = system_policy(flags, env, by_url)?;
    for (_, profile) in connection.iter().flat_map(Connection::profiles) {
        policy = policy.within(profile.policy.clone());
    }
    Ok(Resolved {
        policy,
        connection_origin,
        outbox_dir_origin,
        idempotency_key: flags
            .idempotency_key
            .clone()
            .or_else(|| env.idempotency_key.clone()),
        log: log_flag(flags, env)?,
        ledger,
        ledger_password,
        connection,
        outbox_dir,
        config_flag: flags.config.clone(),
        env: env.clone(),
    })
}

/// For `envoi outbox list|flush|drop`: finds the outbox exactly where `send` puts it,
/// reading only what that needs. A URL (`$ENVOI_SMTP_URL`) means no profile, as for
/// `send`; otherwise the named (else default) profile's `outbox_dir` counts, and only
/// that key of it is read, so a profile that could not send (no password, say) does not
/// stop a look at the queue. A config file that cannot be read, or a named profile that
/// does not exist, is 78: the outbox it names cannot be told.
pub fn resolve_outbox(flags: &Flags, env: &Env) -> Result<Resolved> {
    let profile = flags.profile.clone().or_else(|| env.profile.clone());
    let from_profile = || -> Result<Option<PathBuf>> {
        if env.smtp_url.is_some() && profile.is_none() {
            return Ok(None);
        }
        let located = config::locate(flags.config.as_deref(), env);
        let Some((path, source)) = located else {
            return Ok(None);
        };
        config::load_located(&path, source, env)?.outbox_dir_of(profile.as_deref())
    };
    let (outbox_dir, outbox_dir_origin) = match flag_or_variable(
        (&flags.outbox_dir, "--outbox-dir"),
        (&env.outbox_dir, "ENVOI_OUTBOX_DIR"),
    ) {
        Some((dir, origin)) => (Some(dir), origin),
        None => match from_profile()? {
            Some(dir) => (Some(dir), Origin::File),
            None => (env.platform_outbox.clone(), Origin::Default),
        },
    };
    Ok(Resolved {
        connection: None,
        connection_origin: Origin::Default,
        outbox_dir_origin,
        idempotency_key: None,
        log: log_flag(flags, env)?,
        ledger: None,
        ledger_password: None,
        // A flush sends entries through their own routes, each checked again under its
        // profiles' policies and this one (an entry may predate a rule).
        policy: system_policy(flags, env, false)?,
        outbox_dir,
        config_flag: flags.config.clone(),
        env: env.clone(),
    })
}

/// The system file's top-level `[policy]`, which applies whichever file (or URL:
/// `by_url`) the run uses: envoi reads one config file, so a user's own would otherwise
/// never meet it. Nothing when the system file is the one in use (its `[policy]` is already every
/// profile's), is missing, or is closed to this user (it holds the relay's secret; the
/// spool's flush service applies it then). A system file that is there but broken is 78:
/// a policy must not be skipped because it could not be read.
fn system_policy(flags: &Flags, env: &Env, by_url: bool) -> Result<RecipientPolicy> {
    let Some(system) = env.system_config.as_deref() else {
        return Ok(RecipientPolicy::default());
    };
    let same = |path: &Path| match (std::fs::canonicalize(path), std::fs::canonicalize(system)) {
        (Ok(a), Ok(b)) => a == b,
        _ => path == system,
    };
    // A URL reads no file at all: the system's policy is then the only one.
    match config::locate(flags.config.as_deref(), env) {
        _ if by_url => {}
        Some((_, ConfigSource::System)) => return Ok(RecipientPolicy::default()),
        Some((path, _)) if same(&path) => return Ok(RecipientPolicy::default()),
        _ => {}
    }
    match std::fs::File::open(system) {
        Ok(_) => {}
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied
            ) =>
        {
            return Ok(RecipientPolicy::default());
        }
        Err(e) => {
            return Err(Error::config(format!(
                "cannot read the system config file {} for its [policy]: {e}",
                system.display()
            )));
        }
    }
    config::load(system, false)?.system_policy()
}

/// `--log`, else `$ENVOI_LOG`, checked (64 naming which).
fn log_flag(flags: &Flags, env: &Env) -> Result<Option<LogDest>> {
    flag_or_variable((&flags.log, "--log"), (&env.log, "ENVOI_LOG"))
        .map(|(value, origin)| {
            let what = match origin {
                Origin::Variable(name) => format!("${name}"),
                Origin::Flag(name) => name.to_owned(),
                Origin::File | Origin::Default => "--log".to_owned(),
            };
            LogDest::parse(&what, &value, true).map_err(Error::usage)
        })
        .transpose()
}

impl Resolved {
    /// Where the delivery log of a message sent through `profile` goes: `--log` (or
    /// `$ENVOI_LOG`) over the profile's `log` key, with the profile's facility. No
    /// profile (the connection could not be opened): the flag's alone.
    pub fn log_for(&self, profile: Option<&crate::profile::Profile>) -> LogSettings {
        let keys = profile.map(|p| p.log.clone()).unwrap_or_default();
        LogSettings {
            dest: self.log.clone().or(keys.dest),
            facility: keys.facility,
        }
    }

    /// The connection to send through, or the one "no connection" error every command
    /// gives (78: nothing to send through is a configuration matter, never retried).
    pub fn connection(&self) -> Result<&Connection> {
        self.connection.as_ref().ok_or_else(|| {
            let file = match config::locate(self.config_flag.as_deref(), &self.env) {
                Some((path, _)) if path.exists() => {
                    format!("{} has no `default` profile", path.display())
                }
                Some((path, source)) if source.is_explicit() => {
                    format!("{} does not exist", path.display())
                }
                _ => config::looked_for(&self.env),
            };
            Error::config(format!(
                "no connection: {file}; give --profile or --smtp-url (or $ENVOI_PROFILE or \
                 $ENVOI_SMTP_URL), or set `default` in the config file (`envoi config init` \
                 writes a starter)"
            ))
        })
    }

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

    /// The outbox commands read only `outbox_dir` of the profile: one that could not
    /// send, or a URL beside it, does not stop them; a profile that does not exist does.
    #[test]
    fn outbox_lookup_reads_only_the_outbox_dir() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(
            &path,
            "default = \"a\"\n[profiles.a]\nusername = \"u\"\noutbox_dir = \"/outbox/a\"\n",
        )
        .unwrap();
        let flags = Flags {
            config: Some(path),
            ..Flags::default()
        };
        let found =
            |env: &Env| resolve_outbox(&flags, env).map(|r| r.outbox_dir().unwrap().to_path_buf());
        assert_eq!(
            found(&env()).unwrap(),
            PathBuf::from("/outbox/a"),
            "no host, no password"
        );
        let url = Env {
            smtp_url: Some("smtp://h".into()),
            ..env()
        };
        assert_eq!(
            found(&url).unwrap(),
            PathBuf::from("/platform/outbox"),
            "as send --smtp-url"
        );
        let both = Env {
            profile: Some("a".into()),
            ..url
        };
        assert_eq!(found(&both).unwrap(), PathBuf::from("/outbox/a"));
        let missing = Env {
            profile: Some("nope".into()),
            ..env()
        };
        assert_eq!(found(&missing).unwrap_err().kind(), ErrorKind::Config);
    }

    #[test]
    fn config_flag_then_variable() {
        let dir = tempfile::tempdir().unwrap();
        let path = config(dir.path());
        let env = Env {
            config: Some(path.clone()),
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
            config: Some(dir.path().join("absent.toml")),
            ..env
        };
        let err = resolve(&Flags::default(), &env).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
    }
}
