//! Files attached by path are streamed from their files when the message is written
//! (issue 10): they arrive whole, sized to the octet, and a file that changed after the
//! message was built is never half sent.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use envoi::deliver::{DeliveryOptions, Notice, Observer, deliver};
use envoi::message::{AttachedFile, AttachmentData};
use envoi::profile::profile_from_url;
use envoi::{Attachment, Body, Email, Error, ErrorKind, Importance, Mailbox};
use mail_parser::{MessageParser, MimeHeaders};
use tempfile::TempDir;

use crate::support::envoi::{ExpectExit, Route, send};
use crate::support::smtp_server::{ServerOptions, TestServer};

/// `len` bytes that do not repeat in any short period (so a misplaced chunk shows).
fn noise(len: usize) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(10);
    (0..len).map(|_| rng.u8(..)).collect()
}

/// The first attachment of `message`, decoded.
fn attachment_of(message: &[u8]) -> (String, Vec<u8>) {
    let parsed = MessageParser::default().parse(message).expect("a message");
    let part = parsed.attachments().next().expect("an attachment");
    (
        part.attachment_name().unwrap_or_default().to_owned(),
        part.contents().to_vec(),
    )
}

/// A base64 body, decoded.
fn base64_body(raw: &[u8]) -> Vec<u8> {
    use base64::Engine as _;
    let compact: Vec<u8> = raw
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact)
        .expect("base64")
}

/// Several chunks of the streaming reader, and a last one cut short.
const BIG: usize = 3 * 65550 + 1234;

/// A file of several chunks reaches the server decoded to its very bytes, the SIZE
/// announced is the length of what was sent, and the dry run (text and `--json`) shows
/// the same message.
#[test]
fn a_large_file_arrives_whole_and_sized() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("data.bin");
    let data = noise(BIG);
    std::fs::write(&path, &data).unwrap();
    let server = TestServer::start(ServerOptions {
        ehlo_extra: vec!["SIZE 100000000".into()],
        ..ServerOptions::default()
    });
    let run = |extra: &[&str]| {
        send(dir.path(), Route::Url(server.port()))
            .args(["--from", "s@example.com", "--to", "r@example.net"])
            .args(["--subject", "big", "--body", "see attached"])
            .arg("--attach")
            .arg(&path)
            .args(extra)
            .expect_exit(0)
    };
    run(&[]);
    let messages = server.messages();
    assert_eq!(messages.len(), 1);
    let m = &messages[0];
    assert_eq!(
        attachment_of(&m.data),
        ("data.bin".to_owned(), data.clone())
    );
    let size = format!("SIZE={}", m.data.len());
    assert!(
        m.mail_params.contains(&size),
        "{:?} not {size}",
        m.mail_params
    );

    let shown = run(&["--dry-run"]).output();
    assert_eq!(attachment_of(shown.as_bytes()).1, data);
    let json = run(&["--dry-run", "--json"]).json();
    let message = json["message"].as_str().expect("the message in the JSON");
    assert_eq!(attachment_of(message.as_bytes()).1, data);
    assert_eq!(server.messages().len(), 1, "a dry run sent something");
}

/// Says nothing: the test looks at the outcome.
struct Quiet;

impl Observer for Quiet {
    fn notice(&mut self, _notice: Notice) {}
}

fn email_with(path: &Path) -> Email {
    Email {
        from: None,
        to: vec!["r@example.net".parse().unwrap()],
        cc: vec![],
        bcc: vec![],
        reply_to: vec![],
        subject: "big".into(),
        body: Body {
            content: "see attached".into(),
            is_html: false,
            text_alternative: None,
        },
        importance: Importance::Normal,
        attachments: vec![Attachment {
            file_name: "data.bin".into(),
            content_type: "application/octet-stream".parse().unwrap(),
            data: AttachmentData::File(AttachedFile::open("--attach", path).unwrap()),
            content_id: None,
        }],
        headers: vec![],
        read_receipt: None,
        delivery_receipt: None,
    }
}

fn smtp_url(server: &TestServer) -> String {
    format!("smtp://127.0.0.1:{}?security=none", server.port())
}

/// The send failed with 66 naming the changed file and saying `not_sent`, and the
/// server, its connection closed, got no message.
fn assert_not_sent(error: &Error, not_sent: &str, server: &TestServer) {
    assert_eq!(error.kind(), ErrorKind::NoInput, "{error}");
    for words in ["data.bin", "changed after the message was built", not_sent] {
        assert!(
            error.message().contains(words),
            "{words:?} missing: {error}"
        );
    }
    assert!(
        server.wait_idle(Duration::from_secs(5)),
        "the connection stays open"
    );
    assert!(server.messages().is_empty(), "a message was delivered");
}

/// A file cut short between building the message and sending it: the transaction is
/// given up before MAIL FROM (the SIZE to announce is no longer true), nothing reaches
/// the server, and the error names the file (66, not retried).
#[test]
fn a_file_that_shrank_before_sending_stops_the_transaction() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("data.bin");
    std::fs::write(&path, noise(BIG)).unwrap();
    let server = TestServer::start(ServerOptions::default());
    let from: Mailbox = "s@example.com".parse().unwrap();
    let prepared = envoi::message::build(email_with(&path), &from, SystemTime::now()).unwrap();
    std::fs::write(&path, noise(BIG / 2)).unwrap();

    let profile = profile_from_url(&smtp_url(&server)).unwrap();
    let failure = deliver(&profile, prepared, &DeliveryOptions::default(), &mut Quiet)
        .expect_err("sent a file that changed");
    assert_not_sent(&failure.error, "was not sent", &server);
    let transcript = server.transcript();
    assert!(
        !transcript.iter().any(|l| l.starts_with("MAIL")),
        "a transaction began: {transcript:?}"
    );
    assert_eq!(server.connections(), 1, "retried");
}

/// A file cut short after DATA was sent (the server, slow to answer, has the DATA
/// command; the test waits for it there, then truncates the file): envoi never sends the
/// final dot and closes the connection, so the server delivers nothing; the error names
/// the file and says the message was not sent (66, not "outcome unknown", not retried).
#[test]
fn a_file_that_shrank_during_data_is_never_half_sent() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("data.bin");
    std::fs::write(&path, noise(BIG)).unwrap();
    let server = TestServer::start(ServerOptions {
        delay_replies: Some(Duration::from_millis(300)),
        ..ServerOptions::default()
    });
    let from: Mailbox = "s@example.com".parse().unwrap();
    let prepared = envoi::message::build(email_with(&path), &from, SystemTime::now()).unwrap();
    let profile = profile_from_url(&smtp_url(&server)).unwrap();
    let sending = std::thread::spawn(move || {
        deliver(&profile, prepared, &DeliveryOptions::default(), &mut Quiet).map(|_| ())
    });
    let waited = Instant::now();
    while !server.transcript().iter().any(|l| l == "DATA") {
        assert!(waited.elapsed() < Duration::from_secs(20), "no DATA came");
        std::thread::sleep(Duration::from_millis(5));
    }
    std::fs::write(&path, noise(BIG / 2)).unwrap();

    let error = sending
        .join()
        .unwrap()
        .expect_err("sent a file that changed")
        .error;
    assert_not_sent(
        &error,
        "was not sent: the connection was closed before its end",
        &server,
    );
    assert!(server.unacknowledged().is_empty(), "the final dot was sent");
    assert_eq!(server.connections(), 1, "retried");
}

/// A text file attached without a type gets the type its name implies and
/// `charset=utf-8` when it is UTF-8 — also when a character straddles the reader's
/// chunks — and no charset when it is not (a wrong one would garble it); a type given
/// with `--attach-type` is sent as given.
#[test]
fn a_text_attachment_says_its_charset_only_when_it_is_utf8() {
    let dir = TempDir::new().unwrap();
    // "é" is two bytes: one ends the first 65,550-byte chunk, the other starts the next.
    let mut utf8 = vec![b'a'; 65549];
    utf8.extend_from_slice("é crème brûlée\n".as_bytes());
    std::fs::write(dir.path().join("app.log"), &utf8).unwrap();
    let latin1 = b"cr\xe8me br\xfbl\xe9e\n".to_vec();
    std::fs::write(dir.path().join("latin1.txt"), &latin1).unwrap();
    std::fs::write(dir.path().join("given.csv"), "a,é\n").unwrap();
    let server = TestServer::start(ServerOptions::default());
    send(dir.path(), Route::Url(server.port()))
        .args(["--from", "s@example.com", "--to", "r@example.net"])
        .args(["--subject", "logs", "--body", "see attached"])
        .arg("--attach")
        .arg(dir.path().join("app.log"))
        .arg("--attach")
        .arg(dir.path().join("latin1.txt"))
        .arg("--attach")
        .arg(dir.path().join("given.csv"))
        .args(["--attach-type", "text/csv"])
        .expect_exit(0);
    let messages = server.messages();
    let parsed = MessageParser::default()
        .parse(&messages[0].data)
        .expect("a message");
    let types: Vec<(String, String, Option<String>, bool)> = parsed
        .attachments()
        .zip([utf8, latin1, "a,é\n".into()])
        .map(|(part, sent)| {
            let ct = part.content_type().expect("a Content-Type");
            (
                part.attachment_name().unwrap_or_default().to_owned(),
                format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or_default()),
                ct.attribute("charset").map(str::to_owned),
                // The base64 as sent, decoded here: a parser turns text into UTF-8.
                base64_body(
                    &messages[0].data
                        [part.raw_body_offset() as usize..part.raw_end_offset() as usize],
                ) == sent,
            )
        })
        .collect();
    assert_eq!(
        types,
        [
            (
                "app.log".into(),
                "text/plain".into(),
                Some("utf-8".into()),
                true
            ),
            ("latin1.txt".into(), "text/plain".into(), None, true),
            ("given.csv".into(), "text/csv".into(), None, true),
        ]
    );
}
