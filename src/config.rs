//! Connections as profiles in a TOML file, and the `--smtp-url` shortcut.
//!
//! The file is `--config PATH`, else `$ENVOI_CONFIG`, else `envoi/config.toml` in the
//! platform config directory (`~/.config` on Linux and macOS). `config.example.toml`
//! documents every key. A file that cannot be read or parsed is an error (exit 78):
//! a mail sender must not silently fall back to other settings.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::check::no_line_breaks;
use crate::error::{Error, Result};
use crate::password::{Password, PasswordSource};

/// The whole config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// The profile used when `--profile` is not given.
    pub default: Option<String>,
    /// Named connections.
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
}

/// How a profile delivers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    /// Over SMTP (the default).
    #[default]
    Smtp,
    /// Write `.eml` files into `dir` instead of sending.
    File,
}

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// Implicit TLS from the first byte (port 465).
    Tls,
    /// Plain connection upgraded with STARTTLS, which is required: never downgraded.
    #[default]
    Starttls,
    /// No TLS at all.
    None,
}

impl Security {
    /// The usual port for this security.
    pub fn default_port(self) -> u16 {
        match self {
            Security::Tls => 465,
            Security::Starttls => 587,
            Security::None => 25,
        }
    }
}

/// One named connection: the connector's server, port, user name, password and TLS.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// `smtp` (default) or `file`.
    #[serde(default)]
    pub transport: TransportKind,
    /// SMTP server host name.
    pub host: Option<String>,
    /// SMTP port; defaults from `security`.
    pub port: Option<u16>,
    /// `tls`, `starttls` (default) or `none`.
    #[serde(default)]
    pub security: Security,
    /// User name for AUTH.
    pub username: Option<String>,
    /// Name of an environment variable holding the password.
    pub password_env: Option<String>,
    /// A shell command whose standard output is the password.
    pub password_command: Option<String>,
    /// The password itself (the file must then be private: chmod 600).
    pub password: Option<Password>,
    /// Default sender, used when `--from` is not given.
    pub from: Option<String>,
    /// Seconds allowed for the connection and for each command.
    pub timeout_secs: Option<u64>,
    /// A PEM file with extra trusted root certificates (a private CA).
    pub ca_file: Option<PathBuf>,
    /// The name sent in EHLO (default: this machine's host name).
    pub hello_name: Option<String>,
    /// Allow AUTH on a connection without TLS (off by default).
    #[serde(default)]
    pub allow_plaintext_auth: bool,
    /// Directory for the `file` transport.
    pub dir: Option<PathBuf>,
    /// Queue every send in the outbox first (like `--queue`).
    #[serde(default)]
    pub outbox: bool,
    /// The outbox directory for this profile's sends.
    pub outbox_dir: Option<PathBuf>,
}

/// The outbox directory: `flag` (or `$ENVOI_OUTBOX_DIR`, which clap folds into it), else
/// the profile's `outbox_dir`, else the platform data directory's `envoi/outbox`.
pub fn outbox_dir(flag: Option<&Path>, profile: Option<&Profile>) -> Result<PathBuf> {
    if let Some(dir) = flag.or_else(|| profile.and_then(|p| p.outbox_dir.as_deref())) {
        return Ok(dir.to_path_buf());
    }
    use etcetera::BaseStrategy;
    let base = etcetera::choose_base_strategy().map_err(|e| {
        Error::config(format!(
            "no data directory for the outbox ({e}); give --outbox-dir"
        ))
    })?;
    Ok(base.data_dir().join("envoi").join("outbox"))
}

/// Default for `timeout_secs`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

impl Profile {
    /// The user name and its password source, or `None` when the profile logs in as
    /// nobody. `profile` names the profile in errors.
    pub fn login(&self, profile: &str) -> Result<Option<(String, PasswordSource)>> {
        let sources = [
            self.password_env.clone().map(PasswordSource::Env),
            self.password_command.clone().map(PasswordSource::Command),
            self.password.clone().map(PasswordSource::Inline),
        ];
        let mut given = sources.into_iter().flatten();
        let (first, second) = (given.next(), given.next());
        if second.is_some() {
            return Err(Error::config(format!(
                "profile {profile:?}: give only one of password_env, password_command and password"
            )));
        }
        match (&self.username, first) {
            (None, None) => Ok(None),
            (Some(user), Some(source)) => Ok(Some((user.clone(), source))),
            (Some(_), None) => Err(Error::config(format!(
                "profile {profile:?}: username is set but no password_env, password_command or password"
            ))),
            (None, Some(_)) => Err(Error::config(format!(
                "profile {profile:?}: a password is set but no username"
            ))),
        }
    }

    /// The per-operation timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout_secs
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_TIMEOUT)
    }

    /// Checks the values that end up in SMTP commands.
    pub fn check(&self, profile: &str) -> Result<()> {
        for (key, value) in [
            ("host", &self.host),
            ("username", &self.username),
            ("hello_name", &self.hello_name),
        ] {
            if let Some(v) = value {
                no_line_breaks(&format!("profile {profile:?}: {key}"), v)?;
            }
        }
        if let Some(name) = &self.hello_name
            && (name.is_empty() || name.contains(char::is_whitespace))
        {
            return Err(Error::config(format!(
                "profile {profile:?}: hello_name {name:?} must be one word (a host name)"
            )));
        }
        if self.timeout_secs == Some(0) {
            return Err(Error::config(format!(
                "profile {profile:?}: timeout_secs must be at least 1"
            )));
        }
        match self.transport {
            TransportKind::Smtp if self.host.is_none() => Err(Error::config(format!(
                "profile {profile:?}: host is missing"
            ))),
            TransportKind::File if self.dir.is_none() => Err(Error::config(format!(
                "profile {profile:?}: transport = \"file\" needs dir"
            ))),
            _ => Ok(()),
        }
    }
}

/// Where the config file is: `--config`, else `$ENVOI_CONFIG`, else the platform path.
/// The bool says whether it was named explicitly (then it must exist).
pub fn locate(flag: Option<&Path>, env: Option<&str>) -> Option<(PathBuf, bool)> {
    if let Some(p) = flag {
        return Some((p.to_path_buf(), true));
    }
    if let Some(p) = env.filter(|p| !p.is_empty()) {
        return Some((PathBuf::from(p), true));
    }
    use etcetera::BaseStrategy;
    let base = etcetera::choose_base_strategy().ok()?;
    Some((base.config_dir().join("envoi").join("config.toml"), false))
}

/// Reads and parses the file. A missing file that was not named explicitly is empty.
pub fn load(path: &Path, explicit: bool) -> Result<ConfigFile> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
            return Ok(ConfigFile::default());
        }
        Err(e) => {
            return Err(Error::config(format!(
                "cannot read the config file {}: {e}",
                path.display()
            )));
        }
    };
    // e.message() rather than e's Display, which quotes the offending line (maybe a password).
    let file: ConfigFile = toml::from_str(&text).map_err(|e| {
        let line = e
            .span()
            .map(|span| format!(" (line {})", text[..span.start].matches('\n').count() + 1))
            .unwrap_or_default();
        Error::config(format!(
            "the config file {} is not valid{line}: {}",
            path.display(),
            e.message()
        ))
    })?;
    if file.profiles.values().any(|p| p.password.is_some()) {
        check_private(path)?;
    }
    Ok(file)
}

/// A file that holds a password must not be readable by group or others (msmtp's rule).
#[cfg(unix)]
fn check_private(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map_err(|e| Error::config(format!("cannot stat {}: {e}", path.display())))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(Error::config(format!(
            "{} holds a password but can be read by others (mode {:o}); run: chmod 600 {}",
            path.display(),
            mode & 0o777,
            path.display()
        )));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path) -> Result<()> {
    Ok(())
}

impl ConfigFile {
    /// The profile called `name`, else the `default` one. `None` when neither exists
    /// and no name was asked for.
    pub fn select(&self, name: Option<&str>) -> Result<Option<(String, Profile)>> {
        let Some(name) = name.or(self.default.as_deref()) else {
            return Ok(None);
        };
        match self.profiles.get(name) {
            Some(p) => {
                p.check(name)?;
                Ok(Some((name.to_owned(), p.clone())))
            }
            None => {
                let known: Vec<&str> = self.profiles.keys().map(String::as_str).collect();
                Err(Error::config(format!(
                    "no profile named {name:?} (known: {})",
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                )))
            }
        }
    }
}

/// Builds a profile from `smtps://user@host:465`, `smtp://host` (STARTTLS) or
/// `smtp://host:25?security=none`. The password comes from `$ENVOI_PASSWORD`; a password
/// inside the URL is refused, since command lines are visible to other users.
pub fn profile_from_url(raw: &str) -> Result<Profile> {
    // The raw URL is never echoed: it might hold a password.
    let bad = |why: &str| Error::config(format!("--smtp-url: {why}"));
    let userinfo = raw
        .split_once("://")
        .and_then(|(_, rest)| rest.split(['/', '?', '#']).next())
        .and_then(|authority| authority.rsplit_once('@'))
        .map(|(userinfo, _)| userinfo);
    if userinfo.is_some_and(|u| u.contains(':')) {
        return Err(bad(
            "a password in the URL is refused (command lines are visible to other users); \
             put it in ENVOI_PASSWORD",
        ));
    }
    if raw.chars().any(char::is_control) {
        return Err(bad("the URL contains a control character (CR, LF, NUL…)"));
    }
    let url = url::Url::parse(raw).map_err(|e| bad(&format!("not a valid URL ({e})")))?;
    let mut security = match url.scheme() {
        "smtps" => Security::Tls,
        "smtp" => Security::Starttls,
        other => return Err(bad(&format!("scheme {other:?} is not smtp or smtps"))),
    };
    for (key, value) in url.query_pairs() {
        match (key.as_ref(), value.as_ref()) {
            ("security", "tls") => security = Security::Tls,
            ("security", "starttls") => security = Security::Starttls,
            ("security", "none") => security = Security::None,
            _ => {
                return Err(bad(&format!(
                    "unknown parameter {key}={value} (known: security=tls|starttls|none)"
                )));
            }
        }
    }
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| bad("no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let username = match url.username() {
        "" => None,
        user => Some(
            percent_encoding::percent_decode_str(user)
                .decode_utf8()
                .map_err(|_| bad("the user name is not valid UTF-8"))?
                .into_owned(),
        ),
    };
    Ok(Profile {
        password_env: username.as_ref().map(|_| "ENVOI_PASSWORD".to_owned()),
        host: Some(host),
        port: url.port(),
        security,
        username,
        ..Profile::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn parses_the_documented_example() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.example.toml"))
                .unwrap();
        let file: ConfigFile = toml::from_str(&text).unwrap();
        let (name, work) = file.select(None).unwrap().unwrap();
        assert_eq!(name, "work");
        assert_eq!(work.security, Security::Starttls);
        assert!(matches!(
            work.login("work").unwrap(),
            Some((_, PasswordSource::Env(_)))
        ));
        let (_, outbox) = file.select(Some("outbox")).unwrap().unwrap();
        assert_eq!(outbox.transport, TransportKind::File);
    }

    #[test]
    fn unknown_keys_and_profiles_are_config_errors() {
        let err = toml::from_str::<ConfigFile>("[profiles.a]\nhots = \"x\"\n").unwrap_err();
        assert!(err.message().contains("hots"), "{err}");
        let file: ConfigFile = toml::from_str("[profiles.a]\nhost = \"x\"\n").unwrap();
        let err = file.select(Some("b")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.message().contains("\"b\""), "{err}");
    }

    #[test]
    fn a_password_of_the_wrong_type_is_not_echoed() {
        let text = "[profiles.a]\nhost = \"h\"\nusername = \"u\"\npassword = 31415926535\n";
        let err = toml::from_str::<ConfigFile>(text).unwrap_err();
        assert!(!err.message().contains("31415926535"), "{}", err.message());
        let file: ConfigFile = toml::from_str("[profiles.a]\npassword = \"s3cr3t\"\n").unwrap();
        assert!(!format!("{file:?}").contains("s3cr3t"));
    }

    #[test]
    fn password_rules() {
        let p = Profile {
            username: Some("u".into()),
            ..Profile::default()
        };
        assert!(p.login("p").is_err());
        let p = Profile {
            username: Some("u".into()),
            password_env: Some("X".into()),
            password: Some(Password::new("y".into())),
            ..Profile::default()
        };
        assert!(p.login("p").is_err());
    }

    #[test]
    fn smtp_urls() {
        let p = profile_from_url("smtps://me%40x.com@mail.example.com").unwrap();
        assert_eq!(p.security, Security::Tls);
        assert_eq!(p.username.as_deref(), Some("me@x.com"));
        assert_eq!(p.host.as_deref(), Some("mail.example.com"));
        assert_eq!(p.port, None);
        let p = profile_from_url("smtp://127.0.0.1:2525?security=none").unwrap();
        assert_eq!((p.security, p.port), (Security::None, Some(2525)));
        assert!(p.username.is_none());
        assert_eq!(
            profile_from_url("smtp://h").unwrap().security,
            Security::Starttls
        );
        for leaky in [
            "smtps://u:secret@h",
            "smtps://u:secret@h:99999",
            "smtp://u:secret@h\n",
        ] {
            let err = profile_from_url(leaky).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Config);
            assert!(!err.message().contains("secret"), "{err}");
        }
        assert!(profile_from_url("smtp://h\r\n").is_err());
        assert!(profile_from_url("http://h").is_err());
        assert!(profile_from_url("smtp://h?tls=none").is_err());
    }
}
