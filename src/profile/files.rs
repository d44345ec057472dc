//! The config file itself, for `envoi config path|init` and `envoi profiles`: which file
//! is used and why, a commented starter file, and what each profile connects to. No
//! secret is ever part of an answer.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::profile::config::{self, ConfigFile, ConfigSource, ProfileSummary};
use crate::profile::env::{Env, Flags};

/// The config file envoi would read, and why; `None` when the platform has no config
/// directory and none was named.
pub fn config_path(flags: &Flags, env: &Env) -> Option<(PathBuf, ConfigSource)> {
    config::locate(flags.config.as_deref(), env)
}

/// The system-wide config file, when it is the file envoi would read (the user has none
/// of their own and named none) and this user may not open it: root keeps the relay's
/// secret there for the spool's flush service, and sendmail mode drops into the spool.
pub fn closed_system_config(flags: &Flags, env: &Env) -> Option<PathBuf> {
    match config_path(flags, env)? {
        (path, ConfigSource::System) => match std::fs::File::open(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Some(path),
            _ => None,
        },
        _ => None,
    }
}

/// The commented example of every key, as shipped (`config.example.toml`).
const STARTER: &str = include_str!("../../config.example.toml");

/// Writes the commented starter file at `path`, private (0600), making its folder; a
/// file that exists is never overwritten (78).
pub fn write_starter(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::durable::create_private_dir(dir, true)
            .map_err(|e| Error::config(format!("cannot create {}: {e}", dir.display())))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => Error::config(format!(
            "{} exists; envoi never overwrites a config file",
            path.display()
        )),
        _ => Error::config(format!("cannot create {}: {e}", path.display())),
    })?;
    file.write_all(STARTER.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::config(format!("cannot write {}: {e}", path.display())))
}

/// Every profile of the file at `path` (which must exist), in name order.
pub fn list_profiles(path: &Path) -> Result<Vec<ProfileSummary>> {
    let file: ConfigFile = config::load(path, true)?;
    Ok(file.summaries())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_starter_is_written_once_privately_and_parses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/config.toml");
        write_starter(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let err = write_starter(&path).unwrap_err();
        assert!(err.message().contains("never overwrites"), "{err}");
        let names: Vec<String> = list_profiles(&path)
            .unwrap()
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(names, ["outbox", "work"]);
        let work = list_profiles(&path).unwrap().remove(1);
        assert_eq!(
            work.target,
            format!("{}:587 (starttls)", crate::profile::route::STARTER_HOST),
            "the placeholder a send recognises"
        );
    }

    #[test]
    fn the_path_says_why() {
        let env = Env {
            config: Some("/env.toml".into()),
            platform_config: Some("/platform.toml".into()),
            ..Env::default()
        };
        let flags = Flags {
            config: Some("/flag.toml".into()),
            ..Flags::default()
        };
        assert_eq!(config_path(&flags, &env).unwrap().1, ConfigSource::Flag);
        assert_eq!(
            config_path(&Flags::default(), &env).unwrap().1,
            ConfigSource::Variable
        );
        let platform = Env {
            config: None,
            ..env
        };
        assert_eq!(
            config_path(&Flags::default(), &platform).unwrap().1,
            ConfigSource::Platform
        );
    }

    /// The user's own file, else the system's, else the user's (where init writes):
    /// the first that exists, never both.
    #[test]
    fn the_system_file_is_read_when_the_user_has_none() {
        let dir = tempfile::tempdir().unwrap();
        let own = dir.path().join("own.toml");
        let system = dir.path().join("system.toml");
        let env = Env {
            platform_config: Some(own.clone()),
            system_config: Some(system.clone()),
            ..Env::default()
        };
        let found = || config_path(&Flags::default(), &env).unwrap();
        assert_eq!(found(), (own.clone(), ConfigSource::Platform), "neither");
        std::fs::write(&system, "").unwrap();
        assert_eq!(found(), (system.clone(), ConfigSource::System));
        std::fs::write(&own, "").unwrap();
        assert_eq!(found(), (own.clone(), ConfigSource::Platform), "both");
        let named = Env {
            config: Some(dir.path().join("named.toml")),
            ..env.clone()
        };
        assert_eq!(
            config_path(&Flags::default(), &named).unwrap().1,
            ConfigSource::Variable
        );
    }
}
