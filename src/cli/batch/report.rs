//! What a batch says about each record: the result lines, the report and its in-flight
//! marks, what `--resume` reads back, and the summary and exit code.

use std::collections::HashMap;
use std::fs::{File, TryLockError};
use std::io::{self, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use envoi::deliver::{BatchSent, Failure, Report};
use envoi::durable::{StateAccess, open_state_file};
use envoi::error::{Error, ErrorKind, Result};
use envoi::message::records::{CappedLine, MAX_RECORD, read_line_capped};
use envoi::outbox::{ExitRule, Status};
use serde::{Deserialize, Serialize};

use crate::cli::render::warning;

/// One result line.
#[derive(Debug, Serialize)]
pub(super) struct Line {
    /// The record's line in the input.
    pub(super) line: u64,
    /// The record's content hash ([`envoi::message::records::record_hash`], 16 hex
    /// digits): what `--resume` knows the record by.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) hash: Option<String>,
    /// sent, saved, partial, refused, invalid, deferred, queued, unknown, failed,
    /// duplicate (`--campaign`: another worker's record), or suppressed.
    pub(super) status: Status,
    pub(super) message_id: Option<String>,
    pub(super) recipients: Vec<Recipient>,
    /// The server's answer to the final dot.
    pub(super) data_reply: Option<String>,
    /// The HTTPS mail API's id for the message (Graph's `request-id`, Gmail's `id`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) service_id: Option<String>,
    /// What `envoi send` would have exited with for this record.
    pub(super) exit_code: u8,
    pub(super) error: Option<String>,
    /// The outbox entry that now owns the record's retries (profile `outbox = true`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) outbox_id: Option<String>,
    /// `--dry-run`: the subject the record's message would have.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) subject: Option<String>,
    /// `--campaign`: the record another worker sent, failed for good, or is sending, and
    /// which worker (its line is `duplicate`, this run sent nothing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) note: Option<String>,
    /// `--campaign`: the shared ledger failed after the record was tried; the batch
    /// stops once its line is written.
    #[serde(skip)]
    pub(super) ledger_failed: Option<Error>,
    /// A failure every later record would meet too (login, certificate, configuration).
    #[serde(skip)]
    pub(super) fatal: Option<ErrorKind>,
    /// The record could not reach the server: no session could be opened
    /// (`--max-connect-failures` counts these).
    #[serde(skip)]
    pub(super) unreachable: bool,
}

impl Line {
    /// The line of a record that never reached a server in this run: no Message-ID, no
    /// recipient answers.
    pub(super) fn unsent(line: u64, status: Status, kind: ErrorKind, why: String) -> Line {
        Line {
            line,
            hash: None,
            status,
            message_id: None,
            recipients: Vec::new(),
            data_reply: None,
            service_id: None,
            exit_code: kind.exit_code(),
            error: Some(why),
            outbox_id: None,
            subject: None,
            note: None,
            ledger_failed: None,
            fatal: None,
            unreachable: false,
        }
    }

    /// A record `--dry-run` built and checked: what would go, to whom (`not_sent`).
    pub(super) fn dry_run(
        line: u64,
        message_id: String,
        envelope: &[String],
        subject: String,
    ) -> Line {
        Line {
            line,
            hash: None,
            status: Status::DryRun,
            message_id: Some(message_id),
            recipients: Vec::new(),
            data_reply: None,
            service_id: None,
            exit_code: 0,
            error: None,
            outbox_id: None,
            subject: Some(subject),
            note: None,
            ledger_failed: None,
            fatal: None,
            unreachable: false,
        }
        .to(envelope)
    }

    /// Names the record's recipients as it gives them (`not_sent`): a line without a
    /// Message-ID is found by them, not only by its line number.
    pub(super) fn to(self, to: &[String]) -> Line {
        Line {
            recipients: to
                .iter()
                .map(|address| Recipient {
                    address: address.clone(),
                    status: "not_sent",
                    code: None,
                    reply: None,
                })
                .collect(),
            ..self
        }
    }
}

/// One recipient of a record and the server's answer to it.
#[derive(Debug, Serialize)]
pub(super) struct Recipient {
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
    /// Absent from the lines of an envoi older than hashes: those match by line.
    hash: Option<String>,
    status: String,
}

/// A record's hash as a report line and the in-flight file write it.
pub(super) fn hash_text(hash: u64) -> String {
    format!("{hash:016x}")
}

/// The counts of the summary, and the exit code they make.
#[derive(Default)]
pub(super) struct Tally {
    /// Records per status, in the order of [`Status::ALL`].
    counts: [u64; Status::ALL.len()],
    pub(super) skipped: u64,
    /// The exit code the records make.
    rule: ExitRule,
    /// The batch stopped early with this error.
    pub(super) stopped: Option<Error>,
    /// Records left in the input when the batch stopped because the server was down
    /// (not counted for standard input).
    pub(super) not_tried: Option<u64>,
}

impl Tally {
    pub(super) fn count(&mut self, line: &Line) {
        if let Some(i) = Status::ALL.iter().position(|s| *s == line.status) {
            self.counts[i] += 1;
        }
        // The kind of the line's exit code: kinds that share a code are equally serious.
        let kind = ErrorKind::ALL
            .into_iter()
            .find(|kind| kind.exit_code() == line.exit_code);
        self.rule.add(kind);
    }

    /// The records with `status`.
    fn of(&self, status: Status) -> u64 {
        let i = Status::ALL.iter().position(|s| *s == status);
        i.map_or(0, |i| self.counts[i])
    }

    /// Records that went out: sent, saved or partial.
    pub(super) fn went(&self) -> u64 {
        self.of(Status::Sent) + self.of(Status::Saved) + self.of(Status::Partial)
    }

    pub(super) fn exit_code(&self) -> u8 {
        match &self.stopped {
            Some(e) => e.kind().exit_code(),
            None => self.rule.exit_code(),
        }
    }
}

/// Where result lines go.
pub(super) struct Output {
    pub(super) report: Option<File>,
    pub(super) json: bool,
}

impl Output {
    /// Whether the result lines go somewhere (`--report`, `--json`): else each failed
    /// record gets a line on stderr, or nothing would say which ones failed.
    pub(super) fn listed(&self) -> bool {
        self.report.is_some() || self.json
    }

    /// Writes one line to the report (flushed to the OS before the record's in-flight
    /// mark is cleared) and to standard output with `--json`.
    pub(super) fn write(&mut self, line: &Line) -> Result<()> {
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

/// Next to the report, `REPORT.inflight` has one line per sender: the line and hash of
/// the last record that sender started to send (blank before its first), after a first
/// line `@OFFSET PID`: the report's length when the run began, where its result lines
/// start, and the process that writes them. A batch killed leaves it behind, and `--resume` lists the records it names
/// that have no result line from that run (an earlier run's `deferred` line for the
/// record does not count) as `unknown` instead of sending them again; a mark whose
/// record has its result line is stale and ignored, so marks are never cleared (that
/// would cost two more system calls per record). Removed when the batch ends.
pub(super) fn inflight_path(report: &Path) -> PathBuf {
    let mut path = report.as_os_str().to_owned();
    path.push(".inflight");
    PathBuf::from(path)
}

/// Width of a line number in the in-flight file, then a space and the 16 hex digits of
/// the record's hash: each sender's slot is rewritten in place, never truncated, so a
/// kill mid-write leaves the other slots whole.
const INFLIGHT_WIDTH: usize = 20;
const SLOT: usize = INFLIGHT_WIDTH + 1 + 16;
/// The first line: `@`, the report's length, a space, the process id (10 wide), `\n`.
const HEADER: usize = 1 + INFLIGHT_WIDTH + 1 + 10 + 1;

/// The in-flight file (nothing without `--report`). A sender marks its own slot before
/// it sends, with a positioned write: one system call, and no lock, since no sender
/// moves a position the others use.
pub(super) struct Marks {
    file: Option<File>,
}

impl Marks {
    /// Creates the file with `senders` blank slots. The caller holds the report's lock,
    /// so no other batch uses this file; it is opened as a state file (never through a
    /// link, only this user's own) and emptied only then (BA06).
    pub(super) fn create(report: Option<(&Path, &File)>, senders: usize) -> Result<Marks> {
        let Some((report, report_file)) = report else {
            return Ok(Marks { file: None });
        };
        let path = inflight_path(report);
        let opened = open_state_file("--report's in-flight file", &path, StateAccess::Write)?;
        let mut file = opened.file;
        let failed = |e: io::Error| {
            Error::new(
                ErrorKind::NoInput,
                format!("--report {report:?}: cannot write {path:?}: {e}"),
            )
        };
        let blank = format!("{:>SLOT$}\n", "");
        report_file
            .metadata()
            .and_then(|meta| {
                let header = format!(
                    "@{:>INFLIGHT_WIDTH$} {:>10}\n",
                    meta.len(),
                    std::process::id()
                );
                file.set_len(0)?;
                file.write_all(format!("{header}{}", blank.repeat(senders)).as_bytes())
            })
            .map_err(failed)?;
        Ok(Marks { file: Some(file) })
    }

    /// Writes `line` and `hash` into `sender`'s slot.
    pub(super) fn mark(&self, sender: usize, line: u64, hash: u64) -> Result<()> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        let text = format!("{line:>INFLIGHT_WIDTH$} {}\n", hash_text(hash));
        let offset = (HEADER + sender * (SLOT + 1)) as u64;
        write_all_at(file, text.as_bytes(), offset).map_err(|e| {
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

/// Writes all of `bytes` at `offset` of `file`, leaving no shared position to guard.
#[cfg(unix)]
fn write_all_at(file: &File, bytes: &[u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, bytes, offset)
}

/// Writes all of `bytes` at `offset` of `file` (Windows moves the file's position too,
/// which nothing else of the in-flight file uses).
#[cfg(windows)]
fn write_all_at(file: &File, mut bytes: &[u8], mut offset: u64) -> io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !bytes.is_empty() {
        match file.seek_write(bytes, offset)? {
            0 => return Err(io::ErrorKind::WriteZero.into()),
            n => {
                bytes = &bytes[n..];
                offset += n as u64;
            }
        }
    }
    Ok(())
}

/// Opens `--report` (a state file: no link, this user's, 0600) and locks it for the
/// whole run (BA10): a second batch on the same report would send the same records
/// again. The lock goes with the file (and its clones) when the process ends, even when
/// it is killed.
pub(super) fn open_report(path: &Path) -> Result<File> {
    let opened = open_state_file("--report", path, StateAccess::Append)?;
    tightened("--report", path, opened.tightened_from);
    match opened.file.try_lock() {
        Ok(()) => Ok(opened.file),
        Err(TryLockError::WouldBlock) => {
            // The holder's process id, once it has written its in-flight file.
            let pid = read_marks(path)
                .ok()
                .and_then(|marks| marks.pid)
                .map(|pid| format!(" (pid {pid})"))
                .unwrap_or_default();
            Err(Error::new(
                ErrorKind::Temporary,
                format!(
                    "--report {}: another envoi batch{pid} is using it; wait for it to end, or \
                     give another --report",
                    path.display()
                ),
            ))
        }
        Err(TryLockError::Error(e)) => Err(Error::new(
            ErrorKind::NoInput,
            format!("--report {}: cannot lock it: {e}", path.display()),
        )),
    }
}

/// Opens `--resume` when it is not the report itself, with a shared lock: a batch
/// writing it holds it exclusively, and what it has not yet written would be sent again.
pub(super) fn open_earlier(path: &Path) -> Result<File> {
    let opened = open_state_file("--resume", path, StateAccess::Read)?;
    tightened("--resume", path, opened.tightened_from);
    match opened.file.try_lock_shared() {
        Ok(()) => Ok(opened.file),
        Err(TryLockError::WouldBlock) => Err(Error::new(
            ErrorKind::Temporary,
            format!(
                "--resume {}: another envoi batch is writing it; wait for it to end",
                path.display()
            ),
        )),
        Err(TryLockError::Error(e)) => Err(Error::new(
            ErrorKind::NoInput,
            format!("--resume {}: cannot lock it: {e}", path.display()),
        )),
    }
}

/// Says that a state file others could read was made private.
fn tightened(label: &str, path: &Path, from: Option<u32>) {
    if let Some(mode) = from {
        warning(&format!(
            "{label} {}: others could read it (mode {mode:o}); it is now 0600",
            path.display()
        ));
    }
}

/// A record an earlier run was sending when it was stopped: its line, and its hash when
/// the in-flight mark has one (older marks have the line alone).
pub(super) type Interrupted = (u64, Option<u64>);

/// What `--resume` skips, read from an earlier report (`file`, read from its start) and
/// the in-flight marks beside it (at `path`.inflight); and the records an earlier run
/// was sending when it was stopped, which have no result line: `(line, hash)`, each to
/// be listed `unknown` now.
pub(super) fn earlier_report(path: &Path, file: &File) -> Result<(Resume, Vec<Interrupted>)> {
    let cannot = |at: String, e: io::Error| {
        Error::new(
            ErrorKind::NoInput,
            format!("--resume {}: cannot read {at}: {e}", path.display()),
        )
    };
    let mut reader = file;
    reader
        .seek(SeekFrom::Start(0))
        .map_err(|e| cannot("it".to_owned(), e))?;
    let mut reader = BufReader::new(reader);
    let mut resume = Resume::default();
    let Marked {
        since, mut marks, ..
    } = read_marks(path)?;
    let mut hashless = 0_u64;
    let mut buf = Vec::new();
    // Where the line being read starts in the report.
    let mut at = 0_u64;
    for i in 1.. {
        let start = at;
        let read = read_line_capped(&mut reader, &mut buf, MAX_RECORD)
            .map_err(|e| cannot(format!("line {i}"), e))?;
        at = reader
            .stream_position()
            .map_err(|e| cannot(format!("line {i}"), e))?;
        let text = match read {
            CappedLine::End => break,
            CappedLine::Line => String::from_utf8_lossy(&buf),
            CappedLine::TooLong => {
                warning(&format!(
                    "--resume {}: line {i} is longer than {} MiB, not a result line; ignored",
                    path.display(),
                    MAX_RECORD >> 20
                ));
                continue;
            }
        };
        if text.trim().is_empty() {
            continue;
        }
        let earlier = match serde_json::from_str::<Earlier>(&text) {
            Ok(earlier) => earlier,
            Err(e) => {
                warning(&format!(
                    "--resume {}: line {i} is not a result line ({e}); ignored",
                    path.display()
                ));
                continue;
            }
        };
        let hash = earlier
            .hash
            .as_deref()
            .and_then(|h| u64::from_str_radix(h, 16).ok());
        if start >= since {
            // The result of a marked record, written by the run that marked it.
            marks.retain(|&mark| mark != (earlier.line, hash) && mark != (earlier.line, None));
        }
        let done = Status::named(&earlier.status).is_some_and(Status::may_have_reached);
        match hash {
            Some(hash) => resume.listed(hash, earlier.line, done),
            None => {
                hashless += 1;
                if done {
                    resume.lines.insert(earlier.line);
                }
            }
        }
    }
    if hashless > 0 {
        warning(&format!(
            "--resume {}: {hashless} result line(s) have no record hash (an older envoi wrote \
             them): their records are matched by line number only; if the input changed since, \
             check them by hand",
            path.display()
        ));
    }
    let mut interrupted = marks;
    interrupted.sort_unstable();
    interrupted.dedup();
    for &(line, hash) in &interrupted {
        match hash {
            Some(hash) => resume.listed(hash, line, true),
            None => resume.lines.insert(line),
        }
    }
    Ok((resume, interrupted))
}

/// What the in-flight file beside a report says.
#[derive(Default)]
struct Marked {
    /// Where the run that wrote it began to write the report (0 for an older envoi's
    /// marks, which have no such line).
    since: u64,
    /// That run's process.
    pid: Option<u32>,
    /// The records the marks name, `(line, hash)` (an older mark has the line alone).
    marks: Vec<Interrupted>,
}

/// The in-flight file beside the report `path`; nothing when there is none.
fn read_marks(path: &Path) -> Result<Marked> {
    let marks_path = inflight_path(path);
    if std::fs::symlink_metadata(&marks_path).is_err() {
        return Ok(Marked::default());
    }
    let opened = open_state_file("--resume's in-flight file", &marks_path, StateAccess::Read)?;
    let mut text = String::new();
    // The file holds one short slot per sender.
    io::Read::read_to_string(&mut io::Read::take(&opened.file, 1 << 20), &mut text).map_err(
        |e| {
            Error::new(
                ErrorKind::NoInput,
                format!("--resume: cannot read {}: {e}", marks_path.display()),
            )
        },
    )?;
    let mut marked = Marked::default();
    for slot in text.lines() {
        if let Some(header) = slot.strip_prefix('@') {
            let mut parts = header.split_whitespace();
            marked.since = parts.next().and_then(|n| n.parse().ok()).unwrap_or(0);
            marked.pid = parts.next().and_then(|n| n.parse().ok());
            continue;
        }
        let mut parts = slot.split_whitespace();
        let Some(Ok(line)) = parts.next().map(str::parse::<u64>) else {
            continue;
        };
        let hash = parts.next().and_then(|h| u64::from_str_radix(h, 16).ok());
        marked.marks.push((line, hash));
    }
    Ok(marked)
}

/// What `--resume` skips: the records an earlier report lists as sent, partial, unknown
/// or queued, known by their content hash, so a record that moved to another line (the
/// input was edited) is still skipped, and a new one on a line the report names is still
/// sent (BA12). Lines of an older envoi, without a hash, match by line number.
///
/// Memory: one entry per record of the report (about 30 bytes), so a batch resumed after
/// a million records holds some 30 MB.
#[derive(Default)]
pub(super) struct Resume {
    /// Every hash a result line carries, and what is known of its record.
    sent: HashMap<u64, Listed>,
    /// Records listed as done by lines without a hash.
    lines: Lines,
    /// The last line of a record the report lists as done, with a hash.
    last_listed: u64,
    /// Records skipped on another line than the report's: how many, and the first
    /// (the report's line, the line now).
    moved: u64,
    first_moved: Option<(u64, u64)>,
    /// Records sent as new on lines the report lists with another record: how many, and
    /// the first few lines.
    new: u64,
    first_new: Vec<u64>,
}

/// One hash of an earlier report.
struct Listed {
    /// The report's line for the first record with this hash that may have been sent.
    line: u64,
    /// How many records with this hash may have been sent and are not yet matched by a
    /// record of this input: identical records are each skipped once.
    left: u32,
    /// No record of this input has matched this hash yet.
    unmatched: bool,
}

/// How many examples a warning names.
const EXAMPLES: usize = 5;

impl Resume {
    /// A result line with this hash at `line`; `done` when its status is one `--resume`
    /// skips.
    fn listed(&mut self, hash: u64, line: u64, done: bool) {
        let entry = self.sent.entry(hash).or_insert(Listed {
            line,
            left: 0,
            unmatched: true,
        });
        if done {
            if entry.left == 0 {
                entry.line = line;
            }
            entry.left = entry.left.saturating_add(1);
            self.last_listed = self.last_listed.max(line);
        }
    }

    /// Whether the record at `line` with `hash` is skipped: an earlier report lists a
    /// record with its content as (maybe) sent, not yet matched; or, without a hash,
    /// its line.
    pub(super) fn skips(&mut self, line: u64, hash: u64) -> bool {
        if let Some(entry) = self.sent.get_mut(&hash)
            && entry.left > 0
        {
            entry.left -= 1;
            if entry.unmatched && entry.line != line {
                self.moved += 1;
                self.first_moved.get_or_insert((entry.line, line));
            }
            entry.unmatched = false;
            return true;
        }
        if self.lines.contains(line) {
            return true;
        }
        if line <= self.last_listed && !self.sent.contains_key(&hash) {
            self.new += 1;
            if self.first_new.len() < EXAMPLES {
                self.first_new.push(line);
            }
        }
        false
    }

    /// Once the whole input was read: what changed in it since the earlier report
    /// (`path`), as warnings. Nothing when it is the same.
    pub(super) fn changes(&self, path: &Path) -> Vec<String> {
        let shown = path.display();
        let mut said = Vec::new();
        if let Some((was, now)) = self.first_moved {
            said.push(format!(
                "--resume {shown}: the input changed since the report: {} record(s) it lists \
                 as sent are now on other lines (the report's line {was} is line {now} now); \
                 they were matched by content and not sent again",
                self.moved
            ));
        }
        if !self.first_new.is_empty() {
            said.push(format!(
                "--resume {shown}: {} record(s) are new since the report (line {}{}); they \
                 were sent",
                self.new,
                join(&self.first_new),
                if self.new > self.first_new.len() as u64 {
                    ", …"
                } else {
                    ""
                }
            ));
        }
        let mut gone: Vec<u64> = self
            .sent
            .values()
            .filter(|entry| entry.left > 0 && entry.unmatched)
            .map(|entry| entry.line)
            .collect();
        if !gone.is_empty() {
            gone.sort_unstable();
            let count = gone.len();
            gone.truncate(EXAMPLES);
            said.push(format!(
                "--resume {shown}: {count} record(s) the report lists as sent are no longer \
                 in the input (the report's line {}{})",
                join(&gone),
                if count > EXAMPLES { ", …" } else { "" }
            ));
        }
        said
    }
}

/// `1, 2, 3`.
fn join(lines: &[u64]) -> String {
    lines
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Line numbers, kept as sorted, disjoint ranges, built one line at a time as the report
/// is read. An earlier run's report lists its records nearly in order, so a million of
/// them take a few ranges: a batch resumed after a million records holds kilobytes, not
/// a hash set's (or even a list's) megabytes.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Lines {
    /// `(first, last)`, both included, in order, never touching.
    ranges: Vec<(u64, u64)>,
}

impl Lines {
    /// Adds `line`: it widens the range it touches (joining two that now meet), or
    /// becomes a range of its own.
    pub(super) fn insert(&mut self, line: u64) {
        // The first range that ends at or after the line before `line`: the only one
        // `line` can touch from the left or fall into. Those before it end too early.
        let i = self
            .ranges
            .partition_point(|&(_, last)| last.saturating_add(1) < line);
        let Some(range) = self.ranges.get_mut(i) else {
            self.ranges.push((line, line));
            return;
        };
        if range.0 > line.saturating_add(1) {
            self.ranges.insert(i, (line, line));
            return;
        }
        range.0 = range.0.min(line);
        range.1 = range.1.max(line);
        let last = range.1;
        if let Some(&(next_first, next_last)) = self.ranges.get(i + 1)
            && next_first <= last.saturating_add(1)
        {
            self.ranges[i].1 = next_last;
            self.ranges.remove(i + 1);
        }
    }

    pub(super) fn contains(&self, line: u64) -> bool {
        let i = self.ranges.partition_point(|&(_, last)| last < line);
        self.ranges.get(i).is_some_and(|&(first, _)| first <= line)
    }
}

/// The result line of a record that was sent, or tried.
pub(super) fn result_line(
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
                hash: None,
                status: Status::Saved,
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
                service_id: None,
                exit_code: 0,
                error: None,
                subject: None,
                note: None,
                ledger_failed: None,
                fatal: None,
                outbox_id: None,
                unreachable: false,
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
        None if report.refused.is_empty() => (Status::Sent, 0),
        // --allow-partial, the others refused for good: `send` exits 0 for this too (a
        // recipient still deferred comes back as an error instead).
        None => (Status::Partial, 0),
        Some(e) => (
            Status::of_failure(e.kind(), delivered),
            e.kind().exit_code(),
        ),
    };
    let fatal = error.as_ref().map(Error::kind).filter(|kind| {
        matches!(
            kind,
            ErrorKind::AuthRefused | ErrorKind::Certificate | ErrorKind::Config
        )
    });
    Line {
        line,
        hash: None,
        status,
        message_id: Some(message_id),
        recipients,
        data_reply,
        service_id: report.service().and_then(|s| s.id.clone()),
        exit_code,
        error: error.map(|e| e.message().to_owned()),
        subject: None,
        note: None,
        ledger_failed: None,
        fatal,
        outbox_id: None,
        unreachable: false,
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

/// A record that failed, as one line on stderr (without `--report` or `--json`): its
/// line, recipients, status and why.
pub(super) fn failed_record(line: &Line) -> String {
    let to: Vec<&str> = line.recipients.iter().map(|r| r.address.as_str()).collect();
    let to = if to.is_empty() {
        "no recipient".to_owned()
    } else {
        to.join(", ")
    };
    let why = line.error.as_deref().unwrap_or("");
    let why = why
        .strip_prefix(&format!("line {}: ", line.line))
        .unwrap_or(why);
    format!("envoi: line {}: {to}: {}: {why}", line.line, line.status)
}

/// A record `--dry-run` checked, as one line on stdout (without `--report` or `--json`).
pub(super) fn dry_run_record(line: &Line) -> String {
    let to: Vec<&str> = line.recipients.iter().map(|r| r.address.as_str()).collect();
    format!(
        "line {}: would send to {}: {:?}",
        line.line,
        to.join(", "),
        line.subject.as_deref().unwrap_or("")
    )
}

/// The one line on stderr at the end.
pub(super) fn summary(tally: &Tally, sessions: u32, elapsed: Duration) {
    let secs = elapsed.as_secs_f64();
    let done = tally.of(Status::Sent) + tally.of(Status::Saved);
    let rate = if secs > 0.0 { done as f64 / secs } else { 0.0 };
    let mut text = format!(
        "envoi: batch: sent {}, refused {}, invalid {}",
        tally.of(Status::Sent),
        tally.of(Status::Refused),
        tally.of(Status::Invalid)
    );
    for (count, what) in [
        (tally.of(Status::Saved), "saved"),
        (tally.of(Status::Partial), "partial"),
        (tally.of(Status::Deferred), "deferred"),
        (tally.of(Status::Queued), "queued (outbox)"),
        (tally.of(Status::Duplicate), "another worker's (--campaign)"),
        (tally.of(Status::Unknown), "unknown"),
        (tally.of(Status::Failed), "failed"),
        (tally.of(Status::Suppressed), "suppressed"),
        (tally.of(Status::DryRun), "would send (--dry-run)"),
        (tally.skipped, "skipped (--resume)"),
        (tally.not_tried.unwrap_or(0), "not tried"),
    ] {
        if count > 0 {
            text.push_str(&format!(", {what} {count}"));
        }
    }
    // SMTP only: the file transport and the HTTPS APIs open no session to count.
    if sessions > 0 {
        let plural = if sessions == 1 { "" } else { "s" };
        text.push_str(&format!("; {sessions} session{plural},"));
    } else {
        text.push(';');
    }
    text.push_str(&format!(" in {secs:.2} s, {rate:.1} msg/s"));
    eprintln!("{text}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(lines: &[u64]) -> Lines {
        let mut set = Lines::default();
        for &line in lines {
            set.insert(line);
        }
        set
    }

    #[test]
    fn lines_keep_runs_as_ranges_and_answer_membership() {
        let lines = of(&[5, 3, 4, 9, 1, 3, 10, 12, u64::MAX]);
        assert_eq!(
            lines.ranges,
            [(1, 1), (3, 5), (9, 10), (12, 12), (u64::MAX, u64::MAX)]
        );
        // A line that fills the gap between two ranges joins them.
        assert_eq!(of(&[1, 3, 2]).ranges, [(1, 3)]);
        assert_eq!(of(&[7, 5, 1, 3, 6, 2]).ranges, [(1, 3), (5, 7)]);
        let members: Vec<u64> = (0..14).filter(|&n| lines.contains(n)).collect();
        assert_eq!(members, [1, 3, 4, 5, 9, 10, 12]);
        assert!(lines.contains(u64::MAX) && !lines.contains(u64::MAX - 1));
        let mut million = Lines::default();
        for line in (1..=1_000_000).rev() {
            million.insert(line);
        }
        assert_eq!(million.ranges, [(1, 1_000_000)]);
        assert!(!Lines::default().contains(0));
    }

    /// Lines inserted in any order answer exactly as a set would.
    #[test]
    fn lines_answer_as_a_set_for_any_order() {
        // A fixed pseudo-random order (a linear congruential walk), so a failure repeats.
        let mut state = 12345_u64;
        let mut lines = Lines::default();
        let mut set = std::collections::BTreeSet::new();
        for _ in 0..2_000 {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let line = (state >> 33) % 500;
            lines.insert(line);
            set.insert(line);
        }
        for line in 0..520 {
            assert_eq!(lines.contains(line), set.contains(&line), "line {line}");
        }
        for pair in lines.ranges.windows(2) {
            assert!(pair[0].1 + 1 < pair[1].0, "{:?} touch or overlap", pair);
        }
    }
}
