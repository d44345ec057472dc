//! `envoi check`, the connection doctor: it connects, secures, logs in and says QUIT,
//! against the in-process server, and sends no mail.

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::support::certs::{Leaf, TestPki};
use crate::support::envoi::{Config, ExpectExit, Run, Setup, assert_no_secret, envoi};
use crate::support::smtp_server::{Security, ServerOptions, TestServer};
use crate::support::{PASSWORD, USER};

/// `envoi check --config F …` with the canary password available.
fn check(s: &Setup) -> assert_cmd::Command {
    let mut cmd = envoi(s.home());
    cmd.env("ENVOI_TEST_PASSWORD", PASSWORD)
        .args(["check", "--config"])
        .arg(&s.config);
    cmd
}

#[test]
fn a_working_connection_is_described_and_no_mail_is_sent() {
    let s = Setup::new(Security::StartTls, ServerOptions::default());
    let run = check(&s).arg("--json").expect_exit(0);
    let json = run.json();
    assert_eq!(json["status"], "ok", "{json}");
    assert_eq!(json["login"], true, "{json}");
    assert!(
        json["tls"]["version"]
            .as_str()
            .is_some_and(|v| v.starts_with("TLSv1.")),
        "{json}"
    );
    let extensions: Vec<&str> = json["extensions"]
        .as_array()
        .expect("extensions")
        .iter()
        .filter_map(|e| e.as_str())
        .collect();
    assert!(
        extensions.iter().any(|e| e.starts_with("AUTH")),
        "{extensions:?}"
    );
    let cert = &json["certificate"];
    let names = cert["names"].as_array().expect("names");
    assert!(names.iter().any(|n| n == "localhost"), "{json}");
    assert!(
        cert["issuer"].as_str().is_some_and(|i| !i.is_empty()),
        "{json}"
    );
    assert!(cert["days_left"].as_i64().is_some_and(|d| d > 14), "{json}");
    assert!(
        json.get("warnings").is_none(),
        "a warning for a fresh certificate: {json}"
    );
    assert_no_secret(&run.output());
    assert!(s.server.wait_idle(Duration::from_secs(5)));
    let transcript = s.server.transcript();
    assert!(
        transcript.iter().any(|l| l.starts_with("AUTH")),
        "{transcript:?}"
    );
    assert!(
        transcript.iter().all(|l| !l.starts_with("MAIL")),
        "{transcript:?}"
    );
    assert_eq!(transcript.last().map(String::as_str), Some("QUIT"));
    s.assert_nothing_delivered();

    let human = check(&s).expect_exit(0);
    assert!(human.stdout.contains("no mail was sent"), "{human}");
    assert!(human.stdout.contains("login    ok"), "{human}");
    assert!(human.stdout.contains("issued by"), "{human}");
    assert!(
        !human.stderr.contains("expires in"),
        "no expiry warning: {human}"
    );
}

/// A certificate that expires in under 14 days (here in 3½) is a warning on standard
/// error, not a failure: exit 0, and `--json` gives the days left for a script to judge.
/// A certificate far from its end gets no warning.
#[test]
fn a_certificate_about_to_expire_is_a_warning_not_a_failure() {
    let pki = Arc::new(TestPki::with_leaf(Leaf::ExpiresSoon));
    let s = Setup::new(
        Security::ImplicitTls,
        ServerOptions {
            pki: Some(pki),
            ..ServerOptions::default()
        },
    );
    let run = check(&s).arg("--json").expect_exit(0);
    let json = run.json();
    assert_eq!(json["status"], "ok", "{json}");
    assert_eq!(json["certificate"]["days_left"], 3, "{json}");
    let expires = json["certificate"]["expires"]
        .as_str()
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| panic!("no expiry: {json}"));
    assert_eq!(
        json["warnings"],
        serde_json::json!([format!(
            "the server's certificate expires in 3 days ({expires})"
        )]),
        "the warning is in --json too"
    );

    let human = check(&s).expect_exit(0);
    assert!(
        human
            .stdout
            .contains(&format!("expires {expires} (in 3 days)")),
        "{human}"
    );
    assert!(human.stdout.contains("the connection works"), "{human}");
    assert_eq!(
        human.stderr,
        format!("envoi: warning: the server's certificate expires in 3 days ({expires})\n"),
        "{human}"
    );
    s.assert_nothing_delivered();

    let fresh = Setup::new(Security::ImplicitTls, ServerOptions::default());
    let human = check(&fresh).expect_exit(0);
    assert!(human.stdout.contains("the connection works"), "{human}");
    assert_eq!(
        human.stderr, "",
        "a warning for a fresh certificate: {human}"
    );
}

#[test]
fn a_wrong_password_is_77_and_an_unreachable_server_75() {
    let s = Setup::new(Security::StartTls, ServerOptions::default());
    let run = envoi(s.home())
        .env("ENVOI_TEST_PASSWORD", "Canary-Wrong-9x")
        .args(["check", "--json", "--config"])
        .arg(&s.config)
        .expect_exit(77);
    assert!(run.stderr.contains(&format!("{USER:?}")), "{run}");
    assert_eq!(run.json()["kind"], "auth_refused");

    let home = TempDir::new().expect("temp dir");
    envoi(home.path())
        .args(["check", "--smtp-url", "smtp://127.0.0.1:1?security=none"])
        .expect_exit(75);
    let file = Config::new(1, "none")
        .line("transport = \"file\"\ndir = \"x\"")
        .write(home.path());
    let run = envoi(home.path())
        .args(["check", "--config"])
        .arg(&file)
        .expect_exit(78);
    assert!(run.stderr.contains("no server to check"), "{run}");
}

/// `--probe` on a STARTTLS port: implicit TLS fails (the port speaks plain SMTP first),
/// STARTTLS works with a verified certificate, plain works; envoi says to use STARTTLS.
#[test]
fn probe_says_what_a_port_speaks() {
    let s = Setup::new(Security::StartTls, ServerOptions::default());
    let ca = s.home().join("ca.pem");
    assert!(ca.is_file(), "the test CA is written by Setup");
    let target = format!("localhost:{}", s.server.port());
    let run = envoi(s.home())
        .env("SSL_CERT_FILE", &ca)
        .args(["check", "--json", "--probe", &target])
        .expect_exit(0);
    let json = run.json();
    let works = |security: &str| {
        json["probes"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["security"] == security))
            .map(|p| p["works"] == true)
            .unwrap_or_else(|| panic!("no {security} probe: {json}"))
    };
    assert!(
        !works("tls") && works("starttls") && works("none"),
        "{json}"
    );
    assert_eq!(json["use"]["security"], "starttls", "{json}");
    assert_eq!(json["use"]["port"], s.server.port());
    s.assert_nothing_delivered();

    let home = TempDir::new().expect("temp dir");
    let run = envoi(home.path())
        .args(["check", "--probe", "127.0.0.1:1"])
        .expect_exit(75);
    assert!(run.stderr.contains("nothing answered SMTP"), "{run}");
}

/// `check --probe HOST:PORT` against `s`'s server, its CA trusted when `trusted`.
fn probe(s: &Setup, trusted: bool, code: i32) -> crate::support::envoi::Run {
    let target = format!("localhost:{}", s.server.port());
    let mut cmd = envoi(s.home());
    if trusted {
        cmd.env("SSL_CERT_FILE", s.home().join("ca.pem"));
    }
    cmd.args(["check", "--probe", &target, "--timeout", "20"])
        .expect_exit(code)
}

/// When STARTTLS is offered and then fails — refused (454), masked by a stripping
/// firewall, bytes injected before the handshake — plain SMTP answering is no advice
/// (each case named by what its STARTTLS line says):
/// the probe says something may be interfering and exits 75, never `security = "none"`.
#[test]
fn pr04_probe_never_advises_plaintext_after_starttls_failed() {
    let cases = [
        (
            "answered 454",
            ServerOptions {
                advertise_starttls: false,
                ehlo_extra: vec!["STARTTLS".into()],
                ..ServerOptions::default()
            },
        ),
        (
            "does not offer STARTTLS",
            ServerOptions {
                advertise_starttls: false,
                ehlo_extra: vec!["XXXXXXXA".into()],
                ..ServerOptions::default()
            },
        ),
        (
            "possible tampering",
            ServerOptions {
                inject_after_starttls: Some(b"250-evil\r\n250 AUTH PLAIN\r\n".to_vec()),
                ..ServerOptions::default()
            },
        ),
    ];
    for (case, opts) in cases {
        let s = Setup::new(Security::StartTls, opts);
        let run = probe(&s, true, 75);
        assert!(run.stdout.contains(case), "{case}: {run}");
        assert!(!run.stdout.contains("use:"), "{case}: {run}");
        assert!(
            !run.output().contains("security = \"none\"\n"),
            "{case}: {run}"
        );
        assert!(run.stderr.contains("may be interfering"), "{case}: {run}");
        assert!(
            !run.stderr.contains("only plain SMTP works"),
            "{case}: {run}"
        );
        s.assert_nothing_delivered();
    }
}

/// STARTTLS (or implicit TLS) works but the certificate is not trusted: 77 naming the
/// way that works and the ready `tls_fingerprint` line, not the plain port that also
/// answers; on an implicit-TLS port, within seconds.
#[test]
fn probe_with_an_untrusted_certificate_says_tls_works_and_gives_the_pin_line() {
    for (security, way, name) in [
        (Security::StartTls, "STARTTLS", "starttls"),
        (Security::ImplicitTls, "implicit TLS", "tls"),
    ] {
        let s = Setup::new(security, ServerOptions::default());
        let started = std::time::Instant::now();
        let run = probe(&s, false, 77);
        // An implicit-TLS port's plain ways are not tried: no 10 s greeting waits.
        assert!(started.elapsed() < Duration::from_secs(5), "{run}");
        let port = s.server.port();
        assert!(!run.stdout.contains("use:"), "{run}");
        assert!(
            run.stderr.contains(&format!(
                "{way} works on port {port}, the certificate is not trusted"
            )),
            "{run}"
        );
        assert!(
            run.stderr
                .contains(&format!("use port = {port} and security = \"{name}\"")),
            "{run}"
        );
        assert!(run.stderr.contains("ca_file"), "{run}");
        // The pin line is the one certificate errors print everywhere, ready to paste.
        let pin = run
            .stdout
            .lines()
            .find(|l| l.contains(&format!(" {name} ")))
            .and_then(|l| l.split("tls_fingerprint = \"").nth(1))
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_else(|| panic!("no tls_fingerprint line: {run}"));
        assert_eq!(pin.len(), 32 * 3 - 1, "{run}");
        assert!(!run.output().contains("security = \"none\"\n"), "{run}");
        // The advice works without a profile: the printed pin, or the CA file, given
        // to the probe itself makes that way succeed.
        let target = format!("localhost:{port}");
        let ca = s.home().join("ca.pem").display().to_string();
        for trust in [["--tls-fingerprint", pin], ["--ca-file", ca.as_str()]] {
            let again = envoi(s.home())
                .args(["check", "--probe", &target, "--timeout", "20"])
                .args(trust)
                .expect_exit(0);
            assert!(
                again.stdout.contains(&format!("security = \"{name}\"")),
                "{trust:?}: {again}"
            );
            assert!(!again.stderr.contains("not trusted"), "{trust:?}: {again}");
        }
        s.assert_nothing_delivered();
    }
}

/// `--ca-file` and `--tls-fingerprint` belong to `--probe` (a profile has its own keys),
/// and a pin that is not a SHA-256 is a usage error naming the flag.
#[test]
fn probe_trust_flags_need_probe_and_a_real_pin() {
    let home = tempfile::TempDir::new().unwrap();
    let run = envoi(home.path())
        .args(["check", "--ca-file", "/nonexistent.pem"])
        .expect_exit(64);
    assert!(run.stderr.contains("--probe"), "{run}");
    let run = envoi(home.path())
        .args([
            "check",
            "--probe",
            "localhost:1",
            "--tls-fingerprint",
            "AB:CD",
        ])
        .expect_exit(64);
    assert!(run.stderr.contains("--tls-fingerprint \"AB:CD\""), "{run}");
}

/// A server that never offers TLS on the port: plain SMTP is reported, with the warning
/// and exit 0, as before.
#[test]
fn pr04_probe_without_any_tls_still_reports_plain_smtp_with_a_warning() {
    let s = Setup::plain(ServerOptions::default(), 10);
    let run = probe(&s, false, 0);
    assert!(run.stdout.contains("security = \"none\""), "{run}");
    assert!(run.stderr.contains("only plain SMTP works"), "{run}");
}

/// A profile for `host:port` with `security`, the per-command timeout envoi's default
/// (30 s), no login: `dir/config.toml`.
fn profile_at(dir: &std::path::Path, host: &str, port: u16, security: &str) -> PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(
        &path,
        format!(
            "default = \"t\"\n[profiles.t]\nhost = \"{host}\"\nport = {port}\n\
             security = \"{security}\"\nfrom = \"sender@example.com\"\ntimeout_secs = 30\n"
        ),
    )
    .expect("write the config");
    path
}

/// `envoi check` and `envoi send` with `config`, timed.
fn check_and_send(
    home: &std::path::Path,
    config: &std::path::Path,
    code: i32,
) -> Vec<(Run, Duration)> {
    let mut check = envoi(home);
    check.args(["check", "--config"]).arg(config);
    let mut send = envoi(home);
    send.args(["send", "--config"]).arg(config).args([
        "--to",
        "a@example.com",
        "--subject",
        "x",
        "--body",
        "x",
    ]);
    [check, send]
        .into_iter()
        .map(|mut cmd| {
            let started = Instant::now();
            let run = cmd.expect_exit(code);
            (run, started.elapsed())
        })
        .collect()
}

/// `security = "starttls"` or `"none"` on port 465, whose server waits for a TLS
/// ClientHello and says nothing: 78 after a 2 s silence, not a 30 s timeout, on the one
/// connection (nothing more is sent to find out). Port 465 needs root to listen on; the
/// server listens on an address of the loopback range no other test uses.
#[test]
fn starttls_on_port_465_is_named_after_two_silent_seconds_on_one_connection() {
    if !crate::trust::running_as_root() {
        eprintln!("skipped: listening on port 465 needs root");
        return;
    }
    let server = TestServer::start(ServerOptions {
        security: Security::ImplicitTls,
        pki: Some(Arc::new(TestPki::new())),
        listen: Some(SocketAddr::from(([127, 0, 4, 65], 465))),
        ..ServerOptions::default()
    });
    for security in ["starttls", "none"] {
        let dir = TempDir::new().expect("temp dir");
        let config = profile_at(dir.path(), "127.0.4.65", 465, security);
        for (run, took) in check_and_send(dir.path(), &config, 78) {
            assert!(
                run.stderr.contains(
                    "no SMTP greeting in 2 s: this port may speak implicit TLS: set security \
                     = \"tls\" (port 465)"
                ),
                "{run}"
            );
            assert!(
                took >= Duration::from_millis(1900) && took < Duration::from_secs(5),
                "{took:?}: {run}"
            );
            assert!(!run.stderr.contains("retrying"), "{run}");
        }
    }
    assert!(server.wait_idle(Duration::from_secs(5)));
    assert_eq!(server.connections(), 4, "one connection for each run");
    assert!(server.transcript().is_empty(), "{:?}", server.transcript());
}

/// A port that answers the connection with a TLS record (here an alert, as some TLS
/// servers send when no ClientHello comes) instead of `220`: 78 at once, on any port.
#[test]
fn a_tls_record_instead_of_a_greeting_is_named_implicit_tls_at_once() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    let serving = std::thread::spawn(move || {
        let mut held = Vec::new();
        for _ in 0..4 {
            let (mut tcp, _) = listener.accept().expect("accept");
            // TLS 1.2 record: alert, 2 bytes, fatal handshake_failure.
            tcp.write_all(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28])
                .expect("write the alert");
            held.push(tcp);
        }
        held
    });
    for security in ["starttls", "none"] {
        let dir = TempDir::new().expect("temp dir");
        let config = profile_at(dir.path(), "127.0.0.1", port, security);
        for (run, took) in check_and_send(dir.path(), &config, 78) {
            assert!(
                run.stderr.contains(
                    "sent a TLS record, not an SMTP greeting: this port speaks implicit TLS: \
                     set security = \"tls\""
                ),
                "{run}"
            );
            assert!(took < Duration::from_secs(2), "{took:?}: {run}");
        }
    }
    assert_eq!(serving.join().expect("the listener").len(), 4);
}

/// A real server that delays its greeting 3 s (as some do on port 25 to catch spam
/// software that talks first) still works on a port other than 465: the short window
/// is 465's alone.
#[test]
fn a_greeting_three_seconds_late_still_works_off_port_465() {
    let s = Setup::plain(
        ServerOptions {
            delay_greeting: Some(Duration::from_secs(3)),
            ..ServerOptions::default()
        },
        10,
    );
    let started = Instant::now();
    s.send()
        .args(["--to", "a@example.com", "--subject", "late", "--body", "x"])
        .expect_exit(0);
    assert!(started.elapsed() >= Duration::from_secs(3));
    assert_eq!(s.only_message().rcpt_to, ["a@example.com"]);
}

/// A silent port other than 465 is waited for (it may be a slow server), and when the
/// wait ends the message names implicit TLS as the other likely cause.
#[test]
fn a_silent_port_times_out_with_the_implicit_tls_hint() {
    let s = Setup::plain(
        ServerOptions {
            silent_greeting: true,
            ..ServerOptions::default()
        },
        2,
    );
    let started = Instant::now();
    let run = check(&s).args(["--timeout", "2"]).expect_exit(75);
    assert!(started.elapsed() < Duration::from_secs(5), "{run}");
    assert!(
        run.stderr.contains("no SMTP greeting came")
            && run
                .stderr
                .contains("if this port speaks implicit TLS, set security = \"tls\""),
        "{run}"
    );
}

/// `security = "none"` towards a server that offers STARTTLS works, with a warning that
/// the mail crosses the network in clear (user trial 2.4); a server offering no TLS gets
/// no such warning.
#[test]
fn check_warns_when_starttls_is_offered_but_security_is_none() {
    let offers = Setup::new(Security::StartTls, ServerOptions::default());
    let url = format!("smtp://localhost:{}?security=none", offers.server.port());
    let warning = "the server offers STARTTLS but the profile has security = \"none\"";
    let run = envoi(offers.home())
        .args(["check", "--smtp-url", &url])
        .expect_exit(0);
    assert!(run.stderr.contains(warning), "{run}");
    let run = envoi(offers.home())
        .args(["check", "--json", "--smtp-url", &url])
        .expect_exit(0);
    assert!(
        run.json()["warnings"]
            .to_string()
            .contains("offers STARTTLS"),
        "{run}"
    );

    let plain = Setup::plain(ServerOptions::default(), 10);
    let url = format!("smtp://localhost:{}?security=none", plain.server.port());
    let run = envoi(plain.home())
        .args(["check", "--smtp-url", &url])
        .expect_exit(0);
    assert!(!run.stderr.contains(warning), "{run}");
}
