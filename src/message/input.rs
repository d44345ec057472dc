//! Reading the files a send needs: body, payload, attachments. `-` is standard input,
//! which can feed only one of them.
//!
//! Only regular files are read: a FIFO, a device (`/dev/zero`) or a directory could hang
//! a cron job forever or fill its memory. Standard input is read up to [`MAX_STDIN`].

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind, Result};
use crate::message::{AttachedFile, AttachmentData};

/// The most envoi reads from standard input: 64 MiB, more than any mail server takes.
pub const MAX_STDIN: u64 = 64 << 20;

/// True for the path `-`, which means standard input.
pub fn is_stdin(path: &Path) -> bool {
    path == Path::new("-")
}

/// Reads a whole regular file (or standard input for `-`), naming the flag on failure
/// (exit 66; 65 when standard input is over [`MAX_STDIN`]).
pub fn read_bytes(label: &str, path: &Path) -> Result<Vec<u8>> {
    let shown = path.display().to_string();
    let no_input = |e: std::io::Error| {
        Error::new(
            ErrorKind::NoInput,
            format!("{label}: cannot read {shown:?}: {e}"),
        )
    };
    if is_stdin(path) {
        let mut buf = Vec::new();
        std::io::stdin()
            .take(MAX_STDIN + 1)
            .read_to_end(&mut buf)
            .map_err(no_input)?;
        if buf.len() as u64 > MAX_STDIN {
            return Err(Error::invalid(format!(
                "{label}: standard input holds more than {} MiB",
                MAX_STDIN >> 20
            )));
        }
        return Ok(buf);
    }
    if let Some(what) = not_regular(&std::fs::metadata(path).map_err(no_input)?) {
        return Err(Error::new(
            ErrorKind::NoInput,
            format!("{label}: cannot read {shown:?}: it is {what}"),
        ));
    }
    std::fs::read(path).map_err(no_input)
}

/// What a file is when it is not a regular file, in the words of an error; `None` for a
/// regular file. Asked before a file is opened: opening a FIFO waits for a writer, and a
/// device (`/dev/zero`) never ends, either of which could hang a cron job.
pub(crate) fn not_regular(meta: &std::fs::Metadata) -> Option<&'static str> {
    let kind = meta.file_type();
    if kind.is_file() {
        None
    } else if kind.is_dir() {
        Some("a directory")
    } else {
        Some("not a regular file (a FIFO, socket or device)")
    }
}

/// What an attachment given by its path holds: standard input is read now (it can be
/// read only once); a regular file is opened and measured, and read only when the
/// message is written, so its size never counts in memory (see [`AttachedFile`]).
pub fn attachment_data(label: &str, path: &Path) -> Result<AttachmentData> {
    if is_stdin(path) {
        return read_bytes(label, path).map(AttachmentData::Bytes);
    }
    AttachedFile::open(label, path).map(AttachmentData::File)
}

/// The files an `--attach` value names: itself, or, when it holds a glob pattern (`*`,
/// `?`, `[`) and no file of that very name exists, every regular file the pattern
/// matches, in sorted order, each once (the glob crate: `*` stays within a folder, `**`
/// crosses folders). A pattern that matches nothing is 66, naming it, so a missing
/// build artefact stops the send instead of going unnoticed; a malformed pattern is 64.
pub fn attachment_paths(label: &str, value: &str) -> Result<Vec<PathBuf>> {
    let literal = PathBuf::from(value);
    let is_pattern = value.contains(['*', '?', '[']);
    if !is_pattern || is_stdin(&literal) || literal.exists() {
        return Ok(vec![literal]);
    }
    let matches = glob::glob(value)
        .map_err(|e| Error::usage(format!("{label}: {value:?} is not a valid pattern: {e}")))?;
    let mut paths: Vec<PathBuf> = matches
        .filter_map(std::result::Result::ok)
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    paths.dedup();
    if paths.is_empty() {
        return Err(Error::new(
            ErrorKind::NoInput,
            format!("{label}: the pattern {value:?} matches no file"),
        ));
    }
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// T12: devices and FIFOs are refused before a byte is read.
    #[test]
    fn t12_only_regular_files_are_read() {
        for path in ["/dev/zero", "/dev/null", "/"] {
            let err = read_bytes("--body-file", Path::new(path)).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::NoInput, "{path}");
            assert!(
                err.message().starts_with("--body-file: cannot read"),
                "{err}"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("body.txt");
        std::fs::write(&file, "hi").unwrap();
        assert_eq!(read_bytes("--body-file", &file).unwrap(), b"hi");
    }
}
