//! Where the delivery log goes (`log`, `log_facility`, `--log`, `$ENVOI_LOG`): the
//! setting, checked. Writing it is the outbox's job (`outbox::log`); this file only
//! says where, so a bad value fails before anything is sent.

use std::path::PathBuf;

use crate::error::{Error, Result};

/// Where one message's log line goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogDest {
    /// Nowhere (`none`: a profile, `--log` or `$ENVOI_LOG` turns a wider setting off).
    Off,
    /// Appended to this file (absolute).
    File(PathBuf),
    /// To the local syslog daemon at `/dev/log`.
    Syslog,
    /// To the systemd journal's native socket, else syslog.
    Journal,
}

impl LogDest {
    /// `value` as `what` (the flag, variable or key) gives it: `syslog`, `journal`,
    /// `none`, or a file path, made absolute against the working directory for a flag
    /// or variable; a config file must give an absolute one (`relative_ok` false), since
    /// whatever runs envoi (cron, a service) has its own working directory.
    pub fn parse(
        what: &str,
        value: &str,
        relative_ok: bool,
    ) -> std::result::Result<LogDest, String> {
        match value {
            "none" => Ok(LogDest::Off),
            "syslog" => Ok(LogDest::Syslog),
            "journal" => Ok(LogDest::Journal),
            "" => Err(format!(
                "{what} is empty: give syslog, journal, none or the path of a file"
            )),
            path if path.chars().any(char::is_control) => Err(format!(
                "{what} {path:?}: a log file path cannot hold control characters"
            )),
            path => {
                let path = PathBuf::from(path);
                if path.is_absolute() {
                    Ok(LogDest::File(path))
                } else if relative_ok {
                    std::path::absolute(&path)
                        .map(LogDest::File)
                        .map_err(|e| format!("{what} {:?}: {e}", path.display()))
                } else {
                    Err(format!(
                        "{what} {:?}: give an absolute path (cron and services run envoi from \
                         another folder), or syslog, journal or none",
                        path.display()
                    ))
                }
            }
        }
    }
}

/// A syslog facility (RFC 5424 §6.2.1), by the name `log_facility` gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facility(u8);

/// The facilities by name, as syslog.conf(5) spells them, with their codes.
const FACILITIES: [(&str, u8); 20] = [
    ("kern", 0),
    ("user", 1),
    ("mail", 2),
    ("daemon", 3),
    ("auth", 4),
    ("syslog", 5),
    ("lpr", 6),
    ("news", 7),
    ("uucp", 8),
    ("cron", 9),
    ("authpriv", 10),
    ("ftp", 11),
    ("local0", 16),
    ("local1", 17),
    ("local2", 18),
    ("local3", 19),
    ("local4", 20),
    ("local5", 21),
    ("local6", 22),
    ("local7", 23),
];

impl Default for Facility {
    /// `mail`, where a mail program's lines belong (msmtp's default too).
    fn default() -> Facility {
        Facility(2)
    }
}

impl Facility {
    /// The facility called `name` (`mail`, `local3`…); the error lists them.
    pub fn named(name: &str) -> std::result::Result<Facility, String> {
        FACILITIES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, code)| Facility(*code))
            .ok_or_else(|| {
                let names: Vec<&str> = FACILITIES.iter().map(|(n, _)| *n).collect();
                format!(
                    "{name:?} is not a syslog facility; give one of {}",
                    names.join(", ")
                )
            })
    }

    /// Its name, as `log_facility` gives it.
    pub fn name(self) -> &'static str {
        FACILITIES
            .iter()
            .find(|(_, code)| *code == self.0)
            .map_or("mail", |(name, _)| name)
    }

    /// Its code, which syslog multiplies by 8 into a priority.
    pub fn code(self) -> u8 {
        self.0
    }
}

/// Where a profile's delivery log goes, and as which facility.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogSettings {
    /// Where; `None` when nothing set it (no log).
    pub dest: Option<LogDest>,
    /// `log_facility` (`mail` when unset).
    pub facility: Facility,
}

impl LogSettings {
    /// The profile's `log` and `log_facility`, else the file's top-level ones (the
    /// profile wins, key by key); 78 naming the key and where it is.
    pub(crate) fn from_keys(
        profile: &str,
        log: (Option<&str>, Option<&str>),
        facility: (Option<&str>, Option<&str>),
    ) -> Result<LogSettings> {
        let located =
            |profile_key: Option<&str>, top: Option<&str>, key: &str| match (profile_key, top) {
                (Some(v), _) => Some((format!("profile {profile:?}: {key}"), v.to_owned())),
                (None, Some(v)) => Some((format!("the top-level key {key}"), v.to_owned())),
                (None, None) => None,
            };
        let dest = located(log.0, log.1, "log")
            .map(|(what, value)| LogDest::parse(&what, &value, false).map_err(Error::config))
            .transpose()?;
        let facility = located(facility.0, facility.1, "log_facility")
            .map(|(what, value)| {
                Facility::named(&value).map_err(|e| Error::config(format!("{what}: {e}")))
            })
            .transpose()?
            .unwrap_or_default();
        Ok(LogSettings { dest, facility })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_their_errors() {
        assert_eq!(LogDest::parse("--log", "syslog", true), Ok(LogDest::Syslog));
        assert_eq!(LogDest::parse("--log", "none", true), Ok(LogDest::Off));
        assert_eq!(
            LogDest::parse("log", "/var/log/envoi.log", false),
            Ok(LogDest::File("/var/log/envoi.log".into()))
        );
        let relative = LogDest::parse("--log", "envoi.log", true).unwrap();
        assert!(matches!(relative, LogDest::File(p) if p.is_absolute()));
        let e = LogDest::parse("profile \"a\": log", "envoi.log", false).unwrap_err();
        assert!(e.contains("absolute path"), "{e}");
        assert!(LogDest::parse("--log", "", true).is_err());
        assert_eq!(Facility::named("local3"), Ok(Facility(19)));
        assert!(Facility::named("mial").unwrap_err().contains("local7"));
    }

    #[test]
    fn the_profile_wins_key_by_key() {
        let s = LogSettings::from_keys("a", (None, Some("syslog")), (Some("local0"), Some("user")))
            .unwrap();
        assert_eq!(s.dest, Some(LogDest::Syslog));
        assert_eq!(s.facility.code(), 16);
        let s = LogSettings::from_keys("a", (Some("none"), Some("syslog")), (None, None)).unwrap();
        assert_eq!(s.dest, Some(LogDest::Off));
        assert_eq!(s.facility, Facility::default());
        let e = LogSettings::from_keys("a", (None, None), (None, Some("bogus"))).unwrap_err();
        assert_eq!(e.kind(), crate::error::ErrorKind::Config);
        assert!(e.message().contains("top-level key log_facility"), "{e}");
    }
}
