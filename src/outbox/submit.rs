//! The one way a message goes out, whichever command took it: the sender is picked
//! ([`DefaultSender`]), the message built and signed ([`Signing`], [`prepare`]), then
//! handed on: [`dispatch`] for one message (`send`, `sendmail`: the idempotency key,
//! queue or deliver, the ledger), [`settle_record`] for a batch record (queued when
//! still deferred and the profile keeps an outbox). Every command comes through here,
//! so a rule written here cannot drift between them.
//!
//! It sits in `outbox/`, the top library layer, because what follows the build (the
//! idempotency claim, queue or deliver, the ledger) is this layer's own state.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use lettre::Address;
use lettre::address::Envelope;
use lettre::message::Mailbox;

use crate::deliver::{
    BatchSent, Delivery, DeliveryOptions, Dsn, Failure, Notice, Observer, Policy, RcptReply,
    Report, RoutePart, Transcript, deliver_along,
};

use crate::error::{Error, ErrorKind, Result};
use crate::message::dkim::Signer;
use crate::message::{self, Email, Prepared, address};
use crate::outbox::idempotency::{FirstSend, FirstStatus};
use crate::outbox::ledger::{self, Ledger};
use crate::outbox::log::{Facts, Logged};
use crate::outbox::policy;
use crate::outbox::sent_copy;
use crate::outbox::{
    DeliveryLog, ExitRule, FirstAttempt, Outbox, Queued, Status, queue_deferred, send_queued,
};
use crate::profile::{Connection, RecipientPolicy, Resolved};

/// The sender of a message that names none itself: the flag (`--from`), else the
/// profile's `from`. Parsed once, so a batch checks it before its first record.
#[derive(Debug, Clone, Default)]
pub struct DefaultSender(Option<Mailbox>);

impl DefaultSender {
    /// `flag`, else the `from` of `connection`'s profile (65 naming the profile when it
    /// is not one address).
    pub fn new(flag: Option<Mailbox>, connection: Option<&Connection>) -> Result<DefaultSender> {
        if flag.is_some() {
            return Ok(DefaultSender(flag));
        }
        let profile_from = connection.and_then(|c| c.profile.from.as_deref().map(|f| (c, f)));
        match profile_from {
            Some((c, from)) => Ok(DefaultSender(Some(address::parse_single(
                &format!("profile {:?}: from", c.name),
                from,
            )?))),
            None => Ok(DefaultSender(None)),
        }
    }

    /// The sender: the message's own From first, then this default (64 when neither).
    pub fn pick(&self, message_from: Option<&Mailbox>) -> Result<Mailbox> {
        message_from.or(self.0.as_ref()).cloned().ok_or_else(|| {
            Error::usage(
                "no sender: give From in the message, --from, or set `from` in the profile",
            )
        })
    }
}

/// How messages through one connection are signed: with the profile's DKIM key when it
/// has `dkim_*` keys (a `--smtp-url` connection never does). The key file is read once
/// here, so a batch reads it once for all its records.
#[derive(Debug, Default)]
pub struct Signing(Option<Signer>);

impl Signing {
    /// Reads `connection`'s DKIM key, if its profile has one (78 for an unreadable or
    /// public key file).
    pub fn of(connection: Option<&Connection>) -> Result<Signing> {
        let dkim = connection.and_then(|c| c.profile.dkim.as_ref());
        Ok(Signing(dkim.map(|d| d.signer()).transpose()?))
    }

    /// Whether messages are signed (the profile has a DKIM key).
    pub fn signs(&self) -> bool {
        self.0.is_some()
    }

    /// `prepared` with its DKIM-Signature made at `now` (the time of its Date header),
    /// or unchanged without a key. Done once, before the message is shown, queued or
    /// sent, so what the outbox keeps is what goes out.
    pub fn sign(&self, mut prepared: Prepared, now: SystemTime) -> Result<Prepared> {
        if let Some(signer) = &self.0 {
            prepared.bytes = signer.sign(std::mem::take(&mut prepared.bytes), now)?;
        }
        Ok(prepared)
    }
}

/// `email` from `from` as the bytes that go out: under the recipient `policy` (sent to
/// its redirect address, its envelope checked: 65 before anything is shown or sent),
/// built (Date `now`, Message-ID, Bcc taken out) and signed.
pub fn prepare(
    mut email: Email,
    from: &Mailbox,
    signing: &Signing,
    policy: &RecipientPolicy,
    now: SystemTime,
) -> Result<Prepared> {
    policy::apply_to_email(policy, &mut email)?;
    let built = message::build(email, from, now)?;
    policy::check_envelope(policy, &built.envelope)?;
    signing.sign(built, now)
}

/// A message given whole (sendmail mode, the spool), prepared by its own rules, under
/// the recipient `policy` (redirected, its envelope checked: 65) and signed at `now`.
pub fn prepare_given(
    prepared: Prepared,
    signing: &Signing,
    policy: &RecipientPolicy,
    now: SystemTime,
) -> Result<Prepared> {
    signing.sign(policy::apply_to_given(policy, prepared)?, now)
}

/// The slots of `policy.max_messages_per_hour` and `_per_day` for a batch: counted where
/// `send` counts them (the outbox folder, or the shared ledger's database for the
/// profile), one ledger connection for the whole batch, shared by its senders.
pub struct BatchSlots {
    ledger: Mutex<Box<dyn Ledger + Send>>,
    scope: String,
}

impl BatchSlots {
    /// The batch's slots, when `resolved`'s policy caps its messages: the ledger is
    /// opened now (75 when it cannot be reached, before any record).
    pub fn open(resolved: &Resolved) -> Result<Option<BatchSlots>> {
        let policy = &resolved.policy;
        if policy.max_per_hour.is_none() && policy.max_per_day.is_none() {
            return Ok(None);
        }
        let deadline = Instant::now() + SLOT_WAIT;
        Ok(Some(BatchSlots {
            ledger: Mutex::new(ledger::open(resolved, deadline)?),
            scope: slot_scope(resolved),
        }))
    }

    /// A record's slot: 75 when a cap is reached (the batch stops; `--resume` goes on
    /// later).
    pub fn take(&self, policy: &RecipientPolicy) -> Result<()> {
        // Another envoi holds the counts for one read and write: a record waits for it
        // as long as a send could at most.
        let deadline = Instant::now() + SLOT_WAIT;
        self.ledger
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take_slot(&self.scope, policy, deadline)
    }
}

/// How long a batch record waits for another envoi holding the send counts.
const SLOT_WAIT: Duration = Duration::from_secs(120);

/// What the shared ledger counts a capped message against: its profile (or route), so
/// every machine sending through it meets one cap.
fn slot_scope(resolved: &Resolved) -> String {
    match &resolved.connection {
        Some(connection) => format!("profile {}", connection.name),
        None => "no profile".to_owned(),
    }
}

/// The recipient policy's rules that are not about one message: a batch under
/// `require_idempotency_key` must keep a report (`--report`, which `--resume` reads so a
/// second run sends no record twice) or be a `--campaign` (65 otherwise).
pub fn check_batch(policy: &RecipientPolicy, report: bool) -> Result<()> {
    match (&policy.require_idempotency_key, report) {
        (Some(origin), false) => Err(Error::invalid(format!(
            "policy.require_idempotency_key ({origin}): nothing was sent; a batch keeps its \
             own record of what went: give --report FILE (and --resume FILE on a second \
             run), or --campaign NAME (its shared ledger), so no record is sent twice"
        ))),
        _ => Ok(()),
    }
}

/// How one message is to be delivered: what `send`'s flags (or sendmail mode's
/// defaults) say.
#[derive(Debug, Clone)]
pub struct Plan {
    /// When the command started: the deadline counts from here.
    pub started: Instant,
    /// `--timeout`: the whole operation, retries and waits included.
    pub timeout: Duration,
    /// `--retries`.
    pub retries: u32,
    /// `--retry-max-secs`.
    pub retry_max: Duration,
    /// `--allow-partial`.
    pub allow_partial: bool,
    /// `--queue`.
    pub queue: bool,
    /// Delivery status notifications to request (a receipt; sendmail's -N/-R/-V).
    pub dsn: Option<Dsn>,
    /// Where the SMTP dialogue goes (`-v`).
    pub transcript: Option<Transcript>,
}

impl Plan {
    /// When the whole operation must be over.
    pub fn deadline(&self) -> Instant {
        self.started + self.timeout
    }

    /// Whether the message goes straight to the server, not through the outbox
    /// (`--queue`, profile `outbox = true`): then nothing durable holds it while it is
    /// sent, and a caller may end the process at the deadline.
    pub fn is_direct(&self, connection: &Connection) -> bool {
        !(self.queue || connection.profile.outbox)
    }

    /// The delivery layer's options for this plan.
    pub fn options(&self) -> DeliveryOptions {
        DeliveryOptions {
            policy: Policy {
                retries: self.retries,
                retry_max: self.retry_max,
                deadline: Some(self.deadline()),
                allow_partial: self.allow_partial,
            },
            transcript: self.transcript,
            dsn: self.dsn.clone(),
        }
    }
}

/// How a dispatched message ended well.
#[derive(Debug)]
pub enum Submitted {
    /// Sent or saved.
    Delivered(Delivery),
    /// Written to the outbox; the first attempt failed temporarily, so envoi owns the
    /// retry (`envoi outbox flush`).
    Queued(Queued),
    /// The idempotency key was seen before: nothing was sent this time.
    Duplicate(FirstSend),
}

/// Delivers a prepared message along the resolved connection: claims the idempotency
/// key, queues the message (`--queue`, profile `outbox = true`) or sends it directly,
/// and records the key. `going_direct` is called with the deadline just before a direct
/// send (the command's watchdog), with the log line it is to write if it ends the
/// process. The outcome, whatever it is, goes to the delivery log.
pub fn dispatch(
    resolved: &Resolved,
    prepared: Prepared,
    plan: &Plan,
    observer: &mut dyn Observer,
    going_direct: &dyn Fn(Instant, LastWords),
) -> Result<Submitted, Failure> {
    let facts = Facts::of(&prepared);
    let log = DeliveryLog::of(resolved, resolved.connection.as_ref());
    // One line per message: whichever of this function and the watchdog comes first
    // writes it.
    let said = Arc::new(AtomicBool::new(false));
    let last_words = || LastWords {
        log: log.clone(),
        facts: facts.clone(),
        said: Arc::clone(&said),
    };
    let mut submitted = dispatch_unlogged(resolved, prepared, plan, observer, &|deadline| {
        going_direct(deadline, last_words());
    });
    // The copy in Sent (`sent_copy`) once the server took it, before the log line, which
    // says what became of it.
    if let (Ok(Submitted::Delivered(delivery)), Some(connection)) =
        (&mut submitted, resolved.connection.as_ref())
    {
        sent_copy::after_delivery(
            connection,
            delivery,
            plan.deadline(),
            plan.transcript,
            observer,
        );
    }
    let logged = match &submitted {
        Ok(Submitted::Delivered(delivery)) => match delivery {
            Delivery::Sent { report, .. } => {
                Logged::ok(Status::of_delivery(delivery), Some(report))
            }
            Delivery::Saved { path, .. } => Logged {
                saved: Some(path),
                ..Logged::ok(Status::Saved, None)
            },
        },
        Ok(Submitted::Queued(queued)) => Logged {
            outbox_id: Some(&queued.id),
            error: Some(&queued.reason),
            ..Logged::ok(Status::Queued, None)
        },
        Ok(Submitted::Duplicate(_)) => Logged::ok(Status::Duplicate, None),
        Err(failure) => Logged::failed(&failure.error, Some(&failure.report)),
    };
    // A route's line names the profile that carried the message, or was tried last.
    let carrier = match &submitted {
        Ok(Submitted::Delivered(Delivery::Sent { report, .. })) => report.route(),
        Err(failure) => failure.report.route(),
        Ok(_) => None,
    };
    let log = match (carrier, resolved.connection.as_ref()) {
        (Some(carrier), Some(connection)) => log.through(connection, carrier),
        _ => log,
    };
    let facts = match &submitted {
        // The message that went, as `--json` names it: this one was never sent.
        Ok(Submitted::Duplicate(first)) => Facts {
            message_id: first.message_id.clone(),
            ..facts
        },
        _ => facts,
    };
    let parts = match &submitted {
        Ok(Submitted::Delivered(Delivery::Sent { report, .. })) => report.parts(),
        Err(failure) => failure.report.parts(),
        Ok(_) => &[],
    };
    if !said.swap(true, Ordering::SeqCst) {
        match (parts, resolved.connection.as_ref()) {
            // One line per route's transaction, naming its profile and recipients.
            ([_, ..], Some(connection)) => {
                for part in parts {
                    let facts = Facts {
                        recipients: part.recipients.clone(),
                        ..facts.clone()
                    };
                    let logged = match &part.error {
                        Some(error) => Logged::failed(error, None),
                        None => Logged::ok(Status::Sent, None),
                    };
                    log.clone()
                        .through(connection, &part.route)
                        .record(&facts, &logged, observer);
                }
            }
            _ => log.record(&facts, &logged, observer),
        }
    }
    submitted
}

/// The delivery log line of a message whose process a watchdog ends at the deadline
/// (no `Drop` runs then, nor the rest of [`dispatch`]).
#[derive(Debug)]
pub struct LastWords {
    log: DeliveryLog,
    facts: Facts,
    /// Set by whichever writes the message's line first.
    said: Arc<AtomicBool>,
}

impl LastWords {
    /// Writes the message's line with the error the process ends with, unless
    /// [`dispatch`] wrote its own already.
    pub fn say(&self, error: &Error, observer: &mut dyn Observer) {
        if !self.said.swap(true, Ordering::SeqCst) {
            self.log
                .record(&self.facts, &Logged::failed(error, None), observer);
        }
    }
}

/// [`dispatch`] without its log line: claims the idempotency key (if any) in its ledger
/// before anything goes, records the outcome after, and frees the key when the send
/// surely did not go.
fn dispatch_unlogged(
    resolved: &Resolved,
    prepared: Prepared,
    plan: &Plan,
    observer: &mut dyn Observer,
    going_direct: &dyn Fn(Instant),
) -> Result<Submitted, Failure> {
    let connection = resolved.connection()?;
    policy::check_key(&resolved.policy, resolved.idempotency_key.as_deref())?;
    if !connection.by_domain.is_empty() && !plan.is_direct(connection) {
        return Err(Error::config(format!(
            "route {}: rules by recipient domain send directly; --queue and outbox = true \
             do not follow them yet: drop --queue, or set outbox = false on the route's \
             profiles",
            connection.route.profile.as_deref().unwrap_or_default()
        ))
        .into());
    }
    let Some(key) = resolved.idempotency_key.as_deref() else {
        return send_or_queue(
            resolved,
            connection,
            prepared,
            plan,
            None,
            observer,
            going_direct,
        );
    };
    let deadline = plan.deadline();
    // Held until the outcome is recorded: a second run with this key waits, then sees it.
    let mut ledger = ledger::open(resolved, deadline)?;
    if let Some(first) = ledger.claim(key, deadline)? {
        return Ok(Submitted::Duplicate(first));
    }
    let submitted = send_or_queue(
        resolved,
        connection,
        prepared,
        plan,
        Some((key, ledger.as_mut())),
        observer,
        going_direct,
    );
    let first = match &submitted {
        Ok(Submitted::Delivered(Delivery::Sent { prepared, .. })) => {
            Some((&prepared.message_id, FirstStatus::Sent))
        }
        Ok(Submitted::Delivered(Delivery::Saved { prepared, .. })) => {
            Some((&prepared.message_id, FirstStatus::Saved))
        }
        Ok(Submitted::Queued(queued)) => Some((&queued.prepared.message_id, FirstStatus::Queued)),
        Ok(Submitted::Duplicate(_)) => None,
        Err(failure) => {
            // With rules by domain, a route whose outcome is unknown keeps the key even
            // when another route's error is the one reported: a copy may have gone.
            let unknown = failure
                .report
                .parts()
                .iter()
                .filter_map(|part| part.error.as_ref())
                .find(|e| e.kind() == ErrorKind::OutcomeUnknown);
            ledger.release(key, unknown.unwrap_or(&failure.error));
            None
        }
    };
    if let Some((message_id, status)) = first {
        let first = FirstSend {
            message_id: message_id.clone(),
            status,
        };
        if let Err(e) = ledger.record(key, &first) {
            observer.notice(Notice::NotRecorded(Error::new(
                e.kind(),
                format!("the idempotency key was not recorded: {e}"),
            )));
        }
    }
    submitted
}

/// Queues the message (`--queue`, profile `outbox = true`) or sends it directly. `claimed`:
/// the idempotency key and the ledger that holds its claim; the key goes with a queued
/// entry, so its flush records it, and the policy's caps are counted in that ledger (no
/// second connection to it).
fn send_or_queue(
    resolved: &Resolved,
    connection: &Connection,
    prepared: Prepared,
    plan: &Plan,
    claimed: Option<(&str, &mut (dyn Ledger + Send))>,
    observer: &mut dyn Observer,
    going_direct: &dyn Fn(Instant),
) -> Result<Submitted, Failure> {
    let (key, held) = match claimed {
        Some((key, ledger)) => (Some(key), Some(ledger)),
        None => (None, None),
    };
    // After the key's claim (a duplicate takes no slot), before anything goes.
    if resolved.policy.max_per_hour.is_some() || resolved.policy.max_per_day.is_some() {
        let scope = slot_scope(resolved);
        let deadline = plan.deadline();
        match held {
            Some(ledger) => ledger.take_slot(&scope, &resolved.policy, deadline)?,
            None => {
                ledger::open(resolved, deadline)?.take_slot(&scope, &resolved.policy, deadline)?
            }
        }
    }
    let options = plan.options();
    if !plan.is_direct(connection) {
        let outbox = Outbox::open(resolved.outbox_dir()?)?;
        return Ok(
            match send_queued(&outbox, prepared, connection, &options, key, observer)? {
                FirstAttempt::Delivered(delivery) => Submitted::Delivered(delivery),
                FirstAttempt::Queued(queued) => Submitted::Queued(queued),
            },
        );
    }
    going_direct(plan.deadline());
    let delivery = if connection.by_domain.is_empty() {
        deliver_along(connection, prepared, &options, observer)?
    } else {
        deliver_by_domain(connection, prepared, &options, observer)?
    };
    Ok(Submitted::Delivered(delivery))
}

/// `prepared` through `connection`'s rules by recipient domain: each route's recipients
/// in a transaction of their own, one route after the other, with the same Message-ID
/// and bytes and only their own addresses in the envelope (Bcc is in no header). The
/// report lists each route's part; when a part failed, the failure is the gravest one
/// (as a batch's exit code ranks them), naming its route and recipients, and the report
/// says who has the message all the same.
fn deliver_by_domain(
    connection: &Connection,
    prepared: Prepared,
    options: &DeliveryOptions,
    observer: &mut dyn Observer,
) -> Result<Delivery, Failure> {
    let mut routes: Vec<(&Connection, Vec<Address>)> = Vec::new();
    for recipient in prepared.envelope.to() {
        let route = connection.for_recipient(recipient);
        match routes.iter_mut().find(|(r, _)| std::ptr::eq(*r, route)) {
            Some((_, to)) => to.push(recipient.clone()),
            None => routes.push((route, vec![recipient.clone()])),
        }
    }
    if let [(route, _)] = routes.as_slice() {
        // One route for all: one transaction, as without rules.
        return deliver_along(&alone(route), prepared, options, observer);
    }
    let mut report = Report::default();
    let mut rule = ExitRule::default();
    for (route, to) in routes {
        let envelope = Envelope::new(prepared.envelope.from().cloned(), to.clone())
            .map_err(|e| Error::new(ErrorKind::Internal, format!("a route's envelope: {e}")))?;
        let part = Prepared {
            envelope,
            ..prepared.clone()
        };
        let (done, error) = match deliver_along(&alone(route), part, options, observer) {
            Ok(Delivery::Sent { report, .. }) => (report, None),
            Ok(Delivery::Saved { .. }) => (
                Report {
                    delivered: to
                        .iter()
                        .map(|a| RcptReply {
                            address: a.to_string(),
                            code: 250,
                            message: "saved".into(),
                        })
                        .collect(),
                    ..Report::default()
                },
                None,
            ),
            Err(failure) => (failure.report, Some(failure.error)),
        };
        rule.add(error.as_ref().map(Error::kind));
        let carrier = done
            .route()
            .map_or_else(|| route.name.clone(), str::to_owned);
        report.extras_mut().parts.push(RoutePart {
            route: carrier,
            recipients: to.iter().map(ToString::to_string).collect(),
            error,
        });
        report.delivered.extend(done.delivered);
        report.refused.extend(done.refused);
        report.attempts += done.attempts;
        report.payload_sent |= done.payload_sent;
        report.data_reply = done.data_reply.or(report.data_reply);
    }
    let code = rule.exit_code();
    let failed = || {
        report
            .parts()
            .iter()
            .filter_map(|p| Some((p, p.error.as_ref()?)))
    };
    // Of the parts that make the exit code, one whose outcome is unknown is told first: a
    // refused connection is also 75, and must not hide that a copy may have gone.
    // (Reversed, as max_by_key keeps the last of equals: the first such part is told.)
    let worst = failed()
        .rev()
        .filter(|(_, e)| e.kind().exit_code() == code)
        .max_by_key(|(_, e)| e.kind() == ErrorKind::OutcomeUnknown);
    let Some((part, error)) = worst else {
        return Ok(Delivery::Sent { prepared, report });
    };
    let mut others = String::new();
    if !report.delivered.is_empty() {
        let have: Vec<&str> = report
            .delivered
            .iter()
            .map(|r| r.address.as_str())
            .collect();
        others.push_str(&format!("; delivered to {}", have.join(", ")));
    }
    for (unknown, _) in
        failed().filter(|(p, e)| e.kind() == ErrorKind::OutcomeUnknown && !std::ptr::eq(*p, part))
    {
        others.push_str(&format!(
            "; the outcome is unknown for {} (through profile {})",
            unknown.recipients.join(", "),
            unknown.route
        ));
    }
    let error = Error::new(
        error.kind(),
        format!(
            "through profile {} to {}: {}{others}",
            part.route,
            part.recipients.join(", "),
            error.message()
        ),
    );
    Err(Failure { error, report })
}

/// `route` without rules by domain: `"*"`'s route is the connection itself, rules and all.
fn alone(route: &Connection) -> Connection {
    Connection {
        by_domain: Vec::new(),
        ..route.clone()
    }
}

/// Where a batch record still deferred after its retries goes: the outbox, when the
/// profile keeps one (`outbox = true`).
#[derive(Debug, Clone, Copy)]
pub struct Deferrals<'a> {
    /// The outbox.
    pub outbox: &'a Outbox,
    /// The connection the entry is queued for.
    pub connection: &'a Connection,
    /// The batch's options (partial delivery, DSN) the entry keeps.
    pub options: &'a DeliveryOptions,
}

/// How one batch record ended.
#[derive(Debug)]
pub struct Settled {
    /// What the transport said.
    pub sent: std::result::Result<BatchSent, Failure>,
    /// The outbox entry that now owns the record's retries, or why it could not be
    /// queued; `None` when it was not deferred or there is no outbox.
    pub queued: Option<Result<String>>,
}

/// A batch record after its send: a temporary failure goes to the outbox when there is
/// one, with what the attempts did (who has it already, who refused it for good). Its
/// outcome goes to the delivery log.
pub fn settle_record(
    prepared: &Prepared,
    sent: std::result::Result<BatchSent, Failure>,
    deferrals: Option<Deferrals>,
    log: &DeliveryLog,
    observer: &mut dyn Observer,
) -> Settled {
    let queued = match (&sent, deferrals) {
        (Err(failure), Some(to)) if failure.error.kind() == ErrorKind::Temporary => {
            Some(queue_deferred(
                to.outbox,
                prepared,
                to.connection,
                to.options,
                &failure.report,
                &failure.error,
            ))
        }
        _ => None,
    };
    let mut logged = match &sent {
        Ok(BatchSent::Sent(report)) if report.refused.is_empty() => {
            Logged::ok(Status::Sent, Some(report))
        }
        // --allow-partial, the others refused for good.
        Ok(BatchSent::Sent(report)) => Logged::ok(Status::Partial, Some(report)),
        Ok(BatchSent::Saved(path)) => Logged {
            saved: Some(path),
            ..Logged::ok(Status::Saved, None)
        },
        Err(failure) => Logged::failed(&failure.error, Some(&failure.report)),
    };
    if let Some(Ok(id)) = &queued {
        logged.outbox_id = Some(id);
        logged.exit_code = 0;
        if logged.status == Status::Deferred {
            logged.status = Status::Queued;
        }
    }
    log.record(&Facts::of(prepared), &logged, observer);
    Settled { sent, queued }
}
