//! `envoi batch`: many messages over reused SMTP sessions, one result line per record.
//!
//! Records are read, built and sent one at a time, so memory does not grow with the
//! input. Each record's result is written (and flushed) before the next record is read:
//! a batch killed half-way leaves a report that `--resume` trusts.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use envoi::Mailbox;
use envoi::deliver::{
    Batch, BatchSent, DeliveryOptions, Failure, Notice, Observer, Policy, Report, Transcript,
};
use envoi::error::{Error, ErrorKind, Result};
use envoi::message::input::{is_stdin, read_bytes};
use envoi::message::records::{CsvMerge, JsonLines, Merge, Records};
use envoi::message::{self, address};
use envoi::outbox::{Outbox, queue_deferred};
use envoi::profile::{Env, resolve};
use serde::{Deserialize, Serialize};

use crate::cli::args::{BatchArgs, BatchFormat};
use crate::cli::progress::Progress;
use crate::cli::render::{Notices, transcript, warning};

/// Statuses `--resume` skips: the record may have reached someone.
const DONE: [&str; 4] = ["sent", "partial", "unknown", "queued"];

/// One result line.
#[derive(Debug, Serialize)]
struct Line {
    /// The record's line in the input.
    line: u64,
    /// sent, partial, refused, invalid, deferred, unknown or failed.
    status: &'static str,
    message_id: Option<String>,
    recipients: Vec<Recipient>,
    /// The server's answer to the final dot.
    data_reply: Option<String>,
    /// What `envoi send` would have exited with for this record.
    exit_code: u8,
    error: Option<String>,
    /// The outbox entry that now owns the record's retries (profile `outbox = true`).
    #[serde(skip_serializing_if = "Option::is_none")]
    outbox_id: Option<String>,
    /// A failure every later record would meet too (login, certificate, configuration).
    #[serde(skip)]
    fatal: Option<ErrorKind>,
}

/// One recipient of a record and the server's answer to it.
#[derive(Debug, Serialize)]
struct Recipient {
    address: String,
    /// delivered, refused, or not_sent (the transaction was abandoned or never reached
    /// this recipient).
    status: &'static str,
    code: Option<u16>,
    reply: Option<String>,
}

/// What `--resume` reads of an earlier report.
#[derive(Deserialize)]
struct Earlier {
    line: u64,
    status: String,
}

/// The counts of the summary, and the exit code they make.
#[derive(Default)]
struct Tally {
    sent: u64,
    partial: u64,
    refused: u64,
    invalid: u64,
    deferred: u64,
    queued: u64,
    unknown: u64,
    failed: u64,
    skipped: u64,
    /// The most serious exit code other than 75, by [`severity`].
    worst: u8,
    /// A record is deferred or of unknown outcome: exit 75.
    pending: bool,
    /// The batch stopped early with this error.
    stopped: Option<Error>,
}

impl Tally {
    fn count(&mut self, line: &Line) {
        let counter = match line.status {
            "sent" => &mut self.sent,
            "partial" => &mut self.partial,
            "refused" => &mut self.refused,
            "invalid" => &mut self.invalid,
            "deferred" => &mut self.deferred,
            "queued" => &mut self.queued,
            "unknown" => &mut self.unknown,
            _ => &mut self.failed,
        };
        *counter += 1;
        if line.exit_code == ErrorKind::Temporary.exit_code() {
            self.pending = true;
        } else if severity(line.exit_code) > severity(self.worst) {
            self.worst = line.exit_code;
        }
    }

    fn exit_code(&self) -> u8 {
        match &self.stopped {
            Some(e) => e.kind().exit_code(),
            None if self.pending => ErrorKind::Temporary.exit_code(),
            None => self.worst,
        }
    }
}

/// How serious an exit code is for the whole batch: a server that refuses messages over
/// refused recipients over a bad record.
fn severity(code: u8) -> u8 {
    match code {
        0 => 0,
        64 => 1,
        65 | 66 => 2,
        67 => 3,
        69 => 4,
        70 => 5,
        77 => 6,
        78 => 7,
        _ => 5,
    }
}

/// Where result lines go.
struct Output {
    report: Option<File>,
    /// The line of the record being sent, next to the report (see [`inflight_path`]).
    inflight: Option<File>,
    json: bool,
}

/// Next to the report, `REPORT.inflight` holds the line of the record being sent, from
/// before its first command until its result line is written: a batch killed meanwhile
/// leaves it behind, and `--resume` lists that record as `unknown` instead of sending it
/// again. Removed when the batch ends.
fn inflight_path(report: &Path) -> PathBuf {
    let mut path = report.as_os_str().to_owned();
    path.push(".inflight");
    PathBuf::from(path)
}

/// Width of the number in the in-flight file: rewritten in place, never truncated.
const INFLIGHT_WIDTH: usize = 20;

impl Output {
    /// Records that `line` is about to be sent (nothing without --report).
    fn sending(&mut self, line: Option<u64>) -> Result<()> {
        let Some(file) = &mut self.inflight else {
            return Ok(());
        };
        let text = match line {
            Some(line) => format!("{line:>INFLIGHT_WIDTH$}\n"),
            None => format!("{:>INFLIGHT_WIDTH$}\n", ""),
        };
        file.seek(SeekFrom::Start(0))
            .and_then(|_| file.write_all(text.as_bytes()))
            .map_err(|e| {
                Error::new(
                    ErrorKind::Temporary,
                    format!("cannot write the in-flight mark next to --report: {e}; the batch stops here"),
                )
            })
    }

    /// Writes one line to the report (flushed to the OS before the next record) and to
    /// standard output with `--json`.
    fn write(&mut self, line: &Line) -> Result<()> {
        let mut text = serde_json::to_string(line)
            .map_err(|e| Error::new(ErrorKind::Internal, format!("a result line: {e}")))?;
        text.push('\n');
        if let Some(report) = &mut self.report {
            report
                .write_all(text.as_bytes())
                .and_then(|()| report.flush())
                .map_err(|e| {
                    Error::new(
                        ErrorKind::Temporary,
                        format!(
                            "cannot write the result of line {} ({}) to --report: {e}; the batch \
                             stops here",
                            line.line, line.status
                        ),
                    )
                })?;
        }
        if self.json {
            let mut out = io::stdout().lock();
            let written = out.write_all(text.as_bytes()).and_then(|()| out.flush());
            if let Err(e) = written
                && e.kind() != io::ErrorKind::BrokenPipe
            {
                return Err(Error::new(
                    ErrorKind::Temporary,
                    format!("cannot write to standard output: {e}"),
                ));
            }
        }
        Ok(())
    }
}

/// Runs `envoi batch`; the exit code. An `Err` is a failure before the first record.
pub fn run(args: &BatchArgs) -> Result<u8> {
    let started = Instant::now();
    let resolved = resolve(&args.flags(), &Env::from_process()?)?;
    let Some(connection) = &resolved.connection else {
        return Err(Error::config(
            "no connection: give --profile or --smtp-url (or $ENVOI_SMTP_URL), or set \
             `default` in the config file",
        ));
    };
    let format = format(args)?;
    let (mut done, interrupted) = match &args.resume {
        Some(path) => earlier_report(path)?,
        None => (HashSet::new(), None),
    };
    let sender = match &args.from {
        Some(from) => Some(address::parse_single("--from", from)?),
        None => match &connection.profile.from {
            Some(from) => Some(address::parse_single(
                &format!("profile {:?}: from", connection.name),
                from,
            )?),
            None => None,
        },
    };
    let records = records(args, format)?;
    // The profile's DKIM key, read and parsed once for the whole batch, not per record.
    let signer = connection
        .profile
        .dkim
        .as_ref()
        .map(envoi::profile::Dkim::signer)
        .transpose()?;
    let report = match &args.report {
        Some(path) => Some(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| {
                    Error::new(
                        ErrorKind::NoInput,
                        format!("--report {:?}: cannot open it for appending: {e}", path),
                    )
                })?,
        ),
        None => None,
    };
    let mut output = Output {
        report,
        inflight: None,
        json: args.json,
    };
    let mut tally = Tally::default();
    if let Some(line) = interrupted {
        // Listed now, and skipped below.
        let line = Line {
            line,
            status: "unknown",
            message_id: None,
            recipients: Vec::new(),
            data_reply: None,
            exit_code: ErrorKind::OutcomeUnknown.exit_code(),
            error: Some(
                "an earlier run was stopped while sending this record: it may have been \
                 delivered; check before sending it again"
                    .to_owned(),
            ),
            fatal: None,
            outbox_id: None,
        };
        tally.count(&line);
        output.write(&line)?;
        done.insert(line.line);
    }
    let options = DeliveryOptions {
        policy: Policy {
            retries: args.retries,
            retry_max: Duration::from_secs(args.retry_max_secs),
            deadline: None,
            allow_partial: args.allow_partial,
        },
        transcript: args.verbose.then_some(transcript as Transcript),
        dsn: None,
    };
    // Profile `outbox = true`: a record still deferred after its retries is queued.
    let outbox = if connection.profile.outbox {
        Some(Outbox::open(resolved.outbox_dir()?)?)
    } else {
        None
    };
    let mut batch = Batch::new(
        &connection.profile,
        options.clone(),
        Duration::from_secs(args.timeout),
        args.per_session,
        &mut Notices,
    )?;
    // Created once the batch can start, so a failure before leaves nothing behind.
    output.inflight = match &args.report {
        Some(path) => Some(
            OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .open(inflight_path(path))
                .map_err(|e| {
                    Error::new(
                        ErrorKind::NoInput,
                        format!(
                            "--report {path:?}: cannot create {:?}: {e}",
                            inflight_path(path)
                        ),
                    )
                })?,
        ),
        None => None,
    };
    let mut progress = Progress::start(&args.file, format);
    let mut pacer = args.rate.map(|interval| Pacer {
        interval,
        next: Instant::now(),
    });
    for record in records {
        let record = match record {
            Ok(record) => record,
            Err(e) => {
                tally.stopped = Some(e);
                break;
            }
        };
        if done.contains(&record.line) {
            tally.skipped += 1;
            progress.record(true);
            continue;
        }
        let line = match record
            .draft
            .and_then(|draft| prepare(draft, sender.as_ref(), signer.as_ref(), record.line))
        {
            Ok(prepared) => {
                if let Some(pacer) = &mut pacer {
                    pacer.wait();
                }
                if let Err(e) = output.sending(Some(record.line)) {
                    tally.stopped = Some(e);
                    break;
                }
                let message_id = prepared.message_id.clone();
                let envelope: Vec<String> = prepared
                    .envelope
                    .to()
                    .iter()
                    .map(ToString::to_string)
                    .collect();
                let sent = send_slowing(&mut batch, &prepared, &mut pacer);
                match (&outbox, sent) {
                    (Some(outbox), Err(failure))
                        if failure.error.kind() == ErrorKind::Temporary =>
                    {
                        let queued = queue_deferred(
                            outbox,
                            &prepared,
                            connection,
                            &options,
                            &failure.report,
                            &failure.error,
                        );
                        let mut line =
                            result_line(record.line, message_id, &envelope, Err(failure));
                        match queued {
                            Ok(id) => {
                                if line.status == "deferred" {
                                    line.status = "queued";
                                }
                                line.exit_code = 0;
                                line.outbox_id = Some(id);
                            }
                            Err(e) => {
                                let why = line.error.take().unwrap_or_default();
                                line.error = Some(format!("{why}; it could not be queued: {e}"));
                            }
                        }
                        line
                    }
                    (_, sent) => result_line(record.line, message_id, &envelope, sent),
                }
            }
            Err(e) => Line {
                line: record.line,
                status: "invalid",
                message_id: None,
                recipients: Vec::new(),
                data_reply: None,
                exit_code: e.kind().exit_code(),
                error: Some(e.message().to_owned()),
                fatal: None,
                outbox_id: None,
            },
        };
        tally.count(&line);
        progress.record(line.exit_code == 0);
        if let Err(e) = output.write(&line).and_then(|()| output.sending(None)) {
            tally.stopped = Some(e);
            break;
        }
        if let Some(kind) = line.fatal {
            // Every later record would fail the same way at the same step.
            let why = line.error.unwrap_or_default();
            tally.stopped = Some(Error::new(
                kind,
                format!(
                    "the batch stopped at line {}: {why}; the records after it were not tried",
                    line.line
                ),
            ));
            break;
        }
    }
    progress.finish();
    let sessions = batch.sessions_opened();
    batch.finish();
    if let (Some(path), None) = (&args.report, &tally.stopped) {
        // Nothing is in flight any more. (After a stop, the mark may name the record whose
        // result could not be written.)
        let _ = std::fs::remove_file(inflight_path(path));
    }
    if let Some(e) = &tally.stopped {
        eprintln!("envoi: error: {e}");
    }
    summary(&tally, sessions, started.elapsed());
    Ok(tally.exit_code())
}

/// Sends one record. A server that throttles (a 4xx whose words say so: "rate limit",
/// "too many messages", "slow down"…) slows the batch down: the spacing between messages
/// doubles (from 1 s, at most 60 s) for the rest of the batch, and a record it deferred is
/// sent again after that wait, up to [`THROTTLE_ROUNDS`] times, instead of failing.
fn send_slowing(
    batch: &mut Batch,
    prepared: &envoi::message::Prepared,
    pacer: &mut Option<Pacer>,
) -> std::result::Result<BatchSent, Failure> {
    let mut round = 0;
    loop {
        let mut watch = Watch { throttled: false };
        let sent = batch.send(prepared, &mut watch);
        let deferred_by_throttle = match &sent {
            Err(failure) => failure.report.delivered.is_empty() && throttling(&failure.error),
            Ok(_) => false,
        };
        if watch.throttled || deferred_by_throttle {
            let pacer = pacer.get_or_insert(Pacer {
                interval: Duration::ZERO,
                next: Instant::now(),
            });
            pacer.slow_down();
            eprintln!(
                "envoi: the server is throttling: now at most one message every {:.0} s",
                pacer.interval.as_secs_f64()
            );
        }
        if !deferred_by_throttle || round >= THROTTLE_ROUNDS {
            return sent;
        }
        round += 1;
        if let Some(pacer) = pacer {
            pacer.wait();
        }
    }
}

/// How many times a record the server deferred for throttling is sent again.
const THROTTLE_ROUNDS: u32 = 3;
/// The spacing after the first throttling reply (without --rate)…
const THROTTLE_FIRST: Duration = Duration::from_secs(1);
/// …and the most it grows to.
const THROTTLE_MAX: Duration = Duration::from_secs(60);

/// Whether a temporary failure is the server asking to slow down.
fn throttling(error: &envoi::Error) -> bool {
    const WORDS: [&str; 9] = [
        "rate limit",
        "rate-limit",
        "ratelimit",
        "throttl",
        "slow down",
        "too many messages",
        "too many connections",
        "too many mails",
        "limit exceeded",
    ];
    let text = error.message().to_ascii_lowercase();
    error.kind() == ErrorKind::Temporary && WORDS.iter().any(|w| text.contains(w))
}

/// The user's notices, and whether a retry was for throttling.
struct Watch {
    throttled: bool,
}

impl Observer for Watch {
    fn accepted(&mut self, report: &Report) -> Result<()> {
        Notices.accepted(report)
    }

    fn notice(&mut self, notice: Notice) {
        if let Notice::Retrying { reason, .. } = &notice
            && throttling(reason)
        {
            self.throttled = true;
        }
        Notices.notice(notice);
    }
}

/// `--rate`: each message starts at least `interval` after the one before (a token
/// bucket of one token, so an idle spell does not allow a burst after it).
struct Pacer {
    interval: Duration,
    next: Instant,
}

impl Pacer {
    /// After a throttling reply: the gap doubles (from 1 s, at most 60 s), but never
    /// shrinks below what `--rate` asked for: a slower `--rate 1/h` must not speed up.
    fn slow_down(&mut self) {
        let doubled = (self.interval * 2).clamp(THROTTLE_FIRST, THROTTLE_MAX);
        self.interval = self.interval.max(doubled);
    }

    fn wait(&mut self) {
        let now = Instant::now();
        if self.next > now {
            std::thread::sleep(self.next - now);
        }
        self.next = self.next.max(now) + self.interval;
    }
}

/// The records' format: `--format`, else the file's extension.
fn format(args: &BatchArgs) -> Result<BatchFormat> {
    if let Some(format) = args.format {
        return Ok(format);
    }
    let extension = args
        .file
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("jsonl" | "ndjson") => Ok(BatchFormat::Jsonl),
        Some("csv") => Ok(BatchFormat::Csv),
        _ if is_stdin(&args.file) => Err(Error::usage(
            "reading records from standard input: give --format jsonl or --format csv",
        )),
        _ => Err(Error::usage(format!(
            "{:?}: cannot tell the format from the file name (.jsonl, .ndjson or .csv): give \
             --format jsonl or --format csv",
            args.file
        ))),
    }
}

/// The record reader for the input file.
fn records(args: &BatchArgs, format: BatchFormat) -> Result<Records<Box<dyn BufRead>>> {
    let input: Box<dyn BufRead> = if is_stdin(&args.file) {
        Box::new(io::stdin().lock())
    } else {
        let file = File::open(&args.file).map_err(|e| {
            Error::new(
                ErrorKind::NoInput,
                format!("FILE: cannot read {:?}: {e}", args.file),
            )
        })?;
        Box::new(BufReader::with_capacity(64 << 10, file))
    };
    match format {
        BatchFormat::Jsonl => {
            for (given, flag) in [
                (args.subject.is_some(), "--subject"),
                (args.body.is_some() || args.body_file.is_some(), "--body"),
                (args.html, "--html"),
                (!args.attach.is_empty(), "--attach"),
            ] {
                if given {
                    return Err(Error::usage(format!(
                        "{flag} is for CSV records; a JSON Lines record carries its own \
                         Subject, Body, IsHtml and Attachments"
                    )));
                }
            }
            Ok(Records::Jsonl(JsonLines::new(input)))
        }
        BatchFormat::Csv => {
            let body = match &args.body_file {
                Some(path) => {
                    if is_stdin(path) && is_stdin(&args.file) {
                        return Err(Error::usage(
                            "--body-file - and FILE - would both read standard input",
                        ));
                    }
                    let bytes = read_bytes("--body-file", path)?;
                    Some(String::from_utf8(bytes).map_err(|_| {
                        Error::invalid(format!("--body-file {path:?}: not UTF-8 text"))
                    })?)
                }
                None => args.body.clone(),
            };
            let merge = Merge {
                subject: args.subject.clone(),
                body,
                html: args.html,
                to_column: args.to_column.clone(),
                attach: args.attach.clone(),
            };
            Ok(Records::Csv(Box::new(CsvMerge::new(input, merge)?)))
        }
    }
}

/// The lines an earlier report lists as sent, partial or unknown, and the record its run
/// was sending when it was stopped, if that has no result line.
fn earlier_report(path: &Path) -> Result<(HashSet<u64>, Option<u64>)> {
    let file = File::open(path).map_err(|e| {
        Error::new(
            ErrorKind::NoInput,
            format!("--resume {path:?}: cannot read it: {e}"),
        )
    })?;
    let mut done = HashSet::new();
    let mut finished = HashSet::new();
    for (i, text) in BufReader::new(file).lines().enumerate() {
        let text = text.map_err(|e| {
            Error::new(
                ErrorKind::NoInput,
                format!("--resume {path:?}: cannot read line {}: {e}", i + 1),
            )
        })?;
        if text.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Earlier>(&text) {
            Ok(earlier) => {
                finished.insert(earlier.line);
                if DONE.contains(&earlier.status.as_str()) {
                    done.insert(earlier.line);
                }
            }
            Err(e) => warning(&format!(
                "--resume {path:?}: line {} is not a result line ({e}); ignored",
                i + 1
            )),
        }
    }
    let marked = std::fs::read_to_string(inflight_path(path))
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok());
    let interrupted = marked.filter(|line| !finished.contains(line));
    Ok((done, interrupted))
}

/// A record's message, checked, built, and signed with the batch's DKIM key when the
/// profile has one.
fn prepare(
    draft: envoi::draft::Draft,
    sender: Option<&Mailbox>,
    signer: Option<&envoi::message::dkim::Signer>,
    line: u64,
) -> Result<message::Prepared> {
    let at_line = |e: Error| {
        if e.message().starts_with("line ") {
            e
        } else {
            Error::new(e.kind(), format!("line {line}: {}", e.message()))
        }
    };
    let email = draft.into_email().map_err(at_line)?;
    let from = match (&email.from, sender) {
        (Some(from), _) => from.clone(),
        (None, Some(sender)) => sender.clone(),
        (None, None) => {
            return Err(at_line(Error::usage(
                "no sender: give From in the record, --from, or `from` in the profile",
            )));
        }
    };
    let now = SystemTime::now();
    let mut prepared = message::build(email, &from, now).map_err(at_line)?;
    if let Some(signer) = signer {
        prepared.bytes = signer
            .sign(std::mem::take(&mut prepared.bytes), now)
            .map_err(at_line)?;
    }
    Ok(prepared)
}

/// The result line of a record that was sent, or tried.
fn result_line(
    line: u64,
    message_id: String,
    envelope: &[String],
    sent: std::result::Result<BatchSent, Failure>,
) -> Line {
    let (report, error) = match sent {
        Ok(BatchSent::Sent(report)) => (report, None),
        Ok(BatchSent::Saved(_)) => {
            return Line {
                line,
                status: "sent",
                message_id: Some(message_id),
                recipients: envelope
                    .iter()
                    .map(|a| Recipient {
                        address: a.clone(),
                        status: "delivered",
                        code: None,
                        reply: None,
                    })
                    .collect(),
                data_reply: None,
                exit_code: 0,
                error: None,
                fatal: None,
                outbox_id: None,
            };
        }
        Err(failure) => (failure.report, Some(failure.error)),
    };
    let recipients = recipients(envelope, &report);
    let data_reply = report
        .data_reply
        .as_ref()
        .map(|(code, text)| format!("{code} {text}"));
    let delivered = !report.delivered.is_empty();
    let (status, exit_code) = match &error {
        None if report.refused.is_empty() => ("sent", 0),
        // --allow-partial, the others refused for good: `send` exits 0 for this too (a
        // recipient still deferred comes back as an error instead).
        None => ("partial", 0),
        Some(e) => {
            let status = match e.kind() {
                _ if delivered => "partial",
                ErrorKind::RecipientRefused | ErrorKind::Unavailable => "refused",
                ErrorKind::Temporary => "deferred",
                ErrorKind::OutcomeUnknown => "unknown",
                _ => "failed",
            };
            (status, e.kind().exit_code())
        }
    };
    let fatal = error.as_ref().map(Error::kind).filter(|kind| {
        matches!(
            kind,
            ErrorKind::AuthRefused | ErrorKind::Certificate | ErrorKind::Config
        )
    });
    Line {
        line,
        status,
        message_id: Some(message_id),
        recipients,
        data_reply,
        exit_code,
        error: error.map(|e| e.message().to_owned()),
        fatal,
        outbox_id: None,
    }
}

/// Every envelope recipient with the server's answer, in envelope order.
fn recipients(envelope: &[String], report: &Report) -> Vec<Recipient> {
    envelope
        .iter()
        .map(|address| {
            let delivered = report.delivered.iter().find(|r| r.address == *address);
            let refused = report.refused.iter().find(|r| r.address == *address);
            match (delivered, refused) {
                (Some(r), _) => Recipient {
                    address: address.clone(),
                    status: "delivered",
                    code: Some(r.code),
                    reply: Some(r.message.clone()),
                },
                (None, Some(r)) => Recipient {
                    address: address.clone(),
                    status: "refused",
                    code: Some(r.code),
                    reply: Some(r.message.clone()),
                },
                (None, None) => Recipient {
                    address: address.clone(),
                    status: "not_sent",
                    code: None,
                    reply: None,
                },
            }
        })
        .collect()
}

/// The one line on stderr at the end.
fn summary(tally: &Tally, sessions: u32, elapsed: Duration) {
    let secs = elapsed.as_secs_f64();
    let rate = if secs > 0.0 {
        tally.sent as f64 / secs
    } else {
        0.0
    };
    let mut text = format!(
        "envoi: batch: sent {}, refused {}, invalid {}",
        tally.sent, tally.refused, tally.invalid
    );
    for (count, what) in [
        (tally.partial, "partial"),
        (tally.deferred, "deferred"),
        (tally.queued, "queued (outbox)"),
        (tally.unknown, "unknown"),
        (tally.failed, "failed"),
        (tally.skipped, "skipped (--resume)"),
    ] {
        if count > 0 {
            text.push_str(&format!(", {what} {count}"));
        }
    }
    let plural = if sessions == 1 { "" } else { "s" };
    text.push_str(&format!(
        "; {sessions} session{plural}, in {secs:.2} s, {rate:.1} msg/s"
    ));
    eprintln!("{text}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_slows_down_and_never_speeds_up() {
        let mut pacer = Pacer {
            interval: Duration::ZERO,
            next: Instant::now(),
        };
        pacer.slow_down();
        assert_eq!(pacer.interval, THROTTLE_FIRST);
        pacer.slow_down();
        assert_eq!(pacer.interval, THROTTLE_FIRST * 2);
        for _ in 0..10 {
            pacer.slow_down();
        }
        assert_eq!(pacer.interval, THROTTLE_MAX);
        let mut hourly = Pacer {
            interval: Duration::from_secs(3600),
            next: Instant::now(),
        };
        hourly.slow_down();
        assert_eq!(
            hourly.interval,
            Duration::from_secs(3600),
            "--rate 1/h sped up"
        );
    }
}
