//! Message data is harmless (issue 16): a template sees only what it is given, rendering
//! is bounded, a path that comes from data cannot reach a file outside its folder, and a
//! piped body is not dropped. Each case is named after the audit's id and checked on what
//! reached the server (or that nothing did).

use assert_cmd::Command;
use mail_parser::MessageParser;
use serde_json::Value;

use crate::support::PASSWORD;
use crate::support::envoi::{ExpectExit, Setup, assert_no_secret, envoi};
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

/// The nested loop of the audit: a billion steps.
const LOOP_BOMB: &str =
    "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}";

/// A string repeated in a loop: 10 GB of text.
const TEXT_BOMB: &str = "{% for i in range(100000) %}{{ 'x' * 100000 }}{% endfor %}";

/// MD04: a template bomb ends with 65 and a plain reason, in `send` and in a batch's
/// CSV merge (that record invalid, the next one sent), instead of holding a CPU or
/// filling memory.
#[test]
fn md04_a_template_bomb_is_stopped() {
    let s = Setup::plain(ServerOptions::default(), 10);
    for (bomb, why) in [(LOOP_BOMB, "ran too long"), (TEXT_BOMB, "more than 16 MiB")] {
        let run = s
            .send()
            .args(["--to", "a@example.com", "--subject", "s", "--template"])
            .args(["--body", bomb])
            .expect_exit(65);
        assert!(run.stderr.contains(why), "{run}");
    }
    s.assert_nothing_delivered();

    let rows = s.home().join("rows.csv");
    std::fs::write(&rows, "to,kind\na@example.com,bomb\nb@example.com,fine\n").unwrap();
    let run = envoi(s.home())
        .arg("batch")
        .arg("--config")
        .arg(&s.config)
        .arg(&rows)
        .args(["--json", "--subject", "s"])
        .args([
            "--body",
            &format!("{{% if kind == 'bomb' %}}{TEXT_BOMB}{{% else %}}fine{{% endif %}}"),
        ])
        .expect_exit(65);
    let lines: Vec<Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["exit_code"], 65, "{run}");
    let error = lines[0]["error"].as_str().unwrap();
    assert!(
        error.contains("line 2: --body") && error.contains("16 MiB"),
        "{run}"
    );
    let m = s.only_message();
    assert_eq!(m.rcpt_to, ["b@example.com"]);
}
