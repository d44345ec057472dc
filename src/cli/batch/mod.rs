//! `envoi batch`: many messages over reused SMTP sessions, one result line per record.
//!
//! Senders (`--concurrency`, one by default) each own their SMTP sessions and take turns
//! at the input: each takes the next record (read one at a time, so memory does not grow
//! with the input), sends it, and writes its result line (flushed at once). A batch
//! killed half-way leaves a report, and in-flight marks, that `--resume` trusts.

mod bulk;
mod input;
mod pace;
mod report;
mod status;

use std::fs::File;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use envoi::deliver::{Batch, DeliveryOptions, Policy, Transcript};
use envoi::error::{Error, ErrorKind, Result};
use envoi::message::input::is_stdin;
use envoi::message::records::Record;
use envoi::message::{self, address};
use envoi::outbox::fleet::{self, Claim, Fleet, Held, Lease, Taken};
use envoi::outbox::submit::{
    BatchSlots, DefaultSender, Deferrals, Signing, check_batch, prepare, settle_record,
};
use envoi::outbox::{DeliveryLog, Outbox, Status};
use envoi::profile::{Env, resolve};

use crate::cli::args::{BatchArgs, Rate};
use crate::cli::progress::Progress;
use crate::cli::render::{Notices, transcript, warning};
use bulk::Bulk;
use input::{format, open_input, records, same_file};
use pace::{Pacer, pace, send_slowing};
use report::{
    Line, Marks, Output, Resume, Tally, dry_run_record, earlier_report, failed_record, hash_text,
    inflight_path, open_earlier, open_report, result_line, summary,
};

/// What every sender shares. Only the pacer changes, under its lock.
struct Shared<'a> {
    /// The recipient policy: a record that breaks it is `invalid`.
    policy: &'a envoi::profile::RecipientPolicy,
    /// The policy's messages per hour and day, when it caps them: counted in the
    /// outbox folder or the shared ledger, as `send`'s are.
    counts: Option<&'a BatchSlots>,
    /// `--from`, else the profile's `from`: for records without From.
    sender: &'a DefaultSender,
    /// The profile's DKIM key, read once for the whole batch.
    signing: &'a Signing,
    /// Profile `outbox = true`: a record still deferred after its retries is queued.
    deferrals: Option<Deferrals<'a>>,
    marks: &'a Marks,
    pacer: &'a Mutex<Pacer>,
    /// Where each record's outcome is logged (`--log`, the profile's `log`).
    log: &'a DeliveryLog,
    /// `--campaign`: how its records are claimed (each sender has its own connection).
    campaign: Campaign,
    /// The list headers and the suppression list (docs/batch.md, "Bulk mail").
    bulk: &'a Bulk,
}

/// How a worker of a `--campaign` claims its records.
#[derive(Debug, Clone, Copy)]
struct Campaign {
    /// A claim's lease: the record's deadline (`--timeout`) and a grace to record the
    /// outcome. Past it, a claim without an outcome is `unknown`.
    lease: Duration,
    /// `--resend-unknown`.
    resend_unknown: bool,
    /// `--rate` for the whole fleet, in messages a second: taken from the campaign's
    /// bucket in the database.
    rate: Option<f64>,
}

/// The time a worker has, past the record's deadline, to write its outcome before its
/// claim counts as dead.
const LEASE_GRACE: Duration = Duration::from_secs(5);

/// A claim's lease set longer ago than this is renewed before the send, which also
/// proves the claim still this worker's (a fence): one set more recently cannot have
/// passed.
const RENEW_AFTER: Duration = Duration::from_millis(500);

/// What a sender hands back for one record: its result line, or the error that stops
/// the batch before the record was tried.
type Outcome = Result<Line>;

/// Runs `envoi batch`; the exit code. An `Err` is a failure before the first record.
pub fn run(args: &BatchArgs) -> Result<u8> {
    let started = Instant::now();
    let resolved = resolve(&args.flags(), &Env::from_process()?)?;
    check_campaign_flags(args, &resolved)?;
    if args.status {
        return status::run(args, &resolved);
    }
    let connection = resolved.connection()?;
    if !connection.fallbacks.is_empty() || !connection.by_domain.is_empty() {
        // Its sessions are kept open per profile: a route would need one set per profile,
        // and a record must not silently take the first profile alone.
        return Err(Error::config(format!(
            "--profile {}: a route ([routes]) is for send and sendmail; batch sends through \
             one profile: give --profile {} (or another of the route's) instead",
            connection.route.profile.as_deref().unwrap_or_default(),
            connection.name,
        )));
    }
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
    // A dry run sends nothing, so one sender lists the records in the input's order.
    let senders = if args.dry_run {
        1
    } else {
        usize::try_from(args.concurrency).unwrap_or(1).max(1)
    };
    let format = format(args)?;
    // Read up to the first record (a CSV header, the templates), and check the sender
    // and the DKIM key, before the report is made: a usage error leaves no report behind.
    let records = records(args, format, open_input(args)?)?;
    let flag = args
        .from
        .as_deref()
        .map(|from| address::parse_single("--from", from))
        .transpose()?;
    let sender = DefaultSender::new(flag, Some(connection))?;
    let signing = Signing::of(Some(connection))?;
    if !args.dry_run {
        // A campaign's records are claimed once each in the shared ledger: its own
        // guard against a second copy, as --report and --resume are a batch's.
        check_batch(
            &resolved.policy,
            args.report.is_some() || args.campaign.is_some(),
        )?;
    }
    let bulk = Bulk::of(args, connection)?;
    if args.unsubscribe_url.is_some() && !signing.signs() && !args.dry_run {
        // RFC 8058 §4: receivers act on a one-click link only when a DKIM signature
        // covers it.
        warning(
            "--unsubscribe-url without a DKIM key (the profile's dkim_*): receivers ignore \
             an unsigned one-click link; see docs/dkim.md",
        );
    }
    // Before anything is written or sent: a ledger that cannot be reached is 75, and
    // nothing may go (no other worker could tell this one sent it).
    let mut fleets = match (&args.campaign, args.dry_run) {
        (Some(name), false) => {
            let deadline = Instant::now() + Duration::from_secs(args.delivery.timeout);
            (0..senders)
                .map(|_| fleet::connect_sender(&resolved, name, deadline).map(Some))
                .collect::<Result<Vec<_>>>()?
        }
        _ => Vec::new(),
    };
    fleets.resize_with(senders, || None);
    // Locked first, so the report is read and written by this run alone (BA10).
    let report = args.report.as_deref().map(open_report).transpose()?;
    let (resume, interrupted) = match (&args.resume, &report) {
        (Some(path), Some(report)) if same_file(path, report) => earlier_report(path, report)?,
        (Some(path), _) => earlier_report(path, &open_earlier(path)?)?,
        (None, _) => (Resume::default(), Vec::new()),
    };
    // Held to the end of the run, past the removal of the in-flight file: a batch
    // waiting for the report must not find that file still there.
    let lock = report
        .as_ref()
        .map(File::try_clone)
        .transpose()
        .map_err(|e| Error::new(ErrorKind::NoInput, format!("--report: {e}")))?;
    let mut output = Output {
        report,
        json: args.output.json,
    };
    let mut tally = Tally::default();
    for (line, hash) in interrupted {
        // Listed now, and skipped below.
        let mut line = Line::unsent(
            line,
            Status::Unknown,
            ErrorKind::OutcomeUnknown,
            "an earlier run was stopped while sending this record: it may have been \
             delivered; check before sending it again"
                .to_owned(),
        );
        line.hash = hash.map(hash_text);
        tally.count(&line);
        output.write(&line)?;
    }
    let options = DeliveryOptions {
        policy: Policy {
            retries: args.delivery.retries,
            retry_max: Duration::from_secs(args.delivery.retry_max_secs),
            deadline: None,
            allow_partial: args.delivery.allow_partial,
        },
        transcript: args.output.verbose.then_some(transcript as Transcript),
        dsn: None,
    };
    let outbox = if connection.profile.outbox && !args.dry_run {
        Some(Outbox::open(resolved.outbox_dir()?)?)
    } else {
        None
    };
    // A password is fetched once; the other senders share it (and renew OAuth2 tokens
    // themselves, from the shared cache). A dry run fetches none and connects nowhere.
    let batches: Vec<Option<Batch>> = if args.dry_run {
        vec![None]
    } else {
        let first = Batch::new(
            &connection.profile,
            options.clone(),
            Duration::from_secs(args.delivery.timeout),
            args.per_session,
            &mut Notices,
        )?;
        let mut batches: Vec<Option<Batch>> = (1..senders).map(|_| Some(first.sibling())).collect();
        batches.insert(0, Some(first));
        batches
    };
    // Created once the batch can start, so a failure before leaves nothing behind.
    let log = DeliveryLog::of(&resolved, Some(connection));
    let marks = Marks::create(args.report.as_deref().zip(output.report.as_ref()), senders)?;
    let campaign = Campaign {
        lease: Duration::from_secs(args.delivery.timeout) + LEASE_GRACE,
        resend_unknown: args.resend_unknown,
        rate: args
            .rate
            .filter(|_| args.campaign.is_some())
            .map(|rate| 1.0 / rate.interval.as_secs_f64().max(1e-9)),
    };
    // A campaign's --rate is the fleet's bucket; this worker's own pacer only slows
    // down for a server that throttles.
    let pacer = Mutex::new(Pacer::new(match args.rate {
        Some(rate) if campaign.rate.is_none() => rate.interval,
        _ => Duration::ZERO,
    }));
    let capped = resolved.policy.max_per_hour.is_some() || resolved.policy.max_per_day.is_some();
    let slots = if capped && !args.dry_run {
        BatchSlots::open(&resolved)?
    } else {
        None
    };
    let shared = Shared {
        policy: &resolved.policy,
        counts: slots.as_ref(),
        sender: &sender,
        signing: &signing,
        deferrals: outbox.as_ref().map(|outbox| Deferrals {
            outbox,
            connection,
            options: &options,
        }),
        marks: &marks,
        pacer: &pacer,
        log: &log,
        campaign,
        bulk: &bulk,
    };
    let books = Mutex::new(Books {
        records,
        resume,
        ended: false,
        output,
        output_broken: false,
        tally,
        progress: Progress::start(args.input(), format),
        breaker: Breaker {
            limit: args.max_connect_failures,
            ..Breaker::default()
        },
        last_taken: 0,
    });
    let sessions = thread::scope(|scope| {
        let workers: Vec<_> = batches
            .into_iter()
            .zip(fleets)
            .enumerate()
            .map(|(sender, (mut batch, mut fleet))| {
                let (shared, books) = (&shared, &books);
                scope.spawn(move || {
                    serve(shared, books, batch.as_mut(), fleet.as_mut(), sender);
                    batch.map_or(0, |batch| {
                        let opened = batch.sessions_opened();
                        batch.finish();
                        opened
                    })
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| worker.join().unwrap_or(0))
            .sum::<u32>()
    });
    let Books {
        mut records,
        mut tally,
        progress,
        mut resume,
        mut ended,
        breaker,
        last_taken,
        ..
    } = books.into_inner().unwrap_or_else(PoisonError::into_inner);
    progress.finish();
    if let Some(why) = &breaker.tripped {
        // Counted, not sent: what `--resume` would skip is not "not tried".
        let not_tried = (!ended && !is_stdin(args.input())).then(|| {
            let mut count = 0_u64;
            for record in records.by_ref() {
                match record {
                    Ok(record) if resume.skips(record.line, record.hash) => {}
                    Ok(_) => count += 1,
                    Err(_) => break,
                }
            }
            ended = true;
            count
        });
        tally.not_tried = not_tried;
        tally.stopped = Some(tripped(args, &breaker, why, last_taken, not_tried, &tally));
    }
    if let (Some(path), true) = (&args.resume, ended) {
        for change in resume.changes(path) {
            warning(&change);
        }
    }
    if let (Some(path), None) = (&args.report, &tally.stopped) {
        // Nothing is in flight any more. (After a stop, a mark may name a record whose
        // result could not be written.)
        drop(marks);
        let _ = std::fs::remove_file(inflight_path(path));
    }
    drop(lock);
    if let Some(e) = &tally.stopped {
        eprintln!("envoi: error: {e}");
    }
    summary(&tally, sessions, started.elapsed());
    Ok(tally.exit_code())
}

/// What the senders take turns at: the next record, and the books of results. Each
/// sender takes its next record and writes its result itself, under one lock, so a lone
/// sender never waits for another thread, and the input is read one record at a time.
struct Books<R> {
    records: R,
    /// The records `--resume` skips.
    resume: Resume,
    /// Every record was read: what `--resume` found missing is really gone.
    ended: bool,
    output: Output,
    /// A result line could not be written: later ones are not tried, and their
    /// records stay marked in flight for `--resume`.
    output_broken: bool,
    tally: Tally,
    progress: Progress,
    /// `--max-connect-failures`: the records in a row that could not reach the server.
    breaker: Breaker,
    /// The line of the last record a sender took.
    last_taken: u64,
}

/// Stops a batch whose server is down (`--max-connect-failures`), instead of waiting out
/// every record's retries: 500 records would take some 50 minutes to all be `deferred`.
#[derive(Default)]
struct Breaker {
    /// Records in a row before the batch stops; 0 never stops.
    limit: u32,
    /// Records in a row, so far, that could not reach the server.
    run: u32,
    /// Why the batch stopped: the last such record's line and error.
    tripped: Option<(u64, String)>,
}

/// Why a batch whose server is down stopped, with what to do: how many records were not
/// tried, and how to send them once the server is up.
fn tripped(
    args: &BatchArgs,
    breaker: &Breaker,
    (line, why): &(u64, String),
    last_taken: u64,
    not_tried: Option<u64>,
    tally: &Tally,
) -> Error {
    let rest = match not_tried {
        Some(count) => format!("{count} record(s) after it were not tried"),
        None => format!("the records after line {last_taken} were not tried"),
    };
    let hint = match &args.report {
        Some(report) => format!(
            "once the server is up, run the batch again with --resume {} to send them and \
             the deferred ones",
            report.display()
        ),
        None if tally.went() == 0 => "once the server is up, run the batch again".to_owned(),
        None => format!(
            "once the server is up, run the batch again; {} record(s) went out already \
             and would go again: give --report FILE to be able to --resume",
            tally.went()
        ),
    };
    Error::new(
        ErrorKind::Temporary,
        format!(
            "the batch stopped: {} record(s) in a row could not reach the server (line {line}: \
             {why}); {rest}; {hint}",
            breaker.run
        ),
    )
}

/// One sender's loop: take a record, send it, write its result, until the records end
/// or the batch stops.
fn serve<R: Iterator<Item = Result<Record>>>(
    shared: &Shared,
    books: &Mutex<Books<R>>,
    mut batch: Option<&mut Batch>,
    mut fleet: Option<&mut Fleet>,
    sender: usize,
) {
    // The books stay whole if a sender panicked holding them: every change to them is
    // one counter, one line written, or one error set.
    let lock = || books.lock().unwrap_or_else(PoisonError::into_inner);
    loop {
        // Its own statement: the lock is released before the record is sent (in a
        // `while let` it would be held through the loop's body).
        let next = lock().next_record();
        let Some((record, hurried)) = next else {
            break;
        };
        if let Some(batch) = batch.as_deref_mut() {
            batch.hurry(hurried);
        }
        let hash = hash_text(record.hash);
        let outcome = send_guarded(
            shared,
            batch.as_deref_mut(),
            fleet.as_deref_mut(),
            sender,
            record,
        )
        .map(|mut line| {
            line.hash = Some(hash);
            line
        });
        lock().finished(outcome);
    }
}

impl<R: Iterator<Item = Result<Record>>> Books<R> {
    /// The next record to send, past those `--resume` skips, and whether the server was
    /// found down by the record before (then it gets one try, no retries); `None` at the
    /// end of the input or once the batch stopped.
    fn next_record(&mut self) -> Option<(Record, bool)> {
        while self.tally.stopped.is_none() {
            let Some(next) = self.records.next() else {
                self.ended = true;
                return None;
            };
            match next {
                Err(e) => self.tally.stopped = Some(e),
                Ok(record) if self.resume.skips(record.line, record.hash) => {
                    self.tally.skipped += 1;
                    self.progress.record(true);
                }
                Ok(record) => {
                    self.last_taken = record.line;
                    return Some((record, self.breaker.run > 0));
                }
            }
        }
        None
    }

    /// A sender's outcome: counted and written.
    fn finished(&mut self, outcome: Outcome) {
        let line = match outcome {
            Ok(line) => line,
            Err(e) => return self.stop(e),
        };
        self.tally.count(&line);
        self.progress.record(line.exit_code == 0);
        if !self.output.listed() {
            if line.status == Status::DryRun {
                println!("{}", dry_run_record(&line));
            } else if line.exit_code != 0 {
                self.progress.say(&failed_record(&line));
            }
        }
        self.trip(&line);
        if !self.output_broken
            && let Err(e) = self.output.write(&line)
        {
            self.output_broken = true;
            self.stop(e);
        }
        if let Some(e) = line.ledger_failed {
            self.stop(e);
            return;
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

    /// Counts a record that could not reach the server, and stops the batch after
    /// `--max-connect-failures` of them in a row. A record that reached it starts the
    /// count again; an invalid one, which never tries, leaves it as it is.
    fn trip(&mut self, line: &Line) {
        if !line.unreachable {
            if line.status != Status::Invalid {
                self.breaker.run = 0;
            }
            return;
        }
        self.breaker.run = self.breaker.run.saturating_add(1);
        if self.breaker.limit > 0
            && self.breaker.run >= self.breaker.limit
            && self.tally.stopped.is_none()
        {
            let why = line.error.clone().unwrap_or_default();
            self.breaker.tripped = Some((line.line, why.clone()));
            // Replaced by the whole story once the senders are done.
            self.stop(Error::new(ErrorKind::Temporary, why));
        }
    }

    /// No record is taken after this; those in flight finish. The first reason wins.
    fn stop(&mut self, e: Error) {
        if self.tally.stopped.is_none() {
            self.tally.stopped = Some(e);
        }
    }
}

/// [`send_record`], with a bug in it turned into a result instead of a hung batch: the
/// record is listed as of unknown outcome and the batch stops.
fn send_guarded(
    shared: &Shared,
    batch: Option<&mut Batch>,
    fleet: Option<&mut Fleet>,
    sender: usize,
    record: Record,
) -> Outcome {
    let line = record.line;
    let to = record.to.clone();
    // A campaign's claim stays after a panic: the record is `unknown` to the other
    // workers once its lease passes, never sent twice.
    let sent = panic::catch_unwind(AssertUnwindSafe(|| match fleet {
        Some(fleet) => send_claimed(shared, batch, fleet, sender, record),
        None => send_record(shared, batch, sender, record, &mut |_| Ok(Go::Send)),
    }));
    sent.unwrap_or_else(|_| {
        Ok(Line {
            fatal: Some(ErrorKind::Internal),
            ..Line::unsent(
                line,
                Status::Unknown,
                ErrorKind::Internal,
                "envoi failed inside while sending this record (a bug, please report it); \
                 it may have been delivered"
                    .to_owned(),
            )
            .to(&to)
        })
    })
}

/// Whether a record may go now ([`send_record`]'s `before_send`): a campaign's claim
/// lost to another worker while this one waited for its turn is not sent.
enum Go {
    Send,
    /// This record's line instead (without its recipients): not sent.
    Lost(Box<Line>),
}

/// When `before_send` is called: before the first send, after this sender's own pace
/// (the last thing before it), or before a throttled record is sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Turn {
    /// Before the pace: a fleet's `--rate` wait.
    Wait,
    /// The last thing before the first send.
    Fence,
    /// Before a throttled record is sent again.
    Again,
}

/// Builds, paces, marks and sends one record on `sender`'s sessions; queues it in the
/// outbox when it is still deferred and the profile says so. Without sessions (a dry
/// run), the record is built and checked, and listed as what would go.
fn send_record(
    shared: &Shared,
    batch: Option<&mut Batch>,
    sender: usize,
    record: Record,
    before_send: &mut dyn FnMut(Turn) -> Result<Go>,
) -> Outcome {
    let prepared = record
        .draft
        .and_then(|draft| shared.bulk.headers(draft, &record.vars, record.line))
        .and_then(|draft| prepare_record(draft, shared, record.line));
    let (prepared, subject) = match prepared {
        Ok(prepared) => prepared,
        Err(e) => {
            let why = e.message().to_owned();
            return Ok(Line::unsent(record.line, Status::Invalid, e.kind(), why).to(&record.to));
        }
    };
    let message_id = prepared.message_id.clone();
    let envelope: Vec<String> = prepared
        .envelope
        .to()
        .iter()
        .map(ToString::to_string)
        .collect();
    // Under policy.redirect_all the envelope is the redirect address alone: the list is
    // about the record's own recipients.
    let listed = if shared.policy.redirect_all.is_some() {
        // Read as the record's draft read them (it was built, so they parse).
        address::parse_lists("To", &record.to)
            .map(|all| all.iter().map(|m| m.email.to_string()).collect())
            .unwrap_or_default()
    } else {
        envelope.clone()
    };
    if let Some(line) = shared.bulk.suppressed(record.line, &listed) {
        return Ok(line);
    }
    let Some(batch) = batch else {
        return Ok(Line::dry_run(record.line, message_id, &envelope, subject));
    };
    if let Some(slots) = shared.counts {
        slots.take(shared.policy).map_err(|e| {
            Error::new(
                e.kind(),
                format!(
                    "the batch stopped at line {}: {e}; that record and those after it were \
                     not tried: run the batch again later with --resume",
                    record.line
                ),
            )
        })?;
    }
    if let Go::Lost(line) = before_send(Turn::Wait)? {
        return Ok((*line).to(&record.to));
    }
    pace(shared.pacer);
    if let Go::Lost(line) = before_send(Turn::Fence)? {
        return Ok((*line).to(&record.to));
    }
    shared.marks.mark(sender, record.line, record.hash)?;
    let mut lost = None;
    // A throttled record is sent again only while its claim is surely this worker's (a
    // ledger that fails then stops the re-sends too: the record ends deferred).
    let sent = send_slowing(
        batch,
        &prepared,
        shared.pacer,
        &mut || match before_send(Turn::Again) {
            Ok(Go::Send) => true,
            Ok(Go::Lost(line)) => {
                lost = Some(*line);
                false
            }
            Err(_) => false,
        },
    );
    if let Some(line) = lost {
        return Ok(line.to(&record.to));
    }
    // Nothing got anywhere, and the last try to open a session failed.
    let unreachable = matches!(&sent, Err(failure) if failure.error.kind() == ErrorKind::Temporary
        && failure.report.delivered.is_empty()
        && failure.report.refused.is_empty()
        && failure.report.data_reply.is_none())
        && batch.unreachable();
    let settled = settle_record(&prepared, sent, shared.deferrals, shared.log, &mut Notices);
    // Redirected (policy.redirect_all), the refusal is the redirect address's, not the
    // record's recipients': it must not put the QA mailbox on the list.
    if shared.policy.redirect_all.is_none() {
        shared.bulk.bounced(&settled.sent);
    }
    let mut line = result_line(record.line, message_id, &envelope, settled.sent);
    line.unreachable = unreachable;
    match settled.queued {
        Some(Ok(id)) => {
            if line.status == Status::Deferred {
                line.status = Status::Queued;
            }
            line.exit_code = 0;
            line.outbox_id = Some(id);
        }
        Some(Err(e)) => {
            let why = line.error.take().unwrap_or_default();
            line.error = Some(format!("{why}; it could not be queued: {e}"));
        }
        None => {}
    }
    Ok(line)
}

/// [`send_record`] for a worker of a `--campaign`: the record is claimed in the shared
/// ledger first (skipped when another worker has it), its outcome written there after.
/// A ledger that fails before the send stops the batch with the record unsent.
fn send_claimed(
    shared: &Shared,
    batch: Option<&mut Batch>,
    fleet: &mut Fleet,
    sender: usize,
    record: Record,
) -> Outcome {
    let Some(digest) = record.digest else {
        // Too long to be read: invalid on every worker, nothing to claim.
        return send_record(shared, batch, sender, record, &mut |_| Ok(Go::Send));
    };
    let campaign = shared.campaign;
    let claimed_at = Instant::now();
    match fleet.claim(
        &digest,
        record.line,
        campaign.lease,
        campaign.resend_unknown,
    )? {
        Claim::Taken(taken) => return Ok(skipped(record.line, &taken).to(&record.to)),
        Claim::Contended(why) => {
            let line = Line::unsent(record.line, Status::Deferred, ErrorKind::Temporary, why);
            return Ok(line.to(&record.to));
        }
        Claim::Mine => {}
    }
    let line = record.line;
    // When the claim's lease was last set (measured from before the statement, so on
    // the safe side of the database's clock): a lease set less than RENEW_AFTER ago
    // cannot have passed, so it needs no fence.
    let mut leased_at = claimed_at;
    let mut lost = false;
    let mut before_send = |turn: Turn| -> Result<Go> {
        let mut renew = |fleet: &mut Fleet, lease: Duration, leased_at: &mut Instant| {
            let at = Instant::now();
            match fleet.renew(&digest, lease)? {
                Lease::Held => {
                    *leased_at = at;
                    Ok(Go::Send)
                }
                Lease::Lost { by } => {
                    lost = true;
                    Ok(Go::Lost(Box::new(claim_lost(line, by))))
                }
            }
        };
        match turn {
            // The fleet's --rate: the token is taken at once, and the lease extended
            // to cover the wait BEFORE sleeping, so the claim cannot pass meanwhile.
            Turn::Wait => {
                let Some(rate) = campaign.rate else {
                    return Ok(Go::Send);
                };
                let wait = fleet.take_token(rate)?;
                if leased_at.elapsed() + wait > RENEW_AFTER
                    && let Go::Lost(line) = renew(fleet, campaign.lease + wait, &mut leased_at)?
                {
                    return Ok(Go::Lost(line));
                }
                thread::sleep(wait);
                Ok(Go::Send)
            }
            // The last thing before the send: the claim is renewed, and proved still
            // this worker's, once waiting took a while.
            Turn::Fence if leased_at.elapsed() <= RENEW_AFTER => Ok(Go::Send),
            Turn::Fence | Turn::Again => renew(fleet, campaign.lease, &mut leased_at),
        }
    };
    let sent = send_record(shared, batch, sender, record, &mut before_send);
    if lost {
        // Another worker has the record now, and writes its outcome: nothing to write.
        return sent;
    }
    let mut line = match sent {
        Ok(line) => line,
        Err(e) => {
            // Nothing went: the claim is freed for a later run.
            let _ = fleet.finish(&digest, Status::Deferred, None);
            return Err(Error::new(
                e.kind(),
                format!("line {line}: {}", e.message()),
            ));
        }
    };
    match fleet.finish(&digest, line.status, line.message_id.as_deref()) {
        Ok(true) => {}
        Ok(false) => warning(&format!(
            "line {}: this worker's claim of the record passed its lease before its \
             outcome ({}) could be written, and another run took it over \
             (--resend-unknown): it may go twice",
            line.line, line.status
        )),
        Err(e) => {
            line.ledger_failed = Some(Error::new(
                e.kind(),
                format!(
                    "line {} was {}, but its outcome could not be written to the campaign's \
                     ledger ({e}); the other workers will count it unknown once its lease \
                     passes; the records after it were not tried",
                    line.line, line.status
                ),
            ));
        }
    }
    Ok(line)
}

/// The result line of a record whose claim another worker took over while this one
/// waited for its turn (its lease passed, and a run with `--resend-unknown` took it):
/// not sent by this worker. `duplicate` (exit 0), as any record another worker is
/// sending: that worker sends it and writes its outcome, and this one surely sent
/// nothing, so `unknown` (which says "it may have gone") would be wrong. A row gone
/// from the ledger (deleted by hand) is `deferred`: nobody has it, a later run sends it.
fn claim_lost(line: u64, by: Option<String>) -> Line {
    match by {
        Some(by) => {
            let mut lost = Line::unsent(
                line,
                Status::Duplicate,
                ErrorKind::OutcomeUnknown,
                format!(
                    "claim lost to worker {by}; not sent: its lease passed while this \
                     worker waited for its turn, and that worker took the record over"
                ),
            );
            lost.exit_code = 0;
            lost.note = lost.error.take();
            lost
        }
        None => Line::unsent(
            line,
            Status::Deferred,
            ErrorKind::Temporary,
            "claim lost: the campaign record's row is gone from the ledger; not sent: run \
             the batch again"
                .to_owned(),
        ),
    }
}

/// The result line of a record another worker of the campaign has: `duplicate` (exit 0)
/// when it sent it, failed it for good, or is sending it; `unknown` (75) when its
/// outcome is unknown.
fn skipped(line: u64, taken: &Taken) -> Line {
    let status = taken.status();
    let mut skipped = Line::unsent(line, status, ErrorKind::OutcomeUnknown, taken.describe());
    if status == Status::Duplicate {
        skipped.exit_code = 0;
        skipped.note = skipped.error.take();
        if let Held::Done { message_id, .. } = &taken.held {
            skipped.message_id.clone_from(message_id);
        }
    }
    skipped
}

/// `--campaign`, `--ledger` and `--resend-unknown` together: a campaign needs a
/// PostgreSQL ledger (64 naming both flags); `--ledger` given to batch needs a campaign
/// (the ledger is where the campaign's records are claimed, and a name made up from the
/// input file would join unrelated batches that share a file name).
fn check_campaign_flags(args: &BatchArgs, resolved: &envoi::profile::Resolved) -> Result<()> {
    match (&args.campaign, &resolved.ledger, &args.ledger) {
        (Some(name), None, _) => Err(Error::usage(format!(
            "--campaign {name}: a campaign's records are claimed in a shared PostgreSQL \
             ledger: give --ledger postgres://USER@HOST/DB too (or set $ENVOI_LEDGER or the \
             profile's `ledger`)"
        ))),
        (None, _, Some(_)) => Err(Error::usage(
            "--ledger: with batch, the ledger is where a --campaign's records are claimed: \
             give --campaign NAME too, the same on every worker (e.g. --campaign \
             invoices-2026-12)",
        )),
        _ => Ok(()),
    }
}

/// A record's message, checked, built and signed, and its subject; an error names the
/// record's line.
fn prepare_record(
    draft: envoi::draft::Draft,
    shared: &Shared,
    line: u64,
) -> Result<(message::Prepared, String)> {
    let at_line = |e: Error| {
        if e.message().starts_with("line ") {
            e
        } else {
            Error::new(e.kind(), format!("line {line}: {}", e.message()))
        }
    };
    let email = draft.into_email().map_err(at_line)?;
    let from = shared.sender.pick(email.from.as_ref()).map_err(at_line)?;
    let subject = email.subject.clone();
    let prepared = prepare(
        email,
        &from,
        shared.signing,
        shared.policy,
        SystemTime::now(),
    )
    .map_err(at_line)?;
    Ok((prepared, subject))
}
