//! Delivery: over SMTP with lettre's `SmtpConnection`, or into a directory of `.eml` files.
//!
//! envoi drives the SMTP transaction itself so that it knows each RCPT's answer, frames
//! DATA itself (see [`crate::wire`]), and enforces its TLS policy: implicit TLS or
//! required STARTTLS, verified certificates, no AUTH without TLS unless the profile
//! allows it. An [`SmtpSession`] can send many messages over one connection.

use std::error::Error as StdError;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Certificate, SmtpConnection, TlsParameters};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt, Rset};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};

use crate::check::no_line_breaks;
use crate::config::Security;
use crate::error::{Error, ErrorKind, Result, printable};
use crate::message::Prepared;
use crate::password::Password;
use crate::wire::DataPayload;

type SmtpError = lettre::transport::smtp::Error;

/// Everything needed to reach and log in to an SMTP server.
#[derive(Debug, Clone)]
pub struct SmtpSettings {
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
}

/// What the server said to a message it took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Every envelope recipient the server accepted.
    pub accepted: Vec<String>,
    /// The reply code to the final dot (250).
    pub code: u16,
    /// The reply text to the final dot, made printable.
    pub reply: String,
}

/// An open, logged-in SMTP connection.
pub struct SmtpSession {
    conn: SmtpConnection,
}

impl SmtpSession {
    /// Connects, secures the connection as `settings.security` demands, and logs in.
    pub fn open(settings: &SmtpSettings) -> Result<SmtpSession> {
        // These go into SMTP commands; the CLI checked them, library callers may not have.
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
        let tls = match settings.security {
            Security::None => None,
            Security::Tls | Security::Starttls => Some(tls_parameters(settings)?),
        };
        let hello = match &settings.hello_name {
            Some(name) => ClientId::Domain(name.clone()),
            None => ClientId::default(),
        };
        let server = format!("{}:{}", settings.host, settings.port);
        let implicit = tls.as_ref().filter(|_| settings.security == Security::Tls);
        let mut conn = SmtpConnection::connect(
            (settings.host.as_str(), settings.port),
            Some(settings.timeout),
            &hello,
            implicit,
            None,
        )
        .map_err(|e| classify(&format!("connecting to {server}"), e))?;

        if settings.security == Security::Starttls {
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
            let Some(tls) = &tls else {
                conn.abort();
                return Err(Error::new(
                    ErrorKind::Internal,
                    "STARTTLS without TLS parameters (a bug); nothing was sent",
                ));
            };
            conn.starttls(tls, &hello)
                .map_err(|e| classify(&format!("STARTTLS with {server}"), e))?;
        }

        if let Some((user, password)) = &settings.credentials {
            let credentials = Credentials::new(user.clone(), password.expose().to_owned());
            if let Err(e) = conn.auth(&[Mechanism::Plain, Mechanism::Login], &credentials) {
                conn.abort();
                return Err(classify_auth(&server, user, e));
            }
        }
        Ok(SmtpSession { conn })
    }

    /// Sends one message. If any recipient is refused nothing is sent (RSET) and the
    /// error names each refused address: 67 when all refusals are permanent, else 75.
    pub fn send(&mut self, prepared: &Prepared) -> Result<Delivery> {
        let text = std::str::from_utf8(&prepared.bytes).map_err(|_| {
            Error::new(
                ErrorKind::Internal,
                "the built message is not UTF-8 (a bug)",
            )
        })?;
        let envelope = &prepared.envelope;
        let info = self.conn.server_info();
        let mut params = Vec::new();
        let non_ascii_address = envelope
            .from()
            .into_iter()
            .chain(envelope.to())
            .find(|a| !a.to_string().is_ascii());
        if let Some(address) = non_ascii_address {
            if !info.supports_feature(Extension::SmtpUtfEight) {
                return Err(Error::new(
                    ErrorKind::Unavailable,
                    format!(
                        "{address} has a non-ASCII local part, which needs SMTPUTF8, and \
                         the server does not offer it"
                    ),
                ));
            }
            params.push(MailParameter::SmtpUtfEight);
        } else if !text.is_ascii() {
            if !info.supports_feature(Extension::EightBitMime) {
                return Err(Error::new(
                    ErrorKind::Unavailable,
                    "the message is not ASCII and the server does not offer 8BITMIME",
                ));
            }
            params.push(MailParameter::Body(MailBodyParameter::EightBitMime));
        }

        self.conn
            .command(Mail::new(envelope.from().cloned(), params))
            .map_err(|e| classify("MAIL FROM", e))?;

        let mut accepted = Vec::new();
        let mut refused = Vec::new();
        for rcpt in envelope.to() {
            match self.conn.command(Rcpt::new(rcpt.clone(), vec![])) {
                Ok(_) => accepted.push(rcpt.to_string()),
                Err(e) if e.status().is_some() => refused.push((rcpt.to_string(), reply_of(&e))),
                Err(e) => return Err(classify(&format!("RCPT TO:<{rcpt}>"), e)),
            }
        }
        if !refused.is_empty() {
            // The transaction is abandoned; the session stays usable for the next message.
            let _ = self.conn.command(Rset);
            return Err(refusal(&refused));
        }

        self.conn.command(Data).map_err(|e| classify("DATA", e))?;
        let response = self
            .conn
            .command(DataPayload(text))
            .map_err(|e| match e.status() {
                Some(_) => classify("the message", e),
                None => Error::new(
                    ErrorKind::Temporary,
                    format!(
                        "the connection failed while the message {} was being sent; it may or \
                         may not have been delivered: {}",
                        prepared.message_id,
                        printable(e.to_string())
                    ),
                ),
            })?;
        Ok(Delivery {
            accepted,
            code: u16::from(response.code()),
            reply: printable(response.message().collect::<Vec<_>>().join(" ")),
        })
    }

    /// Says QUIT and closes the connection.
    pub fn close(mut self) {
        let _ = self.conn.quit();
    }
}

/// Writes the message as `<dir>/<id>.eml` (temp file, then rename) and returns the path.
pub fn save_to_dir(dir: &Path, prepared: &Prepared) -> Result<PathBuf> {
    let fail = |e: io::Error| Error::config(format!("dir {}: cannot write: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(fail)?;
    let name: String = prepared
        .message_id
        .trim_matches(['<', '>'])
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let path = dir.join(format!("{name}.eml"));
    let temp = dir.join(format!(".{name}.eml.tmp"));
    std::fs::write(&temp, &prepared.bytes).map_err(fail)?;
    std::fs::rename(&temp, &path).map_err(fail)?;
    Ok(path)
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

/// The server's reply text carried by a negative-reply error, made printable.
fn reply_of(e: &SmtpError) -> String {
    let code = e.status().map(|c| c.to_string()).unwrap_or_default();
    let text = e.source().map(|s| s.to_string()).unwrap_or_default();
    printable(format!("{code} {text}").trim())
}

fn refusal(refused: &[(String, String)]) -> Error {
    let all_permanent = refused.iter().all(|(_, reply)| reply.starts_with('5'));
    let list: Vec<String> = refused
        .iter()
        .map(|(addr, reply)| format!("{addr} ({reply})"))
        .collect();
    let (kind, note) = if all_permanent {
        (ErrorKind::RecipientRefused, "")
    } else {
        (ErrorKind::Temporary, "; try again later")
    };
    Error::new(
        kind,
        format!(
            "the server refused {}: {}; nothing was sent{note}",
            if refused.len() == 1 {
                "a recipient"
            } else {
                "recipients"
            },
            list.join(", ")
        ),
    )
}

fn classify_auth(server: &str, user: &str, e: SmtpError) -> Error {
    if e.is_client() {
        return Error::new(
            ErrorKind::AuthRefused,
            format!("{server} offers no login method envoi supports (PLAIN, LOGIN): {e}"),
        );
    }
    match e.status() {
        Some(code) if code.to_string().starts_with('5') => Error::new(
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
        Some(code) if code.to_string().starts_with('4') => Error::new(
            ErrorKind::Temporary,
            format!("{what}: the server answered {}", reply_of(&e)),
        ),
        Some(_) => Error::new(
            ErrorKind::Unavailable,
            format!("{what}: the server answered {}", reply_of(&e)),
        ),
        None if e.is_timeout() => Error::new(ErrorKind::Temporary, format!("{what}: timed out")),
        None => Error::new(
            ErrorKind::Temporary,
            format!("{what}: {}", printable(chain(&e))),
        ),
    }
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
