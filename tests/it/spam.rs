//! What envoi sends must land in the inbox: each message type goes through the
//! in-process server, and what arrived is scored by SpamAssassin (`spamassassin -L -t`,
//! Debian's package and rules, local tests only). No rule may add points, save XPRIO on
//! a message with a priority (the best peers score the same): the headers and MIME
//! layout envoi writes carry no spam sign, so a regression (a header like
//! `X-MSMail-Priority` without `X-MimeOLE`, an HTML-only body) fails here.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::support::envoi::{ExpectExit, Setup};
use crate::support::external::require_external;
use crate::support::smtp_server::{Security, ServerOptions};

/// SpamAssassin's verdict on `message`: its total score and each rule hit with its points.
fn score(home: &Path, message: &[u8]) -> (f64, Vec<(f64, String)>) {
    let mut child = Command::new("spamassassin")
        .args(["-L", "-t"])
        .env_clear()
        .env("HOME", home)
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run spamassassin");
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(message)
        .expect("feed spamassassin");
    let out = child.wait_with_output().expect("spamassassin ends");
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    let total = report
        .lines()
        .find_map(|l| l.strip_prefix("Content analysis details:"))
        .and_then(|l| l.trim().trim_start_matches('(').split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no score in the report:\n{report}"));
    // The table after "pts rule name": "-0.0 NO_RECEIVED  Informational: …".
    let rules = report
        .lines()
        .skip_while(|l| !l.starts_with(" pts rule name"))
        .skip(2)
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let points = words.next()?.parse().ok()?;
            Some((points, words.next()?.to_owned()))
        })
        .collect();
    (total, rules)
}

#[test]
fn no_message_type_scores_a_spam_point() {
    let present = Command::new("spamassassin")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !require_external("spamassassin", present) {
        return;
    }
    let s = Setup::new(Security::StartTls, ServerOptions::default());
    let log = s.home().join("build.log");
    std::fs::write(&log, "step 3/7 failed: exit status 2\n").expect("write the log");
    let html = "<h1>Nightly</h1><p>All <b>412</b> tests passed. \
                See <a href=\"https://ci.example.com/run/9\">the run</a>.</p>";
    let cases: [(&str, Vec<&str>); 6] = [
        (
            "plain text",
            vec!["--body", "All 412 tests passed in 3 min."],
        ),
        (
            "HTML with its text",
            vec!["--html", "--body", html, "--text", "All 412 passed."],
        ),
        (
            "HTML alone (text part written by envoi)",
            vec!["--html", "--body", html],
        ),
        (
            "an attachment",
            vec![
                "--body",
                "The log is attached.",
                "--attach",
                log.to_str().unwrap(),
            ],
        ),
        (
            "a UTF-8 subject",
            vec![
                "--body",
                "Alles grün.",
                "--subject",
                "Grüße: Bericht für März ✓",
            ],
        ),
        (
            "importance high",
            vec!["--body", "The build failed.", "--importance", "high"],
        ),
    ];
    for (i, (what, args)) in cases.iter().enumerate() {
        let mut cmd = s.send();
        cmd.args(["--to", "Ann Lee <ann@example.com>"]);
        if !args.contains(&"--subject") {
            cmd.args(["--subject", "Nightly report"]);
        }
        cmd.args(args).expect_exit(0);
        let messages = s.server.messages();
        assert_eq!(messages.len(), i + 1, "{what}");
        let (total, rules) = score(s.home(), &messages[i].data);
        // X-Priority is what Thunderbird and Apple Mail show as priority; SpamAssassin's
        // XPRIO (+1.0) scores it on an unsigned message, as it does for msmtp, swaks and
        // Python (the best peers score 1.0 for the same message). Nothing else may score.
        let allowed: &[&str] = if what.starts_with("importance") {
            &["XPRIO"]
        } else {
            &[]
        };
        let scoring: Vec<&(f64, String)> = rules
            .iter()
            .filter(|(p, rule)| *p > 0.0 && !allowed.contains(&rule.as_str()))
            .collect();
        let bound = if allowed.is_empty() { 0.0 } else { 1.0 };
        assert!(
            total <= bound && scoring.is_empty(),
            "{what} scores {total}: {scoring:?} (all rules: {rules:?})"
        );
    }
}
