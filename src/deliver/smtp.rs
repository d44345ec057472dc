//! One SMTP session over lettre's `SmtpConnection`: connect, TLS, AUTH, and the
//! commands of a transaction as the [`Session`] seam that [`super::retry`] drives.
//!
//! envoi drives the SMTP transaction itself so that it knows each RCPT's answer, frames
//! DATA itself (see [`crate::message::wire`]), and enforces its TLS policy: implicit TLS or
//! required STARTTLS, verified certificates, no AUTH without TLS unless the profile
//! allows it. An [`SmtpSession`] can send many messages over one connection.

use std::error::Error as StdError;
use std::fmt::Display;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use lettre::Address;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Certificate, SmtpConnection, TlsParameters};
use lettre::transport::smtp::commands::{Data, Mail, Noop, Rcpt, Rset};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use lettre::transport::smtp::response::Response;

use crate::deliver::retry::{Connector, Session};
use crate::deliver::{Transcript, deadline_passed};
use crate::error::{Error, ErrorKind, Result};
use crate::message::Prepared;
use crate::message::check::no_line_breaks;
use crate::message::wire::DataPayload;
use crate::profile::{Password, Security, SmtpProfile};

type SmtpError = lettre::transport::smtp::Error;

/// True from the moment a message's bytes start going out until the server's answer to
/// them is read: a process ended in between cannot know whether it was delivered.
static PAYLOAD_IN_FLIGHT: AtomicBool = AtomicBool::new(false);

/// Whether a message is on its way and unanswered: a process stopped now (the command
/// line's watchdog) must report the outcome as unknown.
pub fn payload_in_flight() -> bool {
    PAYLOAD_IN_FLIGHT.load(Ordering::SeqCst)
}

/// Everything needed to reach and log in to an SMTP server.
#[derive(Debug, Clone)]
pub(crate) struct SmtpSettings {
    /// Server host name or IP address.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// Implicit TLS, required STARTTLS, or none.
    pub security: Security,
    /// User name and password for AUTH PLAIN/LOGIN.
    pub credentials: Option<(String, Password)>,
    /// EHLO name; `None` means this machine's host name.
    pub hello_name: Option<String>,
    /// Timeout for connecting and for each command.
    pub timeout: Duration,
    /// Extra trusted root certificates (PEM).
    pub ca_file: Option<PathBuf>,
    /// Allow AUTH without TLS.
    pub allow_plaintext_auth: bool,
    /// Where the dialogue goes (`-v`), AUTH data redacted.
    pub transcript: Option<Transcript>,
    /// When the whole send must be over: each command's timeout is cut to fit.
    pub deadline: Option<Instant>,
}

/// The server's answer to one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RcptReply {
    /// The envelope address.
    pub address: String,
    /// The reply code to RCPT TO.
    pub code: u16,
    /// The reply text, made printable.
    pub message: String,
}

impl RcptReply {
    pub(crate) fn new(address: &Address, code: u16, message: String) -> RcptReply {
        RcptReply {
            address: address.to_string(),
            code,
            message,
        }
    }

    /// True for a 5xx refusal, which no retry will change.
    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }
}

impl SmtpSettings {
    /// The settings of `profile`, logging in with `password` (already fetched).
    pub(crate) fn new(
        profile: &SmtpProfile,
        password: Option<Password>,
        transcript: Option<Transcript>,
        deadline: Option<Instant>,
    ) -> SmtpSettings {
        SmtpSettings {
            host: profile.host.clone(),
            port: profile.port,
            security: profile.security,
            credentials: profile
                .login
                .as_ref()
                .zip(password)
                .map(|((user, _), password)| (user.clone(), password)),
            hello_name: profile.hello_name.clone(),
            timeout: profile.timeout,
            ca_file: profile.ca_file.clone(),
            allow_plaintext_auth: profile.allow_plaintext_auth,
            transcript,
            deadline,
        }
    }
}

/// An open, logged-in SMTP connection.
pub(crate) struct SmtpSession {
    conn: SmtpConnection,
    transcript: Option<Transcript>,
    timeout: Duration,
    deadline: Option<Instant>,
}

impl SmtpSession {
    /// Connects, secures the connection as `settings.security` demands, and logs in,
    /// each step within what is left before the deadline.
    fn open(settings: &SmtpSettings) -> Result<SmtpSession> {
        let mut settings = settings.clone();
        if let Some(deadline) = settings.deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(deadline_passed());
            }
            settings.timeout = settings.timeout.min(left);
        }
        check_settings(&settings)?;
        let tls = match settings.security {
            Security::None => None,
            Security::Tls | Security::Starttls => Some(tls_parameters(&settings)?),
        };
        let hello = match &settings.hello_name {
            Some(name) => ClientId::Domain(name.clone()),
            None => ClientId::default(),
        };
        let server = format!("{}:{}", settings.host, settings.port);
        let implicit = tls.as_ref().filter(|_| settings.security == Security::Tls);
        trace(
            settings.transcript,
            "*",
            &format!(
                "connecting to {server} ({}), EHLO {hello}",
                match settings.security {
                    Security::Tls => "implicit TLS",
                    Security::Starttls => "STARTTLS required",
                    Security::None => "no TLS",
                }
            ),
        );
        let conn = SmtpConnection::connect(
            (settings.host.as_str(), settings.port),
            Some(settings.timeout),
            &hello,
            implicit,
            None,
        )
        .map_err(|e| classify(&format!("connecting to {server}"), e))?;
        let mut session = SmtpSession {
            conn,
            transcript: settings.transcript,
            timeout: settings.timeout,
            deadline: settings.deadline,
        };
        session.trace("S", &format!("{}", session.conn.server_info()));
        if settings.security == Security::Starttls {
            session.starttls(&server, tls.as_ref(), &hello)?;
        }
        if let Some((user, password)) = &settings.credentials {
            session.login(&server, user, password)?;
        }
        Ok(session)
    }

    /// Upgrades to TLS, or ends the session when the server does not offer it: STARTTLS
    /// is never optional.
    fn starttls(
        &mut self,
        server: &str,
        tls: Option<&TlsParameters>,
        hello: &ClientId,
    ) -> Result<()> {
        self.arm_timeout()?;
        let conn = &mut self.conn;
        if !conn.server_info().supports_feature(Extension::StartTls) {
            conn.abort();
            return Err(Error::new(
                ErrorKind::Temporary,
                format!(
                    "{server} does not offer STARTTLS; security = \"starttls\" never \
                     continues without TLS (nothing was sent)"
                ),
            ));
        }
        let Some(tls) = tls else {
            conn.abort();
            return Err(Error::new(
                ErrorKind::Internal,
                "STARTTLS without TLS parameters (a bug); nothing was sent",
            ));
        };
        conn.starttls(tls, hello)
            .map_err(|e| classify(&format!("STARTTLS with {server}"), e))?;
        self.trace(
            "*",
            &format!("TLS established; after EHLO: {}", self.conn.server_info()),
        );
        self.arm_timeout()?;
        self.check_nothing_pipelined(server)
    }

    /// AUTH PLAIN or LOGIN, as the server offers.
    fn login(&mut self, server: &str, user: &str, password: &Password) -> Result<()> {
        self.arm_timeout()?;
        let credentials = Credentials::new(user.to_owned(), password.expose().to_owned());
        self.trace(
            "C",
            &format!("AUTH (PLAIN or LOGIN) as {user:?} [redacted]"),
        );
        let result = self
            .conn
            .auth(&[Mechanism::Plain, Mechanism::Login], &credentials);
        self.trace_reply(&result);
        if let Err(e) = result {
            self.conn.abort();
            return Err(classify_auth(server, user, e));
        }
        Ok(())
    }

    /// lettre keeps reading from the same buffer after the TLS handshake, so bytes a
    /// server (or an attacker) sent right after STARTTLS's 220 would be taken as the
    /// encrypted EHLO's answer (the CVE-2021-22947 class). Then the real EHLO answer is
    /// still unread, and a NOOP gets it instead of its own one-line 250. Refuse that.
    fn check_nothing_pipelined(&mut self, server: &str) -> Result<()> {
        let reply = self.conn.command(Noop);
        self.trace_reply(&reply);
        match reply {
            Ok(r) if u16::from(r.code()) == 250 && r.message().count() <= 1 => Ok(()),
            _ => {
                self.conn.abort();
                Err(Error::new(
                    ErrorKind::Temporary,
                    format!(
                        "{server} sent data before the TLS handshake that envoi did not ask \
                         for (a STARTTLS injection?); nothing was sent"
                    ),
                ))
            }
        }
    }

    /// SMTPUTF8 when an address needs it, else BODY=8BITMIME when the text needs it.
    fn mail_parameters<'a>(
        &self,
        mut addresses: impl Iterator<Item = &'a Address>,
        text: &str,
    ) -> Result<Vec<MailParameter>> {
        let info = self.conn.server_info();
        if let Some(address) = addresses.find(|a| !AsRef::<str>::as_ref(*a).is_ascii()) {
            if !info.supports_feature(Extension::SmtpUtfEight) {
                return Err(Error::new(
                    ErrorKind::Unavailable,
                    format!(
                        "{address} has a non-ASCII local part, which needs SMTPUTF8, and \
                         the server does not offer it"
                    ),
                ));
            }
            return Ok(vec![MailParameter::SmtpUtfEight]);
        }
        if text.is_ascii() {
            return Ok(Vec::new());
        }
        if !info.supports_feature(Extension::EightBitMime) {
            return Err(Error::new(
                ErrorKind::Unavailable,
                "the message is not ASCII and the server does not offer 8BITMIME",
            ));
        }
        Ok(vec![MailParameter::Body(MailBodyParameter::EightBitMime)])
    }

    /// Sends a short command, tracing both sides with `-v`; a positive reply is `(code, text)`.
    fn command(&mut self, command: &dyn Display) -> Result<(u16, String), SmtpError> {
        // Past the deadline the timeout is 1 ms: the command fails as timed out.
        let _ = self.arm_timeout();
        if self.transcript.is_some() {
            self.trace("C", command.to_string().trim_end());
        }
        let result = self.conn.command(command);
        self.trace_reply(&result);
        result.map(|r| (u16::from(r.code()), printable(joined(&r))))
    }

    /// Cuts the next command's timeout to what is left before the deadline.
    fn arm_timeout(&mut self) -> Result<()> {
        let Some(deadline) = self.deadline else {
            return Ok(());
        };
        let left = deadline.saturating_duration_since(Instant::now());
        let _ = self
            .conn
            .set_timeout(Some(self.timeout.min(left).max(Duration::from_millis(1))));
        if left.is_zero() {
            return Err(deadline_passed());
        }
        Ok(())
    }

    fn trace_reply(&self, result: &Result<Response, SmtpError>) {
        match result {
            Ok(r) => self.trace("S", &format!("{} {}", u16::from(r.code()), joined(r))),
            Err(e) => self.trace("S", &e.to_string()),
        }
    }

    fn trace(&self, side: &str, line: &str) {
        trace(self.transcript, side, line);
    }
}

impl Session for SmtpSession {
    fn mail(&mut self, prepared: &Prepared, recipients: &[Address]) -> Result<()> {
        let text = message_text(prepared)?;
        self.arm_timeout()?;
        let from = prepared.envelope.from();
        let params = self.mail_parameters(from.into_iter().chain(recipients), text)?;
        let mail = Mail::new(from.cloned(), params);
        self.command(&mail).map_err(|e| classify("MAIL FROM", e))?;
        Ok(())
    }

    fn rcpt(&mut self, rcpt: &Address) -> Result<RcptReply> {
        match self.command(&Rcpt::new(rcpt.clone(), vec![])) {
            Ok((code, text)) => Ok(RcptReply::new(rcpt, code, text)),
            Err(e) => match code_of(&e) {
                Some(code) => Ok(RcptReply::new(rcpt, code, text_of(&e))),
                None => Err(classify(&format!("RCPT TO:<{rcpt}>"), e)),
            },
        }
    }

    fn rset(&mut self) {
        let _ = self.command(&Rset);
    }

    fn data(&mut self, prepared: &Prepared) -> Result<(u16, String)> {
        let text = message_text(prepared)?;
        self.command(&Data).map_err(|e| classify("DATA", e))?;
        self.arm_timeout()?;
        self.trace(
            "C",
            &format!(
                "[message {}, {} bytes, then .]",
                prepared.message_id,
                text.len()
            ),
        );
        PAYLOAD_IN_FLIGHT.store(true, Ordering::SeqCst);
        let result = self.conn.command(DataPayload(text));
        PAYLOAD_IN_FLIGHT.store(false, Ordering::SeqCst);
        self.trace_reply(&result);
        let reply = result.map(|r| (u16::from(r.code()), printable(joined(&r))));
        reply.map_err(|e| match code_of(&e) {
            Some(_) => classify("the message", e),
            None => Error::new(
                ErrorKind::OutcomeUnknown,
                format!(
                    "the connection failed after the message {} was sent and before the server \
                     answered; it may or may not have been delivered: {}",
                    prepared.message_id,
                    printable(chain(&e))
                ),
            ),
        })
    }

    /// Says QUIT and closes the connection.
    fn close(mut self) {
        let _ = self.conn.quit();
    }
}

/// Opens SMTP sessions with one set of settings, each within what is left of the
/// deadline.
pub(crate) struct SmtpConnector(pub(crate) SmtpSettings);

impl Connector for SmtpConnector {
    type Session = SmtpSession;

    fn open(&mut self) -> Result<SmtpSession> {
        SmtpSession::open(&self.0)
    }
}

/// The built message as text (it is ASCII or UTF-8 by construction).
fn message_text(prepared: &Prepared) -> Result<&str> {
    std::str::from_utf8(&prepared.bytes).map_err(|_| {
        Error::new(
            ErrorKind::Internal,
            "the built message is not UTF-8 (a bug)",
        )
    })
}

/// Refuses settings that could inject an SMTP command, or send a password in clear.
/// The command line checked them already; library callers may not have.
fn check_settings(settings: &SmtpSettings) -> Result<()> {
    no_line_breaks("host", &settings.host)?;
    for (what, value) in [
        ("hello_name", settings.hello_name.as_deref()),
        (
            "username",
            settings.credentials.as_ref().map(|(user, _)| user.as_str()),
        ),
    ] {
        no_line_breaks(what, value.unwrap_or_default())?;
    }
    if settings.credentials.is_some()
        && settings.security == Security::None
        && !settings.allow_plaintext_auth
    {
        return Err(Error::config(
            "refusing to send a password over a connection without TLS: use security = \
             \"tls\" or \"starttls\", or set allow_plaintext_auth = true in the profile",
        ));
    }
    Ok(())
}

fn tls_parameters(settings: &SmtpSettings) -> Result<TlsParameters> {
    let mut builder = TlsParameters::builder(settings.host.clone());
    if let Some(path) = &settings.ca_file {
        let pem = std::fs::read(path)
            .map_err(|e| Error::config(format!("ca_file: cannot read {}: {e}", path.display())))?;
        if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
            return Err(Error::config(format!(
                "ca_file: {} holds no PEM certificate",
                path.display()
            )));
        }
        let cert = Certificate::from_pem(&pem).map_err(|e| {
            Error::config(format!(
                "ca_file: {} is not a PEM certificate: {e}",
                path.display()
            ))
        })?;
        builder = builder.add_root_certificate(cert);
    }
    builder
        .build_rustls()
        .map_err(|e| Error::new(ErrorKind::Internal, format!("cannot set up TLS: {e}")))
}

/// Text from outside (a server reply) made safe for a terminal: control characters
/// become `?` so they cannot move the cursor or fake output.
pub(crate) fn printable(text: impl AsRef<str>) -> String {
    text.as_ref()
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// With `-v`, one line of the dialogue on stderr (`C` client, `S` server, `*` envoi),
/// control characters made visible.
fn trace(transcript: Option<Transcript>, side: &str, line: &str) {
    if let Some(transcript) = transcript {
        transcript(side, &printable(line));
    }
}

/// The reply code of a negative reply.
fn code_of(e: &SmtpError) -> Option<u16> {
    e.status().map(u16::from)
}

/// The reply text of a negative reply, made printable.
fn text_of(e: &SmtpError) -> String {
    printable(e.source().map(|s| s.to_string()).unwrap_or_default())
}

/// `code text` of a negative reply, for messages.
fn reply_of(e: &SmtpError) -> String {
    let code = code_of(e).map(|c| c.to_string()).unwrap_or_default();
    format!("{code} {}", text_of(e)).trim().to_owned()
}

fn joined(response: &Response) -> String {
    response.message().collect::<Vec<_>>().join(" ")
}

fn classify_auth(server: &str, user: &str, e: SmtpError) -> Error {
    if e.is_client() {
        return Error::new(
            ErrorKind::AuthRefused,
            format!("{server} offers no login method envoi supports (PLAIN, LOGIN): {e}"),
        );
    }
    match e.status() {
        Some(code) if u16::from(code) >= 500 => Error::new(
            ErrorKind::AuthRefused,
            format!(
                "{server} refused the login for user {user:?}: {}",
                reply_of(&e)
            ),
        ),
        _ => classify("AUTH", e),
    }
}

/// Maps a lettre error to envoi's kinds: certificate problems (77), 4xx and network
/// failures (75), 5xx (69).
fn classify(what: &str, e: SmtpError) -> Error {
    if let Some(tls) = rustls_error(&e) {
        return match tls {
            rustls::Error::InvalidCertificate(reason) => Error::new(
                ErrorKind::Certificate,
                format!(
                    "{what}: the server's certificate is not trusted: {}",
                    describe_certificate_error(reason)
                ),
            ),
            other => Error::new(ErrorKind::Temporary, format!("{what}: TLS failed: {other}")),
        };
    }
    match e.status() {
        Some(code) if u16::from(code) < 500 => Error::new(
            ErrorKind::Temporary,
            format!("{what}: the server answered {}", reply_of(&e)),
        ),
        Some(_) => Error::new(
            ErrorKind::Unavailable,
            format!("{what}: the server answered {}", reply_of(&e)),
        ),
        None if timed_out(&e) => Error::new(ErrorKind::Temporary, format!("{what}: timed out")),
        None => Error::new(
            ErrorKind::Temporary,
            format!("{what}: {}", printable(chain(&e))),
        ),
    }
}

/// A socket timeout: std reports an expired read timeout as `WouldBlock` on Unix, which
/// lettre's `is_timeout` does not recognise.
fn timed_out(e: &SmtpError) -> bool {
    let mut current: Option<&(dyn StdError + 'static)> = e.source();
    while let Some(err) = current {
        if let Some(io) = err.downcast_ref::<io::Error>() {
            return matches!(
                io.kind(),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            );
        }
        current = err.source();
    }
    false
}

/// The error and its sources, joined with `: ` (lettre's Display already includes one level).
fn chain(e: &SmtpError) -> String {
    let mut text = e.to_string();
    let mut source = e.source().and_then(|s| s.source());
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Finds a rustls error in the chain, looking inside `io::Error`s, whose `source()`
/// skips the error they wrap.
fn rustls_error(e: &SmtpError) -> Option<&rustls::Error> {
    let mut current: Option<&(dyn StdError + 'static)> = e.source();
    while let Some(err) = current {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(inner) = err
            .downcast_ref::<io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(inner);
        }
        current = err.source();
    }
    None
}

fn describe_certificate_error(reason: &rustls::CertificateError) -> String {
    use rustls::CertificateError as C;
    match reason {
        C::UnknownIssuer => {
            "unknown issuer (not signed by a trusted authority; see ca_file)".into()
        }
        C::Expired | C::ExpiredContext { .. } => "expired".into(),
        C::NotValidYet | C::NotValidYetContext { .. } => "not valid yet".into(),
        C::NotValidForName | C::NotValidForNameContext { .. } => {
            "issued for another host name".into()
        }
        C::Revoked => "revoked".into(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_strips_control_characters() {
        assert_eq!(printable("ok\x1b[2J\r\nfake"), "ok?[2J??fake");
    }
}
