//! `--idempotency-key`: one delivery per key, across repeats, overlaps, kills and failures.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs;
use std::process::Child;
use std::thread;
use std::time::{Duration, Instant};

use super::{
    Env, PROCESS_LIMIT, TO, dead_port, kill, killed, tally, text, wait_bounded, wait_for_new,
};
use crate::support::envoi::{ExpectExit, Route};
use crate::support::smtp_server::{ServerOptions, TestServer};

/// A second send with the same key is a `duplicate` of the first (one delivery); a send
/// that failed is not recorded, so the same key then sends.
#[test]
fn a_repeated_key_is_a_duplicate_and_a_failed_send_frees_it() {
    let env = Env::new();
    let server = TestServer::start(ServerOptions::default());
    let live = Route::Url(server.port());

    let first = env
        .send(live, "once")
        .args(["--idempotency-key", "job-1"])
        .expect_exit(0)
        .json();
    assert_eq!(text(&first, "status"), "sent", "{first}");
    let second = env
        .send(live, "once")
        .args(["--idempotency-key", "job-1"])
        .expect_exit(0)
        .json();
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
    let failed = env
        .send(Route::Url(dead_port()), "after a failure")
        .args(["--idempotency-key", "job-2", "--retries", "0"])
        .expect_exit(75)
        .json();
    assert_eq!(text(&failed, "status"), "error", "{failed}");
    let retry = env
        .send(live, "after a failure")
        .args(["--idempotency-key", "job-2"])
        .expect_exit(0)
        .json();
    assert_eq!(
        text(&retry, "status"),
        "sent",
        "the failed send was recorded: {retry}"
    );
    let third = env
        .send(live, "after a failure")
        .args(["--idempotency-key", "job-2"])
        .expect_exit(0)
        .json();
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
    let live = Route::Url(server.port());
    let mut args = env.send_args(live, "at most once");
    args.extend(["--idempotency-key", "nightly-7"].map(OsString::from));
    let mut children: Vec<Child> = (0..6)
        .map(|i| env.spawn(&args, &format!("same-key-{i}")))
        .collect();
    let mut statuses = BTreeMap::new();
    let mut first_id = BTreeSet::new();
    for (i, child) in children.iter_mut().enumerate() {
        let name = format!("same-key-{i}");
        let status = wait_bounded(child, &name);
        let json = env.finished(&name, status).expect(0).json();
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

/// `--allow-partial` with a key: a send that reached some recipients (exit 0) records the
/// key, so a repeat does not send the message to them again.
/// Regression: only complete sends recorded their key, so the repeat went out again.
#[test]
fn idempotency_key_is_recorded_for_a_partial_send() {
    const BAD: &str = "nobody@example.com";
    let env = Env::new();
    let server = TestServer::start(ServerOptions {
        refuse_rcpt: vec![(BAD.into(), 550)],
        ..ServerOptions::default()
    });
    let run = || {
        env.send(Route::Url(server.port()), "partial")
            .args([
                "--allow-partial",
                "--to",
                BAD,
                "--idempotency-key",
                "report-9",
            ])
            .expect_exit(0)
            .json()
    };
    let first = run();
    assert_eq!(text(&first, "status"), "partial", "{first}");
    let second = run();
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
/// Regression: a queued entry did not carry its key, and the re-run's message went out too.
#[test]
fn idempotency_key_survives_a_kill_after_enqueue() {
    let env = Env::new();
    let silent = TestServer::start(ServerOptions {
        silent_greeting: true,
        ..ServerOptions::default()
    });
    let hung = env.config("hung", silent.port());
    let mut args = env.send_args(Route::Config(&hung), "once per key");
    args.extend(["--queue", "--idempotency-key", "deploy-5"].map(OsString::from));
    let mut child = env.spawn(&args, "killed-send");
    let queued = wait_for_new(&env, "queue", &[], &mut child);
    assert!(killed(kill(&mut child)), "the send ended on its own");

    let server = TestServer::start(ServerOptions::default());
    let live = env.config("live", server.port());
    let again = env
        .send(Route::Config(&live), "once per key")
        .args(["--queue", "--idempotency-key", "deploy-5"])
        .expect_exit(0)
        .json();
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
/// Regression: the ledger failure failed the attempt, which was retried (4 copies seen).
#[test]
fn an_unwritable_ledger_does_not_resend() {
    let env = Env::new();
    let server = TestServer::start(ServerOptions::default());
    // A directory where the ledger's temp file must go makes every ledger write fail.
    fs::create_dir_all(env.outbox.join("idempotency.json.tmp")).unwrap();
    let run = env
        .send(Route::Url(server.port()), "ledger trouble")
        .args(["--idempotency-key", "k1", "--retry-max-secs", "1"])
        .expect_exit(0);
    let json = run.json();
    assert_eq!(text(&json, "status"), "sent", "{json}");
    assert!(run.stderr.contains("not recorded"), "{run}");
    assert_eq!(
        server.messages().len(),
        1,
        "sent again after a ledger failure"
    );
}

/// A key only counts once the whole send succeeded: after a 75 that reached some
/// recipients, the caller's retry is sent (the report names who already has it).
/// Regression: the key was taken at the first accepted transaction, so the retry of a send
/// that failed was answered `duplicate` and never sent.
#[test]
fn a_key_is_not_taken_by_a_failed_send() {
    let env = Env::new();
    let server = TestServer::start(ServerOptions {
        max_rcpts_per_transaction: Some(1),
        refuse_rcpt: vec![("later@example.com".into(), 450)],
        ..ServerOptions::default()
    });
    let run = || {
        env.send(Route::Url(server.port()), "split")
            .args([
                "--to",
                "later@example.com",
                "--idempotency-key",
                "k2",
                "--retries",
                "0",
            ])
            .expect_exit(75)
            .json()
    };
    let first = run();
    assert!(
        text(&first, "message").contains(&format!("already delivered to {TO}")),
        "{first}"
    );
    let second = run();
    assert_ne!(text(&second, "status"), "duplicate", "{second}");
}

/// Runs with different keys do not wait for each other.
/// Regression: one lock over the whole ledger made every run wait behind a hung send.
#[test]
fn different_keys_do_not_block_each_other() {
    let env = Env::new();
    let silent = TestServer::start(ServerOptions {
        silent_greeting: true,
        ..ServerOptions::default()
    });
    let mut args = env.send_args(Route::Url(silent.port()), "hangs");
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
    // The hung run holds its key by the time it has connected.
    let deadline = Instant::now() + PROCESS_LIMIT;
    while silent.connections() == 0 {
        assert!(
            Instant::now() < deadline && hung.try_wait().expect("try_wait").is_none(),
            "the hung run never connected: {:?}",
            env.logs("hung")
        );
        thread::sleep(Duration::from_millis(5));
    }
    let server = TestServer::start(ServerOptions::default());
    // Should this fail, the hung run still ends by itself after its --timeout.
    let json = env
        .send(Route::Url(server.port()), "free")
        .args(["--idempotency-key", "job-B", "--timeout", "10"])
        .expect_exit(0)
        .json();
    kill(&mut hung);
    assert_eq!(text(&json, "status"), "sent", "{json}");
    assert_eq!(server.messages().len(), 1);
}

/// Whoever can change the ledger decides what envoi believes was sent: a ledger that is a
/// symbolic link, or a ledger, keys folder or outbox folder another user owns, is refused
/// (78) before anything is sent.
/// Regression: the ledger was read through a link and none of them was owner-checked.
#[test]
fn an_idempotency_ledger_or_keys_folder_of_another_user_or_a_linked_ledger_is_refused() {
    use std::os::unix::fs::{PermissionsExt, chown};
    const NOBODY: u32 = 65534;
    let server = TestServer::start(ServerOptions::default());
    let refused = |env: &Env, case: &str, says: &str| {
        let run = env
            .send(Route::Url(server.port()), case)
            .args(["--idempotency-key", "job-1"])
            .expect_exit(78);
        assert!(run.stderr.contains(says), "{case}: {run}");
    };

    let env = Env::new();
    fs::create_dir_all(&env.outbox).unwrap();
    let elsewhere = env.home().join("ledger.json");
    fs::write(&elsewhere, "{}").unwrap();
    std::os::unix::fs::symlink(&elsewhere, env.outbox.join("idempotency.json")).unwrap();
    refused(&env, "a linked ledger", "symbolic link");
    assert_eq!(fs::read_to_string(&elsewhere).unwrap(), "{}");

    if crate::trust::running_as_root() {
        let env = Env::new();
        fs::create_dir_all(&env.outbox).unwrap();
        let ledger = env.outbox.join("idempotency.json");
        fs::write(&ledger, "{}").unwrap();
        fs::set_permissions(&ledger, fs::Permissions::from_mode(0o600)).unwrap();
        chown(&ledger, Some(NOBODY), Some(NOBODY)).unwrap();
        refused(
            &env,
            "a stranger's ledger",
            "belongs to another user (uid 65534",
        );

        let env = Env::new();
        let keys = env.outbox.join("idempotency-keys");
        fs::create_dir_all(&keys).unwrap();
        chown(&keys, Some(NOBODY), Some(NOBODY)).unwrap();
        refused(
            &env,
            "a stranger's keys folder",
            "belongs to another user (uid 65534",
        );

        let env = Env::new();
        fs::create_dir_all(&env.outbox).unwrap();
        fs::set_permissions(&env.outbox, fs::Permissions::from_mode(0o700)).unwrap();
        chown(&env.outbox, Some(NOBODY), Some(NOBODY)).unwrap();
        refused(
            &env,
            "a stranger's outbox",
            "belongs to another user (uid 65534",
        );
    } else {
        eprintln!("skipped the owner cases: giving files to another user needs root");
    }
    assert!(
        server.messages().is_empty(),
        "sent despite an untrusted ledger"
    );
}
