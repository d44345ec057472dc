//! The one outcome vocabulary: what became of a message, in the words `send --json`,
//! the batch result lines and `outbox list --json` all print, and the one rule that
//! turns many outcomes into one exit code.

use serde::{Deserialize, Serialize};

use crate::deliver::Delivery;
use crate::error::ErrorKind;
use crate::outbox::idempotency::FirstStatus;

/// What became of one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The server accepted it for every recipient.
    Sent,
    /// The file transport wrote it.
    Saved,
    /// It waits in the outbox, which owns its retries.
    Queued,
    /// Its idempotency key was seen before: not sent again.
    Duplicate,
    /// Some recipients have it, others were refused.
    Partial,
    /// A temporary failure after the retries: nobody has it.
    Deferred,
    /// The connection broke after it went out: it may have arrived.
    Unknown,
    /// Refused for good (the message or its recipients).
    Refused,
    /// It could not be read or checked: never tried.
    Invalid,
    /// Login, certificate or configuration: every later message would fail alike.
    Failed,
    /// On the suppression list (`suppress = "path"`: a hard bounce, an unsubscribe, or
    /// added by hand): `batch` skipped it and sent nothing. Not a failure (exit 0): the
    /// list did what it is for.
    Suppressed,
    /// Built and checked, not sent (`batch --dry-run`; `send --dry-run` prints the same
    /// word): nothing reached anyone, so `--resume` sends it.
    DryRun,
}

impl Status {
    /// Every status, in the order the README lists them.
    pub const ALL: [Status; 12] = [
        Status::Sent,
        Status::Saved,
        Status::Queued,
        Status::Duplicate,
        Status::Partial,
        Status::Deferred,
        Status::Unknown,
        Status::Refused,
        Status::Invalid,
        Status::Failed,
        Status::Suppressed,
        Status::DryRun,
    ];

    /// The word printed for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Sent => "sent",
            Status::Saved => "saved",
            Status::Queued => "queued",
            Status::Duplicate => "duplicate",
            Status::Partial => "partial",
            Status::Deferred => "deferred",
            Status::Unknown => "unknown",
            Status::Refused => "refused",
            Status::Invalid => "invalid",
            Status::Failed => "failed",
            Status::Suppressed => "suppressed",
            Status::DryRun => "dry_run",
        }
    }

    /// A delivery that ended well: sent (partial when some recipients were refused for
    /// good, with `allow_partial`) or saved.
    pub fn of_delivery(delivery: &Delivery) -> Status {
        match delivery {
            Delivery::Sent { report, .. } if report.refused.is_empty() => Status::Sent,
            Delivery::Sent { .. } => Status::Partial,
            Delivery::Saved { .. } => Status::Saved,
        }
    }

    /// The status of `word`, if it is one.
    pub fn named(word: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.as_str() == word)
    }

    /// A message tried and failed with `kind`; `reached_some` when some recipients
    /// have it all the same.
    pub fn of_failure(kind: ErrorKind, reached_some: bool) -> Status {
        match kind {
            _ if reached_some => Status::Partial,
            ErrorKind::RecipientRefused | ErrorKind::Unavailable => Status::Refused,
            ErrorKind::Temporary => Status::Deferred,
            ErrorKind::OutcomeUnknown => Status::Unknown,
            ErrorKind::Usage | ErrorKind::InvalidData | ErrorKind::NoInput => Status::Invalid,
            ErrorKind::Internal
            | ErrorKind::AuthRefused
            | ErrorKind::Certificate
            | ErrorKind::Config => Status::Failed,
        }
    }

    /// Whether the message may have reached someone (or is owned by the outbox): a
    /// second run (`--resume`) must not send it again.
    pub fn may_have_reached(self) -> bool {
        matches!(
            self,
            Status::Sent
                | Status::Saved
                | Status::Queued
                | Status::Duplicate
                | Status::Partial
                | Status::Unknown
        )
    }
}

/// How the first send with an idempotency key ended, in the one vocabulary (the ledger
/// keeps its own three words on disk, which are these).
impl From<FirstStatus> for Status {
    fn from(first: FirstStatus) -> Status {
        match first {
            FirstStatus::Sent => Status::Sent,
            FirstStatus::Saved => Status::Saved,
            FirstStatus::Queued => Status::Queued,
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The exit code of many messages (a batch): 77 or 78 when one failed on login,
/// certificate or configuration; else 75 when one is deferred or of unknown outcome;
/// else the most serious of the others, 69 over 67 over 65/66 over 64; 0 when all went
/// well.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExitRule {
    /// The most serious failure other than a temporary one.
    worst: Option<ErrorKind>,
    /// A message is deferred or of unknown outcome.
    pending: bool,
}

impl ExitRule {
    /// Counts one message that failed with `kind` (`None`: it went well).
    pub fn add(&mut self, kind: Option<ErrorKind>) {
        let Some(kind) = kind else { return };
        if matches!(kind, ErrorKind::Temporary | ErrorKind::OutcomeUnknown) {
            self.pending = true;
        } else if self.worst.is_none_or(|w| severity(kind) > severity(w)) {
            self.worst = Some(kind);
        }
    }

    /// The exit code of everything counted.
    pub fn exit_code(&self) -> u8 {
        match self.worst {
            Some(kind) if severity(kind) >= severity(ErrorKind::AuthRefused) => kind.exit_code(),
            _ if self.pending => ErrorKind::Temporary.exit_code(),
            Some(kind) => kind.exit_code(),
            None => 0,
        }
    }
}

/// How serious a failure is for many messages: the configuration over the login over
/// a bug over a server that refuses messages over refused recipients over a bad record.
fn severity(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::Usage => 1,
        ErrorKind::InvalidData | ErrorKind::NoInput => 2,
        ErrorKind::RecipientRefused => 3,
        ErrorKind::Unavailable => 4,
        ErrorKind::Internal | ErrorKind::Temporary | ErrorKind::OutcomeUnknown => 5,
        ErrorKind::AuthRefused | ErrorKind::Certificate => 6,
        ErrorKind::Config => 7,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_status_serializes_as_its_word() {
        for status in Status::ALL {
            let json = serde_json::to_string(&status).unwrap();
            assert_eq!(json, format!("\"{status}\""));
            assert_eq!(Status::named(status.as_str()), Some(status));
        }
    }

    #[test]
    fn the_exit_rule() {
        let code = |kinds: &[Option<ErrorKind>]| {
            let mut rule = ExitRule::default();
            kinds.iter().for_each(|k| rule.add(*k));
            rule.exit_code()
        };
        use ErrorKind::*;
        assert_eq!(code(&[]), 0);
        assert_eq!(code(&[None, None]), 0);
        assert_eq!(code(&[Some(Usage), Some(InvalidData)]), 65);
        assert_eq!(code(&[Some(RecipientRefused), Some(Unavailable)]), 69);
        assert_eq!(code(&[Some(Unavailable), Some(Temporary)]), 75);
        assert_eq!(code(&[Some(OutcomeUnknown), Some(Usage)]), 75);
        assert_eq!(code(&[Some(Temporary), Some(AuthRefused)]), 77);
        assert_eq!(code(&[Some(Certificate), Some(Config)]), 78);
    }
}
