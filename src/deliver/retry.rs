//! Who owns a retry, and what counts as sent: the delivery policy over any [`Connector`]
//! (SMTP in envoi; a scripted server in the unit tests below).
//!
//! A message goes to its recipients in one or more transactions (more when the server
//! answers 452, too many recipients). Transient failures (4xx, connection refused or
//! reset, timeouts) are retried with exponential backoff and jitter, within the
//! attempt budget and the overall deadline; permanent ones never are. A connection lost
//! after the whole message was sent is never retried here: the message may have arrived.
//! Recipients already delivered are never sent to again.

use std::time::{Duration, Instant};

use lettre::Address;

use crate::deliver::smtp::RcptReply;
use crate::deliver::{Notice, Observer, deadline_passed};
use crate::error::{Error, ErrorKind, Result};
use crate::message::Prepared;

/// Opens sessions with one server. The seam between the policy here and the wire.
pub(crate) trait Connector {
    /// An open, logged-in session.
    type Session: Session;
    /// Connects and logs in (or fails with a classified error).
    fn open(&mut self) -> Result<Self::Session>;
}

/// The commands of a transaction, with the server's answers already classified: an
/// `Err` is a failure of the whole session, a refused recipient is an `Ok` reply with
/// its 4xx or 5xx code.
pub(crate) trait Session {
    /// MAIL FROM, with the parameters `prepared` needs for these recipients.
    fn mail(&mut self, prepared: &Prepared, recipients: &[Address]) -> Result<()>;
    /// RCPT TO: the server's answer, positive or not.
    fn rcpt(&mut self, recipient: &Address) -> Result<RcptReply>;
    /// Abandons the transaction; the session stays usable.
    fn rset(&mut self);
    /// DATA, the message and the final dot: the reply to the dot.
    fn data(&mut self, prepared: &Prepared) -> Result<(u16, String)>;
    /// QUIT.
    fn close(self);
}

/// What one transaction did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Transaction {
    /// Recipients accepted at RCPT; they got the message when `data_reply` is set.
    accepted: Vec<RcptReply>,
    /// Recipients refused at RCPT (4xx or 5xx, but not 452).
    refused: Vec<RcptReply>,
    /// Recipients not tried because the server answered 452 (too many recipients).
    deferred: Vec<Address>,
    /// The reply to the final dot, when the message was sent.
    data_reply: Option<(u16, String)>,
}

/// One transaction of `prepared` to `recipients`: MAIL, one RCPT each, then DATA —
/// unless a recipient was refused and `allow_partial` is off, or none was accepted, in
/// which case it is abandoned (RSET) and nothing is sent. A `452` (too many recipients)
/// stops the RCPTs; the rest come back as `deferred` for a further transaction.
fn transaction(
    session: &mut impl Session,
    prepared: &Prepared,
    recipients: &[Address],
    allow_partial: bool,
) -> Result<Transaction> {
    session.mail(prepared, recipients)?;
    let mut t = Transaction::default();
    for (i, rcpt) in recipients.iter().enumerate() {
        let reply = session.rcpt(rcpt)?;
        if reply.code < 400 {
            t.accepted.push(reply);
        } else if reply.code == 452 && !t.accepted.is_empty() {
            t.deferred = recipients[i..].to_vec();
            break;
        } else {
            t.refused.push(reply);
        }
    }
    if t.accepted.is_empty() || (!t.refused.is_empty() && !allow_partial) {
        session.rset();
        t.deferred.clear();
        return Ok(t);
    }
    t.data_reply = Some(session.data(prepared)?);
    Ok(t)
}

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

/// Sends `prepared` to every envelope recipient according to `policy`.
/// `observer` is told after every transaction the server accepted, and of each retry.
pub(crate) fn send(
    connector: &mut impl Connector,
    prepared: &Prepared,
    policy: &Policy,
    observer: &mut dyn Observer,
) -> Result<Report, Failure> {
    let mut state = State {
        pending: prepared.envelope.to().to_vec(),
        report: Report::default(),
    };
    loop {
        state.report.attempts += 1;
        let (error, deferred) = match state.attempt(connector, prepared, policy, observer) {
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
        observer.notice(Notice::Retrying {
            reason: error,
            wait,
            next_attempt: state.report.attempts + 1,
            attempts: policy.retries + 1,
        });
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
        connector: &mut impl Connector,
        prepared: &Prepared,
        policy: &Policy,
        observer: &mut dyn Observer,
    ) -> Result<Step> {
        if policy.deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(deadline_passed());
        }
        let mut session = connector.open()?;
        let result = self.transactions(&mut session, prepared, policy, observer);
        session.close();
        result
    }

    fn transactions(
        &mut self,
        session: &mut impl Session,
        prepared: &Prepared,
        policy: &Policy,
        observer: &mut dyn Observer,
    ) -> Result<Step> {
        while !self.pending.is_empty() {
            let t = transaction(session, prepared, &self.pending, policy.allow_partial)?;
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
            if let Err(e) = observer.accepted(&self.report) {
                // Delivered all the same: retrying would send it again.
                observer.notice(Notice::NotRecorded(e));
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
