//! Where idempotency keys are kept: the outbox folder's file ledger ([`idempotency`]),
//! or a PostgreSQL database every machine shares (`ledger = "postgres://…"`,
//! `pg_ledger`). Both are a [`Ledger`], so [`dispatch`] claims,
//! records and frees a key one way whichever holds it.
//!
//! [`dispatch`]: super::submit::dispatch

use std::path::PathBuf;
use std::time::Instant;

use crate::error::{Error, ErrorKind, Result};
use crate::outbox::idempotency::{self, Claim, FirstSend, FirstStatus, KeyGuard};
use crate::outbox::pg_ledger::PgLedger;
use crate::outbox::send_counts;
use crate::profile::{Origin, RecipientPolicy, Resolved};

/// An idempotency ledger: a key is claimed before the message goes, its outcome recorded
/// after, and a send that surely did not go frees it again.
pub trait Ledger {
    /// Takes `key` for this run, waiting (until `deadline`) for another run that holds
    /// it. `None`: the key is new and this run may send; `Some`: it was used within the
    /// retention window, and nothing may be sent.
    fn claim(&mut self, key: &str, deadline: Instant) -> Result<Option<FirstSend>>;

    /// The claimed key's message went (or waits in the outbox): a later run with it is a
    /// duplicate of `first`.
    fn record(&mut self, key: &str, first: &FirstSend) -> Result<()>;

    /// The claimed key's send failed with `error`: the key is free again unless the
    /// outcome is unknown (the message may have gone).
    fn release(&mut self, key: &str, error: &Error);

    /// Takes one message's slot under `policy`'s caps per hour and day: the outbox
    /// folder's counts, or the database's for `scope` (every machine sharing it counts
    /// against one cap). 75 naming the cap when it is reached; nothing when no cap is set.
    fn take_slot(&mut self, scope: &str, policy: &RecipientPolicy, deadline: Instant)
    -> Result<()>;
}

/// The ledger `resolved` names: the PostgreSQL one of `--ledger` (`$ENVOI_LEDGER`, the
/// profile's `ledger`), else the outbox folder's file. A database that cannot be reached
/// is 75: then nothing may be sent, since no one could tell a second sender.
pub fn open(resolved: &Resolved, deadline: Instant) -> Result<Box<dyn Ledger + Send>> {
    match &resolved.ledger {
        Some((url, origin)) => {
            let what = match origin {
                Origin::Flag(name) => (*name).to_owned(),
                Origin::Variable(name) => format!("${name}"),
                Origin::File | Origin::Default => "the profile's `ledger`".to_owned(),
            };
            Ok(Box::new(PgLedger::connect(
                &what,
                url,
                resolved.ledger_password.as_ref(),
                deadline,
            )?))
        }
        None => Ok(Box::new(FileLedger {
            dir: resolved.outbox_dir()?.to_path_buf(),
            held: None,
        })),
    }
}

/// The outbox folder's `idempotency.json`, with the key's lock held from the claim to
/// the outcome.
#[derive(Debug)]
struct FileLedger {
    dir: PathBuf,
    held: Option<KeyGuard>,
}

impl Ledger for FileLedger {
    fn claim(&mut self, key: &str, deadline: Instant) -> Result<Option<FirstSend>> {
        match idempotency::claim(&self.dir, key, deadline)? {
            Claim::Fresh(guard) => {
                self.held = Some(guard);
                Ok(None)
            }
            Claim::Duplicate(first) => Ok(Some(first)),
        }
    }

    fn record(&mut self, key: &str, first: &FirstSend) -> Result<()> {
        // A queued message's entry carries the key (the claim looks there), and its
        // flush records it when it is delivered.
        let recorded = match first.status {
            FirstStatus::Queued => Ok(()),
            status => idempotency::record(&self.dir, key, &first.message_id, status),
        };
        self.held = None;
        recorded
    }

    fn take_slot(
        &mut self,
        _scope: &str,
        policy: &RecipientPolicy,
        deadline: Instant,
    ) -> Result<()> {
        send_counts::take(&self.dir, policy, crate::durable::unix_now(), deadline)
    }

    fn release(&mut self, _key: &str, _error: &Error) {
        // Nothing was recorded: letting go of the key's lock frees it (an unknown
        // outcome included, as this ledger has always done: the message is not known
        // to have gone, and the error said to check before retrying).
        self.held = None;
    }
}

/// The database's methods are its own (`pg_ledger` imports nothing from here, so the two
/// files make no circle).
impl Ledger for PgLedger {
    fn claim(&mut self, key: &str, deadline: Instant) -> Result<Option<FirstSend>> {
        PgLedger::claim(self, key, deadline)
    }

    fn record(&mut self, key: &str, first: &FirstSend) -> Result<()> {
        PgLedger::record(self, key, first)
    }

    fn take_slot(
        &mut self,
        scope: &str,
        policy: &RecipientPolicy,
        _deadline: Instant,
    ) -> Result<()> {
        // Each statement is bounded by the server's statement_timeout (the deadline's).
        PgLedger::take_slot(self, scope, policy)
    }

    fn release(&mut self, key: &str, error: &Error) {
        // An unknown outcome keeps the claim: a later run answers `unknown` (75) once
        // this run's deadline has passed, and never sends a second copy.
        if error.kind() != ErrorKind::OutcomeUnknown {
            PgLedger::release(self, key);
        }
    }
}
