//! Self-test of the in-process SMTP harness (`tests/it/support`), using lettre as the client.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use lettre::address::Envelope;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{
    Certificate, CertificateStore, SmtpConnection, Tls, TlsParameters,
};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
use lettre::transport::smtp::extension::{ClientId, Extension};
use lettre::{Address, Message, SmtpTransport, Transport};

use crate::support::certs::TestPki;
use crate::support::smtp_server::{Security, ServerOptions, TestServer};
use crate::support::{PASSWORD, USER};

const IDLE: Duration = Duration::from_secs(5);

fn tls_params(pki: &TestPki) -> TlsParameters {
    let ca = Certificate::from_pem(pki.ca_pem().as_bytes()).expect("CA PEM parses");
    TlsParameters::builder("localhost".into())
        .certificate_store(CertificateStore::None)
        .add_root_certificate(ca)
        .build_rustls()
        .expect("TLS parameters")
}

/// A lettre transport for `server`; `tls` is `None` for plaintext.
fn transport(
    server: &TestServer,
    tls: Option<(Security, &TestPki)>,
    auth: Option<(&str, &str, Mechanism)>,
) -> SmtpTransport {
    let tls = match tls {
        None | Some((Security::Plain, _)) => Tls::None,
        Some((Security::StartTls, pki)) => Tls::Required(tls_params(pki)),
        Some((Security::ImplicitTls, pki)) => Tls::Wrapper(tls_params(pki)),
    };
    let mut builder = SmtpTransport::builder_dangerous("127.0.0.1")
        .port(server.port())
        .tls(tls)
        .hello_name(ClientId::Domain("client.test".into()))
        .timeout(Some(Duration::from_secs(5)));
    if let Some((user, pass, mechanism)) = auth {
        builder = builder
            .credentials(Credentials::new(user.into(), pass.into()))
            .authentication(vec![mechanism]);
    }
    builder.build()
}

fn message(to: &[&str]) -> Message {
    let mut builder = Message::builder()
        .from("Alice <alice@example.com>".parse().unwrap())
        .subject("Harness check")
        .header(ContentType::TEXT_PLAIN);
    for addr in to {
        builder = builder.to(addr.parse().unwrap());
    }
    builder
        .body(String::from("Hello.\r\n.leading dot\r\nBye.\r\n"))
        .unwrap()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn status(err: &lettre::transport::smtp::Error) -> Option<String> {
    err.status().map(|code| code.to_string())
}

/// A minimal line-based client for checks lettre cannot express.
struct RawClient {
    reader: BufReader<TcpStream>,
}

impl RawClient {
    /// Connects and returns the client with the greeting read.
    fn connect(server: &TestServer) -> (RawClient, String) {
        let stream = TcpStream::connect(("127.0.0.1", server.port())).unwrap();
        stream.set_read_timeout(Some(IDLE)).unwrap();
        let mut client = RawClient {
            reader: BufReader::new(stream),
        };
        let greeting = client.reply();
        (client, greeting)
    }

    /// Reads one (possibly multi-line) reply, lines joined with '\n'.
    fn reply(&mut self) -> String {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).unwrap();
            assert!(line.ends_with("\r\n"), "reply line without CRLF: {line:?}");
            let line = line.trim_end().to_owned();
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line);
            if last {
                return lines.join("\n");
            }
        }
    }

    /// Sends raw bytes (caller supplies line endings) and reads the reply.
    fn send(&mut self, bytes: &str) -> String {
        self.reader.get_mut().write_all(bytes.as_bytes()).unwrap();
        self.reply()
    }
}

#[test]
fn plain_delivery_records_envelope_data_and_transcript() {
    let server = TestServer::start(ServerOptions::default());
    transport(&server, None, None)
        .send(&message(&["bob@example.com", "Carol <carol@example.com>"]))
        .expect("plain send");
    assert!(server.wait_idle(IDLE));

    let messages = server.messages();
    assert_eq!(messages.len(), 1);
    let m = &messages[0];
    assert_eq!(m.mail_from, "alice@example.com");
    assert_eq!(m.rcpt_to, ["bob@example.com", "carol@example.com"]);
    assert!(contains(&m.data, b"Subject: Harness check\r\n"));
    // Dot-stuffing: doubled on the wire, single after mailin's un-stuffing.
    assert!(contains(&m.raw_data, b"\r\n..leading dot\r\n"));
    assert!(contains(&m.data, b"\r\n.leading dot\r\n"));
    assert!(!contains(&m.data, b"\r\n..leading dot"));
    // lettre always writes "\r\n.\r\n" after the message, so a body ending in CRLF arrives
    // with one extra empty line; the terminator itself is never part of data/raw_data.
    assert!(m.data.ends_with(b"Bye.\r\n\r\n") && m.raw_data.ends_with(b"Bye.\r\n\r\n"));
    assert_eq!(m.authenticated_as, None);
    assert!(!m.tls);

    assert_eq!(
        server.transcript(),
        [
            "EHLO client.test",
            "MAIL FROM:<alice@example.com>",
            "RCPT TO:<bob@example.com>",
            "RCPT TO:<carol@example.com>",
            "DATA",
            "QUIT",
        ]
    );
    assert_eq!(server.connections(), 1);
    assert!(server.errors().is_empty(), "{:?}", server.errors());
}

#[test]
fn starttls_with_auth_plain() {
    let pki = Arc::new(TestPki::new());
    let server = TestServer::start(ServerOptions {
        security: Security::StartTls,
        auth: Some((USER.into(), PASSWORD.into())),
        pki: Some(Arc::clone(&pki)),
        ..ServerOptions::default()
    });
    transport(
        &server,
        Some((Security::StartTls, &pki)),
        Some((USER, PASSWORD, Mechanism::Plain)),
    )
    .send(&message(&["bob@example.com"]))
    .expect("STARTTLS + AUTH PLAIN send");
    assert!(server.wait_idle(IDLE));

    let messages = server.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].authenticated_as.as_deref(), Some(USER));
    assert!(messages[0].tls);
    assert_eq!(messages[0].rcpt_to, ["bob@example.com"]);

    let transcript = server.transcript();
    let starttls = transcript.iter().position(|l| l == "STARTTLS").unwrap();
    let auth = transcript
        .iter()
        .position(|l| l.starts_with("AUTH PLAIN "))
        .unwrap();
    assert!(starttls < auth, "{transcript:?}");
    assert_eq!(transcript[0], "EHLO client.test");
    assert_eq!(transcript[starttls + 1], "EHLO client.test");
    assert!(server.errors().is_empty(), "{:?}", server.errors());
}

#[test]
fn implicit_tls_with_auth_login() {
    let pki = Arc::new(TestPki::new());
    let server = TestServer::start(ServerOptions {
        security: Security::ImplicitTls,
        auth: Some((USER.into(), PASSWORD.into())),
        pki: Some(Arc::clone(&pki)),
        ..ServerOptions::default()
    });
    transport(
        &server,
        Some((Security::ImplicitTls, &pki)),
        Some((USER, PASSWORD, Mechanism::Login)),
    )
    .send(&message(&["bob@example.com"]))
    .expect("implicit TLS + AUTH LOGIN send");
    assert!(server.wait_idle(IDLE));

    let messages = server.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].authenticated_as.as_deref(), Some(USER));
    assert!(messages[0].tls);
    assert!(contains(
        &messages[0].data,
        b"From: Alice <alice@example.com>\r\n"
    ));

    let transcript = server.transcript();
    assert!(transcript.iter().any(|l| l.starts_with("AUTH LOGIN")));
    assert!(!transcript.iter().any(|l| l == "STARTTLS"));
    assert!(server.errors().is_empty(), "{:?}", server.errors());
}

#[test]
fn wrong_password_is_535_and_nothing_is_delivered() {
    let pki = Arc::new(TestPki::new());
    let server = TestServer::start(ServerOptions {
        security: Security::StartTls,
        auth: Some((USER.into(), PASSWORD.into())),
        pki: Some(Arc::clone(&pki)),
        ..ServerOptions::default()
    });
    for mechanism in [Mechanism::Plain, Mechanism::Login] {
        let err = transport(
            &server,
            Some((Security::StartTls, &pki)),
            Some((USER, "wrong-password", mechanism)),
        )
        .send(&message(&["bob@example.com"]))
        .expect_err("wrong password must fail");
        assert_eq!(status(&err).as_deref(), Some("535"), "{mechanism:?}: {err}");
        assert!(err.is_permanent());
    }
    assert!(server.wait_idle(IDLE));
    assert!(server.messages().is_empty());
    assert!(!server.transcript().iter().any(|l| l.starts_with("MAIL")));
    assert_eq!(server.connections(), 2);
}

#[test]
fn refused_recipients_get_the_configured_code() {
    let server = TestServer::start(ServerOptions {
        refuse_rcpt: vec![
            ("gone@example.com".into(), 550),
            ("busy@example.com".into(), 450),
        ],
        ..ServerOptions::default()
    });
    let client = transport(&server, None, None);

    let err = client
        .send(&message(&["bob@example.com", "gone@example.com"]))
        .expect_err("550 recipient");
    assert_eq!(status(&err).as_deref(), Some("550"), "{err}");
    assert!(err.is_permanent());

    let err = client
        .send(&message(&["busy@example.com"]))
        .expect_err("450 recipient");
    assert_eq!(status(&err).as_deref(), Some("450"), "{err}");
    assert!(err.is_transient());
    assert!(server.messages().is_empty());

    client
        .send(&message(&["bob@example.com"]))
        .expect("accepted recipient");
    assert!(server.wait_idle(IDLE));
    let messages = server.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].rcpt_to, ["bob@example.com"]);
    assert_eq!(server.connections(), 3);
}

#[test]
fn untrusted_certificate_ends_the_connection_quietly() {
    let served = Arc::new(TestPki::new());
    let other = TestPki::new();
    let server = TestServer::start(ServerOptions {
        security: Security::ImplicitTls,
        pki: Some(served),
        ..ServerOptions::default()
    });
    let err = transport(&server, Some((Security::ImplicitTls, &other)), None)
        .send(&message(&["bob@example.com"]))
        .expect_err("certificate from an unknown CA must be rejected");
    assert!(status(&err).is_none(), "{err}");
    assert!(server.wait_idle(IDLE));
    assert!(server.messages().is_empty());
    assert!(server.transcript().is_empty());
    let errors = server.errors();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("TLS handshake failed"), "{errors:?}");
}

#[test]
fn starttls_not_advertised_makes_a_tls_requiring_client_give_up() {
    let pki = Arc::new(TestPki::new());
    let server = TestServer::start(ServerOptions {
        security: Security::StartTls,
        advertise_starttls: false,
        auth: Some((USER.into(), PASSWORD.into())),
        pki: Some(Arc::clone(&pki)),
        ..ServerOptions::default()
    });
    transport(
        &server,
        Some((Security::StartTls, &pki)),
        Some((USER, PASSWORD, Mechanism::Plain)),
    )
    .send(&message(&["bob@example.com"]))
    .expect_err("Tls::Required without STARTTLS must fail");
    assert!(server.wait_idle(IDLE));
    assert!(server.messages().is_empty());
    let transcript = server.transcript();
    assert!(
        !transcript.iter().any(|l| l.starts_with("AUTH")),
        "{transcript:?}"
    );
    assert!(
        !transcript.iter().any(|l| l == "STARTTLS"),
        "{transcript:?}"
    );
}

#[test]
fn raw_protocol_details() {
    // Plain + auth: AUTH is advertised (and usable) in plaintext; STARTTLS is not offered and
    // is refused even though mailin itself would accept it after EHLO.
    let server = TestServer::start(ServerOptions {
        auth: Some((USER.into(), PASSWORD.into())),
        ..ServerOptions::default()
    });
    let (mut c, greeting) = RawClient::connect(&server);
    assert!(greeting.starts_with("220 "), "{greeting}");
    let ehlo = c.send("EHLO raw.test\r\n");
    assert!(ehlo.starts_with("250-"), "{ehlo}");
    assert!(ehlo.contains("AUTH PLAIN LOGIN"), "{ehlo}");
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    assert!(c.send("STARTTLS\r\n").starts_with("454 "));
    assert!(c.send("EHLO raw.test\r\n").starts_with("250"));
    assert!(c.send("MAIL FROM:<a@example.com>\r\n").starts_with("503 "));
    assert!(c.send("NOOP\n").starts_with("500 "));
    let plain = base64::engine::general_purpose::STANDARD.encode(format!("\0{USER}\0{PASSWORD}"));
    assert!(
        c.send(&format!("AUTH PLAIN {plain}\r\n"))
            .starts_with("235 ")
    );
    assert!(c.send("MAIL FROM:<a@example.com>\r\n").starts_with("250 "));
    assert!(c.send("RCPT TO:<b@example.com>\r\n").starts_with("250 "));
    assert!(c.send("DATA\r\n").starts_with("354 "));
    let end = c.send("Subject: raw\r\n\r\nbare\nLF\r\n..x\r\n.\r\n");
    assert!(end.starts_with("250 "), "{end}");
    assert!(c.send("QUIT\r\n").starts_with("221 "));
    assert!(server.wait_idle(IDLE));

    let messages = server.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(
        messages[0].raw_data,
        b"Subject: raw\r\n\r\nbare\nLF\r\n..x\r\n"
    );
    assert_eq!(messages[0].data, b"Subject: raw\r\n\r\nbare\nLF\r\n.x\r\n");
    assert_eq!(messages[0].authenticated_as.as_deref(), Some(USER));
    assert!(!messages[0].tls);
    let transcript = server.transcript();
    assert!(transcript.iter().any(|l| l == "NOOP\n"), "{transcript:?}");
    assert_eq!(transcript.last().map(String::as_str), Some("QUIT"));
    assert!(
        !transcript
            .iter()
            .any(|l| l.contains("raw") && l.contains("Subject"))
    );
}

#[test]
fn dropping_the_server_stops_accepting() {
    let server = TestServer::start(ServerOptions::default());
    let port = server.port();
    // An idle open connection must not keep the drop waiting.
    let (_idle_client, _) = RawClient::connect(&server);
    drop(server);
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
}

// The fault injection knobs of `ServerOptions`, driven with lettre's low-level connection.

/// Short client timeout for the fault tests, so hangs cost little.
const SHORT: Duration = Duration::from_millis(400);

/// A lettre low-level connection (greeting read, EHLO sent) with the given read/write timeout.
fn smtp_connect(
    server: &TestServer,
    timeout: Duration,
) -> Result<SmtpConnection, lettre::transport::smtp::Error> {
    SmtpConnection::connect(
        ("127.0.0.1", server.port()),
        Some(timeout),
        &ClientId::Domain("client.test".into()),
        None,
        None,
    )
}

fn addr(s: &str) -> Address {
    s.parse().unwrap()
}

fn mail(from: &str) -> Mail {
    Mail::new(Some(addr(from)), vec![])
}

fn rcpt(to: &str) -> Rcpt {
    Rcpt::new(addr(to), vec![])
}

const BODY: &[u8] = b"Subject: fault\r\n\r\nHello.\r\n";

/// Runs MAIL, RCPT (each), DATA and the message on `conn`, returning the reply to the final
/// dot (as lettre reports it: Ok for 2xx/3xx, Err otherwise).
fn transaction(
    conn: &mut SmtpConnection,
    to: &[&str],
) -> Result<lettre::transport::smtp::response::Response, lettre::transport::smtp::Error> {
    conn.command(mail("alice@example.com"))?;
    for addr in to {
        conn.command(rcpt(addr))?;
    }
    conn.command(Data)?;
    conn.message(BODY)
}

fn code(
    result: Result<lettre::transport::smtp::response::Response, lettre::transport::smtp::Error>,
) -> Option<String> {
    match result {
        Ok(response) => Some(response.code().to_string()),
        Err(err) => status(&err),
    }
}

#[test]
fn fault_tempfail_transactions_counts_mail_across_connections() {
    let server = TestServer::start(ServerOptions {
        tempfail_transactions: 2,
        ..ServerOptions::default()
    });
    let client = transport(&server, None, None);
    for attempt in 1..=2 {
        let err = client
            .send(&message(&["bob@example.com"]))
            .expect_err("tempfailed attempt");
        assert_eq!(
            status(&err).as_deref(),
            Some("451"),
            "attempt {attempt}: {err}"
        );
        assert!(err.is_transient());
    }
    client
        .send(&message(&["bob@example.com"]))
        .expect("third attempt is accepted");
    assert!(server.wait_idle(IDLE));
    assert_eq!(server.messages().len(), 1);
    assert_eq!(server.connections(), 3);
    let mails = server
        .transcript()
        .into_iter()
        .filter(|l| l.starts_with("MAIL"))
        .count();
    assert_eq!(mails, 3);
}

#[test]
fn fault_tempfail_data_answers_the_final_dot_with_451() {
    let server = TestServer::start(ServerOptions {
        tempfail_data_transactions: 1,
        ..ServerOptions::default()
    });
    let mut conn = smtp_connect(&server, IDLE).expect("connect");
    let first = transaction(&mut conn, &["bob@example.com"]);
    assert_eq!(code(first).as_deref(), Some("451"));
    assert!(server.messages().is_empty());
    // The session is back in its idle state: a second transaction on the same connection works.
    let second = transaction(&mut conn, &["bob@example.com"]);
    assert_eq!(code(second).as_deref(), Some("250"));
    conn.quit().expect("QUIT");
    assert!(server.wait_idle(IDLE));
    let messages = server.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(
        messages[0].data,
        BODY.iter().chain(b"\r\n").copied().collect::<Vec<_>>()
    );
    assert!(server.unacknowledged().is_empty());
}

#[test]
fn fault_max_rcpts_per_transaction_answers_452() {
    let server = TestServer::start(ServerOptions {
        max_rcpts_per_transaction: Some(2),
        ..ServerOptions::default()
    });
    let mut conn = smtp_connect(&server, IDLE).expect("connect");
    conn.command(mail("alice@example.com")).expect("MAIL");
    conn.command(rcpt("a@example.com")).expect("RCPT 1");
    conn.command(rcpt("b@example.com")).expect("RCPT 2");
    let err = conn.command(rcpt("c@example.com")).expect_err("RCPT 3");
    assert_eq!(status(&err).as_deref(), Some("452"), "{err}");
    conn.command(Data).expect("DATA");
    conn.message(BODY).expect("final dot");
    // The limit is per transaction.
    let next = transaction(&mut conn, &["c@example.com"]);
    assert_eq!(code(next).as_deref(), Some("250"));
    conn.quit().expect("QUIT");
    assert!(server.wait_idle(IDLE));
    let messages = server.messages();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0].rcpt_to, ["a@example.com", "b@example.com"]);
    assert_eq!(messages[1].rcpt_to, ["c@example.com"]);
}

#[test]
fn fault_silent_greeting_makes_the_client_time_out() {
    let server = TestServer::start(ServerOptions {
        silent_greeting: true,
        ..ServerOptions::default()
    });
    let started = Instant::now();
    let err = smtp_connect(&server, SHORT)
        .err()
        .expect("no greeting, no connection");
    assert!(started.elapsed() >= SHORT, "{err}");
    assert!(status(&err).is_none(), "{err}");
    // The client gave up and closed; the server notices and ends the connection.
    assert!(server.wait_idle(IDLE));
    assert_eq!(server.connections(), 1);
    assert!(server.transcript().is_empty());
}

#[test]
fn fault_hang_after_data_records_the_message_as_unacknowledged() {
    let server = TestServer::start(ServerOptions {
        hang_after_data: true,
        ..ServerOptions::default()
    });
    let mut conn = smtp_connect(&server, SHORT).expect("connect");
    let started = Instant::now();
    let result = transaction(&mut conn, &["bob@example.com"]);
    assert!(started.elapsed() >= SHORT);
    assert_eq!(code(result), None, "no reply to the final dot");
    drop(conn);
    assert!(server.wait_idle(IDLE));
    assert!(server.messages().is_empty());
    let unacked = server.unacknowledged();
    assert_eq!(unacked.len(), 1);
    assert_eq!(unacked[0].rcpt_to, ["bob@example.com"]);
    assert!(contains(&unacked[0].data, b"Hello.\r\n"));
}

#[test]
fn fault_drop_during_data_closes_without_delivering() {
    let server = TestServer::start(ServerOptions {
        drop_during_data: true,
        ..ServerOptions::default()
    });
    let err = transport(&server, None, None)
        .send(&message(&["bob@example.com"]))
        .expect_err("connection dropped mid-DATA");
    assert!(status(&err).is_none(), "{err}");
    assert!(server.wait_idle(IDLE));
    assert!(server.messages().is_empty());
    assert!(server.unacknowledged().is_empty());
    assert_eq!(server.transcript().last().map(String::as_str), Some("DATA"));
}

#[test]
fn fault_drop_after_final_dot_keeps_the_message_as_unacknowledged() {
    let server = TestServer::start(ServerOptions {
        drop_after_final_dot: true,
        ..ServerOptions::default()
    });
    let mut conn = smtp_connect(&server, IDLE).expect("connect");
    let started = Instant::now();
    let result = transaction(&mut conn, &["bob@example.com", "carol@example.com"]);
    assert_eq!(code(result), None, "no reply to the final dot");
    assert!(started.elapsed() < SHORT, "closed at once, not a hang");
    assert!(server.wait_idle(IDLE));
    assert!(server.messages().is_empty());
    let unacked = server.unacknowledged();
    assert_eq!(unacked.len(), 1);
    assert_eq!(unacked[0].mail_from, "alice@example.com");
    assert_eq!(unacked[0].rcpt_to, ["bob@example.com", "carol@example.com"]);
    assert!(contains(&unacked[0].data, b"Hello.\r\n"));
}

#[test]
fn fault_reply_421_at_a_command_closes_the_connection() {
    for verb in ["MAIL", "RCPT", "DATA"] {
        let server = TestServer::start(ServerOptions {
            reply_421_at: Some(verb),
            ..ServerOptions::default()
        });
        let err = transport(&server, None, None)
            .send(&message(&["bob@example.com"]))
            .expect_err("421");
        assert_eq!(status(&err).as_deref(), Some("421"), "{verb}: {err}");
        assert!(server.wait_idle(IDLE), "{verb}: connection closed");
        assert!(server.messages().is_empty());
        let transcript = server.transcript();
        let last = transcript.last().expect("transcript");
        assert!(last.starts_with(verb), "{verb}: {transcript:?}");
    }
    // Raw: the exact reply, then EOF.
    let server = TestServer::start(ServerOptions {
        reply_421_at: Some("ehlo"),
        ..ServerOptions::default()
    });
    let (mut c, _) = RawClient::connect(&server);
    assert_eq!(c.send("EHLO raw.test\r\n"), "421 4.3.2 shutting down");
    let mut rest = Vec::new();
    c.reader.read_to_end(&mut rest).expect("EOF after 421");
    assert!(rest.is_empty(), "{rest:?}");
}

#[test]
fn fault_inject_after_starttls_arrives_with_the_220() {
    let pki = Arc::new(TestPki::new());
    let injected = b"250-evil\r\n250 AUTH PLAIN\r\n";
    let server = TestServer::start(ServerOptions {
        security: Security::StartTls,
        pki: Some(pki),
        inject_after_starttls: Some(injected.to_vec()),
        ..ServerOptions::default()
    });
    let (mut c, _) = RawClient::connect(&server);
    assert!(c.send("EHLO raw.test\r\n").contains("STARTTLS"));
    // The client's own pipelined bytes after STARTTLS are still discarded by the server.
    c.reader
        .get_mut()
        .write_all(b"STARTTLS\r\nNOOP\r\n")
        .unwrap();
    let expected = [b"220 Ready to start TLS\r\n".as_slice(), injected].concat();
    let mut got = vec![0u8; expected.len()];
    c.reader
        .read_exact(&mut got)
        .expect("220 plus injected bytes");
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&expected)
    );
    drop(c);
    assert!(server.wait_idle(IDLE));
    assert_eq!(server.transcript(), ["EHLO raw.test", "STARTTLS"]);
}

#[test]
fn ehlo_extra_advertises_keywords_and_accepts_smtputf8() {
    let server = TestServer::start(ServerOptions {
        ehlo_extra: vec!["SMTPUTF8".into(), "SIZE 1000".into()],
        ..ServerOptions::default()
    });
    let (mut c, _) = RawClient::connect(&server);
    let ehlo = c.send("EHLO raw.test\r\n");
    // mailin's first EHLO line is "server offers extensions:", not the server name.
    assert!(
        ehlo.starts_with("250-server offers extensions:\n"),
        "{ehlo}"
    );
    assert!(ehlo.contains("\n250-8BITMIME\n"), "{ehlo}");
    assert!(ehlo.ends_with("\n250-SMTPUTF8\n250 SIZE 1000"), "{ehlo}");
    let mail_reply = c.send("MAIL FROM:<a@example.com> SIZE=10 BODY=8BITMIME\r\n");
    assert!(mail_reply.starts_with("250 "), "{mail_reply}");
    assert!(c.send("RSET\r\n").starts_with("250 "));
    // Parameters the server does not advertise are still mailin's 500.
    assert!(
        c.send("MAIL FROM:<a@example.com> RET=HDRS\r\n")
            .starts_with("500 ")
    );
    assert!(c.send("QUIT\r\n").starts_with("221 "));

    // lettre sees SMTPUTF8 and sends the parameters it implies.
    let mut conn = smtp_connect(&server, IDLE).expect("connect");
    assert!(conn.server_info().supports_feature(Extension::SmtpUtfEight));
    let envelope = Envelope::new(
        Some(addr("jösé@example.com")),
        vec![addr("bob@example.com")],
    )
    .unwrap();
    conn.send(&envelope, "Subject: ü\r\n\r\nGrüße\r\n".as_bytes())
        .expect("SMTPUTF8 + 8BITMIME send");
    conn.quit().expect("QUIT");
    assert!(server.wait_idle(IDLE));
    let messages = server.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].mail_from, "jösé@example.com");
    assert_eq!(messages[0].mail_params, ["SMTPUTF8", "BODY=8BITMIME"]);
    assert!(
        server
            .transcript()
            .contains(&"MAIL FROM:<jösé@example.com> SMTPUTF8 BODY=8BITMIME".to_owned())
    );

    // Without SMTPUTF8 advertised, mailin's behaviour is unchanged.
    let plain = TestServer::start(ServerOptions::default());
    let (mut c, _) = RawClient::connect(&plain);
    assert!(!c.send("EHLO raw.test\r\n").contains("SMTPUTF8"));
    assert!(
        c.send("MAIL FROM:<a@example.com> SMTPUTF8\r\n")
            .starts_with("500 ")
    );
    assert!(
        c.send("MAIL FROM:<a@example.com> BODY=8BITMIME\r\n")
            .starts_with("250 ")
    );
}

#[test]
fn fault_delay_replies_slows_every_reply() {
    let delay = Duration::from_millis(150);
    let server = TestServer::start(ServerOptions {
        delay_replies: Some(delay),
        ..ServerOptions::default()
    });
    let started = Instant::now();
    let mut conn = smtp_connect(&server, IDLE).expect("connect");
    // Greeting + EHLO.
    assert!(started.elapsed() >= 2 * delay);
    conn.quit().expect("QUIT");
    assert!(started.elapsed() >= 3 * delay);

    let err = smtp_connect(&server, Duration::from_millis(50))
        .err()
        .expect("greeting slower than the client timeout");
    assert!(status(&err).is_none(), "{err}");
    assert!(server.wait_idle(IDLE));
}

#[test]
fn dropping_the_server_ends_hangs_and_delays() {
    for opts in [
        ServerOptions {
            silent_greeting: true,
            ..ServerOptions::default()
        },
        ServerOptions {
            delay_replies: Some(Duration::from_secs(20)),
            ..ServerOptions::default()
        },
    ] {
        let server = TestServer::start(opts);
        let stream = TcpStream::connect(("127.0.0.1", server.port())).unwrap();
        stream.set_read_timeout(Some(IDLE)).unwrap();
        // Let the server start waiting.
        std::thread::sleep(Duration::from_millis(50));
        let started = Instant::now();
        drop(server);
        assert!(started.elapsed() < Duration::from_secs(2));
        let mut buf = [0u8; 16];
        let n = (&stream).read(&mut buf).expect("EOF, not a timeout");
        assert_eq!(n, 0, "nothing sent: {:?}", &buf[..n]);
    }
}
