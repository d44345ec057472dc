//! envoi's own SMTP client (RFC 5321, 3207, 4954, 1870, 6152, 6531): connect, TLS, AUTH,
//! and the commands of a transaction as the [`Session`] that [`super::retry`] drives.
//!
//! lettre builds the message; envoi owns the wire, because safety lives there: the
//! read buffer must be empty when STARTTLS upgrades (`conn`), every reply line is
//! bounded (`reply`), every command waits at most its timeout and a failed session is
//! shut down rather than asked to QUIT, the server's SIZE is honoured, and DATA is
//! written through the dot-stuffing framing in large writes without a second copy.
//! An [`SmtpSession`] can send many messages over one connection.

mod conn;
pub(super) mod fuzzing;
mod reply;
pub(super) mod tls;

use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use lettre::Address;
use rustls::ClientConfig;

use crate::deliver::retry::{Connector, Session};
use crate::deliver::{Dsn, Notice, Transcript, cut_to_deadline, deadline_passed};
use crate::error::{Error, ErrorKind, Result};
use crate::message::check::no_line_breaks;
use crate::message::wire::DataWriter;
use crate::message::{MessageBytes, Prepared, StreamError};
use crate::profile::{Auth, Password, Security, SmtpProfile};

use conn::{Conn, WireError};
use reply::Reply;

/// How many messages are between their first byte going out and the server's answer to
/// them: a process ended meanwhile cannot know whether they were delivered. A count, not
/// a flag, because `envoi batch --concurrency` has several sessions at that step at once.
static PAYLOADS_IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// Whether a message is on its way and unanswered: a process stopped now (the command
/// line's watchdog) must report the outcome as unknown.
pub fn payload_in_flight() -> bool {
    PAYLOADS_IN_FLIGHT.load(Ordering::SeqCst) > 0
}

/// One message counted in [`PAYLOADS_IN_FLIGHT`] while it lives, whichever way the DATA
/// step ends.
struct InFlight;

impl InFlight {
    fn start() -> InFlight {
        PAYLOADS_IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        PAYLOADS_IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    }
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
    /// User name and secret: a password for AUTH PLAIN/LOGIN, a bearer token for
    /// XOAUTH2/OAUTHBEARER.
    pub credentials: Option<(String, Password)>,
    /// Which mechanism the credentials are for.
    pub auth: Auth,
    /// EHLO name; `None` means this machine's host name.
    pub hello_name: Option<String>,
    /// Timeout for connecting and for each command.
    pub timeout: Duration,
    /// Extra trusted root certificates (PEM), or the server's own self-signed one.
    pub ca_file: Option<PathBuf>,
    /// The one certificate to trust, by its SHA-256, instead of any CA.
    pub tls_fingerprint: Option<crate::profile::Fingerprint>,
    /// Allow AUTH without TLS.
    pub allow_plaintext_auth: bool,
    /// Where the dialogue goes (`-v`), AUTH data redacted.
    pub transcript: Option<Transcript>,
    /// When the whole send must be over: each command's timeout is cut to fit.
    pub deadline: Option<Instant>,
    /// Delivery status notifications to request.
    pub dsn: Option<Dsn>,
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
    /// The settings of `profile`, logging in with `credentials` (the password fetched).
    pub(crate) fn new(
        profile: &SmtpProfile,
        credentials: Option<(String, Password)>,
        transcript: Option<Transcript>,
        deadline: Option<Instant>,
    ) -> SmtpSettings {
        SmtpSettings {
            host: profile.host.clone(),
            port: profile.port,
            security: profile.security,
            credentials,
            auth: profile.auth,
            hello_name: profile.hello_name.clone(),
            timeout: profile.timeout,
            ca_file: profile.ca_file.clone(),
            tls_fingerprint: profile.tls_fingerprint,
            allow_plaintext_auth: profile.allow_plaintext_auth,
            transcript,
            deadline,
            dsn: None,
        }
    }
}

/// What `envoi check` learned of a server: everything short of sending mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerReport {
    /// `host:port` as configured.
    pub server: String,
    /// The address connected to.
    pub address: Option<String>,
    /// TLS version and cipher suite; `None` without TLS.
    pub tls: Option<(String, String)>,
    /// The EHLO keywords, as the server wrote them.
    pub extensions: Vec<String>,
    /// The largest message it takes (SIZE).
    pub size: Option<u64>,
    /// Whether a login was made (and worked: a refused one is an error).
    pub logged_in: bool,
    /// The server's certificate, verified; `None` without TLS.
    pub certificate: Option<CertificateReport>,
}

/// The parts of a server certificate a person checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateReport {
    /// Who it was issued to.
    pub subject: String,
    /// Who issued it.
    pub issuer: String,
    /// The names it is valid for (subjectAltName).
    pub names: Vec<String>,
    /// When it expires (seconds since the epoch).
    pub not_after: i64,
    /// The same, as the certificate writes it.
    pub expires: String,
    /// Its SHA-256, as `openssl x509 -noout -fingerprint -sha256` prints it (what
    /// `tls_fingerprint` takes).
    pub sha256: String,
    /// Trusted because the profile pins it (`tls_fingerprint`), not through a CA.
    pub pinned: bool,
}

impl CertificateReport {
    /// Reads a DER certificate; `None` if it cannot be parsed (it was verified all the
    /// same: rustls parsed it).
    fn parse(der: &[u8]) -> Option<CertificateReport> {
        use x509_parser::extensions::GeneralName;
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let names = cert
            .subject_alternative_name()
            .ok()
            .flatten()
            .map(|san| {
                san.value
                    .general_names
                    .iter()
                    .filter_map(|n| match n {
                        GeneralName::DNSName(d) => Some(d.to_string()),
                        GeneralName::IPAddress(ip) => ip_text(ip),
                        other => Some(other.to_string()),
                    })
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        Some(CertificateReport {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            names,
            not_after: cert.validity().not_after.timestamp(),
            expires: cert.validity().not_after.to_string(),
            sha256: crate::profile::Fingerprint::of(der).to_string(),
            pinned: false,
        })
    }
}

/// Connects, secures and logs in as `settings` say, reports what the server offers, and
/// says QUIT: no mail is sent.
pub(crate) fn check(settings: SmtpSettings) -> Result<ServerReport> {
    let logged_in = settings.credentials.is_some();
    let pinned = settings.tls_fingerprint.is_some();
    let session = SmtpConnector::new(settings).open()?;
    let report = ServerReport {
        server: session.server.clone(),
        address: session.conn.peer().map(|a| a.to_string()),
        tls: session.conn.tls(),
        extensions: session.extensions.clone(),
        size: session.caps.size,
        logged_in,
        certificate: session
            .conn
            .peer_certificate()
            .and_then(|der| CertificateReport::parse(&der))
            .map(|cert| CertificateReport { pinned, ..cert }),
    };
    session.close();
    Ok(report)
}

/// An IP address of a certificate's subjectAltName, as text.
fn ip_text(octets: &[u8]) -> Option<String> {
    match octets.len() {
        4 => Some(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(octets).ok()?).to_string()),
        16 => Some(std::net::Ipv6Addr::from(<[u8; 16]>::try_from(octets).ok()?).to_string()),
        _ => None,
    }
}

/// What the server said it supports, from its EHLO reply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Capabilities {
    starttls: bool,
    /// SASL mechanisms, upper case.
    auth: Vec<String>,
    /// The largest message it takes (RFC 1870); `None` or 0: no limit given.
    size: Option<u64>,
    eight_bit_mime: bool,
    smtputf8: bool,
    pipelining: bool,
    dsn: bool,
}

impl Capabilities {
    /// Reads the keywords of an EHLO reply (its first line is the server's name).
    fn parse(reply: &Reply) -> Capabilities {
        let mut caps = Capabilities::default();
        for line in reply.lines.iter().skip(1) {
            let mut words = line.split_ascii_whitespace();
            let Some(keyword) = words.next() else {
                continue;
            };
            match keyword.to_ascii_uppercase().as_str() {
                "STARTTLS" => caps.starttls = true,
                // Printable: errors list the mechanisms offered.
                "AUTH" => caps
                    .auth
                    .extend(words.map(|w| printable(w.to_ascii_uppercase()))),
                "SIZE" => caps.size = words.next().and_then(|n| n.parse().ok()),
                "8BITMIME" => caps.eight_bit_mime = true,
                "SMTPUTF8" => caps.smtputf8 = true,
                "PIPELINING" => caps.pipelining = true,
                "DSN" => caps.dsn = true,
                _ => {}
            }
        }
        caps
    }

    /// The keywords as the server wrote them, for `envoi check` to list: made printable,
    /// since a terminal would obey an escape sequence in them.
    fn extensions(reply: &Reply) -> Vec<String> {
        reply.lines.iter().skip(1).map(printable).collect()
    }

    fn offers_auth(&self, mechanism: &str) -> bool {
        self.auth.iter().any(|m| m == mechanism)
    }
}

/// An open, logged-in SMTP connection.
pub(crate) struct SmtpSession {
    conn: Conn,
    caps: Capabilities,
    server: String,
    transcript: Option<Transcript>,
    timeout: Duration,
    deadline: Option<Instant>,
    /// Set once the connection failed: it is then shut down, never asked to QUIT.
    broken: bool,
    /// The DSN request, once the server said it offers DSN.
    dsn: Option<Dsn>,
    /// What the retry policy should tell its observer.
    notices: Vec<Notice>,
    /// The EHLO keywords as written (for `envoi check`).
    extensions: Vec<String>,
}

impl SmtpSession {
    /// Connects, secures the connection as `settings.security` demands, and logs in,
    /// each step within what is left before the deadline.
    fn open(settings: &SmtpSettings, tls: Option<Arc<ClientConfig>>) -> Result<SmtpSession> {
        let mut settings = settings.clone();
        settings.timeout = cut_to_deadline(settings.timeout, settings.deadline);
        if settings.deadline.is_some() && settings.timeout.is_zero() {
            return Err(deadline_passed());
        }
        check_settings(&settings)?;
        let hello = settings
            .hello_name
            .clone()
            .unwrap_or_else(default_hello_name);
        let server = format!("{}:{}", settings.host, settings.port);
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
        let connecting = format!("connecting to {server}");
        let mut conn = Conn::connect(&settings.host, settings.port, settings.timeout)
            .map_err(|e| io_failure(&connecting, &e))?;
        conn.set_timeout(settings.timeout)
            .map_err(|e| io_failure(&connecting, &e))?;
        if let (Security::Tls, Some(config)) = (settings.security, &tls) {
            let name = tls::server_name(&settings.host)?;
            let upgraded = conn.upgrade(Arc::clone(config), name);
            if let Err(e) = upgraded {
                conn.shutdown();
                return Err(match e {
                    WireError::PlainTextNotTls(line) => {
                        plain_text_port(&server, settings.port, &line)
                    }
                    e => wire_failure(&connecting, e),
                });
            }
        }
        let mut session = SmtpSession {
            conn,
            caps: Capabilities::default(),
            server,
            transcript: settings.transcript,
            timeout: settings.timeout,
            deadline: settings.deadline,
            broken: false,
            dsn: None,
            notices: Vec::new(),
            extensions: Vec::new(),
        };
        let result = session.greet_and_login(&settings, tls, &hello);
        if result.is_err() {
            session.conn.shutdown();
        }
        result.map(|()| session)
    }

    fn greet_and_login(
        &mut self,
        settings: &SmtpSettings,
        tls: Option<Arc<ClientConfig>>,
        hello: &str,
    ) -> Result<()> {
        self.greeting(settings)?;
        self.ehlo(hello)?;
        if settings.security == Security::Starttls {
            let Some(config) = tls else {
                return Err(Error::new(
                    ErrorKind::Internal,
                    "STARTTLS without TLS parameters (a bug); nothing was sent",
                ));
            };
            self.starttls(config, &settings.host, hello)?;
        }
        if let Some((user, secret)) = &settings.credentials {
            match settings.auth {
                Auth::Password => self.login(user, secret)?,
                Auth::Xoauth2 | Auth::Oauthbearer => {
                    self.bearer_login(settings.auth, user, secret, &settings.host, settings.port)?
                }
            }
        }
        if let Some(dsn) = &settings.dsn {
            if self.caps.dsn {
                self.dsn = Some(dsn.clone());
            } else {
                self.notices.push(Notice::DsnNotOffered {
                    server: self.server.clone(),
                });
            }
        }
        Ok(())
    }

    /// Reads the server's `220`. A greeting that never comes on a connection meant to
    /// be plain at first is what an implicit-TLS port does (it waits for a ClientHello):
    /// one TLS handshake on a new connection tells, and a port that answers it is a
    /// wrong profile (78), not a server to retry for half a minute.
    fn greeting(&mut self, settings: &SmtpSettings) -> Result<()> {
        let connecting = format!("connecting to {}", self.server);
        let greeting = match self.conn.read_reply() {
            Ok(reply) => reply,
            Err(e) => {
                self.broken = true;
                self.trace("*", "no greeting");
                let silent = matches!(&e, WireError::Io(io) if is_timeout(io));
                if silent && settings.security != Security::Tls && answers_tls(settings) {
                    return Err(implicit_tls_port(&self.server, settings.security));
                }
                return Err(wire_failure(&connecting, e));
            }
        };
        self.trace(
            "S",
            &format!("{} {}", greeting.code, greeting.lines.join(" | ")),
        );
        self.require(&greeting, &connecting, |c| c == 220)
    }

    /// EHLO, and what it offers.
    fn ehlo(&mut self, hello: &str) -> Result<()> {
        let reply = self.command(&format!("EHLO {hello}"), "EHLO")?;
        self.require(&reply, "EHLO", |c| c == 250)?;
        self.caps = Capabilities::parse(&reply);
        self.extensions = Capabilities::extensions(&reply);
        Ok(())
    }

    /// Upgrades to TLS, or ends the session when the server does not offer it: STARTTLS
    /// is never optional. Nothing the server sent before the handshake is trusted: a
    /// byte after the `220` ends the session (the CVE-2021-22947 class), and the
    /// capabilities are read again over TLS.
    fn starttls(&mut self, config: Arc<ClientConfig>, host: &str, hello: &str) -> Result<()> {
        if !self.caps.starttls {
            return Err(Error::new(
                ErrorKind::Temporary,
                format!(
                    "{} does not offer STARTTLS; security = \"starttls\" never \
                     continues without TLS (nothing was sent)",
                    self.server
                ),
            ));
        }
        let reply = self.command("STARTTLS", "STARTTLS")?;
        self.require(&reply, "STARTTLS", |c| c == 220)?;
        if self.conn.has_unread() {
            return Err(Error::new(
                ErrorKind::Temporary,
                format!(
                    "{} sent data after agreeing to STARTTLS, before the TLS handshake \
                     (possible tampering); nothing was sent",
                    self.server
                ),
            ));
        }
        let name = tls::server_name(host)?;
        if let Err(e) = self.conn.upgrade(config, name) {
            self.broken = true;
            return Err(wire_failure(&format!("STARTTLS with {}", self.server), e));
        }
        self.trace("*", "TLS established");
        self.caps = Capabilities::default();
        self.ehlo(hello)
    }

    /// AUTH PLAIN, else LOGIN, as the server offers (RFC 4954).
    fn login(&mut self, user: &str, password: &Password) -> Result<()> {
        let refused = |reply: &Reply, server: &str| {
            if reply.code >= 500 {
                Error::new(
                    ErrorKind::AuthRefused,
                    format!(
                        "{server} refused the login for user {user:?}: {} {}",
                        reply.code,
                        printable(reply.text())
                    ),
                )
            } else {
                negative("AUTH", reply)
            }
        };
        let reply = if self.caps.offers_auth("PLAIN") {
            let token = BASE64.encode(format!("\0{user}\0{}", password.expose()));
            self.secret_command(&format!("AUTH PLAIN {token}"), "AUTH PLAIN [redacted]")?
        } else if self.caps.offers_auth("LOGIN") {
            let reply = self.command("AUTH LOGIN", "AUTH")?;
            if reply.code != 334 {
                return Err(refused(&reply, &self.server));
            }
            let reply = self.secret_command(&BASE64.encode(user), "[redacted: user name]")?;
            if reply.code != 334 {
                return Err(refused(&reply, &self.server));
            }
            self.secret_command(&BASE64.encode(password.expose()), "[redacted]")?
        } else {
            return Err(Error::new(
                ErrorKind::AuthRefused,
                format!(
                    "{} offers no login method envoi supports (PLAIN, LOGIN); it offers: {}",
                    self.server,
                    if self.caps.auth.is_empty() {
                        "none".to_owned()
                    } else {
                        self.caps.auth.join(" ")
                    }
                ),
            ));
        };
        if reply.code != 235 {
            return Err(refused(&reply, &self.server));
        }
        Ok(())
    }

    /// SASL XOAUTH2 or OAUTHBEARER (RFC 7628) with a bearer token, driven here rather
    /// than by a library because the failure path matters: a refused token is answered
    /// `334 <base64 JSON>`, and the server waits for the client's reply to it (an empty
    /// line for XOAUTH2, `^A` for OAUTHBEARER) before its `535`. Answering at once turns
    /// a bad token into a prompt 77 with the provider's reason instead of a timeout.
    fn bearer_login(
        &mut self,
        auth: Auth,
        user: &str,
        token: &Password,
        host: &str,
        port: u16,
    ) -> Result<()> {
        let (mechanism, response, after_error) = match auth {
            Auth::Oauthbearer => (
                "OAUTHBEARER",
                format!(
                    "n,a={},\x01host={host}\x01port={port}\x01auth=Bearer {}\x01\x01",
                    gs2_escape(user),
                    token.expose()
                ),
                BASE64.encode("\x01"),
            ),
            Auth::Xoauth2 | Auth::Password => (
                "XOAUTH2",
                format!("user={user}\x01auth=Bearer {}\x01\x01", token.expose()),
                String::new(),
            ),
        };
        if !self.caps.offers_auth(mechanism) {
            return Err(Error::new(
                ErrorKind::AuthRefused,
                format!(
                    "{} does not offer AUTH {mechanism} (auth = \"{}\"); it offers: {}",
                    self.server,
                    auth.name(),
                    if self.caps.auth.is_empty() {
                        "none".to_owned()
                    } else {
                        self.caps.auth.join(" ")
                    }
                ),
            ));
        }
        let mut reply = self.secret_command(
            &format!("AUTH {mechanism} {}", BASE64.encode(response)),
            &format!("AUTH {mechanism} [redacted]"),
        )?;
        let mut reason = None;
        if reply.code == 334 {
            // The provider's reason, as JSON (`{"status":"401","schemes":"bearer",…}`).
            reason = BASE64
                .decode(reply.text().trim())
                .ok()
                .map(|json| printable(String::from_utf8_lossy(&json)));
            reply = self.command(&after_error, "AUTH")?;
        }
        if reply.code == 235 {
            return Ok(());
        }
        if reply.code < 500 && reply.code != 334 {
            return Err(negative("AUTH", &reply));
        }
        Err(Error::new(
            ErrorKind::AuthRefused,
            format!(
                "{} refused the {mechanism} token for user {user:?}: {} {}{}",
                self.server,
                reply.code,
                printable(reply.text()),
                reason
                    .map(|r| format!(" (the server said: {r})"))
                    .unwrap_or_default()
            )
            .trim_end()
            .to_owned(),
        ))
    }

    /// The MAIL parameters `prepared` needs: SMTPUTF8 when an address needs it, else
    /// BODY=8BITMIME when the text needs it; SIZE when the server takes it, after
    /// checking the message fits. First, the message's files must be as they were when
    /// it was built (the size announced is theirs): one that changed stops the
    /// transaction before it begins, with nothing sent and the session still usable.
    fn mail_parameters(&self, prepared: &Prepared, recipients: &[Address]) -> Result<String> {
        prepared.bytes.check_files().map_err(|e| {
            Error::new(
                e.kind(),
                format!(
                    "{}; the message {} was not sent",
                    e.message(),
                    prepared.message_id
                ),
            )
        })?;
        let mut params = String::new();
        let size = prepared.bytes.len();
        if let Some(limit) = self.caps.size.filter(|l| *l > 0) {
            if size > limit {
                return Err(Error::invalid(format!(
                    "the message is {} ({size} octets) and {} takes at most {} (SIZE \
                     {limit}); nothing was sent: attach less, or link to the file",
                    human_size(size),
                    self.server,
                    human_size(limit)
                )));
            }
            params.push_str(&format!(" SIZE={size}"));
        }
        let from = prepared.envelope.from();
        let mut addresses = from.into_iter().chain(recipients);
        if let Some(address) = addresses.find(|a| !AsRef::<str>::as_ref(*a).is_ascii()) {
            if !self.caps.smtputf8 {
                return Err(Error::new(
                    ErrorKind::Unavailable,
                    format!(
                        "{address} has a non-ASCII local part, which needs SMTPUTF8, and \
                         the server does not offer it"
                    ),
                ));
            }
            params.push_str(" SMTPUTF8");
        } else if !prepared.bytes.is_ascii() {
            if !self.caps.eight_bit_mime {
                return Err(Error::new(
                    ErrorKind::Unavailable,
                    "the message is not ASCII and the server does not offer 8BITMIME",
                ));
            }
            params.push_str(" BODY=8BITMIME");
        }
        if let Some(dsn) = &self.dsn {
            if let Some(ret) = &dsn.ret {
                params.push_str(&format!(" RET={ret}"));
            }
            if let Some(envid) = &dsn.envid {
                params.push_str(&format!(" ENVID={}", xtext(envid)));
            }
        }
        Ok(params)
    }

    /// `RCPT TO:<…>`, with NOTIFY= when DSN is requested (RFC 3461 §4.1).
    fn rcpt_line(&self, rcpt: &Address) -> String {
        match self.dsn.as_ref().and_then(|d| d.notify.as_ref()) {
            Some(notify) => format!("RCPT TO:<{rcpt}> NOTIFY={}", notify.join(",")),
            None => format!("RCPT TO:<{rcpt}>"),
        }
    }

    /// Sends one command line and reads its reply, positive or not. A failure of the
    /// connection marks the session broken.
    fn command(&mut self, line: &str, what: &str) -> Result<Reply> {
        self.trace("C", line);
        self.send_and_read(line, what)
    }

    /// Like [`SmtpSession::command`], with `shown` in the transcript instead of `line`.
    fn secret_command(&mut self, line: &str, shown: &str) -> Result<Reply> {
        self.trace("C", shown);
        self.send_and_read(line, "AUTH")
    }

    fn send_and_read(&mut self, line: &str, what: &str) -> Result<Reply> {
        self.arm_timeout()?;
        if let Err(e) = self.conn.send(format!("{line}\r\n").as_bytes()) {
            self.broken = true;
            return Err(io_failure(what, &e));
        }
        self.read(what)
    }

    /// Reads one reply (traced); a failure marks the session broken.
    fn read(&mut self, what: &str) -> Result<Reply> {
        match self.conn.read_reply() {
            Ok(reply) => {
                self.trace("S", &format!("{} {}", reply.code, reply.lines.join(" | ")));
                if reply.code == 421 {
                    // RFC 5321 §3.8: the server is closing the channel; say nothing more.
                    self.broken = true;
                }
                Ok(reply)
            }
            Err(e) => {
                self.broken = true;
                self.trace("*", "the connection failed");
                Err(wire_failure(what, e))
            }
        }
    }

    /// `reply` if its code is one `ok` accepts, else the error for it.
    fn require(&self, reply: &Reply, what: &str, ok: impl Fn(u16) -> bool) -> Result<()> {
        if ok(reply.code) {
            Ok(())
        } else {
            Err(negative(what, reply))
        }
    }

    /// Cuts the next command's timeout to what is left before the deadline.
    fn arm_timeout(&mut self) -> Result<()> {
        let timeout = cut_to_deadline(self.timeout, self.deadline);
        if self.deadline.is_some() && timeout.is_zero() {
            self.broken = true;
            return Err(deadline_passed());
        }
        self.conn
            .set_timeout(timeout)
            .map_err(|e| io_failure("setting the timeout", &e))
    }

    fn trace(&self, side: &str, line: &str) {
        trace(self.transcript, side, line);
    }
}

impl Session for SmtpSession {
    fn mail(&mut self, prepared: &Prepared, recipients: &[Address]) -> Result<()> {
        let line = self.mail_line(prepared, recipients)?;
        let reply = self.command(&line, "MAIL FROM")?;
        self.require(&reply, "MAIL FROM", |c| c == 250)
    }

    fn pipelined_envelope(
        &mut self,
        prepared: &Prepared,
        recipients: &[Address],
    ) -> Option<Result<Vec<RcptReply>>> {
        if !self.caps.pipelining {
            return None;
        }
        Some(self.envelope_in_one_write(prepared, recipients))
    }

    fn rcpt(&mut self, rcpt: &Address) -> Result<RcptReply> {
        let reply = self.command(&self.rcpt_line(rcpt), &format!("RCPT TO:<{rcpt}>"))?;
        Ok(RcptReply::new(rcpt, reply.code, printable(reply.text())))
    }

    fn rset(&mut self) {
        let _ = self.command("RSET", "RSET");
    }

    fn data(&mut self, prepared: &Prepared) -> Result<(u16, String)> {
        let reply = self.command("DATA", "DATA")?;
        self.require(&reply, "DATA", |c| c == 354)?;
        self.arm_timeout()?;
        self.trace(
            "C",
            &format!(
                "[message {}, {} bytes, then .]",
                prepared.message_id,
                prepared.bytes.len()
            ),
        );
        let in_flight = InFlight::start();
        let result = match self.write_payload(&prepared.bytes) {
            Ok(()) => self.conn.read_reply(),
            Err(StreamError::Sink(e)) => Err(WireError::Io(e)),
            Err(StreamError::Source(e)) => {
                drop(in_flight);
                return Err(self.abandon_data(prepared, &e));
            }
        };
        drop(in_flight);
        let reply = match result {
            Ok(reply) => reply,
            Err(e) => {
                self.broken = true;
                let why = match &e {
                    WireError::Io(io) => describe_io(io),
                    WireError::Protocol(why) | WireError::PlainTextNotTls(why) => why.clone(),
                };
                return Err(Error::new(
                    ErrorKind::OutcomeUnknown,
                    format!(
                        "the connection failed after the message {} was sent and before the \
                         server answered; it may or may not have been delivered: {}",
                        prepared.message_id,
                        printable(why)
                    ),
                ));
            }
        };
        self.trace("S", &format!("{} {}", reply.code, reply.text()));
        if reply.code == 421 {
            self.broken = true;
        }
        self.require(&reply, "the message", |c| (200..300).contains(&c))?;
        Ok((reply.code, printable(reply.text())))
    }

    fn take_notices(&mut self) -> Vec<Notice> {
        std::mem::take(&mut self.notices)
    }

    fn usable(&self) -> bool {
        !self.broken
    }

    /// Says QUIT when the connection is sound; otherwise shuts it down at once.
    fn close(mut self) {
        if !self.broken {
            let _ = self.command("QUIT", "QUIT");
        }
        self.conn.shutdown();
    }
}

impl SmtpSession {
    /// After an attached file failed in the middle of DATA: the connection is closed at
    /// once, so the server, which never got the final dot, discards what it got (RFC
    /// 5321 §4.1.1.4); nothing was delivered, which the error says with the file's own
    /// error (66, not retried: the same file would fail again).
    fn abandon_data(&mut self, prepared: &Prepared, e: &Error) -> Error {
        self.broken = true;
        self.conn.shutdown();
        self.trace(
            "*",
            "an attached file failed; the connection was closed before the end",
        );
        Error::new(
            e.kind(),
            format!(
                "{}; the message {} was not sent: the connection was closed before its end, so \
                 the server discards it",
                e.message(),
                prepared.message_id
            ),
        )
    }

    /// `MAIL FROM:<…>` with its parameters.
    fn mail_line(&self, prepared: &Prepared, recipients: &[Address]) -> Result<String> {
        let params = self.mail_parameters(prepared, recipients)?;
        let from = prepared
            .envelope
            .from()
            .map(ToString::to_string)
            .unwrap_or_default();
        Ok(format!("MAIL FROM:<{from}>{params}"))
    }

    /// RFC 2920: MAIL and the RCPTs go in one write; the replies come back in order and
    /// are all read, so the session stays in step even when MAIL is refused.
    fn envelope_in_one_write(
        &mut self,
        prepared: &Prepared,
        recipients: &[Address],
    ) -> Result<Vec<RcptReply>> {
        let mut lines = vec![self.mail_line(prepared, recipients)?];
        lines.extend(recipients.iter().map(|r| self.rcpt_line(r)));
        let mut batch = String::new();
        for line in &lines {
            self.trace("C", line);
            batch.push_str(line);
            batch.push_str("\r\n");
        }
        self.arm_timeout()?;
        if let Err(e) = self.conn.send(batch.as_bytes()) {
            self.broken = true;
            return Err(io_failure("MAIL FROM", &e));
        }
        let mail = self.read("MAIL FROM")?;
        let mut replies = Vec::with_capacity(recipients.len());
        for rcpt in recipients {
            self.arm_timeout()?;
            let reply = self.read(&format!("RCPT TO:<{rcpt}>"))?;
            replies.push(RcptReply::new(rcpt, reply.code, printable(reply.text())));
        }
        self.require(&mail, "MAIL FROM", |c| c == 250)?;
        Ok(replies)
    }

    /// The dot-stuffed payload and the final dot, in large writes, the last one carrying
    /// the terminator. When an attached file fails on the way, the final dot is never
    /// written.
    fn write_payload(&mut self, message: &MessageBytes) -> std::result::Result<(), StreamError> {
        let mut data = DataWriter::new(self.conn.writer());
        message.write_to(&mut data)?;
        data.finish()?.flush()?;
        Ok(())
    }
}

/// Opens SMTP sessions with one set of settings, each within what is left of the
/// deadline. The TLS configuration (system roots read once) is shared by its sessions.
#[derive(Clone)]
pub(crate) struct SmtpConnector {
    settings: SmtpSettings,
}

impl SmtpConnector {
    pub(crate) fn new(settings: SmtpSettings) -> SmtpConnector {
        SmtpConnector { settings }
    }

    /// What its sessions are opened with.
    pub(crate) fn settings(&self) -> &SmtpSettings {
        &self.settings
    }

    /// Sessions opened from now on log in as `user` with `secret` (a renewed token).
    pub(crate) fn log_in_as(&mut self, user: String, secret: Password) {
        self.settings.credentials = Some((user, secret));
    }
}

impl Connector for SmtpConnector {
    type Session = SmtpSession;

    fn open(&mut self) -> Result<SmtpSession> {
        let tls = match self.settings.security {
            Security::None => None,
            Security::Tls | Security::Starttls => Some(tls::client_config(
                self.settings.ca_file.as_deref(),
                self.settings.tls_fingerprint.as_ref(),
            )?),
        };
        SmtpSession::open(&self.settings, tls)
    }
}

/// This machine's name for EHLO, else an address literal.
fn default_hello_name() -> String {
    hostname::get()
        .ok()
        .and_then(|name| name.into_string().ok())
        .filter(|name| {
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        })
        .unwrap_or_else(|| "[127.0.0.1]".to_owned())
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

/// A negative reply to `what`: 4xx is temporary, 5xx permanent.
fn negative(what: &str, reply: &Reply) -> Error {
    let kind = if reply.code < 500 {
        ErrorKind::Temporary
    } else {
        ErrorKind::Unavailable
    };
    Error::new(
        kind,
        format!(
            "{what}: the server answered {} {}",
            reply.code,
            printable(reply.text())
        )
        .trim_end()
        .to_owned(),
    )
}

/// A failure of the connection during `what`.
fn wire_failure(what: &str, e: WireError) -> Error {
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
    }
}

/// `security = "tls"` on a port that greets in plain text: a wrong profile, which no
/// retry will mend (78).
fn plain_text_port(server: &str, port: u16, line: &str) -> Error {
    Error::config(format!(
        "{server} speaks plain SMTP, not implicit TLS (it answered the TLS handshake with \
         {line:?}): set security = \"starttls\" for port {port} (or use an smtp:// URL); \
         security = \"tls\" is for implicit-TLS ports like 465"
    ))
}

/// A port that sent no greeting in plain text but completes a TLS handshake speaks
/// implicit TLS: a wrong profile (78).
fn implicit_tls_port(server: &str, security: Security) -> Error {
    Error::config(format!(
        "{server} speaks implicit TLS: it sent no SMTP greeting in plain text but answers a \
         TLS handshake; set security = \"tls\" (or use an smtps:// URL) instead of \
         security = \"{}\"",
        security.name()
    ))
}

/// An I/O failure during `what`: a certificate problem (77), else temporary (75).
fn io_failure(what: &str, e: &io::Error) -> Error {
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

/// A read that ran out of time (std reports it as `WouldBlock` on Unix).
fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    )
}

/// Whether the server of `settings` completes a TLS handshake on a new connection (a
/// certificate it cannot prove still counts: it speaks TLS). Bounded by the same
/// timeout and deadline as the rest; nothing is sent after the handshake.
fn answers_tls(settings: &SmtpSettings) -> bool {
    let timeout = cut_to_deadline(settings.timeout, settings.deadline);
    let config = tls::client_config(
        settings.ca_file.as_deref(),
        settings.tls_fingerprint.as_ref(),
    );
    let (Ok(config), Ok(name)) = (config, tls::server_name(&settings.host)) else {
        return false;
    };
    if timeout.is_zero() {
        return false;
    }
    let Ok(mut conn) = Conn::connect(&settings.host, settings.port, timeout) else {
        return false;
    };
    let answered = conn.set_timeout(timeout).is_ok()
        && match conn.upgrade(config, name) {
            Ok(()) => true,
            Err(WireError::Io(io)) => io
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                .is_some_and(|e| {
                    matches!(
                        e,
                        rustls::Error::InvalidCertificate(_) | rustls::Error::AlertReceived(_)
                    )
                }),
            Err(_) => false,
        };
    conn.shutdown();
    answered
}

/// An I/O error in words; a read timeout is "timed out" (std reports it as
/// `WouldBlock` on Unix).
fn describe_io(e: &io::Error) -> String {
    if is_timeout(e) {
        "timed out".to_owned()
    } else {
        e.to_string()
    }
}

/// Octets in decimal megabytes (or kilobytes under one megabyte) with one decimal, as
/// providers state their limits (Gmail's 25 MB, Microsoft's 35 MB).
fn human_size(octets: u64) -> String {
    match octets {
        0..1_000_000 => format!("{:.1} kB", octets as f64 / 1e3),
        _ => format!("{:.1} MB", octets as f64 / 1e6),
    }
}

/// RFC 5801 §4: in a GS2 header's authzid, `,` is `=2C` and `=` is `=3D`.
fn gs2_escape(user: &str) -> String {
    user.replace('=', "=3D").replace(',', "=2C")
}

/// RFC 3461 §4: xtext, `+XX` for `+`, `=` and anything outside printable ASCII.
fn xtext(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'!'..=b'~' if b != b'+' && b != b'=' => char::from(b).to_string(),
            _ => format!("+{b:02X}"),
        })
        .collect()
}

/// Text from outside (a server reply) made safe for a terminal: control characters
/// become `?` so they cannot move the cursor or fake output.
pub(crate) fn printable(text: impl AsRef<str>) -> String {
    text.as_ref()
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// With `-v`, one line of the dialogue (`C` client, `S` server, `*` envoi), control
/// characters made visible.
fn trace(transcript: Option<Transcript>, side: &str, line: &str) {
    if let Some(transcript) = transcript {
        transcript(side, &printable(line));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_strips_control_characters() {
        assert_eq!(printable("ok\x1b[2J\r\nfake"), "ok?[2J??fake");
    }

    #[test]
    fn sizes_read_as_providers_state_them() {
        assert_eq!(human_size(31_200_000), "31.2 MB");
        assert_eq!(human_size(25 * 1024 * 1024), "26.2 MB");
        assert_eq!(human_size(2000), "2.0 kB");
    }

    #[test]
    fn gs2_escapes_comma_and_equals() {
        assert_eq!(gs2_escape("a,b=c@x"), "a=2Cb=3Dc@x");
        assert_eq!(gs2_escape("bot@example.com"), "bot@example.com");
    }

    #[test]
    fn xtext_encodes_plus_equals_and_the_rest() {
        assert_eq!(xtext("job+1=a b\u{e9}"), "job+2B1+3Da+20b+C3+A9");
        assert_eq!(xtext("plain-id.42"), "plain-id.42");
    }

    #[test]
    fn capabilities_from_an_ehlo_reply() {
        let reply = Reply {
            code: 250,
            lines: [
                "mail.example",
                "PIPELINING",
                "SIZE 1048576",
                "auth plain LOGIN",
                "STARTTLS",
                "8BITMIME",
            ]
            .map(String::from)
            .to_vec(),
        };
        let caps = Capabilities::parse(&reply);
        assert!(caps.starttls && caps.eight_bit_mime && !caps.smtputf8);
        assert_eq!(caps.size, Some(1_048_576));
        assert!(caps.offers_auth("PLAIN") && caps.offers_auth("LOGIN"));
        assert!(!caps.offers_auth("XOAUTH2"));
    }
}
