//! The one deadline of an operation (a send, a batch record, an outbox entry, a check):
//! how long each step may take within it, and the one wording of "out of time". The
//! socket enforces it on every read and write (`smtp::conn`); these are for the steps
//! around it.

use std::time::{Duration, Instant};

use crate::error::{Error, ErrorKind};

/// `timeout`, or what is left before `deadline` when that is less: how long one step
/// (a command, a password command, a token request) may take.
pub(crate) fn cut_to_deadline(timeout: Duration, deadline: Option<Instant>) -> Duration {
    deadline.map_or(timeout, |d| {
        timeout.min(d.saturating_duration_since(Instant::now()))
    })
}

/// The sooner of two deadlines, either of which may be unset.
pub(crate) fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The one wording of "out of time" before a step starts, for every operation: the
/// deadline is `--timeout` for `send`, `check` and each `batch` record, and 120 s for
/// each entry of an outbox flush.
pub(crate) fn deadline_passed() -> Error {
    Error::new(
        ErrorKind::Temporary,
        "the deadline (--timeout, or 120 s for an outbox entry) passed before the next step",
    )
}
