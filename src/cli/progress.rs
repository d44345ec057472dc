//! `envoi batch`'s progress on a terminal: a bar on stderr with records done of the
//! total, the rate, the time left and the failures so far (indicatif, which redraws in
//! place and keeps up with thousands of records a second at a steady refresh). Off a
//! terminal (cron, CI, a pipe) nothing is drawn: the one-line summary at the end is all.
//! The bar has no colours, so `NO_COLOR` has nothing to turn off.

use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal};
use std::path::Path;

use envoi::message::input::is_stdin;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::cli::args::BatchFormat;

/// The bar, when standard error is a terminal.
pub struct Progress {
    bar: Option<ProgressBar>,
    failed: u64,
}

/// What the bar shows; with no total (standard input), no bar and no ETA.
const WITH_TOTAL: &str = "{bar:30} {pos}/{len} records · {per_sec} · ETA {eta} · {msg}";
const WITHOUT_TOTAL: &str = "{pos} records · {per_sec} · {msg}";

impl Progress {
    /// A bar for the records of `file` (counted first when it is a regular file), drawn
    /// only when standard error is a terminal.
    pub fn start(file: &Path, format: BatchFormat) -> Progress {
        if !std::io::stderr().is_terminal() {
            return Progress {
                bar: None,
                failed: 0,
            };
        }
        let total = count_records(file, format);
        let (bar, template) = match total {
            Some(n) => (ProgressBar::new(n), WITH_TOTAL),
            None => (ProgressBar::no_length(), WITHOUT_TOTAL),
        };
        bar.set_draw_target(ProgressDrawTarget::stderr());
        // The templates are constants, tested below; a bad one would only lose the style.
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style);
        }
        bar.set_message("0 failed");
        Progress {
            bar: Some(bar),
            failed: 0,
        }
    }

    /// One record done: `ok` when it was sent (or queued, or skipped by --resume).
    pub fn record(&mut self, ok: bool) {
        if !ok {
            self.failed += 1;
        }
        if let Some(bar) = &self.bar {
            bar.inc(1);
            if !ok {
                bar.set_message(format!("{} failed", self.failed));
            }
        }
    }

    /// A line on stderr, above the bar when there is one.
    pub fn say(&self, text: &str) {
        match &self.bar {
            Some(bar) => bar.suspend(|| eprintln!("{text}")),
            None => eprintln!("{text}"),
        }
    }

    /// Takes the bar away, leaving the terminal to the summary line.
    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}

/// How many records `file` holds: its non-blank lines (less the header row of a CSV).
/// A CSV cell with a line break makes this an overestimate, which only makes the ETA
/// pessimistic. `None` for standard input or what cannot be read: no total is shown.
fn count_records(file: &Path, format: BatchFormat) -> Option<u64> {
    if is_stdin(file) || !file.is_file() {
        return None;
    }
    let mut reader = BufReader::new(File::open(file).ok()?);
    let mut line = Vec::new();
    let mut lines = 0u64;
    // One buffer for every line: a million-record file is counted without a million
    // allocations.
    while reader.read_until(b'\n', &mut line).ok()? > 0 {
        if !line.iter().all(u8::is_ascii_whitespace) {
            lines += 1;
        }
        line.clear();
    }
    Some(match format {
        BatchFormat::Csv => lines.saturating_sub(1),
        BatchFormat::Jsonl => lines,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_templates_are_valid() {
        for template in [WITH_TOTAL, WITHOUT_TOTAL] {
            assert!(ProgressStyle::with_template(template).is_ok(), "{template}");
        }
    }

    #[test]
    fn records_are_counted_without_blank_lines_or_the_header() {
        let dir = tempfile::tempdir().unwrap();
        let jsonl = dir.path().join("r.jsonl");
        std::fs::write(&jsonl, "{}\n\n{}\n  \n{}").unwrap();
        assert_eq!(count_records(&jsonl, BatchFormat::Jsonl), Some(3));
        let csv = dir.path().join("r.csv");
        std::fs::write(&csv, "to,name\na@x,A\nb@x,B\n").unwrap();
        assert_eq!(count_records(&csv, BatchFormat::Csv), Some(2));
        assert_eq!(count_records(Path::new("-"), BatchFormat::Csv), None);
    }
}
