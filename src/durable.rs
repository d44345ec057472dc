//! Writes that survive a crash or a power cut: the outbox, the idempotency ledger and
//! the file transport all go through here.
//!
//! A new file is written and flushed to disk before it is renamed into place, and the
//! directory is flushed after the rename, so a reader sees the old file or the new one,
//! never a part of it (POSIX rename is atomic; fsync makes it durable).

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

/// Creates (or truncates) `path`, writes `bytes` and flushes them to disk.
pub fn write_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = File::create(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Flushes a directory's entries to disk: a rename into it is durable only after this.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Replaces `path` with `bytes` atomically, through `temp` in the same directory.
pub fn replace_file(path: &Path, temp: &Path, bytes: &[u8]) -> io::Result<()> {
    write_file(temp, bytes)?;
    std::fs::rename(temp, path)?;
    match path.parent() {
        Some(dir) => sync_dir(dir),
        None => Ok(()),
    }
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
