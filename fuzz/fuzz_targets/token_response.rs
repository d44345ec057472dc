//! The OAuth2 token endpoint's answer (`[profiles.NAME.oauth2]`): any HTTP status and
//! body, read as envoi reads them after a token request
//! (`envoi::deliver::fuzzing::token_answer`).
//!
//! Input: the HTTP status in decimal on the first line (200 when it is not a number),
//! then the body, as text (envoi reads it lossily as UTF-8).
//!
//! Invariants (a panic is a bug):
//! - nothing panics;
//! - a token comes only from a 2xx answer, and is one word of printable ASCII (RFC
//!   6750's b64token goes inside the SASL message); a new refresh token is not empty;
//! - every error is an `envoi::Error` of a documented kind (not 70), in printable words,
//!   of at most 2000 characters, and never repeats a secret envoi sent (the client
//!   secret, the refresh token), even when the endpoint echoes it.
#![no_main]

use envoi::deliver::fuzzing::token_answer;
use envoi_fuzz::check_error;
use libfuzzer_sys::fuzz_target;

/// What envoi sent: a client secret and a refresh token.
const SECRETS: [&str; 2] = ["Sekr1t-client-9fQk", "rt-Sekr1t-7Hd2"];

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (first, body) = text.split_once('\n').unwrap_or((&text, ""));
    let (status, body) = match first.trim().parse::<u16>() {
        Ok(status) => (status, body),
        Err(_) => (200, &text[..]),
    };
    let show = || format!("\n--- HTTP {status} ---\n{body}");
    let secrets: Vec<String> = SECRETS.iter().map(|s| (*s).to_owned()).collect();
    match token_answer(status, body, &secrets) {
        Ok(token) => {
            assert!(
                (200..300).contains(&status),
                "a token from an HTTP {status} answer{}",
                show()
            );
            assert!(
                !token.access_token.is_empty()
                    && token.access_token.bytes().all(|b| b.is_ascii_graphic()),
                "access token {:?}{}",
                token.access_token,
                show()
            );
            assert!(
                token.refresh_token.as_ref().is_none_or(|t| !t.is_empty()),
                "an empty refresh token{}",
                show()
            );
        }
        Err(e) => {
            check_error(&e, &show);
            let message = e.message();
            assert!(
                message.chars().count() <= 2000,
                "an error of {} characters{}",
                message.chars().count(),
                show()
            );
            for secret in SECRETS {
                assert!(
                    !message.contains(secret),
                    "the error {message:?} repeats the secret {secret:?}{}",
                    show()
                );
            }
        }
    }
});
