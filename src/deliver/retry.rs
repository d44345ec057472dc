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

use crate::deliver::deadline::deadline_passed;
use crate::deliver::observe::{Notice, Observer};
use crate::deliver::outcome::{Failure, RcptReply, Report};
use crate::error::{Error, ErrorKind, Result};
use crate::message::Prepared;

/// Opens sessions with one server. The seam between the policy here and the wire.
pub(crate) trait Connector {
    /// An open, logged-in session.
    type Session: Session;
    /// Connects and logs in (or fails with a classified error), all before `deadline`
    /// (and the connector's own, if it has one); the session keeps to it.
    fn open(&mut self, deadline: Option<Instant>) -> Result<Self::Session>;
}

/// The commands of a transaction, with the server's answers already classified: an
/// `Err` is a failure of the whole session, a refused recipient is an `Ok` reply with
/// its 4xx or 5xx code.
pub(crate) trait Session {
    /// MAIL FROM, with the parameters `prepared` needs for these recipients.
    fn mail(&mut self, prepared: &Prepared, recipients: &[Address]) -> Result<()>;
    /// RCPT TO: the server's answer, positive or not.
    fn rcpt(&mut self, recipient: &Address) -> Result<RcptReply>;
    /// MAIL, every RCPT and DATA in one write (RFC 2920 PIPELINING: DATA may end a
    /// group), then their replies in order. `None` when the server does not offer it;
    /// then [`mail`], [`rcpt`] and [`data`] go one by one.
    ///
    /// [`mail`]: Session::mail
    /// [`rcpt`]: Session::rcpt
    /// [`data`]: Session::data
    fn pipelined_envelope(
        &mut self,
        _prepared: &Prepared,
        _recipients: &[Address],
    ) -> Option<Result<Pipelined>> {
        None
    }
    /// Abandons the transaction; the session stays usable.
    fn rset(&mut self);
    /// Abandons a transaction whose pipelined DATA was answered 354 although the message
    /// must not go (a recipient refused): the connection is closed before any of the
    /// message, so the server discards the transaction (RFC 5321 §4.1.1.4; RFC 2920 §3.1
    /// has the client send a lone dot instead, which would deliver to the accepted
    /// recipients). The session is no longer usable.
    fn abandon(&mut self);
    /// After a 354 to a pipelined DATA: the message and the final dot, and the reply to
    /// the dot.
    fn message(&mut self, prepared: &Prepared) -> Result<(u16, String)>;
    /// What the session has to tell the user since it was last asked (a DSN request
    /// the server cannot honour, say).
    fn take_notices(&mut self) -> Vec<Notice> {
        Vec::new()
    }
    /// From now on nothing the session does may go on past `deadline`: a reused session
    /// takes the deadline of each message it carries.
    fn set_deadline(&mut self, _deadline: Option<Instant>) {}
    /// DATA, the message and the final dot: the reply to the dot.
    fn data(&mut self, prepared: &Prepared) -> Result<(u16, String)>;
    /// Whether the session can carry another transaction: false once the connection
    /// failed or the server said 421 (closing).
    fn usable(&self) -> bool {
        true
    }
    /// QUIT.
    fn close(self);
}

/// Where the sessions of a send come from, and where they go after it.
pub(crate) trait Sessions {
    /// The session type.
    type Session: Session;
    /// A session for the next attempt, bound to `deadline`, and whether it already
    /// carried a message.
    fn get(&mut self, deadline: Option<Instant>) -> Result<(Self::Session, bool)>;
    /// Takes back the session of an attempt; `failed` when the attempt ended in a
    /// transaction the server may still consider open.
    fn put(&mut self, session: Self::Session, failed: bool);
}

/// One new session per attempt, closed after it: what `envoi send` does.
struct Fresh<'a, C>(&'a mut C);

impl<C: Connector> Sessions for Fresh<'_, C> {
    type Session = C::Session;

    fn get(&mut self, deadline: Option<Instant>) -> Result<(C::Session, bool)> {
        Ok((self.0.open(deadline)?, false))
    }

    fn put(&mut self, session: C::Session, _failed: bool) {
        session.close();
    }
}

/// A session kept open from one message to the next (`envoi batch`): it carries message
/// after message until `per_session` of them have gone over it or the server closes it.
/// After a failed transaction it is reset (RSET); after a good one it goes on as it is.
pub(crate) struct Reuse<C: Connector> {
    connector: C,
    open: Option<C::Session>,
    /// Messages given to the open session so far.
    used: u32,
    per_session: u32,
    opened: u32,
    /// The last try to open a session failed (no connection, no greeting, a failed TLS
    /// handshake or login), and none has opened since: the server looks down.
    unreachable: bool,
}

impl<C: Connector> Reuse<C> {
    /// At most `per_session` messages over one session (0 counts as 1).
    pub(crate) fn new(connector: C, per_session: u32) -> Reuse<C> {
        Reuse {
            connector,
            open: None,
            used: 0,
            per_session: per_session.max(1),
            opened: 0,
            unreachable: false,
        }
    }

    /// A second, independent set of sessions through the same connector (same settings,
    /// same credentials), for sending in parallel.
    pub(crate) fn sibling(&self) -> Reuse<C>
    where
        C: Clone,
    {
        Reuse::new(self.connector.clone(), self.per_session)
    }

    /// Sessions opened so far (connection attempts that succeeded).
    pub(crate) fn opened(&self) -> u32 {
        self.opened
    }

    /// Whether the last try to open a session failed, none having opened since.
    pub(crate) fn unreachable(&self) -> bool {
        self.unreachable
    }

    /// Ends the open session, if any, with QUIT.
    pub(crate) fn close(&mut self) {
        if let Some(session) = self.open.take() {
            session.close();
        }
        self.used = 0;
    }
}

impl<C: Connector> Sessions for Reuse<C> {
    type Session = C::Session;

    fn get(&mut self, deadline: Option<Instant>) -> Result<(C::Session, bool)> {
        if self.used >= self.per_session {
            self.close();
        }
        let (session, reused) = match self.open.take() {
            Some(mut session) => {
                session.set_deadline(deadline);
                (session, true)
            }
            None => {
                let opened = self.connector.open(deadline);
                self.unreachable = opened.is_err();
                let session = opened?;
                self.opened += 1;
                self.used = 0;
                (session, false)
            }
        };
        self.used += 1;
        Ok((session, reused))
    }

    fn put(&mut self, mut session: C::Session, failed: bool) {
        if !session.usable() {
            session.close();
            self.used = 0;
            return;
        }
        if failed {
            session.rset();
        }
        self.open = Some(session);
    }
}

/// The replies to a pipelined MAIL, RCPTs and DATA.
#[derive(Debug)]
pub(crate) struct Pipelined {
    /// Each RCPT's answer, in order.
    pub rcpts: Vec<RcptReply>,
    /// `Ok` when DATA was answered 354 (the server now waits for the message: it must
    /// get it, or [`Session::abandon`]); else the error for its negative reply.
    pub data: Result<()>,
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

impl Transaction {
    /// Files one RCPT answer: accepted, refused, or — a 452 once someone is in —
    /// deferred to a further transaction (then true).
    fn file(&mut self, rcpt: &Address, reply: RcptReply) -> bool {
        if reply.code < 400 {
            self.accepted.push(reply);
            false
        } else if reply.code == 452 && !self.accepted.is_empty() {
            self.deferred.push(rcpt.clone());
            true
        } else {
            self.refused.push(reply);
            false
        }
    }
}

/// One transaction of `prepared` to `recipients`: MAIL, one RCPT each, then DATA —
/// unless a recipient was refused and `allow_partial` is off, or none was accepted, in
/// which case it is abandoned (RSET) and nothing is sent. A `452` (too many recipients)
/// stops the RCPTs; the rest come back as `deferred` for a further transaction. `began`
/// is set once the message itself starts to go (see [`Report::payload_sent`]).
fn transaction(
    session: &mut impl Session,
    prepared: &Prepared,
    recipients: &[Address],
    allow_partial: bool,
    began: &mut bool,
) -> Result<Transaction> {
    let mut t = Transaction::default();
    // The answer to a DATA already sent with the envelope.
    let mut pipelined_data = None;
    match session.pipelined_envelope(prepared, recipients) {
        Some(replies) => {
            let replies = replies?;
            // Every RCPT was asked, so a 452 means "too many recipients" only where every
            // later RCPT got one too: the server's limit begins there. A 452 with another
            // answer after it is that recipient's own temporary failure (a full mailbox),
            // refused like any 4xx, so that the others do not get the message without it.
            let limit_from = replies
                .rcpts
                .iter()
                .rposition(|reply| reply.code != 452)
                .map_or(0, |last| last + 1);
            for (i, (rcpt, reply)) in recipients.iter().zip(replies.rcpts).enumerate() {
                if reply.code == 452 && i < limit_from {
                    t.refused.push(reply);
                } else {
                    t.file(rcpt, reply);
                }
            }
            pipelined_data = Some(replies.data);
        }
        None => {
            session.mail(prepared, recipients)?;
            for (i, rcpt) in recipients.iter().enumerate() {
                if t.file(rcpt, session.rcpt(rcpt)?) {
                    // The server takes no more in this transaction: ask no further.
                    t.deferred.extend_from_slice(&recipients[i + 1..]);
                    break;
                }
            }
        }
    }
    if t.accepted.is_empty() || (!t.refused.is_empty() && !allow_partial) {
        match pipelined_data {
            Some(Ok(())) => session.abandon(),
            _ => session.rset(),
        }
        t.deferred.clear();
        return Ok(t);
    }
    t.data_reply = Some(match pipelined_data {
        Some(data) => {
            data?;
            *began = true;
            session.message(prepared)?
        }
        // DATA and the message go in one call: a 4xx to DATA itself counts as begun too.
        None => {
            *began = true;
            session.data(prepared)?
        }
    });
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

/// Sends `prepared` to every envelope recipient according to `policy`.
/// `observer` is told after every transaction the server accepted, and of each retry.
pub(crate) fn send(
    connector: &mut impl Connector,
    prepared: &Prepared,
    policy: &Policy,
    observer: &mut dyn Observer,
) -> Result<Report, Failure> {
    send_via(&mut Fresh(connector), prepared, policy, observer)
}

/// [`send`] over the sessions `sessions` gives. A session that already carried a message
/// and turns out closed (the server hung up while idle, or answered 421) before this
/// message got anywhere costs no attempt: a new one is opened at once, once.
pub(crate) fn send_via(
    sessions: &mut impl Sessions,
    prepared: &Prepared,
    policy: &Policy,
    observer: &mut dyn Observer,
) -> Result<Report, Failure> {
    let mut state = State {
        pending: prepared.envelope.to().to_vec(),
        report: Report::default(),
    };
    let mut stale_forgiven = false;
    loop {
        state.report.attempts += 1;
        let (error, deferred) = match state.attempt(sessions, prepared, policy, observer) {
            Ok(Step::Done) => return Ok(state.report),
            Ok(Step::Deferred(error)) => (error, true),
            Err(Attempted { error, stale }) => {
                if stale && !stale_forgiven && error.kind() == ErrorKind::Temporary {
                    stale_forgiven = true;
                    state.report.attempts -= 1;
                    continue;
                }
                (error, false)
            }
        };
        let Some(wait) = next_attempt(&error, state.report.attempts, policy, None) else {
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
        };
        observer.notice(Notice::Retrying {
            reason: error,
            wait,
            next_attempt: state.report.attempts + 1,
            attempts: policy.retries + 1,
        });
        std::thread::sleep(wait);
    }
}

/// The wait before another attempt after attempt number `attempts` failed with
/// `error`, or `None` when there is none: only a temporary failure is retried, within
/// `policy`'s retries and before its deadline. `asked` is the wait the server asked for
/// (HTTP `Retry-After`), taken instead of the backoff: retrying sooner would only be
/// refused again.
pub(crate) fn next_attempt(
    error: &Error,
    attempts: u32,
    policy: &Policy,
    asked: Option<Duration>,
) -> Option<Duration> {
    let wait = asked.unwrap_or_else(|| backoff(attempts, policy.retry_max));
    let in_time = policy.deadline.is_none_or(|d| Instant::now() + wait < d);
    (error.kind() == ErrorKind::Temporary && attempts <= policy.retries && in_time).then_some(wait)
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
        sessions: &mut impl Sessions,
        prepared: &Prepared,
        policy: &Policy,
        observer: &mut dyn Observer,
    ) -> std::result::Result<Step, Attempted> {
        if policy.deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(deadline_passed().into());
        }
        let (mut session, reused) = sessions.get(policy.deadline)?;
        for notice in session.take_notices() {
            observer.notice(notice);
        }
        let delivered = self.report.delivered.len();
        let result = self.transactions(&mut session, prepared, policy, observer);
        let stale = reused && !session.usable() && self.report.delivered.len() == delivered;
        match result {
            Ok(step) => {
                sessions.put(session, false);
                Ok(step)
            }
            // Refused recipients: the transaction was abandoned with RSET already.
            Err(Ended::Refused(error)) => {
                sessions.put(session, false);
                Err(Attempted {
                    error,
                    stale: false,
                })
            }
            Err(Ended::Failed(error)) => {
                sessions.put(session, true);
                Err(Attempted { error, stale })
            }
        }
    }

    fn transactions(
        &mut self,
        session: &mut impl Session,
        prepared: &Prepared,
        policy: &Policy,
        observer: &mut dyn Observer,
    ) -> std::result::Result<Step, Ended> {
        while !self.pending.is_empty() {
            let t = transaction(
                session,
                prepared,
                &self.pending,
                policy.allow_partial,
                &mut self.report.payload_sent,
            )
            .map_err(Ended::Failed)?;
            let sent = t.data_reply.is_some();
            // Keep the latest answer per refused address (a retry may change it).
            for reply in &t.refused {
                self.report.refused.retain(|r| r.address != reply.address);
                self.report.refused.push(reply.clone());
            }
            if !sent {
                return Err(Ended::Refused(refusal(&t.refused, &self.report)));
            }
            self.report.data_reply = t.data_reply;
            for accepted in &t.accepted {
                // Delivered now after an earlier 4xx: no longer refused.
                self.report
                    .refused
                    .retain(|r| r.address != accepted.address);
            }
            self.report.delivered.extend(t.accepted);
            self.pending.retain(|a| !self.report.settled(a.as_ref()));
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

/// How the transactions of one session ended short.
enum Ended {
    /// Recipients refused: the transaction was abandoned (RSET) and the session is in step.
    Refused(Error),
    /// A command failed: the session may be mid-transaction, or gone.
    Failed(Error),
}

/// How an attempt failed.
struct Attempted {
    error: Error,
    /// The session had carried earlier messages and was found closed before this one
    /// got anywhere.
    stale: bool,
}

impl From<Error> for Attempted {
    fn from(error: Error) -> Attempted {
        Attempted {
            error,
            stale: false,
        }
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
    use std::cell::RefCell;
    use std::collections::{HashMap, VecDeque};
    use std::rc::Rc;

    use lettre::address::Envelope;

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

    /// How one scripted session answers.
    #[derive(Clone, Default)]
    struct Server {
        /// RCPT reply code per address; 250 for any other.
        rcpt: HashMap<&'static str, u16>,
        /// Answer 452 to RCPTs past this many in one transaction.
        max_rcpt: Option<usize>,
        /// The failure of the final dot, if any (else 250).
        data_error: Option<ErrorKind>,
        /// Offers PIPELINING: the envelope goes in one batch, every RCPT answered.
        pipelining: bool,
        /// Hangs up (421) at the MAIL of this transaction of the session (0-based).
        hang_up_at: Option<usize>,
    }

    impl Server {
        /// Answers `code` to RCPT for `address`, 250 to the others.
        fn refusing(address: &'static str, code: u16) -> Server {
            Server {
                rcpt: HashMap::from([(address, code)]),
                ..Server::default()
            }
        }
    }

    /// Opens the scripted sessions in order: `Err` for a failed connection. Every command
    /// is logged, so tests can assert on the dialogue.
    struct Script {
        sessions: VecDeque<std::result::Result<Server, ErrorKind>>,
        log: Rc<RefCell<Vec<String>>>,
    }

    struct Scripted {
        server: Server,
        rcpts: usize,
        mails: usize,
        gone: bool,
        log: Rc<RefCell<Vec<String>>>,
    }

    impl Script {
        fn new(sessions: Vec<std::result::Result<Server, ErrorKind>>) -> Script {
            Script {
                sessions: sessions.into(),
                log: Rc::default(),
            }
        }

        fn log(&self) -> Vec<String> {
            self.log.borrow().clone()
        }

        fn count(&self, command: &str) -> usize {
            self.log().iter().filter(|l| *l == command).count()
        }
    }

    impl Connector for Script {
        type Session = Scripted;

        fn open(&mut self, _deadline: Option<Instant>) -> Result<Scripted> {
            match self.sessions.pop_front().expect("a session is scripted") {
                Ok(server) => {
                    self.log.borrow_mut().push("CONNECT".into());
                    Ok(Scripted {
                        server,
                        rcpts: 0,
                        mails: 0,
                        gone: false,
                        log: Rc::clone(&self.log),
                    })
                }
                Err(kind) => {
                    self.log.borrow_mut().push("connect failed".into());
                    Err(Error::new(kind, "scripted connection failure"))
                }
            }
        }
    }

    impl Session for Scripted {
        fn mail(&mut self, _: &Prepared, _: &[Address]) -> Result<()> {
            self.rcpts = 0;
            self.log.borrow_mut().push("MAIL".into());
            self.mails += 1;
            if self.server.hang_up_at == Some(self.mails - 1) {
                self.gone = true;
                return Err(Error::new(ErrorKind::Temporary, "scripted 421"));
            }
            Ok(())
        }

        fn usable(&self) -> bool {
            !self.gone
        }

        fn rcpt(&mut self, recipient: &Address) -> Result<RcptReply> {
            self.rcpts += 1;
            let code = match self.server.max_rcpt {
                Some(max) if self.rcpts > max => 452,
                _ => {
                    let address: &str = recipient.as_ref();
                    self.server.rcpt.get(address).copied().unwrap_or(250)
                }
            };
            self.log
                .borrow_mut()
                .push(format!("RCPT {recipient} {code}"));
            Ok(RcptReply::new(recipient, code, format!("scripted {code}")))
        }

        fn rset(&mut self) {
            self.log.borrow_mut().push("RSET".into());
        }

        fn pipelined_envelope(
            &mut self,
            prepared: &Prepared,
            recipients: &[Address],
        ) -> Option<Result<Pipelined>> {
            if !self.server.pipelining {
                return None;
            }
            self.log.borrow_mut().push("PIPELINE".into());
            let replies = self.mail(prepared, recipients).and_then(|()| {
                recipients
                    .iter()
                    .map(|r| self.rcpt(r))
                    .collect::<Result<Vec<_>>>()
            });
            // As Postfix: DATA is 354 when someone is in, else 554.
            Some(replies.map(|rcpts| Pipelined {
                data: if rcpts.iter().any(|r| r.code < 400) {
                    Ok(())
                } else {
                    Err(Error::new(ErrorKind::RecipientRefused, "scripted 554"))
                },
                rcpts,
            }))
        }

        fn abandon(&mut self) {
            self.log.borrow_mut().push("ABANDON".into());
            self.gone = true;
        }

        fn data(&mut self, prepared: &Prepared) -> Result<(u16, String)> {
            self.message(prepared)
        }

        fn message(&mut self, _: &Prepared) -> Result<(u16, String)> {
            self.log.borrow_mut().push("DATA".into());
            match self.server.data_error {
                Some(kind) => Err(Error::new(kind, "scripted data failure")),
                None => Ok((250, "queued".into())),
            }
        }

        fn close(self) {
            let last = if self.gone { "HANGUP" } else { "QUIT" };
            self.log.borrow_mut().push(last.into());
        }
    }

    /// Collects what the policy reports.
    #[derive(Default)]
    struct Seen {
        accepted: Vec<Report>,
        retries: u32,
    }

    impl Observer for Seen {
        fn accepted(&mut self, report: &Report) -> Result<()> {
            self.accepted.push(report.clone());
            Ok(())
        }

        fn notice(&mut self, notice: Notice) {
            if let Notice::Retrying { .. } = notice {
                self.retries += 1;
            }
        }
    }

    fn message(to: &[&str]) -> Prepared {
        let address = |a: &str| a.parse::<Address>().unwrap();
        Prepared {
            message_id: "<1@example.com>".into(),
            envelope: Envelope::new(
                Some(address("from@example.com")),
                to.iter().map(|a| address(a)).collect(),
            )
            .unwrap(),
            bytes: b"Subject: x\r\n\r\nhi\r\n".to_vec().into(),
        }
    }

    fn policy(retries: u32, allow_partial: bool) -> Policy {
        Policy {
            retries,
            retry_max: Duration::from_millis(1),
            deadline: None,
            allow_partial,
        }
    }

    fn run(script: &mut Script, to: &[&str], policy: &Policy) -> (Result<Report, Failure>, Seen) {
        let mut seen = Seen::default();
        let result = send(script, &message(to), policy, &mut seen);
        (result, seen)
    }

    fn addresses(replies: &[RcptReply]) -> Vec<&str> {
        replies.iter().map(|r| r.address.as_str()).collect()
    }

    const FIVE: [&str; 5] = [
        "a@example.com",
        "b@example.com",
        "c@example.com",
        "d@example.com",
        "e@example.com",
    ];

    #[test]
    fn a_452_splits_the_recipients_into_transactions_of_one_session() {
        let server = Server {
            max_rcpt: Some(2),
            ..Server::default()
        };
        let mut script = Script::new(vec![Ok(server)]);
        let (result, seen) = run(&mut script, &FIVE, &policy(3, false));
        let report = result.unwrap();
        assert_eq!(addresses(&report.delivered), FIVE);
        assert_eq!(report.attempts, 1);
        assert_eq!(seen.accepted.len(), 3, "progress after each transaction");
        assert_eq!(script.count("DATA"), 3);
        assert_eq!(script.count("QUIT"), 1);
    }

    /// Pipelined, every RCPT is answered: a 452 with a 250 after it is not the server's
    /// limit but that recipient's own temporary failure, so without --allow-partial
    /// nobody gets the message then (the 354 is abandoned), and all get it together on
    /// the retry.
    #[test]
    fn a_pipelined_452_followed_by_a_250_is_a_refusal_not_a_limit() {
        let first = Server {
            pipelining: true,
            ..Server::refusing("b@example.com", 452)
        };
        let second = Server {
            pipelining: true,
            ..Server::default()
        };
        let mut script = Script::new(vec![Ok(first), Ok(second)]);
        let (result, _) = run(&mut script, &FIVE[..3], &policy(3, false));
        let report = result.unwrap();
        assert_eq!(addresses(&report.delivered), FIVE[..3]);
        assert_eq!(report.attempts, 2);
        let log = script.log();
        assert_eq!(script.count("ABANDON"), 1, "{log:?}");
        assert_eq!(script.count("DATA"), 1, "{log:?}");
    }

    /// Pipelined, 452s to the end are the server's limit: those recipients go in a
    /// further transaction of the same session, and nobody gets the message twice.
    #[test]
    fn pipelined_452s_to_the_end_go_in_further_transactions() {
        let server = Server {
            pipelining: true,
            max_rcpt: Some(2),
            ..Server::default()
        };
        let mut script = Script::new(vec![Ok(server)]);
        let (result, _) = run(&mut script, &FIVE, &policy(3, false));
        let report = result.unwrap();
        assert_eq!(addresses(&report.delivered), FIVE);
        assert_eq!(report.attempts, 1);
        assert_eq!(script.count("DATA"), 3, "{:?}", script.log());
        assert_eq!(script.count("ABANDON"), 0, "{:?}", script.log());
    }

    #[test]
    fn one_refused_recipient_sends_nothing_without_allow_partial() {
        let server = Server::refusing("b@example.com", 550);
        let mut script = Script::new(vec![Ok(server)]);
        let (result, seen) = run(&mut script, &FIVE[..3], &policy(3, false));
        let failure = result.unwrap_err();
        assert_eq!(failure.error.kind(), ErrorKind::RecipientRefused);
        assert_eq!(addresses(&failure.report.refused), ["b@example.com"]);
        assert!(failure.report.delivered.is_empty());
        assert_eq!(script.count("RSET"), 1);
        assert_eq!(script.count("DATA"), 0, "{:?}", script.log());
        assert!(seen.accepted.is_empty());
    }

    /// Pipelined, DATA went with the envelope and was answered 354: with a recipient
    /// refused, the connection is dropped before the message (no lone dot, which would
    /// deliver to the others), and a further message gets a new session.
    #[test]
    fn a_refused_recipient_after_a_pipelined_354_abandons_the_connection() {
        let server = Server {
            pipelining: true,
            ..Server::refusing("b@example.com", 550)
        };
        let mut script = Script::new(vec![Ok(server)]);
        let (result, _) = run(&mut script, &FIVE[..3], &policy(3, false));
        let failure = result.unwrap_err();
        assert_eq!(failure.error.kind(), ErrorKind::RecipientRefused);
        assert!(failure.report.delivered.is_empty());
        let log = script.log();
        assert_eq!(script.count("DATA"), 0, "{log:?}");
        assert_eq!(script.count("ABANDON"), 1, "{log:?}");
        assert_eq!(log.last().map(String::as_str), Some("HANGUP"), "{log:?}");
    }

    #[test]
    fn allow_partial_delivers_to_the_others_and_reports_the_refused() {
        let server = Server::refusing("b@example.com", 550);
        let mut script = Script::new(vec![Ok(server)]);
        let (result, _) = run(&mut script, &FIVE[..3], &policy(3, true));
        let report = result.unwrap();
        assert_eq!(
            addresses(&report.delivered),
            ["a@example.com", "c@example.com"]
        );
        assert_eq!(addresses(&report.refused), ["b@example.com"]);
        assert_eq!(report.attempts, 1, "a 5xx is never retried");
    }

    #[test]
    fn a_deferred_recipient_is_retried_alone_and_then_no_longer_refused() {
        let first = Server::refusing("b@example.com", 451);
        let mut script = Script::new(vec![Ok(first), Ok(Server::default())]);
        let (result, seen) = run(&mut script, &FIVE[..2], &policy(3, true));
        let report = result.unwrap();
        assert_eq!(
            addresses(&report.delivered),
            ["a@example.com", "b@example.com"]
        );
        assert!(report.refused.is_empty(), "delivered after its 451");
        assert_eq!((report.attempts, seen.retries), (2, 1));
        let log = script.log();
        let second_session = log.iter().skip_while(|l| *l != "QUIT").skip(1);
        let rcpts: Vec<&String> = second_session.filter(|l| l.starts_with("RCPT")).collect();
        assert_eq!(rcpts, ["RCPT b@example.com 250"], "a@ is not sent to again");
    }

    #[test]
    fn deferred_past_the_retries_names_who_already_has_it() {
        let deferring = Server::refusing("b@example.com", 451);
        let mut script = Script::new(vec![Ok(deferring.clone()), Ok(deferring.clone())]);
        let (result, _) = run(&mut script, &FIVE[..2], &policy(1, true));
        let failure = result.unwrap_err();
        assert_eq!(failure.error.kind(), ErrorKind::Temporary);
        assert!(
            failure
                .error
                .message()
                .contains("already delivered to a@example.com"),
            "{}",
            failure.error
        );
        assert_eq!(failure.report.attempts, 2);

        // With no retry left after the first session, the deferral itself is the error.
        let mut script = Script::new(vec![Ok(deferring)]);
        let (result, _) = run(&mut script, &FIVE[..2], &policy(0, true));
        let failure = result.unwrap_err();
        assert_eq!(failure.error.kind(), ErrorKind::Temporary);
        assert!(
            failure
                .error
                .message()
                .contains("delivered to a@example.com: retry only the others"),
            "{}",
            failure.error
        );
        assert_eq!(failure.report.attempts, 1);
    }

    #[test]
    fn temporary_failures_are_retried_up_to_the_limit() {
        let mut script = Script::new(vec![
            Err(ErrorKind::Temporary),
            Err(ErrorKind::Temporary),
            Ok(Server::default()),
        ]);
        let (result, seen) = run(&mut script, &FIVE[..1], &policy(3, false));
        assert_eq!(result.unwrap().attempts, 3);
        assert_eq!(seen.retries, 2);

        let mut script = Script::new(vec![Err(ErrorKind::Temporary); 3]);
        let (result, seen) = run(&mut script, &FIVE[..1], &policy(2, false));
        let failure = result.unwrap_err();
        assert_eq!(failure.error.kind(), ErrorKind::Temporary);
        assert_eq!((failure.report.attempts, seen.retries), (3, 2));
    }

    #[test]
    fn permanent_failures_and_unknown_outcomes_are_never_retried() {
        for kind in [
            ErrorKind::Unavailable,
            ErrorKind::AuthRefused,
            ErrorKind::Certificate,
            ErrorKind::Config,
        ] {
            let mut script = Script::new(vec![Err(kind), Ok(Server::default())]);
            let (result, seen) = run(&mut script, &FIVE[..1], &policy(3, false));
            assert_eq!(result.unwrap_err().error.kind(), kind);
            assert_eq!(seen.retries, 0, "{kind:?}");
        }
        let lost = Server {
            data_error: Some(ErrorKind::OutcomeUnknown),
            ..Server::default()
        };
        let mut script = Script::new(vec![Ok(lost), Ok(Server::default())]);
        let (result, _) = run(&mut script, &FIVE[..1], &policy(3, false));
        let failure = result.unwrap_err();
        assert_eq!(failure.error.kind(), ErrorKind::OutcomeUnknown);
        assert_eq!(failure.report.attempts, 1);
        assert_eq!(script.sessions.len(), 1, "no second session was opened");
    }

    /// Sends `count` one-recipient messages over `sessions`.
    fn batch(sessions: &mut Reuse<Script>, count: usize) -> Vec<Result<Report, Failure>> {
        (0..count)
            .map(|_| {
                send_via(
                    sessions,
                    &message(&FIVE[..1]),
                    &policy(3, false),
                    &mut Seen::default(),
                )
            })
            .collect()
    }

    #[test]
    fn a_reused_session_carries_messages_up_to_its_cap_without_rset() {
        let mut sessions = Reuse::new(Script::new(vec![Ok(Server::default()); 2]), 2);
        let results = batch(&mut sessions, 3);
        assert!(results.iter().all(Result::is_ok));
        sessions.close();
        assert_eq!(sessions.opened(), 2);
        let log = sessions.connector.log();
        assert_eq!(
            log,
            [
                "CONNECT",
                "MAIL",
                "RCPT a@example.com 250",
                "DATA",
                "MAIL",
                "RCPT a@example.com 250",
                "DATA",
                "QUIT",
                "CONNECT",
                "MAIL",
                "RCPT a@example.com 250",
                "DATA",
                "QUIT"
            ]
        );
    }

    #[test]
    fn a_failed_transaction_is_reset_and_the_session_goes_on() {
        let server = Server::refusing("a@example.com", 550);
        let mut sessions = Reuse::new(Script::new(vec![Ok(server)]), 100);
        let first = send_via(
            &mut sessions,
            &message(&FIVE[..1]),
            &policy(3, false),
            &mut Seen::default(),
        );
        assert_eq!(first.unwrap_err().error.kind(), ErrorKind::RecipientRefused);
        let second = send_via(
            &mut sessions,
            &message(&FIVE[1..2]),
            &policy(3, false),
            &mut Seen::default(),
        );
        assert!(second.is_ok());
        assert_eq!(sessions.opened(), 1);
        assert_eq!(
            sessions.connector.count("RSET"),
            1,
            "{:?}",
            sessions.connector.log()
        );
    }

    #[test]
    fn a_session_the_server_closed_is_replaced_at_once_without_costing_an_attempt() {
        let closing = Server {
            hang_up_at: Some(1),
            ..Server::default()
        };
        let script = Script::new(vec![Ok(closing), Ok(Server::default())]);
        let mut sessions = Reuse::new(script, 100);
        let results = batch(&mut sessions, 2);
        let second = results[1].as_ref().unwrap();
        assert_eq!(second.attempts, 1, "the stale session is not an attempt");
        assert_eq!(sessions.opened(), 2);
        let log = sessions.connector.log();
        assert!(log.contains(&"HANGUP".to_owned()), "{log:?}");
        assert_eq!(sessions.connector.count("DATA"), 2, "{log:?}");
    }

    #[test]
    fn a_passed_deadline_opens_no_session() {
        let mut script = Script::new(vec![Ok(Server::default())]);
        let policy = Policy {
            deadline: Some(Instant::now()),
            ..policy(3, false)
        };
        let (result, _) = run(&mut script, &FIVE[..1], &policy);
        assert_eq!(result.unwrap_err().error.kind(), ErrorKind::Temporary);
        assert!(script.log().is_empty(), "{:?}", script.log());
    }
}
