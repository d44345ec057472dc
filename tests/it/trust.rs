//! Honest trust for relays without a public CA: a self-signed certificate (the kind
//! `openssl req -x509` makes, which says it is a CA) given as the profile's `ca_file`, or
//! the server's certificate pinned by its SHA-256 with `tls_fingerprint`. Every refusal is
//! 77 before any AUTH, and says how to trust the certificate if it is the right one.

use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::sync::Arc;
use std::time::Duration;

use tempfile::TempDir;

use crate::support::certs::{Leaf, TestPki};
use crate::support::envoi::{Config, ExpectExit, Route, Run, envoi, send};
use crate::support::external::require_external;
use crate::support::smtp_server::{Security, ServerOptions, TestServer};
use crate::support::{PASSWORD, USER};

/// A server with `pki`'s certificate that wants the canary login, and a directory for
/// the config and the certificate files.
struct Relay {
    dir: TempDir,
    server: TestServer,
    pki: Arc<TestPki>,
    security: Security,
}

impl Relay {
    fn start(pki: impl Into<Arc<TestPki>>, security: Security) -> Relay {
        let pki = pki.into();
        let server = TestServer::start(ServerOptions {
            security,
            auth: Some((USER.into(), PASSWORD.into())),
            pki: Some(Arc::clone(&pki)),
            ..ServerOptions::default()
        });
        Relay {
            dir: TempDir::new().expect("temp dir"),
            server,
            pki,
            security,
        }
    }

    /// The server's own certificate, written as a PEM file (what `ca_file` names).
    fn certificate_file(&self) -> PathBuf {
        self.pki.write_ca(self.dir.path())
    }

    /// A config that logs in to this server, plus `lines`.
    fn config(&self, lines: &[&str]) -> PathBuf {
        let security = match self.security {
            Security::Plain => "none",
            Security::StartTls => "starttls",
            Security::ImplicitTls => "tls",
        };
        let mut config = Config::new(self.server.port(), security).login();
        for line in lines {
            config = config.line(line);
        }
        config.write(self.dir.path())
    }

    /// `envoi send` of one small message along `config`.
    fn send(&self, config: &Path) -> assert_cmd::Command {
        let mut cmd = send(self.dir.path(), Route::Config(config));
        cmd.args([
            "--to",
            "a@example.com",
            "--subject",
            "trust",
            "--body",
            "hi",
        ]);
        cmd
    }

    /// The message arrived over TLS, after the login.
    fn assert_delivered(&self) {
        let messages = self.server.messages();
        assert_eq!(messages.len(), 1, "{:?}", self.server.transcript());
        assert!(messages[0].tls, "not over TLS");
        assert_eq!(messages[0].authenticated_as.as_deref(), Some(USER));
    }

    /// The server saw one connection and no AUTH and no MAIL on it; nothing arrived.
    fn assert_refused_before_auth(&self) {
        assert!(self.server.wait_idle(Duration::from_secs(5)), "server busy");
        let transcript = self.server.transcript();
        assert!(
            !transcript
                .iter()
                .any(|l| l.starts_with("AUTH") || l.starts_with("MAIL")),
            "{transcript:?}"
        );
        if self.security == Security::StartTls {
            // The refusal came at the handshake, not before it: the transcript is real.
            assert!(transcript.iter().any(|l| l == "STARTTLS"), "{transcript:?}");
        }
        assert!(self.server.messages().is_empty(), "a message was delivered");
        assert_eq!(
            self.server.connections(),
            1,
            "a certificate refusal was retried"
        );
    }
}

/// A 77 that says the certificate is not trusted, and `reason`.
#[track_caller]
fn assert_untrusted(run: &Run, reason: &str) {
    assert!(
        run.stderr.contains("certificate is not trusted"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(reason),
        "wanted {reason:?}:\n{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("Context"),
        "a Rust debug dump:\n{}",
        run.stderr
    );
}

/// A certificate and key made by the real `openssl req -x509`, which marks it `CA:TRUE`
/// (what rustls refused as "CaUsedAsEndEntity"); `None` (skipped) when openssl is not
/// installed, unless CI or ENVOI_REQUIRE_EXTERNAL says it must be.
fn openssl_self_signed(dir: &Path) -> Option<TestPki> {
    let (cert, key) = (dir.join("openssl-cert.pem"), dir.join("openssl-key.pem"));
    let made = Process::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes"])
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
        ])
        .args(["-days", "2", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output();
    let made = match made {
        Ok(out) => out,
        Err(_) => {
            require_external("openssl", false);
            return None;
        }
    };
    assert!(
        made.status.success(),
        "openssl req failed: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    let text = |path: &Path| std::fs::read_to_string(path).expect("read what openssl wrote");
    let pki = TestPki::from_pem(&text(&cert), &text(&key));
    let shown = Process::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(&cert)
        .output()
        .expect("openssl x509");
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.contains("CA:TRUE"),
        "not the case under test:\n{shown}"
    );
    Some(pki)
}

/// What `openssl x509 -noout -fingerprint -sha256` prints for the certificate at `path`,
/// after the `=`.
fn openssl_fingerprint(path: &Path) -> String {
    let out = Process::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(path)
        .output()
        .expect("openssl x509 -fingerprint");
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .split_once('=')
        .expect("sha256 Fingerprint=…")
        .1
        .to_owned()
}

#[test]
fn an_openssl_self_signed_certificate_given_as_ca_file_is_trusted() {
    let scratch = TempDir::new().unwrap();
    let Some(pki) = openssl_self_signed(scratch.path()) else {
        return;
    };
    let pki = Arc::new(pki);
    for security in [Security::ImplicitTls, Security::StartTls] {
        let relay = Relay::start(Arc::clone(&pki), security);
        let ca = relay.certificate_file();
        let config = relay.config(&[&format!("ca_file = \"{}\"", ca.display())]);
        relay.send(&config).expect_exit(0);
        relay.assert_delivered();
    }
}

#[test]
fn a_self_signed_ca_certificate_given_as_ca_file_is_trusted() {
    let relay = Relay::start(TestPki::self_signed(Leaf::Good), Security::ImplicitTls);
    let ca = relay.certificate_file();
    let config = relay.config(&[&format!("ca_file = \"{}\"", ca.display())]);
    relay.send(&config).expect_exit(0);
    relay.assert_delivered();
}

#[test]
fn a_self_signed_certificate_not_given_is_77_with_the_fix_and_its_fingerprint() {
    let relay = Relay::start(TestPki::self_signed(Leaf::Good), Security::StartTls);
    let config = relay.config(&[]);
    let run = relay.send(&config).expect_exit(77);
    assert_untrusted(&run, "self-signed");
    let fingerprint = relay.pki.leaf_fingerprint();
    assert!(
        run.stderr.contains("as ca_file")
            && run
                .stderr
                .contains(&format!("tls_fingerprint = \"{fingerprint}\"")),
        "the fix, with {fingerprint}:\n{}",
        run.stderr
    );
    relay.assert_refused_before_auth();
}

#[test]
fn a_self_signed_certificate_given_as_ca_file_is_still_checked_for_name_and_dates() {
    for (leaf, reason) in [
        (Leaf::WrongHost, "issued for another host name"),
        (Leaf::Expired, "expired"),
    ] {
        let relay = Relay::start(TestPki::self_signed(leaf), Security::StartTls);
        let ca = relay.certificate_file();
        let config = relay.config(&[&format!("ca_file = \"{}\"", ca.display())]);
        let run = relay.send(&config).expect_exit(77);
        assert_untrusted(&run, reason);
        if leaf == Leaf::WrongHost {
            assert!(
                run.stderr.contains("wrong.example") && run.stderr.contains("localhost"),
                "the names, both sides: {}",
                run.stderr
            );
        }
        relay.assert_refused_before_auth();
    }
}

#[test]
fn a_ca_file_with_another_self_signed_certificate_does_not_trust_this_one() {
    let relay = Relay::start(TestPki::self_signed(Leaf::Good), Security::ImplicitTls);
    let other = TestPki::self_signed(Leaf::Good);
    let other_dir = TempDir::new().unwrap();
    let ca = other.write_ca(other_dir.path());
    let config = relay.config(&[&format!("ca_file = \"{}\"", ca.display())]);
    let run = relay.send(&config).expect_exit(77);
    assert_untrusted(&run, &relay.pki.leaf_fingerprint());
    relay.assert_refused_before_auth();
}

#[test]
fn a_pinned_certificate_is_trusted_without_ca_file() {
    // The pin as openssl prints it, then bare lower-case hex: both are the same pin.
    let pki = TestPki::self_signed(Leaf::Good);
    let printed = pki.leaf_fingerprint();
    let bare = printed.replace(':', "").to_ascii_lowercase();
    let relay = Relay::start(pki, Security::ImplicitTls);
    let config = relay.config(&[&format!("tls_fingerprint = \"{printed}\"")]);
    relay.send(&config).expect_exit(0);
    relay.assert_delivered();

    // A certificate signed by a CA nobody trusts, for a name the profile does not use:
    // the pin alone decides.
    let relay = Relay::start(TestPki::with_leaf(Leaf::WrongHost), Security::StartTls);
    let bare_other = relay
        .pki
        .leaf_fingerprint()
        .replace(':', "")
        .to_ascii_lowercase();
    assert_ne!(bare, bare_other);
    let config = relay.config(&[&format!("tls_fingerprint = \"{bare_other}\"")]);
    relay.send(&config).expect_exit(0);
    relay.assert_delivered();
}

#[test]
fn the_pin_matches_what_openssl_prints() {
    let scratch = TempDir::new().unwrap();
    let Some(pki) = openssl_self_signed(scratch.path()) else {
        return;
    };
    let printed = openssl_fingerprint(&scratch.path().join("openssl-cert.pem"));
    assert_eq!(printed, pki.leaf_fingerprint(), "sha2 and openssl disagree");
    let relay = Relay::start(pki, Security::ImplicitTls);
    let config = relay.config(&[&format!("tls_fingerprint = \"{printed}\"")]);
    relay.send(&config).expect_exit(0);
    relay.assert_delivered();
}

#[test]
fn a_wrong_pin_is_77_before_any_auth_with_both_fingerprints() {
    let relay = Relay::start(TestPki::self_signed(Leaf::Good), Security::StartTls);
    let expected = TestPki::self_signed(Leaf::Good).leaf_fingerprint();
    let config = relay.config(&[&format!("tls_fingerprint = \"{expected}\"")]);
    let run = relay.send(&config).arg("--json").expect_exit(77);
    assert_untrusted(&run, "tls_fingerprint");
    let seen = relay.pki.leaf_fingerprint();
    assert!(
        run.stderr.contains(&expected) && run.stderr.contains(&seen),
        "both fingerprints, expected {expected} and seen {seen}:\n{}",
        run.stderr
    );
    assert_eq!(run.json()["kind"], "certificate");
    relay.assert_refused_before_auth();
}

#[test]
fn a_malformed_pin_is_78_naming_the_key_and_nothing_connects() {
    let relay = Relay::start(TestPki::self_signed(Leaf::Good), Security::ImplicitTls);
    let good = relay.pki.leaf_fingerprint();
    let sha1 = "AB:".repeat(19) + "AB";
    for bad in [
        "",
        "AB:CD",
        &good[..good.len() - 3],
        &format!("{good}:00"),
        &good.replace(':', "-"),
        &good.replacen(|c: char| c.is_ascii_hexdigit(), "Z", 1),
        sha1.as_str(),
    ] {
        let config = relay.config(&[&format!("tls_fingerprint = \"{bad}\"")]);
        let run = relay.send(&config).expect_exit(78);
        assert!(
            run.stderr.contains("tls_fingerprint"),
            "{bad:?}: {}",
            run.stderr
        );
        assert!(run.stderr.contains("SHA-256"), "{bad:?}: {}", run.stderr);
    }
    let config = relay.config(&[&format!("tls_fingerprint = \"{}\"", &sha1)]);
    let run = relay.send(&config).expect_exit(78);
    assert!(run.stderr.contains("SHA-1"), "{}", run.stderr);
    assert_eq!(relay.server.connections(), 0, "a malformed pin connected");
}

#[test]
fn a_pin_and_a_ca_file_together_are_78() {
    let relay = Relay::start(TestPki::self_signed(Leaf::Good), Security::ImplicitTls);
    let ca = relay.certificate_file();
    let config = relay.config(&[
        &format!("ca_file = \"{}\"", ca.display()),
        &format!("tls_fingerprint = \"{}\"", relay.pki.leaf_fingerprint()),
    ]);
    let run = relay.send(&config).expect_exit(78);
    assert!(
        run.stderr
            .contains("give ca_file or tls_fingerprint, not both"),
        "{}",
        run.stderr
    );
    assert_eq!(relay.server.connections(), 0);
}

#[test]
fn check_and_config_show_tell_a_pinned_certificate() {
    let relay = Relay::start(TestPki::self_signed(Leaf::Good), Security::StartTls);
    let fingerprint = relay.pki.leaf_fingerprint();
    let config = relay.config(&[&format!("tls_fingerprint = \"{fingerprint}\"")]);
    let check = || {
        let mut cmd = envoi(relay.dir.path());
        cmd.env("ENVOI_TEST_PASSWORD", PASSWORD)
            .args(["check", "--config"])
            .arg(&config);
        cmd
    };
    let json = check().arg("--json").expect_exit(0).json();
    assert_eq!(json["certificate"]["pinned"], true, "{json}");
    assert_eq!(
        json["certificate"]["sha256"],
        fingerprint.as_str(),
        "{json}"
    );
    let human = check().expect_exit(0);
    assert!(human.stdout.contains("certificate pinned"), "{human}");
    assert!(!human.stdout.contains("certificate verified"), "{human}");
    assert!(human.stdout.contains(&fingerprint), "{human}");
    assert!(relay.server.wait_idle(Duration::from_secs(5)));
    assert!(
        relay
            .server
            .transcript()
            .iter()
            .any(|l| l.starts_with("AUTH")),
        "check logged in over the pinned connection"
    );

    let shown = envoi(relay.dir.path())
        .env("ENVOI_TEST_PASSWORD", PASSWORD)
        .args(["config", "show", "--config"])
        .arg(&config)
        .expect_exit(0);
    let row = shown
        .stdout
        .lines()
        .find(|l| l.starts_with("tls_fingerprint"))
        .unwrap_or_else(|| panic!("no tls_fingerprint row: {shown}"));
    assert!(
        row.contains(&fingerprint) && row.contains("config file"),
        "{row}"
    );
}

#[test]
fn a_system_without_ca_certificates_still_refuses_at_the_handshake_with_the_fix() {
    // SSL_CERT_FILE replaces the system's roots (rustls-native-certs): here, with none.
    let relay = Relay::start(TestPki::self_signed(Leaf::Good), Security::StartTls);
    let empty = relay.dir.path().join("no-roots.pem");
    std::fs::write(&empty, "").unwrap();
    let config = relay.config(&[]);
    let run = relay
        .send(&config)
        .env("SSL_CERT_FILE", &empty)
        .expect_exit(77);
    assert_untrusted(&run, "self-signed");
    assert!(
        run.stderr.contains(&relay.pki.leaf_fingerprint()),
        "{}",
        run.stderr
    );
    relay.assert_refused_before_auth();

    let ca = relay.certificate_file();
    let config = relay.config(&[&format!("ca_file = \"{}\"", ca.display())]);
    relay
        .send(&config)
        .env("SSL_CERT_FILE", &empty)
        .expect_exit(0);
    relay.assert_delivered();
}

#[test]
fn a_probe_of_a_self_signed_relay_says_how_to_trust_it() {
    let relay = Relay::start(TestPki::self_signed(Leaf::Good), Security::ImplicitTls);
    let run = envoi(relay.dir.path())
        .args(["check", "--timeout", "2", "--probe"])
        .arg(format!("localhost:{}", relay.server.port()))
        .expect_exit(77);
    let fingerprint = relay.pki.leaf_fingerprint();
    assert!(
        run.stdout.contains("self-signed") && run.stdout.contains(&fingerprint),
        "{run}"
    );
    assert!(
        run.stderr.contains("ca_file") && run.stderr.contains("tls_fingerprint"),
        "{run}"
    );
    assert!(!run.output().contains("Context"), "{run}");
}

/// Whether the tests run as root, which the ownership tests need (to give files to
/// `nobody`); CI and this project's containers do.
pub(crate) fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(2))
            == Some("0")
    })
}
