//! SASL XOAUTH2 and OAUTHBEARER against aiosmtpd speaking them as Gmail and Microsoft 365
//! do: the exact bytes of each mechanism, the token sources, and a refused token answered
//! the way those servers wait for (a reply to the `334 <JSON>` challenge) so the run ends
//! with 77 and the provider's reason, never a timeout.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::support::certs::TestPki;
use crate::support::envoi::{Config, ExpectExit, envoi};
use crate::support::external::{Aiosmtpd, AiosmtpdOptions};

const MAILBOX: &str = "bot@example.com";
const TOKEN: &str = "ya29.canary-token-5f2c";

/// An aiosmtpd server under STARTTLS accepting `TOKEN` for `MAILBOX`, and a config for it
/// whose profile logs in with `auth` and the extra `lines`.
fn server(dir: &Path, auth: &str, lines: &[&str]) -> Option<(Aiosmtpd, PathBuf)> {
    let pki = Arc::new(TestPki::new());
    let ca = pki.write_ca(dir);
    let server = Aiosmtpd::start(AiosmtpdOptions {
        security: "starttls",
        auth: None,
        refuse_rcpt: vec![],
        cert_key: Some(pki.write_leaf(dir)),
        oauth: Some((MAILBOX.into(), TOKEN.into())),
    })?;
    let mut config = Config::new(server.port(), "starttls")
        .trust(&ca)
        .line(&format!("username = \"{MAILBOX}\""))
        .line(&format!("auth = \"{auth}\""));
    for line in lines {
        config = config.line(line);
    }
    let config = config.write(dir);
    Some((server, config))
}

/// `envoi send -v` through `config`, with `$MAIL_TOKEN` set to `token`.
fn send(dir: &Path, config: &Path, token: &str) -> assert_cmd::Command {
    let mut cmd = envoi(dir);
    cmd.env("MAIL_TOKEN", token)
        .arg("send")
        .arg("--config")
        .arg(config)
        .args([
            "--to",
            "dev@example.com",
            "--subject",
            "token",
            "--body",
            "hi",
            "-v",
        ]);
    cmd
}

#[test]
fn xoauth2_and_oauthbearer_log_in_with_the_exact_sasl_message() {
    for auth in ["xoauth2", "oauthbearer"] {
        for source in [
            "token_env = \"MAIL_TOKEN\"",
            "token_command = \"printf '%s\\\\n' \\\"$MAIL_TOKEN\\\"\"",
        ] {
            eprintln!("case: {auth} with {source}");
            let dir = TempDir::new().expect("temp dir");
            let Some((server, config)) = server(dir.path(), auth, &[source]) else {
                return;
            };
            let run = send(dir.path(), &config, TOKEN).expect_exit(0);
            assert!(
                !run.output().contains(TOKEN),
                "the token was printed: {run}"
            );
            let messages = server.messages();
            assert_eq!(messages.len(), 1, "{run}\n{}", server.log());
            assert_eq!(messages[0].auth_user.as_deref(), Some(MAILBOX));
            assert!(messages[0].tls, "logged in without TLS");
            let sasl = server.sasl();
            assert_eq!(sasl.len(), 1, "{sasl:?}");
            let expected = match auth {
                "xoauth2" => format!("user={MAILBOX}\x01auth=Bearer {TOKEN}\x01\x01"),
                _ => format!(
                    "n,a={MAILBOX},\x01host=localhost\x01port={}\x01auth=Bearer {TOKEN}\x01\x01",
                    server.port()
                ),
            };
            assert_eq!(sasl[0].message.as_deref(), Some(expected.as_str()));
            assert!(sasl[0].ok);
        }
    }
}

/// A refused token: the client answers the JSON challenge at once (empty line for
/// XOAUTH2, ^A for OAUTHBEARER), gets the 535, and exits 77 with the provider's reason;
/// not retried, nothing sent, well before the 10 s command timeout.
#[test]
fn a_refused_token_is_77_at_once_with_the_providers_reason() {
    for auth in ["xoauth2", "oauthbearer"] {
        let dir = TempDir::new().expect("temp dir");
        let Some((server, config)) = server(dir.path(), auth, &["token_env = \"MAIL_TOKEN\""])
        else {
            return;
        };
        let started = Instant::now();
        let run = send(dir.path(), &config, "expired-token").expect_exit(77);
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{auth}: waited for a timeout instead of answering the challenge: {run}"
        );
        assert!(run.stderr.contains("\"status\":\"401\""), "{auth}: {run}");
        assert!(run.stderr.contains("535"), "{auth}: {run}");
        assert!(!run.stderr.contains("retrying"), "{auth}: {run}");
        assert!(!run.output().contains("expired-token"), "{auth}: {run}");
        assert!(server.messages().is_empty());
        let sasl = server.sasl();
        assert_eq!(sasl.len(), 2, "{auth}: {sasl:?}");
        assert!(!sasl[0].ok);
        assert!(
            sasl[1].mechanism.ends_with("error reply") && sasl[1].ok,
            "{auth}: the challenge was not answered as the mechanism requires: {sasl:?}"
        );
    }
}

/// Token keys are checked like password keys: the wrong kind of secret, or none, is
/// named (78) before anything connects.
#[test]
fn token_keys_that_do_not_fit_auth_are_configuration_errors() {
    let cases: [(&str, &[&str], &str); 4] = [
        (
            "xoauth2",
            &["password_env = \"MAIL_TOKEN\""],
            "logs in with a token, not a password",
        ),
        ("oauthbearer", &[], "needs token_env or token_command"),
        (
            "xoauth2",
            &["token_env = \"MAIL_TOKEN\"", "token_command = \"true\""],
            "only one of token_env and token_command",
        ),
        (
            "password",
            &["token_env = \"MAIL_TOKEN\""],
            "token_env is for auth",
        ),
    ];
    for (auth, lines, says) in cases {
        let dir = TempDir::new().expect("temp dir");
        let path = Config::new(9, "starttls")
            .line(&format!("username = \"{MAILBOX}\""))
            .line(&format!("auth = \"{auth}\""))
            .write(dir.path());
        let text = std::fs::read_to_string(&path).expect("config") + &lines.join("\n") + "\n";
        std::fs::write(&path, text).expect("config");
        let run = send(dir.path(), &path, TOKEN).expect_exit(78);
        assert!(run.stderr.contains(says), "{auth} {lines:?}: {run}");
    }
}
