//! Sendmail mode (`envoi sendmail`, or envoi called as `sendmail`): the message on
//! standard input with the `-t`, `-f`, `-F` and recipient arguments, through the library
//! calls sendmail mode makes (`given::parse` → `Given::prepare`), to the bytes that would
//! go on the wire.
//!
//! Input: the arguments, each ended by a NUL byte, then one more NUL, then standard
//! input (which may hold NUL bytes itself). Without a double NUL the whole input is
//! standard input and the one argument is `-t`. Arguments are read as sendmail reads
//! them, the value attached: `-t`, `-fADDR` or `-rADDR` (`-f<>`: no envelope sender),
//! `-FNAME`, and `-i`, `-o…`, `-B…` (ignored); and two of the profile's settings:
//! `-pADDR` sets its `from` (default `Ops <ops@example.com>`; `-p` alone: none), `-D`
//! removes its `default_domain` (`example.net`), `-L` sets `allow_from_override = false`,
//! `-Hon` and `-Hoff` its `set_from_header`. Anything else is a recipient. The
//! profile's aliases map `root` to `admin@example.org`, and `team` to it, `root`, `\ops`
//! and `team` itself (a chain, a name not aliased further, a loop).
//!
//! Invariants (a panic is a bug):
//! - nothing panics;
//! - a prepared message has CRLF line endings only, no NUL, no line over 998 octets, a
//!   header of fields only (nothing injected through `-F` or a folded field), and no Bcc
//!   or Resent-Bcc field;
//! - the envelope has a recipient, and no address in it holds a control character, or
//!   a space outside a quoted local part;
//! - the Message-ID (which reports and the outbox repeat) holds no CR, LF or NUL;
//! - an error is an `envoi::Error` of a documented kind (not 70), in printable words.
#![no_main]

use std::collections::BTreeMap;
use std::time::SystemTime;

use envoi::message::given::{self, Alias, Names, SetFromHeader, Submission};
use envoi_fuzz::{check_error, check_message};
use libfuzzer_sys::fuzz_target;

fn alias(targets: &[&str]) -> Alias {
    Alias {
        targets: targets.iter().map(|t| t.to_string()).collect(),
        origin: "the fuzz target".to_owned(),
    }
}

fuzz_target!(|data: &[u8]| {
    let (args, stdin) = match data.windows(2).position(|w| w == b"\0\0") {
        Some(at) => (
            data[..at]
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect(),
            &data[at + 2..],
        ),
        None => (vec!["-t".to_owned()], data),
    };
    let mut recipients = Vec::new();
    let mut from_headers = false;
    let mut envelope_from = None;
    let mut full_name = None;
    let mut profile_from = Some("Ops <ops@example.com>");
    let mut allow_from_override = true;
    let mut set_from_header = SetFromHeader::Auto;
    let mut names = Names {
        aliases: BTreeMap::from([
            ("root".to_owned(), alias(&["admin@example.org"])),
            (
                "team".to_owned(),
                alias(&["admin@example.org", "root", "\\ops", "team"]),
            ),
        ]),
        default_domain: Some("example.net".to_owned()),
    };
    for arg in &args {
        if arg == "-t" {
            from_headers = true;
        } else if arg == "-i" || arg.starts_with("-o") || arg.starts_with("-B") {
            // Accepted and ignored, as sendmail mode does.
        } else if arg == "-D" {
            names.default_domain = None;
        } else if arg == "-L" {
            allow_from_override = false;
        } else if arg == "-Hon" {
            set_from_header = SetFromHeader::On;
        } else if arg == "-Hoff" {
            set_from_header = SetFromHeader::Off;
        } else if let Some(name) = arg.strip_prefix("-F") {
            full_name = Some(name);
        } else if let Some(address) = arg.strip_prefix("-f").or(arg.strip_prefix("-r")) {
            envelope_from = Some(address);
        } else if let Some(address) = arg.strip_prefix("-p") {
            profile_from = (!address.is_empty()).then_some(address);
        } else {
            recipients.push(arg.clone());
        }
    }
    let submission = Submission {
        recipients: &recipients,
        from_headers,
        envelope_from,
        full_name,
        profile_from,
        allow_from_override,
        set_from_header,
        names: &names,
        now: SystemTime::UNIX_EPOCH,
    };
    let input = || {
        format!(
            "\n--- arguments ---\n{args:?}\n--- standard input ---\n{}",
            String::from_utf8_lossy(stdin)
        )
    };
    let prepared = match given::parse(stdin).and_then(|g| g.prepare(&submission)) {
        Ok(prepared) => prepared,
        Err(e) => return check_error(&e, &input),
    };
    let bytes = match prepared.bytes.to_vec() {
        Ok(bytes) => bytes,
        Err(e) => panic!(
            "a message in memory could not be written out: {e}{}",
            input()
        ),
    };
    let show = || {
        format!(
            "{}\n--- message ---\n{}",
            input(),
            String::from_utf8_lossy(&bytes)
        )
    };
    check_message(&bytes, &show);
    assert!(
        !prepared.envelope.to().is_empty(),
        "an envelope without a recipient{}",
        show()
    );
    let addresses = prepared
        .envelope
        .from()
        .into_iter()
        .chain(prepared.envelope.to());
    for address in addresses {
        let text = address.to_string();
        // A space only inside a quoted local part (`"john doe"@example.com`).
        assert!(
            !text.chars().any(char::is_control)
                && (text.starts_with('"') || !text.contains(char::is_whitespace)),
            "envelope address {text:?} holds a space or a control character{}",
            show()
        );
    }
    assert!(
        !prepared.message_id.contains(['\r', '\n', '\0']),
        "Message-ID {:?} holds CR, LF or NUL{}",
        prepared.message_id,
        show()
    );
});
