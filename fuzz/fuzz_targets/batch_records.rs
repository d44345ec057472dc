//! `envoi batch`'s records: JSON Lines of connector payloads, or a CSV mail merge whose
//! columns fill the `--subject`, `--body` and `--attach` templates, read by
//! `message::records` and each record made into the message that would go on the wire
//! (`Draft::into_email` → `message::build`).
//!
//! Input: `csv\0SUBJECT\0BODY\0ATTACH\0CSV` (or `csv html\0…` for an HTML body; an empty
//! SUBJECT, BODY or ATTACH is no such flag; the recipient column is `to`); anything else
//! is JSON Lines. A record whose `--attach` template names a file is rendered but not
//! built, so the target reads no file the data names.
//!
//! Invariants (a panic is a bug):
//! - nothing panics, and every record comes back (as a message or as an error);
//! - every message has CRLF line endings only, no NUL, no line over 998 octets, a header
//!   of fields only and no Bcc field;
//! - every error is an `envoi::Error` of a documented kind (not 70), in printable words.
#![no_main]

use std::time::SystemTime;

use envoi::Mailbox;
use envoi::draft::{AttachmentSource, Draft};
use envoi::message::records::{CsvMerge, JsonLines, Merge, Records};
use envoi_fuzz::{check_error, check_message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let show_input = || format!("\n--- input ---\n{}", String::from_utf8_lossy(data));
    let parts: Vec<&[u8]> = data.splitn(5, |b| *b == 0).collect();
    let records = match &parts[..] {
        [mode @ (b"csv" | b"csv html"), subject, body, attach, csv] => {
            let text = |b: &[u8]| (!b.is_empty()).then(|| String::from_utf8_lossy(b).into_owned());
            let merge = Merge {
                subject: text(subject),
                body: text(body),
                html: *mode == b"csv html",
                to_column: "to".to_owned(),
                attach: text(attach).into_iter().collect(),
                // A template with no folder of its own is confined here; local images of
                // an HTML body are not embedded (the default), so no file is read.
                input_folder: Some(".".into()),
                ..Merge::default()
            };
            match CsvMerge::new(*csv, merge) {
                Ok(csv) => Records::Csv(Box::new(csv)),
                Err(e) => return check_error(&e, &show_input),
            }
        }
        _ => Records::Jsonl(JsonLines::new(data)),
    };
    for record in records {
        let record = match record {
            Ok(record) => record,
            Err(e) => return check_error(&e, &show_input),
        };
        match record.draft {
            Ok(draft) => message(draft, &show_input),
            Err(e) => check_error(&e, &show_input),
        }
    }
});

/// The record's message, checked.
fn message(draft: Draft, show_input: &dyn Fn() -> String) {
    let names_a_file = draft
        .attachments
        .iter()
        .flatten()
        .any(|a| matches!(a.source, AttachmentSource::Path(_)));
    if names_a_file {
        return;
    }
    let email = match draft.into_email() {
        Ok(email) => email,
        Err(e) => return check_error(&e, show_input),
    };
    let from = email
        .from
        .clone()
        .unwrap_or_else(|| Mailbox::new(None, "f@example.com".parse().expect("a valid address")));
    let prepared = match envoi::message::build(email, &from, SystemTime::UNIX_EPOCH) {
        Ok(prepared) => prepared,
        Err(e) => return check_error(&e, show_input),
    };
    let bytes = match prepared.bytes.to_vec() {
        Ok(bytes) => bytes,
        Err(e) => panic!(
            "a message in memory could not be written out: {e}{}",
            show_input()
        ),
    };
    let show = || {
        format!(
            "{}\n--- message ---\n{}",
            show_input(),
            String::from_utf8_lossy(&bytes)
        )
    };
    check_message(&bytes, &show);
}
