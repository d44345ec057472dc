//! [`MessageBytes`]: the exact bytes of a message, with attached files left in their
//! files until the message is written.
//!
//! A message is a run of literal bytes (the header, the text, every MIME boundary, and
//! attachments that came in memory) with a file's base64 in between wherever a file was
//! attached by path ([`AttachedFile`]). Everything that needs the message — SMTP DATA,
//! the outbox entry, the file transport, the dry run, the DKIM body hash — writes it to
//! an [`io::Write`] with [`MessageBytes::write_to`], so no whole copy of a large
//! attachment is ever made; its exact length and whether it is ASCII are known without
//! reading the attached files. A queued message is sent from its outbox file the same
//! way.

use std::io::{self, Write};
use std::path::Path;

use crate::message::attached_file::{AttachedFile, StreamError, base64_lines};

/// The bytes of an RFC 5322 message (CRLF line endings), some still in files.
///
/// The header of a message to sign is always literal: lettre writes it before any part's
/// body, and a message given whole (sendmail mode) is all literal. A message read back
/// from the outbox is one stored file; it was signed, if at all, before it was stored.
#[derive(Debug, Clone, Default)]
pub struct MessageBytes {
    parts: Vec<Part>,
}

/// One stretch of a message, in order.
#[derive(Debug, Clone)]
enum Part {
    /// Bytes as they are.
    Literal(Vec<u8>),
    /// A file, written in base64 lines when the message is written.
    Base64File(AttachedFile),
    /// A file holding a whole message stored by envoi (an outbox entry), written as it
    /// is; `ascii` was found when it was opened.
    StoredFile {
        /// The file.
        file: AttachedFile,
        /// Whether every byte of it is ASCII.
        ascii: bool,
    },
}

impl From<Vec<u8>> for MessageBytes {
    fn from(bytes: Vec<u8>) -> MessageBytes {
        MessageBytes {
            parts: vec![Part::Literal(bytes)],
        }
    }
}

impl MessageBytes {
    /// The message stored whole in the file at `path` (an outbox entry), left in the
    /// file: sending a queued message then costs no more memory than building it did.
    /// The file is read once here, to know whether it is ASCII (for 8BITMIME).
    pub fn stored(path: &Path) -> crate::error::Result<MessageBytes> {
        let file = AttachedFile::open_stored_message(path)?;
        let mut check = AsciiCheck { ascii: true };
        file.write_as_is(&mut check)
            .map_err(StreamError::into_error)?;
        Ok(MessageBytes {
            parts: vec![Part::StoredFile {
                file,
                ascii: check.ascii,
            }],
        })
    }

    /// Adds literal bytes at the end.
    pub(crate) fn push_literal(&mut self, bytes: &[u8]) {
        match self.parts.last_mut() {
            Some(Part::Literal(last)) => last.extend_from_slice(bytes),
            _ => self.parts.push(Part::Literal(bytes.to_vec())),
        }
    }

    /// Adds `data` at the end in base64 lines, encoded now.
    pub(crate) fn push_base64(&mut self, data: &[u8]) {
        if !matches!(self.parts.last(), Some(Part::Literal(_))) {
            self.parts.push(Part::Literal(Vec::new()));
        }
        if let Some(Part::Literal(last)) = self.parts.last_mut() {
            base64_lines(data, last);
        }
    }

    /// Adds a file's base64 at the end.
    pub(crate) fn push_file(&mut self, file: AttachedFile) {
        self.parts.push(Part::Base64File(file));
    }

    /// Puts `bytes` before everything else (a DKIM-Signature header).
    pub(crate) fn prepend(&mut self, bytes: &[u8]) {
        match self.parts.first_mut() {
            // Shifts the header and the text; an attached file is not in this Vec.
            Some(Part::Literal(first)) => {
                first.splice(0..0, bytes.iter().copied());
            }
            _ => self.parts.insert(0, Part::Literal(bytes.to_vec())),
        }
    }

    /// The literal bytes the message begins with: all of its header (see
    /// [`MessageBytes`]) and the start of its body, for DKIM to split. The rest is written
    /// by [`MessageBytes::write_after_head`].
    pub(crate) fn head(&self) -> &[u8] {
        match self.parts.first() {
            Some(Part::Literal(bytes)) => bytes,
            _ => &[],
        }
    }

    /// Writes what follows [`MessageBytes::head`] to `out`, as [`MessageBytes::write_to`]
    /// does.
    pub(crate) fn write_after_head(&self, out: &mut impl Write) -> Result<(), StreamError> {
        let head = usize::from(matches!(self.parts.first(), Some(Part::Literal(_))));
        write_parts(&self.parts[head..], out)
    }

    /// The length of the message in octets, files included (for SIZE and the trace).
    pub fn len(&self) -> u64 {
        self.parts
            .iter()
            .map(|part| match part {
                Part::Literal(bytes) => bytes.len() as u64,
                Part::Base64File(file) => file.base64_len(),
                Part::StoredFile { file, .. } => file.len(),
            })
            .sum()
    }

    /// True for a message of no octets.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True when every octet is ASCII (base64 always is), so no 8BITMIME is needed.
    pub fn is_ascii(&self) -> bool {
        self.parts.iter().all(|part| match part {
            Part::Literal(bytes) => bytes.is_ascii(),
            Part::Base64File(_) => true,
            Part::StoredFile { ascii, .. } => *ascii,
        })
    }

    /// Fails (66, naming the file) when a file of the message is no longer what it was
    /// when the message was built, without reading it: a transaction can then be given
    /// up before it starts, instead of in the middle of DATA.
    pub fn check_files(&self) -> crate::error::Result<()> {
        for part in &self.parts {
            match part {
                Part::Literal(_) => {}
                Part::Base64File(file) | Part::StoredFile { file, .. } => {
                    file.check_path().map_err(StreamError::into_error)?;
                }
            }
        }
        Ok(())
    }

    /// Writes the whole message to `out`, each attached file read as it goes.
    pub fn write_to(&self, out: &mut impl Write) -> Result<(), StreamError> {
        write_parts(&self.parts, out)
    }

    /// The whole message in memory: for `--json`'s dry run and for tests, never for a
    /// message on its way.
    pub fn to_vec(&self) -> crate::error::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(usize::try_from(self.len()).unwrap_or(0));
        self.write_to(&mut out).map_err(StreamError::into_error)?;
        Ok(out)
    }
}

/// Writes `parts` to `out` in order, each attached file read as it goes.
fn write_parts(parts: &[Part], out: &mut impl Write) -> Result<(), StreamError> {
    for part in parts {
        match part {
            Part::Literal(bytes) => out.write_all(bytes)?,
            Part::Base64File(file) => file.write_base64(out)?,
            Part::StoredFile { file, .. } => file.write_as_is(out)?,
        }
    }
    Ok(())
}

/// A writer that only notes whether everything written to it was ASCII.
struct AsciiCheck {
    ascii: bool,
}

impl Write for AsciiCheck {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.ascii &= buf.is_ascii();
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_and_bytes_take_files_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.bin");
        std::fs::write(&path, [0xff; 100]).unwrap();
        let mut message = MessageBytes::from(b"Subject: x\r\n\r\n".to_vec());
        message.push_file(AttachedFile::open("--attach", &path).unwrap());
        message.push_literal(b"\r\n--end");
        message.prepend(b"DKIM-Signature: x\r\n");
        let bytes = message.to_vec().unwrap();
        assert_eq!(message.len(), bytes.len() as u64);
        assert!(message.is_ascii());
        let text = String::from_utf8(bytes).unwrap();
        assert!(
            text.starts_with("DKIM-Signature: x\r\nSubject: x\r\n\r\n////"),
            "{text}"
        );
        assert!(text.ends_with("/w==\r\n--end"), "{text}");
        assert!(!MessageBytes::from(b"caf\xe9".to_vec()).is_ascii());
    }

    #[test]
    fn a_stored_message_is_written_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        for (content, ascii) in [
            (&b"Subject: x\r\n\r\nhi\r\n"[..], true),
            (b"caf\xe9\r\n", false),
        ] {
            let path = dir.path().join("message");
            std::fs::write(&path, content).unwrap();
            let stored = MessageBytes::stored(&path).unwrap();
            assert_eq!(stored.is_ascii(), ascii, "{content:?}");
            assert_eq!(stored.len(), content.len() as u64);
            assert_eq!(stored.to_vec().unwrap(), content);
        }
        let err = MessageBytes::stored(&dir.path().join("none")).unwrap_err();
        assert!(err.message().contains("the stored message"), "{err}");
    }
}
