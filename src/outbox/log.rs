//! The delivery log (`log = "syslog" | "journal" | "/path"`, `--log`): one line per
//! message outcome, msmtp's `key=value` style, written from the spine
//! ([`super::submit`] for `send`, `sendmail` and each `batch` record, [`super::flush`]
//! for each outbox entry), so every command logs alike.
//!
//! ```text
//! 2026-12-07T23:31:15Z profile=work host=smtp.example.com from=me@example.com recipients=a@example.com,b@example.com mailsize=1834 message_id=<x@example.com> status=sent smtpstatus=250 smtpmsg='2.0.0 Ok: queued as 4XyZ' exitcode=0
//! ```
//!
//! A file line starts with the time (RFC 3339, UTC); syslog and the journal stamp their
//! own. Nothing secret is in a line: no AUTH data, no token, no password, only what
//! envoi says on standard error anyway; the server's text is bounded and its control
//! characters escaped, so a hostile server cannot write a line of its own. Writing the
//! log never changes a message's outcome: a failure is a notice (a warning on stderr).

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::deliver::{Notice, Observer, Report, SentCopied};
use crate::durable::{StateAccess, open_state_file};
use crate::error::{Error, ErrorKind};
use crate::message::Prepared;
use crate::outbox::Status;
use crate::profile::{Connection, Facility, LogDest, LogSettings, Profile, Resolved, Transport};

/// The HTTPS API's key (`graph`, `gmail`) when `profile` speaks one.
fn api_of(profile: &Profile) -> Option<&'static str> {
    match &profile.transport {
        Transport::Api(api) => Some(api.service.key()),
        Transport::Smtp(_) | Transport::File { .. } => None,
    }
}

/// The local syslog daemon's socket.
#[cfg(not(target_os = "macos"))]
const SYSLOG_SOCKET: &str = "/dev/log";
/// The local syslog daemon's socket (macOS has no `/dev/log`).
#[cfg(target_os = "macos")]
const SYSLOG_SOCKET: &str = "/var/run/syslog";
/// The systemd journal's native socket.
const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";
/// The most characters of one free-text value (a server's reply, an error): a line
/// stays one readable line.
const MAX_TEXT_CHARS: usize = 400;
/// The most bytes of one syslog datagram, cut at a character's end: rsyslog takes 8 KiB
/// and syslog-ng 64 KiB, but the fields may add up to more (RFC 3164 asked for 1 KiB;
/// busybox's syslogd may take less and cuts the rest itself).
#[cfg(unix)]
const MAX_DATAGRAM: usize = 2048;
/// The most bytes of the recipients field; the rest are counted (`,+12 more`).
const MAX_RECIPIENTS_BYTES: usize = 1000;
/// How long a send to a syslog or journal socket may wait for a daemon whose queue is
/// full: the log must never hold up mail.
#[cfg(unix)]
const SOCKET_WAIT: Duration = Duration::from_secs(1);

/// Where the lines of messages sent through one connection go, and what they say of
/// it (the profile's name and its server).
#[derive(Debug, Clone)]
pub struct DeliveryLog {
    settings: LogSettings,
    profile: String,
    host: String,
    /// The HTTPS API's key (`graph`, `gmail`) when the profile speaks one.
    api: Option<&'static str>,
}

impl DeliveryLog {
    /// The log of messages sent through `connection` (`--log` or `$ENVOI_LOG` over the
    /// profile's `log` key); without a connection, the flag's alone.
    pub fn of(resolved: &Resolved, connection: Option<&Connection>) -> DeliveryLog {
        DeliveryLog {
            settings: resolved.log_for(connection.map(|c| &c.profile)),
            profile: connection.map_or_else(|| "-".to_owned(), |c| c.name.clone()),
            host: connection.map_or_else(|| "-".to_owned(), |c| host_of(&c.profile.transport)),
            api: connection.and_then(|c| api_of(&c.profile)),
        }
    }

    /// This log, its lines naming `carrier`, the profile of `connection`'s route that
    /// carried the message (or was tried last), and its server; where the lines go stays
    /// the route's.
    pub(crate) fn through(self, connection: &Connection, carrier: &str) -> DeliveryLog {
        match connection.hop(carrier) {
            Some(profile) => DeliveryLog {
                profile: carrier.to_owned(),
                host: host_of(&profile.transport),
                api: api_of(profile),
                ..self
            },
            None => self,
        }
    }

    /// Writes the line of one message; a failure to write is a notice, never an error.
    pub(crate) fn record(&self, message: &Facts, outcome: &Logged, observer: &mut dyn Observer) {
        let Some(dest) = &self.settings.dest else {
            return;
        };
        let fields = self.fields(message, outcome);
        let written = match dest {
            LogDest::Off => Ok(()),
            LogDest::File(path) => write_file(path, &fields),
            LogDest::Syslog => send_syslog(self.settings.facility, outcome.status, &fields),
            LogDest::Journal => {
                match send_journal(self.settings.facility, outcome.status, &fields) {
                    Err(e) if socket_absent(&e) => {
                        if !FELL_BACK.swap(true, Ordering::Relaxed) {
                            observer.notice(Notice::Log(Error::new(
                                ErrorKind::Unavailable,
                                format!(
                                    "log = \"journal\": there is no journal socket \
                                     ({JOURNAL_SOCKET}); logging to syslog ({SYSLOG_SOCKET}) \
                                     instead"
                                ),
                            )));
                        }
                        send_syslog(self.settings.facility, outcome.status, &fields)
                    }
                    Err(e) => Err(Error::new(
                        ErrorKind::Unavailable,
                        format!(
                            "the delivery log was not written: the journal's socket \
                             {JOURNAL_SOCKET}: {e}"
                        ),
                    )),
                    Ok(()) => Ok(()),
                }
            }
        };
        if let Err(e) = written {
            // Said once while it stays the same: a batch of 10,000 records to a log that
            // is refused must not print 10,000 warnings.
            let mut last = LAST_WARNING.lock().unwrap_or_else(PoisonError::into_inner);
            if last.as_deref() != Some(e.message()) {
                *last = Some(e.message().to_owned());
                drop(last);
                observer.notice(Notice::Log(e));
            }
        }
    }

    /// The line's fields, in order, free text bounded (quoting comes with the line).
    fn fields(&self, message: &Facts, outcome: &Logged) -> Vec<(&'static str, String)> {
        let mut fields = vec![
            ("profile", self.profile.clone()),
            ("host", self.host.clone()),
            (
                "from",
                message.from.clone().unwrap_or_else(|| "<>".to_owned()),
            ),
            ("recipients", recipients(&message.recipients)),
            ("mailsize", message.size.to_string()),
            ("message_id", bounded(&message.message_id)),
            ("status", outcome.status.as_str().to_owned()),
        ];
        if let Some(report) = outcome.report {
            if let Some((code, text)) = &report.data_reply {
                fields.push(("smtpstatus", code.to_string()));
                fields.push(("smtpmsg", bounded(text)));
            }
            if let Some(service) = report.service() {
                fields.push(("api", self.api.unwrap_or(service.service).to_owned()));
                if let Some(id) = &service.id {
                    fields.push(("request_id", bounded(id)));
                }
            }
            match report.sent_copy() {
                Some(SentCopied::Filed(folder)) => fields.push(("sent_copy", bounded(folder))),
                Some(SentCopied::Failed(e)) => {
                    fields.push(("sent_copy_error", bounded(e.message())));
                }
                None => {}
            }
        }
        if let Some(path) = outcome.saved {
            fields.push(("file", path.display().to_string()));
        }
        if let Some(queued) = outcome.outbox_id {
            fields.push(("outbox_id", queued.to_owned()));
        }
        if let Some(error) = outcome.error {
            fields.push(("errormsg", bounded(error)));
        }
        fields.push(("exitcode", outcome.exit_code.to_string()));
        fields
    }
}

/// Said once per process: the journal is absent and syslog takes its lines.
static FELL_BACK: AtomicBool = AtomicBool::new(false);

/// The last warning about the log, not said again while it is the same.
static LAST_WARNING: Mutex<Option<String>> = Mutex::new(None);

/// What a line says of the message itself.
#[derive(Debug, Clone)]
pub(crate) struct Facts {
    pub(crate) message_id: String,
    /// The envelope sender; `None` for `<>`.
    pub(crate) from: Option<String>,
    /// The envelope recipients.
    pub(crate) recipients: Vec<String>,
    /// The message's size in bytes, as sent.
    pub(crate) size: u64,
}

impl Facts {
    /// The facts of a prepared message.
    pub(crate) fn of(prepared: &Prepared) -> Facts {
        Facts {
            message_id: prepared.message_id.clone(),
            from: prepared.envelope.from().map(ToString::to_string),
            recipients: prepared
                .envelope
                .to()
                .iter()
                .map(ToString::to_string)
                .collect(),
            size: prepared.bytes.len(),
        }
    }
}

/// What a line says of the outcome.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Logged<'a> {
    pub(crate) status: Status,
    /// The exit code `send` would give for it (0 when it went well).
    pub(crate) exit_code: u8,
    /// What the server said (the final dot's reply, the API's id).
    pub(crate) report: Option<&'a Report>,
    /// Where the file transport wrote it.
    pub(crate) saved: Option<&'a Path>,
    /// The outbox entry that now holds it.
    pub(crate) outbox_id: Option<&'a str>,
    /// Why it failed (or was queued), as envoi says on stderr.
    pub(crate) error: Option<&'a str>,
}

impl<'a> Logged<'a> {
    /// A message that went well, with what the server said.
    pub(crate) fn ok(status: Status, report: Option<&'a Report>) -> Logged<'a> {
        Logged {
            status,
            exit_code: 0,
            report,
            saved: None,
            outbox_id: None,
            error: None,
        }
    }

    /// A message that failed with `error` (`reached_some`: some recipients have it).
    pub(crate) fn failed(error: &'a Error, report: Option<&'a Report>) -> Logged<'a> {
        let reached_some = report.is_some_and(|r| !r.delivered.is_empty());
        Logged {
            status: Status::of_failure(error.kind(), reached_some),
            exit_code: error.kind().exit_code(),
            report,
            saved: None,
            outbox_id: None,
            error: Some(error.message()),
        }
    }
}

/// The server a profile sends to, as a line names it: the SMTP host, the HTTPS API's
/// host, or `file` for the file transport.
fn host_of(transport: &Transport) -> String {
    match transport {
        Transport::Smtp(smtp) => smtp.host.clone(),
        Transport::Api(api) => url::Url::parse(&api.api_url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_else(|| api.service.key().to_owned()),
        Transport::File { .. } => "file".to_owned(),
    }
}

/// The recipients, comma-separated, at most [`MAX_RECIPIENTS_BYTES`] of them; the rest
/// counted.
fn recipients(all: &[String]) -> String {
    let mut out = String::new();
    for (i, address) in all.iter().enumerate() {
        if !out.is_empty() && out.len() + address.len() > MAX_RECIPIENTS_BYTES {
            out.push_str(&format!(",+{} more", all.len() - i));
            break;
        }
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(address);
    }
    out
}

/// At most [`MAX_TEXT_CHARS`] characters of `text`, `…` marking a cut.
fn bounded(text: &str) -> String {
    match text.char_indices().nth(MAX_TEXT_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// `key=value` pairs joined by spaces, msmtp's way: a value with a space, a quote, a
/// backslash or a control character goes in single quotes, with `\'`, `\\` and `\xNN`
/// (or `\u{…}`) inside, so no value can end the line or fake a field.
fn line(fields: &[(&'static str, String)]) -> String {
    let mut out = String::new();
    for (key, value) in fields {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(key);
        out.push('=');
        out.push_str(&quoted(value));
    }
    out
}

/// `value`, bare when that is safe, else single-quoted and escaped.
fn quoted(value: &str) -> String {
    let bare = !value.is_empty()
        && value
            .chars()
            .all(|c| !c.is_control() && !c.is_whitespace() && !matches!(c, '\'' | '"' | '\\'));
    if bare {
        value.to_owned()
    } else {
        format!("'{}'", escaped(value, true))
    }
}

/// `value` with its control characters and line breaks (and, `in_quotes`, `'` and `\`)
/// escaped: `\x0d`, `\u{2028}`, `\'`.
fn escaped(value: &str, in_quotes: bool) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\'' | '\\' if in_quotes => {
                out.push('\\');
                out.push(c);
            }
            ' ' => out.push(' '),
            c if (c as u32) < 0x80 && (c.is_control() || c.is_whitespace()) => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            // Format characters too: bidi overrides and zero-width ones would let a
            // server's reply reorder or hide text in a terminal showing the log.
            c if c.is_control() || c.is_whitespace() || is_format(c) => {
                out.push_str(&format!("\\u{{{:x}}}", c as u32));
            }
            c => out.push(c),
        }
    }
    out
}

/// Unicode's invisible format characters that change how text around them shows: the
/// bidirectional controls, zero-width ones and the BOM.
fn is_format(c: char) -> bool {
    matches!(
        c,
        '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}'
    )
}

/// Appends one line to the log file, in one `write` to a file opened `O_APPEND`, so
/// lines of envoi processes writing at once never mix. The file is opened as envoi's
/// state files are ([`open_state_file`]): created 0600, never through a symbolic link,
/// refused when it has another name, another owner or others can write it.
fn write_file(path: &Path, fields: &[(&'static str, String)]) -> Result<(), Error> {
    let text = format!("{} {}\n", rfc3339(SystemTime::now()), line(fields));
    let not_logged = |e: String| {
        Error::new(
            ErrorKind::Unavailable,
            format!("the delivery log was not written: {e}"),
        )
    };
    let mut opened = open_state_file("the log file (log, --log)", path, StateAccess::Append)
        .map_err(|e| not_logged(e.message().to_owned()))?;
    let written = opened
        .file
        .write(text.as_bytes())
        .map_err(|e| not_logged(format!("{}: {e}", path.display())))?;
    if written != text.len() {
        return Err(not_logged(format!(
            "{}: only {written} of {} bytes were written (is the disk full?)",
            path.display(),
            text.len()
        )));
    }
    if let Some(mode) = opened.tightened_from {
        return Err(Error::new(
            ErrorKind::Config,
            format!(
                "the log file {} could be read by others (mode {mode:o}); it is 0600 now",
                path.display()
            ),
        ));
    }
    Ok(())
}

/// The syslog severity of an outcome: info when it went (or the outbox owns it), warning
/// when it may still go, err when it failed.
#[cfg(unix)]
fn severity(status: Status) -> u8 {
    match status {
        Status::Sent
        | Status::Saved
        | Status::Queued
        | Status::Duplicate
        | Status::Suppressed
        | Status::DryRun => 6,
        Status::Partial | Status::Deferred | Status::Unknown => 4,
        Status::Refused | Status::Invalid | Status::Failed => 3,
    }
}

/// One RFC 3164 datagram to `/dev/log`: `<PRI>envoi[PID]: line`. No timestamp: the
/// daemon stamps the line itself (RFC 3164 §4.3.1), in the time zone it is set to.
#[cfg(unix)]
fn send_syslog(
    facility: Facility,
    status: Status,
    fields: &[(&'static str, String)],
) -> Result<(), Error> {
    let priority = u16::from(facility.code()) * 8 + u16::from(severity(status));
    let mut datagram = format!(
        "<{priority}>envoi[{}]: {}",
        std::process::id(),
        line(fields)
    );
    if datagram.len() > MAX_DATAGRAM {
        let mut end = MAX_DATAGRAM;
        while !datagram.is_char_boundary(end) {
            end -= 1;
        }
        datagram.truncate(end);
    }
    send_datagram(SYSLOG_SOCKET, datagram.as_bytes()).map_err(|e| {
        Error::new(
            ErrorKind::Unavailable,
            format!(
                "the delivery log was not written: syslog's socket {SYSLOG_SOCKET}: {e} \
                 (is a syslog daemon running? else set log to a file)"
            ),
        )
    })
}

/// The systemd journal's native protocol: one datagram of `KEY=value\n` fields (values
/// hold no newline: they are escaped), MESSAGE the line, the ENVOI_* fields each value.
#[cfg(unix)]
fn send_journal(
    facility: Facility,
    status: Status,
    fields: &[(&'static str, String)],
) -> Result<(), std::io::Error> {
    let mut datagram = format!(
        "MESSAGE={}\nPRIORITY={}\nSYSLOG_FACILITY={}\nSYSLOG_IDENTIFIER=envoi\nSYSLOG_PID={}\n",
        line(fields),
        severity(status),
        facility.code(),
        std::process::id()
    );
    for (key, value) in fields {
        datagram.push_str(&format!(
            "ENVOI_{}={}\n",
            key.to_ascii_uppercase(),
            escaped(value, false)
        ));
    }
    send_datagram(JOURNAL_SOCKET, datagram.as_bytes())
}

/// Sends one datagram, waiting at most [`SOCKET_WAIT`] for room in the daemon's queue;
/// once a wait ran out, later datagrams of this process do not wait at all (a full
/// queue fails them at once): a wedged daemon must cost a batch one second, not one
/// second a record.
#[cfg(unix)]
fn send_datagram(socket: &str, bytes: &[u8]) -> std::io::Result<()> {
    static WEDGED: AtomicBool = AtomicBool::new(false);
    let sock = std::os::unix::net::UnixDatagram::unbound()?;
    if WEDGED.load(Ordering::Relaxed) {
        sock.set_nonblocking(true)?;
    } else {
        sock.set_write_timeout(Some(SOCKET_WAIT))?;
    }
    let sent = sock.send_to(bytes, socket).map(|_| ());
    if let Err(e) = &sent
        && matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        )
    {
        WEDGED.store(true, Ordering::Relaxed);
    }
    sent
}

#[cfg(not(unix))]
fn send_syslog(_: Facility, _: Status, _: &[(&'static str, String)]) -> Result<(), Error> {
    Err(Error::new(
        ErrorKind::Unavailable,
        "the delivery log was not written: syslog is not available on this platform; set \
         log to a file",
    ))
}

#[cfg(not(unix))]
fn send_journal(_: Facility, _: Status, _: &[(&'static str, String)]) -> std::io::Result<()> {
    Err(std::io::ErrorKind::NotFound.into())
}

/// Whether a send failed because no one listens there (no journald on this machine).
fn socket_absent(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
    )
}

/// `time` as RFC 3339 in UTC, to the second: `2026-12-07T23:31:15Z`.
pub(crate) fn rfc3339(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days, for days since 1970-01-01 (never negative here).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc() {
        let at = |secs| rfc3339(UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_796_686_275), "2026-12-07T23:31:15Z");
    }

    #[test]
    fn values_cannot_break_the_line() {
        let fields = vec![
            ("smtpmsg", "2.0.0 Ok\r\nFAKE status=sent".to_owned()),
            ("errormsg", "it's \\ here\u{2028}".to_owned()),
            ("from", "a@example.com".to_owned()),
            ("from", String::new()),
        ];
        let text = line(&fields);
        assert_eq!(
            text,
            "smtpmsg='2.0.0 Ok\\x0d\\x0aFAKE status=sent' errormsg='it\\'s \\\\ here\\u{2028}' \
             from=a@example.com from=''"
        );
        assert!(!text.contains('\n') && !text.contains('\r'));
    }

    #[test]
    fn long_values_are_bounded() {
        assert_eq!(
            bounded(&"x".repeat(1000)).chars().count(),
            MAX_TEXT_CHARS + 1
        );
        let many: Vec<String> = (0..200).map(|i| format!("user{i}@example.com")).collect();
        let field = recipients(&many);
        assert!(field.len() < MAX_RECIPIENTS_BYTES + 20, "{}", field.len());
        assert!(field.ends_with(" more"), "{field}");
    }
}
