//! Writes that survive a crash or a power cut: the outbox, the idempotency ledger and
//! the file transport all go through here.
//!
//! A new file is written and flushed to disk before it is renamed into place, and the
//! directory is flushed after the rename, so a reader sees the old file or the new one,
//! never a part of it (POSIX rename is atomic; fsync makes it durable).
//!
//! What is written here is mail and its envelope: files are created readable by their
//! owner only (0600) and folders made here are 0700. A file kept from one run to the
//! next (a batch report, in-flight marks) is opened by [`open_state_file`], which trusts
//! only a regular file of this user's own.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::Path;

use crate::error::{Error, ErrorKind, Result};

/// Creates (or truncates) `path`, private to its owner, writes `bytes` and flushes them
/// to disk.
pub fn write_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = create_private_file(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// How much [`write_file_with`] gathers before each write: a message written from its
/// parts comes in small pieces (a line of base64 at a time), the disk wants few large
/// writes.
const WRITE_BUFFER: usize = 256 * 1024;

/// Like [`write_file`], with the bytes written by `write` (through a buffer), so a large
/// message can be written from its parts without first being put together in memory.
/// Its error is `write`'s own, or an I/O error of the file made into one.
pub fn write_file_with<E: From<io::Error>>(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<&mut File>) -> Result<(), E>,
) -> Result<(), E> {
    let mut file = create_private_file(path)?;
    let mut buffered = BufWriter::with_capacity(WRITE_BUFFER, &mut file);
    write(&mut buffered)?;
    buffered.flush()?;
    drop(buffered);
    Ok(file.sync_all()?)
}

/// Creates (or truncates) `path` for writing, readable by its owner only.
fn create_private_file(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    // A link planted where a temporary state file goes is not followed (the write would
    // land in its target, and the rename leave a link in the state file's place).
    #[cfg(unix)]
    {
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NOFOLLOW);
    }
    options.open(path)
}

/// Creates `dir` private to its owner; with `parents`, also its missing parents (and an
/// existing `dir` is fine), else an existing `dir` is an error.
pub fn create_private_dir(dir: &Path, parents: bool) -> io::Result<()> {
    let mut builder = DirBuilder::new();
    builder.recursive(parents);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Flushes a directory's entries to disk: a rename into it is durable only after this.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Replaces `path` with `bytes` atomically, through `temp` in the same directory.
pub fn replace_file(path: &Path, temp: &Path, bytes: &[u8]) -> io::Result<()> {
    write_file(temp, bytes)?;
    rename_into_place(temp, path)
}

/// Like [`replace_file`], with the bytes written by `write` as in [`write_file_with`].
/// When the writing fails, `temp` is removed and `path` is left as it was.
pub fn replace_file_with<E: From<io::Error>>(
    path: &Path,
    temp: &Path,
    write: impl FnOnce(&mut BufWriter<&mut File>) -> Result<(), E>,
) -> Result<(), E> {
    if let Err(e) = write_file_with(temp, write) {
        // Best effort: a temp file left behind is never read as a message.
        let _ = std::fs::remove_file(temp);
        return Err(e);
    }
    Ok(rename_into_place(temp, path)?)
}

/// Renames `temp` to `path` and makes the rename durable.
fn rename_into_place(temp: &Path, path: &Path) -> io::Result<()> {
    std::fs::rename(temp, path)?;
    match path.parent() {
        Some(dir) => sync_dir(dir),
        None => Ok(()),
    }
}

/// Seconds since the epoch: the clock of every time envoi stores on disk (outbox
/// entries, the idempotency ledger, the OAuth2 token cache).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// How [`open_state_file`] opens a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateAccess {
    /// Read an existing file; a missing one is an error (66).
    Read,
    /// Read, and write at its end (created when missing).
    Append,
    /// Read and write anywhere (created when missing). Never truncated on opening: a
    /// caller that wants it empty calls `set_len(0)` on the file it got, which is then
    /// known to be its own.
    Write,
}

/// A state file opened by [`open_state_file`].
#[derive(Debug)]
pub struct StateFile {
    /// The open file: a regular file, this user's, not writable by others.
    pub file: File,
    /// The mode the file had when group or others could read it; it is 0600 now. The
    /// caller says so (a warning): the file was the user's own, so tightening it is safe,
    /// and silently changing a mode the user may have chosen would surprise them.
    pub tightened_from: Option<u32>,
}

/// Opens a file envoi keeps state in from one run to the next (a batch report and its
/// in-flight marks, the idempotency ledger and its locks), trusting only what this user could have
/// written. `label` names it in errors (`--report`).
///
/// - The last component is never followed as a symbolic link (`O_NOFOLLOW`): a link
///   planted in a shared folder must not make envoi write to its target (BA05, BA06).
/// - A file created here is 0600: state files name recipients and servers (BA07).
/// - An existing file must pass [`crate::ownership::check_state_file`] (a FIFO is opened
///   without blocking, then refused): a regular file with one name, the effective user's,
///   not writable by group or others; else 78, naming what is wrong and the fix. One
///   readable by others is tightened to 0600 (see [`StateFile::tightened_from`]).
/// - Nothing is truncated or written here, so a refused file is left as it was.
pub fn open_state_file(label: &str, path: &Path, access: StateAccess) -> Result<StateFile> {
    let shown = path.display();
    let mut options = OpenOptions::new();
    options.read(true);
    match access {
        StateAccess::Read => {}
        StateAccess::Append => {
            options.append(true).create(true);
        }
        StateAccess::Write => {
            options.write(true).create(true);
        }
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    }
    let file = options.open(path).map_err(|e| {
        let link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
        if link {
            Error::config(format!(
                "{label} {shown}: it is a symbolic link; envoi does not follow links to the \
                 files it keeps state in (one planted in a shared folder could point anywhere): \
                 give the real path, or remove the link"
            ))
        } else if access == StateAccess::Read {
            Error::new(
                ErrorKind::NoInput,
                format!("{label} {shown}: cannot read it: {e}"),
            )
        } else {
            Error::new(
                ErrorKind::NoInput,
                format!("{label} {shown}: cannot open it for writing: {e}"),
            )
        }
    })?;
    let meta = file.metadata().map_err(|e| {
        Error::new(
            ErrorKind::NoInput,
            format!("{label} {shown}: cannot stat it: {e}"),
        )
    })?;
    let tightened_from = crate::ownership::check_state_file(label, path, &file, &meta)?;
    Ok(StateFile {
        file,
        tightened_from,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_leaves_only_the_new_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let temp = dir.path().join(".state.json.tmp");
        replace_file(&path, &temp, b"old").unwrap();
        replace_file(&path, &temp, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert!(!temp.exists());
    }

    #[cfg(unix)]
    #[test]
    fn a_state_file_is_created_private_and_a_link_or_an_open_file_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.jsonl");
        let opened = open_state_file("--report", &path, StateAccess::Append).unwrap();
        assert_eq!(opened.tightened_from, None);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);

        // Readable by others: tightened, and the old mode said.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let opened = open_state_file("--report", &path, StateAccess::Read).unwrap();
        assert_eq!(opened.tightened_from, Some(0o644));
        assert_eq!(mode(&path), 0o600);

        // Writable by others: refused, left as it was.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let e = open_state_file("--report", &path, StateAccess::Write).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(
            e.message().contains("mode 666") && e.message().contains("chmod 600"),
            "{e}"
        );
        assert_eq!(mode(&path), 0o666);

        // A link, even to a file of one's own, and a dangling one (never created).
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink(dir.path().join("made"), &dangling).unwrap();
        for path in [&link, &dangling] {
            let e = open_state_file("--report", path, StateAccess::Write).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Config);
            assert!(e.message().contains("symbolic link"), "{e}");
        }
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        assert!(!dir.path().join("made").exists());

        // A directory is no state file; a missing file to read is 66.
        let e = open_state_file("--report", dir.path(), StateAccess::Read).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config, "{e}");
        let e =
            open_state_file("--resume", &dir.path().join("none"), StateAccess::Read).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NoInput, "{e}");
    }

    #[cfg(unix)]
    #[test]
    fn a_state_file_with_two_names_is_refused_before_it_is_changed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, "KEEP\n").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
        let link = dir.path().join("r.jsonl");
        std::fs::hard_link(&target, &link).unwrap();
        for access in [StateAccess::Append, StateAccess::Write, StateAccess::Read] {
            let e = open_state_file("--report", &link, access).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Config, "{e}");
            assert!(e.message().contains("it has 2 names (hard links)"), "{e}");
        }
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "KEEP\n");
        let mode = std::fs::metadata(&target).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644, "not tightened through the other name");
    }

    #[cfg(unix)]
    #[test]
    fn a_link_planted_at_the_temporary_file_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let temp = dir.path().join("state.tmp");
        std::os::unix::fs::symlink(&victim, &temp).unwrap();
        assert!(replace_file(&dir.path().join("state"), &temp, b"new").is_err());
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert!(!dir.path().join("state").exists());
    }
}
