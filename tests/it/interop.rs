//! Cross-checks against independent, out-of-process SMTP servers: Python's aiosmtpd
//! (STARTTLS, implicit TLS, AUTH PLAIN/LOGIN) and Postfix's smtp-sink (the peer lettre's
//! own CI uses). Skipped with a note when they are not installed, unless CI is set.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use mail_parser::{MessageParser, MimeHeaders};
use sha2::{Digest, Sha256};
use tempfile::TempDir;

use crate::support::certs::TestPki;
use crate::support::envoi::{Config, ExpectExit, Route, assert_no_secret, envoi, send};
use crate::support::external::{Aiosmtpd, AiosmtpdOptions, SinkDump, SmtpSink};
use crate::support::{PASSWORD, USER};

/// An aiosmtpd server with the canary login and a config trusting its certificate.
fn aiosmtpd(
    dir: &Path,
    security: &'static str,
    refuse_rcpt: Vec<(String, u16)>,
) -> Option<(Aiosmtpd, PathBuf)> {
    let pki = Arc::new(TestPki::new());
    let ca = pki.write_ca(dir);
    let server = Aiosmtpd::start(AiosmtpdOptions {
        security,
        auth: Some((USER.into(), PASSWORD.into())),
        refuse_rcpt,
        cert_key: Some(pki.write_leaf(dir)),
        oauth: None,
        auth_reply: None,
        mail_reply: None,
    })?;
    let profile_security = if security == "tls" { "tls" } else { "starttls" };
    let config = Config::new(server.port(), profile_security)
        .login()
        .trust(&ca)
        .write(dir);
    Some((server, config))
}

#[test]
fn aiosmtpd_starttls_and_implicit_tls_with_auth() {
    for security in ["starttls", "tls"] {
        eprintln!("case: aiosmtpd with security {security}");
        let dir = TempDir::new().unwrap();
        let Some((server, config)) = aiosmtpd(dir.path(), security, vec![]) else {
            return;
        };
        let pdf: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
        let pdf_path = dir.path().join("résumé.pdf");
        std::fs::write(&pdf_path, &pdf).unwrap();
        let run = send(dir.path(), Route::Config(&config))
            .args([
                "--to",
                "Zoë <zoe@example.com>",
                "--bcc",
                "hidden@example.com",
                "--subject",
                "Grüße über TLS",
                "--body",
                "hello\n.\nbye",
                "--importance",
                "low",
                "--attach",
                pdf_path.to_str().unwrap(),
            ])
            .expect_exit(0);
        assert_no_secret(&format!("{}{}", run.output(), server.log()));

        let messages = server.messages();
        assert_eq!(messages.len(), 1, "{security}");
        let m = &messages[0];
        assert!(m.tls, "{security}: not over TLS");
        assert_eq!(m.auth_user.as_deref(), Some(USER));
        assert_eq!(m.mail_from, "sender@example.com");
        assert_eq!(m.rcpt_tos, ["zoe@example.com", "hidden@example.com"]);
        let parsed = MessageParser::default().parse(&m.data).unwrap();
        assert_eq!(parsed.subject(), Some("Grüße über TLS"));
        assert_eq!(parsed.to().unwrap().first().unwrap().name(), Some("Zoë"));
        assert!(!String::from_utf8_lossy(&m.data).contains("hidden@"));
        assert_eq!(parsed.header_raw("Importance").map(str::trim), Some("Low"));
        assert_eq!(parsed.body_text(0).unwrap(), "hello\r\n.\r\nbye");
        let att = parsed.attachments().next().expect("the attachment");
        assert_eq!(att.attachment_name(), Some("résumé.pdf"));
        assert_eq!(Sha256::digest(att.contents()), Sha256::digest(&pdf));
        let transcript = server.transcript();
        if security == "starttls" {
            let starttls = transcript.find("STARTTLS").expect("STARTTLS sent");
            let auth = transcript.find("AUTH").expect("AUTH sent");
            assert!(starttls < auth, "AUTH before STARTTLS: {transcript}");
        }
    }
}

#[test]
fn aiosmtpd_refused_recipient_and_wrong_password() {
    let dir = TempDir::new().unwrap();
    let refuse = vec![("gone@example.com".to_owned(), 550)];
    let Some((server, config)) = aiosmtpd(dir.path(), "starttls", refuse) else {
        return;
    };
    let run = send(dir.path(), Route::Config(&config))
        .args(["--to", "ok@example.com,gone@example.com"])
        .expect_exit(67);
    assert!(
        run.stderr.contains("gone@example.com (550"),
        "{}",
        run.stderr
    );

    send(dir.path(), Route::Config(&config))
        .env("ENVOI_TEST_PASSWORD", "wrong-password")
        .args(["--to", "ok@example.com"])
        .expect_exit(77);
    assert!(server.messages().is_empty(), "something was delivered");
}

#[test]
fn smtp_sink_receives_the_exact_envelope_and_message() {
    let Some(sink) = SmtpSink::start(&[]) else {
        return;
    };
    let dir = TempDir::new().unwrap();
    envoi(dir.path())
        .env(
            "ENVOI_SMTP_URL",
            format!("smtp://127.0.0.1:{}?security=none", sink.port()),
        )
        .args(["send", "--from", "s@example.test", "--to", "r@example.test"])
        .args(["--cc", "c@example.test", "--bcc", "b@example.test"])
        .args(["--subject", "sink check", "--body", ".starts with a dot"])
        .expect_exit(0);
    let dumps = sink.parsed_dumps();
    assert_eq!(dumps.len(), 1, "smtp-sink log:\n{}", sink.log());
    let SinkDump {
        mail_args,
        rcpt_args,
        message,
        ..
    } = &dumps[0];
    assert_eq!(mail_args, "<s@example.test>");
    assert_eq!(
        rcpt_args,
        &["<r@example.test>", "<c@example.test>", "<b@example.test>"]
    );
    let parsed = MessageParser::default().parse(message).unwrap();
    assert_eq!(parsed.subject(), Some("sink check"));
    assert!(parsed.bcc().is_none());
    assert_eq!(
        parsed.body_text(0).unwrap().trim_end(),
        ".starts with a dot"
    );
}

#[test]
fn smtp_sink_faults_map_to_exit_codes() {
    // (smtp-sink option, the command it rejects, expected exit code): -f = hard 5xx,
    // -r = soft 4xx.
    for (option, command, code) in [
        ("-f", "RCPT", 67),
        ("-r", "RCPT", 75),
        ("-f", "MAIL", 69),
        ("-r", "DATA", 75),
    ] {
        let Some(sink) = SmtpSink::start(&[option, command]) else {
            return;
        };
        let dir = TempDir::new().unwrap();
        eprintln!("case: smtp-sink {option} {command}");
        let run = send(dir.path(), Route::Url(sink.port()))
            .args([
                "--from",
                "s@example.test",
                "--to",
                "r@example.test",
                "--json",
                "--retries",
                "0",
            ])
            .expect_exit(code);
        assert_eq!(run.json()["exit_code"], code);
        assert!(
            sink.dumps().is_empty(),
            "{option} {command}: a message was delivered; smtp-sink log:\n{}",
            sink.log()
        );
    }
}

/// The connector's V3 receipts, by flag and by payload: ReadReceipt becomes
/// Disposition-Notification-To; DeliveryReceipt becomes Return-Receipt-To plus a DSN
/// request that smtp-sink (which offers DSN) records on MAIL and RCPT. With DSN off
/// (`-N`) only the headers go, and a warning says so.
#[test]
fn receipts_become_headers_and_a_dsn_request() {
    let dir = TempDir::new().unwrap();
    let payload = dir.path().join("payload.json");
    std::fs::write(
        &payload,
        r#"{"To": "r@example.test", "Subject": "receipts", "Body": "b",
            "ReadReceipt": "reader@example.test", "DeliveryReceipt": "Ops <ops@example.test>"}"#,
    )
    .unwrap();
    let by_flags: &[&str] = &[
        "--to",
        "r@example.test",
        "--subject",
        "receipts",
        "--body",
        "b",
        "--read-receipt",
        "reader@example.test",
        "--delivery-receipt",
        "Ops <ops@example.test>",
    ];
    let by_payload: &[&str] = &["--input", payload.to_str().unwrap()];
    for (sink_options, offers_dsn) in [(&[][..], true), (&["-N"][..], false)] {
        for args in [by_flags, by_payload] {
            let Some(sink) = SmtpSink::start(sink_options) else {
                return;
            };
            let run = envoi(dir.path())
                .env(
                    "ENVOI_SMTP_URL",
                    format!("smtp://127.0.0.1:{}?security=none", sink.port()),
                )
                .args(["send", "--from", "s@example.test"])
                .args(args)
                .expect_exit(0);
            let dumps = sink.parsed_dumps();
            assert_eq!(dumps.len(), 1, "{run}\n{}", sink.log());
            let dump = &dumps[0];
            if offers_dsn {
                assert_eq!(dump.mail_args, "<s@example.test> RET=HDRS", "{run}");
                assert_eq!(dump.rcpt_args, ["<r@example.test> NOTIFY=SUCCESS,FAILURE"]);
                assert!(!run.stderr.contains("DSN"), "{run}");
            } else {
                assert_eq!(dump.mail_args, "<s@example.test>", "{run}");
                assert_eq!(dump.rcpt_args, ["<r@example.test>"]);
                assert!(
                    run.stderr.contains("does not offer DSN")
                        && run.stderr.contains("Return-Receipt-To"),
                    "{run}"
                );
            }
            let parsed = MessageParser::default().parse(&dump.message).unwrap();
            let header = |name: &str| {
                parsed
                    .header_raw(name)
                    .map(str::trim)
                    .unwrap_or_else(|| panic!("no {name} in {run}"))
                    .to_owned()
            };
            assert_eq!(header("Disposition-Notification-To"), "reader@example.test");
            assert_eq!(header("Return-Receipt-To"), "Ops <ops@example.test>");
        }
    }
}
