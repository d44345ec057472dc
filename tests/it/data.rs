//! Message data is harmless (issue 16): a template sees only what it is given, rendering
//! is bounded, a path that comes from data cannot reach a file outside its folder, and a
//! piped body is not dropped. Each case is named after the audit's id and checked on what
//! reached the server (or that nothing did).

use assert_cmd::Command;
use mail_parser::MessageParser;

use crate::support::PASSWORD;
use crate::support::envoi::{ExpectExit, Setup, assert_no_secret};
use crate::support::smtp_server::{Received, Security, ServerOptions};

/// What a test's envoi runs see as a secret besides the canary password: the token
/// `$ENVOI_TOKEN` would give an `--smtp-url` connection.
const TOKEN: &str = "Tok3n-Canary-9f2e";

/// A server that wants the canary login, its config, and `ENVOI_PASSWORD`/`ENVOI_TOKEN`
/// set as CI would set them.
fn login() -> Setup {
    Setup::new(Security::StartTls, ServerOptions::default())
}

/// `envoi send --config …` with the canary in every variable envoi reads a secret from.
fn send(s: &Setup) -> Command {
    let mut cmd = s.send();
    cmd.env("ENVOI_PASSWORD", PASSWORD)
        .env("ENVOI_TOKEN", TOKEN)
        .env("JOB_NAME", "nightly-42");
    cmd
}

/// The message as text, for searching.
fn text(m: &Received) -> String {
    String::from_utf8_lossy(&m.data).into_owned()
}

/// MD03: a template sees the environment only through `--var-env NAME`: `{{ env }}`
/// and `{{ env.ENVOI_PASSWORD }}` without it are undefined (65, nothing sent), naming a
/// secret's variable is refused (64), and with `--var-env JOB_NAME` the template sees
/// that one variable and nothing else.
#[test]
fn md03_a_template_never_sees_envoi_password() {
    let s = login();
    for (subject, body) in [
        ("{{ env.ENVOI_PASSWORD }}", "x"),
        ("s", "{{ env }}"),
        ("{{ env.ENVOI_TOKEN }}", "x"),
    ] {
        let run = send(&s)
            .args(["--to", "a@example.com", "--template"])
            .args(["--subject", subject, "--body", body])
            .expect_exit(65);
        assert!(run.stderr.contains("--var-env"), "{run}");
        assert_no_secret(&run.output());
        assert!(!run.output().contains(TOKEN), "{run}");
    }
    // The profile's own password_env (ENVOI_TEST_PASSWORD), and envoi's variables.
    for name in ["ENVOI_PASSWORD", "ENVOI_TOKEN", "ENVOI_TEST_PASSWORD"] {
        let run = send(&s)
            .args(["--to", "a@example.com", "--template", "--var-env", name])
            .args(["--subject", "s", "--body", "{{ env }}"])
            .expect_exit(64);
        assert!(run.stderr.contains(&format!("--var-env {name}")), "{run}");
        assert_no_secret(&run.output());
    }
    s.assert_nothing_delivered();

    // Named, a variable is there; the dump holds it alone.
    let run = send(&s)
        .args([
            "--to",
            "a@example.com",
            "--template",
            "--var-env",
            "JOB_NAME",
        ])
        .args(["--subject", "Job {{ env.JOB_NAME }}", "--body", "{{ env }}"])
        .args(["--dry-run", "--json"])
        .expect_exit(0);
    assert_no_secret(&run.output());
    assert!(!run.output().contains(TOKEN), "{run}");
    send(&s)
        .args([
            "--to",
            "a@example.com",
            "--template",
            "--var-env",
            "JOB_NAME",
        ])
        .args(["--subject", "Job {{ env.JOB_NAME }}", "--body", "{{ env }}"])
        .expect_exit(0);
    let m = s.only_message();
    assert_no_secret(&text(&m));
    assert!(!text(&m).contains(TOKEN));
    let parsed = MessageParser::default().parse(&m.data).unwrap();
    assert_eq!(parsed.subject(), Some("Job nightly-42"));
    let body = parsed.body_text(0).unwrap();
    assert!(body.contains("nightly-42"), "{body}");
    assert!(!body.contains("PATH") && !body.contains("HOME"), "{body}");
}
