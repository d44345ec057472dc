//! What envoi prints: one result line (or `--json` object) on standard output, human
//! errors on standard error as `envoi: error: …`.

use std::io::{self, Write};
use std::path::PathBuf;

use serde_json::json;

use crate::dispatch::Report;
use crate::error::Error;
use crate::message::Prepared;
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
