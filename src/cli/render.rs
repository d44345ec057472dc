//! What envoi prints: one result line (or `--json` object) on standard output, notices
//! and errors on standard error as `envoi: …`.
//!
//! The `--json` shapes are the report types below (like ripgrep's `jsont.rs`): every
//! object has a `status` from [`Status`], and a test pins the README's examples to them.

use std::borrow::Cow;
use std::io::{self, Write};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use envoi::deliver::{
    ApiCheck, Delivery, Notice, Observer, Probe, RcptReply, Report, SentCopied, ServerReport,
};
use envoi::error::{Error, Result};
use envoi::message::{Prepared, StreamError};
use envoi::outbox::idempotency::{FirstSend, FirstStatus};
use envoi::outbox::submit::Submitted;
use envoi::outbox::{EntryOutcome, EntryState, FlushSummary, Queued, Status as Of};
use envoi::profile::Security;
use serde::Serialize;

/// How `envoi send` (or sendmail mode) ended well.
#[derive(Debug)]
pub enum Outcome {
    /// Sent or saved.
    Delivered(Delivery),
    /// `--queue`: written to the outbox; the first attempt failed temporarily, so envoi
    /// owns the retry (`envoi outbox flush`).
    Queued(Queued),
    /// `--idempotency-key` seen before: nothing was sent this time.
    Duplicate(FirstSend),
    /// `--dry-run`: built, not sent.
    DryRun(Prepared),
    /// `--lint`: built and checked, not sent.
    Linted {
        /// The message checked.
        prepared: Prepared,
        /// What may junk or bounce it, in words.
        findings: Vec<String>,
    },
}

impl From<Submitted> for Outcome {
    fn from(submitted: Submitted) -> Outcome {
        match submitted {
            Submitted::Delivered(delivery) => Outcome::Delivered(delivery),
            Submitted::Queued(queued) => Outcome::Queued(queued),
            Submitted::Duplicate(first) => Outcome::Duplicate(first),
        }
    }
}

/// The `status` of every JSON object envoi prints: what became of a message, in the
/// library's one vocabulary ([`Outcome`]), or what else a command did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Message(envoi::outbox::Status),
    DryRun,
    Linted,
    Error,
    Dropped,
    Ok,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Message(status) => status.as_str(),
            Status::DryRun => "dry_run",
            Status::Linted => "linted",
            Status::Error => "error",
            Status::Dropped => "dropped",
            Status::Ok => "ok",
        }
    }
}

impl Serialize for Status {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// The result of `envoi send --json`.
#[derive(Debug, Serialize)]
struct SendReport<'a> {
    status: Status,
    message_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    envelope: Option<EnvelopeReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    server: Option<ServerReply<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    recipients: Option<Vec<RecipientReport<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    attempts: Option<u32>,
    /// The HTTPS mail API's id for the message (Graph's `request-id`, Gmail's `id`).
    #[serde(skip_serializing_if = "Option::is_none")]
    service_id: Option<&'a str>,
    /// The profile of a route (`[routes]`) that carried the message.
    #[serde(skip_serializing_if = "Option::is_none")]
    route: Option<&'a str>,
    /// With rules by recipient domain: each route's recipients and outcome.
    #[serde(skip_serializing_if = "Option::is_none")]
    routes: Option<Vec<PartReport<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<&'a Path>,
    #[serde(skip_serializing_if = "Option::is_none")]
    outbox_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    first_status: Option<FirstStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    findings: Option<&'a [String]>,
    /// The copy in the Sent folder (`sent_copy`), when one was made or tried.
    #[serde(skip_serializing_if = "Option::is_none")]
    sent_copy: Option<SentCopyReport<'a>>,
    /// What went wrong without failing the send (as stderr's warnings say it).
    #[serde(skip_serializing_if = "Option::is_none")]
    warnings: Option<Vec<String>>,
}

/// The copy of a sent message in the Sent folder: `filed` with its folder, or `failed`
/// with why.
#[derive(Debug, Serialize)]
struct SentCopyReport<'a> {
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    folder: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
}

impl<'a> SentCopyReport<'a> {
    fn of(copied: &'a SentCopied) -> SentCopyReport<'a> {
        match copied {
            SentCopied::Filed(folder) => SentCopyReport {
                status: "filed",
                folder: Some(folder),
                message: None,
            },
            SentCopied::Failed(e) => SentCopyReport {
                status: "failed",
                folder: None,
                message: Some(e.message()),
            },
        }
    }
}

impl<'a> SendReport<'a> {
    fn new(status: Status, message_id: &'a str) -> SendReport<'a> {
        SendReport {
            status,
            message_id,
            envelope: None,
            server: None,
            recipients: None,
            attempts: None,
            service_id: None,
            route: None,
            routes: None,
            path: None,
            outbox_id: None,
            reason: None,
            first_status: None,
            message: None,
            findings: None,
            sent_copy: None,
            warnings: None,
        }
    }

    fn of(status: Status, prepared: &'a Prepared) -> SendReport<'a> {
        SendReport {
            envelope: Some(EnvelopeReport::of(prepared)),
            ..SendReport::new(status, &prepared.message_id)
        }
    }
}

#[derive(Debug, Serialize)]
struct EnvelopeReport {
    from: Option<String>,
    to: Vec<String>,
}

impl EnvelopeReport {
    fn of(prepared: &Prepared) -> EnvelopeReport {
        EnvelopeReport {
            from: prepared.envelope.from().map(ToString::to_string),
            to: prepared
                .envelope
                .to()
                .iter()
                .map(ToString::to_string)
                .collect(),
        }
    }
}

#[derive(Debug, Serialize)]
struct ServerReply<'a> {
    code: u16,
    message: &'a str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "snake_case")]
enum RecipientStatus {
    Delivered,
    Refused,
}

#[derive(Debug, Serialize)]
struct RecipientReport<'a> {
    address: &'a str,
    status: RecipientStatus,
    code: u16,
    message: &'a str,
}

/// Each recipient of `report`, delivered ones first.
fn recipients(report: &Report) -> Vec<RecipientReport<'_>> {
    let delivered = report
        .delivered
        .iter()
        .map(|r| RecipientReport::of(RecipientStatus::Delivered, r));
    let refused = report
        .refused
        .iter()
        .map(|r| RecipientReport::of(RecipientStatus::Refused, r));
    delivered.chain(refused).collect()
}

impl RecipientReport<'_> {
    fn of(status: RecipientStatus, reply: &RcptReply) -> RecipientReport<'_> {
        RecipientReport {
            address: &reply.address,
            status,
            code: reply.code,
            message: &reply.message,
        }
    }
}

/// The error object of `--json`.
#[derive(Debug, Serialize)]
struct ErrorReport<'a> {
    status: Status,
    exit_code: u8,
    http_status: u16,
    kind: &'static str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    recipients: Option<Vec<RecipientReport<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    attempts: Option<u32>,
    /// The profile of a route (`[routes]`) tried last.
    #[serde(skip_serializing_if = "Option::is_none")]
    route: Option<&'a str>,
    /// With rules by recipient domain: each route's recipients and outcome.
    #[serde(skip_serializing_if = "Option::is_none")]
    routes: Option<Vec<PartReport<'a>>>,
}

/// One route's part of a message sent by rules of recipient domain.
#[derive(Debug, Serialize)]
struct PartReport<'a> {
    route: &'a str,
    recipients: &'a [String],
    status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a str>,
}

/// Each route's part of `report`, when it went by rules of recipient domain.
fn parts(report: &Report) -> Option<Vec<PartReport<'_>>> {
    (!report.parts().is_empty()).then(|| {
        report
            .parts()
            .iter()
            .map(|part| PartReport {
                route: &part.route,
                recipients: &part.recipients,
                status: match &part.error {
                    None => Status::Message(Of::Sent),
                    Some(e) => Status::Message(Of::of_failure(e.kind(), false)),
                },
                kind: part.error.as_ref().map(|e| e.kind().name()),
                message: part.error.as_ref().map(Error::message),
            })
            .collect()
    })
}

fn error_report<'a>(err: &'a Error, report: &'a Report) -> ErrorReport<'a> {
    let kind = err.kind();
    let tried = report.attempts > 0;
    ErrorReport {
        status: Status::Error,
        exit_code: kind.exit_code(),
        http_status: kind.http_status(),
        kind: kind.name(),
        message: err.message(),
        recipients: tried.then(|| recipients(report)),
        attempts: tried.then_some(report.attempts),
        route: report.route(),
        routes: parts(report),
    }
}

/// The `--json` report of a success. A dry run's message is put together in memory
/// here, attached files and all (once, the only whole copy): JSON needs it as one string.
/// An attached file that cannot be read then is the error (66).
fn send_report(outcome: &Outcome) -> Result<SendReport<'_>> {
    Ok(match outcome {
        Outcome::Delivered(delivery @ Delivery::Sent { prepared, report }) => {
            let status = Status::Message(Of::of_delivery(delivery));
            let (code, message) = report
                .data_reply
                .as_ref()
                .map_or((0, ""), |(code, text)| (*code, text.as_str()));
            SendReport {
                server: Some(ServerReply { code, message }),
                recipients: Some(recipients(report)),
                attempts: Some(report.attempts),
                service_id: report.service().and_then(|s| s.id.as_deref()),
                route: report.route(),
                routes: parts(report),
                sent_copy: report.sent_copy().map(SentCopyReport::of),
                warnings: match report.sent_copy() {
                    Some(SentCopied::Failed(e)) => Some(vec![sent_copy_warning(e)]),
                    _ => None,
                },
                ..SendReport::of(status, prepared)
            }
        }
        Outcome::Delivered(Delivery::Saved { prepared, path }) => SendReport {
            path: Some(path),
            ..SendReport::of(Status::Message(Of::Saved), prepared)
        },
        Outcome::Queued(Queued {
            prepared,
            id,
            reason,
        }) => SendReport {
            outbox_id: Some(id),
            reason: Some(reason),
            ..SendReport::of(Status::Message(Of::Queued), prepared)
        },
        Outcome::Duplicate(first) => SendReport {
            first_status: Some(first.status),
            ..SendReport::new(Status::Message(Of::Duplicate), &first.message_id)
        },
        Outcome::DryRun(prepared) => SendReport {
            // Moved into the String, not copied, unless it is not UTF-8 (sendmail mode).
            message: Some(Cow::Owned(
                String::from_utf8(prepared.bytes.to_vec()?)
                    .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
            )),
            ..SendReport::of(Status::DryRun, prepared)
        },
        Outcome::Linted { prepared, findings } => SendReport {
            findings: Some(findings),
            ..SendReport::of(Status::Linted, prepared)
        },
    })
}

/// Prints a success. A closed standard output (`| head`) is not an error; an attached
/// file that cannot be read for a dry run's message is (66).
pub fn print_outcome(outcome: &Outcome, as_json: bool) -> Result<()> {
    let mut out = io::stdout().lock();
    let result = if as_json {
        write_json(&mut out, &send_report(outcome)?).map_err(StreamError::Sink)
    } else {
        write_human(&mut out, outcome)
    };
    match result {
        Err(StreamError::Source(e)) => return Err(e),
        Err(StreamError::Sink(e)) if e.kind() != io::ErrorKind::BrokenPipe => {
            warning(&format!("cannot write the result: {e}"));
        }
        _ => {}
    }
    Ok(())
}

/// A success in words; a dry run writes its message, attached files streamed from
/// their files.
fn write_human(out: &mut impl Write, outcome: &Outcome) -> std::result::Result<(), StreamError> {
    let written: io::Result<()> = match outcome {
        Outcome::Delivered(Delivery::Sent { prepared, report }) => {
            for r in &report.refused {
                warning(&format!(
                    "not delivered to {} ({} {})",
                    r.address, r.code, r.message
                ));
            }
            let to: Vec<&str> = report
                .delivered
                .iter()
                .map(|r| r.address.as_str())
                .collect();
            let line = match report.service() {
                Some(receipt) => writeln!(
                    out,
                    "sent {} to {}: accepted by {}{}",
                    prepared.message_id,
                    to.join(", "),
                    receipt.service,
                    receipt
                        .id
                        .as_deref()
                        .map(|id| format!(" (id {id})"))
                        .unwrap_or_default()
                ),
                None => {
                    let (code, reply) = report.data_reply.clone().unwrap_or_default();
                    writeln!(
                        out,
                        "sent {} to {} ({code} {reply}){}",
                        prepared.message_id,
                        to.join(", "),
                        report
                            .route()
                            .map(|route| format!(" through profile {route}"))
                            .unwrap_or_default()
                    )
                }
            };
            line.and_then(|()| {
                report.parts().iter().try_for_each(|part| {
                    writeln!(
                        out,
                        "  through profile {}: {}",
                        part.route,
                        part.recipients.join(", ")
                    )
                })
            })
        }
        Outcome::Delivered(Delivery::Saved { prepared, path }) => {
            writeln!(out, "saved {} to {}", prepared.message_id, path.display())
        }
        Outcome::Queued(Queued {
            prepared,
            id,
            reason,
        }) => {
            eprintln!("envoi: not sent yet: {reason}");
            writeln!(out, "queued {} as outbox entry {id}", prepared.message_id)
        }
        Outcome::Duplicate(FirstSend { message_id, status }) => {
            let status = Of::from(*status);
            writeln!(
                out,
                "duplicate: already {status} as {message_id}; nothing sent"
            )
        }
        Outcome::DryRun(prepared) => {
            // The envelope as JSON values: `"a@x"` or `null`, then `["b@y"]`.
            let envelope = EnvelopeReport::of(prepared);
            eprintln!(
                "envoi: dry run: from {} to {}; nothing was sent",
                serde_json::to_string(&envelope.from).unwrap_or_default(),
                serde_json::to_string(&envelope.to).unwrap_or_default()
            );
            return prepared.bytes.write_to(out);
        }
        Outcome::Linted { prepared, findings } => {
            for finding in findings {
                eprintln!("envoi: lint: {finding}");
            }
            writeln!(
                out,
                "lint: {} for {}; nothing was sent",
                match findings.len() {
                    0 => "no findings".to_owned(),
                    1 => "1 finding".to_owned(),
                    n => format!("{n} findings"),
                },
                prepared.message_id
            )
        }
    };
    Ok(written?)
}

fn write_json(out: &mut impl Write, value: &impl Serialize) -> io::Result<()> {
    serde_json::to_writer(&mut *out, value)?;
    writeln!(out)
}

/// Prints an error on standard error and, with `--json`, as an object on standard output.
/// `report` tells what happened to each recipient before the failure.
pub fn print_error(err: &Error, report: &Report, as_json: bool) {
    eprintln!("envoi: error: {err}");
    if as_json {
        let _ = write_json(&mut io::stdout().lock(), &error_report(err, report));
    }
}

/// The effective recipient policy, one rule a line: its key, value and where it is
/// written (`--lint`, `envoi check`).
pub fn policy_lines(policy: &envoi::profile::RecipientPolicy) -> Vec<String> {
    policy
        .rules()
        .into_iter()
        .map(|(key, value, origin)| format!("{key} {value} ({origin})"))
        .collect()
}

/// The warning of a copy in Sent that was not made: on stderr and in `--json`'s
/// `warnings`.
pub fn sent_copy_warning(error: &Error) -> String {
    format!("the message was sent, but its copy in the Sent folder was not made: {error}")
}

/// A warning on standard error.
pub fn warning(text: &str) {
    eprintln!("envoi: warning: {text}");
}

/// One line of the `-v` SMTP dialogue on standard error.
pub fn transcript(side: &str, line: &str) {
    eprintln!("envoi: {side}: {line}");
}

/// Prints delivery notices on standard error as they happen.
pub struct Notices;

impl Observer for Notices {
    fn notice(&mut self, notice: Notice) {
        match notice {
            Notice::Retrying {
                reason,
                wait,
                next_attempt,
                attempts,
            } => eprintln!(
                "envoi: {reason}; retrying in {:.1} s (attempt {next_attempt} of {attempts})",
                wait.as_secs_f64()
            ),
            Notice::NotRecorded(e) => warning(&format!("delivered, but could not record it: {e}")),
            Notice::Log(e) => warning(e.message()),
            Notice::FailingOver {
                route,
                reason,
                next,
            } => warning(&format!(
                "profile {route} did not take the message ({reason}); trying profile {next}"
            )),
            Notice::DsnNotOffered { server } => warning(&format!(
                "{server} does not offer DSN: sent without a request for delivery status \
                 notifications (a --delivery-receipt is then only its Return-Receipt-To header)"
            )),
            Notice::SentCopyFailed(e) => warning(&sent_copy_warning(&e)),
            Notice::PasswordWithoutTls { server } => warning(&format!(
                "the password goes to {server} without TLS (allow_plaintext_auth = true)"
            )),
        }
    }
}

/// One entry of `envoi outbox list --json`: its id and its state.
#[derive(Debug, Serialize)]
struct ListedEntry<'a> {
    id: &'a str,
    /// `queued`, or `failed` for an entry in `failed/`.
    status: Status,
    #[serde(flatten)]
    state: &'a EntryState,
}

/// `envoi outbox list` (`--failed`: of `failed/`): one line per entry, or a JSON array.
pub fn print_entries(entries: &[(String, EntryState)], failed: bool, as_json: bool) {
    let mut out = io::stdout().lock();
    if as_json {
        let status = Status::Message(if failed { Of::Failed } else { Of::Queued });
        let list: Vec<ListedEntry> = entries
            .iter()
            .map(|(id, state)| ListedEntry { id, status, state })
            .collect();
        let _ = write_json(&mut out, &list);
        return;
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    for (id, s) in entries {
        let _ = writeln!(
            out,
            "{id}  age {}  attempts {}  to {}  {}",
            human_age(now.saturating_sub(s.queued_at)),
            s.attempts,
            s.pending.join(", "),
            s.last_error.as_deref().unwrap_or("not tried yet")
        );
    }
}

fn human_age(secs: u64) -> String {
    match secs {
        0..120 => format!("{secs}s"),
        120..7200 => format!("{}m", secs / 60),
        7200..172_800 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    }
}

/// The result of `envoi outbox flush --json`.
#[derive(Debug, Default, Serialize)]
struct FlushReport<'a> {
    sent: Vec<FlushedEntry<'a>>,
    deferred: Vec<FlushedEntry<'a>>,
    failed: Vec<FlushedEntry<'a>>,
    skipped: usize,
}

#[derive(Debug, Serialize)]
struct FlushedEntry<'a> {
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

/// `envoi outbox flush`: one line per entry attempted and a summary, or one JSON object.
pub fn print_flush(summary: &FlushSummary, as_json: bool) {
    for (id, e) in &summary.damaged {
        warning(&format!("skipping outbox entry {id}: {e}"));
    }
    let mut out = io::stdout().lock();
    let mut report = FlushReport {
        skipped: summary.skipped,
        ..FlushReport::default()
    };
    for (id, outcome) in &summary.entries {
        let (list, reason) = match outcome {
            EntryOutcome::Sent => (&mut report.sent, None),
            EntryOutcome::Deferred(e) => (&mut report.deferred, Some(e.message())),
            EntryOutcome::Failed(e) => (&mut report.failed, Some(e.message())),
        };
        list.push(FlushedEntry { id, reason });
        if !as_json {
            let _ = match outcome {
                EntryOutcome::Sent => writeln!(out, "sent {id}"),
                EntryOutcome::Deferred(e) => writeln!(out, "deferred {id}: {e}"),
                EntryOutcome::Failed(e) => writeln!(out, "failed {id}: {e} (kept in failed/)"),
            };
        }
    }
    let _ = if as_json {
        write_json(&mut out, &report)
    } else {
        writeln!(
            out,
            "flush: {} sent, {} deferred, {} failed, {} skipped (locked or not due)",
            report.sent.len(),
            report.deferred.len(),
            report.failed.len(),
            report.skipped
        )
    };
}

/// The result of `envoi check --json`.
#[derive(Debug, Serialize)]
struct CheckReport<'a> {
    status: Status,
    server: &'a str,
    address: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    proxy: Option<&'a str>,
    tls: Option<TlsReport<'a>>,
    extensions: &'a [String],
    size: Option<u64>,
    login: bool,
    certificate: Option<CertificateJson<'a>>,
    /// What a person should act on soon (a certificate about to expire); the same words
    /// as the human output's warnings.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
}

#[derive(Debug, Serialize)]
struct CertificateJson<'a> {
    subject: &'a str,
    issuer: &'a str,
    names: &'a [String],
    expires: &'a str,
    days_left: i64,
    sha256: &'a str,
    pinned: bool,
}

/// Whole days left ([`days_left`]) in words: "in 1 day", never "in 1 days" (trial 1.6).
fn in_days(days: i64) -> String {
    match days {
        ..0 => "expired".to_owned(),
        0 => "in less than a day".to_owned(),
        1 => "in 1 day".to_owned(),
        n => format!("in {n} days"),
    }
}

/// A certificate's end, as a warning says it: "expires in 1 day", "has expired".
fn expiry_words(days: i64) -> String {
    if days < 0 {
        "has expired".to_owned()
    } else {
        format!("expires {}", in_days(days))
    }
}

/// Whole days until `not_after` (negative once expired).
fn days_left(not_after: i64) -> i64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    (not_after - now).div_euclid(86_400)
}

/// A certificate that expires sooner than this gets a warning.
const EXPIRY_WARNING_DAYS: i64 = 14;

/// The warnings of a check: the certificate about to expire, if it is; TLS offered but
/// not used (`security = "none"` on a server that offers STARTTLS).
fn check_warnings(report: &ServerReport) -> Vec<String> {
    let mut warnings: Vec<String> = report
        .certificate
        .iter()
        .filter(|c| days_left(c.not_after) < EXPIRY_WARNING_DAYS)
        .map(|c| {
            format!(
                "the server's certificate {} ({})",
                expiry_words(days_left(c.not_after)),
                c.expires
            )
        })
        .collect();
    if report.tls.is_none()
        && report
            .extensions
            .iter()
            .any(|e| e.eq_ignore_ascii_case("STARTTLS"))
    {
        warnings.push(
            "the server offers STARTTLS but the profile has security = \"none\": mail \
             crosses the network in clear text; set security = \"starttls\""
                .into(),
        );
    }
    warnings
}

#[derive(Debug, Serialize)]
struct TlsReport<'a> {
    version: &'a str,
    cipher: &'a str,
}

/// `envoi check`: what the server offers, one line each, or one JSON object.
pub fn print_check(report: &ServerReport, as_json: bool) {
    let mut out = io::stdout().lock();
    if as_json {
        let value = CheckReport {
            status: Status::Ok,
            server: &report.server,
            address: report.address.as_deref(),
            proxy: report.proxy.as_deref(),
            tls: report
                .tls
                .as_ref()
                .map(|(version, cipher)| TlsReport { version, cipher }),
            extensions: &report.extensions,
            size: report.size,
            login: report.logged_in,
            certificate: report.certificate.as_ref().map(|c| CertificateJson {
                subject: &c.subject,
                issuer: &c.issuer,
                names: &c.names,
                expires: &c.expires,
                days_left: days_left(c.not_after),
                sha256: &c.sha256,
                pinned: c.pinned,
            }),
            warnings: check_warnings(report),
        };
        let _ = write_json(&mut out, &value);
        return;
    }
    let tls = match &report.tls {
        Some((version, cipher)) => {
            let trust = if report.certificate.as_ref().is_some_and(|c| c.pinned) {
                "certificate pinned (tls_fingerprint)"
            } else {
                "certificate verified"
            };
            format!("{version}, {cipher}; {trust}")
        }
        None => "none (security = \"none\")".to_owned(),
    };
    let address = report.address.as_deref().unwrap_or("?");
    let mut lines = vec![match &report.proxy {
        // The address connected to is the proxy's: its URL says it.
        Some(proxy) => format!("server   {} (through the proxy {proxy})", report.server),
        None => format!("server   {} ({address})", report.server),
    }];
    lines.push(format!("tls      {tls}"));
    if let Some(c) = &report.certificate {
        let left = days_left(c.not_after);
        lines.push(format!("cert     {}", c.subject));
        lines.push(format!("         issued by {}", c.issuer));
        lines.push(format!("         for {}", c.names.join(", ")));
        lines.push(format!(
            "         expires {} ({})",
            c.expires,
            in_days(left)
        ));
        lines.push(format!("         sha256 {}", c.sha256));
    }
    for text in check_warnings(report) {
        warning(&text);
    }
    let size = report
        .size
        .filter(|s| *s > 0)
        .map_or("not announced".to_owned(), |s| format!("{s} octets"));
    lines.push(format!("offers   {}", report.extensions.join(", ")));
    lines.push(format!("size     {size}"));
    let login = if report.logged_in {
        "ok"
    } else {
        "none configured"
    };
    lines.push(format!("login    {login}"));
    lines.push("result   the connection works; no mail was sent".to_owned());
    let _ = writeln!(out, "{}", lines.join("\n"));
}

/// The result of `envoi check --json` on an HTTPS mail API profile.
#[derive(Debug, Serialize)]
struct ApiCheckReport<'a> {
    status: Status,
    service: &'a str,
    url: &'a str,
    mailbox: Option<&'a str>,
    proxy: Option<&'a str>,
    login: bool,
    finding: &'a str,
}

/// `envoi check` on an HTTPS mail API: what the service said, or one JSON object.
pub fn print_api_check(report: &ApiCheck, as_json: bool) {
    let mut out = io::stdout().lock();
    if as_json {
        let _ = write_json(
            &mut out,
            &ApiCheckReport {
                status: Status::Ok,
                service: report.service,
                url: &report.url,
                mailbox: report.mailbox.as_deref(),
                proxy: report.proxy.as_deref(),
                login: true,
                finding: &report.finding,
            },
        );
        return;
    }
    let mut lines = vec![
        format!("service  {}", report.service),
        match &report.proxy {
            Some(proxy) => format!("url      {} (through the proxy {proxy})", report.url),
            None => format!("url      {}", report.url),
        },
    ];
    if let Some(mailbox) = &report.mailbox {
        lines.push(format!("mailbox  {mailbox}"));
    }
    lines.push(format!("login    ok: {}", report.finding));
    lines.push("result   the token works; no mail was sent".to_owned());
    let _ = writeln!(out, "{}", lines.join("\n"));
}

/// One line of `envoi check --probe --json`.
#[derive(Debug, Serialize)]
struct ProbeJson<'a> {
    port: u16,
    security: &'static str,
    works: bool,
    detail: String,
    extensions: &'a [String],
}

/// `envoi check --probe`: what each port and way of speaking gave, and the profile lines
/// to use.
pub fn print_probes(probes: &[Probe], best: Option<&Probe>, as_json: bool) {
    let detail = |p: &Probe| match &p.outcome {
        Ok(r) => {
            let tls = r.tls.as_ref().map_or("no TLS".to_owned(), |(v, _)| {
                format!("{v}, certificate verified")
            });
            let auth = r
                .extensions
                .iter()
                .find(|e| e.to_ascii_uppercase().starts_with("AUTH"))
                .map_or("no AUTH offered".to_owned(), Clone::clone);
            format!("{tls}; {auth}")
        }
        Err(e) => e.message().to_owned(),
    };
    let mut out = io::stdout().lock();
    if as_json {
        #[derive(Serialize)]
        struct Use {
            port: u16,
            security: &'static str,
        }
        #[derive(Serialize)]
        struct Report<'a> {
            status: Status,
            probes: Vec<ProbeJson<'a>>,
            #[serde(rename = "use")]
            best: Option<Use>,
        }
        let probes = probes
            .iter()
            .map(|p| ProbeJson {
                port: p.port,
                security: p.security.name(),
                works: p.outcome.is_ok(),
                detail: detail(p),
                extensions: p.outcome.as_ref().map_or(&[][..], |r| &r.extensions),
            })
            .collect();
        let report = Report {
            status: if best.is_some() {
                Status::Ok
            } else {
                Status::Error
            },
            probes,
            best: best.map(|b| Use {
                port: b.port,
                security: b.security.name(),
            }),
        };
        let _ = write_json(&mut out, &report);
        return;
    }
    for p in probes {
        let works = if p.outcome.is_ok() { "yes" } else { "no " };
        let _ = writeln!(
            out,
            "{:>5} {:<9} {works} {}",
            p.port,
            p.security.name(),
            detail(p)
        );
    }
    if let Some(b) = best {
        let _ = writeln!(
            out,
            "use:  port = {}\n      security = \"{}\"",
            b.port,
            b.security.name()
        );
        if b.security == Security::None {
            warning("only plain SMTP works: a password would cross the network in clear");
        }
    }
}

/// The result of `envoi outbox drop ID`.
pub fn print_dropped(id: &str, as_json: bool) {
    #[derive(Serialize)]
    struct Dropped<'a> {
        status: Status,
        id: &'a str,
    }
    let mut out = io::stdout().lock();
    let _ = if as_json {
        write_json(
            &mut out,
            &Dropped {
                status: Status::Dropped,
                id,
            },
        )
    } else {
        writeln!(out, "dropped {id}")
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoi::ErrorKind;
    use lettre::Address;
    use lettre::address::Envelope;

    /// Trial 1.6: "in 1 day", not "in 1 days".
    #[test]
    fn days_left_read_as_words() {
        let words: Vec<String> = [-2, 0, 1, 3].into_iter().map(in_days).collect();
        assert_eq!(
            words,
            ["expired", "in less than a day", "in 1 day", "in 3 days"]
        );
        assert_eq!(expiry_words(1), "expires in 1 day");
        assert_eq!(expiry_words(-1), "has expired");
    }

    /// The README's `--json` examples, in order.
    fn readme_examples() -> Vec<serde_json::Value> {
        let readme = include_str!("../../README.md");
        let section = readme
            .split("### `--json`")
            .nth(1)
            .and_then(|rest| rest.split("```json\n").nth(1))
            .and_then(|rest| rest.split("```").next())
            .expect("README has a --json example block");
        section
            .lines()
            .map(|line| serde_json::from_str(line).expect("each example is JSON"))
            .collect()
    }

    fn reply(address: &str, code: u16, message: &str) -> RcptReply {
        RcptReply {
            address: address.into(),
            code,
            message: message.into(),
        }
    }

    fn prepared(from: &str, to: &str) -> Prepared {
        let address = |a: &str| a.parse::<Address>().unwrap();
        Prepared {
            message_id: "<…@example.com>".into(),
            envelope: Envelope::new(Some(address(from)), vec![address(to)]).unwrap(),
            bytes: b"Subject: x\r\n\r\nhi\r\n".to_vec().into(),
        }
    }

    #[test]
    fn readme_json_examples_are_what_envoi_prints() {
        let examples = readme_examples();
        assert_eq!(examples.len(), 2);

        let sent = Outcome::Delivered(Delivery::Sent {
            prepared: prepared("bot@example.com", "ann@example.com"),
            report: Report {
                delivered: vec![reply("ann@example.com", 250, "OK")],
                refused: vec![],
                data_reply: Some((250, "OK".into())),
                attempts: 1,
                payload_sent: true,
                extras: None,
            },
        });
        assert_eq!(
            serde_json::to_value(send_report(&sent).unwrap()).unwrap(),
            examples[0]
        );

        let error = Error::new(
            ErrorKind::RecipientRefused,
            "the server refused nobody@example.com (550 …); nothing was sent",
        );
        let report = Report {
            refused: vec![reply("nobody@example.com", 550, "…")],
            attempts: 1,
            ..Report::default()
        };
        assert_eq!(
            serde_json::to_value(error_report(&error, &report)).unwrap(),
            examples[1]
        );
    }

    #[test]
    fn every_status_is_named_in_the_readme() {
        let readme = include_str!("../../README.md");
        let messages = Of::ALL.map(Status::Message);
        for status in messages
            .into_iter()
            .chain([Status::DryRun, Status::Linted, Status::Error])
        {
            let name = serde_json::to_string(&status).unwrap();
            let name = name.trim_matches('"');
            assert!(
                readme.contains(&format!("`{name}`")) || readme.contains(&format!("\"{name}\"")),
                "{name}"
            );
        }
    }

    #[test]
    fn an_error_before_any_attempt_has_no_recipient_list() {
        let error = Error::usage("no recipient");
        let value = serde_json::to_value(error_report(&error, &Report::default())).unwrap();
        assert_eq!(value["exit_code"], 64);
        assert!(value.get("recipients").is_none() && value.get("attempts").is_none());
    }
}
