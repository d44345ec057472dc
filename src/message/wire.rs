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

/// Writes a message as the DATA payload: dot-stuffed, CRLF-terminated lines, then `.`
/// CRLF, the exact bytes to send after the server's 354. Works on bytes: a message given
/// to sendmail mode may be 8-bit text in any charset.
pub(crate) fn write_data(out: &mut impl Write, message: &[u8]) -> io::Result<()> {
    let mut rest = message;
    while !rest.is_empty() {
        let (line, next) = match rest.iter().position(|b| matches!(b, b'\r' | b'\n')) {
            None => (rest, &rest[rest.len()..]),
            Some(i) => {
                let skip = if rest[i..].starts_with(b"\r\n") { 2 } else { 1 };
                (&rest[..i], &rest[i + skip..])
            }
        };
        if line.starts_with(b".") {
            out.write_all(b".")?;
        }
        out.write_all(line)?;
        out.write_all(b"\r\n")?;
        rest = next;
    }
    out.write_all(b".\r\n")
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
        match self.rest.find(['\r', '\n']) {
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

    fn framed(message: &str) -> String {
        let mut out = Vec::new();
        write_data(&mut out, message.as_bytes()).unwrap();
        String::from_utf8(out).unwrap()
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
        let mut out = Vec::new();
        write_data(&mut out, b"caf\xe9\n.\xff\n").unwrap();
        assert_eq!(out, b"caf\xe9\r\n..\xff\r\n.\r\n");
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
