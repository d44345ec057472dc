//! A failed step in words: a negative reply, a broken connection, a wrong security for
//! the port, a certificate (77) or anything else (75).

use std::io;

use crate::deliver::net::ReachError;
use crate::error::{Error, ErrorKind};
use crate::profile::Security;

use super::conn::{self, WireError};
use super::reply::{Reply, printable};
use super::tls;

/// A negative reply to `what`: 4xx is temporary, 5xx permanent.
pub(super) fn negative(what: &str, reply: &Reply) -> Error {
    let kind = if reply.code < 500 {
        ErrorKind::Temporary
    } else {
        ErrorKind::Unavailable
    };
    Error::new(
        kind,
        with_hint(
            format!(
                "{what}: the server answered {} {}",
                reply.code,
                printable(reply.text())
            ),
            reply,
        ),
    )
}

/// `message` (trimmed), and the fix for `reply` when [`login_hint`] knows one.
pub(super) fn with_hint(message: String, reply: &Reply) -> String {
    let message = message.trim_end();
    match login_hint(reply) {
        Some(hint) => format!("{message}; {hint}"),
        None => message.to_owned(),
    }
}

/// What to change when a server refuses a login for a reason its words name but whose
/// fix lies in envoi's profile or the tenant's settings: Microsoft 365's replies once
/// Basic authentication or SMTP AUTH is switched off (end of December 2026 for existing
/// tenants), keyed on the enhanced status code (RFC 3463) that begins the reply.
fn login_hint(reply: &Reply) -> Option<&'static str> {
    let text = reply.text().to_ascii_lowercase();
    let status = text.split_whitespace().next().unwrap_or_default();
    match (reply.code, status) {
        (_, "5.7.139") if text.contains("smtpclientauthentication is disabled") => Some(
            "SMTP AUTH is switched off for this mailbox or tenant: an admin can turn it on \
             for the mailbox (Set-CASMailbox -Identity <mailbox> \
             -SmtpClientAuthenticationDisabled $false), or send over HTTPS with \
             transport = \"graph\" (see docs/microsoft-365.md)",
        ),
        (_, "5.7.139" | "5.7.30") => Some(
            "Microsoft 365 takes no password (Basic) login here: log in with OAuth2 \
             (auth = \"xoauth2\" and a [profiles.NAME.oauth2] table), or send over HTTPS \
             with transport = \"graph\" (see docs/microsoft-365.md)",
        ),
        (535, "5.7.3") => Some(
            "on Microsoft 365 a password login also needs SMTP AUTH on for the mailbox and \
             no MFA on the account, and an app's OAuth2 token needs the app registered in \
             Exchange (New-ServicePrincipal) with FullAccess on the mailbox \
             (Add-MailboxPermission) (see docs/microsoft-365.md)",
        ),
        (530, "5.7.57") => Some(
            "the server takes mail only after a login: give the profile a username and a \
             password or token source (or the user in --smtp-url)",
        ),
        _ => None,
    }
}

/// A failure of the connection during `what`.
pub(super) fn wire_failure(what: &str, e: WireError) -> Error {
    match e {
        WireError::Io(io) => io_failure(what, &io),
        WireError::Protocol(why) => Error::new(
            ErrorKind::Temporary,
            format!(
                "{what}: the server broke the SMTP protocol: {}",
                printable(why)
            ),
        ),
        WireError::PlainTextNotTls(line) => Error::new(
            ErrorKind::Temporary,
            format!("{what}: the server answered the TLS handshake in plain text: {line}"),
        ),
        WireError::TlsNotPlainText => Error::config(format!(
            "{what}: the server sent a TLS record where an SMTP reply belongs: this port \
             speaks implicit TLS: set security = \"tls\" (port 465)"
        )),
    }
}

/// `security = "tls"` on a port that greets in plain text: a wrong profile, which no
/// retry will mend (78).
pub(super) fn plain_text_port(server: &str, port: u16, line: &str) -> Error {
    Error::config(format!(
        "{server} speaks plain SMTP, not implicit TLS (it answered the TLS handshake with \
         {line:?}): set security = \"starttls\" for port {port} (or use an smtp:// URL); \
         security = \"tls\" is for implicit-TLS ports like 465"
    ))
}

/// A greeting that opened a TLS record (an alert, most likely) rather than `220`: the
/// port speaks implicit TLS, a wrong profile (78).
pub(super) fn tls_greeting(server: &str) -> Error {
    Error::config(format!(
        "{server} sent a TLS record, not an SMTP greeting: this port speaks implicit TLS: \
         set security = \"tls\" (port 465) (or use an smtps:// URL)"
    ))
}

/// No greeting within the short window on port 465, the implicit-TLS port (RFC 8314):
/// a wrong profile (78), said without sending a byte more.
pub(super) fn silent_implicit_tls_port(server: &str, window: std::time::Duration) -> Error {
    Error::config(format!(
        "{server}: no SMTP greeting in {} s: this port may speak implicit TLS: set \
         security = \"tls\" (port 465) (or use an smtps:// URL)",
        window.as_secs()
    ))
}

/// No greeting before the command timeout or the deadline, on a port that may be a slow
/// server's: 75 as any timeout is, with the other likely cause named.
pub(super) fn no_greeting(server: &str, e: &io::Error) -> Error {
    Error::new(
        ErrorKind::Temporary,
        format!(
            "connected to {server}, but no SMTP greeting came ({}): if this port speaks implicit TLS, set security = \
             \"tls\" (port 465); a server that delays its greeting needs a larger \
             timeout_secs (or --timeout)",
            describe_io(e)
        ),
    )
}

/// A port that sent no greeting in plain text but completes a TLS handshake speaks
/// implicit TLS: a wrong profile (78).
pub(super) fn implicit_tls_port(server: &str, security: Security) -> Error {
    Error::config(format!(
        "{server} speaks implicit TLS: it sent no SMTP greeting in plain text but answers a \
         TLS handshake; set security = \"tls\" (or use an smtps:// URL) instead of \
         security = \"{}\"",
        security.name()
    ))
}

/// An I/O failure during `what`: a certificate problem (77), else temporary (75).
pub(crate) fn io_failure(what: &str, e: &io::Error) -> Error {
    if let Some(tls) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        return match tls {
            rustls::Error::InvalidCertificate(reason) => Error::new(
                ErrorKind::Certificate,
                format!(
                    "{what}: the server's certificate is not trusted: {}",
                    tls::describe_certificate_error(reason)
                ),
            ),
            other => Error::new(ErrorKind::Temporary, format!("{what}: TLS failed: {other}")),
        };
    }
    Error::new(ErrorKind::Temporary, format!("{what}: {}", describe_io(e)))
}

/// A failure to reach the server during `what`: directly as [`io_failure`] says; through
/// a proxy in the proxy's words, with its kind (75 unreachable or failing, 69 refusing
/// the destination, 77 refusing envoi's login).
pub(crate) fn reach_failure(what: &str, e: ReachError) -> Error {
    match e {
        ReachError::Direct(io) => io_failure(what, &io),
        ReachError::Proxy(proxy) => {
            let cause = proxy
                .cause
                .as_ref()
                .map_or(String::new(), |io| format!(": {}", describe_io(io)));
            Error::new(proxy.kind, format!("{what}: {}{cause}", proxy.words))
        }
    }
}

/// A read that ran out of time (std reports it as `WouldBlock` on Unix).
pub(super) fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    )
}

/// An I/O error in words; a read timeout is "timed out" (std reports it as
/// `WouldBlock` on Unix), unless it was the operation's deadline.
pub(super) fn describe_io(e: &io::Error) -> String {
    if conn::is_deadline(e) {
        conn::DeadlinePassed.to_string()
    } else if is_timeout(e) {
        "timed out".to_owned()
    } else {
        e.to_string()
    }
}
