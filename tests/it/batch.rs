//! `envoi batch` against the in-process server: sessions reused and capped, each record's
//! message as it arrived, per-record results in the report, and `--resume`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use assert_cmd::Command;
use mail_parser::{MessageParser, MimeHeaders};
use serde_json::Value;
use tempfile::TempDir;

use crate::support::certs::TestPki;
use crate::support::envoi::{Config, ExpectExit, Run, Setup, envoi, spawn_envoi};
use crate::support::external::SmtpSink;
use crate::support::smtp_server::{Received, Security, ServerOptions, TestServer};
use crate::support::{PASSWORD, USER};

/// `envoi batch --config <setup's config> --report <home>/report.jsonl <args>`.
fn batch(s: &Setup, args: &[&str]) -> Command {
    let mut cmd = envoi(s.home());
    cmd.arg("batch")
        .arg("--config")
        .arg(&s.config)
        .arg("--report")
        .arg(report_path(s))
        .args(args);
    cmd
}

fn report_path(s: &Setup) -> PathBuf {
    s.home().join("report.jsonl")
}

/// Writes `name` in the setup's home; returns its path as a string for argv.
fn write(s: &Setup, name: &str, text: &str) -> String {
    let path = s.home().join(name);
    std::fs::write(&path, text).expect("write the records");
    path.display().to_string()
}

/// The report's lines, parsed.
fn report(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .expect("the report exists")
        .lines()
        .map(|l| serde_json::from_str(l).expect("each report line is JSON"))
        .collect()
}

/// `mail.jsonl` in the setup's home with `n` records, m1 to r1@example.com, m2 to
/// r2@example.com, …; its path for argv.
fn numbered(s: &Setup, n: u32) -> String {
    let records: Vec<String> = (1..=n)
        .map(|i| record(&format!("r{i}@example.com"), &format!("m{i}")))
        .collect();
    write(s, "mail.jsonl", &records.join("\n"))
}

/// A JSON Lines record to `to` with subject `subject`.
fn record(to: &str, subject: &str) -> String {
    format!(r#"{{"To":"{to}","Subject":"{subject}","Body":"body of {subject}"}}"#)
}

fn subject(m: &Received) -> String {
    let parsed = MessageParser::default()
        .parse(&m.data)
        .expect("a parsable message");
    parsed.subject().unwrap_or_default().to_owned()
}

fn body(m: &Received) -> String {
    let parsed = MessageParser::default()
        .parse(&m.data)
        .expect("a parsable message");
    parsed
        .body_text(0)
        .unwrap_or_default()
        .trim_end()
        .to_owned()
}

fn header(m: &Received, name: &str) -> String {
    let parsed = MessageParser::default()
        .parse(&m.data)
        .expect("a parsable message");
    parsed
        .header_raw(name)
        .unwrap_or_default()
        .trim()
        .to_owned()
}

fn plain() -> Setup {
    Setup::plain(ServerOptions::default(), 10)
}

#[test]
fn three_jsonl_records_go_over_one_connection() {
    let s = plain();
    let file = write(
        &s,
        "mail.jsonl",
        &[
            record("a@example.com", "first"),
            record("b@example.com", "second"),
            record("c@example.com", "third"),
        ]
        .join("\n"),
    );
    let run = batch(&s, &[&file]).expect_exit(0);
    assert!(
        run.stderr
            .contains("sent 3, refused 0, invalid 0; 1 session"),
        "{run}"
    );
    assert!(s.server.wait_idle(Duration::from_secs(5)));
    assert_eq!(s.server.connections(), 1, "one session for the whole batch");
    let messages = s.server.messages();
    let lines = report(&report_path(&s));
    assert_eq!(messages.len(), 3);
    assert_eq!(lines.len(), 3);
    for (i, (to, subj)) in [
        ("a@example.com", "first"),
        ("b@example.com", "second"),
        ("c@example.com", "third"),
    ]
    .into_iter()
    .enumerate()
    {
        let m = &messages[i];
        assert_eq!(m.mail_from, "sender@example.com");
        assert_eq!(m.rcpt_to, [to]);
        assert_eq!(subject(m), subj);
        assert_eq!(header(m, "To"), to);
        assert_eq!(body(m), format!("body of {subj}"));
        let line = &lines[i];
        assert_eq!(line["line"], i as u64 + 1);
        assert_eq!(line["status"], "sent");
        assert_eq!(line["exit_code"], 0);
        assert_eq!(line["recipients"][0]["address"], to);
        assert_eq!(line["recipients"][0]["code"], 250);
        assert_eq!(
            header(m, "Message-ID"),
            line["message_id"].as_str().unwrap()
        );
    }
    let ids: std::collections::HashSet<&str> = lines
        .iter()
        .map(|l| l["message_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3, "each message has its own Message-ID");
    let transcript = s.server.transcript();
    assert_eq!(
        transcript.iter().filter(|l| *l == "RSET").count(),
        0,
        "{transcript:?}"
    );
    assert_eq!(
        transcript.iter().filter(|l| *l == "QUIT").count(),
        1,
        "{transcript:?}"
    );
}

#[test]
fn a_csv_mail_merge_renders_each_row_and_an_undefined_variable_fails_only_its_row() {
    let s = plain();
    let file = write(
        &s,
        "list.csv",
        "email,name,amount\n\
         ann@example.com,Ann,12.50\n\
         bob@example.com,,3.00\n\
         \"cy@example.com\",\"Cy, \"\"the\"\" third\",7\n",
    );
    let run = batch(
        &s,
        &[
            &file,
            "--to-column",
            "email",
            "--subject",
            "Invoice for {{ name }}",
            "--body",
            "Dear {{ name }}, you owe {{ amount }}.",
            "--json",
        ],
    )
    .expect_exit(65);
    let messages = s.server.messages();
    assert_eq!(messages.len(), 2, "{run}");
    assert_eq!(messages[0].rcpt_to, ["ann@example.com"]);
    assert_eq!(subject(&messages[0]), "Invoice for Ann");
    assert_eq!(body(&messages[0]), "Dear Ann, you owe 12.50.");
    assert_eq!(messages[1].rcpt_to, ["cy@example.com"]);
    assert_eq!(subject(&messages[1]), "Invoice for Cy, \"the\" third");
    assert_eq!(body(&messages[1]), "Dear Cy, \"the\" third, you owe 7.");
    let lines = report(&report_path(&s));
    let stdout: Vec<Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines, stdout, "--json prints what --report records");
    let statuses: Vec<(u64, &str)> = lines
        .iter()
        .map(|l| (l["line"].as_u64().unwrap(), l["status"].as_str().unwrap()))
        .collect();
    assert_eq!(statuses, [(2, "sent"), (3, "invalid"), (4, "sent")]);
    let error = lines[1]["error"].as_str().unwrap();
    assert!(
        error.contains("line 3") && error.contains("{{ name }}"),
        "{error}"
    );
    assert_eq!(lines[1]["exit_code"], 65);
    assert!(run.stderr.contains("sent 2, refused 0, invalid 1"), "{run}");
}

#[test]
fn a_refused_recipient_does_not_stop_the_others() {
    let s = Setup::plain(
        ServerOptions {
            refuse_rcpt: vec![("gone@example.com".into(), 550)],
            ..ServerOptions::default()
        },
        10,
    );
    let file = write(
        &s,
        "mail.ndjson",
        &[
            record("a@example.com", "one"),
            record("gone@example.com", "two"),
            record("c@example.com", "three"),
        ]
        .join("\n"),
    );
    batch(&s, &[&file]).expect_exit(67);
    let messages = s.server.messages();
    let rcpts: Vec<&str> = messages.iter().map(|m| m.rcpt_to[0].as_str()).collect();
    assert_eq!(rcpts, ["a@example.com", "c@example.com"]);
    let lines = report(&report_path(&s));
    assert_eq!(lines[1]["status"], "refused");
    assert_eq!(lines[1]["exit_code"], 67);
    assert_eq!(lines[1]["recipients"][0]["address"], "gone@example.com");
    assert_eq!(lines[1]["recipients"][0]["status"], "refused");
    assert_eq!(lines[1]["recipients"][0]["code"], 550);
    assert_eq!(lines[2]["status"], "sent");
    assert!(s.server.wait_idle(Duration::from_secs(5)));
    assert_eq!(s.server.connections(), 1, "the session survives a refusal");
    let transcript = s.server.transcript();
    assert_eq!(
        transcript.iter().filter(|l| *l == "RSET").count(),
        1,
        "one RSET, after the abandoned transaction: {transcript:?}"
    );
}

#[test]
fn per_session_2_with_5_records_opens_3_connections() {
    let s = plain();
    let file = numbered(&s, 5);
    let run = batch(&s, &[&file, "--per-session", "2"]).expect_exit(0);
    assert!(run.stderr.contains("3 sessions"), "{run}");
    assert!(s.server.wait_idle(Duration::from_secs(5)));
    assert_eq!(s.server.connections(), 3);
    assert_eq!(s.server.messages().len(), 5);
    let quits = s
        .server
        .transcript()
        .iter()
        .filter(|l| *l == "QUIT")
        .count();
    assert_eq!(quits, 3, "each session ends with QUIT");
}

#[test]
fn resume_sends_only_what_the_earlier_report_does_not_list_as_sent() {
    let s = plain();
    let file = numbered(&s, 4);
    // A batch killed after line 2: 1 and 3 went out, 2 was deferred, 4 never started.
    let earlier = [
        r#"{"line":1,"status":"sent","message_id":"<1@x>","recipients":[],"data_reply":null,"exit_code":0,"error":null}"#,
        r#"{"line":2,"status":"deferred","message_id":"<2@x>","recipients":[],"data_reply":null,"exit_code":75,"error":"451"}"#,
        r#"{"line":3,"status":"sent","message_id":"<3@x>","recipients":[],"data_reply":null,"exit_code":0,"error":null}"#,
    ];
    std::fs::write(report_path(&s), format!("{}\n", earlier.join("\n"))).unwrap();
    let report_arg = report_path(&s).display().to_string();
    let run = batch(&s, &[&file, "--resume", &report_arg]).expect_exit(0);
    assert!(run.stderr.contains("skipped (--resume) 2"), "{run}");
    let subjects: Vec<String> = s.server.messages().iter().map(subject).collect();
    assert_eq!(subjects, ["m2", "m4"], "exactly the records not yet sent");
    let lines = report(&report_path(&s));
    assert_eq!(lines.len(), 5, "appended to the earlier report");
    assert_eq!(
        (lines[3]["line"].as_u64(), lines[3]["status"].as_str()),
        (Some(2), Some("sent"))
    );
    assert_eq!(
        (lines[4]["line"].as_u64(), lines[4]["status"].as_str()),
        (Some(4), Some("sent"))
    );

    // Run again on the full report: nothing is sent twice.
    batch(&s, &[&file, "--resume", &report_arg]).expect_exit(0);
    assert_eq!(s.server.messages().len(), 2);
}

#[test]
fn a_malformed_jsonl_line_is_invalid_with_its_line_number_and_the_rest_go_out() {
    let s = plain();
    let file = write(
        &s,
        "mail.jsonl",
        &format!(
            "{}\n{{\"To\": \"b@example.com\", \"Subject\": \n\n{}\n{}\n",
            record("a@example.com", "one"),
            r#"{"To":"not an address","Subject":"x","Body":"y"}"#,
            record("d@example.com", "four"),
        ),
    );
    batch(&s, &[&file]).expect_exit(65);
    let subjects: Vec<String> = s.server.messages().iter().map(subject).collect();
    assert_eq!(subjects, ["one", "four"]);
    let lines = report(&report_path(&s));
    let statuses: Vec<(u64, &str)> = lines
        .iter()
        .map(|l| (l["line"].as_u64().unwrap(), l["status"].as_str().unwrap()))
        .collect();
    // Line 3 is blank: not a record.
    assert_eq!(
        statuses,
        [(1, "sent"), (2, "invalid"), (4, "invalid"), (5, "sent")]
    );
    assert!(
        lines[1]["error"]
            .as_str()
            .unwrap()
            .starts_with("line 2: not a Send Email payload"),
        "{}",
        lines[1]
    );
    assert!(
        lines[2]["error"].as_str().unwrap().starts_with("line 4:"),
        "{}",
        lines[2]
    );
}

#[test]
fn standard_input_needs_format() {
    let s = plain();
    let run = batch(&s, &["-"]).write_stdin("").expect_exit(64);
    assert!(run.stderr.contains("--format"), "{run}");
    batch(&s, &["-", "--format", "jsonl"])
        .write_stdin(record("a@example.com", "piped"))
        .expect_exit(0);
    assert_eq!(s.server.messages().len(), 1);
}

/// A server that cuts the session after two messages, silently or with 421 at the next
/// MAIL: envoi opens a new session at once and every record arrives exactly once, with
/// no retry wait and no record reported as failed.
#[test]
fn a_session_the_server_cuts_is_replaced_and_every_record_arrives_once() {
    let cuts = [
        ServerOptions {
            close_after_messages: Some(2),
            ..ServerOptions::default()
        },
        ServerOptions {
            reply_421_after_messages: Some(2),
            ..ServerOptions::default()
        },
    ];
    for opts in cuts {
        let what = format!(
            "close_after_messages {:?}, reply_421_after_messages {:?}",
            opts.close_after_messages, opts.reply_421_after_messages
        );
        let s = Setup::plain(opts, 10);
        let file = numbered(&s, 5);
        let run = batch(&s, &[&file]).expect_exit(0);
        assert!(!run.stderr.contains("retrying"), "{what}: {run}");
        let subjects: Vec<String> = s.server.messages().iter().map(subject).collect();
        assert_eq!(subjects, ["m1", "m2", "m3", "m4", "m5"], "{what}");
        assert!(s.server.wait_idle(Duration::from_secs(5)));
        assert_eq!(s.server.connections(), 3, "{what}");
        let lines = report(&report_path(&s));
        assert!(
            lines.iter().all(|l| l["status"] == "sent"),
            "{what}: {lines:?}"
        );
    }
}

/// A batch of `records` records (m1, m2, …) with `--concurrency senders`, against a server
/// that never answers a final dot, SIGKILLed once `senders` messages wait for an answer.
/// Returns that server's setup (whose home holds the report and its in-flight file), the
/// records file, and the subjects of the messages in flight, sorted.
fn killed_while_awaiting_answers(records: u32, senders: usize) -> (Setup, String, Vec<String>) {
    let hanging = Setup::plain(
        ServerOptions {
            hang_after_data: true,
            ..ServerOptions::default()
        },
        10,
    );
    let file = numbered(&hanging, records);
    let args: Vec<std::ffi::OsString> = vec![
        "batch".into(),
        "--config".into(),
        hanging.config.clone().into(),
        "--concurrency".into(),
        senders.to_string().into(),
        "--report".into(),
        report_path(&hanging).into(),
        file.clone().into(),
    ];
    let out = |name: &str| std::fs::File::create(hanging.home().join(name)).unwrap();
    let mut child = spawn_envoi(hanging.home(), &args, out("out"), out("err"));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while hanging.server.unacknowledged().len() < senders && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let in_flight = hanging.server.unacknowledged();
    assert_eq!(in_flight.len(), senders, "each session waits for an answer");
    child.kill().expect("SIGKILL envoi");
    child.wait().expect("reap envoi");
    let mut subjects: Vec<String> = in_flight.iter().map(subject).collect();
    subjects.sort();
    (hanging, file, subjects)
}

/// `envoi batch --resume` of the killed batch's report (appending to it), against a
/// healthy server: that server's setup and the run, which must exit `code`.
fn resume_killed(killed: &Setup, file: &str, senders: usize, code: i32) -> (Setup, Run) {
    let healthy = plain();
    let report_arg = report_path(killed).display().to_string();
    let run = envoi(healthy.home())
        .arg("batch")
        .arg("--config")
        .arg(&healthy.config)
        .args(["--concurrency", &senders.to_string()])
        .args(["--report", &report_arg, "--resume", &report_arg, file])
        .expect_exit(code);
    (healthy, run)
}

/// The report's (line, status) pairs, sorted by line.
fn statuses(path: &Path) -> Vec<(u64, String)> {
    let mut statuses: Vec<(u64, String)> = report(path)
        .iter()
        .map(|l| {
            (
                l["line"].as_u64().unwrap(),
                l["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    statuses.sort();
    statuses
}

/// SIGKILL while a record's final dot is unanswered: the report has no line for it, but
/// the in-flight mark next to the report names it, so `--resume` lists it as unknown
/// (exit 75) and sends only the records after it. Nothing arrives twice.
#[test]
fn a_batch_killed_mid_message_is_resumed_without_sending_anything_twice() {
    let (killed, file, hung) = killed_while_awaiting_answers(3, 1);
    assert_eq!(hung, ["m1"], "m1 is in flight");
    let report_file = report_path(&killed);
    assert_eq!(
        std::fs::read_to_string(&report_file).unwrap(),
        "",
        "no result yet"
    );

    let (healthy, run) = resume_killed(&killed, &file, 1, 75);
    assert!(
        run.stderr.contains("sent 2") && run.stderr.contains("unknown 1"),
        "{run}"
    );
    let subjects: Vec<String> = healthy.server.messages().iter().map(subject).collect();
    assert_eq!(subjects, ["m2", "m3"], "m1 is not sent again");
    let lines = report(&report_file);
    let in_order: Vec<(u64, &str)> = lines
        .iter()
        .map(|l| (l["line"].as_u64().unwrap(), l["status"].as_str().unwrap()))
        .collect();
    assert_eq!(in_order, [(1, "unknown"), (2, "sent"), (3, "sent")]);
    assert!(
        !killed.home().join("report.jsonl.inflight").exists(),
        "the mark is removed when a batch ends"
    );

    // And once more: everything is done or listed unknown; nothing is sent (exit 0: this
    // run had nothing left to do; the unknown record stays in the report).
    let run = envoi(healthy.home())
        .arg("batch")
        .arg("--config")
        .arg(&healthy.config)
        .args(["--report", &report_file.display().to_string()])
        .args(["--resume", &report_file.display().to_string(), &file])
        .expect_exit(0);
    assert!(run.stderr.contains("skipped (--resume) 3"), "{run}");
    assert_eq!(healthy.server.messages().len(), 2);
}

/// `--allow-partial`: a record with one refused recipient goes to the others; its line
/// says who got it and who did not, and, as for `send --allow-partial`, it exits 0.
#[test]
fn allow_partial_sends_to_the_accepted_and_reports_each_recipient() {
    let s = Setup::plain(
        ServerOptions {
            refuse_rcpt: vec![("gone@example.com".into(), 550)],
            ..ServerOptions::default()
        },
        10,
    );
    let file = write(
        &s,
        "mail.jsonl",
        &record("a@example.com; gone@example.com; c@example.com", "both"),
    );
    batch(&s, &[&file, "--allow-partial"]).expect_exit(0);
    assert_eq!(s.only_message().rcpt_to, ["a@example.com", "c@example.com"]);
    let lines = report(&report_path(&s));
    assert_eq!(lines[0]["status"], "partial");
    let recipients: Vec<(&str, &str, u64)> = lines[0]["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["address"].as_str().unwrap(),
                r["status"].as_str().unwrap(),
                r["code"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        recipients,
        [
            ("a@example.com", "delivered", 250),
            ("gone@example.com", "refused", 550),
            ("c@example.com", "delivered", 250),
        ]
    );
}

/// With PIPELINING, DATA leaves with the envelope and the server answers it 354 even
/// though a recipient was refused: that record's message must not go to the others, so
/// the connection is dropped before it (never a lone dot), and the next record goes out
/// on a new session.
#[test]
fn a_pipelined_354_after_a_refused_recipient_sends_nothing_and_the_batch_goes_on() {
    let s = Setup::plain(
        ServerOptions {
            ehlo_extra: vec!["PIPELINING".into()],
            refuse_rcpt: vec![("gone@example.com".into(), 550)],
            ..ServerOptions::default()
        },
        10,
    );
    let records = [
        record("a@example.com; gone@example.com", "first"),
        record("b@example.com", "second"),
    ];
    let file = write(&s, "mail.jsonl", &records.join("\n"));
    let run = batch(&s, &[&file]).expect_exit(67);
    assert!(run.stderr.contains("2 sessions"), "{run}");
    let delivered: Vec<Vec<String>> = s.server.messages().into_iter().map(|m| m.rcpt_to).collect();
    assert_eq!(delivered, [vec!["b@example.com".to_owned()]]);
    let statuses: Vec<String> = report(&report_path(&s))
        .iter()
        .map(|line| line["status"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(statuses, ["refused", "sent"]);
}

/// `--rate 10/s`: the server sees the messages at least ~100 ms apart (gaps measured at
/// the server, with slack for scheduling; never the batch's total time).
#[test]
fn rate_spaces_the_messages() {
    let s = plain();
    let file = numbered(&s, 4);
    batch(&s, &[&file, "--rate", "10/s"]).expect_exit(0);
    let messages = s.server.messages();
    assert_eq!(messages.len(), 4);
    for pair in messages.windows(2) {
        let gap = pair[1].at.duration_since(pair[0].at);
        assert!(
            gap >= Duration::from_millis(80),
            "{gap:?} between two messages"
        );
    }
    let run = batch(&s, &[&file, "--rate", "10/d"]).expect_exit(64);
    assert!(run.stderr.contains("--rate"), "{run}");
}

/// Against Postfix's smtp-sink, which offers PIPELINING (the in-process server does not):
/// each record's envelope goes in one write and every answer lands on its record. A sink
/// that refuses every RCPT (5xx) or defers every DATA (4xx) fails each record alike, and
/// the run goes on to the next.
#[test]
fn smtp_sink_pipelined_records_each_get_their_own_answers() {
    for (extra, code, status, delivered) in [
        (&[][..], 0, "sent", 3),
        (&["-f", "RCPT"][..], 67, "refused", 0),
        (&["-r", "DATA"][..], 75, "deferred", 0),
    ] {
        let Some(sink) = SmtpSink::start(extra) else {
            return;
        };
        let dir = TempDir::new().unwrap();
        let file = dir.path().join("mail.jsonl");
        let records: Vec<String> = (1..=3)
            .map(|i| record(&format!("r{i}@example.test"), &format!("m{i}")))
            .collect();
        std::fs::write(&file, records.join("\n")).unwrap();
        let run = envoi(dir.path())
            .args([
                "batch",
                "--from",
                "s@example.test",
                "--retries",
                "0",
                "--json",
            ])
            .arg("--smtp-url")
            .arg(format!("smtp://127.0.0.1:{}?security=none", sink.port()))
            .arg(&file)
            .expect_exit(code);
        let lines: Vec<Value> = run
            .stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3, "{extra:?}: {run}");
        for (i, line) in lines.iter().enumerate() {
            assert_eq!(line["status"], status, "{extra:?}: {line}");
            let rcpt = &line["recipients"][0];
            assert_eq!(rcpt["address"], format!("r{}@example.test", i + 1));
            match status {
                "sent" => assert_eq!(
                    (&rcpt["status"], &rcpt["code"]),
                    (&Value::from("delivered"), &Value::from(250)),
                    "{line}"
                ),
                "refused" => {
                    assert_eq!(rcpt["status"], "refused", "{line}");
                    assert!(rcpt["code"].as_u64().unwrap() >= 500, "{line}");
                }
                // Accepted at RCPT, but the transaction failed at DATA: nobody has it.
                _ => assert_eq!(rcpt["status"], "not_sent", "{line}"),
            }
        }
        let dumps = sink.parsed_dumps();
        assert_eq!(dumps.len(), delivered, "{extra:?}: {}", sink.log());
        // The dump files' order is not the arrival order: compare the sets.
        let mut rcpts: Vec<String> = dumps.iter().map(|d| d.rcpt_args.join(" ")).collect();
        rcpts.sort();
        let expected: Vec<String> = (1..=delivered)
            .map(|i| format!("<r{i}@example.test>"))
            .collect();
        assert_eq!(rcpts, expected);
    }
}

/// Profile `outbox = true`: a record still deferred after its retries goes to the outbox
/// (status queued, exit 0) and `envoi outbox flush` delivers it later; `--resume` skips it.
#[test]
fn with_outbox_on_a_deferred_record_is_queued_and_flushed_later() {
    let s = Setup::plain(
        ServerOptions {
            tempfail_transactions: 1,
            ..ServerOptions::default()
        },
        10,
    );
    let outbox_dir = s.home().join("outbox");
    Config::new(s.server.port(), "none")
        .line("outbox = true")
        .line(&format!("outbox_dir = \"{}\"", outbox_dir.display()))
        .write(s.home());
    let file = numbered(&s, 3);
    let run = batch(&s, &[&file, "--retries", "0"]).expect_exit(0);
    assert!(run.stderr.contains("queued (outbox) 1"), "{run}");
    let lines = report(&report_path(&s));
    assert_eq!(lines[0]["status"], "queued");
    assert_eq!(lines[0]["exit_code"], 0);
    let id = lines[0]["outbox_id"].as_str().expect("an outbox id");
    let subjects: Vec<String> = s.server.messages().iter().map(subject).collect();
    assert_eq!(subjects, ["m2", "m3"]);

    let report_arg = report_path(&s).display().to_string();
    batch(&s, &[&file, "--resume", &report_arg]).expect_exit(0);
    assert_eq!(
        s.server.messages().len(),
        2,
        "a queued record is not sent again"
    );

    envoi(s.home())
        .args(["outbox", "flush", "--all", "--config"])
        .arg(&s.config)
        .expect_exit(0);
    let messages = s.server.messages();
    let subjects: Vec<String> = messages.iter().map(subject).collect();
    assert_eq!(
        subjects,
        ["m2", "m3", "m1"],
        "outbox entry {id} delivered once"
    );
    assert_eq!(
        header(&messages[2], "Message-ID"),
        lines[0]["message_id"].as_str().unwrap()
    );
}

/// CSV `--attach` takes a template: each row gets its own file; a row whose file is
/// missing is invalid (66 for that record), named, and the others go out.
#[test]
fn a_csv_row_gets_its_own_attachment() {
    let s = plain();
    std::fs::create_dir(s.home().join("invoices")).unwrap();
    std::fs::write(s.home().join("invoices/114.txt"), "invoice one-one-four\n").unwrap();
    std::fs::write(s.home().join("invoices/116.txt"), "invoice one-one-six\n").unwrap();
    let file = write(
        &s,
        "list.csv",
        "to,number\na@example.com,114\nb@example.com,115\nc@example.com,116\n",
    );
    let attach = format!("{}/invoices/{{{{ number }}}}.txt", s.home().display());
    batch(
        &s,
        &[
            &file,
            "--subject",
            "Invoice {{ number }}",
            "--body",
            "Attached.",
            "--attach",
            &attach,
        ],
    )
    .expect_exit(66);
    let messages = s.server.messages();
    assert_eq!(messages.len(), 2);
    for (m, number, text) in [
        (&messages[0], "114", "invoice one-one-four"),
        (&messages[1], "116", "invoice one-one-six"),
    ] {
        let parsed = MessageParser::default().parse(&m.data).unwrap();
        assert_eq!(parsed.subject(), Some(format!("Invoice {number}").as_str()));
        let part = parsed.attachment(0).expect("one attachment");
        assert_eq!(
            part.attachment_name(),
            Some(format!("{number}.txt").as_str())
        );
        assert_eq!(part.contents(), format!("{text}\n").as_bytes());
    }
    let lines = report(&report_path(&s));
    assert_eq!(lines[1]["status"], "invalid");
    assert_eq!(lines[1]["exit_code"], 66);
    let error = lines[1]["error"].as_str().unwrap();
    assert!(
        error.contains("line 3") && error.contains("115.txt"),
        "{error}"
    );
}

/// A server that answers "451 rate limit exceeded, slow down" to two MAILs: even with
/// --retries 0 no record fails; the batch says it slows down and every record arrives
/// once, the ones after the throttling at least a second apart.
#[test]
fn throttling_slows_the_batch_instead_of_failing_records() {
    let s = Setup::plain(
        ServerOptions {
            throttle_transactions: 2,
            ..ServerOptions::default()
        },
        10,
    );
    let file = numbered(&s, 3);
    let run = batch(&s, &[&file, "--retries", "0"]).expect_exit(0);
    assert!(run.stderr.contains("the server is throttling"), "{run}");
    let messages = s.server.messages();
    let subjects: Vec<String> = messages.iter().map(subject).collect();
    assert_eq!(subjects, ["m1", "m2", "m3"]);
    let gap = messages[2].at.duration_since(messages[1].at);
    assert!(
        gap >= Duration::from_millis(900),
        "{gap:?} after throttling"
    );
    let lines = report(&report_path(&s));
    assert!(lines.iter().all(|l| l["status"] == "sent"), "{lines:?}");
}

/// On a terminal (a pty from util-linux's `script`) a progress bar on stderr shows the
/// records done of the total and the failures so far; off a terminal (every other test)
/// there is none, only the summary line.
#[test]
fn a_terminal_gets_a_progress_bar_and_a_pipe_does_not() {
    let s = Setup::plain(
        ServerOptions {
            refuse_rcpt: vec![("refused@example.com".into(), 550)],
            ..ServerOptions::default()
        },
        10,
    );
    let file = write(
        &s,
        "r.jsonl",
        &[
            record("refused@example.com", "m1"),
            record("b@example.com", "m2"),
            record("c@example.com", "m3"),
        ]
        .join("\n"),
    );
    let command = format!(
        "{} batch --config {} --rate 4/s {file}",
        assert_cmd::cargo::cargo_bin("envoi").display(),
        s.config.display()
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env_clear()
        .envs(crate::support::envoi::hermetic_env(s.home()))
        .env("TERM", "xterm")
        .output()
        .expect("run script");
    let tty = String::from_utf8_lossy(&out.stdout);
    assert!(tty.contains("/3 records"), "no bar with the total: {tty:?}");
    // The same terminal with TERM unset (a cron-like environment on a pty): no bar.
    let bare = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env_clear()
        .envs(crate::support::envoi::hermetic_env(s.home()))
        .output()
        .expect("run script");
    let bare = String::from_utf8_lossy(&bare.stdout);
    assert!(!bare.contains("records ·"), "a bar without TERM: {bare:?}");
    assert!(bare.contains("envoi: batch: sent 2, refused 1"), "{bare:?}");
    assert!(tty.contains("1 failed"), "no failure count: {tty:?}");
    assert!(tty.contains("envoi: batch: sent 2, refused 1"), "{tty:?}");
    assert_eq!(s.server.messages().len(), 4);

    let piped = batch(&s, &[&file]).expect_exit(67);
    assert!(
        !piped.stderr.contains("records ·"),
        "a bar off a terminal: {piped}"
    );
    assert!(
        piped.stderr.contains("envoi: batch: sent 2, refused 1"),
        "{piped}"
    );
}

/// `--concurrency 4`: four sessions at once, each record delivered exactly once with its
/// own Message-ID, and one result line per record (in the order they finished). The
/// server answers every command 10 ms late, so no sender can finish the whole file before
/// the others have started: each opens its session.
#[test]
fn four_senders_deliver_every_record_once_over_four_sessions() {
    let s = Setup::plain(
        ServerOptions {
            delay_replies: Some(Duration::from_millis(10)),
            ..ServerOptions::default()
        },
        10,
    );
    let file = numbered(&s, 40);
    let run = batch(&s, &[&file, "--concurrency", "4"]).expect_exit(0);
    assert!(
        run.stderr.contains("sent 40") && run.stderr.contains("4 sessions"),
        "{run}"
    );
    assert!(s.server.wait_idle(Duration::from_secs(5)));
    assert_eq!(s.server.connections(), 4);
    let messages = s.server.messages();
    let mut subjects: Vec<String> = messages.iter().map(subject).collect();
    subjects.sort_by_key(|s| s[1..].parse::<u32>().unwrap());
    let expected: Vec<String> = (1..=40).map(|i| format!("m{i}")).collect();
    assert_eq!(subjects, expected, "each record once");
    for m in &messages {
        let n = subject(m)[1..].to_owned();
        assert_eq!(
            m.rcpt_to,
            [format!("r{n}@example.com")],
            "m{n}'s own recipient"
        );
        assert_eq!(body(m), format!("body of m{n}"));
    }
    let mut ids: Vec<String> = messages.iter().map(|m| header(m, "Message-ID")).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 40, "a Message-ID per record");
    let lines = report(&report_path(&s));
    let mut numbers: Vec<u64> = lines.iter().map(|l| l["line"].as_u64().unwrap()).collect();
    numbers.sort_unstable();
    assert_eq!(
        numbers,
        (1..=40).collect::<Vec<u64>>(),
        "one line per record"
    );
    assert!(lines.iter().all(|l| l["status"] == "sent"), "{lines:?}");
    let mut reported: Vec<String> = lines
        .iter()
        .map(|l| l["message_id"].as_str().unwrap().to_owned())
        .collect();
    reported.sort();
    assert_eq!(
        reported, ids,
        "the report names the Message-IDs that arrived"
    );
}

/// SIGKILL with three senders each waiting for the answer to a final dot: the in-flight
/// file names all three, `--resume` lists them as unknown and sends only the rest.
#[test]
fn a_batch_of_three_senders_killed_mid_message_resumes_without_sending_anything_twice() {
    let (killed, file, hung) = killed_while_awaiting_answers(5, 3);
    assert_eq!(hung, ["m1", "m2", "m3"]);
    let marks = std::fs::read_to_string(killed.home().join("report.jsonl.inflight")).unwrap();
    let mut marked: Vec<u64> = marks
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    marked.sort_unstable();
    assert_eq!(marked, [1, 2, 3], "{marks:?}");

    let (healthy, run) = resume_killed(&killed, &file, 3, 75);
    assert!(
        run.stderr.contains("sent 2") && run.stderr.contains("unknown 3"),
        "{run}"
    );
    let mut subjects: Vec<String> = healthy.server.messages().iter().map(subject).collect();
    subjects.sort();
    assert_eq!(subjects, ["m4", "m5"], "m1 to m3 are not sent again");
    let expected = [
        (1, "unknown"),
        (2, "unknown"),
        (3, "unknown"),
        (4, "sent"),
        (5, "sent"),
    ];
    assert_eq!(
        statuses(&report_path(&killed)),
        expected.map(|(n, s)| (n, s.to_owned()))
    );
}

/// `--rate` holds across senders: with three sessions at 10/s, the server still sees the
/// messages at least ~100 ms apart (gaps at the server, never the total time).
#[test]
fn rate_holds_across_three_senders() {
    let s = plain();
    let file = numbered(&s, 6);
    batch(&s, &[&file, "--rate", "10/s", "--concurrency", "3"]).expect_exit(0);
    assert_eq!(s.server.connections(), 3);
    let mut times: Vec<std::time::Instant> = s.server.messages().iter().map(|m| m.at).collect();
    assert_eq!(times.len(), 6);
    times.sort();
    for pair in times.windows(2) {
        let gap = pair[1].duration_since(pair[0]);
        assert!(
            gap >= Duration::from_millis(80),
            "{gap:?} between two messages"
        );
    }
}

/// Microsoft 365 allows three connections per mailbox: `--rate m365` with more senders is
/// refused before anything is sent.
#[test]
fn m365_with_four_senders_is_refused_before_connecting() {
    let s = plain();
    let file = write(&s, "mail.jsonl", &record("a@example.com", "one"));
    let run = batch(&s, &[&file, "--rate", "m365", "--concurrency", "4"]).expect_exit(64);
    assert!(
        run.stderr.contains("Microsoft 365 allows at most 3")
            && run.stderr.contains("--concurrency 3"),
        "{run}"
    );
    // And the README's "at most 64".
    let run = batch(&s, &[&file, "--concurrency", "65"]).expect_exit(64);
    assert!(run.stderr.contains("--concurrency"), "{run}");
    assert_eq!(s.server.connections(), 0);
}

/// A refused login with three senders: each session's AUTH fails, the batch stops with 77
/// after the records already handed out (each `failed`), the rest are not tried, and
/// nothing hangs or arrives.
#[test]
fn a_refused_login_stops_every_sender() {
    let s = Setup::new(Security::StartTls, ServerOptions::default());
    let file = numbered(&s, 10);
    let run = batch(&s, &[&file, "--concurrency", "3"])
        .env("ENVOI_TEST_PASSWORD", "not-the-password")
        .expect_exit(77);
    assert!(
        run.stderr.contains("the records after it were not tried"),
        "{run}"
    );
    assert!(!run.output().contains("not-the-password"), "{run}");
    s.assert_nothing_delivered();
    let lines = report(&report_path(&s));
    assert!(
        (1..=3).contains(&lines.len()),
        "only records already handed out get a line: {lines:?}"
    );
    assert!(
        lines
            .iter()
            .all(|l| l["status"] == "failed" && l["exit_code"] == 77),
        "{lines:?}"
    );
}

/// Marks are never cleared: a mark whose record has a result line is stale and ignored;
/// only a marked record without one is listed as unknown.
#[test]
fn resume_ignores_marks_of_records_with_a_result_line() {
    let s = plain();
    let file = numbered(&s, 4);
    let earlier = [
        r#"{"line":1,"status":"sent","message_id":"<1@x>","recipients":[],"data_reply":null,"exit_code":0,"error":null}"#,
        r#"{"line":2,"status":"deferred","message_id":"<2@x>","recipients":[],"data_reply":null,"exit_code":75,"error":"451"}"#,
    ];
    std::fs::write(report_path(&s), format!("{}\n", earlier.join("\n"))).unwrap();
    // Three senders: their last records were 1 and 2 (results written) and 3 (none).
    let marks = format!("{:>20}\n{:>20}\n{:>20}\n", 1, 2, 3);
    std::fs::write(s.home().join("report.jsonl.inflight"), marks).unwrap();
    let report_arg = report_path(&s).display().to_string();
    let run = batch(&s, &[&file, "--resume", &report_arg]).expect_exit(75);
    assert!(run.stderr.contains("unknown 1"), "{run}");
    let subjects: Vec<String> = s.server.messages().iter().map(subject).collect();
    assert_eq!(subjects, ["m2", "m4"], "2 was deferred, 4 never started");
    let lines = report(&report_path(&s));
    let new: Vec<(u64, &str)> = lines[2..]
        .iter()
        .map(|l| (l["line"].as_u64().unwrap(), l["status"].as_str().unwrap()))
        .collect();
    assert_eq!(new, [(3, "unknown"), (2, "sent"), (4, "sent")]);
}

/// Three senders share one login: the password command runs once for the whole batch,
/// and every session logs in with what it printed.
#[test]
fn three_senders_share_one_password_command_run() {
    let dir = TempDir::new().expect("temp dir");
    let pki = Arc::new(TestPki::new());
    let ca = pki.write_ca(dir.path());
    let server = TestServer::start(ServerOptions {
        security: Security::StartTls,
        auth: Some((USER.into(), PASSWORD.into())),
        pki: Some(pki),
        // Late answers, so that every sender gets a record and opens its session.
        delay_replies: Some(Duration::from_millis(10)),
        ..ServerOptions::default()
    });
    let runs = dir.path().join("password-command-runs");
    let config = Config::new(server.port(), "starttls")
        .trust(&ca)
        .line(&format!(
            "username = \"{USER}\"\npassword_command = \"echo run >> '{}'; echo {PASSWORD}\"",
            runs.display()
        ))
        .write(dir.path());
    let records: Vec<String> = (1..=9)
        .map(|i| record(&format!("r{i}@example.com"), &format!("m{i}")))
        .collect();
    let file = dir.path().join("mail.jsonl");
    std::fs::write(&file, records.join("\n")).expect("write the records");
    let run = envoi(dir.path())
        .arg("batch")
        .arg("--config")
        .arg(&config)
        .args(["--concurrency", "3"])
        .arg(&file)
        .expect_exit(0);
    assert!(
        run.stderr.contains("sent 9") && run.stderr.contains("3 sessions"),
        "{run}"
    );
    assert_eq!(
        std::fs::read_to_string(&runs).expect("the command ran"),
        "run\n",
        "the password command ran once"
    );
    let messages = server.messages();
    assert_eq!(messages.len(), 9);
    assert!(
        messages
            .iter()
            .all(|m| m.authenticated_as.as_deref() == Some(USER) && m.tls),
        "every session logged in over TLS"
    );
}

// ---- The report and --resume are safe to re-run (BA05–BA07, BA10, BA12–BA14) ----

/// A file of `text` the test owns, and a link at `link` to it: what another user could
/// plant in a shared folder.
fn planted_link(s: &Setup, link: &Path, text: &str) -> PathBuf {
    let victim = s.home().join("victim.txt");
    std::fs::write(&victim, text).unwrap();
    std::os::unix::fs::symlink(&victim, link).unwrap();
    victim
}

#[test]
fn ba05_a_report_that_is_a_link_is_refused_and_its_target_left_alone() {
    let s = plain();
    let file = numbered(&s, 2);
    let victim = planted_link(&s, &report_path(&s), "IMPORTANT\n");
    let run = batch(&s, &[&file]).expect_exit(78);
    assert!(run.stderr.contains("symbolic link"), "{run}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "IMPORTANT\n");
    s.assert_nothing_delivered();
}

/// A hard link cannot be told from its target by `O_NOFOLLOW`: a root batch whose
/// `--report` (or `.inflight`) was a second name of a root-owned 0644 file made it 0600
/// and appended to it (or cut it to nothing). A state file with two names is refused
/// (78) before anything is changed or sent.
#[test]
fn ba05_a_report_that_is_a_hard_link_is_refused_and_its_target_left_alone() {
    use std::os::unix::fs::PermissionsExt;
    let s = plain();
    let file = numbered(&s, 2);
    let victim = s.home().join("victim.txt");
    std::fs::write(&victim, "IMPORTANT\n").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let report = report_path(&s);
    let marks = s.home().join("report.jsonl.inflight");
    for link in [&report, &marks] {
        std::fs::hard_link(&victim, link).unwrap();
        let run = batch(&s, &[&file]).expect_exit(78);
        assert!(
            run.stderr.contains("it has 2 names (hard links)"),
            "{}: {run}",
            link.display()
        );
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "IMPORTANT\n");
        assert_eq!(mode(&victim), 0o644, "{} chmodded", link.display());
        std::fs::remove_file(link).unwrap();
    }
    s.assert_nothing_delivered();
}

#[test]
fn ba06_an_inflight_file_that_is_a_link_is_not_truncated_through_it() {
    let s = plain();
    let file = numbered(&s, 2);
    let marks = s.home().join("report.jsonl.inflight");
    let victim = planted_link(&s, &marks, "IMPORTANT-ROOT-DATA\n");
    let run = batch(&s, &[&file]).expect_exit(78);
    assert!(run.stderr.contains("symbolic link"), "{run}");
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "IMPORTANT-ROOT-DATA\n"
    );
    s.assert_nothing_delivered();
}

/// The report names recipients and servers: made 0600 even under umask 022, and an old
/// one others can read is made private (with a word); one others can write is refused.
#[test]
fn ba07_the_report_is_private_to_its_owner() {
    use std::os::unix::fs::PermissionsExt;
    let s = plain();
    let file = numbered(&s, 1);
    let report = report_path(&s);
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg("umask 022 && exec \"$@\"")
        .arg("sh")
        .arg(assert_cmd::cargo::cargo_bin("envoi"))
        .args(["batch", "--config"])
        .arg(&s.config)
        .arg("--report")
        .arg(&report)
        .arg(&file)
        .env_clear()
        .envs(crate::support::envoi::hermetic_env(s.home()))
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&report), 0o600);

    std::fs::set_permissions(&report, std::fs::Permissions::from_mode(0o644)).unwrap();
    let run = batch(&s, &[&file]).expect_exit(0);
    assert!(
        run.stderr.contains("others could read it (mode 644)"),
        "{run}"
    );
    assert_eq!(mode(&report), 0o600);

    std::fs::set_permissions(&report, std::fs::Permissions::from_mode(0o666)).unwrap();
    let run = batch(&s, &[&file]).expect_exit(78);
    assert!(run.stderr.contains("chmod 600"), "{run}");
    assert_eq!(s.server.messages().len(), 2, "the third run sent nothing");
}

/// Two batches on one report at once, as an overrunning cron job would start them: the
/// second is refused (75) before it connects, and every record arrives exactly once.
#[test]
fn ba10_a_second_batch_on_the_same_report_is_refused_and_nothing_goes_twice() {
    let s = Setup::plain(
        ServerOptions {
            delay_replies: Some(Duration::from_millis(40)),
            ..ServerOptions::default()
        },
        10,
    );
    let file = numbered(&s, 10);
    let path = report_path(&s);
    std::fs::write(&path, "").unwrap();
    let args: Vec<std::ffi::OsString> = vec![
        "batch".into(),
        "--config".into(),
        s.config.clone().into(),
        "--report".into(),
        path.clone().into(),
        "--resume".into(),
        path.clone().into(),
        file.clone().into(),
    ];
    let out = |name: &str| std::fs::File::create(s.home().join(name)).unwrap();
    let mut first = spawn_envoi(s.home(), &args, out("out"), out("err"));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while s.server.messages().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let report_arg = path.display().to_string();
    let run = batch(&s, &[&file, "--resume", &report_arg]).expect_exit(75);
    let holder = format!("another envoi batch (pid {}) is using it", first.id());
    assert!(run.stderr.contains(&holder), "{run}");
    assert!(first.wait().unwrap().success(), "the first batch ends well");
    let mut subjects: Vec<String> = s.server.messages().iter().map(subject).collect();
    subjects.sort();
    let mut expected: Vec<String> = (1..=10).map(|i| format!("m{i}")).collect();
    expected.sort();
    assert_eq!(subjects, expected, "each record once");
    assert_eq!(report(&path).len(), 10, "one result line each");
}

/// A new record put on line 1 between two runs: `--resume` knows the old records by
/// their content, so the new one is sent and none of the old ones again; it says what
/// changed.
#[test]
fn ba12_a_record_inserted_before_resume_is_sent_and_no_old_one_twice() {
    let s = plain();
    let file = numbered(&s, 5);
    batch(&s, &[&file]).expect_exit(0);
    let old = std::fs::read_to_string(&file).unwrap();
    let urgent = record("urgent@example.com", "rec 99");
    std::fs::write(&file, format!("{urgent}\n{old}")).unwrap();
    let report_arg = report_path(&s).display().to_string();
    let run = batch(&s, &[&file, "--resume", &report_arg]).expect_exit(0);
    assert!(run.stderr.contains("skipped (--resume) 5"), "{run}");
    assert!(
        run.stderr
            .contains("5 record(s) it lists as sent are now on other lines")
            && run.stderr.contains("the report's line 1 is line 2 now")
            && run
                .stderr
                .contains("1 record(s) are new since the report (line 1)"),
        "{run}"
    );
    let subjects: Vec<String> = s.server.messages().iter().map(subject).collect();
    assert_eq!(subjects, ["m1", "m2", "m3", "m4", "m5", "rec 99"]);
    let lines = report(&report_path(&s));
    assert_eq!(
        (lines[5]["line"].as_u64(), lines[5]["status"].as_str()),
        (Some(1), Some("sent"))
    );

    // A record removed: said, and nothing is sent.
    std::fs::write(
        &file,
        format!(
            "{urgent}\n{}",
            old.lines().skip(1).collect::<Vec<_>>().join("\n")
        ),
    )
    .unwrap();
    let run = batch(&s, &[&file, "--resume", &report_arg]).expect_exit(0);
    assert!(
        run.stderr.contains(
            "1 record(s) the report lists as sent are no longer in the input (the report's line 1)"
        ),
        "{run}"
    );
    assert_eq!(s.server.messages().len(), 6);
}

/// Identical records are counted: two sent, so two are skipped, and a third is sent,
/// as is a new record put before them.
#[test]
fn ba12_identical_records_are_skipped_as_many_times_as_they_were_sent() {
    let s = plain();
    let same = record("a@example.com", "same");
    let file = write(&s, "mail.jsonl", &format!("{same}\n{same}\n"));
    batch(&s, &[&file]).expect_exit(0);
    let report_arg = report_path(&s).display().to_string();
    let other = record("b@example.com", "other");
    write(
        &s,
        "mail.jsonl",
        &format!("{other}\n{same}\n{same}\n{same}\n"),
    );
    let run = batch(&s, &[&file, "--resume", &report_arg]).expect_exit(0);
    assert!(
        run.stderr.contains("sent 2") && run.stderr.contains("skipped (--resume) 2"),
        "{run}"
    );
    let subjects: Vec<String> = s.server.messages().iter().map(subject).collect();
    assert_eq!(subjects, ["same", "same", "other", "same"]);
}

#[test]
fn ba13_a_report_or_resume_that_is_the_input_is_refused() {
    let s = plain();
    let file = numbered(&s, 2);
    let run = envoi(s.home())
        .timeout(Duration::from_secs(20))
        .args(["batch", "--config"])
        .arg(&s.config)
        .args(["--report", &file, &file])
        .expect_exit(64);
    assert!(run.stderr.contains("is the input FILE itself"), "{run}");
    let run = batch(&s, &[&file, "--resume", &file]).expect_exit(64);
    assert!(run.stderr.contains("--resume"), "{run}");
    s.assert_nothing_delivered();
    assert_eq!(std::fs::read_to_string(&file).unwrap().lines().count(), 2);
}

/// `batch /dev/zero` is refused before reading (a device never ends); one record over
/// 64 MiB is invalid (65) and the records around it go out.
#[test]
fn ba14_a_device_input_is_refused_and_an_over_long_record_is_invalid() {
    let s = plain();
    let run = envoi(s.home())
        .timeout(Duration::from_secs(20))
        .args(["batch", "--format", "jsonl", "--config"])
        .arg(&s.config)
        .arg("/dev/zero")
        .expect_exit(66);
    assert!(run.stderr.contains("not a regular file"), "{run}");

    let huge = format!(
        r#"{{"To":"b@example.com","Subject":"huge","Body":"{}"}}"#,
        "a".repeat(64 << 20)
    );
    let text = format!(
        "{}\n{huge}\n{}\n",
        record("a@example.com", "m1"),
        record("c@example.com", "m3")
    );
    let file = write(&s, "mail.jsonl", &text);
    drop((huge, text));
    let run = batch(&s, &[&file]).expect_exit(65);
    assert!(run.stderr.contains("sent 2, refused 0, invalid 1"), "{run}");
    let lines = report(&report_path(&s));
    assert_eq!(
        (lines[1]["line"].as_u64(), lines[1]["status"].as_str()),
        (Some(2), Some("invalid"))
    );
    assert!(
        lines[1]["error"]
            .as_str()
            .unwrap()
            .contains("longer than 64 MiB"),
        "{lines:?}"
    );
    let subjects: Vec<String> = s.server.messages().iter().map(subject).collect();
    assert_eq!(subjects, ["m1", "m3"]);
}

/// A record an earlier run deferred, then a later run was killed while sending it again:
/// the old `deferred` line is not its result, so `--resume` lists it as unknown instead
/// of sending it a third time (it may have arrived).
#[test]
fn a_mark_counts_only_result_lines_of_the_run_that_made_it() {
    let s = plain();
    let file = numbered(&s, 3);
    let hash = |i: u32| {
        let line = record(&format!("r{i}@example.com"), &format!("m{i}"));
        format!(
            "{:016x}",
            envoi::message::records::record_hash(&[line.as_bytes()])
        )
    };
    let earlier = [
        format!(
            r#"{{"line":1,"hash":"{}","status":"sent","message_id":"<1@x>","recipients":[],"data_reply":null,"exit_code":0,"error":null}}"#,
            hash(1)
        ),
        format!(
            r#"{{"line":2,"hash":"{}","status":"deferred","message_id":"<2@x>","recipients":[],"data_reply":null,"exit_code":75,"error":"451"}}"#,
            hash(2)
        ),
    ];
    let text = format!("{}\n", earlier.join("\n"));
    std::fs::write(report_path(&s), &text).unwrap();
    let marks = format!("@{:>20}\n{:>20} {}\n", text.len(), 2, hash(2));
    std::fs::write(s.home().join("report.jsonl.inflight"), marks).unwrap();
    let report_arg = report_path(&s).display().to_string();
    let run = batch(&s, &[&file, "--resume", &report_arg]).expect_exit(75);
    assert!(run.stderr.contains("unknown 1"), "{run}");
    let subjects: Vec<String> = s.server.messages().iter().map(subject).collect();
    assert_eq!(subjects, ["m3"], "m2 is not sent again");
}

/// A config in the setup's home for a port where nothing listens: `closed.toml`.
fn closed_port_config(s: &Setup) -> PathBuf {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
        listener.local_addr().expect("its address").port()
    };
    let dir = s.home().join("closed");
    std::fs::create_dir_all(&dir).unwrap();
    Config::new(port, "none").write(&dir)
}

#[test]
fn a_down_server_stops_the_batch_after_three_records_and_resume_sends_the_rest() {
    let s = plain();
    let file = numbered(&s, 50);
    let closed = closed_port_config(&s);
    let started = std::time::Instant::now();
    let run = envoi(s.home())
        .args(["batch", "--config"])
        .arg(&closed)
        .arg("--report")
        .arg(report_path(&s))
        .arg(&file)
        .expect_exit(75);
    let took = started.elapsed();
    // The first record waits out its retries (about 4 s); the next two try once each.
    assert!(took < Duration::from_secs(15), "took {took:?}: {run}");
    assert!(
        run.stderr
            .contains("3 record(s) in a row could not reach the server")
            && run.stderr.contains("47 record(s) after it were not tried")
            && run
                .stderr
                .contains(&format!("--resume {}", report_path(&s).display()))
            && run.stderr.contains("deferred 3, not tried 47"),
        "{run}"
    );
    // Only the records tried are listed: the others are not "failed", just not tried.
    let lines = statuses(&report_path(&s));
    assert_eq!(
        lines,
        [
            (1, "deferred".into()),
            (2, "deferred".into()),
            (3, "deferred".into())
        ]
    );
    // The server is up again: --resume sends every record, each once.
    let report_arg = report_path(&s).display().to_string();
    batch(&s, &[&file, "--resume", &report_arg]).expect_exit(0);
    let mut subjects: Vec<String> = s.server.messages().iter().map(subject).collect();
    subjects.sort();
    let mut expected: Vec<String> = (1..=50).map(|i| format!("m{i}")).collect();
    expected.sort();
    assert_eq!(subjects, expected);
}

#[test]
fn max_connect_failures_0_tries_every_record_and_without_report_lists_each_on_stderr() {
    let s = plain();
    let file = numbered(&s, 5);
    let closed = closed_port_config(&s);
    let run = envoi(s.home())
        .args([
            "batch",
            "--retries",
            "0",
            "--max-connect-failures",
            "0",
            "--config",
        ])
        .arg(&closed)
        .arg(&file)
        .expect_exit(75);
    for i in 1..=5 {
        assert!(
            run.stderr.contains(&format!(
                "envoi: line {i}: r{i}@example.com: deferred: connecting to"
            )),
            "record {i} has its line: {run}"
        );
    }
    assert!(run.stderr.contains("deferred 5;"), "{run}");
    assert!(!run.stderr.contains("not tried"), "{run}");
}

#[test]
fn refused_or_deferred_transactions_do_not_trip_the_connect_breaker() {
    let s = Setup::plain(
        ServerOptions {
            refuse_rcpt: vec![("gone@example.com".into(), 550)],
            // 451 to the first two MAIL FROMs: the server is up, it defers messages.
            tempfail_transactions: 2,
            ..ServerOptions::default()
        },
        10,
    );
    let file = write(
        &s,
        "mail.jsonl",
        &[
            record("a@example.com", "one"),
            record("b@example.com", "two"),
            record("gone@example.com", "three"),
            record("c@example.com", "four"),
        ]
        .join("\n"),
    );
    let run = batch(
        &s,
        &[&file, "--retries", "0", "--max-connect-failures", "1"],
    )
    .expect_exit(75);
    assert!(!run.stderr.contains("could not reach"), "{run}");
    let subjects: Vec<String> = s.server.messages().iter().map(subject).collect();
    assert_eq!(subjects, ["four"]);
    assert_eq!(
        statuses(&report_path(&s)),
        [
            (1, "deferred".into()),
            (2, "deferred".into()),
            (3, "refused".into()),
            (4, "sent".into())
        ]
    );
}

/// Excel and Python's csv module write CRLF; people leave blank lines; a quoted cell may
/// span lines. Each result line and error names the record's physical line (the csv
/// crate's count is one short with CRLF and names the blank line before a record), and
/// every result line names the row's recipient, an invalid one's too.
#[test]
fn csv_lines_are_physical_with_crlf_blank_lines_and_quoted_breaks_and_name_the_recipient() {
    let s = plain();
    let text = "email,name\n\
                ann@example.com,Ann\n\
                \n\
                bob@example.com,\"Bob\nthe second\"\n\
                \n\
                cy@example.com,\n\
                dee@example.com,Dee\n"
        .replace('\n', "\r\n");
    let file = write(&s, "list.csv", &text);
    let run = batch(
        &s,
        &[
            &file,
            "--to-column",
            "email",
            "--subject",
            "Hi",
            "--body",
            "Dear {{ name }}",
            "--json",
        ],
    )
    .expect_exit(65);
    let lines = report(&report_path(&s));
    let got: Vec<(u64, &str, &str)> = lines
        .iter()
        .map(|l| {
            (
                l["line"].as_u64().unwrap(),
                l["status"].as_str().unwrap(),
                l["recipients"][0]["address"].as_str().unwrap_or("-"),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (2, "sent", "ann@example.com"),
            (4, "sent", "bob@example.com"),
            (7, "invalid", "cy@example.com"),
            (8, "sent", "dee@example.com"),
        ],
        "{run}"
    );
    assert_eq!(lines[2]["recipients"][0]["status"], "not_sent");
    let error = lines[2]["error"].as_str().unwrap();
    assert!(error.starts_with("line 7: "), "{error}");
    let bodies: Vec<String> = s.server.messages().iter().map(body).collect();
    assert_eq!(bodies[1], "Dear Bob\r\nthe second");
}

/// `--dry-run` builds and checks every row, lists what would go (stdout without
/// `--report`/`--json`, `dry_run` lines with them), fails the bad rows as a batch does,
/// and connects nowhere.
#[test]
fn dry_run_checks_every_record_lists_what_would_go_and_connects_nowhere() {
    let s = plain();
    let file = write(
        &s,
        "list.csv",
        "email,name,number\n\
         ann@example.com,Ann,1\n\
         bad,Bob,2\n\
         cy@example.com,,3\n\
         dee@example.com,Dee,4\n",
    );
    let args = [
        file.as_str(),
        "--to-column",
        "email",
        "--subject",
        "Invoice {{ number }}",
        "--body",
        "Dear {{ name }}",
        "--dry-run",
    ];
    let run = envoi(s.home())
        .args(["batch", "--config"])
        .arg(&s.config)
        .args(args)
        .expect_exit(65);
    assert_eq!(
        run.stdout,
        "line 2: would send to ann@example.com: \"Invoice 1\"\n\
         line 5: would send to dee@example.com: \"Invoice 4\"\n",
        "{run}"
    );
    assert!(
        run.stderr
            .contains("envoi: line 3: bad: invalid: column \"email\"")
            && run
                .stderr
                .contains("envoi: line 4: cy@example.com: invalid: --body")
            && run.stderr.contains("invalid 2, would send (--dry-run) 2"),
        "{run}"
    );
    batch(&s, &args).expect_exit(65);
    let lines = report(&report_path(&s));
    let got: Vec<(u64, &str, &str)> = lines
        .iter()
        .map(|l| {
            (
                l["line"].as_u64().unwrap(),
                l["status"].as_str().unwrap(),
                l["subject"].as_str().unwrap_or("-"),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (2, "dry_run", "Invoice 1"),
            (3, "invalid", "-"),
            (4, "invalid", "-"),
            (5, "dry_run", "Invoice 4")
        ]
    );
    assert_eq!(lines[0]["recipients"][0]["address"], "ann@example.com");
    assert_eq!(lines[0]["exit_code"], 0);
    assert_eq!(s.server.connections(), 0, "a dry run connects nowhere");
    assert!(s.server.messages().is_empty());
    // The rows a dry run listed are not done: --resume of its report sends them.
    let report_arg = report_path(&s).display().to_string();
    let resumed = [
        file.as_str(),
        "--to-column",
        "email",
        "--subject",
        "Invoice {{ number }}",
        "--body",
        "Dear {{ name }}",
        "--resume",
        &report_arg,
    ];
    batch(&s, &resumed).expect_exit(65);
    let subjects: Vec<String> = s.server.messages().iter().map(subject).collect();
    assert_eq!(subjects, ["Invoice 1", "Invoice 4"]);
}
