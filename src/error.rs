//! The one error type of envoi and the exit codes it maps to.
//!
//! Exit codes are public API: scripts branch on them. Each [`ErrorKind`] owns its
//! sysexits.h code, the connector's HTTP status for that outcome and a stable
//! machine-readable name (used by `--json`). This file is the one source of the table:
//! `--help` is written from [`ErrorKind::ALL`], and a unit test checks the README's
//! table against it.

use std::fmt;

/// What went wrong, in the terms a caller needs to decide what to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad flags or a missing required value (EX_USAGE).
    Usage,
    /// A value that cannot be used: bad address, bad base64, CR/LF/NUL in a header (EX_DATAERR).
    InvalidData,
    /// An input file is missing or unreadable (EX_NOINPUT).
    NoInput,
    /// The server refused one or more recipients permanently (EX_NOUSER).
    RecipientRefused,
    /// The server failed permanently (5xx) (EX_UNAVAILABLE).
    Unavailable,
    /// A bug in envoi (EX_SOFTWARE).
    Internal,
    /// Try again later: 4xx, connection refused, timeout, TLS not offered (EX_TEMPFAIL).
    Temporary,
    /// The connection broke after the whole message was sent and before the server's
    /// answer: it may or may not have been delivered (EX_TEMPFAIL, never retried blindly).
    OutcomeUnknown,
    /// The server refused the credentials (EX_NOPERM).
    AuthRefused,
    /// The server's certificate is not trusted (EX_NOPERM).
    Certificate,
    /// The configuration or profile is wrong (EX_CONFIG).
    Config,
}

impl ErrorKind {
    /// Every kind, in the order of the README's table.
    pub const ALL: [ErrorKind; 11] = [
        ErrorKind::Usage,
        ErrorKind::InvalidData,
        ErrorKind::NoInput,
        ErrorKind::RecipientRefused,
        ErrorKind::Unavailable,
        ErrorKind::Internal,
        ErrorKind::Temporary,
        ErrorKind::OutcomeUnknown,
        ErrorKind::AuthRefused,
        ErrorKind::Certificate,
        ErrorKind::Config,
    ];

    /// The process exit code (sysexits.h).
    pub fn exit_code(self) -> u8 {
        match self {
            ErrorKind::Usage => 64,
            ErrorKind::InvalidData => 65,
            ErrorKind::NoInput => 66,
            ErrorKind::RecipientRefused => 67,
            ErrorKind::Unavailable => 69,
            ErrorKind::Internal => 70,
            ErrorKind::Temporary | ErrorKind::OutcomeUnknown => 75,
            ErrorKind::AuthRefused | ErrorKind::Certificate => 77,
            ErrorKind::Config => 78,
        }
    }

    /// The HTTP status the workflow connector would have answered for this outcome.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::Usage | ErrorKind::InvalidData | ErrorKind::Config => 400,
            ErrorKind::AuthRefused => 401,
            ErrorKind::Certificate => 403,
            ErrorKind::NoInput | ErrorKind::RecipientRefused => 404,
            ErrorKind::Unavailable
            | ErrorKind::Internal
            | ErrorKind::Temporary
            | ErrorKind::OutcomeUnknown => 500,
        }
    }

    /// A few words for `--help`.
    pub fn summary(self) -> &'static str {
        match self {
            ErrorKind::Usage => "usage error",
            ErrorKind::InvalidData => "invalid data",
            ErrorKind::NoInput => "input file missing",
            ErrorKind::RecipientRefused => "recipient refused",
            ErrorKind::Unavailable => "server failed permanently",
            ErrorKind::Internal => "internal error",
            ErrorKind::Temporary => "temporary failure, retry later",
            ErrorKind::OutcomeUnknown => "outcome unknown: check before retrying",
            ErrorKind::AuthRefused => "login refused",
            ErrorKind::Certificate => "certificate not trusted",
            ErrorKind::Config => "configuration error",
        }
    }

    /// A stable name for `--json` output.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Usage => "usage",
            ErrorKind::InvalidData => "invalid_data",
            ErrorKind::NoInput => "no_input",
            ErrorKind::RecipientRefused => "recipient_refused",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Internal => "internal",
            ErrorKind::Temporary => "temporary",
            ErrorKind::OutcomeUnknown => "outcome_unknown",
            ErrorKind::AuthRefused => "auth_refused",
            ErrorKind::Certificate => "certificate",
            ErrorKind::Config => "config",
        }
    }
}

/// An error with its kind and a message that names the flag, key or value at fault.
///
/// Messages never contain a password: nothing that builds an `Error` is given one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

impl Error {
    /// An error of `kind` with a human message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
        }
    }

    /// Shorthand for [`ErrorKind::Usage`].
    pub fn usage(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Usage, message)
    }

    /// Shorthand for [`ErrorKind::InvalidData`].
    pub fn invalid(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::InvalidData, message)
    }

    /// Shorthand for [`ErrorKind::Config`].
    pub fn config(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Config, message)
    }

    /// The kind, which decides the exit code.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The human message (without the `envoi: error:` prefix).
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// Result with envoi's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_the_documented_ones() {
        let table: Vec<(u8, u16, &str)> = ErrorKind::ALL
            .iter()
            .map(|k| (k.exit_code(), k.http_status(), k.name()))
            .collect();
        assert_eq!(
            table,
            vec![
                (64, 400, "usage"),
                (65, 400, "invalid_data"),
                (66, 404, "no_input"),
                (67, 404, "recipient_refused"),
                (69, 500, "unavailable"),
                (70, 500, "internal"),
                (75, 500, "temporary"),
                (75, 500, "outcome_unknown"),
                (77, 401, "auth_refused"),
                (77, 403, "certificate"),
                (78, 400, "config"),
            ]
        );
    }

    /// The README's "Exit codes" table lists each kind's code with its connector
    /// status, and nothing else; its `--json` paragraph names every kind.
    #[test]
    fn readme_exit_code_table_matches_the_kinds() {
        let readme = include_str!("../README.md");
        let section = readme
            .split("## Exit codes")
            .nth(1)
            .and_then(|rest| rest.split("\n## ").next())
            .expect("README has an Exit codes section");
        let rows: Vec<(u8, String)> = section
            .lines()
            .filter_map(|line| {
                let cells: Vec<&str> = line.split('|').map(str::trim).collect();
                let code = cells.get(1)?.parse().ok()?;
                Some((code, cells.get(3)?.to_string()))
            })
            .collect();
        assert_eq!(
            rows.first().map(|r| r.0),
            Some(0),
            "the table starts with 0"
        );
        for kind in ErrorKind::ALL {
            let status = kind.http_status().to_string();
            assert!(
                rows.iter()
                    .any(|(code, http)| *code == kind.exit_code() && http.contains(&status)),
                "README lacks a row for {} ({} / {status})",
                kind.name(),
                kind.exit_code()
            );
            assert!(
                readme.contains(&format!("`{}`", kind.name())),
                "{}",
                kind.name()
            );
        }
        for (code, _) in &rows[1..] {
            assert!(
                ErrorKind::ALL.iter().any(|k| k.exit_code() == *code),
                "README lists {code}, which no kind has"
            );
        }
    }
}
