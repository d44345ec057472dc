//! Address lists as the connector writes them (`--to`, `--from`): arbitrary UTF-8 in,
//! and every mailbox that comes out must be safe to put in a header line and an SMTP
//! command.
//!
//! Invariants (a panic is a bug):
//! - `parse_lists` and `parse_single` never panic;
//! - no accepted mailbox, as written in a header (`Mailbox`'s Display) or in the envelope
//!   (`Address`'s Display), contains CR, LF or NUL;
//! - the domain of every accepted address is ASCII (IDN turned into A-labels).
#![no_main]

use envoi::Mailbox;
use libfuzzer_sys::fuzz_target;

fn check(input: &str, mailbox: &Mailbox) {
    for (what, text) in [
        ("mailbox", mailbox.to_string()),
        ("address", mailbox.email.to_string()),
    ] {
        assert!(
            !text.contains(['\r', '\n', '\0']),
            "{what} {text:?} (from {input:?}) contains CR, LF or NUL"
        );
    }
    let domain = mailbox.email.domain();
    assert!(
        domain.is_ascii(),
        "domain {domain:?} of {:?} (from {input:?}) is not ASCII",
        mailbox.email.to_string()
    );
}

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(list) = envoi::address::parse_lists("--to", &[input]) {
        for mailbox in &list {
            check(input, mailbox);
        }
    }
    if let Ok(mailbox) = envoi::address::parse_single("--from", input) {
        check(input, &mailbox);
    }
});
