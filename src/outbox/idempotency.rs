//! `--idempotency-key`: a second send with the same key within the retention window is
//! not sent again; envoi answers `duplicate` with the first Message-ID.
//!
//! The ledger is `idempotency.json` in the outbox directory, read and replaced under a
//! short lock on `idempotency.lock` (temp file, fsync, rename, fsync of the directory).
//! A run with a key also holds that key's own lock (`idempotency-keys/<hash>.lock`) from
//! its check until its outcome is recorded, so two overlapping runs with one key cannot
//! both send, while runs with other keys are not held up. A key is recorded once the
//! message was accepted: a failed send can be run again with the same key. While a
//! message waits in the outbox, its entry carries the key instead.
//!
//! Whoever can change the ledger decides what envoi believes was sent: the outbox folder
//! and `idempotency-keys/` must be this user's and writable by no one else, and the
//! ledger and the lock files are state files ([`durable::open_state_file`]): never
//! followed through a link, refused (78) when someone else owns them.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::durable::{self, StateAccess, open_state_file, unix_now as now};
use crate::error::{Error, ErrorKind, Result};
use crate::message::check;
use crate::outbox::queue::{INSTEAD, Outbox};
use crate::ownership;

/// How long a key is remembered.
pub const RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// How the first send with a key ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FirstStatus {
    /// The server accepted it.
    Sent,
    /// The file transport wrote it.
    Saved,
    /// It waits in the outbox (never in the ledger: the entry carries the key).
    Queued,
}

/// The first send with a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirstSend {
    /// Its Message-ID.
    pub message_id: String,
    /// How it ended.
    pub status: FirstStatus,
}

/// What [`claim`] found.
#[derive(Debug)]
pub enum Claim {
    /// The key is new: this run may send, holding the key until it has recorded it.
    Fresh(KeyGuard),
    /// The key was used within the retention window: send nothing.
    Duplicate(FirstSend),
}

/// Takes `key` for a send in the outbox directory `dir`: checks it, waits (until
/// `deadline`) for another run that holds it, then looks for an earlier send with it in
/// the ledger and among the queued entries.
pub fn claim(dir: &Path, key: &str, deadline: Instant) -> Result<Claim> {
    check_key(key)?;
    let guard = KeyGuard::acquire(dir, key, deadline)?;
    if let Some(first) = lookup(dir, key)? {
        return Ok(Claim::Duplicate(FirstSend {
            message_id: first.message_id,
            status: first.status,
        }));
    }
    if let Some(queued) = Outbox::find_key_in(dir, key)? {
        return Ok(Claim::Duplicate(FirstSend {
            message_id: queued.message_id,
            status: FirstStatus::Queued,
        }));
    }
    Ok(Claim::Fresh(guard))
}

/// What the ledger remembers of a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    /// The Message-ID of the first send.
    message_id: String,
    /// When it was recorded (seconds since the epoch).
    at: u64,
    /// `sent` or `saved`.
    status: FirstStatus,
}

fn io_error(what: &str, path: &Path, e: io::Error) -> Error {
    Error::new(
        ErrorKind::Temporary,
        format!("idempotency ledger: cannot {what} {}: {e}", path.display()),
    )
}

/// Checks a key: printable, without line breaks, at most 200 characters.
pub(crate) fn check_key(key: &str) -> Result<()> {
    check::header_text("--idempotency-key", key)?;
    if key.is_empty() || key.chars().count() > 200 {
        return Err(Error::usage("--idempotency-key: give 1 to 200 characters"));
    }
    Ok(())
}

/// One key's lock, held by the run that may send with it.
#[derive(Debug)]
pub struct KeyGuard {
    _lock: File,
}

impl KeyGuard {
    /// Takes `key`'s lock in `dir`, waiting for another run with the same key until
    /// `deadline` (then 75: that run is still sending).
    fn acquire(dir: &Path, key: &str, deadline: Instant) -> Result<KeyGuard> {
        owned_dir(dir, "the outbox folder")?;
        let keys = dir.join("idempotency-keys");
        owned_dir(&keys, "the idempotency keys folder")?;
        // FNV-1a: a stable file name for a key of any length (a collision only makes two
        // keys share a lock, never a record).
        let path = keys.join(format!("{:016x}.lock", crate::token::fnv1a(key.as_bytes())));
        let file = open_lock_file("the idempotency key lock", &path)?;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(KeyGuard { _lock: file }),
                Err(fs::TryLockError::WouldBlock) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(fs::TryLockError::WouldBlock) => {
                    return Err(Error::new(
                        ErrorKind::Temporary,
                        "another envoi is still sending with this --idempotency-key",
                    ));
                }
                Err(fs::TryLockError::Error(e)) => return Err(io_error("lock", &path, e)),
            }
        }
    }
}

/// Whether the ledger in `dir` records `key` as sent (within the retention window): the
/// system spool's check that a file it finds again was queued and sent already.
#[cfg(unix)]
pub(crate) fn recorded(dir: &Path, key: &str) -> Result<bool> {
    Ok(lookup(dir, key)?.is_some())
}

/// The record of `key` in the ledger in `dir`, if it is within the retention window.
fn lookup(dir: &Path, key: &str) -> Result<Option<Record>> {
    let ledger = Ledger::open(dir)?;
    Ok(ledger
        .records
        .get(key)
        .filter(|r| now().saturating_sub(r.at) < RETENTION.as_secs())
        .cloned())
}

/// Records `key` in the ledger in `dir`, dropping records past the retention window.
pub fn record(dir: &Path, key: &str, message_id: &str, status: FirstStatus) -> Result<()> {
    let mut ledger = Ledger::open(dir)?;
    let now = now();
    ledger
        .records
        .retain(|_, r| now.saturating_sub(r.at) < RETENTION.as_secs());
    ledger.records.insert(
        key.to_owned(),
        Record {
            message_id: message_id.to_owned(),
            at: now,
            status,
        },
    );
    ledger.write()
}

/// The ledger file, read under its lock (held until dropped).
struct Ledger {
    path: PathBuf,
    records: BTreeMap<String, Record>,
    _lock: File,
}

impl Ledger {
    fn open(dir: &Path) -> Result<Ledger> {
        owned_dir(dir, "the outbox folder")?;
        let lock_path = dir.join("idempotency.lock");
        let lock = open_lock_file("the idempotency ledger's lock", &lock_path)?;
        lock.lock().map_err(|e| io_error("lock", &lock_path, e))?;
        let path = dir.join("idempotency.json");
        let records = match fs::symlink_metadata(&path) {
            // No ledger yet (a link, even a dangling one, is refused below).
            Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
            _ => {
                // A ledger others could read is made private; it is envoi's own file in
                // envoi's own folder, so that needs no word.
                let mut ledger =
                    open_state_file("the idempotency ledger", &path, StateAccess::Read)?.file;
                let mut bytes = Vec::new();
                ledger
                    .read_to_end(&mut bytes)
                    .map_err(|e| io_error("read", &path, e))?;
                serde_json::from_slice(&bytes).map_err(|e| {
                    Error::config(format!(
                        "the idempotency ledger {} is damaged ({e}); move it away to start a new \
                         one",
                        path.display()
                    ))
                })?
            }
        };
        Ok(Ledger {
            path,
            records,
            _lock: lock,
        })
    }

    fn write(&self) -> Result<()> {
        let json = serde_json::to_vec_pretty(&self.records).map_err(|e| {
            Error::new(
                ErrorKind::Internal,
                format!("cannot encode the ledger: {e}"),
            )
        })?;
        durable::replace_file(&self.path, &self.path.with_extension("json.tmp"), &json)
            .map_err(|e| io_error("write", &self.path, e))
    }
}

/// Creates `dir` (private) when missing, and trusts it only when it is this user's and
/// writable by no one else: whoever can put files there chooses the ledger.
fn owned_dir(dir: &Path, what: &str) -> Result<()> {
    durable::create_private_dir(dir, true).map_err(|e| io_error("create", dir, e))?;
    ownership::check_owned_dir(dir, what, INSTEAD)
}

/// Opens (or creates) a lock file: a state file, so a link planted in its place is not
/// followed.
fn open_lock_file(label: &str, path: &Path) -> Result<File> {
    Ok(open_state_file(label, path, StateAccess::Write)?.file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_key_is_found_again() {
        let dir = tempfile::tempdir().unwrap();
        assert!(lookup(dir.path(), "job-42").unwrap().is_none());
        record(dir.path(), "job-42", "<1@example.com>", FirstStatus::Sent).unwrap();
        let found = lookup(dir.path(), "job-42").unwrap().unwrap();
        assert_eq!(found.message_id, "<1@example.com>");
        assert!(lookup(dir.path(), "job-43").unwrap().is_none());
    }

    #[test]
    fn one_key_one_holder() {
        // Successes get a deadline no loaded machine misses; only the expected wait for
        // a held key is short (a shared 200 ms deadline made this test flaky under load).
        let dir = tempfile::tempdir().unwrap();
        let ample = || Instant::now() + Duration::from_secs(30);
        let held = KeyGuard::acquire(dir.path(), "k", ample()).unwrap();
        let soon = Instant::now() + Duration::from_millis(200);
        let err = KeyGuard::acquire(dir.path(), "k", soon).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Temporary);
        assert!(KeyGuard::acquire(dir.path(), "other", ample()).is_ok());
        drop(held);
        assert!(KeyGuard::acquire(dir.path(), "k", ample()).is_ok());
    }

    #[test]
    fn a_claimed_key_is_a_duplicate_once_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let soon = Instant::now() + Duration::from_millis(200);
        let Claim::Fresh(guard) = claim(dir.path(), "k", soon).unwrap() else {
            panic!("a new key is fresh");
        };
        record(dir.path(), "k", "<1@example.com>", FirstStatus::Saved).unwrap();
        drop(guard);
        match claim(dir.path(), "k", soon).unwrap() {
            Claim::Duplicate(first) => assert_eq!(
                first,
                FirstSend {
                    message_id: "<1@example.com>".into(),
                    status: FirstStatus::Saved
                }
            ),
            Claim::Fresh(_) => panic!("a recorded key is a duplicate"),
        }
    }

    #[test]
    fn keys_are_checked() {
        assert!(check_key("nightly-2026-11-26").is_ok());
        assert!(check_key("").is_err());
        assert!(check_key("a\nb").is_err());
        assert!(check_key(&"k".repeat(201)).is_err());
    }
}
