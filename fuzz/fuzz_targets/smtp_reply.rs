//! What an SMTP server sends: any bytes, read as a session reads them, reply after reply
//! (`250-first\r\n250 last\r\n`), each also read as an EHLO answer (its keywords, AUTH
//! mechanisms and SIZE), through `envoi::deliver::fuzzing::server_replies`.
//!
//! Invariants (a panic is a bug):
//! - nothing panics;
//! - a reply has a code from 200 to 599, at most 128 lines, each under 4096 octets as
//!   received (three times that as text: U+FFFD for each byte that is not UTF-8) and
//!   without LF;
//! - the text envoi shows from a reply (in errors, RCPT reports, `envoi check`'s list of
//!   extensions, the AUTH mechanisms an error lists) holds no control character, so a
//!   server cannot write escape sequences to the user's terminal;
//! - AUTH mechanisms are upper case and single words.
#![no_main]

use envoi::deliver::fuzzing::server_replies;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let show = || format!("\n--- server sent ---\n{:?}", String::from_utf8_lossy(data));
    for reply in server_replies(data) {
        let Ok(reply) = reply else { continue };
        assert!(
            (200..600).contains(&reply.code),
            "reply code {}{}",
            reply.code,
            show()
        );
        assert!(
            !reply.lines.is_empty() && reply.lines.len() <= 128,
            "a reply of {} lines{}",
            reply.lines.len(),
            show()
        );
        for line in &reply.lines {
            // Under 4096 octets as received; each byte that is not UTF-8 becomes U+FFFD,
            // three octets.
            assert!(
                line.len() < 3 * 4096 && !line.contains('\n'),
                "reply line {line:?}{}",
                show()
            );
        }
        let shown = [&reply.shown]
            .into_iter()
            .chain(&reply.extensions)
            .chain(&reply.auth);
        for text in shown {
            assert!(
                !text.chars().any(char::is_control),
                "{text:?}, shown to the user, holds a control character{}",
                show()
            );
        }
        for mechanism in &reply.auth {
            assert!(
                !mechanism.is_empty()
                    && !mechanism.contains(|c: char| c.is_ascii_whitespace())
                    && !mechanism.chars().any(|c| c.is_ascii_lowercase()),
                "AUTH mechanism {mechanism:?}{}",
                show()
            );
        }
    }
});
