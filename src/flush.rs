//! Sending outbox entries: `send --queue` and `envoi outbox flush`.
//!
//! Each attempt sends the stored bytes unchanged to the recipients still pending, then
//! records the outcome in the entry before anything else happens: delivered → the entry
//! is removed; temporary failure → it stays, with the error and the time of the next
//! attempt (1 minute doubling to 1 hour); permanent refusal or too old → `failed/`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use lettre::Address;
use lettre::address::Envelope;

use crate::config::Profile;
use crate::dispatch::{Failure, Policy, Report};
use crate::error::{Error, ErrorKind, Result};
use crate::idempotency;
use crate::message::Prepared;
use crate::outbox::{EntryState, Locked, Outbox, Refusal, Route, now, retry_delay};
use crate::output::Outcome;
use crate::send::{DeliveryOptions, connection_for, deliver};

/// What became of one entry.
#[derive(Debug)]
pub enum EntryOutcome {
    /// The server took it for every recipient; the entry is gone. `None` when an earlier,
    /// interrupted run had already delivered it and only the removal was left.
    Sent(Option<Box<Outcome>>),
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
    /// Entries left alone: locked by another flush, or not due yet.
    pub skipped: usize,
}

/// How long one entry's attempt may take during a flush.
const ENTRY_DEADLINE: Duration = Duration::from_secs(120);

/// What `flush` needs besides the outbox.
#[derive(Debug, Clone)]
pub struct FlushOptions {
    /// Send entries even if their next attempt is not due.
    pub all: bool,
    /// Entries older than this go to `failed/`.
    pub lifetime: Duration,
    /// Config file for profile routes, overriding the one recorded at enqueue.
    pub config: Option<PathBuf>,
    /// Print the SMTP dialogue.
    pub verbose: bool,
}

/// Writes `prepared` to the outbox durably and returns the entry, locked.
pub fn enqueue(
    outbox: &Outbox,
    prepared: &Prepared,
    route: Route,
    allow_partial: bool,
    idempotency_key: Option<&str>,
) -> Result<Locked> {
    let state = EntryState {
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
        allow_partial,
        route,
        queued_at: now(),
        attempts: 0,
        next_attempt_at: 0,
        last_error: None,
        idempotency_key: idempotency_key.map(str::to_owned),
    };
    outbox.enqueue(&prepared.bytes, &state)
}

/// The first attempt of `send --queue`, right after [`enqueue`], within `deadline`.
pub fn first_attempt(
    outbox: &Outbox,
    entry: Locked,
    prepared: Prepared,
    (name, profile): (&str, &Profile),
    (verbose, deadline): (bool, Option<Instant>),
) -> Result<Outcome, Failure> {
    let id = entry.id().to_owned();
    match attempt(outbox, entry, (name, profile), verbose, deadline)? {
        EntryOutcome::Sent(Some(outcome)) => Ok(*outcome),
        EntryOutcome::Sent(None) => Err(Error::new(
            ErrorKind::Internal,
            "a new outbox entry had no recipient (a bug)",
        )
        .into()),
        EntryOutcome::Deferred(error) => Ok(Outcome::Queued {
            prepared,
            id,
            reason: error.message().to_owned(),
        }),
        EntryOutcome::Failed(error) => Err(Error::new(
            error.kind(),
            format!("{error} (the message is kept in the outbox's failed/{id})"),
        )
        .into()),
    }
}

/// Sends every due entry once.
pub fn flush(outbox: &Outbox, options: &FlushOptions) -> Result<FlushSummary> {
    let mut summary = FlushSummary::default();
    let mut routes: HashMap<String, Result<(String, Profile)>> = HashMap::new();
    outbox.clean_tmp(Duration::from_secs(3600));
    for id in outbox.ids(crate::outbox::Folder::Queue)? {
        let Some(entry) = outbox.lock(&id)? else {
            summary.skipped += 1;
            continue;
        };
        let mut state = match entry.state() {
            Ok(state) => state,
            Err(e) => {
                // One damaged entry must not hold up the others.
                eprintln!("envoi: warning: skipping outbox entry {id}: {e}");
                summary.skipped += 1;
                continue;
            }
        };
        if now().saturating_sub(state.queued_at) > options.lifetime.as_secs() {
            let error = Error::new(
                ErrorKind::Unavailable,
                format!(
                    "gave up after {} days; last error: {}",
                    options.lifetime.as_secs() / 86_400,
                    state.last_error.as_deref().unwrap_or("none")
                ),
            );
            state.last_error = Some(error.message().to_owned());
            outbox.fail(entry, &state)?;
            summary.entries.push((id, EntryOutcome::Failed(error)));
            continue;
        }
        if !options.all && state.next_attempt_at > now() {
            summary.skipped += 1;
            continue;
        }
        let key = serde_json::to_string(&state.route).unwrap_or_default();
        let connection = routes
            .entry(key)
            .or_insert_with(|| connection_for(&state.route, options.config.as_deref()));
        let deadline = Some(Instant::now() + ENTRY_DEADLINE);
        let outcome = match connection {
            Ok((name, profile)) => {
                attempt(outbox, entry, (name, profile), options.verbose, deadline)
            }
            Err(error) => defer(entry, state, error.clone()),
        };
        let outcome = outcome.unwrap_or_else(|e| {
            // One entry that cannot be handled must not hold up the others.
            eprintln!("envoi: warning: outbox entry {id}: {e}");
            EntryOutcome::Deferred(e)
        });
        summary.entries.push((id, outcome));
    }
    Ok(summary)
}

/// One attempt at a locked entry. Who got the message is saved in the entry right
/// after each transaction the server accepted, before QUIT: a process killed after a 250
/// does not send it to them again.
pub fn attempt(
    outbox: &Outbox,
    entry: Locked,
    (name, profile): (&str, &Profile),
    verbose: bool,
    deadline: Option<Instant>,
) -> Result<EntryOutcome> {
    let mut state = entry.state()?;
    if state.pending.is_empty() {
        finish(outbox, &entry, &state)?;
        return Ok(EntryOutcome::Sent(None));
    }
    let prepared = Prepared {
        message_id: state.message_id.clone(),
        envelope: stored_envelope(&state)?,
        bytes: entry.message()?,
    };
    state.attempts += 1;
    let options = DeliveryOptions {
        policy: Policy {
            retries: 0,
            allow_partial: state.allow_partial,
            deadline,
            ..Policy::default()
        },
        verbose,
    };
    let mut progress = |report: &Report| {
        record_progress(&mut state, report);
        if state.pending.is_empty() {
            // Everyone has it: out of the queue at once, before QUIT.
            finish(outbox, &entry, &state)
        } else {
            entry.save(&state)
        }
    };
    let result = deliver(name, profile, prepared, &options, &mut progress);
    match result {
        Ok(outcome) => {
            match &outcome {
                Outcome::Sent { report, .. } => record_progress(&mut state, report),
                // The file transport wrote it for everyone.
                _ => state.pending.clear(),
            }
            if state.pending.is_empty() {
                if entry.is_queued() {
                    finish(outbox, &entry, &state)?;
                }
                return Ok(EntryOutcome::Sent(Some(Box::new(outcome))));
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
                    Ok(EntryOutcome::Failed(error))
                }
                // Network trouble, 4xx, an unknown outcome, or credentials and settings
                // the user can fix: keep it for a later flush.
                ErrorKind::Temporary
                | ErrorKind::OutcomeUnknown
                | ErrorKind::AuthRefused
                | ErrorKind::Certificate
                | ErrorKind::Config => defer(entry, state, error),
            }
        }
    }
}

/// Everyone has the message: its idempotency key (if any) goes to the ledger, then the
/// entry leaves the queue. A crash in between leaves an entry with nobody pending, which
/// the next flush finishes without sending.
fn finish(outbox: &Outbox, entry: &Locked, state: &EntryState) -> Result<()> {
    if let Some(key) = &state.idempotency_key {
        idempotency::record(outbox.root(), key, &state.message_id, "sent")?;
    }
    outbox.remove(entry)
}

fn defer(entry: Locked, mut state: EntryState, error: Error) -> Result<EntryOutcome> {
    state.last_error = Some(error.message().to_owned());
    state.next_attempt_at = now() + retry_delay(state.attempts.max(1)).as_secs();
    entry.save(&state)?;
    Ok(EntryOutcome::Deferred(error))
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
    let done =
        |a: &String| state.delivered.contains(a) || state.refused.iter().any(|r| &r.address == a);
    let pending: Vec<String> = state.pending.iter().filter(|a| !done(a)).cloned().collect();
    state.pending = pending;
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
        None if outbox.peek(crate::outbox::Folder::Queue, id)?.is_some() => Err(Error::new(
            ErrorKind::Temporary,
            format!("outbox entry {id} is being sent by another envoi; try again"),
        )),
        None => Err(Error::new(
            ErrorKind::NoInput,
            format!("no queued outbox entry {id} in {}", outbox.root().display()),
        )),
    }
}
