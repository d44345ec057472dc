//! What a batch says about each record: the result lines, the report and its in-flight
//! marks, what `--resume` reads back, and the summary and exit code.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use envoi::deliver::{BatchSent, Failure, Report};
use envoi::error::{Error, ErrorKind, Result};
use envoi::outbox::{ExitRule, Status};
use serde::{Deserialize, Serialize};

use crate::cli::render::warning;

/// One result line.
#[derive(Debug, Serialize)]
pub(super) struct Line {
    /// The record's line in the input.
    pub(super) line: u64,
    /// sent, saved, partial, refused, invalid, deferred, queued, unknown or failed.
    pub(super) status: Status,
    pub(super) message_id: Option<String>,
    pub(super) recipients: Vec<Recipient>,
    /// The server's answer to the final dot.
    pub(super) data_reply: Option<String>,
    /// What `envoi send` would have exited with for this record.
    pub(super) exit_code: u8,
    pub(super) error: Option<String>,
    /// The outbox entry that now owns the record's retries (profile `outbox = true`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) outbox_id: Option<String>,
    /// A failure every later record would meet too (login, certificate, configuration).
    #[serde(skip)]
    pub(super) fatal: Option<ErrorKind>,
}

impl Line {
    /// The line of a record that never reached a server in this run: no Message-ID, no
    /// recipient answers.
    pub(super) fn unsent(line: u64, status: Status, kind: ErrorKind, why: String) -> Line {
        Line {
            line,
            status,
            message_id: None,
            recipients: Vec::new(),
            data_reply: None,
            exit_code: kind.exit_code(),
            error: Some(why),
            outbox_id: None,
            fatal: None,
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
    status: String,
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

/// Next to the report, `REPORT.inflight` has one line per sender: the line of the last
/// record that sender started to send (blank before its first). A batch killed leaves it
/// behind, and `--resume` lists the records it names that have no result line as
/// `unknown` instead of sending them again; a mark whose record has its result line is
/// stale and ignored, so marks are never cleared (that would cost two more system calls
/// per record). Removed when the batch ends.
pub(super) fn inflight_path(report: &Path) -> PathBuf {
    let mut path = report.as_os_str().to_owned();
    path.push(".inflight");
    PathBuf::from(path)
}

/// Width of a number in the in-flight file: each sender's slot is rewritten in place,
/// never truncated, so a kill mid-write leaves the other slots whole.
const INFLIGHT_WIDTH: usize = 20;

/// The in-flight file (nothing without `--report`). A sender marks its own slot before
/// it sends; the lock is for the file's shared position, not for the slots.
pub(super) struct Marks {
    file: Option<Mutex<File>>,
}

impl Marks {
    /// Creates the file with `senders` blank slots.
    pub(super) fn create(report: Option<&Path>, senders: usize) -> Result<Marks> {
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

    /// Writes `line` into `sender`'s slot.
    pub(super) fn mark(&self, sender: usize, line: u64) -> Result<()> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        let text = format!("{line:>INFLIGHT_WIDTH$}\n");
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

/// The records to skip, and among them those an earlier run was sending when it was
/// stopped, which have no result line yet: the lines an earlier report lists as sent,
/// partial, unknown or queued, plus those.
pub(super) fn earlier_report(path: &Path) -> Result<(Lines, Vec<u64>)> {
    let file = File::open(path).map_err(|e| {
        Error::new(
            ErrorKind::NoInput,
            format!("--resume {path:?}: cannot read it: {e}"),
        )
    })?;
    let mut done = Lines::default();
    let mut finished = Lines::default();
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
                if Status::named(&earlier.status).is_some_and(Status::may_have_reached) {
                    done.insert(earlier.line);
                }
            }
            Err(e) => warning(&format!(
                "--resume {path:?}: line {} is not a result line ({e}); ignored",
                i + 1
            )),
        }
    }
    let marks = std::fs::read_to_string(inflight_path(path)).unwrap_or_default();
    let mut interrupted: Vec<u64> = marks
        .lines()
        .filter_map(|slot| slot.trim().parse::<u64>().ok())
        .filter(|line| !finished.contains(*line))
        .collect();
    interrupted.sort_unstable();
    interrupted.dedup();
    for &line in &interrupted {
        done.insert(line);
    }
    Ok((done, interrupted))
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
        (tally.of(Status::Unknown), "unknown"),
        (tally.of(Status::Failed), "failed"),
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
