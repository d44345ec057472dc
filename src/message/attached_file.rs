//! A file attached by its path, whose base64 is written only when the message is
//! written, straight from the file.
//!
//! Holding an attachment in memory costs its size once to read it, once more (and a
//! third) in base64, and again wherever the whole message is copied: a 10 MiB file made
//! envoi peak at 30 MiB. Streamed from the file, the base64 never exists whole, and the
//! message written to the socket, the outbox or the DKIM body hash costs one buffer of
//! [`CHUNK`] bytes whatever the size of the file.
//!
//! The price is that the file is read when the message is written, not when it was
//! built, and it may be read more than once (DKIM hashes it, then SMTP sends it). What
//! was measured at build time — its length and modification time — is checked again at
//! every read: a file that changed in between fails the write, naming the file, rather
//! than sending something else than what was signed, sized and announced.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use base64::Engine as _;

use crate::error::{Error, ErrorKind, Result};
use crate::ownership::not_regular;

/// Why writing a message failed: its source or where it was going.
#[derive(Debug)]
pub enum StreamError {
    /// An attached file could not be read or changed since the message was built (66,
    /// naming the file). What was written is incomplete: it must not be delivered.
    Source(Error),
    /// The writer failed (the socket, the disk).
    Sink(io::Error),
}

impl From<io::Error> for StreamError {
    fn from(e: io::Error) -> StreamError {
        StreamError::Sink(e)
    }
}

impl StreamError {
    /// The error, for a writer that cannot fail (memory, a hash): its failure would be
    /// a bug.
    pub(crate) fn into_error(self) -> Error {
        match self {
            StreamError::Source(e) => e,
            StreamError::Sink(e) => Error::new(
                ErrorKind::Internal,
                format!("a write to memory failed (a bug): {e}"),
            ),
        }
    }
}

/// Input bytes per 76-character base64 line (RFC 2045 §6.8).
const LINE_INPUT: usize = 57;

/// Input bytes per read: a whole number of lines (1150 × 57, about 64 KiB), so every
/// read but the last ends exactly at the end of a line.
const CHUNK: usize = 1150 * LINE_INPUT;

/// A regular file as it was when the message was built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachedFile {
    path: PathBuf,
    len: u64,
    modified: Option<SystemTime>,
    holds: Holds,
}

/// What the file is to the message, for the words of its errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holds {
    /// One attachment, given by the user.
    Attachment,
    /// The whole message, stored by envoi (an outbox entry).
    StoredMessage,
}

impl AttachedFile {
    /// Opens `path` (a regular file) to check it can be read, and records its length
    /// and modification time. A file that is missing, unreadable or not a regular file
    /// is 66, naming `label`, before anything is sent.
    pub fn open(label: &str, path: &Path) -> Result<AttachedFile> {
        // Looked at before it is opened (opening a FIFO waits for a writer) and after.
        let (_, meta) = crate::ownership::open_regular(path).map_err(|e| {
            Error::new(
                ErrorKind::NoInput,
                format!("{label}: cannot read {:?}: {e}", path.display().to_string()),
            )
        })?;
        Ok(AttachedFile {
            path: path.to_owned(),
            len: meta.len(),
            modified: meta.modified().ok(),
            holds: Holds::Attachment,
        })
    }

    /// Opens a file that holds a whole message stored by envoi (an outbox entry), to be
    /// written as it is.
    pub(crate) fn open_stored_message(path: &Path) -> Result<AttachedFile> {
        let file = AttachedFile::open("the stored message", path)?;
        Ok(AttachedFile {
            holds: Holds::StoredMessage,
            ..file
        })
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its length in bytes when the message was built.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True for an empty file.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The length of what [`AttachedFile::write_base64`] writes.
    pub(crate) fn base64_len(&self) -> u64 {
        base64_len(self.len)
    }

    /// Writes the file in base64 to `out`, read [`CHUNK`] bytes at a time. Fails
    /// ([`StreamError::Source`], 66) when the file cannot be read or is no longer what it
    /// was when the message was built; what was written by then must not be used.
    pub(crate) fn write_base64(
        &self,
        out: &mut impl Write,
    ) -> std::result::Result<(), StreamError> {
        let largest = base64_len(self.len.min(CHUNK as u64));
        let mut encoded = Vec::with_capacity(2 + usize::try_from(largest).unwrap_or(0));
        self.read_chunks(|chunk, first| {
            encoded.clear();
            if !first {
                // Lines are CRLF-separated, and every chunk before this one ended a line.
                encoded.extend_from_slice(b"\r\n");
            }
            base64_lines(chunk, &mut encoded);
            out.write_all(&encoded)
        })
    }

    /// Whether the whole file is UTF-8 text, read [`CHUNK`] bytes at a time (memory stays
    /// one chunk whatever the size): a guessed `text/*` type gets `charset=utf-8` only when
    /// that is true, since a wrong charset garbles what a missing one would not.
    pub(crate) fn is_utf8(&self) -> Result<bool> {
        let mut valid = true;
        // The end of a chunk may cut a character: its first bytes wait for the next chunk.
        let mut carry: Vec<u8> = Vec::new();
        self.read_chunks(|chunk, _| {
            if !valid {
                return Ok(());
            }
            let joined;
            let bytes = if carry.is_empty() {
                chunk
            } else {
                joined = [carry.as_slice(), chunk].concat();
                joined.as_slice()
            };
            carry = match std::str::from_utf8(bytes) {
                Ok(_) => Vec::new(),
                // error_len() None: the bytes end inside a character (at most 3 of them).
                Err(e) if e.error_len().is_none() => bytes[e.valid_up_to()..].to_vec(),
                Err(_) => {
                    valid = false;
                    Vec::new()
                }
            };
            Ok(())
        })
        .map_err(StreamError::into_error)?;
        Ok(valid && carry.is_empty())
    }

    /// Writes the file's bytes as they are to `out`, checked as in
    /// [`AttachedFile::write_base64`].
    pub(crate) fn write_as_is(&self, out: &mut impl Write) -> std::result::Result<(), StreamError> {
        self.read_chunks(|chunk, _| out.write_all(chunk))
    }

    /// Reads the file [`CHUNK`] bytes at a time (every chunk but the last a whole number
    /// of base64 lines) and gives each to `take`, with whether it is the first; fails
    /// when the file is not what it was when it was opened.
    fn read_chunks(
        &self,
        mut take: impl FnMut(&[u8], bool) -> io::Result<()>,
    ) -> std::result::Result<(), StreamError> {
        // Before it is opened (a FIFO would wait for a writer); the open file is checked
        // again, as the path may name another file by then.
        self.check_path()?;
        let mut file = File::open(&self.path).map_err(|e| self.unreadable(&e))?;
        self.check_unchanged(&file)?;
        let mut input = vec![0; CHUNK.min(usize::try_from(self.len).unwrap_or(CHUNK))];
        let mut left = self.len;
        while left > 0 {
            let want = input.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let got = read_full(&mut file, &mut input[..want]).map_err(|e| self.unreadable(&e))?;
            if got < want {
                return Err(self.changed(format!(
                    "it ended after {} bytes",
                    self.len - left + got as u64
                )));
            }
            take(&input[..want], left == self.len).map_err(StreamError::Sink)?;
            left -= want as u64;
        }
        if read_full(&mut file, &mut [0]).map_err(|e| self.unreadable(&e))? > 0 {
            return Err(self.changed("it grew".to_owned()));
        }
        self.check_unchanged(&file)
    }

    /// Fails when the open file's length or modification time is not what it was.
    fn check_unchanged(&self, file: &File) -> std::result::Result<(), StreamError> {
        let meta = file.metadata().map_err(|e| self.unreadable(&e))?;
        self.compare(&meta)
    }

    /// Fails when the file at the path is not what it was: looked at before a
    /// transaction starts, so that a file already changed stops it before the server
    /// is told anything. Reading it still checks again (it may change after this).
    pub(crate) fn check_path(&self) -> std::result::Result<(), StreamError> {
        let meta = std::fs::metadata(&self.path).map_err(|e| self.unreadable(&e))?;
        if let Some(what) = not_regular(&meta) {
            return Err(self.changed(format!("it is now {what}")));
        }
        self.compare(&meta)
    }

    /// Fails when `meta` does not show the length and modification time recorded.
    fn compare(&self, meta: &std::fs::Metadata) -> std::result::Result<(), StreamError> {
        if meta.len() != self.len {
            return Err(self.changed(format!("it now holds {} bytes", meta.len())));
        }
        if meta.modified().ok() != self.modified {
            return Err(self.changed("it was modified".to_owned()));
        }
        Ok(())
    }

    fn unreadable(&self, e: &io::Error) -> StreamError {
        StreamError::Source(Error::new(
            ErrorKind::NoInput,
            format!("cannot read {}: {e}", self.named()),
        ))
    }

    fn changed(&self, how: String) -> StreamError {
        let advice = match self.holds {
            Holds::Attachment => "leave the file alone until envoi is done, or attach a copy",
            Holds::StoredMessage => "only envoi may write in its outbox",
        };
        StreamError::Source(Error::new(
            ErrorKind::NoInput,
            format!(
                "{} changed after the message was built ({} bytes then; {how}); {advice}",
                self.named(),
                self.len
            ),
        ))
    }

    /// The file in an error: what it is and where.
    fn named(&self) -> String {
        let what = match self.holds {
            Holds::Attachment => "the attachment",
            Holds::StoredMessage => "the stored message",
        };
        format!("{what} {:?}", self.path.display().to_string())
    }
}

/// Reads until `buf` is full or the file ends; the number of bytes read.
fn read_full(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Appends `data` in base64 as lettre writes a base64 body: lines of 76 characters,
/// CRLF between them, none after the last (the MIME part adds its own line ending).
pub(crate) fn base64_lines(data: &[u8], out: &mut Vec<u8>) {
    let engine = &base64::engine::general_purpose::STANDARD;
    let mut lines = data.chunks(LINE_INPUT).peekable();
    while let Some(line) = lines.next() {
        let start = out.len();
        out.resize(start + line.len().div_ceil(3) * 4, 0);
        // The slice was sized for exactly this line's encoding, so this cannot fail.
        let _ = engine.encode_slice(line, &mut out[start..]);
        if lines.peek().is_some() {
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// What [`base64_lines`] writes for `n` bytes.
pub(crate) fn base64_len(n: u64) -> u64 {
    let lines = n.div_ceil(LINE_INPUT as u64);
    n.div_ceil(3) * 4 + 2 * lines.saturating_sub(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lettre::message::header::ContentTransferEncoding;

    fn written(file: &AttachedFile) -> std::result::Result<Vec<u8>, StreamError> {
        let mut out = Vec::new();
        file.write_base64(&mut out).map(|()| out)
    }

    fn message_of(e: StreamError) -> String {
        match e {
            StreamError::Source(e) => e.message().to_owned(),
            StreamError::Sink(e) => panic!("the sink failed: {e}"),
        }
    }

    /// The base64 is byte for byte what lettre's own base64 body would be, and its
    /// length is known in advance.
    #[test]
    fn base64_lines_are_lettres_encoding() {
        for n in [0, 1, 2, 56, 57, 58, 114, 115, 1000, 4096] {
            let data: Vec<u8> = (0..n).map(|i| (i * 7 + 3) as u8).collect();
            let mut ours = Vec::new();
            base64_lines(&data, &mut ours);
            let lettres = lettre::message::Body::new_with_encoding(
                data.clone(),
                ContentTransferEncoding::Base64,
            )
            .unwrap()
            .into_vec();
            assert_eq!(ours, lettres, "{n} bytes");
            assert_eq!(base64_len(n as u64), ours.len() as u64, "{n} bytes");
        }
    }

    /// Streamed in chunks, a file gives the same lines as encoding it whole, across
    /// chunk boundaries too.
    #[test]
    fn a_streamed_file_is_its_base64() {
        let dir = tempfile::tempdir().unwrap();
        for n in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 100] {
            let data: Vec<u8> = (0..n).map(|i| (i * 31 + 7) as u8).collect();
            let path = dir.path().join(format!("{n}.bin"));
            std::fs::write(&path, &data).unwrap();
            let file = AttachedFile::open("--attach", &path).unwrap();
            let mut whole = Vec::new();
            base64_lines(&data, &mut whole);
            let streamed = written(&file).unwrap();
            assert!(streamed == whole, "{n} bytes");
            assert_eq!(file.base64_len(), streamed.len() as u64, "{n} bytes");
        }
    }

    #[test]
    fn a_file_that_changed_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.pdf");
        std::fs::write(&path, vec![7; 1000]).unwrap();
        let file = AttachedFile::open("--attach", &path).unwrap();
        std::fs::write(&path, vec![7; 10]).unwrap();
        let why = message_of(written(&file).unwrap_err());
        assert!(why.contains("report.pdf"), "{why}");
        assert!(
            why.contains("1000 bytes then; it now holds 10 bytes"),
            "{why}"
        );
        std::fs::remove_file(&path).unwrap();
        let why = message_of(written(&file).unwrap_err());
        assert!(why.starts_with("cannot read the attachment"), "{why}");
    }

    /// Cuts the file short when the first chunk is written: as if someone truncated it
    /// while it was being sent.
    struct Truncating<'a> {
        path: &'a Path,
        done: bool,
    }

    impl Write for Truncating<'_> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if !self.done {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(self.path)?
                    .set_len(10)?;
                self.done = true;
            }
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_file_cut_while_it_is_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.bin");
        std::fs::write(&path, vec![1; 2 * CHUNK]).unwrap();
        let file = AttachedFile::open("--attach", &path).unwrap();
        let mut out = Truncating {
            path: &path,
            done: false,
        };
        let why = message_of(file.write_base64(&mut out).unwrap_err());
        assert!(
            why.contains(&format!("it ended after {CHUNK} bytes")),
            "{why}"
        );
    }

    #[test]
    fn only_regular_files_are_attached() {
        let dir = tempfile::tempdir().unwrap();
        let err = AttachedFile::open("--attach", dir.path()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NoInput);
        assert!(err.message().contains("it is a directory"), "{err}");
        let err = AttachedFile::open("--attach", &dir.path().join("none")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NoInput);
        // Refused before it is opened: opening a FIFO would wait for a writer.
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.is_ok_and(|s| s.success()), "mkfifo");
        for path in [fifo.as_path(), Path::new("/dev/zero")] {
            let err = AttachedFile::open("--attach", path).unwrap_err();
            assert!(err.message().contains("not a regular file"), "{err}");
        }
    }
}
