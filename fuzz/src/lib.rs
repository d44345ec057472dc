//! What every fuzz target asserts about envoi's output: the invariants of a message on
//! the wire and of an error, written once. A failed check panics with the input shown,
//! which libFuzzer reports as a crash.

use envoi::{Error, ErrorKind};

/// RFC 5322 §2.1.1: no line of a message is longer than this, CRLF excluded.
pub const MAX_LINE: usize = 998;

/// Checks a whole message as envoi would send it (`show` prints the input and the
/// message for the report):
/// - CRLF line endings only: no bare CR, no bare LF;
/// - no NUL byte;
/// - no line over [`MAX_LINE`] octets, in the header or after it;
/// - the header block is header fields only (each line a `Name: value` field with a
///   valid name, or a continuation line), ended by an empty line: nothing injected;
/// - no Bcc or Resent-Bcc field (blind copies go in the envelope only).
pub fn check_message(bytes: &[u8], show: &dyn Fn() -> String) {
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'\n' => assert!(
                i > 0 && bytes[i - 1] == b'\r',
                "bare LF at byte {i}{}",
                show()
            ),
            b'\r' => assert!(
                bytes.get(i + 1) == Some(&b'\n'),
                "bare CR at byte {i}{}",
                show()
            ),
            0 => panic!("NUL byte at {i}{}", show()),
            _ => {}
        }
    }
    let lines = split_lines(bytes);
    let header_end = lines.iter().position(|l| l.is_empty());
    assert!(
        header_end.is_some(),
        "no empty line after the header{}",
        show()
    );
    let header_end = header_end.unwrap_or(lines.len());
    for (n, line) in lines.iter().enumerate() {
        let place = if n < header_end {
            "header line"
        } else {
            "line after the header"
        };
        assert!(
            line.len() <= MAX_LINE,
            "{place} {} is {} octets long (RFC 5322 limit: {MAX_LINE}): {:?}{}",
            n + 1,
            line.len(),
            String::from_utf8_lossy(&line[..line.len().min(120)]),
            show()
        );
    }
    let header = &lines[..header_end];
    if let Some(first) = header.first() {
        assert!(
            !first.starts_with(b" ") && !first.starts_with(b"\t"),
            "the header starts with a continuation line{}",
            show()
        );
    }
    for line in header {
        if line.starts_with(b" ") || line.starts_with(b"\t") {
            continue;
        }
        let name = line.split(|b| *b == b':').next().unwrap_or_default();
        // RFC 5322 §4.5.3 (obs-optional): space may come between a name and its colon.
        let name = name.trim_ascii_end();
        assert!(
            name.len() < line.len()
                && !name.is_empty()
                && name.iter().all(|b| (33..=126).contains(b) && *b != b':'),
            "header line {:?} is not a field{}",
            String::from_utf8_lossy(&line[..line.len().min(120)]),
            show()
        );
    }
    for field in fields(header) {
        assert!(
            !field.name.eq_ignore_ascii_case("bcc")
                && !field.name.eq_ignore_ascii_case("resent-bcc"),
            "{} field in the message{}",
            field.name,
            show()
        );
    }
}

/// Checks an error envoi returned: a kind with a documented exit code and a message in
/// words, safe to print: not empty, and without control characters (other than a line
/// break between sentences or a tab) that a terminal would obey.
pub fn check_error(error: &Error, show: &dyn Fn() -> String) {
    assert!(
        ErrorKind::ALL.contains(&error.kind()),
        "an error of no documented kind{}",
        show()
    );
    assert_ne!(
        error.kind(),
        ErrorKind::Internal,
        "a bug reported as an error (70): {}{}",
        error.message(),
        show()
    );
    let message = error.message();
    assert!(
        !message.trim().is_empty(),
        "an error without words{}",
        show()
    );
    assert!(
        !message
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t'),
        "control character in the error {message:?}{}",
        show()
    );
}

/// Lines without their CRLF (the last piece, after the final CRLF, is dropped if empty).
pub fn split_lines(bytes: &[u8]) -> Vec<&[u8]> {
    let mut lines: Vec<&[u8]> = bytes
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .collect();
    if lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    lines
}

/// One header field.
pub struct Field {
    /// Its name, trimmed.
    pub name: String,
    /// Its unfolded value.
    pub value: String,
}

/// The fields of a header block, continuation lines joined.
pub fn fields(block: &[&[u8]]) -> Vec<Field> {
    let mut out: Vec<Field> = Vec::new();
    for line in block {
        let text = String::from_utf8_lossy(line);
        if text.starts_with([' ', '\t']) {
            if let Some(last) = out.last_mut() {
                last.value.push_str(&text);
            }
            continue;
        }
        let (name, value) = text.split_once(':').unwrap_or((&text, ""));
        out.push(Field {
            name: name.trim().to_owned(),
            value: value.to_owned(),
        });
    }
    out
}

/// The message's header block and every MIME part's, found through the boundaries
/// that the Content-Type fields declare.
pub fn header_blocks<'a>(lines: &'a [&'a [u8]]) -> Vec<&'a [&'a [u8]]> {
    let mut blocks = Vec::new();
    let mut boundaries: Vec<Vec<u8>> = Vec::new();
    let mut header_start = Some(0);
    for (i, line) in lines.iter().enumerate() {
        match header_start {
            Some(start) if line.is_empty() => {
                let block = &lines[start..i];
                for field in fields(block) {
                    if let Some(b) = boundary(&field) {
                        boundaries.push(b);
                    }
                }
                blocks.push(block);
                header_start = None;
            }
            Some(_) => {}
            None => {
                let opens_part = boundaries.iter().any(|b| {
                    line.strip_prefix(b"--")
                        .is_some_and(|rest| rest == b.as_slice())
                });
                if opens_part {
                    header_start = Some(i + 1);
                }
            }
        }
    }
    if let Some(start) = header_start {
        blocks.push(&lines[start..]);
    }
    blocks
}

fn boundary(field: &Field) -> Option<Vec<u8>> {
    if !field.name.eq_ignore_ascii_case("content-type") {
        return None;
    }
    let lower = field.value.to_ascii_lowercase();
    let at = lower.find("boundary=")? + "boundary=".len();
    let rest = &field.value[at..];
    let value = match rest.strip_prefix('"') {
        Some(quoted) => quoted.split('"').next()?,
        None => rest.split([';', ' ', '\t']).next()?,
    };
    Some(value.as_bytes().to_vec())
}
