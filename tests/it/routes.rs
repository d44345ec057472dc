//! Routes (`[routes]`): profiles tried in turn, the next one only while the message
//! certainly reached nobody. Two real loopback servers stand for two relays; what each
//! of them received (connections, messages, bytes after the final dot) decides.

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;

use assert_cmd::Command;
use mail_parser::MessageParser;
use tempfile::TempDir;

use crate::support::USER;
use crate::support::certs::TestPki;
use crate::support::envoi::{ExpectExit, Route, envoi, send};
use crate::support::smtp_server::{Security, ServerOptions, TestServer};

/// A HOME whose config has the profiles `first` (its keys given) and `second` (the
/// server `second`, plain SMTP), and the default route `relays = ["first", "second"]`.
struct Relays {
    home: TempDir,
    config: PathBuf,
    second: TestServer,
}

impl Relays {
    fn new(first: &str) -> Relays {
        let home = TempDir::new().expect("temp dir");
        let second = TestServer::start(ServerOptions::default());
        let dir = home.path().join(".config/envoi");
        std::fs::create_dir_all(&dir).expect("config dir");
        let config = dir.join("config.toml");
        let text = format!(
            "default = \"relays\"\n\n\
             [profiles.first]\nfrom = \"Envoi Test <sender@example.com>\"\n{first}\n\n\
             [profiles.second]\nhost = \"localhost\"\nport = {}\nsecurity = \"none\"\n\
             from = \"Envoi Test <sender@example.com>\"\ntimeout_secs = 5\n\n\
             [routes]\nrelays = [\"first\", \"second\"]\n",
            second.port()
        );
        std::fs::write(&config, text).expect("write the config file");
        std::fs::set_permissions(&config, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("chmod 600 the config file");
        Relays {
            home,
            config,
            second,
        }
    }

    /// A profile `first` on `port` of 127.0.0.1, plain SMTP, 2 s per command.
    fn plain(port: u16) -> Relays {
        Relays::new(&format!(
            "host = \"127.0.0.1\"\nport = {port}\nsecurity = \"none\"\ntimeout_secs = 2"
        ))
    }

    fn log(&self) -> PathBuf {
        self.home.path().join("envoi.log")
    }

    /// `envoi send --json` to one recipient, without retries, logging to [`Relays::log`].
    fn send(&self) -> Command {
        let mut cmd = send(self.home.path(), Route::Config(&self.config));
        cmd.args([
            "--to",
            "a@example.com",
            "--subject",
            "routes",
            "--retries",
            "0",
        ])
        .args(["--json", "--log"])
        .arg(self.log());
        cmd
    }

    fn logged(&self) -> String {
        std::fs::read_to_string(self.log()).expect("the delivery log")
    }
}

/// A HOME whose config has the profiles `first` and `second` on two plain servers and
/// the default route `mail`: contoso.com's recipients through `first`, the others
/// through `second`.
fn by_domain() -> (TempDir, PathBuf, TestServer, TestServer) {
    let first = TestServer::start(ServerOptions::default());
    let r = Relays::plain(first.port());
    let text = std::fs::read_to_string(&r.config)
        .unwrap()
        .replace("default = \"relays\"", "default = \"mail\"")
        + "\n[routes.mail]\n\"*@contoso.com\" = \"first\"\n\"*\" = \"second\"\n";
    std::fs::write(&r.config, text).unwrap();
    (r.home, r.config, first, r.second)
}

/// A loopback port nothing listens on: connecting to it is refused.
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("port").port();
    drop(listener);
    port
}

fn message_id(data: &[u8]) -> String {
    MessageParser::default()
        .parse(data)
        .expect("a MIME message")
        .message_id()
        .expect("a Message-ID")
        .to_owned()
}

#[test]
fn the_first_down_the_second_gets_it_once() {
    let r = Relays::plain(closed_port());
    let run = r.send().expect_exit(0);
    let j = run.json();
    assert_eq!(j["status"], "sent", "{j}");
    assert_eq!(j["route"], "second", "{j}");
    assert!(
        run.stderr
            .contains("profile first did not take the message")
            && run.stderr.contains("trying profile second"),
        "the switch is said: {}",
        run.stderr
    );
    let messages = r.second.messages();
    assert_eq!(messages.len(), 1, "one copy");
    assert_eq!(messages[0].rcpt_to, ["a@example.com"]);
    assert_eq!(
        format!("<{}>", message_id(&messages[0].data)),
        j["message_id"].as_str().unwrap()
    );
    let line = r.logged();
    assert!(
        line.contains("profile=second host=localhost") && line.contains("status=sent"),
        "the log names the route that carried it: {line}"
    );
}

#[test]
fn a_421_before_the_message_goes_to_the_second() {
    let first = TestServer::start(ServerOptions {
        reply_421_at: Some("MAIL"),
        ..ServerOptions::default()
    });
    let r = Relays::plain(first.port());
    let run = r.send().arg("-v").expect_exit(0);
    let j = run.json();
    assert_eq!(j["route"], "second", "{j}");
    assert!(
        run.stderr.contains("route relays: profile first")
            && run.stderr.contains("route relays: profile second"),
        "-v says which profile each dialogue is: {}",
        run.stderr
    );
    assert_eq!(first.connections(), 1);
    assert!(first.messages().is_empty() && first.unacknowledged().is_empty());
    assert_eq!(r.second.messages().len(), 1);
}

#[test]
fn sendmail_follows_the_route_too() {
    let r = Relays::plain(closed_port());
    envoi(r.home.path())
        .args(["sendmail", "a@example.com"])
        .write_stdin("Subject: from cron\n\nhello\n")
        .expect_exit(0);
    let messages = r.second.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].rcpt_to, ["a@example.com"]);
}

#[test]
fn a_stall_after_the_final_dot_is_unknown_and_the_second_gets_nothing() {
    let first = TestServer::start(ServerOptions {
        hang_after_data: true,
        ..ServerOptions::default()
    });
    let r = Relays::new(&format!(
        "host = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\ntimeout_secs = 1",
        first.port()
    ));
    let run = r.send().expect_exit(75);
    let j = run.json();
    assert_eq!(j["kind"], "outcome_unknown", "{j}");
    assert_eq!(j["route"], "first", "{j}");
    assert_eq!(first.unacknowledged().len(), 1);
    assert_eq!(r.second.connections(), 0, "the second relay was not tried");
    assert!(r.second.messages().is_empty());
    assert!(
        !run.stderr.contains("trying profile"),
        "no switch: {}",
        run.stderr
    );
    assert!(r.logged().contains("profile=first host=127.0.0.1"));
}

#[test]
fn an_untrusted_certificate_on_the_first_is_77_and_the_second_gets_nothing() {
    let first = TestServer::start(ServerOptions {
        security: Security::StartTls,
        pki: Some(Arc::new(TestPki::new())),
        ..ServerOptions::default()
    });
    // No ca_file: the test CA is not among the system's roots.
    let r = Relays::new(&format!(
        "host = \"localhost\"\nport = {}\nsecurity = \"starttls\"",
        first.port()
    ));
    let j = r.send().expect_exit(77).json();
    assert_eq!(j["kind"], "certificate", "{j}");
    assert_eq!(j["route"], "first", "{j}");
    assert_eq!(
        r.second.connections(),
        0,
        "no silent switch to another relay"
    );
}

#[test]
fn a_refused_login_on_the_first_is_77_and_the_second_gets_nothing() {
    let first = TestServer::start(ServerOptions {
        auth: Some((USER.into(), "the-right-one".into())),
        ..ServerOptions::default()
    });
    let r = Relays::new(&format!(
        "host = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\nallow_plaintext_auth = true\n\
         username = \"{USER}\"\npassword_env = \"ENVOI_TEST_PASSWORD\"",
        first.port()
    ));
    let j = r.send().expect_exit(77).json();
    assert_eq!(j["kind"], "auth_refused", "{j}");
    assert!(first.messages().is_empty());
    assert_eq!(
        r.second.connections(),
        0,
        "no silent switch to another relay"
    );
}

#[test]
fn a_route_naming_no_profile_is_78_naming_the_key() {
    let r = Relays::new("host = \"127.0.0.1\"");
    let text = std::fs::read_to_string(&r.config)
        .unwrap()
        .replace("[\"first\", \"second\"]", "[\"first\", \"secnod\"]");
    std::fs::write(&r.config, text).unwrap();
    let run = r.send().expect_exit(78);
    assert!(
        run.stderr.contains("routes.relays") && run.stderr.contains("\"secnod\""),
        "{}",
        run.stderr
    );
    assert_eq!(r.second.connections(), 0);
}

/// The profiles of a route, for `config show`: the first's keys apply.
#[test]
fn config_show_explains_a_route_by_its_first_profile() {
    let r = Relays::new("host = \"first.example\"");
    let run = envoi(r.home.path())
        .args(["config", "show", "--config"])
        .arg(&r.config)
        .expect_exit(0);
    assert!(run.stdout.contains("first.example"), "{}", run.stdout);
}

#[test]
fn rules_by_domain_send_one_transaction_per_route_with_one_message_id() {
    let (home, config, first, second) = by_domain();
    let log = home.path().join("envoi.log");
    let run = send(home.path(), Route::Config(&config))
        .args([
            "--to",
            "ann@contoso.com;bob@example.org",
            "--bcc",
            "audit@Contoso.com",
        ])
        .args(["--subject", "split", "--json", "--log"])
        .arg(&log)
        .expect_exit(0);
    let j = run.json();
    assert_eq!(j["status"], "sent", "{j}");
    let [at_first] = first
        .messages()
        .try_into()
        .expect("one transaction at first");
    let [at_second] = second
        .messages()
        .try_into()
        .expect("one transaction at second");
    // The domain matched in any case (the envelope writes it in lowercase).
    assert_eq!(at_first.rcpt_to, ["ann@contoso.com", "audit@contoso.com"]);
    assert_eq!(at_second.rcpt_to, ["bob@example.org"]);
    assert_eq!(at_first.data, at_second.data, "the same bytes");
    let id = message_id(&at_first.data);
    assert_eq!(format!("<{id}>"), j["message_id"].as_str().unwrap());
    let text = String::from_utf8_lossy(&at_first.data);
    assert!(!text.contains("audit@"), "Bcc stays out of the header");
    let routes = j["routes"].as_array().expect("each route's part");
    assert_eq!(routes.len(), 2, "{j}");
    assert_eq!(routes[0]["route"], "first");
    assert_eq!(routes[0]["recipients"][1], "audit@contoso.com");
    assert_eq!(routes[1]["route"], "second");
    assert_eq!(routes[1]["status"], "sent");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert_eq!(logged.lines().count(), 2, "a line per route: {logged}");
    assert!(logged.contains("profile=first host=127.0.0.1 "), "{logged}");
    assert!(
        logged.contains("profile=second host=localhost "),
        "{logged}"
    );
}

#[test]
fn one_route_failing_is_the_exit_code_and_the_other_route_keeps_its_copy() {
    let (home, config, first, second) = by_domain();
    drop(first);
    let run = send(home.path(), Route::Config(&config))
        .args([
            "--to",
            "ann@contoso.com;bob@example.org",
            "--subject",
            "split",
        ])
        .args(["--retries", "0", "--json"])
        .expect_exit(75);
    let j = run.json();
    assert!(
        j["message"]
            .as_str()
            .unwrap()
            .contains("through profile first to ann@contoso.com")
            && j["message"]
                .as_str()
                .unwrap()
                .contains("delivered to bob@example.org"),
        "{j}"
    );
    assert_eq!(j["routes"][0]["status"], "deferred", "{j}");
    assert_eq!(j["routes"][1]["status"], "sent", "{j}");
    assert_eq!(second.messages().len(), 1);
    assert_eq!(second.messages()[0].rcpt_to, ["bob@example.org"]);
}

/// A 550 for one recipient beside a 450 for another makes the send temporary (75), but the
/// 550 stands: the second relay must not deliver what the first refused for good, so the
/// route does not fall over at all.
#[test]
fn a_recipient_refused_for_good_is_never_sent_through_the_next_profile() {
    let first = TestServer::start(ServerOptions {
        refuse_rcpt: vec![
            ("gone@example.com".to_owned(), 550),
            ("busy@example.com".to_owned(), 450),
        ],
        ..ServerOptions::default()
    });
    let r = Relays::plain(first.port());
    let run = send(r.home.path(), Route::Config(&r.config))
        .args(["--to", "gone@example.com;busy@example.com"])
        .args(["--subject", "routes", "--retries", "0", "--json"])
        .expect_exit(75);
    assert!(
        !run.stderr.contains("trying profile second"),
        "it fell over: {}",
        run.stderr
    );
    assert_eq!(r.second.connections(), 0, "{run}");
    assert!(first.messages().is_empty());
}

/// Two rules for one domain, differing in case only, are 78: which one won would depend
/// on the file's order.
#[test]
fn two_rules_for_one_domain_are_78() {
    let (home, config, _first, second) = by_domain();
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "\"*@contoso.com\" = \"first\"\n",
        "\"*@contoso.com\" = \"first\"\n\"*@Contoso.COM\" = \"second\"\n",
    );
    std::fs::write(&config, text).unwrap();
    let run = send(home.path(), Route::Config(&config))
        .args(["--to", "ann@contoso.com", "--subject", "s"])
        .expect_exit(78);
    assert!(run.stderr.contains("contoso.com"), "{}", run.stderr);
    assert_eq!(second.connections(), 0);
}

/// The outbox commands read a route's outbox folder from its first profile; with rules
/// whose "*" names a list, that is the list's first profile (it was 78 "no profile").
#[test]
fn outbox_commands_work_when_the_catch_all_rule_names_a_list() {
    let (home, config, _first, _second) = by_domain();
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("\"*\" = \"second\"", "\"*\" = \"relays\"");
    std::fs::write(&config, text).unwrap();
    envoi(home.path())
        .args(["outbox", "list", "--config"])
        .arg(&config)
        .expect_exit(0);
}
