//! `envoi batch`: many messages over reused SMTP sessions, one result line per record.
//!
//! Records are read, built and sent one at a time, so memory does not grow with the
//! input. Each record's result is written (and flushed) before the next record is read:
//! a batch killed half-way leaves a report that `--resume` trusts.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::io::{Seek, SeekFrom};
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError, mpsc};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use envoi::Mailbox;
use envoi::deliver::{
    Batch, BatchSent, DeliveryOptions, Failure, Notice, Observer, Policy, Report, Transcript,
};
use envoi::error::{Error, ErrorKind, Result};
use envoi::message::input::{is_stdin, read_bytes};
use envoi::message::records::{CsvMerge, JsonLines, Merge, Record, Records};
use envoi::message::{self, address};
use envoi::outbox::{Outbox, queue_deferred};
use envoi::profile::{Env, resolve};
use serde::{Deserialize, Serialize};

use crate::cli::args::{BatchArgs, BatchFormat, Rate};
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
    json: bool,
}

impl Output {
    /// Writes one line to the report (flushed to the OS before the record's in-flight
    /// mark is cleared) and to standard output with `--json`.
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

/// Next to the report, `REPORT.inflight` has one line per sender: the line of the
/// record that sender is sending, from before its first command until its result line
/// is in the report, and blank otherwise. A batch killed meanwhile leaves it behind, and
/// `--resume` lists those records as `unknown` instead of sending them again. Removed
/// when the batch ends.
fn inflight_path(report: &Path) -> PathBuf {
    let mut path = report.as_os_str().to_owned();
    path.push(".inflight");
    PathBuf::from(path)
}

/// Width of a number in the in-flight file: each sender's slot is rewritten in place,
/// never truncated, so a kill mid-write leaves the other slots whole.
const INFLIGHT_WIDTH: usize = 20;

/// The in-flight file (nothing without `--report`). A sender marks its slot before it
/// sends; the main thread clears it after writing the result line, and only then hands
/// that sender its next record, so the two never write one slot at once.
struct Marks {
    file: Option<Mutex<File>>,
}

impl Marks {
    /// Creates the file with `senders` blank slots.
    fn create(report: Option<&Path>, senders: usize) -> Result<Marks> {
        let Some(report) = report else {
            return Ok(Marks { file: None });
        };
        let path = inflight_path(report);
        let failed = |e: io::Error| {
            Error::new(
                ErrorKind::NoInput,
                format!("--report {report:?}: cannot create {path:?}: {e}"),
            )
        };
        let mut file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&path)
            .map_err(failed)?;
        let blank = format!("{:>INFLIGHT_WIDTH$}\n", "");
        file.write_all(blank.repeat(senders).as_bytes())
            .map_err(failed)?;
        Ok(Marks {
            file: Some(Mutex::new(file)),
        })
    }

    /// Writes `line` (or blank) into `sender`'s slot.
    fn set(&self, sender: usize, line: Option<u64>) -> Result<()> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        let text = match line {
            Some(line) => format!("{line:>INFLIGHT_WIDTH$}\n"),
            None => format!("{:>INFLIGHT_WIDTH$}\n", ""),
        };
        let offset = (sender * (INFLIGHT_WIDTH + 1)) as u64;
        // A sender that panicked held no lock while writing a slot: the file is whole.
        let mut file = file.lock().unwrap_or_else(PoisonError::into_inner);
        file.seek(SeekFrom::Start(offset))
            .and_then(|_| file.write_all(text.as_bytes()))
            .map_err(|e| {
                Error::new(
                    ErrorKind::Temporary,
                    format!(
                        "cannot write the in-flight mark next to --report: {e}; the batch \
                         stops here"
                    ),
                )
            })
    }
}

/// What every sender shares. Only the pacer changes, under its lock.
struct Shared<'a> {
    /// `--from`, else the profile's `from`: for records without From.
    from: Option<&'a Mailbox>,
    /// The profile's DKIM key, parsed once for the whole batch.
    signer: Option<&'a envoi::message::dkim::Signer>,
    /// Profile `outbox = true`: a record still deferred after its retries is queued.
    outbox: Option<&'a Outbox>,
    connection: &'a envoi::profile::Connection,
    options: &'a DeliveryOptions,
    marks: &'a Marks,
    pacer: &'a Mutex<Pacer>,
}

/// What a sender hands back for one record: its result line, or the error that stops
/// the batch before the record was tried.
type Outcome = Result<Line>;

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
    if let Some(Rate {
        most_sessions: Some((provider, most)),
        ..
    }) = args.rate
        && args.concurrency > most
    {
        return Err(Error::usage(format!(
            "--concurrency {}: {provider} allows at most {most} connections at once; give \
             --concurrency {most} or less",
            args.concurrency
        )));
    }
    let senders = usize::try_from(args.concurrency).unwrap_or(1).max(1);
    let format = format(args)?;
    let (done, interrupted) = match &args.resume {
        Some(path) => earlier_report(path)?,
        None => (Lines::default(), Vec::new()),
    };
    let from = match &args.from {
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
        json: args.json,
    };
    let mut tally = Tally::default();
    for line in interrupted {
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
    let outbox = if connection.profile.outbox {
        Some(Outbox::open(resolved.outbox_dir()?)?)
    } else {
        None
    };
    // A password is fetched once; the other senders share it (and renew OAuth2 tokens
    // themselves, from the shared cache).
    let first = Batch::new(
        &connection.profile,
        options.clone(),
        Duration::from_secs(args.timeout),
        args.per_session,
        &mut Notices,
    )?;
    let mut batches: Vec<Batch> = (1..senders).map(|_| first.sibling()).collect();
    batches.insert(0, first);
    // Created once the batch can start, so a failure before leaves nothing behind.
    let marks = Marks::create(args.report.as_deref(), senders)?;
    let pacer = Mutex::new(Pacer {
        interval: args.rate.map_or(Duration::ZERO, |rate| rate.interval),
        next: Instant::now(),
    });
    let shared = Shared {
        from: from.as_ref(),
        signer: signer.as_ref(),
        outbox: outbox.as_ref(),
        connection,
        options: &options,
        marks: &marks,
        pacer: &pacer,
    };
    let mut progress = Progress::start(&args.file, format);
    let sessions = thread::scope(|scope| {
        let (results, finished) = mpsc::channel::<(usize, Outcome)>();
        let mut hands = Vec::with_capacity(senders);
        let mut workers = Vec::with_capacity(senders);
        for (index, mut batch) in batches.into_iter().enumerate() {
            let (hand, jobs) = mpsc::channel::<Record>();
            let results = results.clone();
            let shared = &shared;
            workers.push(scope.spawn(move || {
                for record in jobs {
                    let outcome = send_guarded(shared, &mut batch, index, record);
                    if results.send((index, outcome)).is_err() {
                        break;
                    }
                }
                let opened = batch.sessions_opened();
                batch.finish();
                opened
            }));
            hands.push(hand);
        }
        drop(results);
        let mut dispatch = Dispatch {
            idle: (0..senders).rev().collect(),
            busy: 0,
            output: &mut output,
            output_broken: false,
            tally: &mut tally,
            progress: &mut progress,
            marks: &marks,
        };
        dispatch.run(records, &done, &hands, &finished);
        drop(hands);
        workers
            .into_iter()
            .map(|worker| worker.join().unwrap_or(0))
            .sum::<u32>()
    });
    progress.finish();
    if let (Some(path), None) = (&args.report, &tally.stopped) {
        // Nothing is in flight any more. (After a stop, a mark may name a record whose
        // result could not be written.)
        drop(marks);
        let _ = std::fs::remove_file(inflight_path(path));
    }
    if let Some(e) = &tally.stopped {
        eprintln!("envoi: error: {e}");
    }
    summary(&tally, sessions, started.elapsed());
    Ok(tally.exit_code())
}

/// The main thread's side of the batch: reads records, hands each to an idle sender,
/// and writes each result as it comes back.
struct Dispatch<'a> {
    /// Senders waiting for a record (the next one handed out is the last).
    idle: Vec<usize>,
    /// Records handed out whose result has not come back.
    busy: usize,
    output: &'a mut Output,
    /// A result line could not be written: later ones are not tried, and their
    /// records stay marked in flight for `--resume`.
    output_broken: bool,
    tally: &'a mut Tally,
    progress: &'a mut Progress,
    marks: &'a Marks,
}

impl Dispatch<'_> {
    fn run(
        &mut self,
        mut records: impl Iterator<Item = Result<Record>>,
        done: &Lines,
        hands: &[mpsc::Sender<Record>],
        finished: &mpsc::Receiver<(usize, Outcome)>,
    ) {
        let mut more = true;
        loop {
            while more && self.tally.stopped.is_none() {
                let Some(&sender) = self.idle.last() else {
                    break;
                };
                match records.next() {
                    None => more = false,
                    Some(Err(e)) => self.tally.stopped = Some(e),
                    Some(Ok(record)) if done.contains(record.line) => {
                        self.tally.skipped += 1;
                        self.progress.record(true);
                    }
                    Some(Ok(record)) => {
                        if hands[sender].send(record).is_err() {
                            // A sender's thread ends only when its hand is dropped.
                            self.stop(Error::new(
                                ErrorKind::Internal,
                                "a sender stopped before the batch ended",
                            ));
                            break;
                        }
                        self.idle.pop();
                        self.busy += 1;
                    }
                }
            }
            if self.busy == 0 {
                return;
            }
            let Ok((sender, outcome)) = finished.recv() else {
                return;
            };
            self.busy -= 1;
            self.idle.push(sender);
            self.finished(sender, outcome);
        }
    }

    /// A sender's outcome: counted, written, its mark cleared.
    fn finished(&mut self, sender: usize, outcome: Outcome) {
        let line = match outcome {
            Ok(line) => line,
            Err(e) => return self.stop(e),
        };
        self.tally.count(&line);
        self.progress.record(line.exit_code == 0);
        if !self.output_broken {
            let written = self
                .output
                .write(&line)
                .and_then(|()| self.marks.set(sender, None));
            if let Err(e) = written {
                self.output_broken = true;
                self.stop(e);
            }
        }
        if let Some(kind) = line.fatal {
            // Every later record would fail the same way at the same step.
            let why = line.error.unwrap_or_default();
            self.stop(Error::new(
                kind,
                format!(
                    "the batch stopped at line {}: {why}; the records after it were not tried",
                    line.line
                ),
            ));
        }
    }

    /// No record is handed out after this; those in flight finish. The first reason wins.
    fn stop(&mut self, e: Error) {
        if self.tally.stopped.is_none() {
            self.tally.stopped = Some(e);
        }
    }
}

/// [`send_record`], with a bug in it turned into a result instead of a hung batch: the
/// record is listed as of unknown outcome and the batch stops.
fn send_guarded(shared: &Shared, batch: &mut Batch, sender: usize, record: Record) -> Outcome {
    let line = record.line;
    let sent = panic::catch_unwind(AssertUnwindSafe(|| {
        send_record(shared, batch, sender, record)
    }));
    sent.unwrap_or_else(|_| {
        Ok(Line {
            line,
            status: "unknown",
            message_id: None,
            recipients: Vec::new(),
            data_reply: None,
            exit_code: ErrorKind::Internal.exit_code(),
            error: Some(
                "envoi failed inside while sending this record (a bug, please report it); \
                 it may have been delivered"
                    .to_owned(),
            ),
            fatal: Some(ErrorKind::Internal),
            outbox_id: None,
        })
    })
}

/// Builds, paces, marks and sends one record on `sender`'s sessions; queues it in the
/// outbox when it is still deferred and the profile says so.
fn send_record(shared: &Shared, batch: &mut Batch, sender: usize, record: Record) -> Outcome {
    let prepared = record
        .draft
        .and_then(|draft| prepare(draft, shared.from, shared.signer, record.line));
    let prepared = match prepared {
        Ok(prepared) => prepared,
        Err(e) => {
            return Ok(Line {
                line: record.line,
                status: "invalid",
                message_id: None,
                recipients: Vec::new(),
                data_reply: None,
                exit_code: e.kind().exit_code(),
                error: Some(e.message().to_owned()),
                fatal: None,
                outbox_id: None,
            });
        }
    };
    pace(shared.pacer);
    shared.marks.set(sender, Some(record.line))?;
    let message_id = prepared.message_id.clone();
    let envelope: Vec<String> = prepared
        .envelope
        .to()
        .iter()
        .map(ToString::to_string)
        .collect();
    let sent = send_slowing(batch, &prepared, shared.pacer);
    let line = match (shared.outbox, sent) {
        (Some(outbox), Err(failure)) if failure.error.kind() == ErrorKind::Temporary => {
            let queued = queue_deferred(
                outbox,
                &prepared,
                shared.connection,
                shared.options,
                &failure.report,
                &failure.error,
            );
            let mut line = result_line(record.line, message_id, &envelope, Err(failure));
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
    };
    Ok(line)
}

/// Sends one record. A server that throttles (a 4xx whose words say so: "rate limit",
/// "too many messages", "slow down"…) slows the batch down: the spacing between messages
/// doubles (from 1 s, at most 60 s) for the rest of the batch, across every sender, and
/// a record it deferred is sent again after that wait, up to [`THROTTLE_ROUNDS`] times,
/// instead of failing.
fn send_slowing(
    batch: &mut Batch,
    prepared: &envoi::message::Prepared,
    pacer: &Mutex<Pacer>,
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
            let interval = {
                let mut pacer = lock(pacer);
                pacer.slow_down();
                pacer.interval
            };
            eprintln!(
                "envoi: the server is throttling: now at most one message every {:.0} s",
                interval.as_secs_f64()
            );
        }
        if !deferred_by_throttle || round >= THROTTLE_ROUNDS {
            return sent;
        }
        round += 1;
        pace(pacer);
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

/// `--rate`: each message starts at least `interval` after the one before, whichever
/// sender sends it (a token bucket of one token, so an idle spell does not allow a burst
/// after it). Without `--rate` the interval is zero until the server throttles.
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

    /// Takes the next start time for the caller and moves the one after it on.
    fn reserve(&mut self) -> Instant {
        let at = self.next.max(Instant::now());
        self.next = at + self.interval;
        at
    }
}

/// Waits for this message's turn; the lock is held only to take the turn, not while
/// waiting, so the other senders take the turns after it meanwhile.
fn pace(pacer: &Mutex<Pacer>) {
    let at = lock(pacer).reserve();
    let now = Instant::now();
    if at > now {
        thread::sleep(at - now);
    }
}

/// The pacer, also after a sender panicked: it holds two plain values, whole at any time.
fn lock(pacer: &Mutex<Pacer>) -> MutexGuard<'_, Pacer> {
    pacer.lock().unwrap_or_else(PoisonError::into_inner)
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

/// The records to skip, and among them those an earlier run was sending when it was
/// stopped, which have no result line yet: the lines an earlier report lists as sent,
/// partial, unknown or queued, plus those.
fn earlier_report(path: &Path) -> Result<(Lines, Vec<u64>)> {
    let file = File::open(path).map_err(|e| {
        Error::new(
            ErrorKind::NoInput,
            format!("--resume {path:?}: cannot read it: {e}"),
        )
    })?;
    let mut done = Vec::new();
    let mut finished = Vec::new();
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
                finished.push(earlier.line);
                if DONE.contains(&earlier.status.as_str()) {
                    done.push(earlier.line);
                }
            }
            Err(e) => warning(&format!(
                "--resume {path:?}: line {} is not a result line ({e}); ignored",
                i + 1
            )),
        }
    }
    let finished = Lines::from(finished);
    let marks = std::fs::read_to_string(inflight_path(path)).unwrap_or_default();
    let mut interrupted: Vec<u64> = marks
        .lines()
        .filter_map(|slot| slot.trim().parse::<u64>().ok())
        .filter(|line| !finished.contains(*line))
        .collect();
    interrupted.sort_unstable();
    interrupted.dedup();
    done.extend(&interrupted);
    Ok((Lines::from(done), interrupted))
}

/// Line numbers, kept as sorted, disjoint ranges. An earlier run's report lists its
/// records nearly in order, so a million of them take a few ranges: a batch resumed
/// after a million records holds kilobytes, not a hash set's tens of megabytes.
#[derive(Debug, Default, PartialEq, Eq)]
struct Lines {
    /// `(first, last)`, both included, in order, never touching.
    ranges: Vec<(u64, u64)>,
}

impl From<Vec<u64>> for Lines {
    fn from(mut lines: Vec<u64>) -> Lines {
        lines.sort_unstable();
        let mut ranges: Vec<(u64, u64)> = Vec::new();
        for line in lines {
            match ranges.last_mut() {
                Some((_, last)) if line <= last.saturating_add(1) => *last = line.max(*last),
                _ => ranges.push((line, line)),
            }
        }
        ranges.shrink_to_fit();
        Lines { ranges }
    }
}

impl Lines {
    fn contains(&self, line: u64) -> bool {
        let i = self.ranges.partition_point(|&(_, last)| last < line);
        self.ranges.get(i).is_some_and(|&(first, _)| first <= line)
    }
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
    fn lines_keep_runs_as_ranges_and_answer_membership() {
        let lines = Lines::from(vec![5, 3, 4, 9, 1, 3, 10, 12, u64::MAX]);
        assert_eq!(
            lines.ranges,
            [(1, 1), (3, 5), (9, 10), (12, 12), (u64::MAX, u64::MAX)]
        );
        let members: Vec<u64> = (0..14).filter(|&n| lines.contains(n)).collect();
        assert_eq!(members, [1, 3, 4, 5, 9, 10, 12]);
        assert!(lines.contains(u64::MAX) && !lines.contains(u64::MAX - 1));
        let million = Lines::from((1..=1_000_000).rev().collect::<Vec<u64>>());
        assert_eq!(million.ranges, [(1, 1_000_000)]);
        assert!(!Lines::default().contains(0));
    }

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
