//! Writes that survive a crash or a power cut: the outbox, the idempotency ledger and
//! the file transport all go through here.
//!
//! A new file is written and flushed to disk before it is renamed into place, and the
//! directory is flushed after the rename, so a reader sees the old file or the new one,
//! never a part of it (POSIX rename is atomic; fsync makes it durable).
//!
//! What is written here is mail and its envelope: files are created readable by their
//! owner only (0600) and folders made here are 0700.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::Path;

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
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
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
}
