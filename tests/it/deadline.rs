//! Every command's deadline holds at the socket: a server that drips its EHLO reply one
//! byte every 500 ms (about 40 s for the whole reply, each byte well inside any socket
//! timeout) cannot hold `check`, `check --probe`, `batch` or `outbox flush` past their
//! limits. Elapsed time is checked only as an upper bound, with a generous margin.

use std::time::{Duration, Instant};

use crate::support::envoi::{ExpectExit, Run, Setup, envoi};
use crate::support::smtp_server::ServerOptions;

/// The pause before each byte of the EHLO reply.
const DRIP: Duration = Duration::from_millis(500);

/// What a command may take beyond its limit: process start, connect, the last read's
/// slack, a loaded 2-core machine.
const MARGIN: Duration = Duration::from_secs(3);

/// A plain server whose EHLO reply drips, and a config whose per-command timeout is
/// `timeout_secs`.
fn dripping(timeout_secs: u64) -> Setup {
    Setup::plain(
        ServerOptions {
            drip_ehlo: Some(DRIP),
            ..ServerOptions::default()
        },
        timeout_secs,
    )
}

/// Runs `cmd` expecting `code`; fails when it took longer than `limit` + [`MARGIN`].
#[track_caller]
fn within(cmd: &mut assert_cmd::Command, code: i32, limit: Duration) -> Run {
    let started = Instant::now();
    let run = cmd.expect_exit(code);
    let took = started.elapsed();
    assert!(
        took < limit + MARGIN,
        "took {took:?}, the limit is {limit:?}\n{run}"
    );
    run
}

#[test]
fn to01_check_ends_at_its_timeout_against_a_dripping_server() {
    // The per-command timeout (30 s) is far away: only --timeout can end it in time.
    let s = dripping(30);
    let run = within(
        envoi(s.home())
            .args(["check", "--timeout", "2", "--config"])
            .arg(&s.config),
        75,
        Duration::from_secs(2),
    );
    assert!(
        run.stderr
            .contains("deadline passed while the server was still answering"),
        "{run}"
    );
}

#[test]
fn to01_a_batch_record_ends_at_its_timeout_and_is_not_sent() {
    let s = dripping(30);
    let records = s.home().join("mail.jsonl");
    std::fs::write(
        &records,
        r#"{"To":"r1@example.com","Subject":"m1","Body":"one"}"#,
    )
    .expect("write the record");
    let report = s.home().join("report.jsonl");
    let run = within(
        envoi(s.home())
            .args(["batch", "--timeout", "2", "--retries", "0", "--config"])
            .arg(&s.config)
            .arg("--report")
            .arg(&report)
            .arg(&records),
        75,
        Duration::from_secs(2),
    );
    let line = std::fs::read_to_string(&report).expect("the report is written");
    assert!(line.contains("deadline passed"), "{line}\n{run}");
    s.assert_nothing_delivered();
}

/// A flush's entry has 120 s (no flag shortens it); the same socket bound holds it as it
/// holds `check` above. What a test can see in seconds is the other half: each reply, the
/// dripping EHLO included, takes at most the profile's `timeout_secs` as a whole, where
/// it used to restart with every byte.
#[test]
fn to01_an_outbox_flush_is_not_held_by_a_dripping_reply() {
    let s = dripping(2);
    let outbox = s.home().join("outbox");
    let queued = within(
        s.send()
            .arg("--outbox-dir")
            .arg(&outbox)
            .args(["--queue", "--timeout", "3", "--json"])
            .args(["--from", "sender@example.com", "--to", "rcpt@example.com"])
            .args(["--subject", "drip", "--body", "held?"]),
        0,
        Duration::from_secs(3),
    );
    assert_eq!(queued.json()["status"], "queued", "{queued}");
    let flushed = within(
        envoi(s.home())
            .args(["outbox", "flush", "--all", "--json", "--outbox-dir"])
            .arg(&outbox),
        0,
        Duration::from_secs(2),
    );
    assert!(flushed.stdout.contains("timed out"), "{flushed}");
    s.assert_nothing_delivered();
}

#[test]
fn pr06_probe_ends_at_its_timeout_against_a_dripping_server() {
    let s = dripping(30);
    let target = format!("127.0.0.1:{}", s.server.port());
    let run = within(
        envoi(s.home()).args(["check", "--probe", &target, "--timeout", "3"]),
        75,
        Duration::from_secs(3),
    );
    assert!(!run.stdout.contains("use:"), "{run}");
}
