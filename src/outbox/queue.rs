//! The crash-safe outbox: messages written to disk before the first attempt, sent
//! later by `envoi outbox flush`, never lost and never silently deleted.
//!
//! Layout under the outbox directory:
//! - `tmp/`: entries being written; anything here is incomplete and ignored.
//! - `queue/<id>/`: one entry: `message.eml` (the exact bytes, written once), `state.json`
//!   (envelope and progress, replaced atomically) and `lock` (an advisory lock file).
//! - `failed/<id>/`: entries refused permanently or given up, with the last server reply.
//!
//! Every write is temp file → fsync → rename → fsync of the directory, so a crash at
//! any point leaves either the old or the new state. An entry is taken by locking its
//! `lock` file (released by the kernel when a process dies) and re-checking that it is
//! still queued, so overlapping flushes never send one entry twice. An entry leaves the
//! queue only after the server's 250 to the final dot: a crash between that 250 and the
//! removal sends it once more (the documented duplicate window; the Message-ID is the
//! same, so receivers can tell).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::deliver::Dsn;
use crate::durable;
use crate::error::{Error, ErrorKind, Result};
use crate::message::{MessageBytes, StreamError};
use crate::ownership::{self, Owner};
use crate::profile::Route;

/// One recipient the server refused for good.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// The address.
    pub address: String,
    /// The server's reply, `code text`.
    pub reply: String,
}

/// What the outbox knows about an entry (`state.json`). Never holds a password.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryState {
    /// The Message-ID, fixed at enqueue; every retry sends the same bytes.
    pub message_id: String,
    /// MAIL FROM.
    pub from: Option<String>,
    /// Recipients still to deliver.
    pub pending: Vec<String>,
    /// Recipients the server accepted the message for.
    pub delivered: Vec<String>,
    /// Recipients refused for good.
    pub refused: Vec<Refusal>,
    /// Send to the accepted recipients even when others are refused.
    pub allow_partial: bool,
    /// How to reach the server.
    pub route: Route,
    /// When the entry was queued (seconds since the epoch).
    pub queued_at: u64,
    /// Attempts so far.
    pub attempts: u32,
    /// Not before this time (seconds since the epoch).
    pub next_attempt_at: u64,
    /// What went wrong last, for `envoi outbox list` and `failed/`.
    pub last_error: Option<String>,
    /// The `--idempotency-key` it was queued with: while it is queued, the key is taken.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// The delivery status notifications it was sent with (sendmail's -N/-R/-V).
    #[serde(default)]
    pub dsn: Option<Dsn>,
    /// How long `message.eml` was when it was written (OB08): a file cut short or
    /// changed since is not sent. Set by the outbox when it writes the entry; `None` in
    /// entries of an older envoi, which are sent unchecked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<u64>,
    /// The SHA-256 of `message.eml` as written, in hex, beside [`EntryState::length`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// An outbox directory.
#[derive(Debug, Clone)]
pub struct Outbox {
    root: PathBuf,
}

/// An entry locked by this process: only the holder sends, updates or removes it.
#[derive(Debug)]
pub(crate) struct Locked {
    dir: PathBuf,
    id: String,
    _lock: File,
}

/// Where an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Folder {
    /// Waiting to be sent.
    Queue,
    /// Refused for good or given up.
    Failed,
}

impl Folder {
    fn name(self) -> &'static str {
        match self {
            Folder::Queue => "queue",
            Folder::Failed => "failed",
        }
    }
}

const MESSAGE: &str = "message.eml";
const STATE: &str = "state.json";
const LOCK: &str = "lock";

fn io_error(what: &str, path: &Path, e: io::Error) -> Error {
    // A full disk or a read-only directory: nothing was queued, the caller must retry.
    Error::new(
        ErrorKind::Temporary,
        format!("outbox: cannot {what} {}: {e}", path.display()),
    )
}

impl Outbox {
    /// Opens (and creates) the outbox at `root`. Its folders hold mail: they are made
    /// private (0700), also when an older envoi made them readable by others. They must
    /// be this user's and writable by no one else (78, OB03): whoever can put an entry
    /// there chooses where envoi sends it, and with which password.
    pub fn open(root: &Path) -> Result<Outbox> {
        durable::create_private_dir(root, true).map_err(|e| io_error("create", root, e))?;
        ownership::check_owned_dir(root, "the outbox folder", INSTEAD)?;
        for sub in ["tmp", "queue", "failed"] {
            let dir = root.join(sub);
            durable::create_private_dir(&dir, true).map_err(|e| io_error("create", &dir, e))?;
            // Readable by others is repaired below; writable by others, someone may
            // have put entries there already.
            ownership::check_owned_dir(&dir, "the outbox folder", INSTEAD)?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))
                    .map_err(|e| io_error("protect", &dir, e))?;
            }
        }
        Ok(Outbox {
            root: root.to_path_buf(),
        })
    }

    /// The outbox directory.
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// Writes a new entry durably and returns it locked, ready for its first attempt.
    pub(crate) fn enqueue(&self, message: &MessageBytes, state: &EntryState) -> Result<Locked> {
        let id = new_id();
        let tmp = self.root.join("tmp").join(&id);
        // Not create_dir_all: an existing folder means another process drew this id.
        durable::create_private_dir(&tmp, false).map_err(|e| io_error("create", &tmp, e))?;
        let lock = match fill(&tmp, message, state) {
            Ok(lock) => lock,
            Err(e) => {
                // Not queued (a full disk, say): leave no half entry behind.
                let _ = fs::remove_dir_all(&tmp);
                return Err(e);
            }
        };
        let queued = self.dir(Folder::Queue, &id);
        fs::rename(&tmp, &queued).map_err(|e| io_error("queue", &queued, e))?;
        sync_dir(&self.root.join("queue"))?;
        Ok(Locked {
            dir: queued,
            id,
            _lock: lock,
        })
    }

    /// Deletes what interrupted runs left in `tmp/` (half-written entries, removals
    /// cut short) once it is older than `age`, so a write in progress is never touched.
    pub(crate) fn clean_tmp(&self, age: Duration) {
        let Ok(entries) = fs::read_dir(self.root.join("tmp")) else {
            return;
        };
        for entry in entries.flatten() {
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|e| e > age));
            if old {
                // Best effort: whatever stays is retried by the next flush.
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }

    /// The ids in a folder, oldest first.
    pub fn ids(&self, folder: Folder) -> Result<Vec<String>> {
        let dir = self.root.join(folder.name());
        let mut ids: Vec<String> = fs::read_dir(&dir)
            .map_err(|e| io_error("read", &dir, e))?
            .filter_map(|entry| entry.ok())
            .filter_map(|entry| entry.file_name().into_string().ok())
            .filter(|name| !name.starts_with('.'))
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// An entry's state, without locking (for listing). `None` if it is gone.
    pub fn peek(&self, folder: Folder, id: &str) -> Result<Option<EntryState>> {
        read_state(&self.dir(folder, id))
    }

    /// Locks a queued entry. `None` when another process holds it or it is gone. An
    /// entry whose `lock` file is missing (OB09) gets a new one: the file holds nothing,
    /// its only job is the lock, and without it the entry would be skipped forever.
    pub(crate) fn lock(&self, id: &str) -> Result<Option<Locked>> {
        check_id(id)?;
        let dir = self.dir(Folder::Queue, id);
        if !dir.join(LOCK).exists() && dir.join(STATE).exists() {
            recreate_lock(&dir.join(LOCK))?;
        }
        let Some(lock) = lock_file(&dir.join(LOCK))? else {
            return Ok(None);
        };
        // The holder before us may have finished and moved the entry away.
        if !dir.join(STATE).exists() {
            return Ok(None);
        }
        Ok(Some(Locked {
            dir,
            id: id.to_owned(),
            _lock: lock,
        }))
    }

    fn dir(&self, folder: Folder, id: &str) -> PathBuf {
        self.root.join(folder.name()).join(id)
    }

    /// The queued entry that carries `key`, if any.
    /// The queued entry of the outbox at `root` that carries `key`, without creating
    /// the outbox when there is none.
    pub(crate) fn find_key_in(root: &Path, key: &str) -> Result<Option<EntryState>> {
        if !root.join(Folder::Queue.name()).is_dir() {
            return Ok(None);
        }
        Outbox::open(root)?.find_key(key)
    }

    fn find_key(&self, key: &str) -> Result<Option<EntryState>> {
        for id in self.ids(Folder::Queue)? {
            if let Ok(Some(state)) = self.peek(Folder::Queue, &id)
                && state.idempotency_key.as_deref() == Some(key)
            {
                return Ok(Some(state));
            }
        }
        Ok(None)
    }

    /// Removes a delivered (or dropped) entry: out of the queue atomically, then deleted.
    /// The caller keeps the lock until it drops `entry`.
    pub(crate) fn remove(&self, entry: &Locked) -> Result<()> {
        let gone = self.root.join("tmp").join(format!("{}.removed", entry.id));
        fs::rename(&entry.dir, &gone).map_err(|e| io_error("remove", &entry.dir, e))?;
        sync_dir(&self.root.join("queue"))?;
        // The entry is out of the queue; failing to delete the leftovers loses nothing.
        let _ = fs::remove_dir_all(&gone);
        Ok(())
    }

    /// Moves an entry to `failed/`, keeping its message and last state.
    pub(crate) fn fail(&self, entry: Locked, state: &EntryState) -> Result<PathBuf> {
        entry.save(state)?;
        let failed = self.dir(Folder::Failed, &entry.id);
        fs::rename(&entry.dir, &failed).map_err(|e| io_error("move", &entry.dir, e))?;
        sync_dir(&self.root.join("queue"))?;
        sync_dir(&self.root.join("failed"))?;
        Ok(failed)
    }
}

impl Locked {
    /// The entry's id.
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// False once the entry has been removed or moved to `failed/`.
    pub(crate) fn is_queued(&self) -> bool {
        self.dir.join(STATE).exists()
    }

    /// The stored message, left in its file until it is sent. Not readable, the entry
    /// waits (as any outbox I/O failure does). Not the length and SHA-256 `state` says
    /// were written (OB08), or not this user's file: 65, the entry is damaged and must
    /// not be sent.
    pub(crate) fn message(&self, state: &EntryState) -> Result<MessageBytes> {
        let path = self.dir.join(MESSAGE);
        ownership::check_owned(&path, "the outbox message", Owner::Me, INSTEAD)
            .map_err(|e| damaged(&self.id, e.message()))?;
        let message = MessageBytes::stored(&path)
            .map_err(|e| Error::new(ErrorKind::Temporary, format!("outbox: {}", e.message())))?;
        let (Some(length), Some(sha256)) = (state.length, &state.sha256) else {
            return Ok(message);
        };
        let mut seal = Seal::new(std::io::sink());
        message.write_to(&mut seal).map_err(|e| {
            Error::new(
                ErrorKind::Temporary,
                format!("outbox: {}", e.into_error().message()),
            )
        })?;
        let (found, found_sha) = seal.finish();
        if found != length {
            return Err(damaged(
                &self.id,
                &format!(
                    "{MESSAGE} is {} bytes, {} were written",
                    thousands(found),
                    thousands(length)
                ),
            ));
        }
        if &found_sha != sha256 {
            return Err(damaged(
                &self.id,
                &format!("{MESSAGE} is not what was written (its SHA-256 differs)"),
            ));
        }
        Ok(message)
    }

    /// The stored state.
    pub(crate) fn state(&self) -> Result<EntryState> {
        read_state(&self.dir)?.ok_or_else(|| {
            Error::new(
                ErrorKind::Internal,
                format!("outbox: entry {} lost its state", self.id),
            )
        })
    }

    /// Replaces the state atomically.
    pub(crate) fn save(&self, state: &EntryState) -> Result<()> {
        let path = self.dir.join(STATE);
        durable::replace_file(
            &path,
            &self.dir.join(".state.json.tmp"),
            &state_json(state)?,
        )
        .map_err(|e| io_error("update", &path, e))
    }
}

/// Writes a new entry's files into `dir`, durably, and locks it. The message is written
/// from its parts: the entry holds every byte of it, attached files included, so a
/// queued message never depends on a file that may change or go before it is sent.
fn fill(dir: &Path, message: &MessageBytes, state: &EntryState) -> Result<File> {
    let path = dir.join(MESSAGE);
    let mut written = (0, String::new());
    durable::write_file_with(&path, |out| {
        let mut seal = Seal::new(out);
        message.write_to(&mut seal)?;
        written = seal.finish();
        Ok(())
    })
    .map_err(|e| match e {
        StreamError::Source(e) => Error::new(
            e.kind(),
            format!("{}; the message was not queued", e.message()),
        ),
        StreamError::Sink(e) => io_error("write", &path, e),
    })?;
    let state = EntryState {
        length: Some(written.0),
        sha256: Some(written.1),
        ..state.clone()
    };
    write_synced(&dir.join(STATE), &state_json(&state)?)?;
    write_synced(&dir.join(LOCK), b"")?;
    sync_dir(dir)?;
    lock_file(&dir.join(LOCK))?
        .ok_or_else(|| Error::new(ErrorKind::Internal, "outbox: a new entry is locked already"))
}

fn state_json(state: &EntryState) -> Result<Vec<u8>> {
    serde_json::to_vec_pretty(state).map_err(|e| {
        Error::new(
            ErrorKind::Internal,
            format!("outbox: cannot encode the state: {e}"),
        )
    })
}

/// An entry's state; `None` if it is gone. An entry this user did not write (OB03: a
/// folder or `state.json` of another owner) is refused as damaged: its `route` would
/// choose where envoi sends, and with which password.
fn read_state(dir: &Path) -> Result<Option<EntryState>> {
    let path = dir.join(STATE);
    match fs::metadata(&path) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error("read", &path, e)),
    }
    // Before it is read: what another user wrote is not even parsed.
    for file in [dir, &path] {
        ownership::check_owned(file, "the outbox entry", Owner::Me, INSTEAD)?;
    }
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error("read", &path, e)),
    };
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        Error::new(
            ErrorKind::Internal,
            format!("outbox: {} is damaged: {e}", path.display()),
        )
    })
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    durable::write_file(path, bytes).map_err(|e| io_error("write", path, e))
}

fn sync_dir(dir: &Path) -> Result<()> {
    durable::sync_dir(dir).map_err(|e| io_error("sync", dir, e))
}

/// Takes the exclusive lock on `path` without waiting. `None` when it is held or gone.
fn lock_file(path: &Path) -> Result<Option<File>> {
    let file = match OpenOptions::new().read(true).write(true).open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error("open", path, e)),
    };
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(fs::TryLockError::WouldBlock) => Ok(None),
        Err(fs::TryLockError::Error(e)) => Err(io_error("lock", path, e)),
    }
}

/// Makes a missing `lock` file anew (private, empty); one made meanwhile by another
/// flush is fine: whoever locks it first takes the entry.
fn recreate_lock(path: &Path) -> Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        // Another flush made it, or the entry left the queue meanwhile.
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::AlreadyExists | io::ErrorKind::NotFound
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(io_error("recreate the lock", path, e)),
    }
}

/// How errors about the outbox's owner say to use another one.
pub(crate) const INSTEAD: &str = "set another outbox_dir (or ENVOI_OUTBOX_DIR)";

/// A damaged entry (65): it goes to `failed/` with `why`, never to the server.
fn damaged(id: &str, why: &str) -> Error {
    Error::invalid(format!("outbox entry {id} is damaged: {why}"))
}

/// Counts and hashes the bytes written through it: an entry's length and SHA-256.
struct Seal<W> {
    inner: W,
    length: u64,
    digest: ring::digest::Context,
}

impl<W: io::Write> Seal<W> {
    fn new(inner: W) -> Seal<W> {
        Seal {
            inner,
            length: 0,
            digest: ring::digest::Context::new(&ring::digest::SHA256),
        }
    }

    /// The length and the SHA-256 in lowercase hex.
    fn finish(self) -> (u64, String) {
        let hex = self
            .digest
            .finish()
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        (self.length, hex)
    }
}

impl<W: io::Write> io::Write for Seal<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.digest.update(&buf[..n]);
        self.length += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// `2345` as `2,345`, as people read byte counts.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `<milliseconds>-<random>`: sorts by age, unique without coordination.
fn new_id() -> String {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let random = crate::token::alphanumeric(10);
    format!("{millis:013}-{random}")
}

/// An id names a directory: refuse anything that could climb out of the outbox.
fn check_id(id: &str) -> Result<()> {
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(Error::usage(format!("{id:?} is not an outbox id")));
    }
    Ok(())
}

/// The wait before the next attempt after `attempts` failures: 1 minute doubling to
/// 1 hour (Postfix's queue uses 5 minutes to about 67 minutes).
pub(crate) fn retry_delay(attempts: u32) -> Duration {
    let minutes = 1u64 << attempts.saturating_sub(1).min(6);
    Duration::from_secs(60 * minutes.min(60))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::durable::unix_now as now;

    fn state() -> EntryState {
        EntryState {
            message_id: "<1@example.com>".into(),
            from: Some("a@example.com".into()),
            pending: vec!["b@example.com".into()],
            delivered: vec![],
            refused: vec![],
            allow_partial: false,
            route: Route::default(),
            queued_at: now(),
            attempts: 0,
            next_attempt_at: 0,
            last_error: None,
            idempotency_key: None,
            dsn: None,
            length: None,
            sha256: None,
        }
    }

    #[test]
    fn enqueue_lock_update_remove() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path()).unwrap();
        let entry = outbox
            .enqueue(&b"Subject: x\r\n\r\nhi\r\n".to_vec().into(), &state())
            .unwrap();
        let id = entry.id().to_owned();
        assert_eq!(
            outbox.ids(Folder::Queue).unwrap(),
            std::slice::from_ref(&id)
        );
        assert!(outbox.lock(&id).unwrap().is_none(), "locked twice");
        let mut s = entry.state().unwrap();
        s.attempts = 1;
        entry.save(&s).unwrap();
        assert_eq!(
            outbox.peek(Folder::Queue, &id).unwrap().unwrap().attempts,
            1
        );
        outbox.remove(&entry).unwrap();
        assert!(outbox.ids(Folder::Queue).unwrap().is_empty());
        assert!(outbox.lock(&id).unwrap().is_none());
    }

    /// An attached file that cannot be read queues nothing and leaves nothing behind.
    #[test]
    fn a_missing_attached_file_is_not_queued() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(&dir.path().join("outbox")).unwrap();
        let attached = dir.path().join("a.bin");
        fs::write(&attached, b"x").unwrap();
        let mut message = MessageBytes::from(b"Subject: x\r\n\r\n".to_vec());
        message.push_file(crate::message::AttachedFile::open("--attach", &attached).unwrap());
        fs::remove_file(&attached).unwrap();
        let Err(err) = outbox.enqueue(&message, &state()) else {
            panic!("queued a message whose attachment is gone");
        };
        assert_eq!(err.kind(), ErrorKind::NoInput, "{err}");
        assert!(
            err.message().ends_with("the message was not queued"),
            "{err}"
        );
        assert!(outbox.ids(Folder::Queue).unwrap().is_empty());
        assert_eq!(
            fs::read_dir(dir.path().join("outbox/tmp")).unwrap().count(),
            0
        );
    }

    /// The audit found the outbox world-readable (0755 folders, 0644 files).
    #[cfg(unix)]
    #[test]
    fn entries_are_private_to_their_owner() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("outbox");
        fs::create_dir_all(root.join("queue")).unwrap();
        fs::set_permissions(root.join("queue"), fs::Permissions::from_mode(0o755)).unwrap();
        let outbox = Outbox::open(&root).unwrap();
        let entry = outbox.enqueue(&b"m".to_vec().into(), &state()).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        for folder in ["tmp", "queue", "failed"] {
            assert_eq!(mode(&root.join(folder)), 0o700, "{folder}");
        }
        assert_eq!(mode(&entry.dir), 0o700);
        assert_eq!(mode(&entry.dir.join(MESSAGE)), 0o600);
        assert_eq!(mode(&entry.dir.join(STATE)), 0o600);
    }

    /// OB03: a folder others can write may hold their entries already: refused, not
    /// repaired (one others can only read is repaired above).
    #[cfg(unix)]
    #[test]
    fn ob03_a_folder_others_can_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("outbox");
        fs::create_dir_all(root.join("queue")).unwrap();
        fs::set_permissions(root.join("queue"), fs::Permissions::from_mode(0o777)).unwrap();
        let err = Outbox::open(&root).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.message().contains("chmod go-w"), "{err}");
        assert!(err.message().contains("outbox_dir"), "{err}");
    }

    #[test]
    fn failed_entries_keep_message_and_state() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path()).unwrap();
        let entry = outbox.enqueue(&b"m".to_vec().into(), &state()).unwrap();
        let id = entry.id().to_owned();
        let mut s = state();
        s.last_error = Some("550 no such user".into());
        let path = outbox.fail(entry, &s).unwrap();
        assert_eq!(fs::read(path.join(MESSAGE)).unwrap(), b"m");
        let kept = outbox.peek(Folder::Failed, &id).unwrap().unwrap();
        assert_eq!(kept.last_error.as_deref(), Some("550 no such user"));
    }

    #[test]
    fn ids_cannot_escape() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path()).unwrap();
        assert!(outbox.lock("../x").is_err());
        assert!(outbox.lock("").is_err());
    }

    #[test]
    fn retry_delay_grows_to_an_hour() {
        assert_eq!(retry_delay(1), Duration::from_secs(60));
        assert_eq!(retry_delay(2), Duration::from_secs(120));
        assert_eq!(retry_delay(20), Duration::from_secs(3600));
    }
}
