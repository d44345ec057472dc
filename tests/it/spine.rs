//! One spine for every command: `send`, `sendmail`, `batch` and the outbox give the same
//! answer to the same input, in the same words.

use std::path::Path;

use serde_json::Value;
use tempfile::TempDir;

use crate::support::envoi::{Config, ExpectExit, envoi};

/// A config whose default profile writes each message into `<home>/saved`.
fn file_profile(home: &Path) -> std::path::PathBuf {
    Config::new(1, "none")
        .line(&format!(
            "transport = \"file\"\ndir = \"{}\"",
            home.join("saved").display()
        ))
        .write(home)
}

/// The JSON lines on stdout.
fn lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect()
}

/// The file transport is `saved` for `send --json` and for a batch line alike (a batch
/// line said `sent` for it), and both messages are in the folder.
#[test]
fn file_transport_is_saved_in_send_and_batch() {
    let home = TempDir::new().expect("temp dir");
    let config = file_profile(home.path());
    let sent = envoi(home.path())
        .args([
            "send",
            "--json",
            "--to",
            "ann@example.com",
            "--subject",
            "s",
        ])
        .args(["--body", "b", "--config"])
        .arg(&config)
        .expect_exit(0);
    assert_eq!(sent.json()["status"], "saved", "{sent}");

    let records = home.path().join("mail.jsonl");
    std::fs::write(
        &records,
        r#"{"To":"ann@example.com","Subject":"s","Body":"b"}"#,
    )
    .expect("write the records");
    let batch = envoi(home.path())
        .args(["batch", "--json", "--config"])
        .arg(&config)
        .arg(&records)
        .expect_exit(0);
    let line = &lines(&batch.stdout)[0];
    assert_eq!(line["status"], "saved", "{batch}");
    assert_eq!(line["exit_code"], 0, "{batch}");
    let saved = std::fs::read_dir(home.path().join("saved")).expect("the folder");
    assert_eq!(saved.count(), 2);
}

/// `send --queue` says `queued` and `outbox list --json` calls the entry the same.
#[test]
fn a_queued_message_is_queued_in_send_and_outbox_list() {
    let home = TempDir::new().expect("temp dir");
    let outbox = home.path().join("outbox");
    let run = envoi(home.path())
        .args([
            "send",
            "--json",
            "--queue",
            "--retries",
            "0",
            "--from",
            "a@example.com",
        ])
        .args(["--to", "ann@example.com", "--subject", "s", "--body", "b"])
        .args([
            "--smtp-url",
            "smtp://127.0.0.1:1?security=none",
            "--outbox-dir",
        ])
        .arg(&outbox)
        .expect_exit(0);
    assert_eq!(run.json()["status"], "queued", "{run}");
    let list = envoi(home.path())
        .args(["outbox", "list", "--json", "--outbox-dir"])
        .arg(&outbox)
        .expect_exit(0);
    let entries = list.json();
    assert_eq!(entries[0]["status"], "queued", "{list}");
    assert_eq!(entries[0]["id"], run.json()["outbox_id"], "{list}");
}

/// Without a sender anywhere, `send` and a batch record are refused (64) in one wording.
#[test]
fn no_sender_is_one_answer_in_send_and_batch() {
    let home = TempDir::new().expect("temp dir");
    let url = "smtp://127.0.0.1:1?security=none";
    let send = envoi(home.path())
        .args(["send", "--smtp-url", url, "--to", "ann@example.com"])
        .args(["--subject", "s", "--body", "b"])
        .expect_exit(64);
    let records = home.path().join("mail.jsonl");
    std::fs::write(
        &records,
        r#"{"To":"ann@example.com","Subject":"s","Body":"b"}"#,
    )
    .expect("write the records");
    let batch = envoi(home.path())
        .args(["batch", "--json", "--smtp-url", url])
        .arg(&records)
        .expect_exit(64);
    let line = &lines(&batch.stdout)[0];
    assert_eq!(line["status"], "invalid", "{batch}");
    let words = "no sender: give From in the message, --from, or set `from` in the profile";
    assert!(send.stderr.contains(words), "{send}");
    assert_eq!(line["error"], format!("line 1: {words}"), "{batch}");
}

/// Without a connection, every command says so in the same words (78).
#[test]
fn no_connection_is_one_answer_in_every_command() {
    let home = TempDir::new().expect("temp dir");
    let records = home.path().join("mail.jsonl");
    std::fs::write(
        &records,
        r#"{"To":"ann@example.com","Subject":"s","Body":"b"}"#,
    )
    .expect("write the records");
    let runs = [
        envoi(home.path())
            .args([
                "send",
                "--to",
                "a@example.com",
                "--subject",
                "s",
                "--body",
                "b",
            ])
            .args(["--from", "b@example.com"])
            .expect_exit(78),
        envoi(home.path())
            .arg("batch")
            .arg(&records)
            .expect_exit(78),
        envoi(home.path()).arg("check").expect_exit(78),
        envoi(home.path())
            .args(["sendmail", "a@example.com"])
            .write_stdin(&b"Subject: s\n\nb\n"[..])
            .expect_exit(78),
    ];
    // Every file looked for is named: the user's own, then the system-wide one.
    let words = format!(
        "no connection: no config file at {} nor {}; give --profile or --smtp-url (or \
         $ENVOI_PROFILE or $ENVOI_SMTP_URL), or set `default` in the config file",
        home.path().join(".config/envoi/config.toml").display(),
        home.path().join("system-config.toml").display()
    );
    for run in runs {
        assert!(run.stderr.contains(&words), "{run}");
    }
}

/// A record the file transport saved is done for `--resume`, like a sent one.
#[test]
fn a_saved_record_is_skipped_by_resume() {
    let home = TempDir::new().expect("temp dir");
    let config = file_profile(home.path());
    let records = home.path().join("mail.jsonl");
    std::fs::write(
        &records,
        r#"{"To":"ann@example.com","Subject":"s","Body":"b"}"#,
    )
    .expect("write the records");
    let report = home.path().join("report.jsonl");
    std::fs::write(&report, "").expect("an empty report");
    for _ in 0..2 {
        envoi(home.path())
            .args(["batch", "--config"])
            .arg(&config)
            .arg("--report")
            .arg(&report)
            .arg("--resume")
            .arg(&report)
            .arg(&records)
            .expect_exit(0);
    }
    let saved = std::fs::read_dir(home.path().join("saved")).expect("the folder");
    assert_eq!(saved.count(), 1, "saved again on --resume");
}
