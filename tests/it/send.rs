//! `envoi send` end to end against the in-process SMTP server (mailin + rustls):
//! every property checked on the bytes that arrived, and every failure path with its
//! exit code and "nothing delivered" read off the server.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use mail_parser::{MessageParser, MimeHeaders};
use sha2::{Digest, Sha256};
use tempfile::TempDir;

use crate::support::certs::{Leaf, TestPki};
use crate::support::envoi::{
    Config, ExpectExit, Route, Setup, assert_no_secret, envoi, hermetic_env, send,
};
use crate::support::smtp_server::{Security, ServerOptions, TestServer};
use crate::support::{PASSWORD, USER};

fn sha256(bytes: &[u8]) -> Vec<u8> {
    Sha256::digest(bytes).to_vec()
}

#[test]
fn every_property_arrives_over_starttls_with_auth() {
    let s = Setup::new(Security::StartTls, ServerOptions::default());
    let log: Vec<u8> = (0..5000u32).flat_map(|i| i.to_le_bytes()).collect();
    let log_path = s.home().join("build.log.gz");
    std::fs::write(&log_path, &log).unwrap();
    let logo = b"\x89PNG\r\n\x1a\n fake logo bytes \x00\xff".to_vec();
    let logo_b64 = base64::engine::general_purpose::STANDARD.encode(&logo);
    let html = "<p>Build <b>failed</b></p>\n<img src=\"cid:logo\">\n.\n";

    let run = s
        .send()
        .args(["--to", "Ann Lee <ann@example.com>;bob@example.com"])
        .args(["--to", r#""Doe, John" <john@example.com>"#])
        .args(["--cc", "carl@example.com", "--bcc", "audit@example.com"])
        .args(["--subject", "Nightly build failed ✗ — ünïcödé"])
        .args(["--body", html, "--html", "--text", "Build failed"])
        .args(["--importance", "HIGH", "--reply-to", "ops@example.com"])
        .args(["--header", "X-Job: nightly-42"])
        .arg("--attach")
        .arg(&log_path)
        .args([
            "--attach-data",
            &logo_b64,
            "--attach-name",
            "logo.png",
            "--attach-id",
            "logo",
        ])
        .expect_exit(0);
    let stdout = &run.stdout;

    let m = s.only_message();
    assert!(m.tls, "delivered without TLS");
    assert_eq!(m.authenticated_as.as_deref(), Some(USER));
    assert_eq!(m.mail_from, "sender@example.com");
    assert_eq!(
        m.rcpt_to,
        [
            "ann@example.com",
            "bob@example.com",
            "john@example.com",
            "carl@example.com",
            "audit@example.com"
        ]
    );

    let parsed = MessageParser::default()
        .parse(&m.data)
        .expect("a parsable message");
    let message_id = parsed.message_id().expect("a Message-ID");
    assert!(message_id.ends_with("@example.com"), "{message_id}");
    assert!(stdout.contains(message_id), "stdout: {stdout}");
    assert_eq!(stdout.lines().count(), 1, "stdout: {stdout}");
    assert!(parsed.date().is_some());
    assert_eq!(parsed.subject(), Some("Nightly build failed ✗ — ünïcödé"));
    let to: Vec<_> = parsed
        .to()
        .unwrap()
        .iter()
        .map(|a| a.address().unwrap())
        .collect();
    assert_eq!(
        to,
        ["ann@example.com", "bob@example.com", "john@example.com"]
    );
    let john = parsed.to().unwrap().iter().nth(2).unwrap();
    assert_eq!(john.name(), Some("Doe, John"));
    assert_eq!(
        parsed.cc().unwrap().first().unwrap().address(),
        Some("carl@example.com")
    );
    assert!(parsed.bcc().is_none());
    let raw = String::from_utf8_lossy(&m.data).to_ascii_lowercase();
    assert!(
        !raw.contains("bcc:") && !raw.contains("audit@"),
        "Bcc leaked"
    );
    assert_eq!(parsed.header_raw("Importance").map(str::trim), Some("High"));
    assert_eq!(
        parsed.header_raw("X-Priority").map(str::trim),
        Some("1 (Highest)")
    );
    assert_eq!(
        parsed.header_raw("X-MSMail-Priority"),
        None,
        "a spam sign without X-MimeOLE"
    );
    assert_eq!(
        parsed.header_raw("X-Job").map(str::trim),
        Some("nightly-42")
    );
    assert_eq!(
        parsed.reply_to().unwrap().first().unwrap().address(),
        Some("ops@example.com")
    );
    assert_eq!(
        parsed.body_html(0).unwrap().replace("\r\n", "\n"),
        html.replace("\r\n", "\n").trim_end_matches('\n').to_owned() + "\n"
    );
    assert_eq!(parsed.body_text(0).unwrap().trim_end(), "Build failed");

    let attachments: Vec<_> = parsed.attachments().collect();
    assert_eq!(attachments.len(), 2);
    let inline = attachments
        .iter()
        .find(|a| a.content_id().is_some())
        .expect("the inline part");
    assert_eq!(inline.content_id(), Some("logo"));
    assert_eq!(inline.attachment_name(), Some("logo.png"));
    assert_eq!(sha256(inline.contents()), sha256(&logo));
    let file = attachments
        .iter()
        .find(|a| a.attachment_name() == Some("build.log.gz"))
        .expect("the file attachment");
    assert_eq!(file.content_type().unwrap().ctype(), "application");
    assert_eq!(sha256(file.contents()), sha256(&log));
    assert_no_secret(&run.output());
}

#[test]
fn implicit_tls_with_auth_and_json_output() {
    let s = Setup::new(Security::ImplicitTls, ServerOptions::default());
    let run = s
        .send()
        .args([
            "--to",
            "a@example.com",
            "--bcc",
            "b@example.com",
            "--subject",
            "hi",
        ])
        .args(["--body", "hello", "--json"])
        .expect_exit(0);
    let m = s.only_message();
    assert!(m.tls);
    assert_eq!(m.authenticated_as.as_deref(), Some(USER));

    let json = run.json();
    assert_eq!(json["status"], "sent");
    assert_eq!(json["envelope"]["from"], "sender@example.com");
    assert_eq!(
        json["envelope"]["to"],
        serde_json::json!(["a@example.com", "b@example.com"])
    );
    assert_eq!(json["server"]["code"], 250);
    let parsed = MessageParser::default().parse(&m.data).unwrap();
    assert_eq!(
        json["message_id"],
        format!("<{}>", parsed.message_id().unwrap())
    );
}

#[test]
fn lines_are_crlf_and_dot_stuffed_on_the_wire() {
    let s = Setup::new(Security::StartTls, ServerOptions::default());
    let body = "first\n.\n..two dots\rbare cr\nlast";
    s.send()
        .args(["--to", "a@example.com", "--subject", "dots", "--body", body])
        .expect_exit(0);
    let m = s.only_message();
    for (i, pair) in m.raw_data.windows(2).enumerate() {
        assert!(!(pair[1] == b'\n' && pair[0] != b'\r'), "bare LF at {i}");
        assert!(!(pair[0] == b'\r' && pair[1] != b'\n'), "bare CR at {i}");
    }
    let raw = String::from_utf8_lossy(&m.raw_data);
    assert!(raw.contains("\r\n..\r\n...two dots\r\n"), "{raw}");
    let parsed = MessageParser::default().parse(&m.data).unwrap();
    assert_eq!(
        parsed.body_text(0).unwrap(),
        "first\r\n.\r\n..two dots\r\nbare cr\r\nlast\r\n"
    );
}

#[test]
fn connector_payload_on_stdin_with_flag_override() {
    let s = Setup::new(Security::StartTls, ServerOptions::default());
    let payload = serde_json::json!({
        "To": "payload@example.com", "Subject": "from payload", "Body": "<i>hi</i>",
        "IsHtml": true, "Importance": "low",
        "Attachments": [{"ContentData": "aGVsbG8=", "ContentType": "text/plain",
                         "FileName": "hello.txt", "ContentTransferEncoding": "base64"}]
    });
    s.send()
        .args(["--input", "-", "--subject", "from flag"])
        .write_stdin(payload.to_string())
        .expect_exit(0);
    let m = s.only_message();
    assert_eq!(m.rcpt_to, ["payload@example.com"]);
    let parsed = MessageParser::default().parse(&m.data).unwrap();
    assert_eq!(parsed.subject(), Some("from flag"));
    assert_eq!(
        parsed.header_raw("X-Priority").map(str::trim),
        Some("5 (Lowest)")
    );
    assert_eq!(parsed.body_html(0).unwrap().trim(), "<i>hi</i>");
    let att = parsed.attachments().next().unwrap();
    assert_eq!(att.attachment_name(), Some("hello.txt"));
    assert_eq!(att.contents(), b"hello");
}

#[test]
fn wrong_password_is_77_and_never_printed() {
    let s = Setup::new(Security::StartTls, ServerOptions::default());
    let run = s
        .send()
        .env("ENVOI_TEST_PASSWORD", "Canary-Wrong-9x")
        .args([
            "--to",
            "a@example.com",
            "--subject",
            "x",
            "--body",
            "y",
            "--json",
        ])
        .expect_exit(77);
    let (stdout, stderr) = (&run.stdout, &run.stderr);
    assert!(stderr.contains(USER), "{stderr}");
    assert!(!stdout.contains("Canary-Wrong-9x") && !stderr.contains("Canary-Wrong-9x"));
    let json = run.json();
    assert_eq!(json["kind"], "auth_refused");
    assert_eq!(json["http_status"], 401);
    s.assert_nothing_delivered();
}

#[test]
fn refused_recipient_sends_nothing_and_names_it() {
    let s = Setup::new(
        Security::StartTls,
        ServerOptions {
            refuse_rcpt: vec![("nobody@example.com".into(), 550)],
            ..ServerOptions::default()
        },
    );
    let run = s
        .send()
        .args([
            "--to",
            "ok@example.com; nobody@example.com",
            "--subject",
            "x",
        ])
        .expect_exit(67);
    let stderr = &run.stderr;
    assert!(stderr.contains("nobody@example.com (550"), "{stderr}");
    s.assert_nothing_delivered();
    assert!(s.server.wait_idle(Duration::from_secs(5)));
    assert!(s.server.transcript().iter().any(|l| l == "RSET"));
}

#[test]
fn temporarily_refused_recipient_is_75() {
    let s = Setup::new(
        Security::StartTls,
        ServerOptions {
            refuse_rcpt: vec![("later@example.com".into(), 450)],
            ..ServerOptions::default()
        },
    );
    s.send()
        .args([
            "--to",
            "later@example.com",
            "--subject",
            "x",
            "--retries",
            "0",
        ])
        .expect_exit(75);
    s.assert_nothing_delivered();
}

#[test]
fn certificate_problems_are_77_and_named() {
    // (leaf, trust the test CA?, what the message says)
    let cases = [
        (Leaf::Good, false, "unknown issuer"),
        (Leaf::WrongHost, true, "issued for another host name"),
        (Leaf::Expired, true, "expired"),
    ];
    for (leaf, trusted, reason) in cases {
        let dir = TempDir::new().unwrap();
        let pki = Arc::new(TestPki::with_leaf(leaf));
        let ca = pki.write_ca(dir.path());
        let server = TestServer::start(ServerOptions {
            security: Security::ImplicitTls,
            auth: Some((USER.into(), PASSWORD.into())),
            pki: Some(pki),
            ..ServerOptions::default()
        });
        let config = Config::new(server.port(), "tls").login();
        let config = if trusted { config.trust(&ca) } else { config };
        let config = config.write(dir.path());
        eprintln!("case: {leaf:?}, test CA trusted: {trusted}");
        let run = send(dir.path(), Route::Config(&config))
            .args(["--to", "a@example.com", "--json"])
            .expect_exit(77);
        let stderr = &run.stderr;
        assert!(stderr.contains("certificate is not trusted"), "{stderr}");
        assert!(stderr.contains(reason), "{leaf:?}: {stderr}");
        let json = run.json();
        assert_eq!(json["kind"], "certificate");
        assert_eq!(json["http_status"], 403);
        assert!(server.messages().is_empty());
        assert_eq!(server.connections(), 1, "a certificate failure was retried");
        assert!(!server.transcript().iter().any(|l| l.starts_with("AUTH")));
    }
}

#[test]
fn starttls_not_offered_is_75_without_auth() {
    let s = Setup::new(
        Security::StartTls,
        ServerOptions {
            advertise_starttls: false,
            ..ServerOptions::default()
        },
    );
    let run = s
        .send()
        .args(["--to", "a@example.com", "--subject", "x", "--retries", "0"])
        .expect_exit(75);
    let stderr = &run.stderr;
    assert!(stderr.contains("does not offer STARTTLS"), "{stderr}");
    s.assert_stopped_before_auth();
}

#[test]
fn server_not_listening_is_75() {
    let dir = TempDir::new().unwrap();
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let run = send(dir.path(), Route::Url(port))
        .args([
            "--from",
            "a@example.com",
            "--to",
            "b@example.com",
            "--retries",
            "1",
            "--retry-max-secs",
            "1",
        ])
        .expect_exit(75);
    let stderr = &run.stderr;
    assert!(stderr.contains(&format!("127.0.0.1:{port}")), "{stderr}");
    assert!(stderr.contains("retrying in"), "{stderr}");
    assert_eq!(stderr.matches("Connection refused").count(), 2, "{stderr}");
}

#[test]
fn bad_input_is_refused_before_connecting() {
    let s = Setup::new(Security::StartTls, ServerOptions::default());
    #[rustfmt::skip]
    let cases: &[(&[&str], i32, &str)] = &[
        (&["--to", "a@example.com", "--subject", "a\r\nBcc: evil@example.com"], 65, "--subject"),
        (&["--to", "bob@"], 65, r#"--to: "bob@" is not a valid address"#),
        (&["--to", "a@example.com", "--attach", "/nonexistent/x.pdf"], 66, "x.pdf"),
        (&["--to", "a@example.com", "--attach-data", "%%%"], 65, "--attach-data #1"),
        (&["--to", "a@example.com", "--header", "X-A: 1\nBcc: e@example.com"], 65, "--header"),
        (&["--to", "a@example.com", "--importance", "urgent"], 65, "urgent"),
        (&["--to", "a@example.com", "--subject", "a\x1b[2Jb"], 65, "U+001B"),
        (&["--to", "a@example.com", "--body-file", "-", "--attach-data", "@-"], 64, "standard input"),
        (&["--subject", "no recipient"], 64, "no recipient"),
        (&["--to", "a@example.com", "--no-such-flag"], 64, "--no-such-flag"),
    ];
    for (args, code, needle) in cases {
        let run = s.send().args(*args).expect_exit(*code);
        assert!(run.stderr.contains(needle), "{args:?}: {}", run.stderr);
    }
    let nul = s.home().join("nul.txt");
    std::fs::write(&nul, b"a\0b").unwrap();
    let run = s
        .send()
        .args(["--to", "a@example.com", "--body-file"])
        .arg(&nul)
        .expect_exit(65);
    assert!(run.stderr.contains("NUL"), "{}", run.stderr);
    assert_eq!(s.server.connections(), 0, "a connection was opened");
}

#[test]
fn no_password_over_plaintext_unless_allowed() {
    let s = Setup::new(Security::Plain, ServerOptions::default());
    let run = s.send().args(["--to", "a@example.com"]).expect_exit(78);
    let stderr = &run.stderr;
    assert!(stderr.contains("allow_plaintext_auth"), "{stderr}");
    assert_eq!(s.server.connections(), 0);

    let config = std::fs::read_to_string(&s.config).unwrap() + "allow_plaintext_auth = true\n";
    std::fs::write(&s.config, config).unwrap();
    let run = s.send().args(["--to", "a@example.com"]).expect_exit(0);
    assert_eq!(s.only_message().authenticated_as.as_deref(), Some(USER));
    // T14: allowed, but never silently.
    assert!(run.stderr.contains("without TLS"), "{run}");
}

#[test]
fn smtp_url_without_config_file() {
    let dir = TempDir::new().unwrap();
    let server = TestServer::start(ServerOptions::default());
    envoi(dir.path())
        .env(
            "ENVOI_SMTP_URL",
            format!("smtp://127.0.0.1:{}?security=none", server.port()),
        )
        .args([
            "send",
            "--from",
            "ci@example.com",
            "--to",
            "dev@bücher.example",
        ])
        .args(["--subject", "from CI"])
        .expect_exit(0);
    let messages = server.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].rcpt_to, ["dev@xn--bcher-kva.example"]);
}

#[test]
fn password_in_a_group_readable_config_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new().unwrap();
    let config = Config::new(25, "starttls")
        .line(&format!("username = \"{USER}\"\npassword = \"{PASSWORD}\""))
        .write(dir.path());
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let run = send(dir.path(), Route::Config(&config))
        .args(["--to", "a@example.com", "--dry-run"])
        .expect_exit(78);
    assert!(run.stderr.contains("chmod 600"), "{}", run.stderr);
    assert_no_secret(&run.output());
}

/// The catalogue's injection vectors: every value that becomes a header or an SMTP command
/// is refused with 65 before any connection; the body's smuggling attempts are framed away.
#[test]
fn injection_vectors_are_refused_or_neutralised() {
    let s = Setup::new(Security::StartTls, ServerOptions::default());
    #[rustfmt::skip]
    let refused: &[&[&str]] = &[
        &["--to", "a@example.com>\r\nRCPT TO:<victim@example.net"],
        &["--to", "a@example.com", "--from", "e@example.com\nDATA"],
        &["--to", "a@example.com", "--bcc", "b@example.com\rx"],
        &["--to", "\"Eve\r\nBcc: x@example.net\" <eve@example.com>"],
        &["--to", "a@example.com", "--reply-to", "r@example.com\r\nX: y"],
        &["--to", "a@example.com", "--header", "X-A\r\nBcc: c@example.net: v"],
        &["--to", "a@example.com", "--attach-data", "aGk=", "--attach-name", "x\r\nBcc: y.txt"],
        &["--to", "a@example.com", "--attach-data", "aGk=", "--attach-type", "text/plain\r\nX: y"],
        &["--to", "a@example.com", "--attach-data", "aGk=", "--attach-id", "id\r\nX: y"],
    ];
    for args in refused {
        s.send().args(*args).expect_exit(65);
    }
    let payload = r#"{"To": "a@example.com", "Subject": "hi\r\nBcc: victim@example.net"}"#;
    s.send()
        .args(["--input", "-"])
        .write_stdin(payload)
        .expect_exit(65);
    let hello = std::fs::read_to_string(&s.config).unwrap()
        + "hello_name = \"host\\r\\nMAIL FROM:<evil@example.net>\"\n";
    let bad_config = s.home().join("hello.toml");
    std::fs::write(&bad_config, hello).unwrap();
    send(s.home(), Route::Config(&bad_config))
        .args(["--to", "a@example.com"])
        .expect_exit(65);
    assert_eq!(s.server.connections(), 0, "a connection was opened");

    // RUSTSEC-2021-0069's vector and bare-LF smuggling go out as body text, and a 2000-octet
    // line is encoded: one transaction, nothing the server could read as a command.
    let body = format!(
        "x\r\n\r\n.\r\nMAIL FROM:<evil@example.net>\n.\nRCPT TO:<victim@example.net>\r.\r{}",
        "y".repeat(2000)
    );
    s.send()
        .args(["--to", "a@example.com", "--body", &body])
        .expect_exit(0);
    assert!(s.server.wait_idle(Duration::from_secs(5)));
    let m = s.only_message();
    assert_eq!(m.rcpt_to, ["a@example.com"]);
    let transcript = s.server.transcript();
    assert!(
        !transcript
            .iter()
            .any(|l| l.contains("evil@") || l.contains("victim@")),
        "{transcript:?}"
    );
    let longest = m
        .raw_data
        .split(|b| *b == b'\n')
        .map(<[u8]>::len)
        .max()
        .unwrap();
    assert!(longest <= 1000, "a line of {longest} octets went out");
}

/// The README promises no password in any outbox file: queue a message with the canary
/// login, keep it queued (451), and read every file the outbox holds.
#[test]
fn the_outbox_never_stores_the_password() {
    let s = Setup::new(
        Security::StartTls,
        ServerOptions {
            tempfail_transactions: 1,
            ..ServerOptions::default()
        },
    );
    let outbox = s.home().join("outbox");
    let run = s
        .send()
        .args(["--to", "a@example.com", "--queue", "--json", "--outbox-dir"])
        .arg(&outbox)
        .args(["--idempotency-key", "canary-job"])
        .expect_exit(0);
    assert!(run.stdout.contains("\"queued\""), "{}", run.stdout);
    let mut files = vec![outbox.clone()];
    let mut read = 0;
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else {
            assert_no_secret(&String::from_utf8_lossy(&std::fs::read(&path).unwrap()));
            read += 1;
        }
    }
    assert!(
        read >= 3,
        "expected message, state and lock files, read {read}"
    );
    assert_no_secret(&run.output());
}

/// Regression (found in review of the layering change): an `ENVOI_IDEMPOTENCY_KEY` that
/// is set but empty (`$JOB_ID` unset) is refused (64), never taken as "no key".
#[test]
fn an_empty_idempotency_key_variable_is_refused() {
    let s = Setup::plain(ServerOptions::default(), 10);
    let run = s
        .send()
        .env("ENVOI_IDEMPOTENCY_KEY", "")
        .args(["--to", "a@example.com"])
        .expect_exit(64);
    assert!(run.stderr.contains("idempotency-key"), "{run}");
    s.assert_nothing_delivered();
}

/// The README's limits on what a run reads: an empty `ENVOI_OUTBOX_DIR` is 64, and
/// standard input over 64 MiB is 65; neither connects.
#[test]
fn an_empty_outbox_variable_and_an_endless_stdin_are_refused() {
    let s = Setup::plain(ServerOptions::default(), 10);
    s.send()
        .env("ENVOI_OUTBOX_DIR", "")
        .args(["--to", "a@example.com"])
        .expect_exit(64);
    let run = s
        .send()
        .args(["--to", "a@example.com", "--body-file", "-"])
        .write_stdin(vec![b'x'; (64 << 20) + 1])
        .expect_exit(65);
    assert!(run.stderr.contains("more than 64 MiB"), "{run}");
    assert_eq!(s.server.connections(), 0);
}

/// Regression (found in review of the layering change): a profile that cannot log in
/// (a user name, no password) still builds a dry run and still shows its outbox; only a
/// delivery needs the login (78).
#[test]
fn a_profile_without_password_fails_only_where_it_logs_in() {
    let s = Setup::plain(ServerOptions::default(), 10);
    let config = Config::new(s.server.port(), "none")
        .line("username = \"u\"")
        .write(s.home());
    let route = Route::Config(&config);
    send(s.home(), route)
        .args(["--to", "a@example.com", "--dry-run"])
        .expect_exit(0);
    envoi(s.home())
        .args(["outbox", "list", "--config"])
        .arg(&config)
        .expect_exit(0);
    let run = send(s.home(), route)
        .args(["--to", "a@example.com"])
        .expect_exit(78);
    assert!(run.stderr.contains("no password_env"), "{run}");
    s.assert_nothing_delivered();
}

/// `--attach` with a glob pattern: every regular file it matches, sorted, each once, the
/// `;type=` applying to each; a pattern that matches nothing is 66 naming it and sends
/// nothing; a modifier after a pattern that matched several files is 64.
#[test]
fn attach_patterns_expand_sorted_and_a_pattern_without_match_is_66() {
    let s = Setup::new(Security::StartTls, ServerOptions::default());
    let dist = s.home().join("dist");
    std::fs::create_dir_all(dist.join("sub.zip")).unwrap(); // a folder: never attached
    let files = [
        ("b.zip", &b"bee"[..]),
        ("a.zip", b"ay"),
        ("notes.txt", b"no"),
    ];
    for (name, data) in files {
        std::fs::write(dist.join(name), data).unwrap();
    }
    let pattern = format!("{}/*.zip", dist.display());
    s.send()
        .args(["--to", "a@example.com", "--subject", "glob", "--body", "x"])
        .args(["--attach", &format!("{pattern};type=application/zip")])
        .expect_exit(0);
    let m = s.only_message();
    let parsed = MessageParser::default().parse(&m.data).unwrap();
    let attached: Vec<(String, String, Vec<u8>)> = parsed
        .attachments()
        .map(|a| {
            (
                a.attachment_name().unwrap_or_default().to_owned(),
                a.content_type()
                    .map(|t| format!("{}/{}", t.ctype(), t.subtype().unwrap_or_default()))
                    .unwrap_or_default(),
                sha256(a.contents()),
            )
        })
        .collect();
    assert_eq!(
        attached,
        [
            ("a.zip".into(), "application/zip".into(), sha256(b"ay")),
            ("b.zip".into(), "application/zip".into(), sha256(b"bee")),
        ]
    );

    let missing = format!("{}/*.tar.gz", dist.display());
    let run = s
        .send()
        .args(["--to", "a@example.com", "--subject", "glob", "--body", "x"])
        .args(["--attach", &missing])
        .expect_exit(66);
    assert!(run.stderr.contains("matches no file"), "{run}");
    assert!(run.stderr.contains("*.tar.gz"), "{run}");

    let run = s
        .send()
        .args(["--to", "a@example.com", "--subject", "glob", "--body", "x"])
        .args(["--attach", &pattern, "--attach-name", "x.zip"])
        .expect_exit(64);
    assert!(run.stderr.contains("matched 2 files"), "{run}");
    assert_eq!(s.server.messages().len(), 1, "a failed send delivered");
}

/// `--lint` names what may junk or bounce a message and sends nothing; a real send
/// warns of the same on stderr (never in `--json` stdout), and `--quiet` silences it.
#[test]
fn lint_findings_are_warnings_and_lint_sends_nothing() {
    let home = TempDir::new().unwrap();
    let config = Config::new(9, "starttls")
        .line("username = \"me@gmail.com\"")
        .line("password_env = \"UNSET_PASSWORD\"")
        .write(home.path());
    let lint = |json: bool| {
        let mut cmd = envoi(home.path());
        cmd.arg("send")
            .arg("--config")
            .arg(&config)
            .args([
                "--lint",
                "--from",
                "Bot <bot@example.com>",
                "--to",
                "a@example.com",
            ])
            .args(["--html", "--no-text-part", "--body", "<p>hi</p>"]);
        if json {
            cmd.arg("--json");
        }
        cmd.expect_exit(0)
    };
    let text = lint(false);
    assert!(text.stdout.contains("lint: 3 findings"), "{text}");
    for says in [
        "the login is at gmail.com",
        "no subject",
        "without a text part",
    ] {
        assert!(text.stderr.contains(says), "{says}: {text}");
    }
    let json = lint(true).json();
    assert_eq!(json["status"], "linted", "{json}");
    assert_eq!(json["findings"].as_array().map(Vec::len), Some(3), "{json}");

    let s = Setup::new(Security::StartTls, ServerOptions::default());
    let sent = s
        .send()
        .args([
            "--to",
            "a@example.com",
            "--body",
            "no subject here",
            "--json",
        ])
        .expect_exit(0);
    assert!(sent.stderr.contains("warning: no subject"), "{sent}");
    assert_eq!(sent.json()["status"], "sent");
    assert!(
        !sent.stdout.contains("subject"),
        "a finding in --json: {sent}"
    );
    let quiet = s
        .send()
        .args(["--to", "a@example.com", "--body", "no subject", "--quiet"])
        .expect_exit(0);
    assert!(quiet.stderr.is_empty(), "{quiet}");
    assert_eq!(s.server.messages().len(), 2);
}

/// Python's email package's view of `message`: each part's content type (with its
/// Content-ID), in walk order, and the SHA-256 of each image part. A second opinion on
/// the MIME tree, from a parser that shares no code with envoi or mail-parser.
fn python_mime_walk(message: &[u8]) -> Vec<String> {
    use std::io::Write;
    let script = r#"
import sys, email, hashlib
from email import policy
m = email.message_from_bytes(sys.stdin.buffer.read(), policy=policy.default)
for part in m.walk():
    line = part.get_content_type()
    if part["Content-ID"]:
        line += " " + part["Content-ID"]
    if part.get_content_maintype() == "image":
        line += " sha256=" + hashlib.sha256(part.get_payload(decode=True)).hexdigest()
    print(line)
"#;
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(message)
        .expect("feed python");
    let out = child.wait_with_output().expect("python ends");
    assert!(out.status.success(), "python's email package failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// `--markdown`: the HTML part is the rendered Markdown (a table, emphasis), the text
/// part is the Markdown source, and a local image beside the body file is embedded
/// (multipart/related, Content-ID, `cid:` in the HTML). A missing image is 66 and
/// nothing is sent.
#[test]
fn markdown_with_a_local_image_arrives_as_html_text_and_inline_image() {
    let s = Setup::new(Security::StartTls, ServerOptions::default());
    let out = s.home().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let png: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
    std::fs::write(out.join("chart.png"), &png).unwrap();
    let source =
        "# Nightly\n\n| job | result |\n|---|---|\n| build | **ok** |\n\n![chart](chart.png)\n";
    std::fs::write(out.join("report.md"), source).unwrap();
    s.send()
        .args(["--to", "a@example.com", "--subject", "md", "--markdown"])
        .arg("--body-file")
        .arg(out.join("report.md"))
        .expect_exit(0);
    let m = s.only_message();
    let parsed = MessageParser::default().parse(&m.data).unwrap();
    let html = parsed.body_html(0).unwrap();
    assert!(html.contains("<td><strong>ok</strong></td>"), "{html}");
    assert!(
        html.contains(r#"src="cid:image1.chart.png@envoi""#),
        "{html}"
    );
    assert_eq!(parsed.body_text(0).unwrap().replace("\r\n", "\n"), source);
    let image = parsed.attachments().next().expect("the image part");
    assert_eq!(image.content_id(), Some("image1.chart.png@envoi"));
    assert_eq!(sha256(image.contents()), sha256(&png));

    let hex: String = sha256(&png).iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        python_mime_walk(&m.data),
        [
            "multipart/related".to_owned(),
            "multipart/alternative".to_owned(),
            "text/plain".to_owned(),
            "text/html".to_owned(),
            format!("image/png <image1.chart.png@envoi> sha256={hex}"),
        ]
    );

    std::fs::write(out.join("broken.md"), "![gone](missing.png)\n").unwrap();
    let run = s
        .send()
        .args(["--to", "a@example.com", "--subject", "md", "--markdown"])
        .arg("--body-file")
        .arg(out.join("broken.md"))
        .expect_exit(66);
    assert!(run.stderr.contains("missing.png"), "{run}");
    assert_eq!(s.server.messages().len(), 1, "a broken message was sent");
}

/// `--template`: the subject and body rendered with --var, --vars-file (TOML here) and
/// an environment variable named by --var-env; values in an HTML body escaped; an undefined variable is 65, named,
/// and nothing is sent.
#[test]
fn templates_render_subject_and_body_and_refuse_an_undefined_variable() {
    let s = Setup::new(Security::StartTls, ServerOptions::default());
    let vars = s.home().join("vars.toml");
    std::fs::write(
        &vars,
        "files = [\"db.sql.gz\", \"www.tar.gz\"]\nhost = \"from-file\"\n",
    )
    .unwrap();
    let body = s.home().join("report.txt");
    std::fs::write(
        &body,
        "Backup of {{ host }}:\n{% for f in files %}- {{ f }}\n{% endfor %}",
    )
    .unwrap();
    s.send()
        .env("JOB", "nightly")
        .args(["--to", "a@example.com", "--template", "--var-env", "JOB"])
        .args(["--subject", "Backup {{ host }} ({{ env.JOB }})"])
        .arg("--body-file")
        .arg(&body)
        .arg("--vars-file")
        .arg(&vars)
        .args(["--var", "host=db1"])
        .expect_exit(0);
    let m = s.only_message();
    let parsed = MessageParser::default().parse(&m.data).unwrap();
    assert_eq!(parsed.subject(), Some("Backup db1 (nightly)"));
    assert_eq!(
        parsed.body_text(0).unwrap().replace("\r\n", "\n"),
        "Backup of db1:\n- db.sql.gz\n- www.tar.gz\n"
    );

    s.send()
        .args([
            "--to",
            "a@example.com",
            "--template",
            "--subject",
            "x",
            "--html",
        ])
        .args([
            "--body",
            "<p>{{ note }}</p>",
            "--var",
            "note=<script>x</script> & co",
        ])
        .expect_exit(0);
    let messages = s.server.messages();
    let parsed = MessageParser::default().parse(&messages[1].data).unwrap();
    assert!(
        parsed
            .body_html(0)
            .unwrap()
            .contains("<p>&lt;script&gt;x&lt;&#x2f;script&gt; &amp; co</p>"),
        "{:?}",
        parsed.body_html(0)
    );

    let run = s
        .send()
        .args(["--to", "a@example.com", "--template"])
        .args([
            "--subject",
            "Backup {{ hsot }}",
            "--body",
            "x",
            "--var",
            "host=db1",
        ])
        .expect_exit(65);
    assert!(
        run.stderr
            .contains("--subject: undefined variable {{ hsot }}"),
        "{run}"
    );
    assert_eq!(
        s.server.messages().len(),
        2,
        "a message with a hole was sent"
    );
}

/// `--template` with `--markdown` and `--text`: variables fill the Markdown before it is
/// rendered (not HTML-escaped there: Markdown is text until then) and the given text
/// part too.
#[test]
fn templates_fill_markdown_and_text_parts() {
    let s = Setup::new(Security::StartTls, ServerOptions::default());
    s.send()
        .args(["--to", "a@example.com", "--template", "--markdown"])
        .args(["--subject", "Report for {{ team }}"])
        .args([
            "--body",
            "# {{ team }}\n\n**{{ passed }}** passed",
            "--var",
            "team=Ops & Co",
        ])
        .args([
            "--var",
            "passed=412",
            "--text",
            "{{ team }}: {{ passed }} passed",
        ])
        .expect_exit(0);
    let m = s.only_message();
    let parsed = MessageParser::default().parse(&m.data).unwrap();
    assert_eq!(parsed.subject(), Some("Report for Ops & Co"));
    let html = parsed.body_html(0).unwrap();
    assert!(html.contains("<h1>Ops &amp; Co</h1>"), "{html}");
    assert!(html.contains("<strong>412</strong> passed"), "{html}");
    assert_eq!(
        parsed.body_text(0).unwrap().trim_end(),
        "Ops & Co: 412 passed"
    );
}

/// Trial 1.8: a printable ASCII display name that needs quoting (a comma, parentheses, an
/// apostrophe, quotes) goes out as an RFC 5322 quoted-string, in From, To, Cc and
/// Reply-To, not as RFC 2047 base64; a non-ASCII name is still RFC 2047. A real MIME
/// parser reads every name back.
#[test]
fn a_printable_ascii_display_name_is_a_quoted_string() {
    let s = Setup::plain(ServerOptions::default(), 10);
    s.send()
        .args(["--from", r#""Build Bot, CI" <bot@example.com>"#])
        .args(["--to", r#""Doe, John" <john@example.com>"#])
        .args(["--cc", r#""O'Brien (Ops)" <ob@example.com>"#])
        .args(["--cc", r#""Say \"hi\", Ann" <ann@example.com>"#])
        .args(["--reply-to", r#""Zoë, Ops" <zoe@example.com>"#])
        .args(["--subject", "names", "--body", "b"])
        .expect_exit(0);
    let m = s.only_message();
    let raw = String::from_utf8_lossy(&m.data).into_owned();
    let head = &raw[..raw.find("\r\n\r\n").expect("a header block")];
    for line in [
        "\r\nFrom: \"Build Bot, CI\" <bot@example.com>\r\n",
        "\r\nTo: \"Doe, John\" <john@example.com>\r\n",
        "\r\nCc: \"O'Brien (Ops)\" <ob@example.com>,\r\n \"Say \\\"hi\\\", Ann\" <ann@example.com>\r\n",
    ] {
        assert!(
            format!("\r\n{head}\r\n").contains(line),
            "{line:?} in:\n{head}"
        );
    }
    assert!(
        head.contains("Reply-To: =?utf-8?"),
        "non-ASCII stays RFC 2047: {head}"
    );
    assert_eq!(head.matches("=?utf-8?").count(), 1, "{head}");

    let parsed = MessageParser::default().parse(&m.data).expect("parsable");
    let name = |list: Option<&mail_parser::Address>, i: usize| {
        list.and_then(|l| l.iter().nth(i))
            .and_then(|a| a.name())
            .map(str::to_owned)
    };
    assert_eq!(name(parsed.from(), 0).as_deref(), Some("Build Bot, CI"));
    assert_eq!(name(parsed.to(), 0).as_deref(), Some("Doe, John"));
    assert_eq!(name(parsed.cc(), 0).as_deref(), Some("O'Brien (Ops)"));
    assert_eq!(name(parsed.cc(), 1).as_deref(), Some("Say \"hi\", Ann"));
    assert_eq!(name(parsed.reply_to(), 0).as_deref(), Some("Zoë, Ops"));
}

/// Trial task 8: `envoi send < msg.eml` (a whole message, redirected from a file or
/// piped) is refused with 64 before anything is sent, pointing to `envoi sendmail -t`,
/// which then sends that file as it is. A body that only looks like a memo is sent, and
/// `--body-file -` sends even a whole message as the text.
#[test]
fn a_whole_message_on_send_stdin_points_to_sendmail_t() {
    let s = Setup::plain(ServerOptions::default(), 10);
    let eml = s.home().join("msg.eml");
    std::fs::write(
        &eml,
        "From: Ann <sender@example.com>\r\nTo: Bob <bob@example.com>\r\n\
         Subject: as written\r\nMIME-Version: 1.0\r\n\r\nHello Bob.\r\n",
    )
    .expect("write msg.eml");
    // `< msg.eml`: standard input is the file itself, not a pipe.
    let redirected = |args: &[&str]| {
        std::process::Command::new(assert_cmd::cargo::cargo_bin("envoi"))
            .env_clear()
            .envs(hermetic_env(s.home()))
            .args(args)
            .arg("--config")
            .arg(&s.config)
            .stdin(std::fs::File::open(&eml).expect("open msg.eml"))
            .output()
            .expect("run envoi")
    };
    let refused = redirected(&["send"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("envoi sendmail -t"), "{stderr}");
    assert!(stderr.contains("whole message"), "{stderr}");
    let piped = s
        .send()
        .args(["--to", "carl@example.com", "--subject", "s"])
        .write_stdin(std::fs::read(&eml).expect("read"))
        .expect_exit(64);
    assert!(
        piped.stderr.contains("From, To, Subject, MIME-Version"),
        "{piped}"
    );
    s.assert_nothing_delivered();

    // The advice, followed.
    let sent = redirected(&["sendmail", "-t"]);
    assert!(sent.status.success(), "{sent:?}");
    let m = s.only_message();
    assert_eq!(m.rcpt_to, ["bob@example.com"]);
    let parsed = MessageParser::default().parse(&m.data).expect("parsable");
    assert_eq!(parsed.subject(), Some("as written"));

    // A memo is a body; --body-file - takes even a whole message as the text.
    let memo = "To: all staff\nSubject: outage\n\nThe server is down.\n";
    for (input, body_file) in [
        (memo.as_bytes().to_vec(), false),
        (std::fs::read(&eml).expect("read"), true),
    ] {
        let mut cmd = s.send();
        cmd.args(["--to", "carl@example.com", "--subject", "s"]);
        if body_file {
            cmd.args(["--body-file", "-"]);
        }
        cmd.write_stdin(input).expect_exit(0);
    }
    let messages = s.server.messages();
    assert_eq!(messages.len(), 3);
    for (m, words) in messages[1..]
        .iter()
        .zip(["The server is down.", "Hello Bob."])
    {
        let parsed = MessageParser::default().parse(&m.data).expect("parsable");
        assert!(
            parsed.body_text(0).is_some_and(|b| b.contains(words)),
            "{words}"
        );
        assert_eq!(m.rcpt_to, ["carl@example.com"]);
    }
}

/// Trial task 8: `--to @FILE` (and --cc, --bcc) reads one address a line, skipping `#`
/// comments and blank lines; a bad line is 65 naming its line, a file that is not a
/// regular file or holds no address is 66, and nothing is sent.
#[test]
fn recipients_come_from_a_file_one_a_line() {
    let s = Setup::plain(ServerOptions::default(), 10);
    let to = s.home().join("team.txt");
    std::fs::write(
        &to,
        "# the on-call team\nAnn Lee <ann@example.com>\n\n  bob@example.com  \r\n\
         \"Doe, John\" <john@example.com>\n",
    )
    .expect("write");
    let bcc = s.home().join("audit.txt");
    std::fs::write(&bcc, "audit@example.com\n").expect("write");
    let at = |p: &std::path::Path| format!("@{}", p.display());
    s.send()
        .args(["--to", &at(&to), "--to", "carl@example.com"])
        .args(["--bcc", &at(&bcc), "--subject", "s", "--body", "b"])
        .expect_exit(0);
    let m = s.only_message();
    assert_eq!(
        m.rcpt_to,
        [
            "ann@example.com",
            "bob@example.com",
            "john@example.com",
            "carl@example.com",
            "audit@example.com"
        ]
    );
    let parsed = MessageParser::default().parse(&m.data).expect("parsable");
    let names: Vec<Option<&str>> = parsed.to().unwrap().iter().map(|a| a.name()).collect();
    assert_eq!(names, [Some("Ann Lee"), None, Some("Doe, John"), None]);
    assert!(parsed.bcc().is_none());

    let bad = s.home().join("bad.txt");
    std::fs::write(&bad, "ann@example.com\n# fine\nnot an address\n").expect("write");
    let run = s
        .send()
        .args(["--cc", &at(&bad), "--subject", "s", "--body", "b"])
        .expect_exit(65);
    assert!(
        run.stderr.contains(&format!("--cc {} line 3", at(&bad))),
        "{run}"
    );
    let empty = s.home().join("empty.txt");
    std::fs::write(&empty, "# nobody yet\n\n").expect("write");
    for (path, words) in [
        (empty.as_path(), "holds no address"),
        (s.home(), "cannot read"),
        (std::path::Path::new("/nonexistent/rcpts"), "cannot read"),
    ] {
        let run = s
            .send()
            .args(["--to", &at(path), "--subject", "s", "--body", "b"])
            .expect_exit(66);
        assert!(run.stderr.contains(words), "{}: {run}", path.display());
    }
    assert_eq!(s.server.messages().len(), 1, "only the first send went");
}
