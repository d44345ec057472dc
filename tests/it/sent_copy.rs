//! A copy in the Sent folder (issue 21, `sent_copy`): envoi sends to the in-process SMTP
//! server, then APPENDs the message to a real Dovecot on loopback
//! (`tests/it/support/dovecot.rs`). Assertions are on Dovecot's maildir files: the stored
//! bytes against those the SMTP server received, the `\Seen` flag in the file name (`:2,S`),
//! the folder it went to.

use std::sync::Arc;

use crate::dkim::{KeyKind, dkim_lines, make_key};
use crate::support::certs::TestPki;
use crate::support::dovecot::{Dovecot, DovecotOptions};
use crate::support::envoi::{Config, ExpectExit, Route, assert_no_secret, envoi, send};
use crate::support::mail_api::{GMAIL, MailApi, MailApiOptions};
use crate::support::smtp_server::{Security, ServerOptions, TestServer};
use crate::support::{PASSWORD, USER};
use tempfile::TempDir;

/// An SMTP server wanting the canary login over STARTTLS, a Dovecot with `folders` whose
/// passwd-file holds `imap_password` for the canary user, both serving one PKI's leaf, and a
/// temp HOME with that PKI's CA.
struct Servers {
    dir: TempDir,
    smtp: TestServer,
    dovecot: Dovecot,
    ca: std::path::PathBuf,
}

impl Servers {
    fn start(imap_password: &str, folders: Vec<(&str, Option<&str>)>) -> Option<Servers> {
        Servers::with(imap_password, folders, "", ServerOptions::default())
    }

    /// [`Servers::start`], the SMTP server with `opts` too.
    fn with(
        imap_password: &str,
        folders: Vec<(&str, Option<&str>)>,
        extra: &str,
        opts: ServerOptions,
    ) -> Option<Servers> {
        let pki = Arc::new(TestPki::new());
        let dovecot = Dovecot::start(
            &pki,
            DovecotOptions {
                login: (USER, imap_password),
                folders,
                extra,
            },
        )?;
        let dir = TempDir::new().expect("temp dir");
        let ca = pki.write_ca(dir.path());
        let smtp = TestServer::start(ServerOptions {
            security: Security::StartTls,
            auth: Some((USER.into(), PASSWORD.into())),
            pki: Some(pki),
            ..opts
        });
        Some(Servers {
            dir,
            smtp,
            dovecot,
            ca,
        })
    }

    /// The config: the SMTP profile, logging in, trusting the CA, with `extra` lines.
    fn config(&self, extra: &str) -> std::path::PathBuf {
        Config::new(self.smtp.port(), "starttls")
            .login()
            .trust(&self.ca)
            .line(extra)
            .write(self.dir.path())
    }

    /// The one message the SMTP server received: its bytes.
    fn received(&self) -> Vec<u8> {
        let messages = self.smtp.messages();
        assert_eq!(messages.len(), 1, "expected one message at the SMTP server");
        messages[0].data.clone()
    }
}

#[test]
fn a_sent_message_is_filed_in_the_named_folder_byte_identical_and_seen() {
    let Some(s) = Servers::start(PASSWORD, vec![("Sent", None)]) else {
        return;
    };
    // Signed, so the copy must be the signed bytes, not the message as built.
    let (key, _) = make_key(s.dir.path(), KeyKind::Ed25519);
    let config = s.config(&format!(
        "{}\nsent_copy = {{ imap = \"imaps://localhost:{}\", folder = \"Sent\" }}",
        dkim_lines(&key),
        s.dovecot.imaps_port()
    ));
    let run = send(s.dir.path(), Route::Config(&config))
        .args([
            "--to",
            "ann@example.net",
            "--subject",
            "Filed",
            "--body",
            "A line.\nAnd one more.",
        ])
        .arg("--json")
        .expect_exit(0);
    let json = run.json();
    assert_eq!(json["sent_copy"]["status"], "filed", "{run}");
    assert_eq!(json["sent_copy"]["folder"], "Sent", "{run}");
    assert!(json.get("warnings").is_none(), "{run}");
    let sent = s.received();
    assert!(sent.starts_with(b"DKIM-Signature: "), "not signed");
    let stored = s.dovecot.messages("Sent");
    assert_eq!(stored.len(), 1, "{stored:?}\n{}", s.dovecot.log());
    let (name, bytes) = &stored[0];
    assert_eq!(
        bytes,
        &sent,
        "the copy differs from what the SMTP server received:\n{}\n---\n{}",
        String::from_utf8_lossy(bytes),
        String::from_utf8_lossy(&sent)
    );
    assert!(name.ends_with(":2,S"), "not flagged \\Seen: {name}");
    assert!(s.dovecot.messages("INBOX").is_empty());
    assert_no_secret(&run.output());
}

#[test]
fn without_a_folder_the_one_marked_sent_is_found_over_starttls() {
    // "Sent" exists too, unmarked: the \Sent mark wins over the name.
    let Some(s) = Servers::start(PASSWORD, vec![("Gesendet", Some("\\Sent")), ("Sent", None)])
    else {
        return;
    };
    let config = s.config(&format!(
        "sent_copy = {{ imap = \"imap://localhost:{}\" }}",
        s.dovecot.imap_port()
    ));
    let run = send(s.dir.path(), Route::Config(&config))
        .args([
            "--to",
            "ann@example.net",
            "--subject",
            "Marked",
            "--body",
            "x",
        ])
        .arg("-v")
        .expect_exit(0);
    assert!(run.stderr.contains("C: imap: e2 STARTTLS"), "{run}");
    assert!(
        run.stderr.contains("AUTHENTICATE PLAIN [redacted]"),
        "{run}"
    );
    assert!(
        run.stderr.contains("sent_copy: filed in \"Gesendet\""),
        "{run}"
    );
    let stored = s.dovecot.messages("Gesendet");
    assert_eq!(stored.len(), 1, "{run}\n{}", s.dovecot.log());
    assert_eq!(stored[0].1, s.received());
    assert!(s.dovecot.messages("Sent").is_empty());
    assert_no_secret(&run.output());
}

#[test]
fn a_refused_imap_login_is_a_warning_and_the_send_stands() {
    let Some(s) = Servers::start("another-Passw0rd", vec![("Sent", Some("\\Sent"))]) else {
        return;
    };
    let config = s.config(&format!(
        "sent_copy = {{ imap = \"imaps://localhost:{}\" }}",
        s.dovecot.imaps_port()
    ));
    let run = send(s.dir.path(), Route::Config(&config))
        .args([
            "--to",
            "ann@example.net",
            "--subject",
            "Refused",
            "--body",
            "x",
        ])
        .args(["--json", "-v"])
        .expect_exit(0);
    let json = run.json();
    assert_eq!(json["status"], "sent", "{run}");
    assert_eq!(json["sent_copy"]["status"], "failed", "{run}");
    let warning = json["warnings"][0].as_str().unwrap_or_default();
    assert!(warning.contains("refused the login"), "{run}");
    assert!(
        run.stderr
            .contains("envoi: warning: the message was sent, but its copy in the Sent folder"),
        "{run}"
    );
    assert_eq!(s.smtp.messages().len(), 1, "the message was not delivered");
    assert!(s.dovecot.messages("Sent").is_empty());
    assert_no_secret(&run.output());
}

#[test]
fn the_delivery_log_says_where_the_copy_went() {
    let Some(s) = Servers::start(PASSWORD, vec![("Sent", Some("\\Sent"))]) else {
        return;
    };
    let log = s.dir.path().join("envoi.log");
    let config = s.config(&format!(
        "log = \"{}\"\nsent_copy = {{ imap = \"imaps://localhost:{}\" }}",
        log.display(),
        s.dovecot.imaps_port()
    ));
    send(s.dir.path(), Route::Config(&config))
        .args([
            "--to",
            "ann@example.net",
            "--subject",
            "Logged",
            "--body",
            "x",
        ])
        .expect_exit(0);
    let line = std::fs::read_to_string(&log).expect("the delivery log");
    assert!(line.contains(" status=sent "), "{line}");
    assert!(line.contains(" sent_copy=Sent "), "{line}");
}

/// The bearer token the loopback Gmail API server accepts.
const TOKEN: &str = "canary-api-token-5e92";

/// An OAuth2 introspection endpoint on loopback, plain HTTP, for Dovecot's `oauth2` passdb
/// (`introspection_mode = auth`): a GET with `Authorization: Bearer <token>` is answered
/// 200 `{"username": user}` for `token`, else 401. Its port, and the Authorization
/// headers it got.
fn introspection(
    token: &'static str,
    user: &'static str,
) -> (u16, Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let port = listener.local_addr().expect("local address").port();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    std::thread::spawn(move || {
        for peer in listener.incoming().flatten() {
            let mut reader = BufReader::new(&peer);
            let mut authorization = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(value) = line.strip_prefix("Authorization: ") {
                    authorization = value.trim().to_owned();
                }
            }
            let ok = authorization == format!("Bearer {token}");
            log.lock().expect("log").push(authorization);
            let (status, body) = if ok {
                ("200 OK", format!("{{\"username\":\"{user}\"}}"))
            } else {
                (
                    "401 Unauthorized",
                    "{\"error\":\"invalid_token\"}".to_owned(),
                )
            };
            let _ = (&peer).write_all(
                format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            );
        }
    });
    (port, seen)
}

/// A Gmail API profile (the loopback server of `support/mail_api.py`) whose `sent_copy`
/// points at a Dovecot that takes XOAUTH2 tokens (checked by [`introspection`]): `extra`
/// goes into the table. The copy's folder, the API's message, the run, and the tokens
/// the introspection endpoint was shown.
struct GmailRun {
    dovecot: Dovecot,
    api: MailApi,
    run: crate::support::envoi::Run,
    introspected: Vec<String>,
}

fn gmail_send(extra: &str) -> Option<GmailRun> {
    let pki = TestPki::new();
    let (port, seen) = introspection(TOKEN, GMAIL);
    let dir = TempDir::new().expect("temp dir");
    let oauth2_conf = dir.path().join("dovecot-oauth2.conf.ext");
    std::fs::write(
        &oauth2_conf,
        format!(
            "introspection_mode = auth\nintrospection_url = http://127.0.0.1:{port}/me\n\
             username_attribute = username\n"
        ),
    )
    .expect("write the oauth2 passdb config");
    let dovecot_extra = format!(
        "auth_mechanisms = plain xoauth2 oauthbearer\n\
         passdb {{\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n  args = {}\n}}\n",
        oauth2_conf.display()
    );
    let dovecot = Dovecot::start(
        &pki,
        DovecotOptions {
            login: (GMAIL, "not-the-token-0"),
            folders: vec![("Sent", Some("\\Sent"))],
            extra: &dovecot_extra,
        },
    )?;
    let ca = pki.write_ca(dir.path());
    let api = MailApi::start(MailApiOptions::new(pki.write_leaf(dir.path()), TOKEN))?;
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "default = \"api\"\n[profiles.api]\ntransport = \"gmail\"\nfrom = \"{GMAIL}\"\n\
             api_url = \"{}\"\nca_file = \"{}\"\ntimeout_secs = 10\ntoken_env = \"API_TOKEN\"\n\
             sent_copy = {{ imap = \"imaps://localhost:{}\"{extra} }}\n",
            api.gmail_url(),
            ca.display(),
            dovecot.imaps_port()
        ),
    )
    .expect("write the config");
    let run = envoi(dir.path())
        .env("API_TOKEN", TOKEN)
        .args(["send", "--config"])
        .arg(&config)
        .args(["--to", "ann@example.net", "--subject", "Via Gmail"])
        .args(["--body", "x", "-v"])
        .expect_exit(0);
    assert_eq!(api.sends().len(), 1, "{run}");
    let introspected = seen.lock().expect("log").clone();
    Some(GmailRun {
        dovecot,
        api,
        run,
        introspected,
    })
}

#[test]
fn gmail_files_its_own_copy_so_none_is_made_unless_forced_then_xoauth2_logs_in() {
    let Some(GmailRun {
        dovecot,
        run,
        introspected,
        ..
    }) = gmail_send("")
    else {
        return;
    };
    assert!(
        run.stderr
            .contains("sent_copy: not made: the Gmail API files what it sends in Sent itself"),
        "{run}"
    );
    assert!(
        !run.stderr.contains("imap:"),
        "an IMAP connection was made: {run}"
    );
    assert!(introspected.is_empty(), "{introspected:?}");
    assert!(dovecot.messages("Sent").is_empty());

    // Forced: the copy logs in with the profile's own token (XOAUTH2), which Dovecot
    // checks at the introspection endpoint, and files the bytes the API took.
    let Some(GmailRun {
        dovecot,
        api,
        run,
        introspected,
    }) = gmail_send(", force = true")
    else {
        return;
    };
    assert!(
        run.stderr.contains(" AUTHENTICATE XOAUTH2 [redacted]"),
        "{run}"
    );
    assert_eq!(introspected, [format!("Bearer {TOKEN}")], "{run}");
    let stored = dovecot.messages("Sent");
    assert_eq!(stored.len(), 1, "{run}\n{}", dovecot.log());
    let (_, sent) = api.only_accepted();
    assert_eq!(stored[0].1, sent, "the copy differs from what the API took");
    let xoauth2 = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("user={GMAIL}\x01auth=Bearer {TOKEN}\x01\x01"),
    );
    for secret in [TOKEN, xoauth2.as_str()] {
        assert!(!run.output().contains(secret), "the token leaked: {run}");
    }
}

#[test]
fn an_outbox_entry_is_copied_when_a_flush_delivers_it_and_not_before() {
    let Some(s) = Servers::with(
        PASSWORD,
        vec![("Sent", Some("\\Sent"))],
        "",
        ServerOptions {
            tempfail_transactions: 1,
            ..ServerOptions::default()
        },
    ) else {
        return;
    };
    let outbox = s.dir.path().join("outbox");
    let config = s.config(&format!(
        "outbox_dir = \"{}\"\nsent_copy = {{ imap = \"imaps://localhost:{}\" }}",
        outbox.display(),
        s.dovecot.imaps_port()
    ));
    let run = send(s.dir.path(), Route::Config(&config))
        .args([
            "--to",
            "ann@example.net",
            "--subject",
            "Queued",
            "--body",
            "x",
        ])
        .args(["--queue", "--json"])
        .expect_exit(0);
    assert_eq!(run.json()["status"], "queued", "{run}");
    assert!(run.json().get("sent_copy").is_none(), "{run}");
    assert!(
        s.dovecot.messages("Sent").is_empty(),
        "copied before it was sent"
    );

    let flush = send_flush(&s, &config);
    assert!(
        flush.stderr.contains("sent_copy: filed in \"Sent\""),
        "{flush}"
    );
    let stored = s.dovecot.messages("Sent");
    assert_eq!(stored.len(), 1, "{flush}\n{}", s.dovecot.log());
    assert_eq!(
        stored[0].1,
        s.received(),
        "the copy differs from what was sent"
    );
    assert_no_secret(&flush.output());
}

/// `envoi outbox flush --all -v` with the canary password, as `send` has it.
fn send_flush(s: &Servers, config: &std::path::Path) -> crate::support::envoi::Run {
    envoi(s.dir.path())
        .env("ENVOI_TEST_PASSWORD", PASSWORD)
        .args(["outbox", "flush", "--all", "-v", "--config"])
        .arg(config)
        .expect_exit(0)
}

/// A hostile IMAP server on loopback: it greets with `greeting` (plain text, as on an
/// `imap://` port), then holds the connection open, saying nothing more, for 30 s. Its port.
fn hostile_imap(greeting: &'static [u8]) -> u16 {
    hostile_imap_sending(greeting.to_vec())
}

/// [`hostile_imap`] with a greeting made at run time.
fn hostile_imap_sending(greeting: Vec<u8>) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let port = listener.local_addr().expect("local address").port();
    std::thread::spawn(move || {
        if let Ok((mut peer, _)) = listener.accept() {
            let _ = std::io::Write::write_all(&mut peer, &greeting);
            std::thread::sleep(std::time::Duration::from_secs(30));
        }
    });
    port
}

/// An SMTP server that takes the message, and a config whose copy goes to `imap_port`.
fn with_hostile_imap(imap_port: u16) -> (TempDir, TestServer, std::path::PathBuf) {
    let dir = TempDir::new().expect("temp dir");
    // Plain SMTP with a login (allowed for the test): the copy needs the profile's login.
    let smtp = TestServer::start(ServerOptions {
        auth: Some((USER.into(), PASSWORD.into())),
        ..ServerOptions::default()
    });
    let config = Config::new(smtp.port(), "none")
        .line(&format!(
            "username = \"{USER}\"\npassword_env = \"ENVOI_TEST_PASSWORD\"\n\
             allow_plaintext_auth = true\n\
             sent_copy = {{ imap = \"imap://127.0.0.1:{imap_port}\", folder = \"Sent\" }}"
        ))
        .write(dir.path());
    (dir, smtp, config)
}

#[test]
fn a_silent_imap_server_cannot_stretch_the_send_past_its_deadline() {
    // A greeting, then silence: CAPABILITY is never answered, and the profile's per-command
    // timeout (10 s) is far away; --timeout 3 bounds the whole send, copy included.
    let (dir, smtp, config) = with_hostile_imap(hostile_imap(b"* OK ready\r\n"));
    let started = std::time::Instant::now();
    let run = send(dir.path(), Route::Config(&config))
        .args([
            "--to",
            "ann@example.net",
            "--subject",
            "Deadline",
            "--body",
            "x",
        ])
        .args(["--timeout", "3", "--json"])
        .expect_exit(0);
    let took = started.elapsed();
    assert_eq!(smtp.messages().len(), 1, "{run}");
    assert_eq!(run.json()["sent_copy"]["status"], "failed", "{run}");
    assert!(run.stderr.contains("deadline"), "{run}");
    assert!(
        took < std::time::Duration::from_millis(4500),
        "the copy held the send for {took:?}: {run}"
    );
}

#[test]
fn a_literal_too_large_for_a_response_is_refused_unread() {
    // A greeting that announces a literal of 100 MB: envoi must not try to hold it.
    let (dir, smtp, config) = with_hostile_imap(hostile_imap(b"* OK hello {100000000}\r\n"));
    let run = send(dir.path(), Route::Config(&config))
        .args([
            "--to",
            "ann@example.net",
            "--subject",
            "Literal",
            "--body",
            "x",
        ])
        .args(["--timeout", "20", "--json"])
        .expect_exit(0);
    assert_eq!(smtp.messages().len(), 1, "{run}");
    let message = run.json()["sent_copy"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        message.contains("a literal of 100000000 octets, more than a response may hold"),
        "{run}"
    );
}

#[test]
fn a_named_folder_that_is_missing_is_created_and_a_synchronizing_literal_waits_for_its_go() {
    // No LITERAL+ after login: the message waits for the server's `+`. No folder either:
    // the APPEND's [TRYCREATE] makes envoi create "Sent Items" (a name with a space).
    let Some(s) = Servers::with(
        PASSWORD,
        Vec::new(),
        "imap_capability = IMAP4rev1 SASL-IR SPECIAL-USE",
        ServerOptions::default(),
    ) else {
        return;
    };
    let config = s.config(&format!(
        "sent_copy = {{ imap = \"imaps://localhost:{}\", folder = \"Sent Items\" }}",
        s.dovecot.imaps_port()
    ));
    let run = send(s.dir.path(), Route::Config(&config))
        .args([
            "--to",
            "ann@example.net",
            "--subject",
            "Created",
            "--body",
            "x",
        ])
        .args(["-v", "--json"])
        .expect_exit(0);
    assert_eq!(run.json()["sent_copy"]["folder"], "Sent Items", "{run}");
    let size = s.received().len();
    let append = format!(" APPEND \"Sent Items\" (\\Seen) {{{size}}}\n");
    assert!(
        run.stderr.contains(&append),
        "no synchronizing APPEND: {run}"
    );
    assert!(run.stderr.contains(" NO [TRYCREATE] "), "{run}");
    assert!(run.stderr.contains(" CREATE \"Sent Items\"\n"), "{run}");
    assert!(
        run.stderr.contains("S: imap: + OK"),
        "no continuation: {run}"
    );
    let stored = s.dovecot.messages("Sent Items");
    assert_eq!(stored.len(), 1, "{run}\n{}", s.dovecot.log());
    assert_eq!(stored[0].1, s.received());
}

#[test]
fn a_batch_makes_no_copy() {
    let Some(s) = Servers::start(PASSWORD, vec![("Sent", Some("\\Sent"))]) else {
        return;
    };
    let config = s.config(&format!(
        "sent_copy = {{ imap = \"imaps://localhost:{}\" }}",
        s.dovecot.imaps_port()
    ));
    let records = s.dir.path().join("mail.jsonl");
    std::fs::write(
        &records,
        "{\"To\":\"a@example.com\",\"Subject\":\"one\",\"Body\":\"x\"}\n\
         {\"To\":\"b@example.com\",\"Subject\":\"two\",\"Body\":\"y\"}\n",
    )
    .expect("write the records");
    let run = envoi(s.dir.path())
        .env("ENVOI_TEST_PASSWORD", PASSWORD)
        .args(["batch", "-v", "--config"])
        .arg(&config)
        .arg(&records)
        .expect_exit(0);
    assert_eq!(s.smtp.messages().len(), 2, "{run}");
    assert!(!run.stderr.contains("imap:"), "a batch opened IMAP: {run}");
    assert!(s.dovecot.messages("Sent").is_empty());
}

#[test]
fn without_authenticate_plain_sasl_login_is_used_and_redacted() {
    // Only AUTH=LOGIN offered (and LOGINDISABLED, as Dovecot says then): the user name and
    // the password go one after the other, each after a `+`, and -v shows neither.
    let Some(s) = Servers::with(
        PASSWORD,
        vec![("Sent", Some("\\Sent"))],
        "auth_mechanisms = login",
        ServerOptions::default(),
    ) else {
        return;
    };
    let config = s.config(&format!(
        "sent_copy = {{ imap = \"imaps://localhost:{}\" }}",
        s.dovecot.imaps_port()
    ));
    let run = send(s.dir.path(), Route::Config(&config))
        .args([
            "--to",
            "ann@example.net",
            "--subject",
            "Login",
            "--body",
            "x",
            "-v",
        ])
        .expect_exit(0);
    assert!(run.stderr.contains(" AUTHENTICATE LOGIN\n"), "{run}");
    assert!(
        run.stderr.contains("C: imap: [redacted: user name]\n"),
        "{run}"
    );
    assert!(run.stderr.contains("C: imap: [redacted]\n"), "{run}");
    assert_eq!(
        s.dovecot.messages("Sent").len(),
        1,
        "{run}\n{}",
        s.dovecot.log()
    );
    assert_no_secret(&run.output());
}

/// A response whose literal fills the line to the last octets, then more without a line
/// end: the line bound must hold with the literal's CRLF counted (it once wrapped below
/// zero: a panic in a debug build, no bound at all in a release one).
#[test]
fn a_literal_that_fills_the_line_to_its_end_is_refused() {
    let prefix = b"* OK hello ";
    // The line before the literal ("* OK hello {N}") plus N is exactly 64 KiB.
    let size = 64 * 1024 - prefix.len() - "{65518}".len();
    let mut greeting = format!("* OK hello {{{size}}}\r\n").into_bytes();
    greeting.extend(std::iter::repeat_n(b'a', size));
    greeting.extend(std::iter::repeat_n(b'b', 1 << 20));
    let (dir, smtp, config) = with_hostile_imap(hostile_imap_sending(greeting));
    let run = send(dir.path(), Route::Config(&config))
        .args([
            "--to",
            "ann@example.net",
            "--subject",
            "Edge",
            "--body",
            "x",
        ])
        .args(["--timeout", "20", "--json"])
        .expect_exit(0);
    assert_eq!(smtp.messages().len(), 1, "{run}");
    let message = run.json()["sent_copy"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(message.contains("more than a response may hold"), "{run}");
}
