//! The outbox end to end: `send --queue`, `envoi outbox list|flush|drop` and
//! `--idempotency-key`, against the in-process SMTP server (mailin). Every claim is read
//! off what the server received (messages counted by their Message-ID header), including
//! overlapping flushes and processes killed with SIGKILL mid-flush and mid-enqueue.

mod crash;
mod idempotency;
mod queue;
mod trust;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs::{self, File};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::thread;
use std::time::{Duration, Instant};

use assert_cmd::Command;
use serde_json::Value;
use tempfile::TempDir;

use crate::support::envoi::{Config, ExpectExit, Route, Run, envoi, send, spawn_envoi};
use crate::support::smtp_server::Received;

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
        Config::new(port, "none").write(&dir)
    }

    /// What every `envoi send` here adds to its route: this outbox, the sender, one
    /// recipient, `subject`, a body and `--json`.
    fn message_args(&self, subject: &str) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec!["--outbox-dir".into(), self.outbox.clone().into()];
        for a in ["--from", FROM, "--to", TO, "--subject", subject] {
            args.push(a.into());
        }
        for a in ["--body", "Sent through the envoi outbox.", "--json"] {
            args.push(a.into());
        }
        args
    }

    /// The arguments of [`Env::send`], for [`Env::spawn`].
    fn send_args(&self, route: Route, subject: &str) -> Vec<OsString> {
        [route.send_args(), self.message_args(subject)].concat()
    }

    /// `envoi send … --json` along `route` (add `--queue`, `--retries 0`… as needed). A
    /// [`Route::Config`] entry is routed by the profile, which a flush can re-point; a
    /// [`Route::Url`] entry keeps its URL.
    fn send(&self, route: Route, subject: &str) -> Command {
        let mut cmd = send(self.home(), route);
        cmd.args(self.message_args(subject));
        cmd
    }

    /// `envoi outbox <sub> --outbox-dir <outbox> --json`.
    fn outbox_cmd(&self, sub: &str) -> Command {
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
        let value = cmd.expect_exit(0).json();
        value
            .as_array()
            .unwrap_or_else(|| panic!("outbox list is not an array: {value}"))
            .clone()
    }

    /// `envoi outbox flush --json` with `extra` flags: must exit 0; returns its summary.
    fn flush(&self, extra: &[&OsString]) -> Value {
        self.outbox_cmd("flush").args(extra).expect_exit(0).json()
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

    /// Starts `envoi <args>` so that it can be killed (see [`spawn_envoi`]), its output
    /// going to `<home>/logs/<name>.out` and `.err`.
    fn spawn(&self, args: &[OsString], name: &str) -> Child {
        let logs = self.home().join("logs");
        fs::create_dir_all(&logs).expect("logs dir");
        let file = |ext: &str| File::create(logs.join(format!("{name}.{ext}"))).expect("log file");
        spawn_envoi(self.home(), args, file("out"), file("err"))
    }

    /// What a spawned process printed: (stdout, stderr).
    fn logs(&self, name: &str) -> (String, String) {
        let read = |ext: &str| {
            fs::read_to_string(self.home().join("logs").join(format!("{name}.{ext}")))
                .unwrap_or_default()
        };
        (read("out"), read("err"))
    }

    /// Spawned process `name`, ended with `status`, and what it printed.
    fn finished(&self, name: &str, status: ExitStatus) -> Run {
        let (stdout, stderr) = self.logs(name);
        Run::new(format!("spawned envoi {name:?}"), status, stdout, stderr)
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

/// A loopback port where nothing listens: connecting is refused at once.
fn dead_port() -> u16 {
    // Test servers bind port 0 (any free port), so none of them can take port 1 meanwhile.
    if TcpStream::connect((Ipv4Addr::LOCALHOST, 1)).is_err() {
        return 1;
    }
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    listener.local_addr().expect("address").port()
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

/// Queues `n` messages along `route` (each first attempt must fail temporarily),
/// from `threads` concurrent runs; returns outbox id → Message-ID.
fn queue_many(env: &Env, route: Route, n: usize, threads: usize) -> BTreeMap<String, String> {
    let queued: Vec<(String, String)> = thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    (t..n)
                        .step_by(threads)
                        .map(|i| {
                            let json = env
                                .send(route, &format!("queued #{i}"))
                                .arg("--queue")
                                .expect_exit(0)
                                .json();
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
