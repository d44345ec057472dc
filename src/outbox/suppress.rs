//! The suppression list (`suppress = "/path"`): addresses `envoi batch` never sends to
//! again — hard bounces (a 5xx to RCPT TO), unsubscribes fed in with `envoi suppress
//! import`, and addresses added by hand. `envoi send` does not read it: see
//! docs/batch.md ("Bulk mail").
//!
//! The file is text, one entry a line, three fields separated by tabs:
//! `address<TAB>added (RFC 3339, UTC)<TAB>reason`; lines starting with `#` are comments.
//! An address is kept lowercased whole, local part included: the list errs toward not
//! sending, and no mailbox provider tells `Ann@` from `ann@`. A `+tag` is kept: it may be
//! another filter of the mailbox, and stripping it would need each provider's rules.
//!
//! The file is a state file ([`crate::durable::open_state_file`]): never opened through a
//! symbolic link, this user's own, not writable by others, created 0600. Writers hold
//! `PATH.lock` (an exclusive lock) while they read and change it; an entry is appended
//! with one write, a removal replaces the file by a rename, so a reader without the lock
//! (a batch starting) sees the whole list before or after a change, never half of one.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::durable::{StateAccess, open_state_file, sync_dir};
use crate::error::{Error, ErrorKind, Result};
use crate::message::address;

/// What errors call the file.
const LABEL: &str = "the suppression list (suppress)";

/// The first line of a new list.
const HEADER: &str = "# envoi suppression list: address<TAB>added (UTC)<TAB>reason\n";

/// The longest reason kept; a longer one is cut.
const MAX_REASON: usize = 300;

/// One address on the list.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Entry {
    /// Lowercased.
    pub address: String,
    /// When it was added, RFC 3339 in UTC (empty when a hand-edited line has none).
    pub added: String,
    /// Why: the server's reply to a hard bounce, `unsubscribed`, or the user's words.
    pub reason: String,
}

/// The list as read at one moment.
#[derive(Debug, Default, Clone)]
pub struct SuppressList {
    entries: BTreeMap<String, Entry>,
}

impl SuppressList {
    /// Reads the list at `path`; a missing file is an empty list (the first entry
    /// creates it). A file that is a link, someone else's, or writable by others is 78.
    pub fn load(path: &Path) -> Result<SuppressList> {
        match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(SuppressList::default());
            }
            _ => {}
        }
        let opened = open_state_file(LABEL, path, StateAccess::Read)?;
        read_list(path, opened.file)
    }

    /// The entry of `address` (any case), if it is on the list.
    pub fn get(&self, address: &str) -> Option<&Entry> {
        self.entries.get(&normalize(address))
    }

    /// Every entry, by address.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    /// Puts `entry` on the list as this run knows it (an entry [`add`] wrote), unless its
    /// address is there already.
    pub fn insert(&mut self, entry: Entry) {
        self.entries.entry(entry.address.clone()).or_insert(entry);
    }

    /// How many addresses are on the list.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// An address as the list keeps it: trimmed and lowercased whole.
pub fn normalize(address: &str) -> String {
    address.trim().to_lowercase()
}

/// `value` (from `label`: `ADDR`, a line of an imported file) checked as one address,
/// display name allowed and dropped: the bare address, lowercased. 65 when it is not one.
pub fn parse_address(label: &str, value: &str) -> Result<String> {
    let mailbox = address::parse_single(label, value.trim())?;
    Ok(normalize(mailbox.email.as_ref()))
}

/// Adds `addresses` (each with its reason) to the list at `path` at `now`, under the
/// list's lock, in one write; those already on it keep their first entry. The entries
/// added.
pub fn add(path: &Path, addresses: &[(String, String)], now: SystemTime) -> Result<Vec<Entry>> {
    let _lock = lock(path)?;
    let list = SuppressList::load(path)?;
    let added_at = crate::outbox::log::rfc3339(now);
    let mut added: Vec<Entry> = Vec::new();
    for (address, reason) in addresses {
        let address = normalize(address);
        if list.entries.contains_key(&address) || added.iter().any(|e| e.address == address) {
            continue;
        }
        added.push(Entry {
            address,
            added: added_at.clone(),
            reason: clean_reason(reason),
        });
    }
    if added.is_empty() {
        return Ok(added);
    }
    let opened = open_state_file(LABEL, path, StateAccess::Append)?;
    let mut file = opened.file;
    let failed = |e: std::io::Error| write_error(path, &e);
    let len = file.metadata().map_err(failed)?.len();
    let mut text = String::new();
    if len == 0 {
        text.push_str(HEADER);
    } else if !ends_with_newline(path, len)? {
        // A line cut short (a crash mid-write) must not run into the first new one.
        text.push('\n');
    }
    for entry in &added {
        text.push_str(&line_of(entry));
    }
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(failed)?;
    Ok(added)
}

/// Removes `address` from the list at `path`, under the list's lock; whether it was on
/// it. The file is replaced whole (through `PATH.tmp` and a rename).
pub fn remove(path: &Path, address: &str) -> Result<bool> {
    let _lock = lock(path)?;
    let mut list = SuppressList::load(path)?;
    if list.entries.remove(&normalize(address)).is_none() {
        return Ok(false);
    }
    let mut text = String::from(HEADER);
    for entry in list.entries.values() {
        text.push_str(&line_of(entry));
    }
    let temp = with_suffix(path, ".tmp");
    let opened = open_state_file(LABEL, &temp, StateAccess::Write)?;
    let mut file = opened.file;
    let failed = |e: std::io::Error| write_error(&temp, &e);
    file.set_len(0)
        .and_then(|()| file.write_all(text.as_bytes()))
        .and_then(|()| file.sync_all())
        .map_err(failed)?;
    std::fs::rename(&temp, path).map_err(|e| write_error(path, &e))?;
    if let Some(dir) = path.parent() {
        sync_dir(dir).map_err(|e| write_error(path, &e))?;
    }
    Ok(true)
}

/// Holds `PATH.lock` exclusively until dropped: one writer at a time.
fn lock(path: &Path) -> Result<File> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
        && !dir.is_dir()
    {
        return Err(Error::new(
            ErrorKind::NoInput,
            format!(
                "{LABEL} {}: the folder {} does not exist: create it (mkdir -p {}), or set \
                 suppress to a file in a folder that does",
                path.display(),
                dir.display(),
                dir.display()
            ),
        ));
    }
    let lock_path = with_suffix(path, ".lock");
    let opened = open_state_file(
        "the suppression list's lock (suppress)",
        &lock_path,
        StateAccess::Write,
    )?;
    opened
        .file
        .lock()
        .map_err(|e| write_error(&lock_path, &e))?;
    Ok(opened.file)
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn write_error(path: &Path, e: &std::io::Error) -> Error {
    Error::new(
        ErrorKind::NoInput,
        format!("{LABEL} {}: cannot write it: {e}", path.display()),
    )
}

/// Whether the last byte of the file at `path`, `len` bytes long, is a newline.
fn ends_with_newline(path: &Path, len: u64) -> Result<bool> {
    use std::io::{Seek, SeekFrom};
    let mut file = open_state_file(LABEL, path, StateAccess::Read)?.file;
    let mut last = [0u8];
    file.seek(SeekFrom::Start(len - 1))
        .and_then(|_| file.read_exact(&mut last))
        .map_err(|e| write_error(path, &e))?;
    Ok(last[0] == b'\n')
}

/// The entries of an open list file. A line's first field is the address, whatever it
/// holds (a hand-made line is honoured as it is); a blank or `#` line is skipped.
fn read_list(path: &Path, mut file: File) -> Result<SuppressList> {
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(|e| {
        Error::new(
            ErrorKind::NoInput,
            format!("{LABEL} {}: cannot read it: {e}", path.display()),
        )
    })?;
    let text = String::from_utf8_lossy(&bytes);
    let mut entries = BTreeMap::new();
    for line in text.lines() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields = line.splitn(3, '\t');
        let address = normalize(fields.next().unwrap_or_default());
        if address.is_empty() {
            continue;
        }
        let added = fields.next().unwrap_or_default().trim().to_owned();
        let reason = fields.next().unwrap_or_default().trim().to_owned();
        entries.entry(address.clone()).or_insert(Entry {
            address,
            added,
            reason,
        });
    }
    Ok(SuppressList { entries })
}

/// A reason as one field: control characters (tabs, line ends) become spaces, and it is
/// cut at [`MAX_REASON`] characters.
fn clean_reason(reason: &str) -> String {
    let clean: String = reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_REASON)
        .collect();
    clean.trim().to_owned()
}

fn line_of(entry: &Entry) -> String {
    format!("{}\t{}\t{}\n", entry.address, entry.added, entry.reason)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn entries_are_added_once_removed_and_read_back() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("suppress.tsv");
        assert!(SuppressList::load(&path).unwrap().is_empty());
        let at = UNIX_EPOCH + Duration::from_secs(1_765_000_000);
        let added = add(
            &path,
            &[
                (
                    "Ann@Example.COM".into(),
                    "550 5.1.1\tno\r\nsuch user".into(),
                ),
                ("bob@example.com".into(), "unsubscribed".into()),
                ("ann@example.com".into(), "again".into()),
            ],
            at,
        )
        .unwrap();
        assert_eq!(added.len(), 2);
        let again = add(&path, &[("ANN@example.com".into(), "x".into())], at).unwrap();
        assert!(again.is_empty());
        let list = SuppressList::load(&path).unwrap();
        assert_eq!(list.len(), 2);
        let ann = list.get("ann@EXAMPLE.com").unwrap();
        assert_eq!(ann.reason, "550 5.1.1 no  such user");
        assert_eq!(ann.added, "2025-12-06T05:46:40Z");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(HEADER), "{text}");
        assert!(remove(&path, "Bob@example.com").unwrap());
        assert!(!remove(&path, "bob@example.com").unwrap());
        let list = SuppressList::load(&path).unwrap();
        assert_eq!(list.len(), 1);
        assert!(list.get("bob@example.com").is_none());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_line_cut_short_does_not_swallow_the_next_entry() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("suppress.tsv");
        std::fs::write(&path, "cut@example.co").unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        add(&path, &[("new@example.com".into(), "r".into())], UNIX_EPOCH).unwrap();
        let list = SuppressList::load(&path).unwrap();
        assert!(list.get("new@example.com").is_some());
        assert!(list.get("cut@example.co").is_some());
    }

    #[test]
    fn a_link_is_not_followed() {
        let dir = tempfile::TempDir::new().unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, "").unwrap();
        let path = dir.path().join("suppress.tsv");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let e = SuppressList::load(&path).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config, "{e}");
        assert!(add(&path, &[("a@b.c".into(), String::new())], UNIX_EPOCH).is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "");
    }

    #[test]
    fn addresses_are_checked_and_lowercased() {
        assert_eq!(
            parse_address("ADDR", " Ann <Ann@Example.com> ").unwrap(),
            "ann@example.com"
        );
        assert!(parse_address("ADDR", "not an address").is_err());
        assert!(parse_address("ADDR", "a@b.c, d@e.f").is_err());
    }
}
