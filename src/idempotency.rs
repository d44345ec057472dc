//! `--idempotency-key`: a second send with the same key within the retention window is
//! not sent again; envoi answers `duplicate` with the first Message-ID.
//!
//! The ledger is `idempotency.json` in the outbox directory. A run with a key holds an
//! exclusive lock on `idempotency.lock` from the check until the outcome is recorded,
//! so two overlapping runs with one key cannot both send. The ledger is replaced
//! atomically (temp file, fsync, rename), and a key is recorded only once its message
//! was accepted by the server or durably queued: a failed send can be run again.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::check;
use crate::error::{Error, ErrorKind, Result};
use crate::outbox::now;

/// How long a key is remembered.
pub const RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// What the ledger remembers of a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The Message-ID of the first send.
    pub message_id: String,
    /// When it was recorded (seconds since the epoch).
    pub at: u64,
    /// `sent` or `queued`.
    pub status: String,
}

/// The ledger, locked for this process until dropped.
#[derive(Debug)]
pub struct Ledger {
    path: PathBuf,
    records: BTreeMap<String, Record>,
    _lock: File,
}

fn io_error(what: &str, path: &Path, e: io::Error) -> Error {
    Error::new(
        ErrorKind::Temporary,
        format!("idempotency ledger: cannot {what} {}: {e}", path.display()),
    )
}

/// Checks a key: printable, without line breaks, at most 200 characters.
pub fn check_key(key: &str) -> Result<()> {
    check::header_text("--idempotency-key", key)?;
    if key.is_empty() || key.chars().count() > 200 {
        return Err(Error::usage("--idempotency-key: give 1 to 200 characters"));
    }
    Ok(())
}

impl Ledger {
    /// Locks and reads the ledger in `dir` (waiting for another run that holds it).
    pub fn open(dir: &Path) -> Result<Ledger> {
        fs::create_dir_all(dir).map_err(|e| io_error("create", dir, e))?;
        let lock_path = dir.join("idempotency.lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io_error("open", &lock_path, e))?;
        lock.lock().map_err(|e| io_error("lock", &lock_path, e))?;
        let path = dir.join("idempotency.json");
        let records = match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                Error::config(format!(
                    "the idempotency ledger {} is damaged ({e}); move it away to start a new one",
                    path.display()
                ))
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(io_error("read", &path, e)),
        };
        Ok(Ledger {
            path,
            records,
            _lock: lock,
        })
    }

    /// The record of `key` if it is within the retention window.
    pub fn get(&self, key: &str) -> Option<&Record> {
        self.records
            .get(key)
            .filter(|r| now().saturating_sub(r.at) < RETENTION.as_secs())
    }

    /// Records `key` and writes the ledger, dropping records past the retention window.
    pub fn record(&mut self, key: &str, message_id: &str, status: &str) -> Result<()> {
        let now = now();
        self.records
            .retain(|_, r| now.saturating_sub(r.at) < RETENTION.as_secs());
        self.records.insert(
            key.to_owned(),
            Record {
                message_id: message_id.to_owned(),
                at: now,
                status: status.to_owned(),
            },
        );
        let json = serde_json::to_vec_pretty(&self.records).map_err(|e| {
            Error::new(
                ErrorKind::Internal,
                format!("cannot encode the ledger: {e}"),
            )
        })?;
        let temp = self.path.with_extension("json.tmp");
        let mut file = File::create(&temp).map_err(|e| io_error("create", &temp, e))?;
        file.write_all(&json)
            .and_then(|()| file.sync_all())
            .map_err(|e| io_error("write", &temp, e))?;
        fs::rename(&temp, &self.path).map_err(|e| io_error("replace", &self.path, e))?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io_error("sync", dir, e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_key_is_found_again_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut ledger = Ledger::open(dir.path()).unwrap();
            assert!(ledger.get("job-42").is_none());
            ledger.record("job-42", "<1@example.com>", "sent").unwrap();
        }
        let ledger = Ledger::open(dir.path()).unwrap();
        assert_eq!(ledger.get("job-42").unwrap().message_id, "<1@example.com>");
        assert!(ledger.get("job-43").is_none());
    }

    #[test]
    fn keys_are_checked() {
        assert!(check_key("nightly-2026-11-26").is_ok());
        assert!(check_key("").is_err());
        assert!(check_key("a\nb").is_err());
        assert!(check_key(&"k".repeat(201)).is_err());
    }
}
