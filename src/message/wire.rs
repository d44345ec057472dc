//! Line endings and SMTP DATA framing, owned by envoi rather than left to lettre.
//!
//! Every line that leaves envoi ends in CRLF; every line that starts with `.` is
//! dot-stuffed; the only end-of-data ever sent is CRLF `.` CRLF (RFC 5321 §4.5.2).
//! lettre 0.11.23 does not stuff after a bare LF, so envoi frames DATA itself.

use std::io::{self, Write};

/// Turns every CRLF, bare LF and bare CR into CRLF.
pub(crate) fn normalize_line_endings(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 32);
    let mut lines = Lines::new(text);
    while let Some((line, ended)) = lines.next_line() {
        out.push_str(line);
        if ended {
            out.push_str("\r\n");
        }
    }
    out
}

/// Frames a message as the DATA payload while it is written, piece by piece:
/// dot-stuffed, CRLF-terminated lines, then `.` CRLF from [`DataWriter::finish`], the
/// exact bytes to send after the server's 354. Works on bytes: a message given to
/// sendmail mode may be 8-bit text in any charset.
///
/// The message may arrive in pieces of any size (an attached file is written a chunk at
/// a time), so the writer keeps what it needs across pieces: whether the next byte
/// starts a line (a `.` there is doubled), and whether the last byte was a CR (a LF
/// right after it ends the same line).
pub(crate) struct DataWriter<W: Write> {
    out: W,
    at_line_start: bool,
    after_cr: bool,
}

impl<W: Write> DataWriter<W> {
    pub(crate) fn new(out: W) -> DataWriter<W> {
        DataWriter {
            out,
            at_line_start: true,
            after_cr: false,
        }
    }

    /// Ends the last line if it has no line ending, writes the end of data (`.` CRLF)
    /// and hands back the writer (to flush). Not called, no end of data is ever sent.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        if !self.at_line_start {
            self.out.write_all(b"\r\n")?;
        }
        self.out.write_all(b".\r\n")?;
        Ok(self.out)
    }
}

impl<W: Write> Write for DataWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut rest = buf;
        if self.after_cr {
            self.after_cr = false;
            if let Some(after) = rest.strip_prefix(b"\n") {
                rest = after;
            }
        }
        while !rest.is_empty() {
            let end = memchr::memchr2(b'\r', b'\n', rest);
            let line = &rest[..end.unwrap_or(rest.len())];
            if self.at_line_start && line.starts_with(b".") {
                self.out.write_all(b".")?;
            }
            if !line.is_empty() {
                self.out.write_all(line)?;
                self.at_line_start = false;
            }
            let Some(i) = end else { break };
            self.out.write_all(b"\r\n")?;
            self.at_line_start = true;
            rest = match &rest[i..] {
                [b'\r', b'\n', after @ ..] => after,
                [b'\r'] => {
                    // Its LF, if any, starts the next piece.
                    self.after_cr = true;
                    &[]
                }
                [_, after @ ..] => after,
                [] => &[],
            };
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Splits text into lines at CRLF, LF or CR; yields `(line, had_line_ending)`.
struct Lines<'a> {
    rest: &'a str,
}

impl<'a> Lines<'a> {
    fn new(text: &'a str) -> Lines<'a> {
        Lines { rest: text }
    }

    fn next_line(&mut self) -> Option<(&'a str, bool)> {
        if self.rest.is_empty() {
            return None;
        }
        match memchr::memchr2(b'\r', b'\n', self.rest.as_bytes()) {
            None => {
                let line = self.rest;
                self.rest = "";
                Some((line, false))
            }
            Some(i) => {
                let line = &self.rest[..i];
                let skip = if self.rest[i..].starts_with("\r\n") {
                    2
                } else {
                    1
                };
                self.rest = &self.rest[i + skip..];
                Some((line, true))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `message` framed, written in one piece and in pieces of every size.
    fn framed(message: &str) -> String {
        let bytes = framed_bytes(message.as_bytes());
        String::from_utf8(bytes).unwrap()
    }

    fn framed_bytes(message: &[u8]) -> Vec<u8> {
        let whole = in_pieces(message, message.len().max(1));
        for size in 1..message.len() {
            assert_eq!(in_pieces(message, size), whole, "pieces of {size}");
        }
        whole
    }

    fn in_pieces(message: &[u8], size: usize) -> Vec<u8> {
        let mut writer = DataWriter::new(Vec::new());
        for piece in message.chunks(size) {
            writer.write_all(piece).unwrap();
        }
        writer.finish().unwrap()
    }

    #[test]
    fn every_line_ending_becomes_crlf() {
        assert_eq!(normalize_line_endings("a\nb\r\nc\rd"), "a\r\nb\r\nc\r\nd");
        assert_eq!(normalize_line_endings("a\n\n"), "a\r\n\r\n");
        assert_eq!(normalize_line_endings("\r\r\n"), "\r\n\r\n");
        assert_eq!(normalize_line_endings(""), "");
    }

    #[test]
    fn data_is_dot_stuffed_after_any_line_ending() {
        assert_eq!(
            framed("Subject: x\r\n\r\n.hidden\n.\r\nend\r.\r\n"),
            "Subject: x\r\n\r\n..hidden\r\n..\r\nend\r\n..\r\n.\r\n"
        );
    }

    #[test]
    fn data_without_final_line_ending_is_terminated_properly() {
        assert_eq!(framed("body"), "body\r\n.\r\n");
        assert_eq!(framed(""), ".\r\n");
    }

    #[test]
    fn eight_bit_bytes_pass_unchanged() {
        assert_eq!(
            framed_bytes(b"caf\xe9\n.\xff\n"),
            b"caf\xe9\r\n..\xff\r\n.\r\n"
        );
    }

    #[test]
    fn no_bare_line_feed_survives_framing() {
        let payload = framed("a\nb\rc\r\n\n\r");
        let bytes = payload.as_bytes();
        for (i, b) in bytes.iter().enumerate() {
            if *b == b'\n' {
                assert_eq!(bytes[i - 1], b'\r', "bare LF at {i} in {payload:?}");
            }
            if *b == b'\r' {
                assert_eq!(bytes[i + 1], b'\n', "bare CR at {i} in {payload:?}");
            }
        }
    }
}
