//! Direct mode under faults, against the in-process server with injected failures:
//! who retries what, per-recipient results, deadlines, and STARTTLS safety. Each test
//! reads the outcome off the server (messages, unacknowledged bytes, connections).

use std::time::Duration;

use assert_cmd::Command;
use mail_parser::MessageParser;
use tempfile::TempDir;

use crate::support::certs::TestPki;
use crate::support::envoi::{Config, ExpectExit, Route, Setup, assert_no_secret, send};
use crate::support::smtp_server::{Security, ServerOptions, TestServer};
use crate::support::{PASSWORD, USER};

/// `envoi send --subject reliability <args>` with the setup's config.
fn send_with(s: &Setup, args: &[&str]) -> Command {
    let mut cmd = s.send();
    cmd.args(["--subject", "reliability"]).args(args);
    cmd
}

#[test]
fn tempfail_twice_then_one_copy_delivered() {
    let s = Setup::plain(
        ServerOptions {
            tempfail_transactions: 2,
            ..ServerOptions::default()
        },
        10,
    );
    let run = send_with(
        &s,
        &["--to", "a@example.com", "--retry-max-secs", "1", "--json"],
    )
    .expect_exit(0);
    assert_eq!(
        run.stderr.matches("retrying in").count(),
        2,
        "{}",
        run.stderr
    );
    let j = run.json();
    assert_eq!(j["status"], "sent");
    assert_eq!(j["attempts"], 3);
    assert_eq!(s.server.messages().len(), 1, "exactly one copy");
    assert_eq!(s.server.connections(), 3);
}

#[test]
fn retries_exhausted_is_75_and_nothing_delivered() {
    let s = Setup::plain(
        ServerOptions {
            tempfail_transactions: 10,
            ..ServerOptions::default()
        },
        10,
    );
    let run = send_with(
        &s,
        &[
            "--to",
            "a@example.com",
            "--retries",
            "1",
            "--retry-max-secs",
            "1",
        ],
    )
    .expect_exit(75);
    assert!(run.stderr.contains("451"), "{}", run.stderr);
    assert_eq!(s.server.connections(), 2);
    assert!(s.server.messages().is_empty());
}

#[test]
fn permanent_failure_is_never_retried() {
    let s = Setup::plain(
        ServerOptions {
            refuse_rcpt: vec![("gone@example.com".into(), 550)],
            ..ServerOptions::default()
        },
        10,
    );
    let run = send_with(&s, &["--to", "gone@example.com", "--json"]).expect_exit(67);
    assert_eq!(s.server.connections(), 1, "a permanent refusal was retried");
    let j = run.json();
    assert_eq!(j["recipients"][0]["address"], "gone@example.com");
    assert_eq!(j["recipients"][0]["status"], "refused");
    assert_eq!(j["recipients"][0]["code"], 550);
}

#[test]
fn too_many_recipients_go_in_further_transactions() {
    let s = Setup::plain(
        ServerOptions {
            max_rcpts_per_transaction: Some(2),
            ..ServerOptions::default()
        },
        10,
    );
    let run = send_with(
        &s,
        &[
            "--to",
            "r1@example.com;r2@example.com;r3@example.com",
            "--cc",
            "r4@example.com",
            "--bcc",
            "r5@example.com;r1@EXAMPLE.com",
            "--json",
        ],
    )
    .expect_exit(0);
    let messages = s.server.messages();
    let sets: Vec<Vec<String>> = messages.iter().map(|m| m.rcpt_to.clone()).collect();
    assert_eq!(
        sets,
        [
            vec!["r1@example.com", "r2@example.com"],
            vec!["r3@example.com", "r4@example.com"],
            vec!["r5@example.com"],
        ]
    );
    let ids: Vec<String> = messages
        .iter()
        .map(|m| {
            MessageParser::default()
                .parse(&m.data)
                .unwrap()
                .message_id()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert!(
        ids.iter().all(|id| id == &ids[0]),
        "one message, one Message-ID"
    );
    assert_eq!(run.json()["recipients"].as_array().unwrap().len(), 5);
}

#[test]
fn allow_partial_sends_to_the_accepted_and_reports_the_refused() {
    let s = Setup::plain(
        ServerOptions {
            refuse_rcpt: vec![("gone@example.com".into(), 550)],
            ..ServerOptions::default()
        },
        10,
    );
    let run = send_with(
        &s,
        &[
            "--to",
            "ok@example.com;gone@example.com",
            "--allow-partial",
            "--json",
        ],
    )
    .expect_exit(0);
    assert_eq!(s.server.messages().len(), 1);
    assert_eq!(s.server.messages()[0].rcpt_to, ["ok@example.com"]);
    let j = run.json();
    assert_eq!(j["status"], "partial");
    let statuses: Vec<(String, String)> = j["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["address"].as_str().unwrap().into(),
                r["status"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        [
            ("ok@example.com".into(), "delivered".into()),
            ("gone@example.com".into(), "refused".into())
        ]
    );

    // Without --allow-partial the same refusal sends nothing at all.
    send_with(&s, &["--to", "ok@example.com;gone@example.com"]).expect_exit(67);
    assert_eq!(s.server.messages().len(), 1);
}

#[test]
fn silent_greeting_ends_in_bounded_time_with_75() {
    let s = Setup::plain(
        ServerOptions {
            silent_greeting: true,
            ..ServerOptions::default()
        },
        1,
    );
    let run = send_with(&s, &["--to", "a@example.com", "--retries", "0"]).expect_exit(75);
    assert!(run.stderr.contains("timed out"), "{}", run.stderr);
    assert!(s.server.messages().is_empty());
}

#[test]
fn no_answer_after_the_final_dot_is_outcome_unknown_and_not_retried() {
    for opts in [
        ServerOptions {
            hang_after_data: true,
            ..ServerOptions::default()
        },
        ServerOptions {
            drop_after_final_dot: true,
            ..ServerOptions::default()
        },
    ] {
        let s = Setup::plain(opts, 1);
        let run = send_with(&s, &["--to", "a@example.com", "--json"]).expect_exit(75);
        let j = run.json();
        assert_eq!(j["kind"], "outcome_unknown");
        assert!(
            j["message"].as_str().unwrap().contains("may or may not"),
            "{j}"
        );
        assert_eq!(
            s.server.connections(),
            1,
            "retried a message that may have arrived"
        );
        assert_eq!(s.server.unacknowledged().len(), 1);
        let sent = MessageParser::default()
            .parse(&s.server.unacknowledged()[0].data)
            .unwrap()
            .message_id()
            .unwrap()
            .to_owned();
        assert!(
            run.stderr.contains(&sent),
            "the Message-ID is named: {}",
            run.stderr
        );
    }
}

/// Whether the server read the final dot cannot be known once the payload is written:
/// a drop during DATA is an unknown outcome too, and never retried blindly.
#[test]
fn connection_lost_during_data_is_not_retried_blindly() {
    let s = Setup::plain(
        ServerOptions {
            drop_during_data: true,
            ..ServerOptions::default()
        },
        5,
    );
    let run = send_with(&s, &["--to", "a@example.com", "--retries", "1", "--json"]).expect_exit(75);
    assert_eq!(run.json()["kind"], "outcome_unknown");
    assert_eq!(s.server.connections(), 1);
    assert!(s.server.messages().is_empty());
}

#[test]
fn shutdown_421_is_temporary() {
    let s = Setup::plain(
        ServerOptions {
            reply_421_at: Some("MAIL"),
            ..ServerOptions::default()
        },
        5,
    );
    let run = send_with(&s, &["--to", "a@example.com", "--retries", "0"]).expect_exit(75);
    assert!(run.stderr.contains("421"), "{}", run.stderr);
    assert!(s.server.messages().is_empty());
}

/// Every reply is slow (0.7 s, under the 10 s per-command timeout) and --timeout is 1 s: the
/// whole send gives up with 75. Pins each command's timeout being cut to what is left of
/// --timeout, so a slow server cannot stretch a send past its deadline.
#[test]
fn slow_replies_cannot_stretch_a_send_past_its_deadline() {
    let s = Setup::plain(
        ServerOptions {
            delay_replies: Some(Duration::from_millis(700)),
            ..ServerOptions::default()
        },
        10,
    );
    send_with(&s, &["--to", "a@example.com", "--timeout", "1"]).expect_exit(75);
    assert!(s.server.messages().is_empty());
}

#[test]
fn verbose_transcript_redacts_auth() {
    let s = Setup::new(Security::StartTls, ServerOptions::default());
    let run = s
        .send()
        .args(["--to", "a@example.com", "-v"])
        .expect_exit(0);
    for needle in [
        "C: MAIL FROM:<sender@example.com>",
        "C: RCPT TO:<a@example.com>",
        "[redacted]",
        "S: 250",
    ] {
        assert!(
            run.stderr.contains(needle),
            "{needle} missing: {}",
            run.stderr
        );
    }
    assert_no_secret(&run.output());
    assert_eq!(s.server.messages().len(), 1);
}

#[test]
fn smtputf8_local_parts() {
    let s = Setup::plain(
        ServerOptions {
            ehlo_extra: vec!["SMTPUTF8".into()],
            ..ServerOptions::default()
        },
        10,
    );
    send_with(&s, &["--to", "jösé@bücher.example"]).expect_exit(0);
    let m = &s.server.messages()[0];
    assert_eq!(m.rcpt_to, ["jösé@xn--bcher-kva.example"]);
    assert!(
        m.mail_params.iter().any(|p| p == "SMTPUTF8"),
        "{:?}",
        m.mail_params
    );

    let s = Setup::plain(ServerOptions::default(), 10);
    let run = send_with(&s, &["--to", "jösé@example.com"]).expect_exit(69);
    assert!(run.stderr.contains("SMTPUTF8"), "{}", run.stderr);
    assert!(s.server.messages().is_empty());
}

/// A full disk under the outbox: a clear error (75), nothing half-written, nothing sent.
/// Needs root to mount a small tmpfs (CI runs as root); skipped with a note otherwise.
#[test]
fn outbox_on_a_full_disk() {
    let dir = TempDir::new().unwrap();
    let outbox = dir.path().join("tiny");
    std::fs::create_dir(&outbox).unwrap();
    let mounted = std::process::Command::new("mount")
        // mode=0700: a tmpfs root is 1777 by default, and envoi refuses an outbox
        // folder others can write.
        .args(["-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs"])
        .arg(&outbox)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("note: skipping the full-disk test: cannot mount a tmpfs (not root?)");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(outbox.clone());

    let server = TestServer::start(ServerOptions::default());
    let big = dir.path().join("big.bin");
    std::fs::write(&big, vec![7u8; 1 << 20]).unwrap();
    let run = send(dir.path(), Route::Url(server.port()))
        .args([
            "--from",
            "a@example.com",
            "--to",
            "b@example.com",
            "--queue",
            "--outbox-dir",
        ])
        .arg(&outbox)
        .arg("--attach")
        .arg(&big)
        .expect_exit(75);
    assert!(
        run.stderr.contains("No space left on device"),
        "{}",
        run.stderr
    );
    assert_eq!(
        server.connections(),
        0,
        "sent although it could not be queued"
    );
    for sub in ["tmp", "queue"] {
        let left: Vec<_> = std::fs::read_dir(outbox.join(sub)).unwrap().collect();
        assert!(left.is_empty(), "{sub}/ keeps a half entry: {left:?}");
    }
}

/// A "server" that drips one byte at a time never lets a socket timeout fire; the
/// deadline set before every read (or, failing that, the watchdog) still ends the send
/// after --timeout. (Fault injection on a raw socket: the point is a peer that never
/// completes a reply.)
#[test]
fn watchdog_ends_a_send_against_a_dripping_server() {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        if let Ok((mut socket, _)) = listener.accept() {
            let _ = socket.write_all(b"220-");
            for _ in 0..100 {
                std::thread::sleep(Duration::from_millis(200));
                if socket.write_all(b"x").is_err() {
                    break;
                }
            }
        }
    });
    let dir = TempDir::new().unwrap();
    let run = send(dir.path(), Route::Url(port))
        .args(["--from", "a@example.com", "--to", "b@example.com"])
        .args(["--timeout", "1", "--retries", "0", "--json"])
        .expect_exit(75);
    assert!(
        run.stderr
            .contains("passed while the server was still answering"),
        "{}",
        run.stderr
    );
    assert_eq!(run.json()["kind"], "temporary");
}

/// A profile whose security does not match its port, served by the in-process server
/// of `server_security`: the profile says `profile_security`, trusts the CA, and logs
/// in unless it is "none" (a password without TLS is refused before connecting).
fn mismatched(
    server_security: Security,
    profile_security: &'static str,
) -> (TempDir, TestServer, std::path::PathBuf) {
    let dir = TempDir::new().expect("temp dir");
    let pki = std::sync::Arc::new(TestPki::new());
    let ca = pki.write_ca(dir.path());
    let server = TestServer::start(ServerOptions {
        security: server_security,
        auth: Some((USER.into(), PASSWORD.into())),
        pki: Some(pki),
        ..ServerOptions::default()
    });
    let mut config = Config::new(server.port(), profile_security)
        .timeout_secs(1)
        .trust(&ca);
    if profile_security != "none" {
        config = config.login();
    }
    let config = config.write(dir.path());
    (dir, server, config)
}

/// `security = "tls"` on a port that greets in plain text (587 style): 78 at once, on
/// the one connection, naming the fix; never retried as if the server were down.
#[test]
fn implicit_tls_on_a_plain_text_port_is_a_misconfiguration() {
    let (dir, server, config) = mismatched(Security::StartTls, "tls");
    let run = send(dir.path(), Route::Config(&config))
        .args(["--to", "a@example.com", "--subject", "x", "--body", "x"])
        .expect_exit(78);
    assert!(run.stderr.contains("speaks plain SMTP"), "{run}");
    assert!(run.stderr.contains("security = \"starttls\""), "{run}");
    assert!(!run.stderr.contains("retrying"), "{run}");
    assert_eq!(server.connections(), 1, "{run}");
    assert!(server.messages().is_empty());
    assert_no_secret(&run.output());
}

/// `security = "starttls"` (or "none") on an implicit-TLS port (465 style): the greeting
/// never comes; after its timeout one TLS handshake on a second connection proves the
/// port speaks TLS, and the answer is 78 with the fix. Two connections, no retries.
#[test]
fn starttls_on_an_implicit_tls_port_is_a_misconfiguration() {
    for profile_security in ["starttls", "none"] {
        let (dir, server, config) = mismatched(Security::ImplicitTls, profile_security);
        let run = send(dir.path(), Route::Config(&config))
            .args(["--to", "a@example.com", "--subject", "x", "--body", "x"])
            .expect_exit(78);
        assert!(run.stderr.contains("speaks implicit TLS"), "{run}");
        assert!(run.stderr.contains("security = \"tls\""), "{run}");
        assert!(!run.stderr.contains("retrying"), "{run}");
        assert_eq!(server.connections(), 2, "{profile_security}: {run}");
        assert!(server.messages().is_empty());
    }
}
