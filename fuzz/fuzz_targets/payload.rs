//! The connector's JSON payload (`envoi send --input FILE`), all the way to the bytes
//! that go on the wire: `payload::parse` → `Draft::into_email` → `message::build`.
//!
//! A JSON payload holds only inline data (no `@FILE`, no paths: `payload::parse` makes
//! `Text::Inline` and `AttachmentSource::Data(Text::Inline, _)` only), so `into_email`
//! reads no file and the target is hermetic.
//!
//! Invariants (a panic is a bug):
//! - nothing panics;
//! - the message has CRLF line endings only: no bare LF, no bare CR;
//! - no header line is longer than RFC 5322's 998 octets — in the message's own header
//!   block (up to the first empty line) and, as RFC 5322 §2.1.1 and SMTP's 1000-octet
//!   line limit ask, in any line of the message (MIME part headers, bodies);
//! - the message's header block has no Bcc field (Bcc goes in the envelope only);
//! - no RFC 2047 encoded-word (`=?…?=`) in a Content-Type or Content-Disposition field
//!   (RFC 2047 §5 forbids them there; a non-ASCII parameter needs RFC 2231), unless the
//!   payload itself put `=?` in a ContentType or FileName;
//! - the message is ASCII when every address is (message.rs: "the message is plain
//!   ASCII unless an address needs SMTPUTF8").
#![no_main]

use std::time::SystemTime;

use envoi::Mailbox;
use envoi::draft::Draft;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(draft) = envoi::payload::parse("-", data) else {
        return;
    };
    let user_encoded_words = has_user_encoded_words(&draft);
    let Ok(email) = draft.into_email() else {
        return;
    };
    let from = email
        .from
        .clone()
        .unwrap_or_else(|| Mailbox::new(None, "f@example.com".parse().expect("a valid address")));
    let ascii_addresses = [&email.to, &email.cc, &email.bcc, &email.reply_to]
        .into_iter()
        .flatten()
        .chain([&from])
        .all(|m| AsRef::<str>::as_ref(&m.email).is_ascii());
    let Ok(prepared) = envoi::message::build(email, &from, SystemTime::UNIX_EPOCH) else {
        return;
    };
    // A payload's attachments are in memory (no file parts), so this cannot fail.
    let Ok(bytes) = prepared.bytes.to_vec() else {
        panic!("a payload message could not be written out");
    };
    let bytes = &bytes[..];
    let show = || {
        format!(
            "\n--- payload ---\n{}\n--- message ---\n{}",
            String::from_utf8_lossy(data),
            String::from_utf8_lossy(bytes)
        )
    };

    // CRLF only.
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
            _ => {}
        }
    }

    let lines = split_lines(bytes);
    let top_header_lines = lines
        .iter()
        .position(|l| l.is_empty())
        .unwrap_or(lines.len());
    for (n, line) in lines.iter().enumerate() {
        let place = if n < top_header_lines {
            "header line"
        } else {
            "line after the header"
        };
        assert!(
            line.len() <= 998,
            "{place} {} is {} octets long (RFC 5322 limit: 998): {:?}{}",
            n + 1,
            line.len(),
            String::from_utf8_lossy(&line[..line.len().min(120)]),
            show()
        );
    }

    // No Bcc field. ("Bcc:" may appear inside a value, e.g. a Subject or a display name.)
    for field in fields(&lines[..top_header_lines]) {
        assert!(
            !field.name.eq_ignore_ascii_case("bcc"),
            "Bcc header field in the message{}",
            show()
        );
    }

    // No encoded-word in Content-Type / Content-Disposition, in any header block.
    if !user_encoded_words {
        for block in header_blocks(&lines) {
            for field in fields(block) {
                let name = field.name.to_ascii_lowercase();
                if name == "content-type" || name == "content-disposition" {
                    assert!(
                        !field.value.contains("=?"),
                        "RFC 2047 encoded-word in a {} field: {:?}{}",
                        field.name,
                        field.value,
                        show()
                    );
                }
            }
        }
    }

    if ascii_addresses && let Some(i) = bytes.iter().position(|b| !b.is_ascii()) {
        panic!(
            "non-ASCII byte at {i} although every address is ASCII{}",
            show()
        );
    }
});

/// True when the payload's own ContentType or FileName holds `=?`, so that an
/// encoded-word look-alike in those fields may be the user's text.
fn has_user_encoded_words(draft: &Draft) -> bool {
    draft.attachments.iter().flatten().any(|a| {
        [&a.content_type, &a.file_name]
            .into_iter()
            .flatten()
            .any(|s| s.contains("=?"))
    })
}

/// Lines without their CRLF (the last piece, after the final CRLF, is dropped if empty).
fn split_lines(bytes: &[u8]) -> Vec<&[u8]> {
    let mut lines: Vec<&[u8]> = bytes
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .collect();
    if lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    lines
}

struct Field {
    name: String,
    /// Unfolded value.
    value: String,
}

/// The fields of a header block, continuation lines joined.
fn fields(block: &[&[u8]]) -> Vec<Field> {
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
fn header_blocks<'a>(lines: &'a [&'a [u8]]) -> Vec<&'a [&'a [u8]]> {
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
