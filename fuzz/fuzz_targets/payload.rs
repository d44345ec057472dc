//! The connector's JSON payload (`envoi send --input FILE`), all the way to the bytes
//! that go on the wire: `payload::parse` → `Draft::into_email` → `message::build`.
//!
//! A JSON payload holds only inline data (no `@FILE`, no paths: `payload::parse` makes
//! `Text::Inline` and `AttachmentSource::Data(Text::Inline, _)` only), so `into_email`
//! reads no file and the target is hermetic.
//!
//! Invariants (a panic is a bug):
//! - nothing panics;
//! - the message has CRLF line endings only (no bare LF, no bare CR) and no NUL;
//! - no line is longer than RFC 5322's 998 octets — in the message's own header block
//!   (up to the first empty line) and, as RFC 5322 §2.1.1 and SMTP's 1000-octet line
//!   limit ask, in any line of the message (MIME part headers, bodies);
//! - the message's header block is fields only and has no Bcc or Resent-Bcc field (Bcc
//!   goes in the envelope only);
//! - no RFC 2047 encoded-word (`=?…?=`) in a Content-Type or Content-Disposition field
//!   (RFC 2047 §5 forbids them there; a non-ASCII parameter needs RFC 2231), unless the
//!   payload itself put `=?` in a ContentType or FileName;
//! - the message is ASCII when every address is (message.rs: "the message is plain
//!   ASCII unless an address needs SMTPUTF8").
#![no_main]

use std::time::SystemTime;

use envoi::Mailbox;
use envoi::draft::Draft;
use envoi_fuzz::{check_message, fields, header_blocks, split_lines};
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

    check_message(bytes, &show);
    let lines = split_lines(bytes);

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
