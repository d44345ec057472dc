//! The command exchange of one SMTP connection: greeting, EHLO, STARTTLS, then MAIL,
//! RCPT and DATA as the [`Session`] that [`crate::deliver::retry`] drives, every reply
//! read within its timeout and the deadline, a failed session shut down rather than
//! asked to QUIT.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lettre::Address;
use rustls::ClientConfig;

use crate::deliver::deadline::deadline_passed;
use crate::deliver::in_flight::InFlight;
use crate::deliver::observe::{Notice, Transcript};
use crate::deliver::options::Dsn;
use crate::deliver::outcome::RcptReply;
use crate::deliver::retry::{Pipelined, Session};
use crate::error::{Error, ErrorKind, Result};
use crate::message::wire::DataWriter;
use crate::message::{MessageBytes, Prepared, StreamError};
use crate::profile::{Auth, Password, Security};

use super::conn::{self, Conn, WireError};
use super::fail::{
    describe_io, implicit_tls_port, io_failure, is_timeout, negative, no_greeting, plain_text_port,
    reach_failure, silent_implicit_tls_port, tls_greeting, wire_failure,
};
use super::reply::{Reply, printable};
use super::settings::{SmtpSettings, answers_tls, check_settings, default_hello_name};
use super::tls;

/// What the server said it supports, from its EHLO reply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Capabilities {
    pub(super) starttls: bool,
    /// SASL mechanisms, upper case.
    pub(super) auth: Vec<String>,
    /// The largest message it takes (RFC 1870); `None` or 0: no limit given.
    pub(super) size: Option<u64>,
    pub(super) eight_bit_mime: bool,
    pub(super) smtputf8: bool,
    pub(super) pipelining: bool,
    pub(super) dsn: bool,
}

impl Capabilities {
    /// Reads the keywords of an EHLO reply (its first line is the server's name).
    pub(super) fn parse(reply: &Reply) -> Capabilities {
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
    pub(super) fn extensions(reply: &Reply) -> Vec<String> {
        reply.lines.iter().skip(1).map(printable).collect()
    }

    pub(super) fn offers_auth(&self, mechanism: &str) -> bool {
        self.auth.iter().any(|m| m == mechanism)
    }
}

/// An open, logged-in SMTP connection.
pub(crate) struct SmtpSession {
    pub(super) conn: Conn,
    pub(super) caps: Capabilities,
    pub(super) server: String,
    pub(super) transcript: Option<Transcript>,
    pub(super) deadline: Option<Instant>,
    /// Set once the connection failed: it is then shut down, never asked to QUIT.
    pub(super) broken: bool,
    /// Whether the server offered STARTTLS before envoi asked for it.
    pub(super) tls_offered: bool,
    /// The DSN request, once the server said it offers DSN.
    pub(super) dsn: Option<Dsn>,
    /// What the retry policy should tell its observer.
    pub(super) notices: Vec<Notice>,
    /// The EHLO keywords as written (for `envoi check`).
    pub(super) extensions: Vec<String>,
    /// What the login sent that is secret (the password or token, and its base64
    /// forms): taken out of every reply before anyone sees it, so a server that echoes
    /// it puts it in no error, `-v` line or delivery log.
    pub(super) hidden: Vec<Password>,
}

/// How long a plain-text greeting is awaited on port 465 before envoi says the port may
/// speak implicit TLS: a server that waits for a ClientHello says nothing at all, and a
/// real one greets within milliseconds.
const GREETING_WINDOW: Duration = Duration::from_secs(2);

impl SmtpSession {
    /// Connects, secures the connection as `settings.security` demands, and logs in,
    /// each step within what is left before the deadline.
    pub(super) fn open(
        settings: &SmtpSettings,
        tls: Option<Arc<ClientConfig>>,
    ) -> Result<SmtpSession> {
        SmtpSession::open_noting(settings, tls, &mut false)
    }

    /// [`SmtpSession::open`], noting in `tls_offered` whether the server offered TLS.
    pub(super) fn open_noting(
        settings: &SmtpSettings,
        tls: Option<Arc<ClientConfig>>,
        tls_offered: &mut bool,
    ) -> Result<SmtpSession> {
        let settings = settings.clone();
        if settings.deadline.is_some_and(|d| Instant::now() >= d) {
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
                "connecting to {server} ({}){}, EHLO {hello}",
                match settings.security {
                    Security::Tls => "implicit TLS",
                    Security::Starttls => "STARTTLS required",
                    Security::None => "no TLS",
                },
                settings
                    .proxy
                    .as_ref()
                    .map_or(String::new(), |proxy| format!(" through the proxy {proxy}")),
            ),
        );
        let connecting = format!("connecting to {server}");
        let proxy_password = settings.proxy_password()?;
        let via = settings
            .proxy
            .as_ref()
            .map(|proxy| (proxy, proxy_password.as_ref()));
        let mut conn = Conn::connect(
            &settings.host,
            settings.port,
            via,
            settings.timeout,
            settings.deadline,
        )
        .map_err(|e| reach_failure(&connecting, e))?;
        if let (Security::Tls, Some(config)) = (settings.security, &tls) {
            let name = tls::server_name(&settings.host)?;
            let upgraded = conn.upgrade(Arc::clone(config), name);
            // A handshake that got TLS back, whether it then failed or not.
            *tls_offered = match &upgraded {
                Ok(()) => true,
                Err(WireError::Io(io)) => io
                    .get_ref()
                    .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some()),
                Err(_) => false,
            };
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
            deadline: settings.deadline,
            broken: false,
            tls_offered: false,
            dsn: None,
            notices: Vec::new(),
            extensions: Vec::new(),
            hidden: Vec::new(),
        };
        let result = session.greet_and_login(&settings, tls, &hello);
        if result.is_err() {
            *tls_offered |= session.tls_offered;
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
        // Port 465 is implicit TLS's (RFC 8314): a plain greeting is not waited for long
        // there. Elsewhere a slow greeting may be a tarpit's, and gets the full timeout.
        let window =
            (settings.port == 465 && settings.security != Security::Tls).then_some(GREETING_WINDOW);
        let greeting = match self.conn.read_greeting(window) {
            Ok(reply) => reply,
            Err(e) => {
                self.broken = true;
                self.trace("*", "no greeting");
                let timed_out =
                    !self.conn.has_unread() && matches!(&e, WireError::Io(io) if is_timeout(io));
                // Silent, not slow: a server that dripped part of a greeting speaks.
                let silent = timed_out && matches!(&e, WireError::Io(io) if !conn::is_deadline(io));
                return Err(match e {
                    WireError::TlsNotPlainText => tls_greeting(&self.server),
                    _ if silent && window.is_some() => {
                        silent_implicit_tls_port(&self.server, GREETING_WINDOW)
                    }
                    _ if silent && answers_tls(settings) => {
                        implicit_tls_port(&self.server, settings.security)
                    }
                    WireError::Io(io) if timed_out => no_greeting(&self.server, &io),
                    e => wire_failure(&connecting, e),
                });
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
        self.tls_offered = true;
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
    pub(super) fn command(&mut self, line: &str, what: &str) -> Result<Reply> {
        self.trace("C", line);
        self.send_and_read(line, what)
    }

    /// Like [`SmtpSession::command`], with `shown` in the transcript instead of `line`.
    pub(super) fn secret_command(&mut self, line: &str, shown: &str) -> Result<Reply> {
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
        match self.read_redacted() {
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

    /// The next reply with every secret this session sent at login taken out of it, or
    /// the failure to read one: every reply envoi reads goes through here, so no echo of
    /// a password or token reaches an error, the transcript or the delivery log.
    fn read_redacted(&mut self) -> std::result::Result<Reply, WireError> {
        match self.conn.read_reply() {
            Ok(mut reply) => {
                for line in &mut reply.lines {
                    *line = self.redact(line);
                }
                Ok(reply)
            }
            // A line that is not SMTP is quoted in the error, cut short: a cut secret no
            // longer matches, so after a login nothing of it is quoted.
            Err(WireError::Protocol(_)) if !self.hidden.is_empty() => Err(WireError::Protocol(
                "a reply that is not SMTP (not quoted: this connection carried a login)".to_owned(),
            )),
            Err(e) => Err(e),
        }
    }

    /// `text` with every secret this session sent at login taken out
    /// ([`crate::deliver::redact::redact`]).
    pub(super) fn redact(&self, text: &str) -> String {
        crate::deliver::redact::redact(&self.hidden, text)
    }

    /// `reply` if its code is one `ok` accepts, else the error for it.
    fn require(&self, reply: &Reply, what: &str, ok: impl Fn(u16) -> bool) -> Result<()> {
        if ok(reply.code) {
            Ok(())
        } else {
            Err(negative(what, reply))
        }
    }

    /// Refuses to begin a command once the deadline has passed (the connection bounds
    /// each read and write by it too, so one that began cannot outlast it).
    fn arm_timeout(&mut self) -> Result<()> {
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            self.broken = true;
            return Err(deadline_passed());
        }
        Ok(())
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
    ) -> Option<Result<Pipelined>> {
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

    fn abandon(&mut self) {
        self.broken = true;
        self.conn.shutdown();
        self.trace(
            "*",
            "DATA was accepted but the message must not go: the connection was closed \
             before it, so the server discards the transaction",
        );
    }

    fn data(&mut self, prepared: &Prepared) -> Result<(u16, String)> {
        let reply = self.command("DATA", "DATA")?;
        self.require(&reply, "DATA", |c| c == 354)?;
        self.message(prepared)
    }

    fn message(&mut self, prepared: &Prepared) -> Result<(u16, String)> {
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
            Ok(()) => self.read_redacted(),
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
                    WireError::TlsNotPlainText => "a TLS record came back".to_owned(),
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

    fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
        self.conn.set_deadline(deadline);
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

    /// RFC 2920: MAIL, the RCPTs and DATA go in one write (a round trip less per
    /// message than DATA on its own); the replies come back in order and are all read,
    /// so the session stays in step even when MAIL is refused.
    fn envelope_in_one_write(
        &mut self,
        prepared: &Prepared,
        recipients: &[Address],
    ) -> Result<Pipelined> {
        let mut lines = vec![self.mail_line(prepared, recipients)?];
        lines.extend(recipients.iter().map(|r| self.rcpt_line(r)));
        lines.push("DATA".to_owned());
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
        self.arm_timeout()?;
        let data = self.read("DATA")?;
        if let Err(e) = self.require(&mail, "MAIL FROM", |c| c == 250) {
            if data.code == 354 {
                // A server that took DATA without a sender waits for a message: none goes.
                self.abandon();
            }
            return Err(e);
        }
        Ok(Pipelined {
            rcpts: replies,
            data: self.require(&data, "DATA", |c| c == 354),
        })
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

/// Octets in decimal megabytes (or kilobytes under one megabyte) with one decimal, as
/// providers state their limits (Gmail's 25 MB, Microsoft's 35 MB).
fn human_size(octets: u64) -> String {
    match octets {
        0..1_000_000 => format!("{:.1} kB", octets as f64 / 1e3),
        _ => format!("{:.1} MB", octets as f64 / 1e6),
    }
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
    fn sizes_read_as_providers_state_them() {
        assert_eq!(human_size(31_200_000), "31.2 MB");
        assert_eq!(human_size(25 * 1024 * 1024), "26.2 MB");
        assert_eq!(human_size(2000), "2.0 kB");
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
