//! envoi's SMTP client against hostile peers: replies injected before the TLS handshake,
//! endless reply lines, a stall after the message, a server's SIZE limit. Each test is
//! named after its case in the reliability catalogue (shared/notes, §8) and reads the
//! outcome off what the peer saw.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use tempfile::TempDir;

use crate::support::envoi::{Config, ExpectExit, Route, Setup, assert_no_secret, envoi, send};
use crate::support::smtp_server::{Security, ServerOptions};

/// A loopback peer for one connection, run by `script`; its result comes back on join.
fn peer<T: Send + 'static>(
    script: impl FnOnce(TcpStream) -> T + Send + 'static,
) -> (u16, JoinHandle<T>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    let handle = thread::spawn(move || {
        let (socket, _) = listener.accept().expect("accept");
        script(socket)
    });
    (port, handle)
}

/// The next line from the client without its CRLF; `None` at end of stream.
fn read_line(reader: &mut BufReader<TcpStream>) -> Option<String> {
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(line.trim_end_matches(['\r', '\n']).to_owned()),
    }
}

/// T15 ★: a man in the middle answers STARTTLS with `220` and forged replies in the same
/// write. They must never be read as the server's answers over TLS: the session ends
/// with 75 before the handshake, before any AUTH or MAIL.
/// Regression: lettre kept the bytes; a NOOP check caught one forged reply, not two.
#[test]
fn t15_replies_injected_after_starttls_end_the_session() {
    for injected in [
        &b"250-evil.example\r\n250 AUTH PLAIN\r\n"[..],
        b"250 AUTH PLAIN\r\n250 ok\r\n",
    ] {
        let s = Setup::new(
            Security::StartTls,
            ServerOptions {
                inject_after_starttls: Some(injected.to_vec()),
                ..ServerOptions::default()
            },
        );
        let run = s
            .send()
            .args(["--to", "a@example.com", "--retries", "0", "--json"])
            .expect_exit(75);
        assert!(run.stderr.contains("before the TLS handshake"), "{run}");
        assert_eq!(run.json()["kind"], "temporary");
        assert_no_secret(&run.output());
        s.assert_stopped_before_auth();
    }
}

/// T22: a greeting that never ends its line. envoi stops reading at its cap (4 KiB) and
/// says so; the peer cannot push more than the socket buffers hold.
#[test]
fn t22_an_endless_reply_line_is_refused_without_reading_it_all() {
    const OFFERED: usize = 256 << 20;
    let (port, written) = peer(|mut socket| {
        let chunk = vec![b'a'; 64 << 10];
        let mut written = socket.write(b"220 ").unwrap_or(0);
        while written < OFFERED {
            match socket.write(&chunk) {
                Ok(n) => written += n,
                Err(_) => break,
            }
        }
        written
    });
    let home = TempDir::new().expect("temp dir");
    let run = send(home.path(), Route::Url(port))
        .args(["--from", "a@example.com", "--to", "b@example.com"])
        .args(["--retries", "0", "--json"])
        .expect_exit(75);
    assert!(run.stderr.contains("longer than 4096 octets"), "{run}");
    let written = written.join().expect("peer");
    assert!(written < OFFERED, "envoi read all {written} bytes");
}

/// T22: a multiline reply that never ends (`250-` forever) is refused at 128 lines.
#[test]
fn t22_an_endless_multiline_reply_is_refused() {
    let (port, peer) = peer(|mut socket| {
        let mut reader = BufReader::new(socket.try_clone().expect("clone"));
        let _ = socket.write_all(b"220 hostile.example\r\n");
        let ehlo = read_line(&mut reader);
        for _ in 0..10_000 {
            if socket.write_all(b"250-AGAIN\r\n").is_err() {
                break;
            }
        }
        ehlo
    });
    let home = TempDir::new().expect("temp dir");
    let run = send(home.path(), Route::Url(port))
        .args([
            "--from",
            "a@example.com",
            "--to",
            "b@example.com",
            "--retries",
            "0",
        ])
        .expect_exit(75);
    assert!(run.stderr.contains("more than 128 lines"), "{run}");
    let ehlo = peer.join().expect("peer");
    assert!(ehlo.is_some_and(|l| l.starts_with("EHLO ")));
}

/// T34: a server that takes the message and never answers the final dot costs one
/// timeout, not three: envoi reports the outcome as unknown and closes the socket
/// without a QUIT that would wait again.
/// Regression: after the timeout lettre sent QUIT, waited, aborted and sent QUIT again.
#[test]
fn t34_a_stall_after_the_final_dot_closes_without_quit() {
    let (port, peer) = peer(|mut socket| {
        let mut reader = BufReader::new(socket.try_clone().expect("clone"));
        let mut say = |text: &str| {
            let _ = socket.write_all(text.as_bytes());
        };
        say("220 stall.example\r\n");
        let mut after_dot = Vec::new();
        let mut in_data = false;
        let mut dot_seen = false;
        while let Some(line) = read_line(&mut reader) {
            if dot_seen {
                after_dot.push(line);
            } else if in_data {
                dot_seen = line == ".";
            } else if line.starts_with("EHLO") {
                say("250-stall.example\r\n250 8BITMIME\r\n");
            } else if line == "DATA" {
                in_data = true;
                say("354 go on\r\n");
            } else {
                say("250 ok\r\n");
            }
        }
        (dot_seen, after_dot)
    });
    let home = TempDir::new().expect("temp dir");
    let config = Config::new(port, "none").timeout_secs(1).write(home.path());
    let run = send(home.path(), Route::Config(&config))
        .args(["--to", "b@example.com", "--body", "hello", "--json"])
        .expect_exit(75);
    assert_eq!(run.json()["kind"], "outcome_unknown", "{run}");
    assert!(run.stderr.contains("timed out"), "{run}");
    let (dot_seen, after_dot) = peer.join().expect("peer");
    assert!(dot_seen, "the message was not sent");
    assert!(after_dot.is_empty(), "sent after the stall: {after_dot:?}");
}

/// T37: a message larger than the server's SIZE is refused before MAIL (65, naming both
/// sizes); one that fits carries `SIZE=` on MAIL FROM (RFC 1870).
/// Regression: 6.8 MB went up to a server that advertised `SIZE 1048576`.
#[test]
fn t37_the_servers_size_limit_is_honoured() {
    let s = Setup::plain(
        ServerOptions {
            ehlo_extra: vec!["SIZE 2000".into()],
            ..ServerOptions::default()
        },
        10,
    );
    let big = "x".repeat(3000);
    let run = s
        .send()
        .args(["--to", "a@example.com", "--body", &big, "--retries", "0"])
        .expect_exit(65);
    assert!(
        run.stderr.contains("takes at most 2.0 kB (SIZE 2000)"),
        "{run}"
    );
    assert!(s.server.wait_idle(Duration::from_secs(5)));
    assert!(
        s.server.transcript().iter().all(|l| !l.starts_with("MAIL")),
        "{:?}",
        s.server.transcript()
    );
    s.assert_nothing_delivered();

    s.send()
        .args(["--to", "a@example.com", "--body", "small"])
        .expect_exit(0);
    let message = s.only_message();
    let declared: Vec<usize> = message
        .mail_params
        .iter()
        .filter_map(|p| p.strip_prefix("SIZE=")?.parse().ok())
        .collect();
    assert_eq!(declared, [message.data.len()], "{:?}", message.mail_params);
}

/// T25: a `password_command` that hangs is stopped after the profile's timeout: 78 in
/// direct mode, naming the command; with `--queue` the message waits in the outbox with
/// that reason. Nothing reaches the server either way.
/// Regression: the send (and `outbox flush`) hung forever.
#[test]
fn t25_a_hanging_password_command_is_stopped() {
    let s = Setup::plain(ServerOptions::default(), 1);
    let config = Config::new(s.server.port(), "none")
        .timeout_secs(1)
        .line("username = \"u\"\npassword_command = \"sleep 30\"\nallow_plaintext_auth = true")
        .write(s.home());
    let run = send(s.home(), Route::Config(&config))
        .args(["--to", "a@example.com", "--json"])
        .expect_exit(78);
    assert!(
        run.stderr.contains("password_command did not finish"),
        "{run}"
    );
    let outbox = s.home().join("outbox");
    let queued = send(s.home(), Route::Config(&config))
        .args(["--to", "a@example.com", "--queue", "--json", "--outbox-dir"])
        .arg(&outbox)
        .expect_exit(0)
        .json();
    assert_eq!(queued["status"], "queued", "{queued}");
    let reason = queued["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("password_command"), "{queued}");
    s.assert_nothing_delivered();
}

/// RFC 2920: with PIPELINING offered, MAIL FROM, every RCPT TO and DATA leave in one write
/// (the peer finds them all in its first read) and each recipient's reply is still its own.
#[test]
fn pipelining_sends_the_envelope_in_one_write() {
    let (port, peer) = peer(|mut socket| {
        let mut reader = BufReader::new(socket.try_clone().expect("clone"));
        let _ = socket.write_all(b"220 pipe.example\r\n");
        let _ = read_line(&mut reader);
        let _ = socket.write_all(b"250-pipe.example\r\n250 PIPELINING\r\n");
        // Give a client that writes line by line time to show it.
        thread::sleep(Duration::from_millis(300));
        let first = reader.fill_buf().map(<[u8]>::to_vec).unwrap_or_default();
        let first = String::from_utf8_lossy(&first).into_owned();
        let mut rcpts = 0;
        while let Some(line) = read_line(&mut reader) {
            let reply: &[u8] = if line.starts_with("RCPT") {
                rcpts += 1;
                if rcpts == 2 {
                    b"550 no such user\r\n"
                } else {
                    b"250 ok\r\n"
                }
            } else if line == "DATA" {
                b"354 go on\r\n"
            } else if line.starts_with("QUIT") {
                let _ = socket.write_all(b"221 bye\r\n");
                break;
            } else if line.starts_with("MAIL") || line == "." {
                b"250 ok\r\n"
            } else {
                continue;
            };
            let _ = socket.write_all(reply);
        }
        first
    });
    let home = TempDir::new().expect("temp dir");
    let run = send(home.path(), Route::Url(port))
        .args([
            "--from",
            "a@example.com",
            "--to",
            "b@example.com;c@example.com;d@example.com",
        ])
        .args(["--body", "hi", "--allow-partial", "--json"])
        .expect_exit(0);
    let json = run.json();
    assert_eq!(json["status"], "partial", "{json}");
    let refused: Vec<&str> = json["recipients"]
        .as_array()
        .expect("recipients")
        .iter()
        .filter(|r| r["status"] == "refused")
        .filter_map(|r| r["address"].as_str())
        .collect();
    assert_eq!(refused, ["c@example.com"]);
    let first = peer.join().expect("peer");
    for line in [
        "MAIL FROM:<a@example.com>",
        "RCPT TO:<b@example.com>",
        "RCPT TO:<d@example.com>",
        "DATA",
    ] {
        assert!(
            first.contains(line),
            "{line} not in the first read: {first:?}"
        );
    }
}

/// With PIPELINING and a server that takes two recipients per transaction, the 452'd
/// ones go in further transactions and nobody gets the message twice.
#[test]
fn pipelined_452s_go_in_further_transactions() {
    let s = Setup::plain(
        ServerOptions {
            ehlo_extra: vec!["PIPELINING".into()],
            max_rcpts_per_transaction: Some(2),
            ..ServerOptions::default()
        },
        10,
    );
    s.send()
        .args([
            "--to",
            "r1@example.com;r2@example.com;r3@example.com;r4@example.com;r5@example.com",
        ])
        .expect_exit(0);
    let sets: Vec<Vec<String>> = s
        .server
        .messages()
        .iter()
        .map(|m| m.rcpt_to.clone())
        .collect();
    assert_eq!(
        sets,
        [
            vec!["r1@example.com", "r2@example.com"],
            vec!["r3@example.com", "r4@example.com"],
            vec!["r5@example.com"],
        ]
    );
}

/// A peer that offers `keywords` in EHLO, accepts everything, and returns every command
/// line it received.
fn accepting_peer(keywords: &'static str) -> (u16, JoinHandle<Vec<String>>) {
    peer(move |mut socket| {
        let mut reader = BufReader::new(socket.try_clone().expect("clone"));
        let _ = socket.write_all(b"220 dsn.example\r\n");
        let mut lines = Vec::new();
        let mut in_data = false;
        while let Some(line) = read_line(&mut reader) {
            if in_data {
                if line == "." {
                    in_data = false;
                    let _ = socket.write_all(b"250 queued\r\n");
                }
                continue;
            }
            let reply = if line.starts_with("EHLO") {
                format!("250-dsn.example\r\n250 {keywords}\r\n")
            } else if line == "DATA" {
                in_data = true;
                "354 go on\r\n".to_owned()
            } else if line == "QUIT" {
                let _ = socket.write_all(b"221 bye\r\n");
                lines.push(line);
                break;
            } else {
                "250 ok\r\n".to_owned()
            };
            lines.push(line);
            let _ = socket.write_all(reply.as_bytes());
        }
        lines
    })
}

/// RFC 3461: sendmail's -N, -R and -V become NOTIFY= on each RCPT and RET=, ENVID=
/// (xtext) on MAIL when the server offers DSN; without DSN the message goes without
/// them, and a warning says so.
#[test]
fn dsn_requests_reach_a_server_that_offers_dsn() {
    let message = &b"Subject: dsn\n\nbody\n"[..];
    let (port, lines) = accepting_peer("DSN");
    let home = TempDir::new().expect("temp dir");
    envoi(home.path())
        .env(
            "ENVOI_SMTP_URL",
            format!("smtp://127.0.0.1:{port}?security=none"),
        )
        .args([
            "sendmail",
            "-N",
            "success,failure",
            "-R",
            "hdrs",
            "-V",
            "job+1",
        ])
        .args(["-f", "a@example.com", "b@example.com"])
        .write_stdin(message)
        .expect_exit(0);
    let lines = lines.join().expect("peer");
    assert!(
        lines.contains(&"MAIL FROM:<a@example.com> RET=HDRS ENVID=job+2B1".to_owned()),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"RCPT TO:<b@example.com> NOTIFY=SUCCESS,FAILURE".to_owned()),
        "{lines:?}"
    );

    let (port, lines) = accepting_peer("8BITMIME");
    let run = envoi(home.path())
        .env(
            "ENVOI_SMTP_URL",
            format!("smtp://127.0.0.1:{port}?security=none"),
        )
        .args([
            "sendmail",
            "-N",
            "never",
            "-f",
            "a@example.com",
            "b@example.com",
        ])
        .write_stdin(message)
        .expect_exit(0);
    assert!(run.stderr.contains("does not offer DSN"), "{run}");
    let lines = lines.join().expect("peer");
    assert!(
        lines.contains(&"RCPT TO:<b@example.com>".to_owned()),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"MAIL FROM:<a@example.com>".to_owned()),
        "{lines:?}"
    );

    envoi(home.path())
        .env("ENVOI_SMTP_URL", "smtp://127.0.0.1:1?security=none")
        .args(["sendmail", "-N", "sometimes", "b@example.com"])
        .write_stdin(message)
        .expect_exit(64);
}
