//! Line endings and SMTP DATA framing, owned by envoi rather than left to lettre.
//!
//! Every line that leaves envoi ends in CRLF; every line that starts with `.` is
//! dot-stuffed; the only end-of-data ever sent is CRLF `.` CRLF (RFC 5321 §4.5.2).
//! lettre 0.11.23 does not stuff after a bare LF, so envoi frames DATA itself.

use std::fmt;

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

/// A message as the DATA payload: dot-stuffed, CRLF-terminated lines, then `.` CRLF.
///
/// Formatting it yields the exact bytes to write after the server's 354, terminator
/// included, so the whole payload goes out in one write (no Nagle stall on a small
/// trailing write).
pub(crate) struct DataPayload<'a>(pub &'a str);

impl fmt::Display for DataPayload<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut lines = Lines::new(self.0);
        while let Some((line, _)) = lines.next_line() {
            if line.starts_with('.') {
                f.write_str(".")?;
            }
            f.write_str(line)?;
            f.write_str("\r\n")?;
        }
        f.write_str(".\r\n")
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

    #[test]
    fn every_line_ending_becomes_crlf() {
        assert_eq!(normalize_line_endings("a\nb\r\nc\rd"), "a\r\nb\r\nc\r\nd");
        assert_eq!(normalize_line_endings("a\n\n"), "a\r\n\r\n");
        assert_eq!(normalize_line_endings("\r\r\n"), "\r\n\r\n");
        assert_eq!(normalize_line_endings(""), "");
    }

    #[test]
    fn data_is_dot_stuffed_after_any_line_ending() {
        let payload = DataPayload("Subject: x\r\n\r\n.hidden\n.\r\nend\r.\r\n").to_string();
        assert_eq!(
            payload,
            "Subject: x\r\n\r\n..hidden\r\n..\r\nend\r\n..\r\n.\r\n"
        );
    }

    #[test]
    fn data_without_final_line_ending_is_terminated_properly() {
        assert_eq!(DataPayload("body").to_string(), "body\r\n.\r\n");
        assert_eq!(DataPayload("").to_string(), ".\r\n");
    }

    #[test]
    fn no_bare_line_feed_survives_framing() {
        let payload = DataPayload("a\nb\rc\r\n\n\r").to_string();
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
