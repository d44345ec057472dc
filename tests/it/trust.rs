//! Honest trust for relays without a public CA: a self-signed certificate (the kind
//! `openssl req -x509` makes, which says it is a CA) given as the profile's `ca_file`, or
//! the server's certificate pinned by its SHA-256 with `tls_fingerprint`. Every refusal is
//! 77 before any AUTH, and says how to trust the certificate if it is the right one.

use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::support::certs::{Leaf, TestPki};
use crate::support::envoi::{Config, ExpectExit, Route, Run, envoi, hermetic_env, send};
use crate::support::external::require_external;
use crate::support::namespaces;
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
        send_along(self.dir.path(), config)
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

/// The system's roots are its CA bundle (`/etc/ssl/certs/ca-certificates.crt` here), not
/// also every file of the folder around it, which on Debian are links to the same roots
/// (read twice before); `SSL_CERT_DIR` still reads a folder. Each run gets a test-made
/// `/etc/ssl/certs` in a mount namespace of its own.
#[test]
fn the_system_roots_are_the_bundle_and_ssl_cert_dir_reads_the_folder() {
    if !namespaces::available() {
        return;
    }
    let relay = Relay::start(TestPki::with_leaf(Leaf::Good), Security::StartTls);
    let other = TestPki::with_leaf(Leaf::Good);
    let certs = relay.dir.path().join("etc-ssl-certs");
    std::fs::create_dir(&certs).unwrap();
    let bundle = certs.join("ca-certificates.crt");
    let config = relay.config(&[]);
    let run = |env: &[(&str, &str)]| {
        let mut command = namespaces::with_bind("/etc/ssl/certs", &certs);
        command
            .arg(assert_cmd::cargo::cargo_bin("envoi"))
            .env_clear()
            .envs(hermetic_env(relay.dir.path()))
            .env("ENVOI_TEST_PASSWORD", PASSWORD)
            .envs(env.iter().copied())
            .args(["send", "--config"])
            .arg(&config)
            .args([
                "--to",
                "a@example.com",
                "--subject",
                "roots",
                "--body",
                "hi",
            ]);
        Run::timed("envoi send (test-made /etc/ssl/certs)", &mut command).0
    };

    // The relay's CA in the bundle, after another: trusted, no ca_file needed.
    std::fs::write(&bundle, other.ca_pem() + &relay.pki.ca_pem()).unwrap();
    run(&[]).expect(0);
    assert_eq!(relay.server.messages().len(), 1);

    // The bundle without it, the CA as a file of the folder: not read, so not trusted.
    std::fs::write(&bundle, other.ca_pem()).unwrap();
    std::fs::write(certs.join("relay-ca.pem"), relay.pki.ca_pem()).unwrap();
    // (Both test CAs have one name: the bundle's is tried, and its signature fails.)
    assert_untrusted(&run(&[]).expect(77), "signature does not verify");

    // SSL_CERT_DIR names the folder: its files are read.
    run(&[("SSL_CERT_DIR", "/etc/ssl/certs")]).expect(0);
    assert_eq!(relay.server.messages().len(), 2);
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

// ---------------------------------------------------------------------------------------------
// Files and commands a config names (audit cases T24, DK02, DK04, TL06, PC01, PC02, OA12,
// OA14): only this user's files are trusted, only regular files of sane size are read,
// a command's output is capped and its whole process group stopped.
// ---------------------------------------------------------------------------------------------

/// The uid the ownership tests give files to: `nobody`.
const NOBODY: u32 = 65534;

/// A plain server that wants the canary login, and a config in `dir` that logs in to it
/// (password_env) with `lines` added.
fn login_server(dir: &Path, lines: &[&str]) -> (TestServer, PathBuf) {
    let server = TestServer::start(ServerOptions {
        auth: Some((USER.into(), PASSWORD.into())),
        ..ServerOptions::default()
    });
    let mut config = Config::new(server.port(), "none").line("allow_plaintext_auth = true");
    for line in lines {
        config = config.line(line);
    }
    let path = config.write(dir);
    (server, path)
}

/// `envoi send` of one small message along `config`, run in `dir`.
fn send_along(dir: &Path, config: &Path) -> assert_cmd::Command {
    let mut cmd = send(dir, Route::Config(config));
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

/// T24: a config that points to a secret (`password_env`) or holds one, owned by another
/// user or writable by others, is refused (78) before anything connects: whoever can
/// change it chooses the `host` the password goes to.
#[test]
fn t24_a_config_others_own_or_can_change_cannot_send_a_secret() {
    if !running_as_root() {
        eprintln!("skipped: giving a config to another user needs root");
        return;
    }
    let dir = TempDir::new().expect("temp dir");
    let login = format!("username = \"{USER}\"\npassword_env = \"ENVOI_TEST_PASSWORD\"");
    let (server, config) = login_server(dir.path(), &[&login]);
    std::os::unix::fs::chown(&config, Some(NOBODY), Some(NOBODY)).unwrap();
    let run = send_along(dir.path(), &config).expect_exit(78);
    assert!(
        run.stderr.contains("belongs to another user (uid 65534"),
        "{}",
        run.stderr
    );

    std::os::unix::fs::chown(&config, Some(0), Some(0)).unwrap();
    std::fs::set_permissions(&config, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    let run = send_along(dir.path(), &config).expect_exit(78);
    assert!(run.stderr.contains("chmod go-w"), "{}", run.stderr);

    // A 0600 config with the password itself, owned by another user.
    let inline = format!("username = \"{USER}\"\npassword = \"{PASSWORD}\"");
    let other = TempDir::new().expect("temp dir");
    let (_, config) = login_server(other.path(), &[&inline]);
    std::os::unix::fs::chown(&config, Some(NOBODY), Some(NOBODY)).unwrap();
    let run = send_along(dir.path(), &config).expect_exit(78);
    assert!(
        run.stderr.contains("belongs to another user"),
        "{}",
        run.stderr
    );
    assert!(!run.output().contains(PASSWORD), "{run}");
    assert_eq!(server.connections(), 0, "{:?}", server.transcript());

    // A file of our own: sent.
    let ours = TempDir::new().expect("temp dir");
    let (server, config) = login_server(ours.path(), &[&login]);
    send_along(dir.path(), &config).expect_exit(0);
    assert_eq!(server.messages().len(), 1);
}

/// An ed25519 DKIM key (PKCS#8 PEM, mode 600) at `dir/dkim.pem`.
fn dkim_key(dir: &Path) -> PathBuf {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("ed25519 key");
    let path = dir.join("dkim.pem");
    std::fs::write(&path, key.serialize_pem()).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    path
}

fn dkim_lines(key: &Path) -> String {
    format!(
        "dkim_selector = \"s1\"\ndkim_domain = \"example.com\"\ndkim_key_file = \"{}\"",
        key.display()
    )
}

/// DK02: a private 0600 DKIM key that belongs to another user is refused (78); the same
/// key as this user's signs.
#[test]
fn dk02_a_dkim_key_of_another_user_is_refused() {
    if !running_as_root() {
        eprintln!("skipped: giving a key to another user needs root");
        return;
    }
    let dir = TempDir::new().expect("temp dir");
    let key = dkim_key(dir.path());
    let server = TestServer::start(ServerOptions::default());
    let config = Config::new(server.port(), "none")
        .line(&dkim_lines(&key))
        .write(dir.path());
    send_along(dir.path(), &config).expect_exit(0);
    assert_eq!(
        server.messages().len(),
        1,
        "the key of our own does not sign"
    );

    std::os::unix::fs::chown(&key, Some(NOBODY), Some(NOBODY)).unwrap();
    let run = send_along(dir.path(), &config).expect_exit(78);
    assert!(
        run.stderr.contains("dkim_key_file") && run.stderr.contains("belongs to another user"),
        "{}",
        run.stderr
    );
    assert_eq!(server.messages().len(), 1, "sent with another user's key");
}

/// Makes a FIFO at `path` (mode 600).
fn fifo(path: &Path) {
    let made = std::process::Command::new("mkfifo")
        .args(["-m", "600"])
        .arg(path)
        .status()
        .expect("mkfifo");
    assert!(made.success(), "mkfifo {}", path.display());
}

/// DK04: a FIFO as `dkim_key_file` hung the send; a directory was "can be read by
/// others". Now each is 78 at once saying what it is.
#[test]
fn dk04_a_fifo_or_a_directory_as_dkim_key_file_is_refused_at_once() {
    let dir = TempDir::new().expect("temp dir");
    let server = TestServer::start(ServerOptions::default());
    let pipe = dir.path().join("key.fifo");
    fifo(&pipe);
    let folder = dir.path().join("keys");
    std::fs::create_dir(&folder).unwrap();
    std::fs::set_permissions(&folder, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    for (key, says) in [(&pipe, "not a regular file"), (&folder, "is a directory")] {
        let config = Config::new(server.port(), "none")
            .line(&dkim_lines(key))
            .write(dir.path());
        let started = Instant::now();
        let run = send_along(dir.path(), &config)
            .timeout(Duration::from_secs(20))
            .expect_exit(78);
        assert!(started.elapsed() < Duration::from_secs(10), "slow: {run}");
        assert!(
            run.stderr.contains(says) && run.stderr.contains("dkim_key_file"),
            "{}: {}",
            key.display(),
            run.stderr
        );
        assert!(
            !run.stderr.contains("can be read by others"),
            "{}",
            run.stderr
        );
    }
    assert!(server.messages().is_empty());
}

/// TL06: `--config` or `ca_file` as `/dev/zero` filled memory, as a FIFO hung; a config
/// over 1 MiB is no config. Each is now 78 at once naming the file.
#[test]
fn tl06_config_and_ca_file_must_be_regular_files_of_sane_size() {
    let dir = TempDir::new().expect("temp dir");
    let pipe = dir.path().join("named.fifo");
    fifo(&pipe);
    let big = dir.path().join("big.toml");
    std::fs::write(&big, "#".repeat(2 << 20)).unwrap();
    let quick = |cmd: &mut assert_cmd::Command, says: &str| {
        let started = Instant::now();
        let run = cmd.timeout(Duration::from_secs(20)).expect_exit(78);
        assert!(started.elapsed() < Duration::from_secs(10), "slow: {run}");
        assert!(run.stderr.contains(says), "wanted {says:?}: {run}");
    };
    for config in [Path::new("/dev/zero"), &pipe] {
        quick(
            &mut send_along(dir.path(), config),
            "not a regular file (a FIFO, socket or device)",
        );
    }
    quick(&mut send_along(dir.path(), &big), "larger than 1 MiB");

    let server = TestServer::start(ServerOptions {
        security: Security::StartTls,
        pki: Some(Arc::new(TestPki::new())),
        ..ServerOptions::default()
    });
    for ca in [Path::new("/dev/zero"), &pipe] {
        let config = Config::new(server.port(), "starttls")
            .trust(ca)
            .write(dir.path());
        quick(&mut send_along(dir.path(), &config), "ca_file");
    }
    assert!(server.messages().is_empty());
}

/// PC01: `password_command = "yes"` reached 1.5 GB. Now a command is stopped once it has
/// printed 64 KiB on either pipe (78), and nothing logs in.
#[test]
fn pc01_a_command_that_prints_without_end_is_stopped_at_64_kib() {
    let dir = TempDir::new().expect("temp dir");
    for command in ["yes", "yes >&2; exit 1"] {
        let line = format!("username = \"{USER}\"\npassword_command = \"{command}\"");
        let (server, config) = login_server(dir.path(), &[&line]);
        let started = Instant::now();
        let run = send_along(dir.path(), &config).expect_exit(78);
        assert!(started.elapsed() < Duration::from_secs(10), "slow: {run}");
        assert!(
            run.stderr.contains("printed more than 64 KiB"),
            "{command}: {}",
            run.stderr
        );
        assert!(
            run.stderr.len() < 4096,
            "the output was echoed: {} bytes",
            run.stderr.len()
        );
        assert!(
            !server.transcript().iter().any(|l| l.starts_with("AUTH")),
            "{:?}",
            server.transcript()
        );
    }
}

/// The pids of running processes whose environment holds `marker`.
fn processes_marked(marker: &str) -> Vec<u32> {
    let needle = marker.as_bytes();
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.windows(needle.len()).any(|w| w == needle))
        })
        .collect()
}

/// PC02: after "did not finish within 2 s and was stopped", the `sleep 31` that `sh`
/// started kept running. Now the command's whole process group is stopped.
#[test]
fn pc02_a_timed_out_command_leaves_no_process_behind() {
    let dir = TempDir::new().expect("temp dir");
    let marker = format!("ENVOI_PC02_MARK={}", std::process::id());
    let line = format!("username = \"{USER}\"\npassword_command = \"sleep 31; echo pw\"");
    let (_server, config) = login_server(dir.path(), &[&line, "timeout_secs = 2"]);
    let config_text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("timeout_secs = 10\n", "");
    std::fs::write(&config, config_text).unwrap();
    let run = send_along(dir.path(), &config)
        .env("ENVOI_PC02_MARK", std::process::id().to_string())
        .expect_exit(78);
    assert!(
        run.stderr.contains("did not finish within 2 s"),
        "{}",
        run.stderr
    );
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut left = processes_marked(&marker);
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        left = processes_marked(&marker);
    }
    for pid in &left {
        // Ours (they carry the marker): do not leave them to the machine.
        let _ = std::process::Command::new("kill")
            .arg(pid.to_string())
            .status();
    }
    assert!(left.is_empty(), "still running after the timeout: {left:?}");
}

/// OA12: a `token_url` with userinfo sent it as HTTP Basic and repeated the password in
/// errors. It is refused (78) without a word of it.
#[test]
fn oa12_a_token_url_with_a_password_is_refused_without_echoing_it() {
    let dir = TempDir::new().expect("temp dir");
    let config = Config::new(9, "starttls")
        .line("username = \"bot@example.com\"\nauth = \"xoauth2\"")
        .line("[profiles.test.oauth2]\nflow = \"client_credentials\"\nclient_id = \"app\"")
        .line("client_secret_env = \"ENVOI_TEST_PASSWORD\"")
        .line("token_url = \"http://user:Url-Canary-8e1f@127.0.0.1:9/token\"")
        .write(dir.path());
    let run = send_along(dir.path(), &config).expect_exit(78);
    assert!(
        run.stderr.contains("must not hold a user name or password"),
        "{}",
        run.stderr
    );
    assert!(!run.output().contains("Url-Canary-8e1f"), "{run}");
}

/// OA14: a token cache folder made readable by others later was used without a word.
/// Now it is refused (78) with the fix, before any token is fetched or read.
#[test]
fn oa14_a_token_cache_others_can_open_is_refused() {
    let dir = TempDir::new().expect("temp dir");
    let cache = dir.path().join(".cache/envoi");
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::set_permissions(&cache, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let config = Config::new(9, "starttls")
        .line("username = \"bot@example.com\"\nauth = \"xoauth2\"")
        .line("[profiles.test.oauth2]\nflow = \"client_credentials\"\nclient_id = \"app\"")
        .line("client_secret_env = \"ENVOI_TEST_PASSWORD\"")
        .line("token_url = \"http://127.0.0.1:9/token\"")
        .write(dir.path());
    let run = send_along(dir.path(), &config).expect_exit(78);
    assert!(
        run.stderr.contains("token cache folder") && run.stderr.contains("chmod 700"),
        "{}",
        run.stderr
    );
}

/// `--smtp-url` takes a private CA (`?ca_file=`) or a pin (`?tls_fingerprint=`), and
/// its certificate error advises those parameters, not profile keys: the pin it prints
/// is pasted into the URL and the send goes.
#[test]
fn smtp_url_takes_ca_file_or_tls_fingerprint_and_its_errors_say_so() {
    let pki = Arc::new(TestPki::new());
    let dir = TempDir::new().expect("temp dir");
    let ca = pki.write_ca(dir.path());
    let server = TestServer::start(ServerOptions {
        security: Security::StartTls,
        auth: Some((USER.into(), PASSWORD.into())),
        pki: Some(pki),
        ..ServerOptions::default()
    });
    let base = format!("smtp://{USER}@localhost:{}", server.port());
    let by_url = |url: &str, code: i32| {
        envoi(dir.path())
            .env("ENVOI_PASSWORD", PASSWORD)
            .args(["send", "--smtp-url", url, "--from", "sender@example.com"])
            .args(["--to", "a@example.com", "--subject", "s", "--body", "b"])
            .expect_exit(code)
    };
    let refused = by_url(&base, 77);
    assert!(refused.stderr.contains("as ?ca_file=PATH"), "{refused}");
    let pin = refused
        .stderr
        .split("?tls_fingerprint=")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("no ?tls_fingerprint= to paste: {refused}"));
    assert_eq!(pin.len(), 32 * 3 - 1, "{refused}");
    for key in ["ca_file", "tls_fingerprint"] {
        assert_eq!(
            refused.stderr.matches(key).count(),
            refused.stderr.matches(&format!("?{key}=")).count(),
            "a profile key in URL mode: {refused}"
        );
    }
    assert!(server.messages().is_empty());

    by_url(&format!("{base}?tls_fingerprint={pin}"), 0);
    by_url(&format!("{base}?ca_file={}", ca.display()), 0);
    assert_eq!(server.messages().len(), 2);
    let check = envoi(dir.path())
        .env("ENVOI_PASSWORD", PASSWORD)
        .args(["check", "--smtp-url"])
        .arg(format!("{base}?ca_file={}", ca.display()))
        .expect_exit(0);
    assert!(check.stdout.contains("the connection works"), "{check}");
    let shown = envoi(dir.path())
        .env("ENVOI_PASSWORD", PASSWORD)
        .args(["config", "show", "--smtp-url"])
        .arg(format!("{base}?ca_file={}", ca.display()))
        .expect_exit(0);
    let line = shown
        .stdout
        .lines()
        .find(|l| l.starts_with("ca_file"))
        .unwrap_or_else(|| panic!("no ca_file line: {shown}"));
    assert!(
        line.contains(&ca.display().to_string()) && line.ends_with("--smtp-url"),
        "{shown}"
    );

    let both = by_url(
        &format!("{base}?ca_file={}&tls_fingerprint={pin}", ca.display()),
        78,
    );
    assert!(both.stderr.contains("not both"), "{both}");
    let wrong = by_url(&format!("{base}?tls_fingerprint=AB:CD"), 78);
    assert!(
        wrong
            .stderr
            .contains("tls_fingerprint=AB:CD is not a SHA-256"),
        "{wrong}"
    );
    assert_eq!(server.messages().len(), 2);
}
