//! Durable state: the crash-safe queue on disk (`queue`), sending what it holds
//! (`flush`), and the idempotency ledger beside it ([`idempotency`]) or in a shared
//! PostgreSQL database (`pg_ledger`), both behind [`ledger::Ledger`]; a batch's records
//! claimed by many workers in that database ([`fleet`]); and [`submit`],
//! the one way every command's message goes out, and the delivery log ([`DeliveryLog`])
//! both write a line to for each message; the suppression list of `batch` ([`suppress`]).
//!
//! Everything here survives a crash: it is written with [`crate::durable`] before it is
//! relied upon, and every entry is sent with the delivery layer below.

pub mod fleet;
mod flush;
pub mod idempotency;
pub mod ledger;
mod log;
mod outcome;
mod pg_ledger;
mod policy;
mod queue;
mod send_counts;
pub mod sent_copy;
#[cfg(unix)]
pub mod spool;
pub mod submit;
pub mod suppress;

pub use flush::{
    EntryOutcome, FirstAttempt, FlushOptions, FlushSummary, Queued, drop_entry, flush,
    queue_deferred, send_queued,
};
pub use log::DeliveryLog;
pub use outcome::{ExitRule, Status};
pub use queue::{EntryState, Folder, Outbox, Refusal};
