//! Recipient policy (`[profiles.NAME.policy]`, the system file's `[policy]`) against the
//! in-process server: what it received (connections, RCPT TO, the bytes of the message)
//! decides. A refused message must reach no server at all.

use std::path::{Path, PathBuf};

use mail_parser::MessageParser;
use serde_json::Value;

use crate::support::envoi::{Config, ExpectExit, Run, Setup, envoi};
use crate::support::smtp_server::{Received, ServerOptions, TestServer};

/// A plain server and a config whose profile `test` ends with `policy` (its
/// `[profiles.test.policy]` lines).
fn with_policy(policy: &str) -> Setup {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let server = TestServer::start(ServerOptions::default());
    let config = Config::new(server.port(), "none")
        .line(&format!("[profiles.test.policy]\n{policy}"))
        .write(dir.path());
    Setup {
        dir,
        server,
        config,
    }
}

/// The system-wide file every run of the tests reads (`ENVOI_SYSTEM_CONFIG`), in `home`.
fn write_system(home: &Path, text: &str) -> PathBuf {
    let path = home.join("system-config.toml");
    std::fs::write(&path, text).expect("write the system config");
    path
}

/// `envoi send` with `args` after a subject (and a body, unless `args` give one).
fn send(s: &Setup, args: &[&str]) -> assert_cmd::Command {
    let mut cmd = s.send();
    cmd.args(["--subject", "policy", "--retries", "0"])
        .args(args);
    if !args.contains(&"--body") {
        cmd.args(["--body", "Hello"]);
    }
    cmd
}

/// The header block of a received message, as text.
fn header(m: &Received) -> String {
    let data = String::from_utf8_lossy(&m.data);
    data.split("\r\n\r\n").next().unwrap_or_default().to_owned()
}

/// The unfolded value of the only field called `name`, if any.
fn field(m: &Received, name: &str) -> Option<String> {
    let unfolded = header(m).replace("\r\n ", " ");
    let mut found = unfolded
        .lines()
        .filter_map(|l| l.split_once(": "))
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.to_owned());
    let first = found.next();
    assert!(found.next().is_none(), "{name} twice in {unfolded}");
    first
}

/// The refused run's error names the rule, its value, the recipient and where it was
/// written; nothing reached the server.
fn assert_refused(s: &Setup, run: &Run, says: &str) {
    assert_refused_by(s, run, says, &s.config);
}

/// [`assert_refused`], the rule written in the file `file`.
fn assert_refused_by(s: &Setup, run: &Run, says: &str, file: &Path) {
    assert!(run.stderr.contains(says), "{says:?} not in {}", run.stderr);
    assert!(
        run.stderr.contains(&file.display().to_string()),
        "the file is named: {}",
        run.stderr
    );
    assert_eq!(
        s.server.connections(),
        0,
        "a refused message opens no connection"
    );
    s.assert_nothing_delivered();
}

#[test]
fn deny_wins_over_allow_and_refuses_before_any_connection() {
    let s = with_policy(
        "allow = [\"*@example.com\", \"ops@partner.org\"]\ndeny = [\"ceo@example.com\", \"*@customer.com\"]",
    );
    // A blind copy is in the envelope, so it is checked as To is; case does not help.
    let run = send(&s, &["--to", "ann@example.com", "--bcc", "CEO@Example.com"]).expect_exit(65);
    assert_refused(
        &s,
        &run,
        "policy.deny \"ceo@example.com\" refuses CEO@example.com (profile \"test\"",
    );
    let run = send(&s, &["--to", "ann@example.com", "--cc", "bob@customer.com"]).expect_exit(65);
    assert_refused(
        &s,
        &run,
        "policy.deny \"*@customer.com\" refuses bob@customer.com",
    );
    let run = send(&s, &["--to", "carl@elsewhere.org"]).expect_exit(65);
    assert_refused(
        &s,
        &run,
        "policy.allow [\"*@example.com\", \"ops@partner.org\"] does not list carl@elsewhere.org",
    );
    // A subdomain is not the domain.
    send(&s, &["--to", "ann@mail.example.com"]).expect_exit(65);
    assert_eq!(s.server.connections(), 0);

    send(&s, &["--to", "Ann@Example.com", "--cc", "OPS@partner.org"]).expect_exit(0);
    let m = s.only_message();
    assert_eq!(m.rcpt_to, ["Ann@example.com", "OPS@partner.org"]);
}

#[test]
fn max_recipients_counts_the_envelope_and_a_required_key_must_be_given() {
    let s = with_policy("max_recipients_per_message = 2\nrequire_idempotency_key = true");
    let run = send(
        &s,
        &[
            "--to",
            "a@example.com",
            "--cc",
            "b@example.com",
            "--bcc",
            "c@example.com",
        ],
    )
    .expect_exit(65);
    assert_refused(
        &s,
        &run,
        "policy.max_recipients_per_message 2 refuses a message for 3 recipients",
    );
    let run = send(&s, &["--to", "a@example.com"]).expect_exit(65);
    assert_refused(&s, &run, "policy.require_idempotency_key (profile \"test\"");
    assert!(run.stderr.contains("--idempotency-key"), "{}", run.stderr);

    send(&s, &["--to", "a@example.com", "--idempotency-key", "job-1"]).expect_exit(0);
    // The key does its work: the second run sends nothing.
    send(&s, &["--to", "a@example.com", "--idempotency-key", "job-1"]).expect_exit(0);
    assert_eq!(s.only_message().rcpt_to, ["a@example.com"]);
}

#[test]
fn redirect_all_sends_only_to_the_redirect_address_and_keeps_the_originals() {
    let s = with_policy("redirect_all = \"qa@example.com\"");
    send(
        &s,
        &[
            "--to",
            "Bob <bob@customer.com>",
            "--cc",
            "carl@customer.com",
            "--bcc",
            "o'brien&co@customer.com",
            "--header",
            "Resent-To: dave@customer.com",
            "--html",
            "--body",
            "<html><body><p>Hello</p></body></html>",
        ],
    )
    .expect_exit(0);
    let m = s.only_message();
    assert_eq!(
        m.rcpt_to,
        ["qa@example.com"],
        "the server sees the redirect alone"
    );
    assert_eq!(field(&m, "To").as_deref(), Some("qa@example.com"));
    assert_eq!(
        field(&m, "Resent-To"),
        None,
        "a visible field names no original"
    );
    assert_eq!(
        field(&m, "Cc"),
        None,
        "a reply-all must not reach the customers"
    );
    assert_eq!(
        field(&m, "X-Envoi-Original-To").as_deref(),
        Some("bob@customer.com")
    );
    assert_eq!(
        field(&m, "X-Envoi-Original-Cc").as_deref(),
        Some("carl@customer.com")
    );
    assert_eq!(
        field(&m, "X-Envoi-Original-Bcc").as_deref(),
        Some("o'brien&co@customer.com")
    );
    // The blind copy is in no other field.
    let head = header(&m);
    let bcc_lines: Vec<&str> = head.lines().filter(|l| l.contains("o'brien")).collect();
    assert_eq!(bcc_lines, ["X-Envoi-Original-Bcc: o'brien&co@customer.com"]);
    let parsed = MessageParser::default().parse(&m.data).expect("a message");
    let text = parsed.body_text(0).expect("a text part");
    assert!(
        text.starts_with(
            "[envoi policy.redirect_all; the original recipients: To: bob@customer.com; \
             Cc: carl@customer.com; Bcc: o'brien&co@customer.com]"
        ),
        "{text}"
    );
    let html = parsed.body_html(0).expect("an HTML part");
    assert!(
        html.contains("<body><p>[envoi policy.redirect_all; the original recipients: To: bob@customer.com; Cc: carl@customer.com; Bcc: o&#39;brien&amp;co@customer.com]</p>"),
        "escaped, inside the body: {html}"
    );
}

#[test]
fn sendmail_is_redirected_too_and_its_blind_copies_stay_out_of_the_header() {
    let s = with_policy("redirect_all = \"qa@example.com\"");
    let input = b"To: bob@customer.com\nCc: carl@customer.com\nBcc: hidden@customer.com\n\
                  Subject: cron\n\nthe job ran\n";
    envoi(s.home())
        .args(["sendmail", "--config"])
        .arg(&s.config)
        .args(["-t", "extra@customer.com"])
        .write_stdin(&input[..])
        .expect_exit(0);
    let m = s.only_message();
    assert_eq!(m.rcpt_to, ["qa@example.com"]);
    assert_eq!(field(&m, "To").as_deref(), Some("qa@example.com"));
    assert_eq!(field(&m, "Cc"), None);
    assert_eq!(field(&m, "Bcc"), None);
    assert_eq!(
        field(&m, "X-Envoi-Original-To").as_deref(),
        Some("bob@customer.com")
    );
    assert_eq!(
        field(&m, "X-Envoi-Original-Bcc").as_deref(),
        Some("extra@customer.com, hidden@customer.com")
    );
    let data = String::from_utf8_lossy(&m.data);
    // Wrapped at spaces: a body line must stay under 998 octets however long the list.
    let body = data
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .replace("\r\n", " ");
    assert!(
        body.starts_with("[envoi policy.redirect_all; the original recipients: To: bob@customer.com; Cc: carl@customer.com; Bcc: extra@customer.com, hidden@customer.com]"),
        "{body}"
    );
}

#[test]
fn sendmail_to_a_denied_recipient_is_refused() {
    let s = with_policy("deny = [\"*@customer.com\"]");
    let run = envoi(s.home())
        .args(["sendmail", "--config"])
        .arg(&s.config)
        .arg("bob@customer.com")
        .write_stdin(&b"Subject: x\n\nbody\n"[..])
        .expect_exit(65);
    assert_refused(
        &s,
        &run,
        "policy.deny \"*@customer.com\" refuses bob@customer.com",
    );
}

#[test]
fn a_refused_batch_record_is_invalid_and_the_others_go() {
    let s = with_policy("deny = [\"*@customer.com\"]");
    let records = [
        r#"{"To":"a@example.com","Subject":"one","Body":"1"}"#,
        r#"{"To":"bob@customer.com","Subject":"two","Body":"2"}"#,
        r#"{"To":"c@example.com","Subject":"three","Body":"3"}"#,
    ];
    let file = s.home().join("mail.jsonl");
    std::fs::write(&file, records.join("\n")).unwrap();
    let report = s.home().join("report.jsonl");
    envoi(s.home())
        .args(["batch", "--config"])
        .arg(&s.config)
        .arg("--report")
        .arg(&report)
        .arg(&file)
        .expect_exit(65);
    let rcpts: Vec<Vec<String>> = s.server.messages().into_iter().map(|m| m.rcpt_to).collect();
    assert_eq!(rcpts, [["a@example.com"], ["c@example.com"]]);
    let lines: Vec<Value> = std::fs::read_to_string(&report)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let statuses: Vec<&str> = lines
        .iter()
        .map(|l| l["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["sent", "invalid", "sent"]);
    let error = lines[1]["error"].as_str().unwrap();
    assert!(
        error.contains("policy.deny \"*@customer.com\" refuses bob@customer.com"),
        "{error}"
    );
}

#[test]
fn a_batch_under_a_required_key_keeps_a_report() {
    let s = with_policy("require_idempotency_key = true");
    let file = s.home().join("mail.jsonl");
    std::fs::write(
        &file,
        r#"{"To":"a@example.com","Subject":"one","Body":"1"}"#,
    )
    .unwrap();
    let run = envoi(s.home())
        .args(["batch", "--config"])
        .arg(&s.config)
        .arg(&file)
        .expect_exit(65);
    assert_refused(&s, &run, "policy.require_idempotency_key");
    assert!(run.stderr.contains("--report"), "{}", run.stderr);
}

#[test]
fn a_user_config_cannot_loosen_the_system_policy() {
    // The user's profile allows everyone and caps at 50; the system file denies
    // customer.com and caps at 2.
    let s = with_policy("allow = [\"*\"]\nmax_recipients_per_message = 50");
    let system = write_system(
        s.home(),
        "[policy]\ndeny = [\"*@customer.com\"]\nmax_recipients_per_message = 2\n",
    );
    let run = send(&s, &["--to", "bob@customer.com"]).expect_exit(65);
    assert_refused_by(
        &s,
        &run,
        "policy.deny \"*@customer.com\" refuses bob@customer.com (system policy",
        &system,
    );
    let three = ["--to", "a@example.com,b@example.com,c@example.com"];
    let run = send(&s, &three).expect_exit(65);
    assert_refused_by(
        &s,
        &run,
        "policy.max_recipients_per_message 2 refuses a message for 3 recipients (system policy",
        &system,
    );
    send(&s, &["--to", "a@example.com,b@example.com"]).expect_exit(0);
    assert_eq!(s.only_message().rcpt_to, ["a@example.com", "b@example.com"]);
}

#[test]
fn the_system_redirect_wins_over_the_users() {
    let s = with_policy("redirect_all = \"me@example.org\"");
    write_system(s.home(), "[policy]\nredirect_all = \"qa@example.com\"\n");
    send(&s, &["--to", "bob@customer.com"]).expect_exit(0);
    let m = s.only_message();
    assert_eq!(m.rcpt_to, ["qa@example.com"]);
    assert_eq!(
        field(&m, "X-Envoi-Original-To").as_deref(),
        Some("bob@customer.com")
    );
}

#[test]
fn config_show_and_check_name_where_each_rule_came_from() {
    let s = with_policy("deny = [\"*@customer.com\"]\nredirect_all = \"qa@example.com\"");
    let system = write_system(s.home(), "[policy]\nmax_recipients_per_message = 5\n");
    for command in [&["config", "show"][..], &["check"][..]] {
        let run = envoi(s.home())
            .args(command)
            .arg("--config")
            .arg(&s.config)
            .expect_exit(0);
        let out = run.output();
        for (rule, from) in [
            (
                "policy.deny",
                format!("profile \"test\", {}", s.config.display()),
            ),
            (
                "policy.redirect_all",
                format!("profile \"test\", {}", s.config.display()),
            ),
            (
                "policy.max_recipients_per_message",
                format!("system policy, {}", system.display()),
            ),
        ] {
            let line = out
                .lines()
                .find(|l| l.contains(rule))
                .unwrap_or_else(|| panic!("{rule} not shown by {command:?}: {out}"));
            assert!(line.contains(&from), "{line}");
        }
    }
}

#[test]
fn the_system_policy_holds_for_a_url_and_lint_shows_it() {
    let server = TestServer::start(ServerOptions::default());
    let home = tempfile::TempDir::new().expect("temp dir");
    let system = write_system(home.path(), "[policy]\nallow = [\"*@example.com\"]\n");
    let url = format!("smtp://127.0.0.1:{}?security=none", server.port());
    let send = |to: &str, extra: &[&str]| {
        let mut cmd = envoi(home.path());
        cmd.args(["send", "--smtp-url", &url, "--from", "bot@example.com"])
            .args([
                "--to",
                to,
                "--subject",
                "s",
                "--body",
                "b",
                "--retries",
                "0",
            ])
            .args(extra);
        cmd
    };
    let run = send("bob@customer.com", &[]).expect_exit(65);
    assert!(
        run.stderr.contains(&format!(
            "policy.allow [\"*@example.com\"] does not list bob@customer.com (system policy, {})",
            system.display()
        )),
        "{}",
        run.stderr
    );
    assert_eq!(server.connections(), 0);
    let run = send("ann@example.com", &["--lint"]).expect_exit(0);
    assert!(
        run.stderr.contains(&format!(
            "envoi: policy: policy.allow [\"*@example.com\"] (system policy, {})",
            system.display()
        )),
        "{}",
        run.stderr
    );
    send("ann@example.com", &[]).expect_exit(0);
    let rcpts: Vec<Vec<String>> = server.messages().into_iter().map(|m| m.rcpt_to).collect();
    assert_eq!(rcpts, [["ann@example.com"]]);
}

#[test]
fn a_cap_per_hour_holds_across_runs_and_stops_a_batch() {
    let s = with_policy("max_messages_per_hour = 3");
    for n in 1..=2 {
        send(&s, &["--to", &format!("r{n}@example.com")]).expect_exit(0);
    }
    // A duplicate sends nothing and takes no slot.
    send(&s, &["--to", "r3@example.com", "--idempotency-key", "k"]).expect_exit(0);
    send(&s, &["--to", "r3@example.com", "--idempotency-key", "k"]).expect_exit(0);
    let run = send(&s, &["--to", "r4@example.com"]).expect_exit(75);
    assert!(
        run.stderr
            .contains("policy.max_messages_per_hour 3 reached (profile \"test\""),
        "{}",
        run.stderr
    );
    assert_eq!(s.server.messages().len(), 3, "the fourth never went");
    assert_eq!(s.server.connections(), 3);

    // A batch in the next run stops at its first record, which --resume sends later.
    let file = s.home().join("mail.jsonl");
    std::fs::write(
        &file,
        r#"{"To":"b1@example.com","Subject":"one","Body":"1"}"#,
    )
    .unwrap();
    let run = envoi(s.home())
        .args(["batch", "--config"])
        .arg(&s.config)
        .arg("--report")
        .arg(s.home().join("report.jsonl"))
        .arg(&file)
        .expect_exit(75);
    assert!(
        run.stderr.contains("the batch stopped at line 1")
            && run.stderr.contains("max_messages_per_hour 3 reached"),
        "{}",
        run.stderr
    );
    assert_eq!(s.server.messages().len(), 3);
}

#[test]
fn a_cap_per_day_lets_a_batch_send_up_to_it() {
    let s = with_policy("max_messages_per_day = 2");
    let records: Vec<String> = (1..=3)
        .map(|i| format!(r#"{{"To":"b{i}@example.com","Subject":"m{i}","Body":"x"}}"#))
        .collect();
    let file = s.home().join("mail.jsonl");
    std::fs::write(&file, records.join("\n")).unwrap();
    envoi(s.home())
        .args(["batch", "--config"])
        .arg(&s.config)
        .arg("--report")
        .arg(s.home().join("report.jsonl"))
        .arg(&file)
        .expect_exit(75);
    let rcpts: Vec<Vec<String>> = s.server.messages().into_iter().map(|m| m.rcpt_to).collect();
    assert_eq!(rcpts, [["b1@example.com"], ["b2@example.com"]]);
}

#[test]
fn a_broken_policy_is_78_naming_the_key_and_the_file() {
    let s = with_policy("deny = [\"customer.com\"]");
    let run = send(&s, &["--to", "a@example.com"]).expect_exit(78);
    assert!(
        run.stderr.contains(&format!(
            "profile \"test\" in {}: policy.deny: \"customer.com\" is not a recipient pattern",
            s.config.display()
        )),
        "{}",
        run.stderr
    );
    let ok = with_policy("deny = [\"*@customer.com\"]");
    let system = write_system(ok.home(), "[policy]\nmax_messages_per_day = 0\n");
    let run = send(&ok, &["--to", "a@example.com"]).expect_exit(78);
    assert!(
        run.stderr.contains(&format!(
            "system policy in {}: policy.max_messages_per_day: 0 would refuse every message",
            system.display()
        )),
        "{}",
        run.stderr
    );
    assert_eq!(ok.server.connections(), 0);
}

/// A message queued before a deny rule was written is checked again by the flush that
/// would send it: it goes to failed/ with the rule named, and the server gets nothing.
#[test]
fn a_message_queued_before_a_deny_rule_is_not_sent_by_the_flush() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let config = Config::new(closed, "none")
        .line("outbox = true")
        .write(dir.path());
    let queued = envoi(dir.path())
        .args(["send", "--config"])
        .arg(&config)
        .args(["--from", "ci@example.com", "--to", "ceo@customer.example"])
        .args([
            "--subject",
            "queued",
            "--body",
            "x",
            "--retries",
            "0",
            "--json",
        ])
        .expect_exit(0);
    assert_eq!(queued.json()["status"], "queued", "{queued}");

    let server = TestServer::start(ServerOptions::default());
    Config::new(server.port(), "none")
        .line("outbox = true")
        .line("[profiles.test.policy]\ndeny = [\"*@customer.example\"]")
        .write(dir.path());
    let flush = envoi(dir.path())
        .args(["outbox", "flush", "--all", "--config"])
        .arg(&config)
        .output()
        .expect("run envoi outbox flush");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&flush.stdout),
        String::from_utf8_lossy(&flush.stderr)
    );
    assert!(said.contains("policy.deny"), "{said}");
    assert_eq!(server.connections(), 0, "{said}");
    let list = envoi(dir.path())
        .args(["outbox", "list", "--failed", "--config"])
        .arg(&config)
        .expect_exit(0);
    assert!(list.stdout.contains("ceo@customer.example"), "{list}");
}
