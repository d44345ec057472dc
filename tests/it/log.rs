//! The delivery log (`log`, `--log`, `$ENVOI_LOG`): a line per message of `send`,
//! `sendmail`, each `batch` record and each `outbox flush` entry, into a file and into a
//! real syslog socket at `/dev/log` (and the journal's native socket), each field
//! checked against what reached the SMTP server.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::Duration;

use tempfile::TempDir;

use crate::support::PASSWORD;
use crate::support::envoi::{
    Config, ExpectExit, Route, Run, assert_no_secret, envoi, hermetic_env, send,
};
use crate::support::namespaces;
use crate::support::smtp_server::{Received, ServerOptions, TestServer};

/// One log line's `key=value` fields, single-quoted values unescaped (`\'`, `\\`; other
/// escapes kept as written). The time of a file line is under `time`.
fn fields(line: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = line;
    if let Some((first, after)) = rest.split_once(' ')
        && !first.contains('=')
    {
        out.insert("time".to_owned(), first.to_owned());
        rest = after;
    }
    let mut chars = rest.chars().peekable();
    while chars.peek().is_some() {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some(e @ ('\'' | '\\')) => value.push(e),
                        Some(e) => {
                            value.push('\\');
                            value.push(e);
                        }
                        None => break,
                    },
                    '\'' => break,
                    c => value.push(c),
                }
            }
            assert!(
                matches!(chars.next(), Some(' ') | None),
                "after a quote: {line}"
            );
        } else {
            value = chars.by_ref().take_while(|c| *c != ' ').collect();
        }
        assert!(
            out.insert(key.trim().to_owned(), value).is_none(),
            "a key twice: {line}"
        );
    }
    out
}

/// The lines of the log file at `path`.
fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read the log {}: {e}", path.display()))
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A header of a received message, read with a real MIME parser.
fn header(message: &Received, name: &str) -> String {
    let parsed = mail_parser::MessageParser::default()
        .parse(&message.data)
        .expect("a parsable message");
    match name {
        "Message-ID" => format!("<{}>", parsed.message_id().expect("a Message-ID")),
        other => parsed
            .header_raw(other)
            .unwrap_or_else(|| panic!("no {other}"))
            .trim()
            .to_owned(),
    }
}

/// Asserts every field of a line of a message that reached the server as `message`.
#[track_caller]
fn assert_line_of(f: &BTreeMap<String, String>, message: &Received, status: &str) {
    assert_eq!(f["profile"], "test", "{f:?}");
    assert_eq!(f["host"], "localhost", "{f:?}");
    assert_eq!(f["from"], message.mail_from, "{f:?}");
    assert_eq!(f["recipients"], message.rcpt_to.join(","), "{f:?}");
    assert_eq!(f["mailsize"], message.data.len().to_string(), "{f:?}");
    assert_eq!(f["message_id"], header(message, "Message-ID"), "{f:?}");
    assert_eq!(f["status"], status, "{f:?}");
    assert_eq!(f["smtpstatus"], "250", "{f:?}");
    assert!(!f["smtpmsg"].is_empty(), "{f:?}");
    assert_eq!(f["exitcode"], "0", "{f:?}");
}

/// An RFC 3339 UTC time to the second: `2026-12-07T23:31:15Z`.
#[track_caller]
fn assert_rfc3339_utc(time: &str) {
    let b = time.as_bytes();
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    assert!(
        b.len() == 20
            && digits(0..4)
            && b[4] == b'-'
            && digits(5..7)
            && b[7] == b'-'
            && digits(8..10)
            && b[10] == b'T'
            && digits(11..13)
            && b[13] == b':'
            && digits(14..16)
            && b[16] == b':'
            && digits(17..19)
            && b[19] == b'Z',
        "not RFC 3339 UTC: {time}"
    );
}

/// A HOME with a plain server and a config whose profile logs to `log.txt` there (plus
/// `extra` lines).
struct Logged {
    home: TempDir,
    server: TestServer,
    config: PathBuf,
    log: PathBuf,
}

impl Logged {
    fn new(opts: ServerOptions, extra: &str) -> Logged {
        let home = TempDir::new().expect("temp dir");
        let server = TestServer::start(opts);
        let log = home.path().join("log.txt");
        let config = Config::new(server.port(), "none")
            .line(&format!("log = \"{}\"", log.display()))
            .line(extra)
            .write(home.path());
        Logged {
            home,
            server,
            config,
            log,
        }
    }

    fn home(&self) -> &Path {
        self.home.path()
    }

    fn send(&self) -> assert_cmd::Command {
        let mut cmd = send(self.home(), Route::Config(&self.config));
        cmd.args(["--retries", "0"]);
        cmd
    }
}

#[test]
fn send_logs_one_line_with_what_reached_the_server() {
    let l = Logged::new(ServerOptions::default(), "");
    l.send()
        .args(["--to", "a@example.com", "--cc", "b@example.com"])
        .args([
            "--bcc",
            "c@example.com",
            "--subject",
            "logged",
            "--body",
            "hi",
        ])
        .expect_exit(0);
    let messages = l.server.messages();
    assert_eq!(messages.len(), 1);
    let lines = lines(&l.log);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let f = fields(&lines[0]);
    assert_rfc3339_utc(&f["time"]);
    assert_line_of(&f, &messages[0], "sent");
    assert_eq!(
        f["recipients"], "a@example.com,b@example.com,c@example.com",
        "Bcc too: the envelope"
    );
    let mode = std::fs::metadata(&l.log).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the log is created private");

    // A second send appends; `--log none` turns the profile's log off.
    l.send()
        .args(["--to", "a@example.com", "--subject", "two", "--body", "hi"])
        .expect_exit(0);
    l.send()
        .args(["--to", "a@example.com", "--subject", "off", "--body", "hi"])
        .args(["--log", "none"])
        .expect_exit(0);
    let lines = super::log::lines(&l.log);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_line_of(&fields(&lines[1]), &l.server.messages()[1], "sent");

    // A repeated idempotency key: the line names the message that went the first time.
    for _ in 0..2 {
        l.send()
            .args(["--to", "a@example.com", "--subject", "once", "--body", "hi"])
            .args(["--idempotency-key", "nightly-1"])
            .expect_exit(0);
    }
    let lines = super::log::lines(&l.log);
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert_eq!(
        l.server.messages().len(),
        4,
        "sent once (the third went unlogged)"
    );
    let (first, again) = (fields(&lines[2]), fields(&lines[3]));
    assert_eq!(again["status"], "duplicate", "{again:?}");
    assert_eq!(again["exitcode"], "0", "{again:?}");
    assert_eq!(again["message_id"], first["message_id"], "{again:?}");
    assert!(
        !again.contains_key("smtpstatus"),
        "nothing was said to a server: {again:?}"
    );
}

#[test]
fn a_failed_send_logs_the_failure_and_its_exit_code_and_no_secret() {
    let l = Logged::new(
        ServerOptions {
            refuse_rcpt: vec![("nobody@example.com".into(), 550)],
            ..ServerOptions::default()
        },
        "",
    );
    let run = l
        .send()
        .args([
            "--to",
            "nobody@example.com",
            "--subject",
            "x",
            "--body",
            "y",
        ])
        .expect_exit(67);
    let lines = lines(&l.log);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let f = fields(&lines[0]);
    assert_eq!(f["status"], "refused", "{f:?}");
    assert_eq!(f["exitcode"], "67", "{f:?}");
    assert_eq!(f["recipients"], "nobody@example.com");
    assert!(f["errormsg"].contains("550"), "{f:?}");
    assert!(
        run.stderr.contains(&f["errormsg"][..20]),
        "the same words as stderr: {f:?}\n{run}"
    );
    l.server
        .messages()
        .is_empty()
        .then_some(())
        .expect("nothing delivered");

    // A refused login: the line says so, and never holds the password.
    let auth = crate::support::envoi::Setup::new(
        crate::support::smtp_server::Security::StartTls,
        ServerOptions::default(),
    );
    let log = auth.home().join("auth.log");
    let run = send(auth.home(), Route::Config(&auth.config))
        .env("ENVOI_TEST_PASSWORD", "wrong-password")
        .args(["--to", "a@example.com", "--subject", "x", "--body", "y"])
        .args(["--log", log.to_str().unwrap()])
        .expect_exit(77);
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(fields(text.trim_end())["exitcode"], "77", "{text}\n{run}");
    assert_eq!(fields(text.trim_end())["status"], "failed", "{text}");
    assert_no_secret(&text);
    assert!(!text.contains("wrong-password"), "{text}");
}

#[test]
fn sendmail_logs_each_message_by_flag_and_by_variable() {
    let l = Logged::new(ServerOptions::default(), "");
    let other = l.home().join("other.log");
    envoi(l.home())
        .args(["sendmail", "--config", l.config.to_str().unwrap()])
        .args(["--log", other.to_str().unwrap(), "-t"])
        .write_stdin("To: a@example.com\nSubject: cron\n\nout\n")
        .expect_exit(0);
    envoi(l.home())
        .env("ENVOI_LOG", &other)
        .args(["sendmail", "--config", l.config.to_str().unwrap()])
        .arg("b@example.com")
        .write_stdin("Subject: cron 2\n\nout\n")
        .expect_exit(0);
    assert!(
        !l.log.exists(),
        "--log and $ENVOI_LOG win over the profile's log"
    );
    let messages = l.server.messages();
    let lines = lines(&other);
    assert_eq!(lines.len(), 2, "{lines:?}");
    for (line, message) in lines.iter().zip(&messages) {
        assert_line_of(&fields(line), message, "sent");
    }
    let bad = envoi(l.home())
        .args(["sendmail", "--config", l.config.to_str().unwrap()])
        .args(["--log", "", "b@example.com"])
        .write_stdin("Subject: x\n\ny\n")
        .expect_exit(64);
    assert!(bad.stderr.contains("--log"), "{bad}");
}

#[test]
fn batch_logs_a_line_per_record() {
    let l = Logged::new(
        ServerOptions {
            refuse_rcpt: vec![("refused@example.com".into(), 550)],
            ..ServerOptions::default()
        },
        "",
    );
    let records = l.home().join("records.jsonl");
    let text: String = [
        "one@example.com",
        "refused@example.com",
        "three@example.com",
    ]
    .iter()
    .map(|to| format!("{{\"To\":\"{to}\",\"Subject\":\"to {to}\",\"Body\":\"b\"}}\n"))
    .collect();
    std::fs::write(&records, text).unwrap();
    envoi(l.home())
        .args([
            "batch",
            "--config",
            l.config.to_str().unwrap(),
            "--retries",
            "0",
        ])
        .arg(&records)
        .expect_exit(67);
    let messages = l.server.messages();
    assert_eq!(messages.len(), 2);
    let lines: Vec<_> = lines(&l.log).iter().map(|l| fields(l)).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    let by_to = |to: &str| {
        lines
            .iter()
            .find(|f| f["recipients"] == to)
            .unwrap_or_else(|| panic!("no line for {to}: {lines:?}"))
    };
    for message in &messages {
        assert_line_of(by_to(&message.rcpt_to[0]), message, "sent");
    }
    let refused = by_to("refused@example.com");
    assert_eq!(refused["status"], "refused", "{refused:?}");
    assert_eq!(refused["exitcode"], "67", "{refused:?}");
}

#[test]
fn outbox_flush_logs_a_line_per_entry() {
    let l = Logged::new(
        ServerOptions {
            tempfail_transactions: 3,
            refuse_rcpt: vec![("gone@example.com".into(), 550)],
            ..ServerOptions::default()
        },
        "",
    );
    let outbox = l.home().join("outbox");
    for (to, subject) in [
        ("a@example.com", "first"),
        ("a@example.com", "second"),
        ("gone@example.com", "third"),
    ] {
        l.send()
            .args(["--queue", "--outbox-dir", outbox.to_str().unwrap()])
            .args(["--to", to, "--subject", subject, "--body", "b"])
            .expect_exit(0);
    }
    let queued: Vec<_> = lines(&l.log).iter().map(|l| fields(l)).collect();
    assert_eq!(queued.len(), 3, "{queued:?}");
    for f in &queued {
        assert_eq!(f["status"], "queued", "{f:?}");
        assert_eq!(f["exitcode"], "0", "{f:?}");
        assert!(!f["outbox_id"].is_empty(), "{f:?}");
        assert!(f["errormsg"].contains("451"), "why it waits: {f:?}");
    }
    // The flush's own --log: its lines go there, one per entry.
    let flushed_log = l.home().join("flush.log");
    let run = envoi(l.home())
        .args(["outbox", "flush", "--all", "--config"])
        .arg(&l.config)
        .args(["--outbox-dir", outbox.to_str().unwrap()])
        .args(["--log", flushed_log.to_str().unwrap()])
        .output()
        .unwrap();
    let messages = l.server.messages();
    assert_eq!(messages.len(), 2);
    let flushed: Vec<_> = lines(&flushed_log).iter().map(|l| fields(l)).collect();
    assert_eq!(flushed.len(), 3, "{flushed:?}\n{run:?}");
    for f in &flushed {
        let queued_as = queued
            .iter()
            .find(|q| q["message_id"] == f["message_id"])
            .unwrap_or_else(|| panic!("not an entry queued earlier: {f:?}"));
        if f["recipients"] == "gone@example.com" {
            assert_eq!(f["status"], "refused", "{f:?}");
            assert_eq!(f["exitcode"], "67", "{f:?}");
            assert_eq!(
                f["outbox_id"], queued_as["outbox_id"],
                "kept in failed/: {f:?}"
            );
            continue;
        }
        let message = messages
            .iter()
            .find(|m| header(m, "Message-ID") == f["message_id"])
            .unwrap_or_else(|| panic!("no such message: {f:?}"));
        assert_line_of(f, message, "sent");
    }
}

/// An SMTP server that answers the final dot with `reply` (as raw bytes), for one
/// connection; AUTH PLAIN is refused with a reply that echoes what the client sent, in
/// base64 and decoded.
fn scripted_server(reply: &'static [u8]) -> u16 {
    hostile_server(false, reply.to_vec())
}

/// [`scripted_server`], which takes the login when `login_ok` (and answers the final dot
/// with `reply`); else it answers AUTH with a 535 that echoes what it was sent.
fn hostile_server(login_ok: bool, reply: Vec<u8>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut out = stream.try_clone().unwrap();
        let mut lines = BufReader::new(stream);
        out.write_all(b"220 hostile.example ESMTP\r\n").unwrap();
        let mut line = String::new();
        let mut in_data = false;
        while lines.read_line(&mut line).unwrap_or(0) > 0 {
            let answer: Vec<u8> = if in_data {
                if line == ".\r\n" {
                    in_data = false;
                    reply.clone()
                } else {
                    Vec::new()
                }
            } else {
                match line.get(..4).map(str::to_ascii_uppercase).as_deref() {
                    Some("EHLO") => {
                        b"250-hostile.example\r\n250-AUTH PLAIN\r\n250 8BITMIME\r\n".to_vec()
                    }
                    Some("AUTH") if login_ok => b"235 2.7.0 ok\r\n".to_vec(),
                    Some("AUTH") => {
                        use base64::Engine;
                        let sent = line.trim_end().rsplit(' ').next().unwrap_or("").to_owned();
                        let decoded = base64::engine::general_purpose::STANDARD
                            .decode(&sent)
                            .unwrap_or_default();
                        let decoded = String::from_utf8_lossy(&decoded).replace('\0', " ");
                        format!("535 5.7.8 {sent} ({decoded}) is not a login\r\n").into_bytes()
                    }
                    Some("DATA") => {
                        in_data = true;
                        b"354 go on\r\n".to_vec()
                    }
                    Some("QUIT") => {
                        let _ = out.write_all(b"221 bye\r\n");
                        return;
                    }
                    _ => b"250 ok\r\n".to_vec(),
                }
            };
            out.write_all(&answer).unwrap();
            line.clear();
        }
    });
    port
}

#[test]
fn a_hostile_reply_cannot_make_a_second_line() {
    let port = scripted_server(
        b"250-2.0.0 queued\r\n250 as 1\rFAKE status=sent exitcode=0 \x1b[2J'\\ \xe2\x80\xaeevil\r\n",
    );
    let home = TempDir::new().unwrap();
    let log = home.path().join("log.txt");
    send(home.path(), Route::Url(port))
        .args(["--from", "a@example.com", "--to", "b@example.com"])
        .args([
            "--subject",
            "x",
            "--body",
            "y",
            "--log",
            log.to_str().unwrap(),
        ])
        .expect_exit(0);
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text.matches('\n').count(), 1, "{text:?}");
    assert!(!text.contains('\r') && !text.contains('\x1b'), "{text:?}");
    assert!(
        !text.contains('\u{202e}'),
        "a bidi override got through: {text:?}"
    );
    let f = fields(text.trim_end());
    assert_eq!(f["status"], "sent", "{f:?}");
    assert_eq!(f["profile"], "--smtp-url", "{f:?}");
    assert_eq!(f["host"], "127.0.0.1", "{f:?}");
    // The reply's lines joined, its control characters made `?`, the quote and the
    // backslash escaped in the line and read back here; the bidi override spelled out.
    assert_eq!(
        f["smtpmsg"], "2.0.0 queued as 1?FAKE status=sent exitcode=0 ?[2J'\\ \\u{202e}evil",
        "{f:?}"
    );
}

#[test]
fn a_log_that_is_a_link_or_writable_by_others_is_refused_and_the_mail_still_goes() {
    let l = Logged::new(ServerOptions::default(), "");
    let victim = l.home().join("victim");
    std::fs::write(&victim, "keep\n").unwrap();
    std::os::unix::fs::symlink(&victim, &l.log).unwrap();
    let run = l
        .send()
        .args(["--to", "a@example.com", "--subject", "x", "--body", "y"])
        .expect_exit(0);
    assert!(
        run.stderr.contains("warning") && run.stderr.contains("symbolic link"),
        "{run}"
    );
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep\n");
    assert_eq!(l.server.messages().len(), 1, "sent all the same");
    // A batch says it once, not once per record.
    let records = l.home().join("r.jsonl");
    let record = "{\"To\":\"a@example.com\",\"Subject\":\"s\",\"Body\":\"b\"}\n";
    std::fs::write(&records, record.repeat(3)).unwrap();
    let run = envoi(l.home())
        .args(["batch", "--config", l.config.to_str().unwrap()])
        .arg(&records)
        .expect_exit(0);
    assert_eq!(run.stderr.matches("symbolic link").count(), 1, "{run}");
    assert_eq!(l.server.messages().len(), 4);

    std::fs::remove_file(&l.log).unwrap();
    std::fs::write(&l.log, "").unwrap();
    std::fs::set_permissions(&l.log, std::fs::Permissions::from_mode(0o666)).unwrap();
    let run = l
        .send()
        .args(["--to", "a@example.com", "--subject", "x", "--body", "y"])
        .expect_exit(0);
    assert!(run.stderr.contains("mode 666"), "{run}");
    assert_eq!(std::fs::read_to_string(&l.log).unwrap(), "");
}

#[test]
fn a_bad_log_key_is_a_configuration_error_before_anything_is_sent() {
    let l = Logged::new(ServerOptions::default(), "log_facility = \"mial\"");
    let run = l
        .send()
        .args(["--to", "a@example.com", "--subject", "x", "--body", "y"])
        .expect_exit(78);
    assert!(run.stderr.contains("log_facility"), "{run}");
    assert!(run.stderr.contains("local7"), "{run}");
    assert!(l.server.messages().is_empty());
}

/// A datagram socket of the test's, bound at `dir/name`, to stand at `/dev/log` or the
/// journal's socket for one envoi run.
fn listener(dir: &Path, name: &str) -> UnixDatagram {
    let socket = UnixDatagram::bind(dir.join(name)).expect("bind a datagram socket");
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    socket
}

/// A syslog daemon that stopped reading (its queue full) costs a batch one wait of a
/// second, not one a record: after the first wait runs out, later lines are dropped at
/// once (with one warning), and every message still goes.
#[test]
fn a_wedged_syslog_daemon_holds_up_a_batch_once_not_per_record() {
    if !namespaces::available() {
        return;
    }
    let l = Logged::new(ServerOptions::default(), "");
    let records = l.home().join("records.jsonl");
    // The kernel queues 10 datagrams (net.unix.max_dgram_qlen) for a reader that never
    // reads: 30 records would wait 20 seconds, a second each.
    let text: String = (0..30)
        .map(|i| format!("{{\"To\":\"r{i}@example.com\",\"Subject\":\"s\",\"Body\":\"b\"}}\n"))
        .collect();
    std::fs::write(&records, text).unwrap();
    let dev = l.home().join("dev");
    std::fs::create_dir(&dev).unwrap();
    let _never_read = listener(&dev, "log");
    let started = std::time::Instant::now();
    let run = in_namespace(
        l.home(),
        &[(dev.as_path(), "/dev")],
        &[
            "batch",
            "--config",
            l.config.to_str().unwrap(),
            "--log",
            "syslog",
            records.to_str().unwrap(),
        ],
        "",
    )
    .expect(0);
    let took = started.elapsed();
    assert_eq!(l.server.messages().len(), 30);
    assert!(took < Duration::from_secs(8), "took {took:?}\n{run}");
    assert_eq!(
        run.stderr
            .matches("the delivery log was not written")
            .count(),
        1,
        "{run}"
    );
}

/// The datagrams waiting on `socket`.
fn received(socket: &UnixDatagram) -> Vec<String> {
    socket.set_nonblocking(true).unwrap();
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65_536];
    while let Ok(n) = socket.recv(&mut buf) {
        out.push(String::from_utf8(buf[..n].to_vec()).expect("UTF-8"));
    }
    socket.set_nonblocking(false).unwrap();
    out
}

/// `envoi ARGS` in a mount namespace of its own where each `(folder, target)` folder of
/// the test is bind-mounted over `target` (`/dev`, `/run`): the syslog and journal
/// sockets it finds there are the test's.
fn in_namespace(home: &Path, mounts: &[(&Path, &str)], args: &[&str], stdin: &str) -> Run {
    let mut script = String::new();
    let mut command = Command::new("unshare");
    command.args(["-m", "sh", "-c"]);
    for (i, (_, target)) in mounts.iter().enumerate() {
        script.push_str(&format!("mount --bind \"${}\" {target} && ", i + 1));
    }
    script.push_str(&format!("shift {} && exec \"$@\"", mounts.len()));
    command.arg(script).arg("sh");
    for (folder, _) in mounts {
        command.arg(folder);
    }
    command
        .arg(assert_cmd::cargo::cargo_bin("envoi"))
        .args(args)
        .env_clear()
        .envs(hermetic_env(home))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn().expect("run unshare");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    Run::new(
        format!("envoi {args:?} (in a namespace)"),
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `<PRI>envoi[PID]: line` → (PRI, line).
#[track_caller]
fn syslog_parts(datagram: &str) -> (u16, String) {
    let (pri, rest) = datagram[1..].split_once('>').expect("<PRI>");
    let (tag, line) = rest.split_once(": ").expect("tag: line");
    let pid = tag
        .strip_prefix("envoi[")
        .and_then(|t| t.strip_suffix(']'))
        .expect("envoi[PID]");
    assert!(pid.parse::<u32>().is_ok(), "{datagram}");
    (pri.parse().expect("a number"), line.to_owned())
}

#[test]
fn syslog_gets_one_datagram_per_message_at_dev_log() {
    if !namespaces::available() {
        return;
    }
    let l = Logged::new(
        ServerOptions {
            refuse_rcpt: vec![("refused@example.com".into(), 550)],
            ..ServerOptions::default()
        },
        "",
    );
    // The profile's file log gives way to syslog, with the file's top-level facility.
    let config = l.config.to_str().unwrap();
    let dev = l.home().join("dev");
    std::fs::create_dir(&dev).unwrap();
    let syslog = listener(&dev, "log");
    let mounts = [(dev.as_path(), "/dev")];
    let send_args = |to: &'static str| {
        vec![
            "send",
            "--config",
            config,
            "--retries",
            "0",
            "--log",
            "syslog",
            "--to",
            to,
            "--subject",
            "s",
            "--body",
            "b",
        ]
    };
    in_namespace(l.home(), &mounts, &send_args("a@example.com"), "").expect(0);
    in_namespace(l.home(), &mounts, &send_args("refused@example.com"), "").expect(67);
    in_namespace(
        l.home(),
        &mounts,
        &[
            "sendmail",
            "--config",
            config,
            "--log",
            "syslog",
            "c@example.com",
        ],
        "Subject: cron\n\nout\n",
    )
    .expect(0);
    let datagrams = received(&syslog);
    assert_eq!(datagrams.len(), 3, "{datagrams:?}");
    let messages = l.server.messages();
    let (pri, line) = syslog_parts(&datagrams[0]);
    assert_eq!(pri, 2 * 8 + 6, "mail.info: {}", datagrams[0]);
    assert_line_of(&fields(&line), &messages[0], "sent");
    assert!(!fields(&line).contains_key("time"), "syslog stamps its own");
    let (pri, line) = syslog_parts(&datagrams[1]);
    assert_eq!(pri, 2 * 8 + 3, "mail.err: {}", datagrams[1]);
    assert_eq!(fields(&line)["exitcode"], "67");
    let (pri, line) = syslog_parts(&datagrams[2]);
    assert_eq!(pri, 2 * 8 + 6);
    assert_line_of(&fields(&line), &messages[1], "sent");
    assert!(!l.log.exists(), "--log syslog won over the profile's file");

    // The profile's facility, and a batch and a flush through the profile's own key.
    let home2 = TempDir::new().unwrap();
    let config2 = Config::new(l.server.port(), "none")
        .line("log = \"syslog\"\nlog_facility = \"local3\"")
        .write(home2.path());
    let records = home2.path().join("r.jsonl");
    std::fs::write(
        &records,
        "{\"To\":\"d@example.com\",\"Subject\":\"s\",\"Body\":\"b\"}\n",
    )
    .unwrap();
    let config2 = config2.to_str().unwrap();
    in_namespace(
        home2.path(),
        &mounts,
        &["batch", "--config", config2, records.to_str().unwrap()],
        "",
    )
    .expect(0);
    let datagrams = received(&syslog);
    assert_eq!(datagrams.len(), 1, "{datagrams:?}");
    let (pri, line) = syslog_parts(&datagrams[0]);
    assert_eq!(pri, 19 * 8 + 6, "local3.info: {}", datagrams[0]);
    assert_line_of(&fields(&line), &l.server.messages()[2], "sent");
}

#[test]
fn the_journal_gets_native_fields_and_syslog_takes_over_when_it_is_absent() {
    if !namespaces::available() {
        return;
    }
    let l = Logged::new(ServerOptions::default(), "");
    let config = l.config.to_str().unwrap();
    let run_dir = l.home().join("run");
    std::fs::create_dir_all(run_dir.join("systemd/journal")).unwrap();
    let journal = listener(&run_dir.join("systemd/journal"), "socket");
    let args = [
        "send",
        "--config",
        config,
        "--log",
        "journal",
        "--to",
        "a@example.com",
        "--subject",
        "s",
        "--body",
        "b",
    ];
    in_namespace(l.home(), &[(run_dir.as_path(), "/run")], &args, "").expect(0);
    let datagrams = received(&journal);
    assert_eq!(datagrams.len(), 1, "{datagrams:?}");
    let native: BTreeMap<&str, &str> = datagrams[0]
        .lines()
        .map(|l| l.split_once('=').expect("KEY=value"))
        .collect();
    let message = &l.server.messages()[0];
    assert_eq!(native["PRIORITY"], "6");
    assert_eq!(native["SYSLOG_FACILITY"], "2");
    assert_eq!(native["SYSLOG_IDENTIFIER"], "envoi");
    assert_eq!(native["ENVOI_STATUS"], "sent");
    assert_eq!(native["ENVOI_MESSAGE_ID"], header(message, "Message-ID"));
    assert_eq!(native["ENVOI_MAILSIZE"], message.data.len().to_string());
    assert_eq!(native["ENVOI_EXITCODE"], "0");
    assert_line_of(&fields(native["MESSAGE"]), message, "sent");

    // No journal: syslog, said once.
    let empty_run = l.home().join("empty-run");
    let dev = l.home().join("dev");
    std::fs::create_dir_all(&empty_run).unwrap();
    std::fs::create_dir_all(&dev).unwrap();
    let syslog = listener(&dev, "log");
    let run = in_namespace(
        l.home(),
        &[(empty_run.as_path(), "/run"), (dev.as_path(), "/dev")],
        &args,
        "",
    )
    .expect(0);
    assert_eq!(run.stderr.matches("no journal socket").count(), 1, "{run}");
    let datagrams = received(&syslog);
    assert_eq!(datagrams.len(), 1, "{datagrams:?}");
    assert_line_of(
        &fields(&syslog_parts(&datagrams[0]).1),
        &l.server.messages()[1],
        "sent",
    );
}

#[test]
fn a_send_its_watchdog_ends_at_the_deadline_still_logs() {
    if !namespaces::available() {
        return;
    }
    // A name server that never answers: looking up the relay's name hangs, which only
    // the watchdog ends (std cannot interrupt getaddrinfo).
    let silent = std::net::UdpSocket::bind("127.0.0.77:53").expect("bind 127.0.0.77:53");
    let home = TempDir::new().unwrap();
    let resolv = home.path().join("resolv.conf");
    std::fs::write(
        &resolv,
        "nameserver 127.0.0.77\noptions timeout:30 attempts:1\n",
    )
    .unwrap();
    let log = home.path().join("log.txt");
    let started = std::time::Instant::now();
    let run = in_namespace(
        home.path(),
        &[(resolv.as_path(), "/etc/resolv.conf")],
        &[
            "send",
            "--smtp-url",
            "smtp://relay.hangs.example:25?security=none",
            "--timeout",
            "1",
            "--retries",
            "0",
            "--from",
            "a@example.com",
            "--to",
            "b@example.com",
            "--subject",
            "x",
            "--body",
            "y",
            "--log",
            log.to_str().unwrap(),
        ],
        "",
    )
    .expect(75);
    assert!(started.elapsed() < Duration::from_secs(20), "{run}");
    let lines = lines(&log);
    assert_eq!(lines.len(), 1, "{lines:?}\n{run}");
    let f = fields(&lines[0]);
    assert_eq!(f["status"], "deferred", "{f:?}");
    assert_eq!(f["exitcode"], "75", "{f:?}");
    assert_eq!(f["host"], "relay.hangs.example", "{f:?}");
    // The watchdog's words: the lookup itself never ended.
    assert!(
        f["errormsg"].contains("the deadline (--timeout) passed while"),
        "{f:?}"
    );
    drop(silent);
}

#[test]
fn a_server_that_echoes_the_password_gets_it_into_no_log() {
    let port = scripted_server(b"250 ok\r\n");
    let home = TempDir::new().unwrap();
    let log = home.path().join("log.txt");
    let config = Config::new(port, "none")
        .login()
        .line("allow_plaintext_auth = true")
        .line(&format!("log = \"{}\"", log.display()))
        .write(home.path());
    let run = send(home.path(), Route::Config(&config))
        .args([
            "--to",
            "b@example.com",
            "--subject",
            "x",
            "--body",
            "y",
            "--retries",
            "0",
        ])
        .args(["-v"])
        .expect_exit(77);
    let text = std::fs::read_to_string(&log).unwrap();
    let f = fields(text.trim_end());
    assert_eq!(f["status"], "failed", "{f:?}");
    assert!(f["errormsg"].contains("535 5.7.8 [redacted]"), "{f:?}");
    assert_no_secret(&text);
    assert_no_secret(&run.output());
}

/// After a login, the reply to the final dot, and a reply that is not SMTP at all, are
/// read through the same redaction as every other: an echoed password reaches neither
/// stderr, `-v` nor the log.
#[test]
fn a_password_echoed_after_the_message_gets_into_no_log() {
    for (reply, status) in [
        (format!("250 2.0.0 queued for {PASSWORD}\r\n"), "sent"),
        (
            format!("Error: {PASSWORD} is a fine password\r\n"),
            "unknown",
        ),
    ] {
        let port = hostile_server(true, reply.into_bytes());
        let home = TempDir::new().unwrap();
        let log = home.path().join("log.txt");
        let config = Config::new(port, "none")
            .login()
            .line("allow_plaintext_auth = true")
            .line(&format!("log = \"{}\"", log.display()))
            .write(home.path());
        let run = send(home.path(), Route::Config(&config))
            .args(["--to", "b@example.com", "--subject", "x", "--body", "y"])
            .args(["--retries", "0", "-v"])
            .output()
            .unwrap();
        let text = std::fs::read_to_string(&log).unwrap();
        assert_eq!(fields(text.trim_end())["status"], status, "{text}");
        assert_no_secret(&text);
        assert_no_secret(&String::from_utf8_lossy(&run.stderr));
        assert_no_secret(&String::from_utf8_lossy(&run.stdout));
    }
}

#[test]
fn config_show_says_where_the_log_goes_and_why() {
    let l = Logged::new(ServerOptions::default(), "log_facility = \"local1\"");
    let show = |var: Option<&str>| {
        let mut cmd = envoi(l.home());
        if let Some(value) = var {
            cmd.env("ENVOI_LOG", value);
        }
        let run = cmd
            .args(["config", "show", "--config", l.config.to_str().unwrap()])
            .expect_exit(0);
        run.stdout
            .lines()
            .find(|line| line.starts_with("log "))
            .unwrap_or_else(|| panic!("no log row\n{run}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(show(None), format!("log {} config file", l.log.display()));
    assert_eq!(
        show(Some("syslog")),
        "log syslog (facility local1) $ENVOI_LOG"
    );
}

#[test]
fn lines_written_at_once_never_mix() {
    let l = Logged::new(ServerOptions::default(), "");
    // Four senders of one batch, and three envoi processes, all appending at once.
    let records = l.home().join("r.jsonl");
    let text: String = (0..40)
        .map(|i| format!("{{\"To\":\"r{i}@example.com\",\"Subject\":\"s{i}\",\"Body\":\"{i}\"}}\n"))
        .collect();
    std::fs::write(&records, text).unwrap();
    let mut batch = std::process::Command::new(assert_cmd::cargo::cargo_bin("envoi"));
    batch
        .env_clear()
        .envs(hermetic_env(l.home()))
        .args(["batch", "--concurrency", "4", "--config"])
        .arg(&l.config)
        .arg(&records)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut children = vec![batch.spawn().unwrap()];
    for i in 0..3 {
        let mut one = std::process::Command::new(assert_cmd::cargo::cargo_bin("envoi"));
        one.env_clear()
            .envs(hermetic_env(l.home()))
            .args(["send", "--config"])
            .arg(&l.config)
            .args([
                "--to",
                &format!("p{i}@example.com"),
                "--subject",
                "p",
                "--body",
                "b",
            ]);
        children.push(one.spawn().unwrap());
    }
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
    let messages = l.server.messages();
    assert_eq!(messages.len(), 43);
    let lines = lines(&l.log);
    assert_eq!(lines.len(), 43, "{lines:?}");
    for line in &lines {
        let f = fields(line);
        let message = messages
            .iter()
            .find(|m| m.rcpt_to.join(",") == f["recipients"])
            .unwrap_or_else(|| panic!("a line of no message: {line}"));
        assert_line_of(&f, message, "sent");
    }
}
