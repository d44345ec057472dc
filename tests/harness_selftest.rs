//! Self-test of the in-process SMTP harness (`tests/support`), using lettre as the client.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Certificate, CertificateStore, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{Message, SmtpTransport, Transport};

use support::certs::TestPki;
use support::smtp_server::{Security, ServerOptions, TestServer};

const USER: &str = "harness-user";
const PASSWORD: &str = "canary-pw-7Qx2";
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
    // "\0harness-user\0canary-pw-7Qx2"
    assert!(
        c.send("AUTH PLAIN AGhhcm5lc3MtdXNlcgBjYW5hcnktcHctN1F4Mg==\r\n")
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
