//! The config file: any text parsed as `config.toml` and each of its profiles selected
//! and checked as `--profile NAME` would (`envoi::profile::fuzzing::config_profiles`, no
//! file read), and each line holding `://` read as `--smtp-url`
//! (`profile::profile_from_url`).
//!
//! Invariants (a panic is a bug):
//! - nothing panics;
//! - every error is an `envoi::Error` of a documented kind (not 70), in printable words;
//! - no error, and no profile as `{:?}` shows it, repeats a secret: the value of a
//!   `password` or `client_secret` key, or the password or a parameter's value in an
//!   `--smtp-url`. To tell a leak from a coincidence, the secret is a fixed word
//!   (`SECRET`, in the seeds and the dictionary) that the input writes once, in such a
//!   place.
//! - a profile's host has no CR, LF or NUL, and its timeout is at least a second.
#![no_main]

use std::time::Duration;

use envoi::profile::fuzzing::config_profiles;
use envoi::profile::{Transport, profile_from_url};
use envoi_fuzz::check_error;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // envoi reads the file as UTF-8 text: other bytes never reach the parser.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let show = || format!("\n--- config ---\n{text}");
    let secret = holds_a_secret(text);
    let no_secret = |shown: &str, what: &str| {
        assert!(
            !(secret && shown.contains(SECRET)),
            "{what} {shown:?} repeats the password{}",
            show()
        );
    };
    match config_profiles(text) {
        Err(e) => {
            check_error(&e, &show);
            no_secret(e.message(), "the error");
        }
        Ok(profiles) => {
            for profile in profiles {
                match profile {
                    Err(e) => {
                        check_error(&e, &show);
                        no_secret(e.message(), "the error");
                    }
                    Ok(None) => {}
                    Ok(Some(profile)) => {
                        no_secret(&format!("{profile:?}"), "the profile");
                        if let Transport::Smtp(smtp) = &profile.transport {
                            assert!(
                                !smtp.host.contains(['\r', '\n', '\0']),
                                "host {:?}{}",
                                smtp.host,
                                show()
                            );
                            assert!(
                                smtp.timeout >= Duration::from_secs(1),
                                "timeout {:?}{}",
                                smtp.timeout,
                                show()
                            );
                        }
                    }
                }
            }
        }
    }
    for line in text.lines().filter(|l| l.contains("://")) {
        let show = || format!("\n--- --smtp-url ---\n{line}");
        let secret = line.matches(SECRET).count() == 1
            && (url_password(line).is_some_and(|p| p.contains(SECRET))
                || line.split_once('?').is_some_and(|(_, query)| {
                    query.split('&').any(|pair| {
                        pair.split_once('=')
                            .is_some_and(|(_, v)| v.contains(SECRET))
                    })
                }));
        match profile_from_url(line) {
            Err(e) => {
                check_error(&e, &show);
                assert!(
                    !(secret && e.message().contains(SECRET)),
                    "the error {:?} repeats the URL's password{}",
                    e.message(),
                    show()
                );
            }
            Ok(profile) => {
                if let Transport::Smtp(smtp) = &profile.transport {
                    assert!(
                        !smtp.host.contains(['\r', '\n', '\0']),
                        "host {:?}{}",
                        smtp.host,
                        show()
                    );
                }
            }
        }
    }
});

/// Where a secret is, as a fuzz input writes one: this word, once, as (part of) the
/// value of a `password` or `client_secret` key or the password of a URL. A fixed word
/// that no message of envoi's holds, so finding it in one is a leak, never a coincidence.
const SECRET: &str = "Sekr1t9fQk";

/// Whether `text` holds [`SECRET`] once, in a secret's value: `password` or
/// `oauth2.client_secret` of a profile when the text parses as TOML (an alias named
/// `password` is no secret), else on a line that sets a key of one of those names.
fn holds_a_secret(text: &str) -> bool {
    if text.matches(SECRET).count() != 1 {
        return false;
    }
    if let Ok(table) = text.parse::<toml::Table>() {
        let holds =
            |value: Option<&toml::Value>| value.is_some_and(|v| v.to_string().contains(SECRET));
        let profiles = table.get("profiles").and_then(toml::Value::as_table);
        return profiles.into_iter().flatten().any(|(_, profile)| {
            holds(profile.get("password"))
                || holds(profile.get("oauth2").and_then(|o| o.get("client_secret")))
        });
    }
    text.lines().any(|line| {
        let Some(at) = line.find(SECRET) else {
            return false;
        };
        let Some((before, _)) = line[..at].rsplit_once('=') else {
            return false;
        };
        let key = before
            .split([' ', '\t', '{', ',', '.'])
            .rfind(|w| !w.is_empty())
            .unwrap_or_default()
            .trim_matches(['"', '\'']);
        matches!(key, "password" | "client_secret")
    })
}

/// The password in `scheme://user:password@host…`.
fn url_password(line: &str) -> Option<&str> {
    let (_, rest) = line.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let (userinfo, _) = authority.rsplit_once('@')?;
    let (_, password) = userinfo.split_once(':')?;
    Some(password)
}
