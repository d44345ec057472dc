//! SMTP replies (RFC 5321 §4.2): `250-first\r\n250 last\r\n`, read line by line with a
//! hard cap on every line and on the whole reply, so a hostile server cannot make envoi
//! buffer without bound.

/// Longest reply line accepted, CRLF included. RFC 5321 §4.5.3.1.5 says 512 octets;
/// real servers send longer EHLO lines, so allow eight times that.
pub(crate) const MAX_LINE: usize = 4096;

/// Most lines one reply may have (an EHLO answer has a dozen).
pub(crate) const MAX_LINES: usize = 128;

/// One complete reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    /// The three-digit code.
    pub(crate) code: u16,
    /// The text of each line, without the code and separator.
    pub(crate) lines: Vec<String>,
}

impl Reply {
    /// The text of all lines, joined with spaces.
    pub(crate) fn text(&self) -> String {
        self.lines.join(" ")
    }
}

/// Builds a reply from its lines as they arrive.
#[derive(Debug, Default)]
pub(crate) struct ReplyParser {
    code: Option<u16>,
    lines: Vec<String>,
}

impl ReplyParser {
    /// Takes one line (without its line ending). `Ok(Some)` when it was the last line of
    /// the reply; `Err` names what is wrong with it.
    pub(crate) fn line(&mut self, line: &[u8]) -> Result<Option<Reply>, String> {
        let line = String::from_utf8_lossy(line);
        let bytes = line.as_bytes();
        let code = (bytes.len() >= 3 && bytes[..3].iter().all(u8::is_ascii_digit))
            .then(|| line[..3].parse::<u16>().ok())
            .flatten()
            .filter(|c| (200..600).contains(c))
            .ok_or_else(|| format!("not an SMTP reply line: {:?}", shorten(&line)))?;
        if self.code.is_some_and(|c| c != code) {
            return Err(format!("a reply changed its code mid-way to {code}"));
        }
        self.code = Some(code);
        let (last, text) = match bytes.get(3) {
            None => (true, ""),
            Some(b' ') => (true, &line[4..]),
            Some(b'-') => (false, &line[4..]),
            Some(_) => return Err(format!("not an SMTP reply line: {:?}", shorten(&line))),
        };
        self.lines.push(text.to_owned());
        if last {
            let lines = std::mem::take(&mut self.lines);
            self.code = None;
            return Ok(Some(Reply { code, lines }));
        }
        if self.lines.len() >= MAX_LINES {
            return Err(format!("a reply of more than {MAX_LINES} lines"));
        }
        Ok(None)
    }
}

/// The start of a long line, for an error message.
fn shorten(line: &str) -> String {
    line.chars().take(80).collect()
}

/// Text from outside (a server reply) made safe for a terminal: control characters
/// become `?` so they cannot move the cursor or fake output.
pub(crate) fn printable(text: impl AsRef<str>) -> String {
    text.as_ref()
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(lines: &[&str]) -> Result<Option<Reply>, String> {
        let mut parser = ReplyParser::default();
        let mut last = Ok(None);
        for line in lines {
            last = parser.line(line.as_bytes());
            if !matches!(last, Ok(None)) {
                break;
            }
        }
        last
    }

    #[test]
    fn multiline_replies_join() {
        let reply = parse(&["250-mail.example", "250-SIZE 1000", "250 PIPELINING"])
            .unwrap()
            .unwrap();
        assert_eq!(reply.code, 250);
        assert_eq!(reply.lines, ["mail.example", "SIZE 1000", "PIPELINING"]);
        assert_eq!(parse(&["354"]).unwrap().unwrap().text(), "");
    }

    #[test]
    fn malformed_lines_are_errors() {
        for bad in [
            &["hello"][..],
            &["25"],
            &["250x"],
            &["099 no"],
            &["250-a", "251 b"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let endless: Vec<&str> = std::iter::repeat_n("250-more", MAX_LINES + 1).collect();
        assert!(parse(&endless).is_err());
    }

    #[test]
    fn printable_strips_control_characters() {
        assert_eq!(printable("ok\x1b[2J\r\nfake"), "ok?[2J??fake");
    }
}
