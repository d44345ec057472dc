//! The outbox end to end: `send --queue`, `envoi outbox list|flush|drop` and
//! `--idempotency-key`, against the in-process SMTP server (mailin). Every claim is read
//! off what the server received (messages counted by their Message-ID header), including
//! overlapping flushes and processes killed with SIGKILL mid-flush and mid-enqueue.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs::{self, File};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use mail_parser::{MessageParser, MimeHeaders};
use serde_json::Value;
use crate::support::envoi::{envoi, outputs, write_config};
use crate::support::smtp_server::{Received, ServerOptions, TestServer};
use tempfile::TempDir;

const FROM: &str = "sender@example.com";
const TO: &str = "rcpt@example.com";
/// Longest any single envoi process may run before the test kills it and fails.
const PROCESS_LIMIT: Duration = Duration::from_secs(60);

/// A hermetic HOME with an outbox directory inside it.
struct Env {
    home: TempDir,
    outbox: PathBuf,
}

impl Env {
    fn new() -> Env {
        let home = TempDir::new().expect("temp dir");
        let outbox = home.path().join("outbox");
        Env { home, outbox }
    }

    fn home(&self) -> &Path {
        self.home.path()
    }

    /// A config file `<name>/config.toml` whose default profile `test` points at `port`.
    fn config(&self, name: &str, port: u16) -> PathBuf {
        let dir = self.home().join(name);
        fs::create_dir_all(&dir).expect("config dir");
        write_config(&dir, port, "none", "")
    }

    /// Arguments of `envoi send … --json` with this outbox, sender, one recipient and
    /// `connection` (see [`url`] and [`profile`]).
    fn send_args(&self, connection: &[OsString], subject: &str) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec!["send".into(), "--outbox-dir".into()];
        args.push(self.outbox.clone().into());
        args.extend(connection.iter().cloned());
        for a in ["--from", FROM, "--to", TO, "--subject", subject] {
            args.push(a.into());
        }
        for a in ["--body", "Sent through the envoi outbox.", "--json"] {
            args.push(a.into());
        }
        args
    }

    /// `envoi send … --json` (add `--queue`, `--retries 0`… as needed).
    fn send(&self, connection: &[OsString], subject: &str) -> assert_cmd::Command {
        let mut cmd = envoi(self.home());
        cmd.args(self.send_args(connection, subject));
        cmd
    }

    /// `envoi outbox <sub> --outbox-dir <outbox> --json`.
    fn outbox_cmd(&self, sub: &str) -> assert_cmd::Command {
        let mut cmd = envoi(self.home());
        cmd.args(["outbox", sub, "--json", "--outbox-dir"])
            .arg(&self.outbox);
        cmd
    }

    /// `envoi outbox list --json [--failed]`: must exit 0 and print a JSON array.
    fn list(&self, failed: bool) -> Vec<Value> {
        let mut cmd = self.outbox_cmd("list");
        if failed {
            cmd.arg("--failed");
        }
        let out = cmd.output().expect("run envoi outbox list");
        let (stdout, stderr) = outputs(&out);
        assert_eq!(out.status.code(), Some(0), "outbox list: {stderr}");
        let value: Value = serde_json::from_str(stdout.trim())
            .unwrap_or_else(|e| panic!("outbox list printed no JSON ({e}): {stdout:?} {stderr}"));
        value
            .as_array()
            .unwrap_or_else(|| panic!("outbox list is not an array: {value}"))
            .clone()
    }

    /// `envoi outbox flush --json` with `extra` flags: must exit 0; returns its summary.
    fn flush(&self, extra: &[&OsString]) -> Value {
        let out = self
            .outbox_cmd("flush")
            .args(extra)
            .output()
            .expect("run envoi outbox flush");
        expect_json(&out, 0)
    }

    /// The names in `<outbox>/<folder>` (an absent folder is empty).
    fn on_disk(&self, folder: &str) -> Vec<String> {
        match fs::read_dir(self.outbox.join(folder)) {
            Ok(entries) => {
                let mut names: Vec<String> = entries
                    .map(|e| e.expect("dir entry").file_name().into_string().unwrap())
                    .collect();
                names.sort();
                names
            }
            Err(_) => Vec::new(),
        }
    }

    /// Starts envoi with the hermetic environment of `support::envoi::envoi`, output
    /// going to `<home>/logs/<name>.out` and `.err`, so that it can be killed.
    fn spawn(&self, args: &[OsString], name: &str) -> Child {
        let logs = self.home().join("logs");
        fs::create_dir_all(&logs).expect("logs dir");
        let file = |ext: &str| File::create(logs.join(format!("{name}.{ext}"))).expect("log file");
        std::process::Command::new(assert_cmd::cargo::cargo_bin("envoi"))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.home())
            .env("XDG_CONFIG_HOME", self.home().join(".config"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(file("out"))
            .stderr(file("err"))
            .spawn()
            .expect("spawn envoi")
    }

    /// What a spawned process printed: (stdout, stderr).
    fn logs(&self, name: &str) -> (String, String) {
        let read = |ext: &str| {
            fs::read_to_string(self.home().join("logs").join(format!("{name}.{ext}")))
                .unwrap_or_default()
        };
        (read("out"), read("err"))
    }

    /// Arguments of `envoi outbox flush --all --json --config <config>`.
    fn flush_args(&self, config: &Path) -> Vec<OsString> {
        let mut args: Vec<OsString> = ["outbox", "flush", "--all", "--json", "--outbox-dir"]
            .map(OsString::from)
            .to_vec();
        args.push(self.outbox.clone().into());
        args.push("--config".into());
        args.push(config.into());
        args
    }
}

/// `--smtp-url smtp://127.0.0.1:<port>?security=none`.
fn url(port: u16) -> Vec<OsString> {
    vec![
        "--smtp-url".into(),
        format!("smtp://127.0.0.1:{port}?security=none").into(),
    ]
}

/// `--config <path>`: the entry's route is then the profile, which flush can re-point.
fn profile(config: &Path) -> Vec<OsString> {
    vec!["--config".into(), config.into()]
}

/// A loopback port where nothing listens: connecting is refused at once.
fn dead_port() -> u16 {
    // Binding port 1 needs privileges, so no test server can take it meanwhile.
    if TcpStream::connect((Ipv4Addr::LOCALHOST, 1)).is_err() {
        return 1;
    }
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    listener.local_addr().expect("address").port()
}

/// Asserts the exit code and parses the single JSON line on stdout.
fn expect_json(out: &Output, code: i32) -> Value {
    let (stdout, stderr) = outputs(out);
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("no JSON on stdout ({e}): {stdout:?}\nstderr: {stderr}"))
}

fn text<'a>(value: &'a Value, key: &str) -> &'a str {
    value[key]
        .as_str()
        .unwrap_or_else(|| panic!("no string {key:?} in {value}"))
}

/// The ids in a flush summary's `sent`, `deferred` or `failed` list.
fn summary_ids(summary: &Value, key: &str) -> Vec<String> {
    summary[key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key:?} list in {summary}"))
        .iter()
        .map(|e| text(e, "id").to_owned())
        .collect()
}

/// The Message-ID header of a received message, `<…>` as envoi prints it.
fn message_id(data: &[u8]) -> String {
    let end = data
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(data.len());
    let head = String::from_utf8_lossy(&data[..end]).replace("\r\n ", " ");
    head.split("\r\n")
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("Message-ID"))
        .map(|(_, value)| value.trim().to_owned())
        .unwrap_or_else(|| panic!("a message without Message-ID: {head}"))
}

/// How often each Message-ID arrived; checks every message's envelope on the way.
fn tally(messages: &[Received]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for m in messages {
        assert_eq!(m.mail_from, FROM, "MAIL FROM");
        assert_eq!(m.rcpt_to, [TO], "RCPT TO");
        *counts.entry(message_id(&m.data)).or_insert(0) += 1;
    }
    counts
}

/// Waits for `child`, killing it and failing the test after [`PROCESS_LIMIT`].
fn wait_bounded(child: &mut Child, what: &str) -> ExitStatus {
    let deadline = Instant::now() + PROCESS_LIMIT;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} still running after {PROCESS_LIMIT:?}; killed");
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// SIGKILLs `child` (a no-op if it has exited already) and reaps it.
fn kill(child: &mut Child) -> ExitStatus {
    let _ = child.kill();
    child.wait().expect("wait for the killed envoi")
}

/// Whether SIGKILL ended the process (rather than its own exit).
fn killed(status: ExitStatus) -> bool {
    status.signal() == Some(9)
}

/// Queues `n` messages through `connection` (each first attempt must fail temporarily),
/// from `threads` concurrent runs; returns outbox id → Message-ID.
fn queue_many(
    env: &Env,
    connection: &[OsString],
    n: usize,
    threads: usize,
) -> BTreeMap<String, String> {
    let queued: Vec<(String, String)> = thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    (t..n)
                        .step_by(threads)
                        .map(|i| {
                            let out = env
                                .send(connection, &format!("queued #{i}"))
                                .arg("--queue")
                                .output()
                                .expect("run envoi send --queue");
                            let json = expect_json(&out, 0);
                            assert_eq!(text(&json, "status"), "queued", "{json}");
                            (
                                text(&json, "outbox_id").to_owned(),
                                text(&json, "message_id").to_owned(),
                            )
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("queueing thread"))
            .collect()
    });
    let map: BTreeMap<String, String> = queued.into_iter().collect();
    assert_eq!(map.len(), n, "outbox ids are not unique");
    let message_ids: BTreeSet<&String> = map.values().collect();
    assert_eq!(message_ids.len(), n, "Message-IDs are not unique");
    map
}

/// The stored bytes of a queued entry.
fn stored_message(env: &Env, id: &str) -> Vec<u8> {
    fs::read(env.outbox.join("queue").join(id).join("message.eml")).expect("message.eml")
}

/// Whether `received` (DATA as the server un-stuffed it) is exactly `stored`.
fn same_message(received: &[u8], stored: &[u8]) -> bool {
    received == stored || (!stored.ends_with(b"\r\n") && received == [stored, b"\r\n"].concat())
}

// ----- 1 -------------------------------------------------------------------------------

/// `send --queue` to a working server sends at once and leaves nothing behind.
#[test]
fn queue_success() {
    let env = Env::new();
    let server = TestServer::start(ServerOptions::default());
    let out = env
        .send(&url(server.port()), "queued and sent")
        .arg("--queue")
        .output()
        .unwrap();
    let json = expect_json(&out, 0);
    assert_eq!(text(&json, "status"), "sent", "{json}");

    let messages = server.messages();
    assert_eq!(messages.len(), 1, "expected exactly one message");
    let counts = tally(&messages);
    assert_eq!(
        counts.get(text(&json, "message_id")),
        Some(&1),
        "{counts:?}"
    );

    assert!(env.list(false).is_empty(), "the queue is not empty");
    assert!(env.list(true).is_empty(), "failed/ is not empty");
    assert!(env.on_disk("queue").is_empty());
    assert!(
        env.on_disk("tmp").is_empty(),
        "leftovers: {:?}",
        env.on_disk("tmp")
    );
}

// ----- 2 -------------------------------------------------------------------------------

/// A 451 at the first attempt queues the message (exit 0, `queued`); `flush` leaves it
/// until it is due, `flush --all` sends exactly the stored bytes once, and a later flush
/// sends nothing more.
#[test]
fn queue_tempfail_then_flush() {
    let env = Env::new();
    let server = TestServer::start(ServerOptions {
        tempfail_transactions: 1,
        ..ServerOptions::default()
    });
    let out = env
        .send(&url(server.port()), "deferred once")
        .arg("--queue")
        .output()
        .unwrap();
    let json = expect_json(&out, 0);
    assert_eq!(text(&json, "status"), "queued", "{json}");
    let id = text(&json, "outbox_id").to_owned();
    let mid = text(&json, "message_id").to_owned();
    assert!(text(&json, "reason").contains("451"), "{json}");
    assert!(server.messages().is_empty(), "sent although refused");

    let list = env.list(false);
    assert_eq!(list.len(), 1, "{list:?}");
    let entry = &list[0];
    assert_eq!(text(entry, "id"), id);
    assert_eq!(text(entry, "message_id"), mid);
    assert_eq!(entry["attempts"], 1, "{entry}");
    assert!(text(entry, "last_error").contains("451"), "{entry}");
    assert_eq!(entry["pending"], serde_json::json!([TO]), "{entry}");
    let stored = stored_message(&env, &id);

    // Not due yet (the next attempt is a minute away): skipped, nothing sent.
    let summary = env.flush(&[]);
    assert_eq!(summary["skipped"], 1, "{summary}");
    assert!(summary_ids(&summary, "sent").is_empty(), "{summary}");
    assert!(
        server.messages().is_empty(),
        "a flush sent an entry not due"
    );

    let summary = env.flush(&[&"--all".into()]);
    assert_eq!(
        summary_ids(&summary, "sent"),
        std::slice::from_ref(&id),
        "{summary}"
    );
    let messages = server.messages();
    assert_eq!(messages.len(), 1, "expected exactly one message");
    assert_eq!(tally(&messages).get(&mid), Some(&1));
    assert!(
        same_message(&messages[0].data, &stored),
        "the flush did not send the stored bytes"
    );
    assert!(env.list(false).is_empty(), "the queue is not empty");

    let summary = env.flush(&[&"--all".into()]);
    assert!(summary_ids(&summary, "sent").is_empty(), "{summary}");
    assert_eq!(summary["skipped"], 0, "{summary}");
    assert_eq!(server.messages().len(), 1, "sent again by a later flush");
}

// ----- 3 -------------------------------------------------------------------------------

/// A 550 for the only recipient: exit 67 naming `failed/<id>`, the entry kept in failed/
/// with the server's reply, nothing queued, nothing delivered.
#[test]
fn queue_permanent_refusal_goes_to_failed() {
    let env = Env::new();
    let server = TestServer::start(ServerOptions {
        refuse_rcpt: vec![(TO.into(), 550)],
        ..ServerOptions::default()
    });
    let out = env
        .send(&url(server.port()), "refused for good")
        .arg("--queue")
        .output()
        .unwrap();
    let json = expect_json(&out, 67);
    assert_eq!(text(&json, "status"), "error", "{json}");
    assert_eq!(text(&json, "kind"), "recipient_refused", "{json}");
    let message = text(&json, "message");
    let id: String = message
        .split_once("failed/")
        .unwrap_or_else(|| panic!("no failed/ id in {message:?}"))
        .1
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    assert!(!id.is_empty(), "{message}");

    let failed = env.list(true);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(text(&failed[0], "id"), id);
    let last_error = text(&failed[0], "last_error");
    assert!(
        last_error.contains("550") && last_error.contains("refused by test server"),
        "{last_error}"
    );
    assert_eq!(failed[0]["refused"][0]["address"], TO, "{}", failed[0]);
    assert!(
        env.outbox
            .join("failed")
            .join(&id)
            .join("message.eml")
            .is_file()
    );

    assert!(
        env.list(false).is_empty(),
        "the refused entry is still queued"
    );
    assert!(
        server.messages().is_empty(),
        "a refused message was delivered"
    );
    // A flush does not touch failed/.
    env.flush(&[&"--all".into()]);
    assert!(server.messages().is_empty(), "failed/ was flushed");
}

// ----- 4 -------------------------------------------------------------------------------

/// `outbox drop ID` removes a queued entry for good; a second drop exits 66; an id that
/// could climb out of the outbox is a usage error.
#[test]
fn outbox_drop() {
    let env = Env::new();
    let server = TestServer::start(ServerOptions {
        tempfail_transactions: 1,
        ..ServerOptions::default()
    });
    let out = env
        .send(&url(server.port()), "to be dropped")
        .arg("--queue")
        .output()
        .unwrap();
    let json = expect_json(&out, 0);
    assert_eq!(text(&json, "status"), "queued", "{json}");
    let id = text(&json, "outbox_id").to_owned();
    assert_eq!(env.list(false).len(), 1);

    let out = env.outbox_cmd("drop").arg(&id).output().unwrap();
    let dropped = expect_json(&out, 0);
    assert_eq!(text(&dropped, "status"), "dropped", "{dropped}");
    assert_eq!(text(&dropped, "id"), id);
    assert!(env.list(false).is_empty(), "still listed after drop");
    assert!(env.list(true).is_empty(), "a dropped entry went to failed/");

    let out = env.outbox_cmd("drop").arg(&id).output().unwrap();
    let again = expect_json(&out, 66);
    assert_eq!(text(&again, "kind"), "no_input", "{again}");

    let out = env.outbox_cmd("drop").arg("../queue").output().unwrap();
    expect_json(&out, 64);

    // Nothing is left to send, even though the server now accepts everything.
    let summary = env.flush(&[&"--all".into()]);
    assert!(summary_ids(&summary, "sent").is_empty(), "{summary}");
    assert!(server.messages().is_empty(), "a dropped entry was sent");
}

// ----- 5 -------------------------------------------------------------------------------

/// A second send with the same key is a `duplicate` of the first (one delivery); a send
/// that failed is not recorded, so the same key then sends.
#[test]
fn idempotency() {
    let env = Env::new();
    let server = TestServer::start(ServerOptions::default());
    let live = url(server.port());

    let first = expect_json(
        &env.send(&live, "once")
            .args(["--idempotency-key", "job-1"])
            .output()
            .unwrap(),
        0,
    );
    assert_eq!(text(&first, "status"), "sent", "{first}");
    let second = expect_json(
        &env.send(&live, "once")
            .args(["--idempotency-key", "job-1"])
            .output()
            .unwrap(),
        0,
    );
    assert_eq!(text(&second, "status"), "duplicate", "{second}");
    assert_eq!(text(&second, "message_id"), text(&first, "message_id"));
    assert_eq!(text(&second, "first_status"), "sent", "{second}");
    let counts = tally(&server.messages());
    assert_eq!(counts.len(), 1, "{counts:?}");
    assert_eq!(
        counts.get(text(&first, "message_id")),
        Some(&1),
        "{counts:?}"
    );

    // The server is down: exit 75, and the key stays free.
    let out = env
        .send(&url(dead_port()), "after a failure")
        .args(["--idempotency-key", "job-2", "--retries", "0"])
        .output()
        .unwrap();
    let failed = expect_json(&out, 75);
    assert_eq!(text(&failed, "status"), "error", "{failed}");
    let retry = expect_json(
        &env.send(&live, "after a failure")
            .args(["--idempotency-key", "job-2"])
            .output()
            .unwrap(),
        0,
    );
    assert_eq!(
        text(&retry, "status"),
        "sent",
        "the failed send was recorded: {retry}"
    );
    let third = expect_json(
        &env.send(&live, "after a failure")
            .args(["--idempotency-key", "job-2"])
            .output()
            .unwrap(),
        0,
    );
    assert_eq!(text(&third, "status"), "duplicate", "{third}");
    assert_eq!(text(&third, "message_id"), text(&retry, "message_id"));

    let counts = tally(&server.messages());
    assert_eq!(counts.len(), 2, "{counts:?}");
    assert!(counts.values().all(|&n| n == 1), "{counts:?}");
    assert_eq!(
        counts.get(text(&retry, "message_id")),
        Some(&1),
        "{counts:?}"
    );
}

/// Overlapping runs with one key: the ledger lock lets exactly one of them send.
#[test]
fn idempotency_overlapping_runs_send_once() {
    let env = Env::new();
    let server = TestServer::start(ServerOptions {
        delay_replies: Some(Duration::from_millis(5)),
        ..ServerOptions::default()
    });
    let live = url(server.port());
    let mut args = env.send_args(&live, "at most once");
    args.extend(["--idempotency-key", "nightly-7"].map(OsString::from));
    let mut children: Vec<Child> = (0..6)
        .map(|i| env.spawn(&args, &format!("same-key-{i}")))
        .collect();
    let mut statuses = BTreeMap::new();
    let mut first_id = BTreeSet::new();
    for (i, child) in children.iter_mut().enumerate() {
        let name = format!("same-key-{i}");
        let status = wait_bounded(child, &name);
        let (stdout, stderr) = env.logs(&name);
        assert_eq!(status.code(), Some(0), "{name}: {stdout} {stderr}");
        let json: Value = serde_json::from_str(stdout.trim()).expect("JSON");
        *statuses
            .entry(text(&json, "status").to_owned())
            .or_insert(0) += 1;
        first_id.insert(text(&json, "message_id").to_owned());
    }
    assert_eq!(statuses.get("sent"), Some(&1), "{statuses:?}");
    assert_eq!(statuses.get("duplicate"), Some(&5), "{statuses:?}");
    assert_eq!(
        first_id.len(),
        1,
        "duplicates name another Message-ID: {first_id:?}"
    );
    let counts = tally(&server.messages());
    assert_eq!(counts.len(), 1, "{counts:?}");
    assert_eq!(counts.get(first_id.first().unwrap()), Some(&1));
}

// ----- 6 -------------------------------------------------------------------------------

/// 200 entries, four `flush --all` at once against a slowish server: each entry is
/// taken by exactly one flush and every Message-ID arrives exactly once.
#[test]
fn concurrent_flushes_never_duplicate() {
    const N: usize = 200;
    let env = Env::new();
    let dead = env.config("dead", dead_port());
    let queued = queue_many(&env, &profile(&dead), N, 4);
    let listed = env.list(false);
    assert_eq!(listed.len(), N);
    assert!(listed.iter().all(|e| e["attempts"] == 1), "{listed:?}");

    let server = TestServer::start(ServerOptions {
        delay_replies: Some(Duration::from_millis(2)),
        ..ServerOptions::default()
    });
    let live = env.config("live", server.port());
    let args = env.flush_args(&live);
    let mut flushes: Vec<Child> = (0..4)
        .map(|i| env.spawn(&args, &format!("flush-{i}")))
        .collect();
    let mut sent_by = BTreeMap::<String, Vec<usize>>::new();
    let mut skipped = Vec::new();
    for (i, child) in flushes.iter_mut().enumerate() {
        let name = format!("flush-{i}");
        let status = wait_bounded(child, &name);
        let (stdout, stderr) = env.logs(&name);
        assert_eq!(status.code(), Some(0), "{name}: {stdout}\n{stderr}");
        let summary: Value = serde_json::from_str(stdout.trim()).expect("flush JSON");
        assert!(summary_ids(&summary, "deferred").is_empty(), "{summary}");
        assert!(summary_ids(&summary, "failed").is_empty(), "{summary}");
        for id in summary_ids(&summary, "sent") {
            sent_by.entry(id).or_default().push(i);
        }
        skipped.push(summary["skipped"].as_u64().unwrap_or_default());
    }
    eprintln!(
        "concurrent flushes: entries skipped (held by another flush) per process: {skipped:?}"
    );

    let twice: Vec<_> = sent_by.iter().filter(|(_, by)| by.len() > 1).collect();
    assert!(twice.is_empty(), "entries sent by two flushes: {twice:?}");
    assert_eq!(
        sent_by.keys().collect::<Vec<_>>(),
        queued.keys().collect::<Vec<_>>(),
        "the flushes did not send exactly the queued entries"
    );

    let messages = server.messages();
    let counts = tally(&messages);
    let dups: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dups.is_empty(), "delivered more than once: {dups:?}");
    assert_eq!(messages.len(), N);
    assert_eq!(
        counts.keys().collect::<BTreeSet<_>>(),
        queued.values().collect::<BTreeSet<_>>(),
        "delivered Message-IDs differ from the queued ones"
    );
    assert!(env.list(false).is_empty(), "the queue is not empty");
    assert!(env.list(true).is_empty(), "failed/ is not empty");
}

// ----- 7 -------------------------------------------------------------------------------

/// Flushes SIGKILLed at random points, then one left to finish: every Message-ID
/// arrives, duplicates only from the at-least-once window (at most one per kill), and
/// the queue and failed/ end empty.
#[test]
fn sigkill_during_flush_loses_nothing() {
    const N: usize = 30;
    const ROUNDS: usize = 8;
    let seed = fastrand::u64(..);
    eprintln!("sigkill_during_flush_loses_nothing: seed {seed}");
    let mut rng = fastrand::Rng::with_seed(seed);

    let env = Env::new();
    let dead = env.config("dead", dead_port());
    let queued = queue_many(&env, &profile(&dead), N, 2);
    let server = TestServer::start(ServerOptions {
        delay_replies: Some(Duration::from_millis(20)),
        ..ServerOptions::default()
    });
    let live = env.config("live", server.port());
    let args = env.flush_args(&live);

    let mut kills = 0;
    for round in 0..ROUNDS {
        let name = format!("killed-flush-{round}");
        let mut child = env.spawn(&args, &name);
        thread::sleep(Duration::from_millis(rng.u64(10..400)));
        let status = kill(&mut child);
        if killed(status) {
            kills += 1;
        } else {
            let (stdout, stderr) = env.logs(&name);
            assert_eq!(status.code(), Some(0), "{name}: {stdout}\n{stderr}");
        }
        // Whatever the kill interrupted, the outbox still reads.
        let left = env.list(false);
        assert!(env.list(true).is_empty(), "an entry went to failed/");
        if left.is_empty() {
            break;
        }
    }

    let summary = env.flush(&[&"--all".into(), &"--config".into(), &live.clone().into()]);
    assert!(summary_ids(&summary, "deferred").is_empty(), "{summary}");
    assert!(summary_ids(&summary, "failed").is_empty(), "{summary}");
    assert!(
        server.wait_idle(Duration::from_secs(10)),
        "the server is still busy"
    );

    let counts = tally(&server.messages());
    let missing: Vec<_> = queued
        .values()
        .filter(|m| !counts.contains_key(*m))
        .collect();
    assert!(missing.is_empty(), "lost: {missing:?}");
    let unknown: Vec<_> = counts
        .keys()
        .filter(|m| !queued.values().any(|q| q == *m))
        .collect();
    assert!(unknown.is_empty(), "never queued: {unknown:?}");
    let duplicates: usize = counts.values().map(|n| n - 1).sum();
    eprintln!(
        "sigkill_during_flush_loses_nothing: {kills} kills, {duplicates} duplicate deliveries \
         (seed {seed})"
    );
    assert!(
        duplicates <= kills,
        "{duplicates} duplicates from {kills} kills: more than the at-least-once window allows"
    );
    assert!(env.list(false).is_empty(), "the queue is not empty");
    assert!(env.list(true).is_empty(), "failed/ is not empty");
}

// ----- 8 -------------------------------------------------------------------------------

/// Waits until `folder` of the outbox holds a name not in `before`, while `child` runs
/// (at most [`PROCESS_LIMIT`]); returns that name.
fn wait_for_new(env: &Env, folder: &str, before: &[String], child: &mut Child) -> String {
    let deadline = Instant::now() + PROCESS_LIMIT;
    loop {
        if let Some(name) = env
            .on_disk(folder)
            .into_iter()
            .find(|n| !before.contains(n))
        {
            return name;
        }
        if let Some(status) = child.try_wait().expect("try_wait") {
            panic!("envoi exited ({status}) before anything new appeared in {folder}/");
        }
        if Instant::now() >= deadline {
            kill(child);
            panic!("nothing new in {folder}/ after {PROCESS_LIMIT:?}");
        }
        thread::sleep(Duration::from_millis(1));
    }
}

/// `send --queue` of a 20 MiB attachment SIGKILLed while writing its entry, just after
/// the entry reached queue/ (its first attempt hanging on a silent server), and at random
/// points: the outbox always lists, every entry seen in queue/ stays there, and a flush
/// sends exactly the entries of queue/, each complete, ignoring the half-written ones
/// left in tmp/.
#[test]
fn sigkill_during_enqueue_loses_nothing() {
    const ROUNDS: usize = 8;
    let seed = fastrand::u64(..);
    eprintln!("sigkill_during_enqueue_loses_nothing: seed {seed}");
    let mut rng = fastrand::Rng::with_seed(seed);

    let env = Env::new();
    let attachment = env.home().join("big.bin");
    let mut content = vec![0u8; 20 << 20];
    rng.fill(&mut content);
    fs::write(&attachment, &content).expect("write the attachment");
    // The first attempt hangs on the greeting, so every run is still alive when killed.
    let silent = TestServer::start(ServerOptions {
        silent_greeting: true,
        ..ServerOptions::default()
    });
    let hung = env.config("hung", silent.port());
    let mut args = env.send_args(&profile(&hung), "a big one");
    args.extend([
        "--queue".into(),
        "--attach".into(),
        attachment.clone().into(),
    ]);

    let mut must_stay = Vec::new();
    let mut until_queued = Duration::ZERO;
    let mut leftovers_made = 0;
    for round in 0..ROUNDS {
        let name = format!("enqueue-{round}");
        let (queue_before, tmp_before) = (env.on_disk("queue"), env.on_disk("tmp"));
        let started = Instant::now();
        let mut child = env.spawn(&args, &name);
        let writing = match round % 4 {
            // Just after the rename into queue/: the entry must stay, never tried.
            0 => {
                let id = wait_for_new(&env, "queue", &queue_before, &mut child);
                until_queued = until_queued.max(started.elapsed());
                must_stay.push(id);
                None
            }
            // While the entry is being written in tmp/.
            1 | 3 => {
                let id = wait_for_new(&env, "tmp", &tmp_before, &mut child);
                thread::sleep(Duration::from_millis(rng.u64(0..15)));
                Some(id)
            }
            // Anywhere, from reading the input to waiting for the greeting.
            _ => {
                thread::sleep(until_queued.mul_f64(rng.f64() * 1.2));
                None
            }
        };
        let status = kill(&mut child);
        let (stdout, stderr) = env.logs(&name);
        assert!(
            killed(status),
            "{name} ended on its own ({status}): {stdout}\n{stderr}"
        );
        if let Some(id) = writing {
            // The entry is whole in queue/ or left behind in tmp/, never both or neither.
            let (in_tmp, in_queue) = (
                env.on_disk("tmp").contains(&id),
                env.on_disk("queue").contains(&id),
            );
            assert!(
                in_tmp != in_queue,
                "{id}: in tmp/ {in_tmp}, in queue/ {in_queue}"
            );
            leftovers_made += usize::from(in_tmp);
        }
        // Whatever the kill interrupted, both listings still read.
        env.list(false);
        assert!(env.list(true).is_empty(), "an entry went to failed/");
    }

    let listed = env.list(false);
    let expected: BTreeMap<String, String> = listed
        .iter()
        .map(|e| (text(e, "id").to_owned(), text(e, "message_id").to_owned()))
        .collect();
    assert_eq!(
        expected.keys().cloned().collect::<Vec<_>>(),
        env.on_disk("queue"),
        "queue/ holds entries that outbox list does not show"
    );
    for id in &must_stay {
        let entry = listed.iter().find(|e| text(e, "id") == id);
        let entry = entry.unwrap_or_else(|| panic!("{id} left the queue"));
        assert_eq!(entry["attempts"], 0, "{entry}");
    }
    eprintln!(
        "sigkill_during_enqueue_loses_nothing: {ROUNDS} kills, {} entries queued, {} \
         half-written entries left in tmp/ ({leftovers_made} by kills while writing)",
        expected.len(),
        env.on_disk("tmp").len()
    );

    let server = TestServer::start(ServerOptions::default());
    let live = env.config("live", server.port());
    let summary = env.flush(&[&"--all".into(), &"--config".into(), &live.into()]);
    assert!(summary_ids(&summary, "deferred").is_empty(), "{summary}");
    assert!(summary_ids(&summary, "failed").is_empty(), "{summary}");
    let mut sent = summary_ids(&summary, "sent");
    sent.sort();
    assert_eq!(
        sent,
        expected.keys().cloned().collect::<Vec<_>>(),
        "{summary}"
    );

    let messages = server.messages();
    let counts = tally(&messages);
    assert_eq!(messages.len(), expected.len(), "{counts:?}");
    assert_eq!(
        counts.keys().collect::<BTreeSet<_>>(),
        expected.values().collect::<BTreeSet<_>>(),
        "delivered Message-IDs differ from the queued ones"
    );
    for m in &messages {
        let parsed = MessageParser::default().parse(&m.data).expect("a message");
        let part = parsed
            .attachments()
            .find(|a| a.attachment_name() == Some("big.bin"))
            .expect("the attachment arrived");
        assert!(
            part.contents() == content.as_slice(),
            "a partial or damaged attachment was sent ({} of {} bytes)",
            part.contents().len(),
            content.len()
        );
    }
    assert!(env.list(false).is_empty(), "the queue is not empty");
    assert!(env.list(true).is_empty(), "failed/ is not empty");
}

// ----- Beyond the list: the edges of at-least-once -------------------------------------

/// The connection drops after the final dot, before any reply: the outcome is unknown, so
/// the entry stays queued (exit 0, `queued`) and the flush sends the very same message
/// (same Message-ID, same bytes) again, letting receivers recognise the duplicate.
#[test]
fn outcome_unknown_stays_queued_and_resends_the_same_message() {
    let env = Env::new();
    let dropping = TestServer::start(ServerOptions {
        drop_after_final_dot: true,
        ..ServerOptions::default()
    });
    let config = env.config("dropping", dropping.port());
    let out = env
        .send(&profile(&config), "did it arrive?")
        .arg("--queue")
        .output()
        .unwrap();
    let json = expect_json(&out, 0);
    assert_eq!(text(&json, "status"), "queued", "{json}");
    let mid = text(&json, "message_id");
    assert!(text(&json, "reason").contains("may or may not"), "{json}");
    assert!(dropping.messages().is_empty());
    let unacknowledged = dropping.unacknowledged();
    assert_eq!(
        unacknowledged.len(),
        1,
        "the message did not reach the final dot"
    );
    assert_eq!(message_id(&unacknowledged[0].data), mid);

    let listed = env.list(false);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["attempts"], 1, "{}", listed[0]);

    let server = TestServer::start(ServerOptions::default());
    let live = env.config("live", server.port());
    env.flush(&[&"--all".into(), &"--config".into(), &live.into()]);
    let messages = server.messages();
    assert_eq!(tally(&messages).get(mid), Some(&1), "{messages:?}");
    assert_eq!(messages.len(), 1);
    assert_eq!(
        messages[0].data, unacknowledged[0].data,
        "the resend differs"
    );
    assert!(env.list(false).is_empty(), "the queue is not empty");
}

/// Once the server has answered 250 to the final dot, the entry is delivered: a flush
/// killed while it waits for the reply to QUIT must not leave it queued for a resend.
#[test]
fn a_flush_killed_after_the_final_250_does_not_resend() {
    let env = Env::new();
    let dead = env.config("dead", dead_port());
    let queued = queue_many(&env, &profile(&dead), 1, 1);
    let mid = queued.values().next().unwrap().clone();
    // Every reply comes 300 ms late, QUIT's 221 included.
    let server = TestServer::start(ServerOptions {
        delay_replies: Some(Duration::from_millis(300)),
        ..ServerOptions::default()
    });
    let live = env.config("live", server.port());
    let mut child = env.spawn(&env.flush_args(&live), "flush");
    // envoi says QUIT only after reading the 250 to the final dot.
    let deadline = Instant::now() + PROCESS_LIMIT;
    while !server
        .transcript()
        .iter()
        .any(|l| l.eq_ignore_ascii_case("QUIT"))
    {
        if Instant::now() >= deadline || child.try_wait().expect("try_wait").is_some() {
            kill(&mut child);
            panic!("the flush never said QUIT: {:?}", env.logs("flush"));
        }
        thread::sleep(Duration::from_millis(1));
    }
    let status = kill(&mut child);
    assert!(killed(status), "the flush ended before the kill: {status}");
    assert_eq!(tally(&server.messages()).get(&mid), Some(&1));

    let left = env.list(false);
    env.flush(&[&"--all".into(), &"--config".into(), &live.into()]);
    let counts = tally(&server.messages());
    assert!(
        left.is_empty() && counts.get(&mid) == Some(&1),
        "accepted with 250, still queued after the kill ({left:?}), delivered {:?} times",
        counts.get(&mid)
    );
}

/// `--queue --allow-partial`: a recipient answered 450 (try later) is kept for a later
/// flush; only the recipient that got the message leaves the entry.
#[test]
fn queue_allow_partial_keeps_deferred_recipients() {
    const LATER: &str = "later@example.com";
    let env = Env::new();
    let busy = TestServer::start(ServerOptions {
        refuse_rcpt: vec![(LATER.into(), 450)],
        ..ServerOptions::default()
    });
    let first = env.config("busy", busy.port());
    let out = env
        .send(&profile(&first), "one now, one later")
        .args(["--queue", "--allow-partial", "--to", LATER])
        .output()
        .unwrap();
    let json = expect_json(&out, 0);
    let mid = text(&json, "message_id").to_owned();
    let now = busy.messages();
    assert_eq!(now.len(), 1, "{json}");
    assert_eq!(now[0].rcpt_to, [TO]);

    let server = TestServer::start(ServerOptions::default());
    let live = env.config("live", server.port());
    let listed = env.list(false);
    env.flush(&[&"--all".into(), &"--config".into(), &live.into()]);
    let later: Vec<_> = server
        .messages()
        .into_iter()
        .map(|m| (message_id(&m.data), m.rcpt_to))
        .collect();
    assert_eq!(
        later,
        [(mid, vec![LATER.to_owned()])],
        "{LATER} got a 450 and was never retried; queue after the first attempt: {listed:?}; \
         send printed {json}"
    );
}

/// `--allow-partial` with a key: a send that reached some recipients (exit 0) records the
/// key, so a repeat does not send the message to them again.
#[test]
fn idempotency_key_is_recorded_for_a_partial_send() {
    const BAD: &str = "nobody@example.com";
    let env = Env::new();
    let server = TestServer::start(ServerOptions {
        refuse_rcpt: vec![(BAD.into(), 550)],
        ..ServerOptions::default()
    });
    let run = || {
        env.send(&url(server.port()), "partial")
            .args([
                "--allow-partial",
                "--to",
                BAD,
                "--idempotency-key",
                "report-9",
            ])
            .output()
            .unwrap()
    };
    let first = expect_json(&run(), 0);
    assert_eq!(text(&first, "status"), "partial", "{first}");
    let second = expect_json(&run(), 0);
    let delivered: Vec<_> = server.messages().into_iter().map(|m| m.rcpt_to).collect();
    assert_eq!(
        (text(&second, "status"), delivered.len()),
        ("duplicate", 1),
        "the repeat was sent again to {delivered:?}: {second}"
    );
}

/// `send --queue --idempotency-key` killed after its entry is durably queued (the first
/// attempt hanging): the key must already count, or a re-run queues a second message and
/// both are delivered.
#[test]
fn idempotency_key_survives_a_kill_after_enqueue() {
    let env = Env::new();
    let silent = TestServer::start(ServerOptions {
        silent_greeting: true,
        ..ServerOptions::default()
    });
    let hung = env.config("hung", silent.port());
    let mut args = env.send_args(&profile(&hung), "once per key");
    args.extend(["--queue", "--idempotency-key", "deploy-5"].map(OsString::from));
    let mut child = env.spawn(&args, "killed-send");
    let queued = wait_for_new(&env, "queue", &[], &mut child);
    assert!(killed(kill(&mut child)), "the send ended on its own");

    let server = TestServer::start(ServerOptions::default());
    let live = env.config("live", server.port());
    let again = expect_json(
        &env.send(&profile(&live), "once per key")
            .args(["--queue", "--idempotency-key", "deploy-5"])
            .output()
            .unwrap(),
        0,
    );
    env.flush(&[&"--all".into(), &"--config".into(), &live.into()]);
    let counts = tally(&server.messages());
    assert_eq!(
        counts.values().sum::<usize>(),
        1,
        "one key, {} messages delivered: {counts:?}; the re-run printed {again}; \
         entry {queued} was queued by the killed run",
        counts.values().sum::<usize>()
    );
}

/// A ledger that cannot be written after the server's 250 is a warning, never a reason
/// to send again.
#[test]
fn an_unwritable_ledger_does_not_resend() {
    let env = Env::new();
    let server = TestServer::start(ServerOptions::default());
    // A directory where the ledger's temp file must go makes every ledger write fail.
    fs::create_dir_all(env.outbox.join("idempotency.json.tmp")).unwrap();
    let out = env
        .send(&url(server.port()), "ledger trouble")
        .args(["--idempotency-key", "k1", "--retry-max-secs", "1"])
        .output()
        .unwrap();
    let json = expect_json(&out, 0);
    assert_eq!(text(&json, "status"), "sent", "{json}");
    assert!(
        outputs(&out).1.contains("not recorded"),
        "{:?}",
        outputs(&out)
    );
    assert_eq!(
        server.messages().len(),
        1,
        "sent again after a ledger failure"
    );
}

/// A key only counts once the whole send succeeded: after a 75 that reached some
/// recipients, the caller's retry is sent (the report names who already has it).
#[test]
fn a_key_is_not_taken_by_a_failed_send() {
    let env = Env::new();
    let server = TestServer::start(ServerOptions {
        max_rcpts_per_transaction: Some(1),
        refuse_rcpt: vec![("later@example.com".into(), 450)],
        ..ServerOptions::default()
    });
    let run = || {
        env.send(&url(server.port()), "split")
            .args([
                "--to",
                "later@example.com",
                "--idempotency-key",
                "k2",
                "--retries",
                "0",
            ])
            .output()
            .unwrap()
    };
    let first = expect_json(&run(), 75);
    assert!(
        text(&first, "message").contains(&format!("already delivered to {TO}")),
        "{first}"
    );
    let second = expect_json(&run(), 75);
    assert_ne!(text(&second, "status"), "duplicate", "{second}");
}

/// Runs with different keys do not wait for each other.
#[test]
fn different_keys_do_not_block_each_other() {
    let env = Env::new();
    let silent = TestServer::start(ServerOptions {
        silent_greeting: true,
        ..ServerOptions::default()
    });
    let mut args = env.send_args(&url(silent.port()), "hangs");
    args.extend(
        [
            "--idempotency-key",
            "job-A",
            "--timeout",
            "20",
            "--retries",
            "0",
        ]
        .map(OsString::from),
    );
    let mut hung = env.spawn(&args, "hung");
    // Let the hung run take its key before the other starts.
    thread::sleep(Duration::from_millis(300));
    let server = TestServer::start(ServerOptions::default());
    let out = env
        .send(&url(server.port()), "free")
        .args(["--idempotency-key", "job-B", "--timeout", "10"])
        .output()
        .unwrap();
    kill(&mut hung);
    let json = expect_json(&out, 0);
    assert_eq!(text(&json, "status"), "sent", "{json}");
    assert_eq!(server.messages().len(), 1);
}

/// One entry whose state cannot be used does not hold up the queue behind it.
#[test]
fn a_damaged_entry_does_not_block_the_flush() {
    let env = Env::new();
    let dead = env.config("dead", dead_port());
    let queued = queue_many(&env, &profile(&dead), 2, 1);
    let oldest = queued.keys().next().unwrap().clone();
    let state_path = env.outbox.join("queue").join(&oldest).join("state.json");
    let state = fs::read_to_string(&state_path).unwrap();
    fs::write(&state_path, state.replace(TO, "not an address")).unwrap();

    let server = TestServer::start(ServerOptions::default());
    let live = env.config("live", server.port());
    let summary = env.flush(&[&"--all".into(), &"--config".into(), &live.into()]);
    let other = queued.keys().nth(1).unwrap();
    assert_eq!(
        summary_ids(&summary, "sent"),
        std::slice::from_ref(other),
        "{summary}"
    );
    assert_eq!(server.messages().len(), 1);
}
