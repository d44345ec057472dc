//! Secrets taken out of what a server said, before anyone sees it (a transcript, an
//! error, the delivery log): SMTP and IMAP servers may echo what a login sent.

use crate::profile::Password;

/// `text` with each of `hidden` (the secrets a login sent: password, token, their
/// encodings) replaced by `[redacted]`. A secret of under 8 characters may be part of any
/// word, and where `[redacted]` stood would spell it: text that holds one is withheld
/// whole. One function for SMTP and IMAP, which both meet servers that echo.
pub(crate) fn redact(hidden: &[Password], text: &str) -> String {
    let mut text = text.to_owned();
    for secret in hidden.iter().map(Password::expose) {
        if secret.is_empty() || !text.contains(secret) {
            continue;
        }
        if secret.chars().count() < 8 {
            return "[withheld: it holds the login's secret]".to_owned();
        }
        text = text.replace(secret, "[redacted]");
    }
    text
}
