//! The copy of a sent message in the sender's Sent folder (`sent_copy`): a minimal IMAP4rev1
//! client (RFC 3501) over the SMTP client's socket (`smtp::conn`: every read and write
//! bounded by the command timeout and the deadline, the read buffer envoi's own) and its TLS
//! (the same verifier, `ca_file` and pins).
//!
//! It says only what a copy needs: CAPABILITY, STARTTLS, AUTHENTICATE PLAIN (with SASL-IR
//! when offered) or LOGIN, AUTHENTICATE XOAUTH2 / OAUTHBEARER with a bearer token, LIST
//! with SPECIAL-USE (RFC 6154) to find the `\Sent` folder, APPEND with the `\Seen` flag
//! and a synchronizing literal (or LITERAL+), CREATE once on `[TRYCREATE]`, LOGOUT.
//!
//! What the server sends is hostile: every line is bounded ([`MAX_LINE`]), a literal in a
//! response is read only up to what is left of that bound, and no more than
//! [`MAX_RESPONSES`] untagged responses are read for one command. Every secret sent at
//! login is taken out of what the server says before it reaches an error or the `-v`
//! transcript.

use std::io::{self, Write};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::deliver::deadline::cut_to_deadline;
use crate::deliver::oauth2;
use crate::deliver::observe::Transcript;
use crate::deliver::smtp::conn::{Conn, WireError};
use crate::deliver::smtp::fail::{io_failure, reach_failure};
use crate::deliver::smtp::reply::printable;
use crate::deliver::smtp::tls;
use crate::error::{Error, ErrorKind, Result};
use crate::message::MessageBytes;
use crate::profile::{Auth, Password, Profile, SecretSource, SentCopy, Transport};

/// The longest response line held, literals in it included.
const MAX_LINE: usize = 64 * 1024;

/// The most untagged responses read while waiting for one command's end (a LIST of a
/// mailbox with many folders has one per folder).
const MAX_RESPONSES: usize = 100_000;

/// The most capability words kept (servers offer a few dozen).
const MAX_CAPABILITIES: usize = 512;

/// The largest message copied: a copy is not worth holding a send's deadline for longer,
/// and servers refuse larger APPENDs anyway (Gmail: 35 MB; Dovecot's default has no cap).
pub const MAX_COPY: u64 = 64 * 1024 * 1024;

/// Files `bytes` in the folder `copy` names (or the one marked `\Sent`) on its IMAP
/// server, logged in as `profile` logs in to send, flagged `\Seen`; nothing goes on past
/// `deadline`. The folder it went to.
pub fn file_copy(
    profile: &Profile,
    copy: &SentCopy,
    bytes: &MessageBytes,
    deadline: Option<Instant>,
    transcript: Option<Transcript>,
) -> Result<String> {
    let server = format!("IMAP server {}:{}", copy.host, copy.port);
    let size = bytes.len();
    if size > MAX_COPY {
        return Err(Error::new(
            ErrorKind::InvalidData,
            format!(
                "the message is {size} octets, more than the {MAX_COPY} a copy in Sent may be: \
                 not copied"
            ),
        ));
    }
    let (login, timeout) = login_of(profile)?;
    let (user, secret, auth) = fetch(profile, login, timeout, deadline, transcript)?;
    let mut session = Session::open(copy, &server, timeout, deadline, transcript)?;
    let filed = session
        .log_in(auth, &user, &secret)
        .and_then(|()| session.append(copy, bytes, size));
    if filed.is_ok() {
        session.log_out();
    }
    session.conn.shutdown();
    filed
}

/// The login the profile sends with, and its command timeout.
fn login_of(profile: &Profile) -> Result<((String, SecretSource, Auth), Duration)> {
    let (login, auth, timeout) = match &profile.transport {
        Transport::Smtp(smtp) => (&smtp.login, smtp.auth, smtp.timeout),
        Transport::Api(api) => (&api.login, Auth::Xoauth2, api.timeout),
        Transport::File { .. } => {
            return Err(Error::config(
                "sent_copy: a file profile sends nothing, so there is no copy to file",
            ));
        }
    };
    match login.clone()? {
        Some((user, source)) => Ok(((user, source, auth), timeout)),
        None => Err(Error::config(
            "sent_copy: the profile logs in as nobody, and an IMAP server needs a login: give \
             the profile a username and a password or token source",
        )),
    }
}

/// The user name, its secret fetched (a password command runs, a token is taken from the
/// cache or the endpoint), and the mechanism.
fn fetch(
    profile: &Profile,
    (user, source, auth): (String, SecretSource, Auth),
    timeout: Duration,
    deadline: Option<Instant>,
    transcript: Option<Transcript>,
) -> Result<(String, Password, Auth)> {
    let timeout = cut_to_deadline(timeout, deadline);
    let secret = match source {
        SecretSource::Given(source) => source.fetch_as(auth.secret_word(), timeout)?,
        SecretSource::OAuth2(oauth) => {
            let ca_file = match &profile.transport {
                Transport::Smtp(smtp) => smtp.ca_file.as_deref(),
                Transport::Api(api) => api.ca_file.as_deref(),
                Transport::File { .. } => None,
            };
            oauth2::access_token(&user, &oauth, ca_file, timeout, transcript)?.0
        }
    };
    Ok((user, secret, auth))
}

/// How a tagged command ended.
#[derive(Debug)]
struct Done {
    /// `OK`, `NO` or `BAD`, upper case.
    status: String,
    /// The rest of the line, secrets taken out.
    text: String,
}

impl Done {
    fn ok(&self) -> bool {
        self.status == "OK"
    }
}

/// One IMAP connection.
struct Session<'a> {
    conn: Conn,
    server: &'a str,
    transcript: Option<Transcript>,
    /// The last tag's number.
    tag: u32,
    /// What the server said it can do, upper case.
    caps: Vec<String>,
    /// Every secret sent at login, in the forms it was sent.
    hidden: Vec<Password>,
}

impl<'a> Session<'a> {
    /// Connects, greets, and secures the connection (implicit TLS, or STARTTLS, which is
    /// required), then asks for the capabilities.
    fn open(
        copy: &SentCopy,
        server: &'a str,
        timeout: Duration,
        deadline: Option<Instant>,
        transcript: Option<Transcript>,
    ) -> Result<Session<'a>> {
        let conn = Conn::connect(&copy.host, copy.port, None, timeout, deadline)
            .map_err(|e| reach_failure(&format!("connecting to {server}"), e))?;
        let mut session = Session {
            conn,
            server,
            transcript,
            tag: 0,
            caps: Vec::new(),
            hidden: Vec::new(),
        };
        let config = tls::client_config(copy.ca_file.as_deref(), copy.tls_fingerprint.as_ref())?;
        let name = tls::server_name(&copy.host)?;
        if copy.implicit_tls {
            session.upgrade(config.clone(), name.clone())?;
        }
        let greeting = session.line("the greeting")?;
        session.trace("S", &greeting);
        let upper = greeting.to_ascii_uppercase();
        if !(upper.starts_with("* OK") || upper.starts_with("* PREAUTH")) {
            return Err(Error::new(
                ErrorKind::Temporary,
                format!("{server} did not greet as IMAP does: {greeting:?}"),
            ));
        }
        session.capability()?;
        if !copy.implicit_tls {
            if !session.offers("STARTTLS") {
                return Err(Error::new(
                    ErrorKind::Certificate,
                    format!(
                        "{server} does not offer STARTTLS, and envoi never logs in to IMAP \
                         without TLS: use its imaps:// port (993) if it has one"
                    ),
                ));
            }
            let done = session.command("STARTTLS", "STARTTLS", |_| Ok(()))?;
            if !done.ok() {
                return Err(session.refused("STARTTLS", &done));
            }
            if session.conn.has_unread() {
                return Err(Error::new(
                    ErrorKind::Temporary,
                    format!(
                        "{server} sent bytes after its answer to STARTTLS and before TLS (RFC \
                         3501 §6.2.1 forbids it: something on the way may be injecting \
                         commands); not going on"
                    ),
                ));
            }
            session.upgrade(config, name)?;
            session.capability()?;
        }
        Ok(session)
    }

    /// The TLS handshake.
    fn upgrade(
        &mut self,
        config: std::sync::Arc<rustls::ClientConfig>,
        name: rustls::pki_types::ServerName<'static>,
    ) -> Result<()> {
        let what = format!("the TLS handshake with {}", self.server);
        self.conn.upgrade(config, name).map_err(|e| match e {
            WireError::Io(io) => io_failure(&what, &io),
            WireError::PlainTextNotTls(line) => Error::config(format!(
                "{what}: the server answered in plain text ({line:?}): an imaps:// URL is for \
                 implicit-TLS ports like 993; use imap:// for port 143"
            )),
            other => self.wire(&what, other),
        })
    }

    /// Whether the server offers `cap` (`STARTTLS`, `AUTH=PLAIN`, `LITERAL+`).
    fn offers(&self, cap: &str) -> bool {
        self.caps.iter().any(|c| c == cap)
    }

    /// CAPABILITY; the capabilities are kept.
    fn capability(&mut self) -> Result<()> {
        let mut caps = Vec::new();
        let done = self.command("CAPABILITY", "CAPABILITY", |line| {
            // The last such line counts, and only so many words of it: a server that
            // repeats CAPABILITY cannot make the list grow (each word is a heap string).
            if let Some(rest) = strip_word(line, "* CAPABILITY") {
                caps = rest
                    .split_whitespace()
                    .take(MAX_CAPABILITIES)
                    .map(str::to_ascii_uppercase)
                    .collect();
            }
            Ok(())
        })?;
        if !done.ok() {
            return Err(self.refused("CAPABILITY", &done));
        }
        self.caps = caps;
        Ok(())
    }

    /// Logs in: AUTHENTICATE PLAIN, else AUTHENTICATE LOGIN, else the LOGIN command with a
    /// password; AUTHENTICATE XOAUTH2 or OAUTHBEARER with a token.
    fn log_in(&mut self, auth: Auth, user: &str, secret: &Password) -> Result<()> {
        let (mechanism, response, after_challenge) = match auth {
            Auth::Password => (
                "PLAIN",
                format!("\0{user}\0{}", secret.expose()),
                // PLAIN has no challenge: a `+` with text is answered with a cancel.
                "*".to_owned(),
            ),
            Auth::Xoauth2 => (
                "XOAUTH2",
                format!("user={user}\x01auth=Bearer {}\x01\x01", secret.expose()),
                String::new(),
            ),
            Auth::Oauthbearer => (
                "OAUTHBEARER",
                format!(
                    "n,a={},\x01auth=Bearer {}\x01\x01",
                    user.replace('=', "=3D").replace(',', "=2C"),
                    secret.expose()
                ),
                BASE64.encode("\x01"),
            ),
        };
        let encoded = BASE64.encode(&response);
        self.hidden.extend([
            secret.clone(),
            Password::new(BASE64.encode(secret.expose())),
            Password::new(encoded.clone()),
        ]);
        let done = if self.offers(&format!("AUTH={mechanism}")) {
            self.authenticate(
                mechanism,
                (&encoded, "[redacted]"),
                true,
                &[(&after_challenge, &after_challenge)],
            )?
        } else if auth == Auth::Password && self.offers("AUTH=LOGIN") {
            // SASL LOGIN: the user name, then the password, each after a `+`.
            let (user_b64, secret_b64) = (BASE64.encode(user), BASE64.encode(secret.expose()));
            self.authenticate(
                "LOGIN",
                (&user_b64, "[redacted: user name]"),
                false,
                &[(&secret_b64, "[redacted]")],
            )?
        } else if auth == Auth::Password && !self.offers("LOGINDISABLED") {
            let (Some(user_q), Some(secret_q)) = (quoted(user), quoted(secret.expose())) else {
                return Err(Error::new(
                    ErrorKind::AuthRefused,
                    format!(
                        "{} offers no AUTHENTICATE PLAIN, and the user name or password has \
                         characters its LOGIN command cannot carry",
                        self.server
                    ),
                ));
            };
            // The password as the command spells it, escapes and all, is hidden too.
            self.hidden.push(Password::new(secret_q.clone()));
            self.command(
                &format!("LOGIN {user_q} {secret_q}"),
                "LOGIN [redacted]",
                |_| Ok(()),
            )?
        } else {
            return Err(Error::new(
                ErrorKind::AuthRefused,
                format!(
                    "{} does not offer AUTHENTICATE {mechanism} (auth = \"{}\"); it offers: {}",
                    self.server,
                    auth.name(),
                    self.caps.join(" ")
                ),
            ));
        };
        if !done.ok() {
            return Err(Error::new(
                ErrorKind::AuthRefused,
                format!(
                    "{} refused the login for user {user:?}: {} {}",
                    self.server,
                    done.status,
                    printable(&done.text)
                ),
            ));
        }
        // Capabilities often grow after a login (SPECIAL-USE, LITERAL+, APPENDLIMIT).
        self.capability()
    }

    /// AUTHENTICATE `mechanism`: `first` is the initial response, sent in the command
    /// when the server offers SASL-IR (RFC 4959) and `in_command` allows it, else after
    /// its `+`; each later `+` is answered with the next of `then` (a refused token's
    /// reason waits for one before the NO), and past them with `*`, which cancels.
    /// Each answer comes with how the transcript shows it.
    fn authenticate(
        &mut self,
        mechanism: &str,
        first: (&str, &str),
        in_command: bool,
        then: &[(&str, &str)],
    ) -> Result<Done> {
        let tag = self.next_tag();
        let mut answers = std::collections::VecDeque::new();
        if in_command && self.offers("SASL-IR") {
            self.send_line(
                &format!("{tag} AUTHENTICATE {mechanism} {}", first.0),
                &format!("{tag} AUTHENTICATE {mechanism} {}", first.1),
            )?;
        } else {
            self.send_line(
                &format!("{tag} AUTHENTICATE {mechanism}"),
                &format!("{tag} AUTHENTICATE {mechanism}"),
            )?;
            answers.push_back(first);
        }
        answers.extend(then.iter().copied());
        for _ in 0..MAX_RESPONSES {
            let line = self.line("the answer to AUTHENTICATE")?;
            self.trace("S", &line);
            if line.starts_with('+') {
                let (answer, shown) = answers.pop_front().unwrap_or(("*", "*"));
                self.send_line(answer, shown)?;
                continue;
            }
            if let Some(done) = tagged(&line, &tag) {
                return Ok(done);
            }
        }
        Err(self.flooded("AUTHENTICATE"))
    }

    /// Appends the message to the folder, flagged `\Seen`; creates a folder named in the
    /// profile once when the server says it does not exist (`[TRYCREATE]`).
    fn append(&mut self, copy: &SentCopy, bytes: &MessageBytes, size: u64) -> Result<String> {
        if let Some(limit) = self
            .caps
            .iter()
            .find_map(|c| c.strip_prefix("APPENDLIMIT="))
            && limit.parse::<u64>().is_ok_and(|limit| size > limit)
        {
            return Err(Error::new(
                ErrorKind::InvalidData,
                format!(
                    "{} takes messages of at most {limit} octets (APPENDLIMIT); this one is \
                     {size}: not copied",
                    self.server
                ),
            ));
        }
        let folder = match &copy.folder {
            Some(folder) => folder.clone(),
            None => self.find_sent()?,
        };
        let mut done = self.append_to(&folder, bytes, size)?;
        if !done.ok()
            && copy.folder.is_some()
            && done.text.to_ascii_uppercase().starts_with("[TRYCREATE]")
        {
            let create = self.command(
                &format!("CREATE {}", quote_folder(&folder)?),
                &format!("CREATE {}", quote_folder(&folder)?),
                |_| Ok(()),
            )?;
            if !create.ok() {
                return Err(self.refused(&format!("CREATE {folder:?}"), &create));
            }
            done = self.append_to(&folder, bytes, size)?;
        }
        if !done.ok() {
            return Err(self.refused(&format!("APPEND to {folder:?}"), &done));
        }
        Ok(folder)
    }

    /// One APPEND of the message to `folder`.
    fn append_to(&mut self, folder: &str, bytes: &MessageBytes, size: u64) -> Result<Done> {
        let plus = if self.offers("LITERAL+") { "+" } else { "" };
        let tag = self.next_tag();
        let command = format!(
            "{tag} APPEND {} (\\Seen) {{{size}{plus}}}",
            quote_folder(folder)?
        );
        self.send_line(&command, &command)?;
        if plus.is_empty() {
            // A synchronizing literal: the server says `+` before the message goes, or
            // refuses it at once.
            let mut go = false;
            for _ in 0..MAX_RESPONSES {
                let line = self.line("the answer to APPEND")?;
                self.trace("S", &line);
                if line.starts_with('+') {
                    go = true;
                    break;
                }
                if let Some(done) = tagged(&line, &tag) {
                    return Ok(done);
                }
            }
            if !go {
                return Err(self.flooded("APPEND"));
            }
        }
        self.trace("C", &format!("[the message: {size} octets]"));
        let what = format!("writing the message to {}", self.server);
        let mut counted = Counted {
            inner: self.conn.writer(),
            written: 0,
        };
        let wrote = bytes
            .write_to(&mut counted)
            .map_err(|e| e.into_error())
            .and_then(|()| counted.inner.flush().map_err(|e| io_failure(&what, &e)));
        let written = counted.written;
        drop(counted);
        wrote?;
        if written != size {
            // The server counts octets: a message that changed length (an attached file
            // changed on disk) would end the literal in the wrong place. The connection
            // is dropped, so the server discards it.
            return Err(Error::new(
                ErrorKind::InvalidData,
                format!(
                    "the message changed while it was copied ({written} octets, not {size}): not copied"
                ),
            ));
        }
        self.conn.send(b"\r\n").map_err(|e| io_failure(&what, &e))?;
        for _ in 0..MAX_RESPONSES {
            let line = self.line("the answer to APPEND")?;
            self.trace("S", &line);
            if let Some(done) = tagged(&line, &tag) {
                return Ok(done);
            }
        }
        Err(self.flooded("APPEND"))
    }

    /// The folder marked `\Sent` (RFC 6154), else one named "Sent".
    fn find_sent(&mut self) -> Result<String> {
        let command = if self.offers("SPECIAL-USE") || self.offers("LIST-EXTENDED") {
            "LIST \"\" \"*\" RETURN (SPECIAL-USE)"
        } else {
            "LIST \"\" \"*\""
        };
        let (mut marked, mut named) = (None, None);
        let done = self.command(command, command, |line| {
            let Some((attributes, name)) = list_entry(line) else {
                return Ok(());
            };
            if marked.is_none() && attributes.iter().any(|a| a.eq_ignore_ascii_case("\\Sent")) {
                marked = Some(name);
            } else if named.is_none() && name == "Sent" {
                named = Some(name);
            }
            Ok(())
        })?;
        if !done.ok() {
            return Err(self.refused("LIST", &done));
        }
        marked.or(named).ok_or_else(|| {
            Error::config(format!(
                "{} has no folder marked \\Sent and none named \"Sent\": name the folder with \
                 sent_copy = {{ …, folder = \"…\" }}",
                self.server
            ))
        })
    }

    /// LOGOUT, its answer waited for briefly; a failure here changes nothing.
    fn log_out(&mut self) {
        let _ = self.command("LOGOUT", "LOGOUT", |_| Ok(()));
    }

    /// Sends `tag command` and reads to its tagged answer, giving each untagged line to
    /// `untagged`. `shown` is the command as the transcript shows it.
    fn command(
        &mut self,
        command: &str,
        shown: &str,
        mut untagged: impl FnMut(&str) -> Result<()>,
    ) -> Result<Done> {
        let tag = self.next_tag();
        self.send_line(&format!("{tag} {command}"), &format!("{tag} {shown}"))?;
        for _ in 0..MAX_RESPONSES {
            let line = self.line(&format!("the answer to {}", first_word(command)))?;
            self.trace("S", &line);
            if let Some(done) = tagged(&line, &tag) {
                return Ok(done);
            }
            if line.starts_with("* BYE") || line.starts_with("* bye") {
                return Err(Error::new(
                    ErrorKind::Temporary,
                    format!(
                        "{} closed the connection: {}",
                        self.server,
                        printable(&line)
                    ),
                ));
            }
            untagged(&line)?;
        }
        Err(self.flooded(first_word(command)))
    }

    fn next_tag(&mut self) -> String {
        self.tag += 1;
        format!("e{}", self.tag)
    }

    /// Writes `line` and CRLF; the transcript shows `shown`.
    fn send_line(&mut self, line: &str, shown: &str) -> Result<()> {
        self.trace("C", shown);
        let what = format!("writing to {}", self.server);
        self.conn
            .send(format!("{line}\r\n").as_bytes())
            .map_err(|e| io_failure(&what, &e))
    }

    /// The next response line, a literal in it read in (bounded), as text with every
    /// secret taken out.
    fn line(&mut self, what: &str) -> Result<String> {
        let what = format!("{what} from {}", self.server);
        let mut line = self
            .conn
            .read_line(MAX_LINE)
            .map_err(|e| self.wire(&what, e))?;
        while let Some(size) = literal_at_end(&line) {
            // The CRLF after the literal counts too: `line` must stay within MAX_LINE,
            // or the read below would be given a bound that wrapped below zero.
            if size.saturating_add(line.len()).saturating_add(2) >= MAX_LINE {
                return Err(self.wire(
                    &what,
                    WireError::Protocol(format!(
                        "a literal of {size} octets, more than a response may hold"
                    )),
                ));
            }
            let octets = self
                .conn
                .read_octets(size)
                .map_err(|e| self.wire(&what, e))?;
            line.extend_from_slice(b"\r\n");
            line.extend_from_slice(&octets);
            // Within MAX_LINE by the check above: at least one octet is left to read.
            let rest = self
                .conn
                .read_line(MAX_LINE.saturating_sub(line.len()))
                .map_err(|e| self.wire(&what, e))?;
            line.extend_from_slice(&rest);
        }
        Ok(self.redact(&String::from_utf8_lossy(&line)))
    }

    /// A wire failure in words.
    fn wire(&self, what: &str, e: WireError) -> Error {
        match e {
            WireError::Io(io) => io_failure(what, &io),
            WireError::Protocol(why) => Error::new(
                ErrorKind::Temporary,
                format!(
                    "{what}: the server broke the IMAP protocol: {}",
                    printable(self.redact(&why))
                ),
            ),
            WireError::PlainTextNotTls(line) => Error::new(
                ErrorKind::Temporary,
                format!(
                    "{what}: the server answered in plain text: {}",
                    self.redact(&line)
                ),
            ),
            WireError::TlsNotPlainText => Error::config(format!(
                "{what}: the server speaks TLS here: use an imaps:// URL"
            )),
        }
    }

    /// A tagged NO or BAD to `what`.
    fn refused(&self, what: &str, done: &Done) -> Error {
        Error::new(
            ErrorKind::Temporary,
            format!(
                "{} answered {what} with {} {}",
                self.server,
                done.status,
                printable(&done.text)
            ),
        )
    }

    fn flooded(&self, what: &str) -> Error {
        Error::new(
            ErrorKind::Temporary,
            format!(
                "{} sent more than {MAX_RESPONSES} responses to {what}",
                self.server
            ),
        )
    }

    /// `text` with every secret sent at login taken out, as the SMTP client does.
    fn redact(&self, text: &str) -> String {
        super::redact::redact(&self.hidden, text)
    }

    fn trace(&self, side: &str, line: &str) {
        if let Some(transcript) = self.transcript {
            transcript(side, &format!("imap: {}", printable(line)));
        }
    }
}

/// Counts what goes through, to check the literal's length.
struct Counted<W: Write> {
    inner: W,
    written: u64,
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The tagged answer `tag STATUS text`, if `line` is one.
fn tagged(line: &str, tag: &str) -> Option<Done> {
    let rest = line.strip_prefix(tag)?.strip_prefix(' ')?;
    let (status, text) = rest.split_once(' ').unwrap_or((rest, ""));
    Some(Done {
        status: status.to_ascii_uppercase(),
        text: text.to_owned(),
    })
}

/// `line` after `prefix` (ASCII case ignored) and a space.
fn strip_word<'l>(line: &'l str, prefix: &str) -> Option<&'l str> {
    let head = line.get(..prefix.len())?;
    if !head.eq_ignore_ascii_case(prefix) {
        return None;
    }
    let rest = &line[prefix.len()..];
    if rest.is_empty() {
        Some(rest)
    } else {
        rest.strip_prefix(' ')
    }
}

fn first_word(command: &str) -> &str {
    command.split(' ').next().unwrap_or(command)
}

/// The size of the literal `{N}` (or `{N+}`) that ends `line`, if it ends with one.
fn literal_at_end(line: &[u8]) -> Option<usize> {
    let inner = line.strip_suffix(b"}")?;
    let open = inner.iter().rposition(|b| *b == b'{')?;
    let digits = &inner[open + 1..];
    let digits = digits.strip_suffix(b"+").unwrap_or(digits);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// An untagged `* LIST (attributes) delimiter name`: its attributes and name (a quoted
/// string unquoted, an atom, or a literal read into the line).
fn list_entry(line: &str) -> Option<(Vec<String>, String)> {
    let rest = strip_word(line, "* LIST")?;
    let rest = rest.strip_prefix('(')?;
    let (attributes, rest) = rest.split_once(')')?;
    let rest = rest.strip_prefix(' ')?;
    // The delimiter: a quoted character or NIL.
    let rest = if let Some(after) = rest
        .strip_prefix("NIL ")
        .or_else(|| rest.strip_prefix("nil "))
    {
        after
    } else {
        let (_, after) = unquote(rest)?;
        after.strip_prefix(' ')?
    };
    let name = if rest.starts_with('"') {
        unquote(rest)?.0
    } else if let Some(newline) = rest.find("\r\n").filter(|_| rest.starts_with('{')) {
        // A literal: what follows its CRLF, up to the size it gave.
        let size: usize = rest[1..newline].trim_end_matches(['}', '+']).parse().ok()?;
        rest.get(newline + 2..newline + 2 + size)?.to_owned()
    } else {
        rest.split(' ').next()?.to_owned()
    };
    Some((
        attributes.split_whitespace().map(str::to_owned).collect(),
        name,
    ))
}

/// A quoted string at the start of `text`, unescaped, and what follows it.
fn unquote(text: &str) -> Option<(String, &str)> {
    let mut chars = text.strip_prefix('"')?.char_indices();
    let mut out = String::new();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?.1),
            '"' => return Some((out, &text[i + 2..])),
            c => out.push(c),
        }
    }
    None
}

/// `text` as an IMAP quoted string; `None` when it holds what a quoted string cannot
/// (CR, LF, NUL, or non-ASCII, which IMAP4rev1 quoted strings may not carry).
fn quoted(text: &str) -> Option<String> {
    if !text
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) || b == b'\t')
    {
        return None;
    }
    Some(format!(
        "\"{}\"",
        text.replace('\\', "\\\\").replace('"', "\\\"")
    ))
}

/// A folder name for a command (a quoted string), or why it cannot be one.
fn quote_folder(folder: &str) -> Result<String> {
    quoted(folder).ok_or_else(|| {
        Error::config(format!(
            "sent_copy: the folder {:?} has characters an IMAP quoted string cannot carry: \
             name it as the server lists it (modified UTF-7), or leave folder out",
            printable(folder)
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_entries_give_attributes_and_names() {
        let (attrs, name) =
            list_entry(r#"* LIST (\HasNoChildren \Sent) "." "Sent Items""#).unwrap();
        assert_eq!(attrs, ["\\HasNoChildren", "\\Sent"]);
        assert_eq!(name, "Sent Items");
        let (_, name) = list_entry(r#"* LIST () "/" Gesendet"#).unwrap();
        assert_eq!(name, "Gesendet");
        let (_, name) = list_entry(r#"* list (\Sent) NIL "a \"q\" b""#).unwrap();
        assert_eq!(name, "a \"q\" b");
        let (_, name) = list_entry("* LIST (\\Sent) \".\" {5}\r\nSe\"nt").unwrap();
        assert_eq!(name, "Se\"nt");
        assert!(list_entry("* LSUB () \".\" x").is_none());
    }

    #[test]
    fn literals_at_the_end_of_a_line_are_found() {
        assert_eq!(literal_at_end(b"* LIST () \".\" {12}"), Some(12));
        assert_eq!(literal_at_end(b"* LIST () \".\" {12+}"), Some(12));
        assert_eq!(literal_at_end(b"* OK {x}"), None);
        assert_eq!(literal_at_end(b"* OK fine"), None);
    }

    #[test]
    fn quoting_escapes_and_refuses_what_cannot_be_quoted() {
        assert_eq!(
            quoted(r#"Sent "old" \ x"#).unwrap(),
            r#""Sent \"old\" \\ x""#
        );
        assert!(quoted("a\r\nb").is_none());
        assert!(quoted("Gesendete Objekte é").is_none());
    }

    #[test]
    fn tagged_answers_are_told_from_others() {
        let done = tagged("e3 NO [TRYCREATE] no such folder", "e3").unwrap();
        assert_eq!(
            (done.status.as_str(), done.text.as_str()),
            ("NO", "[TRYCREATE] no such folder")
        );
        assert!(tagged("e31 OK", "e3").is_none());
        assert!(tagged("* OK e3", "e3").is_none());
    }
}
