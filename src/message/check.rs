//! Checks on values that end up in a header line or an SMTP command: the one header
//! validator of every entry point, so the same text gets the same answer whether `send`
//! builds the message or sendmail mode is given it whole.
//!
//! CR, LF and NUL could smuggle a header or a command (header and SMTP injection);
//! other control characters have no place in a header either (RFC 5322 allows only
//! printable characters, space and tab); and a word too long to fold would make a line
//! over the 998-octet limit. lettre encodes non-ASCII words and folds at spaces, so only
//! long runs of ASCII without a space are refused. A message given whole is checked line
//! by line with the same rules ([`header_line`], [`body_line`], [`fold`]), and every
//! message's header block is checked once more as it will be sent ([`header_block`]).

use crate::error::{Error, Result};

/// Longest ASCII word accepted in a header value; with the name and folding whitespace
/// the line stays under RFC 5322's 998 octets.
pub(crate) const MAX_HEADER_WORD: usize = 900;

/// Longest line of a message, CRLF not counted (RFC 5322 §2.1.1).
pub(crate) const MAX_LINE: usize = 998;

/// Width a folded header line aims at (RFC 5322 §2.1.1: "SHOULD be no more than 78").
const FOLD_WIDTH: usize = 78;

/// Refuses CR, LF and NUL. `what` names the flag or key, e.g. `--to`.
pub(crate) fn no_line_breaks(what: &str, value: &str) -> Result<()> {
    match value.chars().find(|c| matches!(c, '\r' | '\n' | '\0')) {
        Some(c) => Err(Error::invalid(format!(
            "{what}: the value contains a {} character, which is not allowed here: {value:?}",
            control_name(c)
        ))),
        None => Ok(()),
    }
}

/// A header value: no control character but tab, and no unfoldable ASCII word.
pub(crate) fn header_text(what: &str, value: &str) -> Result<()> {
    no_line_breaks(what, value)?;
    if let Some(c) = value.chars().find(|c| c.is_control() && *c != '\t') {
        return Err(Error::invalid(format!(
            "{what}: the value contains the control character {}, which is not allowed in a \
             header: {value:?}",
            control_name(c)
        )));
    }
    // lettre folds at spaces only, so a tab does not end a word here.
    let longest = value
        .split(' ')
        .filter(|word| word.is_ascii())
        .map(str::len)
        .max()
        .unwrap_or(0);
    if longest > MAX_HEADER_WORD {
        return Err(Error::invalid(format!(
            "{what}: a word of {longest} characters without a space cannot be folded into a \
             header line (at most {MAX_HEADER_WORD})"
        )));
    }
    Ok(())
}

/// An RFC 5322 field name: 1 to 76 printable ASCII characters, no colon.
pub(crate) fn is_header_name(name: &str) -> bool {
    (1..=76).contains(&name.len()) && name.bytes().all(|b| (33..=126).contains(&b) && b != b':')
}

/// Fields that name blind recipients (RFC 5322 §3.6.3 and §3.6.6): they never go out in
/// a header, whichever command took them, or every recipient would see who was hidden.
pub(crate) fn is_blind_copy(name: &str) -> bool {
    name.eq_ignore_ascii_case("Bcc") || name.eq_ignore_ascii_case("Resent-Bcc")
}

/// One raw line of a header block given whole (`what` says where, e.g. `standard input,
/// line 3 (Subject)`): [`header_text`]'s rule on bytes. No NUL or other ASCII control
/// character but tab; bytes of 8-bit charsets pass (sendmail mode sends them as given).
pub(crate) fn header_line(what: &str, line: &[u8]) -> Result<()> {
    match line.iter().find(|b| b.is_ascii_control() && **b != b'\t') {
        Some(&b) => Err(Error::invalid(format!(
            "{what}: the header contains the control character {}, which is not allowed in a \
             header",
            control_name(char::from(b))
        ))),
        None => Ok(()),
    }
}

/// One raw line of a body given whole: no NUL (as `send` refuses in a body), at most 998
/// octets. Such a line would need a transfer encoding, which means rewriting the caller's
/// MIME structure; the caller that wrote the message is the one to encode it.
pub(crate) fn body_line(what: &str, line: &[u8]) -> Result<()> {
    if line.contains(&0) {
        return Err(Error::invalid(format!(
            "{what}: the body contains a NUL byte; send binary data as an attachment \
             (base64)"
        )));
    }
    if line.len() > MAX_LINE {
        return Err(Error::invalid(format!(
            "{what}: a body line of {} octets; at most {MAX_LINE} are allowed (RFC 5322 \
             2.1.1): encode the body (quoted-printable or base64) before handing it over",
            line.len()
        )));
    }
    Ok(())
}

/// `text` with each control character written as an escape (`\u{1b}`, `\r`): for an
/// error that repeats what a parser read from a file or the data, so that a terminal
/// shows it rather than obeys it and one error stays one line.
pub(crate) fn escape_controls(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().collect()
            } else {
                String::from(c)
            }
        })
        .collect()
}

/// A header line (`Name: value`, or a continuation starting with a space or tab) as
/// lines of at most 998 octets: itself when it fits, else folded before its spaces and
/// tabs (RFC 5322 §2.2.3: unfolding gives back the same field), aiming at 78 octets a
/// line. `what` names the field for the error when a run without whitespace is too long.
pub(crate) fn fold(what: &str, line: &[u8]) -> Result<Vec<Vec<u8>>> {
    if line.len() <= MAX_LINE {
        return Ok(vec![line.to_vec()]);
    }
    let wsp = |b: &u8| matches!(b, b' ' | b'\t');
    // Never inside the field name, and never so that a line holds only whitespace.
    let first = match line.iter().position(|b| *b == b':') {
        Some(colon) if !wsp(&line[0]) => colon + 1,
        _ => 1,
    };
    let last_text = line.iter().rposition(|b| !wsp(b)).unwrap_or(0);
    let breaks: Vec<usize> = (first..=last_text)
        .filter(|&i| wsp(&line[i]) && !wsp(&line[i - 1]))
        .collect();
    let mut lines = Vec::new();
    let mut start = 0;
    while line.len() - start > FOLD_WIDTH {
        // The breaks are sorted: start at the first one past `start` (a scan from the
        // top for each line made folding a long field quadratic).
        let mut ahead = breaks[breaks.partition_point(|&b| b <= start)..]
            .iter()
            .copied();
        let Some(nearest) = ahead.next() else { break };
        let best = std::iter::once(nearest)
            .chain(ahead)
            .take_while(|&b| b - start <= FOLD_WIDTH)
            .last()
            .unwrap_or(nearest);
        if best - start > MAX_LINE {
            break;
        }
        lines.push(line[start..best].to_vec());
        start = best;
    }
    lines.push(line[start..].to_vec());
    if lines.iter().any(|l| l.len() > MAX_LINE) {
        return Err(Error::invalid(format!(
            "{what}: a header line of {} octets has a run of over {MAX_LINE} octets without a \
             space to fold it at (RFC 5322 2.1.1)",
            line.len()
        )));
    }
    Ok(lines)
}

/// The header block of a message as it will be sent (up to the first empty line; CRLF
/// line endings): no line over 998 octets, no NUL. The last guard of every path, named by
/// the field at fault: whatever built the header, no such line leaves envoi.
pub(crate) fn header_block(message: &[u8]) -> Result<()> {
    let mut field = "";
    for line in message.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break;
        }
        if !matches!(line[0], b' ' | b'\t') {
            let name = line.split(|b| *b == b':').next().unwrap_or_default();
            field = std::str::from_utf8(name).unwrap_or("a header");
        }
        if line.len() > MAX_LINE {
            return Err(Error::invalid(format!(
                "{field}: the header would have a line of {} octets; at most {MAX_LINE} are \
                 allowed (RFC 5322 2.1.1): shorten its longest word",
                line.len()
            )));
        }
        if line.contains(&0) {
            return Err(Error::invalid(format!(
                "{field}: the header contains a NUL byte"
            )));
        }
    }
    Ok(())
}

fn control_name(c: char) -> String {
    match c {
        '\r' => "CR".into(),
        '\n' => "LF".into(),
        '\0' => "NUL".into(),
        c => format!("U+{:04X}", u32::from(c)),
    }
}

/// This machine's name when it is a plain host name (letters, digits, `-` and `.`):
/// what an EHLO or a Received field may say of it.
pub(crate) fn this_host_name() -> Option<String> {
    hostname::get()
        .ok()
        .and_then(|name| name.into_string().ok())
        .filter(|name| {
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn line_breaks_are_refused_with_the_flag_named() {
        let err = no_line_breaks("--subject", "hi\r\nBcc: x@y").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData);
        assert!(
            err.message()
                .starts_with("--subject: the value contains a CR"),
            "{err}"
        );
        assert!(no_line_breaks("--subject", "a\0b").is_err());
        assert!(no_line_breaks("--subject", "fine ✓").is_ok());
    }

    #[test]
    fn header_text_refuses_controls_and_unfoldable_words() {
        assert!(header_text("--subject", "tab\tis fine, ünïcödé too").is_ok());
        let err = header_text("--subject", "a\x1b[2Jb").unwrap_err();
        assert!(err.message().contains("U+001B"), "{err}");
        assert!(header_text("--subject", "del\x7f").is_err());
        let long = "x".repeat(MAX_HEADER_WORD + 1);
        assert!(header_text("--subject", &long).is_err());
        assert!(header_text("--subject", &format!("{} {}", &long[1..], &long[1..])).is_ok());
        assert!(header_text("--subject", &"é".repeat(2000)).is_ok());
    }

    /// A field as long as standard input allows is folded in one pass: a 4 MiB Subject
    /// (the review's B4 took minutes on the quadratic scan) comes back whole.
    #[test]
    fn a_field_of_megabytes_folds_whole() {
        let line = format!("Subject: {}", "word ".repeat(800_000).trim_end());
        let lines = fold("Subject", line.as_bytes()).unwrap();
        assert!(lines.len() > 50_000);
        assert!(lines.iter().all(|l| l.len() <= FOLD_WIDTH));
        assert_eq!(lines.concat(), line.as_bytes());
    }

    #[test]
    fn long_header_lines_are_folded_at_whitespace_or_refused() {
        let words: Vec<String> = (0..300).map(|i| format!("w{i:03}")).collect();
        let line = format!("X-Long: {}", words.join(" \t "));
        let lines = fold("X-Long", line.as_bytes()).unwrap();
        assert!(lines.len() > 1);
        assert!(lines.iter().all(|l| l.len() <= FOLD_WIDTH), "{lines:?}");
        assert!(
            lines[1..].iter().all(|l| l[0] == b' ' && l.len() > 3),
            "{lines:?}"
        );
        assert_eq!(lines.concat(), line.as_bytes(), "unfolding gives it back");

        let short = b"Subject: fits as it is".to_vec();
        assert_eq!(fold("Subject", &short).unwrap(), [short]);
        // A run of over 998 octets cannot be folded; a shorter one keeps its own line.
        let run = "x".repeat(MAX_LINE);
        let err = fold("X-Run", format!("X-Run: a {run}").as_bytes()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidData);
        assert!(
            err.message().starts_with("X-Run: a header line of"),
            "{err}"
        );
        let ok = fold("X-Run", format!("X-Run: a {} b", &run[10..]).as_bytes()).unwrap();
        assert_eq!(ok.len(), 3, "{ok:?}");
        // Never inside the name, never a line of only whitespace.
        let name = format!("X-{}: v", "n".repeat(MAX_LINE));
        assert!(fold("X", name.as_bytes()).is_err());
        let trailing = format!("X: {}{}", "y ".repeat(300), " ".repeat(500));
        let lines = fold("X", trailing.as_bytes()).unwrap();
        assert!(
            lines.iter().all(|l| l.iter().any(|b| *b != b' ')),
            "{lines:?}"
        );
    }

    #[test]
    fn raw_lines_get_send_s_rules() {
        assert!(header_line("line 1 (Subject)", b"Subject: caf\xe9\tok").is_ok());
        for bad in [&b"Subject: a\0b"[..], b"Subject: \x1b[2J", b"Subject: \x7f"] {
            let err = header_line("line 1 (Subject)", bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidData);
            assert!(
                err.message().starts_with("line 1 (Subject): the header"),
                "{err}"
            );
        }
        assert!(body_line("line 3", b"\x1b[1m bold \x0c\xe9").is_ok());
        assert!(
            body_line("line 3", b"bo\0dy")
                .unwrap_err()
                .message()
                .contains("NUL")
        );
        assert!(body_line("line 3", &[b'x'; MAX_LINE]).is_ok());
        let err = body_line("line 3", &[b'x'; MAX_LINE + 1]).unwrap_err();
        assert!(
            err.message()
                .starts_with("line 3: a body line of 999 octets"),
            "{err}"
        );
    }

    #[test]
    fn the_header_block_as_sent_has_no_long_line() {
        let long = format!("To: a@b\r\nX-Long: {}\r\n\r\nbody", "z".repeat(MAX_LINE));
        let err = header_block(long.as_bytes()).unwrap_err();
        assert!(
            err.message().starts_with("X-Long: the header would have"),
            "{err}"
        );
        let body = format!("To: a@b\r\n folded\r\n\r\n{}\0", "z".repeat(2000));
        assert!(
            header_block(body.as_bytes()).is_ok(),
            "the body is not its business"
        );
        assert!(is_blind_copy("bcc") && is_blind_copy("RESENT-BCC") && !is_blind_copy("Cc"));
    }

    #[test]
    fn header_names() {
        assert!(is_header_name("X-Job"));
        for bad in ["", "X Job", "X:Job", "X\tJob", "Ünï", &"X".repeat(77)] {
            assert!(!is_header_name(bad), "{bad:?}");
        }
    }
}
