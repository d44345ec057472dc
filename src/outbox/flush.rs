//! Sending outbox entries: `send --queue` and `envoi outbox flush`.
//!
//! Each attempt sends the stored bytes unchanged to the recipients still pending, then
//! records the outcome in the entry before anything else happens: delivered → the entry
//! is removed; temporary failure → it stays, with the error and the time of the next
//! attempt (1 minute doubling to 1 hour); permanent refusal or too old → `failed/`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use lettre::Address;
use lettre::address::Envelope;

use crate::deliver::{
    Delivery, DeliveryOptions, Failure, Notice, Observer, Policy, Report, Transcript, deliver_along,
};
use crate::durable::unix_now as now;
use crate::error::{Error, ErrorKind, Result};
use crate::message::Prepared;
use crate::outbox::idempotency::{self, FirstStatus};
use crate::outbox::log::{Facts, Logged};
use crate::outbox::queue::{EntryState, Folder, Locked, Outbox, Refusal, retry_delay};
use crate::outbox::{DeliveryLog, Status};
use crate::outbox::{policy, sent_copy};
use crate::profile::{Connection, RecipientPolicy, Resolved, Route};

/// What became of one entry in a flush.
#[derive(Debug)]
pub enum EntryOutcome {
    /// Every recipient has it (now, or in an interrupted earlier run); the entry is gone.
    Sent,
    /// A temporary failure (or recipients deferred); the entry waits for the next flush.
    Deferred(Error),
    /// Refused for good or given up; the entry is in `failed/`.
    Failed(Error),
}

/// One flush's work, entry by entry.
#[derive(Debug, Default)]
pub struct FlushSummary {
    /// `(id, outcome)` for each entry attempted.
    pub entries: Vec<(String, EntryOutcome)>,
    /// Entries left alone: locked by another flush, not due yet, or damaged.
    pub skipped: usize,
    /// The damaged entries among the skipped ones, with what is wrong; one damaged entry
    /// must not hold up the others.
    pub damaged: Vec<(String, Error)>,
}

/// How long one entry's attempt may take during a flush.
const ENTRY_DEADLINE: Duration = Duration::from_secs(120);

/// What `flush` needs besides the outbox and the connections.
#[derive(Debug, Clone)]
pub struct FlushOptions {
    /// Send entries even if their next attempt is not due.
    pub all: bool,
    /// Entries older than this go to `failed/`.
    pub lifetime: Duration,
    /// Where the SMTP dialogue goes (`-v`).
    pub transcript: Option<Transcript>,
}

/// How the first attempt of `send --queue` ended without an error.
#[derive(Debug)]
pub enum FirstAttempt {
    /// Delivered right away; nothing stays in the outbox.
    Delivered(Delivery),
    /// A temporary failure: the entry waits for `envoi outbox flush`.
    Queued(Queued),
}

/// A message that waits in the outbox after its first attempt failed temporarily.
#[derive(Debug)]
pub struct Queued {
    /// The message.
    pub prepared: Prepared,
    /// The outbox entry.
    pub id: String,
    /// Why the first attempt did not deliver it.
    pub reason: String,
}

/// `send --queue`: writes `prepared` to the outbox durably (with the idempotency key it
/// takes, if any), then makes the first attempt within `deadline`.
pub fn send_queued(
    outbox: &Outbox,
    prepared: Prepared,
    connection: &Connection,
    options: &DeliveryOptions,
    idempotency_key: Option<&str>,
    observer: &mut dyn Observer,
) -> Result<FirstAttempt, Failure> {
    let entry = enqueue(
        outbox,
        &prepared,
        connection.route.clone(),
        options,
        idempotency_key,
    )?;
    let id = entry.id().to_owned();
    let state = entry.state()?;
    let attempt = Attempt {
        connection,
        transcript: options.transcript,
        deadline: options.policy.deadline,
        recheck: None,
    };
    match attempt.run(outbox, entry, state, observer)? {
        Attempted::Delivered(delivery) => Ok(FirstAttempt::Delivered(delivery)),
        Attempted::Deferred(error) => Ok(FirstAttempt::Queued(Queued {
            prepared,
            id,
            reason: error.message().to_owned(),
        })),
        Attempted::Failed(error) => Err(Error::new(
            error.kind(),
            format!("{error} (the message is kept in the outbox's failed/{id})"),
        )
        .into()),
    }
}

/// `envoi batch` with a profile's `outbox = true`: a record that failed temporarily
/// after its retries goes to the outbox for `envoi outbox flush`, with what the attempts
/// did (who has it already, who refused it for good) and its next attempt in a minute.
/// The entry's id.
pub fn queue_deferred(
    outbox: &Outbox,
    prepared: &Prepared,
    connection: &Connection,
    options: &DeliveryOptions,
    report: &Report,
    error: &Error,
) -> Result<String> {
    let mut state = new_state(prepared, connection.route.clone(), options, None);
    record_progress(&mut state, report);
    state.attempts = report.attempts.max(1);
    state.next_attempt_at = now() + retry_delay(state.attempts).as_secs();
    state.last_error = Some(error.message().to_owned());
    let entry = outbox.enqueue(&prepared.bytes, &state)?;
    Ok(entry.id().to_owned())
}

/// Writes a message of the system spool into the outbox, due now, with `key` (its spool
/// file's name) as its idempotency key: a flush that stopped before removing the spool
/// file finds the entry by it and does not queue the message twice. The entry's id.
#[cfg(unix)]
pub(crate) fn enqueue_spooled(
    outbox: &Outbox,
    prepared: &Prepared,
    route: Route,
    key: &str,
) -> Result<String> {
    let entry = enqueue(
        outbox,
        prepared,
        route,
        &DeliveryOptions::default(),
        Some(key),
    )?;
    Ok(entry.id().to_owned())
}

/// Writes `prepared` to the outbox durably and returns the entry, locked.
fn enqueue(
    outbox: &Outbox,
    prepared: &Prepared,
    route: Route,
    options: &DeliveryOptions,
    idempotency_key: Option<&str>,
) -> Result<Locked> {
    outbox.enqueue(
        &prepared.bytes,
        &new_state(prepared, route, options, idempotency_key),
    )
}

/// The state of a message about to enter the outbox: nobody has it yet, never tried.
fn new_state(
    prepared: &Prepared,
    route: Route,
    options: &DeliveryOptions,
    idempotency_key: Option<&str>,
) -> EntryState {
    EntryState {
        message_id: prepared.message_id.clone(),
        from: prepared.envelope.from().map(ToString::to_string),
        pending: prepared
            .envelope
            .to()
            .iter()
            .map(ToString::to_string)
            .collect(),
        delivered: Vec::new(),
        refused: Vec::new(),
        allow_partial: options.policy.allow_partial,
        route,
        queued_at: now(),
        attempts: 0,
        next_attempt_at: 0,
        last_error: None,
        idempotency_key: idempotency_key.map(str::to_owned),
        dsn: options.dsn.clone(),
        // The outbox measures the message as it writes it.
        length: None,
        sha256: None,
    }
}

/// Sends every due entry once, each through the connection its route names now.
pub fn flush(
    outbox: &Outbox,
    connections: &Resolved,
    options: &FlushOptions,
    observer: &mut dyn Observer,
) -> Result<FlushSummary> {
    let mut summary = FlushSummary::default();
    let mut flusher = Flusher {
        outbox,
        connections,
        routes: HashMap::new(),
        options,
    };
    outbox.clean_tmp(Duration::from_secs(3600));
    for id in outbox.ids(Folder::Queue)? {
        let Some(entry) = outbox.lock(&id)? else {
            summary.skipped += 1;
            continue;
        };
        let state = match entry.state() {
            Ok(state) => state,
            Err(e) => {
                summary.damaged.push((id, e));
                summary.skipped += 1;
                continue;
            }
        };
        let (facts, route) = (facts_of(&state), state.route.clone());
        match flusher.entry(entry, state, observer) {
            Some((outcome, report)) => {
                flusher.log(&route, &facts, &id, &outcome, report.as_ref(), observer);
                summary.entries.push((id, outcome));
            }
            None => summary.skipped += 1,
        }
    }
    Ok(summary)
}

/// One flush: the connections it has opened so far, by route.
struct Flusher<'a> {
    outbox: &'a Outbox,
    connections: &'a Resolved,
    routes: HashMap<Route, Result<Connection>>,
    options: &'a FlushOptions,
}

/// What an entry's log line says of its message: those it goes to in this attempt
/// (everyone, for one an earlier run delivered), and its size as the outbox wrote it.
fn facts_of(state: &EntryState) -> Facts {
    Facts {
        message_id: state.message_id.clone(),
        from: state.from.clone(),
        recipients: if state.pending.is_empty() {
            state.delivered.clone()
        } else {
            state.pending.clone()
        },
        size: state.length.unwrap_or(0),
    }
}

impl Flusher<'_> {
    /// Writes the line of the entry `id` to the log of the connection its route names.
    fn log(
        &mut self,
        route: &Route,
        facts: &Facts,
        id: &str,
        outcome: &EntryOutcome,
        report: Option<&Report>,
        observer: &mut dyn Observer,
    ) {
        let connections = self.connections;
        let connection = self
            .routes
            .entry(route.clone())
            .or_insert_with(|| connections.connection_for(route));
        let log = DeliveryLog::of(connections, connection.as_ref().ok());
        let log = match (report.and_then(Report::route), connection) {
            (Some(carrier), Ok(connection)) => log.through(connection, carrier),
            _ => log,
        };
        let logged = match outcome {
            EntryOutcome::Sent => Logged::ok(Status::Sent, report),
            EntryOutcome::Deferred(e) => Logged {
                status: Status::Deferred,
                outbox_id: Some(id),
                ..Logged::failed(e, report)
            },
            // Kept in failed/ under the same id.
            EntryOutcome::Failed(e) => Logged {
                outbox_id: Some(id),
                ..Logged::failed(e, report)
            },
        };
        log.record(facts, &logged, observer);
    }

    /// Handles one locked entry; `None` when it is not due. An error is the entry's
    /// deferral: one entry that cannot be handled must not hold up the others. With the
    /// outcome, what the server said when it took the message.
    fn entry(
        &mut self,
        entry: Locked,
        mut state: EntryState,
        observer: &mut dyn Observer,
    ) -> Option<(EntryOutcome, Option<Report>)> {
        if state.pending.is_empty() {
            // An earlier run delivered it and was stopped before removing it.
            return Some(match finish(self.outbox, &entry, &state) {
                Ok(()) => (EntryOutcome::Sent, None),
                Err(e) => (EntryOutcome::Deferred(e), None),
            });
        }
        let lifetime = self.options.lifetime.as_secs();
        if now().saturating_sub(state.queued_at) > lifetime {
            let error = Error::new(
                ErrorKind::Unavailable,
                format!(
                    "gave up after {}; last error: {}",
                    match lifetime / 86_400 {
                        1 => "1 day".to_owned(),
                        days => format!("{days} days"),
                    },
                    state.last_error.as_deref().unwrap_or("none")
                ),
            );
            state.last_error = Some(error.message().to_owned());
            return Some(match self.outbox.fail(entry, &state) {
                Ok(_) => (EntryOutcome::Failed(error), None),
                Err(e) => (EntryOutcome::Deferred(e), None),
            });
        }
        if !self.options.all && state.next_attempt_at > now() {
            return None;
        }
        let connections = self.connections;
        let connection = self
            .routes
            .entry(state.route.clone())
            .or_insert_with(|| connections.connection_for(&state.route));
        let deadline = Instant::now() + ENTRY_DEADLINE;
        let outcome = match connection {
            Ok(connection) => {
                let attempt = Attempt {
                    connection,
                    transcript: self.options.transcript,
                    deadline: Some(deadline),
                    recheck: Some(&self.connections.policy),
                };
                attempt.run(self.outbox, entry, state, observer)
            }
            Err(error) => defer(entry, state, error.clone()),
        };
        Some(match outcome {
            Ok(Attempted::Delivered(mut delivery @ Delivery::Sent { .. })) => {
                // The copy in Sent, now that everyone has it and the entry is gone.
                if let Ok(connection) = connection {
                    sent_copy::after_delivery(
                        connection,
                        &mut delivery,
                        deadline,
                        self.options.transcript,
                        observer,
                    );
                }
                let report = match delivery {
                    Delivery::Sent { report, .. } => Some(report),
                    Delivery::Saved { .. } => None,
                };
                (EntryOutcome::Sent, report)
            }
            Ok(Attempted::Delivered(Delivery::Saved { .. })) => (EntryOutcome::Sent, None),
            Ok(Attempted::Deferred(e)) | Err(e) => (EntryOutcome::Deferred(e), None),
            Ok(Attempted::Failed(e)) => (EntryOutcome::Failed(e), None),
        })
    }
}

/// How one attempt at an entry ended.
enum Attempted {
    Delivered(Delivery),
    Deferred(Error),
    Failed(Error),
}

/// One attempt at a locked entry with recipients pending.
struct Attempt<'a> {
    connection: &'a Connection,
    transcript: Option<Transcript>,
    deadline: Option<Instant>,
    /// For a flush: the system's recipient policy, under which (with the route's
    /// profiles' own) the entry is checked again before it goes, as it may have been
    /// queued before a rule was written. `None` for a first attempt, checked as it was
    /// built.
    recheck: Option<&'a RecipientPolicy>,
}

/// Records each accepted transaction in the entry before QUIT, and passes notices on.
struct Recorder<'a> {
    outbox: &'a Outbox,
    entry: &'a Locked,
    state: &'a mut EntryState,
    notices: &'a mut dyn Observer,
}

impl Observer for Recorder<'_> {
    fn accepted(&mut self, report: &Report) -> Result<()> {
        record_progress(self.state, report);
        if self.state.pending.is_empty() {
            // Everyone has it: out of the queue at once, before QUIT.
            finish(self.outbox, self.entry, self.state)
        } else {
            self.entry.save(self.state)
        }
    }

    fn notice(&mut self, notice: Notice) {
        self.notices.notice(notice);
    }
}

impl Attempt<'_> {
    /// Sends the entry to its pending recipients. Who got the message is saved in the
    /// entry right after each transaction the server accepted, before QUIT: a process
    /// killed after a 250 does not send it to them again.
    fn run(
        &self,
        outbox: &Outbox,
        entry: Locked,
        mut state: EntryState,
        observer: &mut dyn Observer,
    ) -> Result<Attempted> {
        let bytes = match entry.message(&state) {
            Ok(bytes) => bytes,
            // Cut short or changed since it was written (OB08): never sent, kept in failed/.
            Err(e) if e.kind() == ErrorKind::InvalidData => {
                return settle_failure(outbox, entry, state, e);
            }
            Err(e) => return Err(e),
        };
        let prepared = Prepared {
            message_id: state.message_id.clone(),
            envelope: stored_envelope(&state)?,
            bytes,
        };
        if let Some(system) = self.recheck {
            let policy = self
                .connection
                .profiles()
                .into_iter()
                .fold(system.clone(), |policy, (_, profile)| {
                    policy.within(profile.policy.clone())
                });
            if let Err(e) = policy::check_queued(&policy, &prepared.envelope) {
                return settle_failure(outbox, entry, state, e);
            }
        }
        state.attempts += 1;
        let options = DeliveryOptions {
            policy: Policy {
                retries: 0,
                allow_partial: state.allow_partial,
                deadline: self.deadline,
                ..Policy::default()
            },
            transcript: self.transcript,
            dsn: state.dsn.clone(),
        };
        let mut recorder = Recorder {
            outbox,
            entry: &entry,
            state: &mut state,
            notices: observer,
        };
        // The copy in Sent is made after the entry, and its message file, are gone: the
        // bytes are kept in memory for it when one is wanted.
        let kept = sent_copy::wanted(self.connection, &prepared)
            .then(|| prepared.bytes.to_vec().ok())
            .flatten();
        let result = deliver_along(self.connection, prepared, &options, &mut recorder);
        match result {
            Ok(mut delivery) => {
                if let (Delivery::Sent { prepared, .. }, Some(kept)) = (&mut delivery, kept) {
                    prepared.bytes = kept.into();
                }
                match &delivery {
                    Delivery::Sent { report, .. } => record_progress(&mut state, report),
                    // The file transport wrote it for everyone.
                    Delivery::Saved { .. } => state.pending.clear(),
                }
                if state.pending.is_empty() {
                    if entry.is_queued() {
                        finish(outbox, &entry, &state)?;
                    }
                    return Ok(Attempted::Delivered(delivery));
                }
                // --allow-partial: delivered to some; the deferred (4xx) ones stay queued.
                let error = Error::new(
                    ErrorKind::Temporary,
                    format!("still to deliver to {}", state.pending.join(", ")),
                );
                defer(entry, state, error)
            }
            Err(Failure { error, report }) => {
                record_progress(&mut state, &report);
                settle_failure(outbox, entry, state, error)
            }
        }
    }
}

/// After a failed attempt: a permanent refusal moves the entry to `failed/`; anything the
/// next flush may cure keeps it queued.
fn settle_failure(
    outbox: &Outbox,
    entry: Locked,
    mut state: EntryState,
    error: Error,
) -> Result<Attempted> {
    match error.kind() {
        // The server refused the message or every recipient for good.
        ErrorKind::RecipientRefused
        | ErrorKind::Unavailable
        | ErrorKind::InvalidData
        | ErrorKind::Usage
        | ErrorKind::NoInput
        | ErrorKind::Internal => {
            state.last_error = Some(error.message().to_owned());
            outbox.fail(entry, &state)?;
            Ok(Attempted::Failed(error))
        }
        // Network trouble, 4xx, an unknown outcome, or credentials and settings the
        // user can fix: keep it for a later flush.
        ErrorKind::Temporary
        | ErrorKind::OutcomeUnknown
        | ErrorKind::AuthRefused
        | ErrorKind::Certificate
        | ErrorKind::Config => defer(entry, state, error),
    }
}

/// Everyone has the message: its idempotency key (if any) goes to the ledger, then the
/// entry leaves the queue. A crash in between leaves an entry with nobody pending, which
/// the next flush finishes without sending.
fn finish(outbox: &Outbox, entry: &Locked, state: &EntryState) -> Result<()> {
    if let Some(key) = &state.idempotency_key {
        idempotency::record(outbox.root(), key, &state.message_id, FirstStatus::Sent)?;
    }
    outbox.remove(entry)
}

fn defer(entry: Locked, mut state: EntryState, error: Error) -> Result<Attempted> {
    state.last_error = Some(error.message().to_owned());
    state.next_attempt_at = now() + retry_delay(state.attempts.max(1)).as_secs();
    entry.save(&state)?;
    Ok(Attempted::Deferred(error))
}

/// Moves delivered and permanently refused recipients out of `pending`. Idempotent:
/// the report is cumulative and may be recorded several times.
fn record_progress(state: &mut EntryState, report: &Report) {
    for d in &report.delivered {
        if !state.delivered.contains(&d.address) {
            state.delivered.push(d.address.clone());
        }
    }
    for r in report.refused.iter().filter(|r| r.is_permanent()) {
        if !state.refused.iter().any(|x| x.address == r.address) {
            state.refused.push(Refusal {
                address: r.address.clone(),
                reply: format!("{} {}", r.code, r.message),
            });
        }
    }
    state.pending.retain(|a| !report.settled(a));
}

fn stored_envelope(state: &EntryState) -> Result<Envelope> {
    let damaged = || {
        Error::new(
            ErrorKind::Internal,
            format!("outbox entry {} has a damaged envelope", state.message_id),
        )
    };
    let from = state
        .from
        .as_deref()
        .map(|f| f.parse::<Address>().map_err(|_| damaged()))
        .transpose()?;
    let to = state
        .pending
        .iter()
        .map(|a| a.parse::<Address>().map_err(|_| damaged()))
        .collect::<Result<Vec<_>>>()?;
    Envelope::new(from, to).map_err(|_| damaged())
}

/// `outbox drop ID`: removes a queued entry unless a flush is sending it.
pub fn drop_entry(outbox: &Outbox, id: &str) -> Result<()> {
    match outbox.lock(id)? {
        Some(entry) => outbox.remove(&entry),
        None if outbox.peek(Folder::Queue, id)?.is_some() => Err(Error::new(
            ErrorKind::Temporary,
            format!("outbox entry {id} is being sent by another envoi; try again"),
        )),
        None => Err(Error::new(
            ErrorKind::NoInput,
            format!("no queued outbox entry {id} in {}", outbox.root().display()),
        )),
    }
}
