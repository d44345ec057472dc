//! Who owns a retry, and what counts as sent: the delivery policy over [`SmtpSession`].
//!
//! A message goes to its recipients in one or more transactions (more when the server
//! answers 452, too many recipients). Transient failures (4xx, connection refused or
//! reset, timeouts) are retried with exponential backoff and jitter, within the
//! attempt budget and the overall deadline; permanent ones never are. A connection lost
//! after the whole message was sent is never retried here: the message may have arrived.
//! Recipients already delivered are never sent to again.

use std::time::{Duration, Instant};

use lettre::Address;

use crate::error::{Error, ErrorKind, Result};
use crate::message::Prepared;
use crate::transport::{RcptReply, SmtpSession, SmtpSettings};

/// How hard to try.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Further attempts after the first one fails transiently.
    pub retries: u32,
    /// Longest wait between two attempts.
    pub retry_max: Duration,
    /// When the whole send must be over, retries and waits included.
    pub deadline: Option<Instant>,
    /// Send to the accepted recipients even when others are refused.
    pub allow_partial: bool,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            retries: 3,
            retry_max: Duration::from_secs(8),
            deadline: None,
            allow_partial: false,
        }
    }
}

/// What happened to each recipient.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Recipients the server accepted, with the message (their RCPT replies).
    pub delivered: Vec<RcptReply>,
    /// Recipients refused, with the server's last answer for each.
    pub refused: Vec<RcptReply>,
    /// The reply to the last final dot.
    pub data_reply: Option<(u16, String)>,
    /// Sessions opened.
    pub attempts: u32,
}

/// A send that did not fully succeed: why, and what was done before.
#[derive(Debug)]
pub struct Failure {
    /// The reason; its kind decides the exit code.
    pub error: Error,
    /// Recipients delivered or refused before the failure.
    pub report: Report,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for Failure {}

impl From<Error> for Failure {
    fn from(error: Error) -> Failure {
        Failure {
            error,
            report: Report::default(),
        }
    }
}

/// Called after every transaction the server accepted, before anything else is said to
/// it (even QUIT), so the caller can record who has the message while it is certain.
/// A failure to record is a warning: the message is delivered all the same, and retrying
/// it would send it again.
pub type Progress<'a> = &'a mut dyn FnMut(&Report) -> Result<()>;

/// Sends `prepared` to every envelope recipient according to `policy`.
pub fn send(
    settings: &SmtpSettings,
    prepared: &Prepared,
    policy: &Policy,
    progress: Progress<'_>,
) -> Result<Report, Failure> {
    let mut state = State {
        pending: prepared.envelope.to().to_vec(),
        report: Report::default(),
    };
    loop {
        state.report.attempts += 1;
        let (error, deferred) = match state.attempt(settings, prepared, policy, progress) {
            Ok(Step::Done) => return Ok(state.report),
            Ok(Step::Deferred(error)) => (error, true),
            Err(error) => (error, false),
        };
        let wait = backoff(state.report.attempts, policy.retry_max);
        let in_time = policy.deadline.is_none_or(|d| Instant::now() + wait < d);
        if error.kind() != ErrorKind::Temporary
            || state.report.attempts > policy.retries
            || !in_time
        {
            if deferred && policy.allow_partial {
                // Some got it; the caller owns the retry of the still-deferred ones.
                let error = Error::new(
                    ErrorKind::Temporary,
                    format!(
                        "{error}; delivered to {}: retry only the others",
                        state
                            .report
                            .delivered
                            .iter()
                            .map(|r| r.address.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
                return Err(Failure {
                    error,
                    report: state.report,
                });
            }
            return Err(Failure {
                error,
                report: state.report,
            });
        }
        eprintln!(
            "envoi: {error}; retrying in {:.1} s (attempt {} of {})",
            wait.as_secs_f64(),
            state.report.attempts + 1,
            policy.retries + 1
        );
        std::thread::sleep(wait);
    }
}

/// The wait before attempt `n + 1`: 1 s, 2 s, 4 s… capped at `max`, then a random
/// 50–100 % of it, so that many clients failing together do not retry together.
fn backoff(n: u32, max: Duration) -> Duration {
    let full = Duration::from_secs(1u64 << n.saturating_sub(1).min(16)).min(max);
    full.mul_f64(0.5 + fastrand::f64() / 2.0)
}

/// How an attempt ended without an error.
enum Step {
    /// Every recipient was delivered or permanently refused.
    Done,
    /// Some recipients were deferred (4xx at RCPT); a later attempt may deliver them.
    Deferred(Error),
}

struct State {
    /// Recipients not yet delivered nor permanently refused.
    pending: Vec<Address>,
    report: Report,
}

impl State {
    /// One session: transactions until no recipient is pending.
    fn attempt(
        &mut self,
        settings: &SmtpSettings,
        prepared: &Prepared,
        policy: &Policy,
        progress: Progress<'_>,
    ) -> Result<Step> {
        let mut settings = settings.clone();
        if let Some(deadline) = policy.deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::new(
                    ErrorKind::Temporary,
                    "the deadline (--timeout) has passed",
                ));
            }
            settings.timeout = settings.timeout.min(left);
        }
        let mut session = SmtpSession::open(&settings)?;
        let result = self.transactions(&mut session, prepared, policy, progress);
        session.close();
        result
    }

    fn transactions(
        &mut self,
        session: &mut SmtpSession,
        prepared: &Prepared,
        policy: &Policy,
        progress: Progress<'_>,
    ) -> Result<Step> {
        while !self.pending.is_empty() {
            let t = session.transaction(prepared, &self.pending, policy.allow_partial)?;
            let sent = t.data_reply.is_some();
            // Keep the latest answer per refused address (a retry may change it).
            for reply in &t.refused {
                self.report.refused.retain(|r| r.address != reply.address);
                self.report.refused.push(reply.clone());
            }
            if !sent {
                return Err(refusal(&t.refused, &self.report));
            }
            self.report.data_reply = t.data_reply;
            for accepted in &t.accepted {
                // Delivered now after an earlier 4xx: no longer refused.
                self.report
                    .refused
                    .retain(|r| r.address != accepted.address);
            }
            self.report.delivered.extend(t.accepted);
            self.pending.retain(|a| {
                let a = a.to_string();
                !self.report.delivered.iter().any(|d| d.address == a)
                    && !self
                        .report
                        .refused
                        .iter()
                        .any(|r| r.address == a && r.is_permanent())
            });
            if let Err(e) = progress(&self.report) {
                eprintln!("envoi: warning: delivered, but could not record it: {e}");
            }
            let retry_later: Vec<&RcptReply> =
                t.refused.iter().filter(|r| !r.is_permanent()).collect();
            if t.deferred.is_empty() && !retry_later.is_empty() {
                return Ok(Step::Deferred(Error::new(
                    ErrorKind::Temporary,
                    format!("the server deferred {}", list(&retry_later)),
                )));
            }
        }
        Ok(Step::Done)
    }
}

/// Why a transaction sent nothing: recipients refused (67 when all refusals are
/// permanent, else 75), or none accepted at all.
fn refusal(refused: &[RcptReply], report: &Report) -> Error {
    let done: Vec<&RcptReply> = report.delivered.iter().collect();
    let outcome = if done.is_empty() {
        "nothing was sent".to_owned()
    } else {
        format!(
            "this transaction was abandoned; already delivered to {}",
            list(&done)
        )
    };
    if refused.is_empty() {
        return Error::new(
            ErrorKind::Temporary,
            format!("the server accepted no recipient (too many recipients); {outcome}"),
        );
    }
    let kind = if refused.iter().all(RcptReply::is_permanent) {
        ErrorKind::RecipientRefused
    } else {
        ErrorKind::Temporary
    };
    let refused: Vec<&RcptReply> = refused.iter().collect();
    Error::new(
        kind,
        format!("the server refused {}; {outcome}", list(&refused)),
    )
}

fn list(replies: &[&RcptReply]) -> String {
    replies
        .iter()
        .map(|r| format!("{} ({} {})", r.address, r.code, r.message))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_jitter_and_cap() {
        for _ in 0..100 {
            let max = Duration::from_secs(8);
            let first = backoff(1, max);
            assert!(first >= Duration::from_millis(500) && first <= Duration::from_secs(1));
            let third = backoff(3, max);
            assert!(third >= Duration::from_secs(2) && third <= Duration::from_secs(4));
            assert!(backoff(30, max) <= max);
        }
    }
}
