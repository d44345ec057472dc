//! What envoi prints: one result line (or `--json` object) on standard output, human
//! errors on standard error as `envoi: error: …`.

use std::io::{self, Write};
use std::path::PathBuf;

use serde_json::json;

use crate::dispatch::Report;
use crate::error::Error;
use crate::flush::{EntryOutcome, FlushSummary};
use crate::message::Prepared;
use crate::outbox::{EntryState, now};
use crate::transport::RcptReply;

/// How a send ended well.
#[derive(Debug)]
pub enum Outcome {
    /// The server answered the final dot with 2xx.
    Sent {
        /// The message.
        prepared: Prepared,
        /// Each recipient's fate.
        report: Report,
    },
    /// The file transport wrote the message.
    Saved {
        /// The message.
        prepared: Prepared,
        /// Where it was written.
        path: PathBuf,
    },
    /// `--queue`: written to the outbox; the first attempt failed temporarily, so envoi
    /// owns the retry (`envoi outbox flush`).
    Queued {
        /// The message.
        prepared: Prepared,
        /// The outbox entry.
        id: String,
        /// Why the first attempt did not deliver it.
        reason: String,
    },
    /// `--idempotency-key` seen before: nothing was sent this time.
    Duplicate {
        /// The first send's Message-ID.
        message_id: String,
        /// The first send's status (`sent`, `queued`, `saved`).
        first_status: String,
    },
    /// `--dry-run`: built, not sent.
    DryRun {
        /// The message.
        prepared: Prepared,
    },
}

/// Prints a success. A closed standard output (`| head`) is not an error.
pub fn print_outcome(outcome: &Outcome, as_json: bool) {
    let result = write_outcome(&mut io::stdout().lock(), outcome, as_json);
    if let Err(e) = result
        && e.kind() != io::ErrorKind::BrokenPipe
    {
        eprintln!("envoi: warning: cannot write the result: {e}");
    }
}

fn write_outcome(out: &mut impl Write, outcome: &Outcome, as_json: bool) -> io::Result<()> {
    match (outcome, as_json) {
        (Outcome::Sent { prepared, report }, false) => {
            for r in &report.refused {
                eprintln!(
                    "envoi: warning: not delivered to {} ({} {})",
                    r.address, r.code, r.message
                );
            }
            let to: Vec<&str> = report
                .delivered
                .iter()
                .map(|r| r.address.as_str())
                .collect();
            let (code, reply) = report.data_reply.clone().unwrap_or_default();
            writeln!(
                out,
                "sent {} to {} ({code} {reply})",
                prepared.message_id,
                to.join(", ")
            )
        }
        (Outcome::Sent { prepared, report }, true) => {
            let (code, reply) = report.data_reply.clone().unwrap_or_default();
            let value = json!({
                "status": if report.refused.is_empty() { "sent" } else { "partial" },
                "message_id": prepared.message_id,
                "envelope": envelope(prepared),
                "server": {"code": code, "message": reply},
                "recipients": recipients(report),
                "attempts": report.attempts,
            });
            writeln!(out, "{value}")
        }
        (Outcome::Saved { prepared, path }, false) => {
            writeln!(out, "saved {} to {}", prepared.message_id, path.display())
        }
        (Outcome::Saved { prepared, path }, true) => {
            let value = json!({
                "status": "saved",
                "message_id": prepared.message_id,
                "envelope": envelope(prepared),
                "path": path,
            });
            writeln!(out, "{value}")
        }
        (
            Outcome::Queued {
                prepared,
                id,
                reason,
            },
            false,
        ) => {
            eprintln!("envoi: not sent yet: {reason}");
            writeln!(out, "queued {} as outbox entry {id}", prepared.message_id)
        }
        (
            Outcome::Queued {
                prepared,
                id,
                reason,
            },
            true,
        ) => {
            let value = json!({
                "status": "queued",
                "message_id": prepared.message_id,
                "envelope": envelope(prepared),
                "outbox_id": id,
                "reason": reason,
            });
            writeln!(out, "{value}")
        }
        (
            Outcome::Duplicate {
                message_id,
                first_status,
            },
            false,
        ) => writeln!(
            out,
            "duplicate: already {first_status} as {message_id}; nothing sent"
        ),
        (
            Outcome::Duplicate {
                message_id,
                first_status,
            },
            true,
        ) => {
            let value = json!({
                "status": "duplicate",
                "message_id": message_id,
                "first_status": first_status,
            });
            writeln!(out, "{value}")
        }
        (Outcome::DryRun { prepared }, false) => {
            let env = envelope(prepared);
            eprintln!(
                "envoi: dry run: from {} to {}; nothing was sent",
                env["from"], env["to"]
            );
            out.write_all(&prepared.bytes)
        }
        (Outcome::DryRun { prepared }, true) => {
            let value = json!({
                "status": "dry_run",
                "message_id": prepared.message_id,
                "envelope": envelope(prepared),
                "message": String::from_utf8_lossy(&prepared.bytes),
            });
            writeln!(out, "{value}")
        }
    }
}

fn envelope(prepared: &Prepared) -> serde_json::Value {
    let to: Vec<String> = prepared
        .envelope
        .to()
        .iter()
        .map(|a| a.to_string())
        .collect();
    json!({
        "from": prepared.envelope.from().map(|a| a.to_string()),
        "to": to,
    })
}

/// Each recipient as `{"address", "status", "code", "message"}`.
fn recipients(report: &Report) -> serde_json::Value {
    let entry = |status: &str, r: &RcptReply| json!({"address": r.address, "status": status, "code": r.code, "message": r.message});
    let delivered = report.delivered.iter().map(|r| entry("delivered", r));
    let refused = report.refused.iter().map(|r| entry("refused", r));
    serde_json::Value::Array(delivered.chain(refused).collect())
}

/// Prints an error on standard error and, with `--json`, as an object on standard output.
/// `report` tells what happened to each recipient before the failure.
pub fn print_error(err: &Error, report: &Report, as_json: bool) {
    eprintln!("envoi: error: {err}");
    if as_json {
        let kind = err.kind();
        let mut value = json!({
            "status": "error",
            "exit_code": kind.exit_code(),
            "http_status": kind.http_status(),
            "kind": kind.name(),
            "message": err.message(),
        });
        if report.attempts > 0 {
            value["recipients"] = recipients(report);
            value["attempts"] = json!(report.attempts);
        }
        let _ = writeln!(io::stdout().lock(), "{value}");
    }
}

/// `envoi outbox list`: one line per entry, or a JSON array.
pub fn print_entries(entries: &[(String, EntryState)], as_json: bool) {
    let mut out = io::stdout().lock();
    if as_json {
        let list: Vec<serde_json::Value> = entries
            .iter()
            .map(|(id, s)| {
                let mut value = serde_json::to_value(s).unwrap_or_default();
                value["id"] = json!(id);
                value
            })
            .collect();
        let _ = writeln!(out, "{}", serde_json::Value::Array(list));
        return;
    }
    let now = now();
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

/// `envoi outbox flush`: one line per entry attempted and a summary, or one JSON object.
pub fn print_flush(summary: &FlushSummary, as_json: bool) {
    let mut out = io::stdout().lock();
    let (mut sent, mut deferred, mut failed) = (Vec::new(), Vec::new(), Vec::new());
    for (id, outcome) in &summary.entries {
        match outcome {
            EntryOutcome::Sent(_) => sent.push(json!({"id": id})),
            EntryOutcome::Deferred(e) => deferred.push(json!({"id": id, "reason": e.message()})),
            EntryOutcome::Failed(e) => failed.push(json!({"id": id, "reason": e.message()})),
        }
        if !as_json {
            let _ = match outcome {
                EntryOutcome::Sent(_) => writeln!(out, "sent {id}"),
                EntryOutcome::Deferred(e) => writeln!(out, "deferred {id}: {e}"),
                EntryOutcome::Failed(e) => writeln!(out, "failed {id}: {e} (kept in failed/)"),
            };
        }
    }
    let _ = if as_json {
        let value = json!({"sent": sent, "deferred": deferred, "failed": failed,
                           "skipped": summary.skipped});
        writeln!(out, "{value}")
    } else {
        writeln!(
            out,
            "flush: {} sent, {} deferred, {} failed, {} skipped (locked or not due)",
            sent.len(),
            deferred.len(),
            failed.len(),
            summary.skipped
        )
    };
}
