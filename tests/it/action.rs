//! The GitHub Action (`action.yml`), run as a runner runs it (`support/action_runner.py`:
//! `${{ }}` in `env:`, one `bash -eo pipefail` per step, GITHUB_OUTPUT / GITHUB_PATH):
//! it installs envoi with `install.sh` from a mirror on loopback (archives that
//! `packaging/dist.sh` made of the binary under test), sends to a real SMTP server, and
//! its outputs say what happened.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Component, Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use mail_parser::{MessageParser, MimeHeaders};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tempfile::TempDir;

use crate::support::certs::TestPki;
use crate::support::envoi::assert_no_secret;
use crate::support::external::require_external;
use crate::support::smtp_server::{Received, Security, ServerOptions, TestServer};
use crate::support::{PASSWORD, USER};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Whether the harness can run: python3 with PyYAML (a note and `false` when it is
/// missing, a failure under CI, which installs it).
fn harness_ready() -> bool {
    let present = Command::new("python3")
        .args(["-c", "import yaml"])
        .output()
        .is_ok_and(|o| o.status.success());
    require_external("python3 with PyYAML (the action harness)", present)
}

/// The release target of this machine, as install.sh names it (contract: `TARGET`).
fn target() -> String {
    format!("{}-unknown-linux-gnu", std::env::consts::ARCH)
}

/// A release mirror on loopback: `download/vVERSION/` and `latest/download/` with the
/// archive `packaging/dist.sh` made of the envoi under test and its SHA256SUMS, served by
/// a plain HTTP server that records each path asked for.
struct Mirror {
    _dir: TempDir,
    url: String,
    requests: Arc<Mutex<Vec<String>>>,
}

impl Mirror {
    /// One mirror for every test of this file: packing a debug binary takes seconds.
    fn get() -> &'static Mirror {
        static MIRROR: OnceLock<Mirror> = OnceLock::new();
        MIRROR.get_or_init(Mirror::build)
    }

    fn build() -> Mirror {
        let dir = tempfile::tempdir().expect("mirror dir");
        let version = env!("CARGO_PKG_VERSION");
        let release = dir.path().join(format!("download/v{version}"));
        let out = Command::new("bash")
            .arg(Path::new(ROOT).join("packaging/dist.sh"))
            .arg("--binary")
            .arg(assert_cmd::cargo::cargo_bin("envoi"))
            .args(["--target", &target(), "--out"])
            .arg(&release)
            .output()
            .expect("run packaging/dist.sh");
        assert!(
            out.status.success(),
            "dist.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let latest = dir.path().join("latest/download");
        std::fs::create_dir_all(&latest).expect("latest/download");
        for entry in std::fs::read_dir(&release).expect("the release folder") {
            let path = entry.expect("an entry").path();
            std::fs::copy(&path, latest.join(path.file_name().expect("a name"))).expect("copy");
        }
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the mirror");
        let url = format!("http://{}", listener.local_addr().expect("its address"));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (root, seen) = (dir.path().to_owned(), Arc::clone(&requests));
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                serve(stream, &root, &seen);
            }
        });
        Mirror {
            _dir: dir,
            url,
            requests,
        }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("the request log").clone()
    }
}

/// Answers one `GET /path` with the file under `root` (200), or 404; then closes.
fn serve(stream: TcpStream, root: &Path, seen: &Mutex<Vec<String>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut reader = BufReader::new(&stream);
    let mut request = String::new();
    if reader.read_line(&mut request).is_err() {
        return;
    }
    loop {
        let mut header = String::new();
        match reader.read_line(&mut header) {
            Ok(0) | Err(_) => return,
            Ok(_) if header.trim().is_empty() => break,
            Ok(_) => {}
        }
    }
    let path = request.split_whitespace().nth(1).unwrap_or("/").to_owned();
    seen.lock().expect("the request log").push(path.clone());
    let relative = Path::new(path.trim_start_matches('/'));
    let file = relative
        .components()
        .all(|c| matches!(c, Component::Normal(_)))
        .then(|| root.join(relative))
        .filter(|p| p.is_file());
    let mut out = &stream;
    let _ = match file.and_then(|p| std::fs::read(p).ok()) {
        Some(body) => out
            .write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: \
                     application/octet-stream\r\nConnection: close\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            )
            .and_then(|()| out.write_all(&body)),
        None => out.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 10\r\nConnection: close\r\n\r\nnot found\n",
        ),
    };
}

/// One job of a workflow: its folders, and the `github` context it runs under.
struct Job {
    dir: TempDir,
    run_id: String,
}

impl Job {
    fn new() -> Job {
        let dir = tempfile::tempdir().expect("job dir");
        for sub in ["home", "workspace", "outbox"] {
            std::fs::create_dir(dir.path().join(sub)).expect("a job folder");
        }
        Job {
            dir,
            run_id: format!("{}", 7_000_000_000u64 + u64::from(std::process::id())),
        }
    }

    fn workspace(&self) -> PathBuf {
        self.dir.path().join("workspace")
    }

    /// The action as step `step_id` of attempt `attempt` of this job, with `with`; each
    /// attempt has its own RUNNER_TEMP, as each run of a job gets a fresh runner.
    fn run(&self, step_id: &str, attempt: u32, with: &[(&str, &str)]) -> Value {
        let temp = self.dir.path().join(format!("runner-temp-{attempt}"));
        std::fs::create_dir_all(&temp).expect("RUNNER_TEMP");
        let home = self.dir.path().join("home");
        let spec = serde_json::json!({
            "action_dir": ROOT,
            "step_id": step_id,
            "github": {
                "run_id": self.run_id,
                "run_attempt": attempt.to_string(),
                "job": "notify",
            },
            // No envoi on this PATH: the action must install it and put it there.
            "env": {
                "PATH": "/usr/bin:/bin",
                "HOME": home,
                "XDG_CONFIG_HOME": home.join(".config"),
                "ENVOI_INSTALL_BASE_URL": Mirror::get().url,
            },
            "workspace": self.workspace(),
            "runner_temp": temp,
            "with": with.iter().copied().collect::<BTreeMap<_, _>>(),
        });
        let file = self
            .dir
            .path()
            .join(format!("job-{step_id}-{attempt}.json"));
        std::fs::write(&file, spec.to_string()).expect("write the job");
        let out = Command::new("python3")
            .arg(Path::new(ROOT).join("tests/it/support/action_runner.py"))
            .arg(&file)
            .output()
            .expect("run python3 action_runner.py");
        assert!(
            out.status.success(),
            "the runner harness failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("the harness prints one JSON object")
    }
}

/// An SMTPS server with a login, its CA written to a file in `dir`.
fn smtps_server(dir: &Path) -> (TestServer, Arc<TestPki>, PathBuf) {
    let pki = Arc::new(TestPki::new());
    let ca = pki.write_ca(dir);
    let server = TestServer::start(ServerOptions {
        security: Security::ImplicitTls,
        pki: Some(Arc::clone(&pki)),
        auth: Some((USER.into(), PASSWORD.into())),
        ..ServerOptions::default()
    });
    (server, pki, ca)
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Each attachment of `parsed` by its file name: the SHA-256 of its decoded contents.
fn attachment_hashes(parsed: &mail_parser::Message) -> BTreeMap<String, String> {
    parsed
        .attachments()
        .map(|p| {
            (
                p.attachment_name().unwrap_or_default().to_owned(),
                sha256(p.contents()),
            )
        })
        .collect()
}

#[track_caller]
fn assert_success(run: &Value) {
    assert_eq!(run["conclusion"], "success", "{run:#}");
}

/// The one message `server` has received.
#[track_caller]
fn only_message(server: &TestServer) -> Received {
    let messages = server.messages();
    assert_eq!(messages.len(), 1, "{messages:?}");
    messages.into_iter().next().expect("one message")
}

/// The whole action, as a workflow uses it: installed from the mirror at the pinned
/// default version, every action-send-mail input it maps reaches the server as it should
/// (Bcc in the envelope only, a YAML block of addresses one a line, attachments by glob
/// decoded to their bytes, the Markdown
/// html_body as HTML with body as its text alternative, shell metacharacters literal), and
/// the outputs are what arrived. A second send step in the same job sends (its own
/// idempotency key) without a second download; a re-run of the job sends nothing.
#[test]
fn the_action_installs_envoi_and_sends_what_its_inputs_say() {
    if !harness_ready() {
        return;
    }
    let job = Job::new();
    let ws = job.workspace();
    let (server, pki, ca) = smtps_server(job.dir.path());
    std::fs::create_dir_all(ws.join("reports/deep")).expect("reports/");
    let files = [
        (
            "reports/deep/data.bin",
            (0..=255u8).cycle().take(70_000).collect::<Vec<u8>>(),
        ),
        (
            "reports/summary.csv",
            b"name,value\nspace test,1\n".to_vec(),
        ),
        (
            "build log.txt",
            b"a log with a space in its name\n".to_vec(),
        ),
    ];
    for (name, bytes) in &files {
        std::fs::write(ws.join(name), bytes).expect("an attachment");
    }
    std::fs::write(
        ws.join("report.md"),
        "# Nightly\n\n| a | b |\n|---|---|\n| 1 | 2 |\n",
    )
    .expect("report.md");
    let canary = ws.join("pwned");
    let subject = format!(
        "Build $(touch {0}) `touch {0}` ; touch {0} \"quoted\" 'single' $HOME ✓",
        canary.display()
    );
    let port = server.port().to_string();
    let ca = ca.to_string_lossy().into_owned();
    let with = [
        ("server_address", "127.0.0.1"),
        ("server_port", port.as_str()),
        ("secure", "true"),
        ("username", USER),
        ("password", PASSWORD),
        ("ca_file", ca.as_str()),
        ("subject", subject.as_str()),
        ("from", "CI Bot <ci@example.com>"),
        ("to", "Ann Lee <ann@example.com>, bob@example.com"),
        ("cc", "carol@example.com\ndave@example.com\n"),
        ("bcc", "audit@example.com"),
        ("reply_to", "ops@example.com"),
        ("in_reply_to", "<first@example.com>"),
        ("priority", "high"),
        ("body", "The plain text."),
        ("html_body", "file://report.md"),
        ("convert_markdown", "true"),
        (
            "attachments",
            "reports/**/*.bin, reports/*.csv,build log.txt",
        ),
        ("outbox_dir", "../outbox"),
    ];
    let run = job.run("mail", 1, &with);
    assert_success(&run);
    assert!(!canary.exists(), "an input ran as shell code");

    // Installed from the mirror, at action.yml's default version, and put on the PATH.
    let version = env!("CARGO_PKG_VERSION");
    let archive = format!("/download/v{version}/envoi-{}.tar.gz", target());
    let downloads = Mirror::get().requests();
    assert!(downloads.contains(&archive), "{downloads:?}");
    let bin = PathBuf::from(run["path_added"][0].as_str().expect("a PATH entry"));
    assert!(bin.join("envoi").is_file(), "{run:#}");

    let got = only_message(&server);
    assert!(got.tls);
    assert_eq!(got.authenticated_as.as_deref(), Some(USER));
    assert_eq!(got.mail_from, "ci@example.com");
    assert_eq!(
        got.rcpt_to,
        [
            "ann@example.com",
            "bob@example.com",
            "carol@example.com",
            "dave@example.com",
            "audit@example.com"
        ]
    );
    let text = String::from_utf8_lossy(&got.data).into_owned();
    assert!(!text.contains("audit@"), "Bcc in a header:\n{text}");
    let parsed = MessageParser::default()
        .parse(&got.data)
        .expect("a message");
    assert_eq!(parsed.subject(), Some(subject.as_str()));
    let header = |name: &str| {
        parsed
            .header_raw(name)
            .map(|v| v.trim().to_owned())
            .unwrap_or_default()
    };
    assert_eq!(header("In-Reply-To"), "<first@example.com>");
    assert_eq!(header("References"), "<first@example.com>");
    assert_eq!(header("Reply-To"), "ops@example.com");
    assert_eq!(header("X-Priority"), "1 (Highest)");
    assert!(header("From").contains("ci@example.com"));
    assert!(header("Cc").contains("carol@example.com") && header("Cc").contains("dave@"));
    assert_eq!(
        parsed.body_text(0).as_deref().map(str::trim),
        Some("The plain text.")
    );
    let html = parsed.body_html(0).expect("an HTML part").into_owned();
    assert!(
        html.contains("<h1>Nightly</h1>") && html.contains("<table>"),
        "{html}"
    );
    let attached = attachment_hashes(&parsed);
    let expected: BTreeMap<String, String> = files
        .iter()
        .map(|(name, bytes)| {
            let base = name.rsplit('/').next().expect("a file name");
            (base.to_owned(), sha256(bytes))
        })
        .collect();
    assert_eq!(attached, expected);

    // The outputs: what arrived.
    assert_eq!(run["outputs"]["status"], "sent", "{run:#}");
    assert_eq!(run["outputs"]["message_id"], header("Message-ID").as_str());

    // The password is masked before anything else is printed, and nothing else shows it.
    let raw = run["raw_log"].as_str().expect("the log");
    for line in raw.lines().filter(|l| l.contains(PASSWORD)) {
        assert_eq!(line, format!("::add-mask::{PASSWORD}"));
    }
    assert_no_secret(run["masked_log"].as_str().expect("the masked log"));

    // A second send step of the same job (the certificate pinned this time): its own
    // idempotency key, so it sends; envoi is already installed, so nothing is downloaded.
    let fingerprint = pki.leaf_fingerprint();
    let mut second: Vec<(&str, &str)> = with
        .iter()
        .copied()
        .filter(|(k, _)| !matches!(*k, "ca_file" | "attachments"))
        .collect();
    second.push(("tls_fingerprint", fingerprint.as_str()));
    let run2 = job.run("mail-again", 1, &second);
    assert_success(&run2);
    assert_eq!(run2["outputs"]["status"], "sent", "{run2:#}");
    assert_eq!(server.messages().len(), 2);
    assert_ne!(run2["outputs"]["message_id"], run["outputs"]["message_id"]);
    // (The mirror is shared by the tests running at the same time: its request count
    // cannot tell; the install step's own words can.)
    let log2 = run2["raw_log"].as_str().expect("the log");
    assert!(
        log2.contains("is already installed in"),
        "installed twice: {log2}"
    );

    // Re-running the job (attempt 2, a fresh runner, the same run id): the first step
    // sends nothing and says so, with the first Message-ID.
    let rerun = job.run("mail", 2, &with);
    assert_success(&rerun);
    assert_eq!(rerun["outputs"]["status"], "duplicate", "{rerun:#}");
    assert_eq!(rerun["outputs"]["message_id"], run["outputs"]["message_id"]);
    assert_eq!(server.messages().len(), 2);
}

/// `ignore_cert: true` (action-send-mail's "accept any certificate") fails the step with
/// exit 78 and the two ways envoi trusts a certificate; nothing connects. A glob that
/// matches no file fails (66) naming it, a `from` without an address (64) says how to
/// write it, and a dry run sends nothing.
#[test]
fn ignore_cert_is_refused_with_the_pin_or_ca_to_use_instead() {
    if !harness_ready() {
        return;
    }
    let job = Job::new();
    let (server, _pki, _ca) = smtps_server(job.dir.path());
    let port = server.port().to_string();
    let base = [
        ("server_address", "127.0.0.1"),
        ("server_port", port.as_str()),
        ("username", USER),
        ("password", PASSWORD),
        ("subject", "s"),
        ("from", "ci@example.com"),
        ("to", "ann@example.com"),
        ("outbox_dir", "../outbox"),
    ];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut all = base.to_vec();
        all.extend_from_slice(extra);
        all
    };

    let run = job.run("mail", 1, &with(&[("ignore_cert", "true")]));
    assert_eq!(run["conclusion"], "failure", "{run:#}");
    assert_eq!(run["steps"][1]["exit_code"], 78, "{run:#}");
    let message = run["annotations"][0]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(
        message.contains("ignore_cert")
            && message.contains("tls_fingerprint")
            && message.contains("ca_file"),
        "{run:#}"
    );
    assert_eq!(run["outputs"]["status"], "error");
    assert_eq!(server.connections(), 0);

    let run = job.run("attach", 1, &with(&[("attachments", "dist/*.zip")]));
    assert_eq!(run["steps"][1]["exit_code"], 66, "{run:#}");
    let message = run["annotations"][0]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(message.contains("dist/*.zip"), "{run:#}");

    // action-send-mail sends a bare name as "name" <username>; this username is no address.
    let mut bare = with(&[]);
    bare.retain(|(k, _)| *k != "from");
    bare.push(("from", "CI Bot"));
    let run = job.run("bare", 1, &bare);
    assert_eq!(run["steps"][1]["exit_code"], 64, "{run:#}");
    let message = run["annotations"][0]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(message.contains("CI Bot <address>"), "{run:#}");

    let run = job.run("dry", 1, &with(&[("dry_run", "true")]));
    assert_success(&run);
    assert_eq!(run["outputs"]["status"], "dry_run", "{run:#}");
    assert!(
        run["outputs"]["message_id"]
            .as_str()
            .is_some_and(|m| m.starts_with('<'))
    );
    assert_eq!(server.connections(), 0);
}

/// action.yml's pinned `version` default is this crate's version, and every input other
/// than `version` reaches the send step as INPUT_<NAME> through `env:` (the harness refuses
/// `${{ }}` inside `run:`, so `env:` is the only way in).
#[test]
fn action_yml_pins_this_version_and_maps_every_input() {
    let text = std::fs::read_to_string(Path::new(ROOT).join("action.yml")).expect("action.yml");
    let mut inputs = Vec::new();
    let mut section = "";
    let mut current = "";
    let mut version_default = None;
    for line in text.lines() {
        if !line.starts_with(' ') && line.ends_with(':') {
            section = line.trim_end_matches(':');
            continue;
        }
        if section != "inputs" {
            continue;
        }
        if let Some(name) = line
            .strip_prefix("  ")
            .filter(|l| !l.starts_with(' ') && !l.starts_with('#'))
        {
            current = name.trim_end_matches(':');
            inputs.push(current.to_owned());
        } else if current == "version"
            && let Some(v) = line.trim().strip_prefix("default:")
        {
            version_default = Some(v.trim().trim_matches('"').to_owned());
        }
    }
    assert_eq!(version_default.as_deref(), Some(env!("CARGO_PKG_VERSION")));
    assert!(inputs.len() > 20, "{inputs:?}");
    for name in inputs.iter().filter(|n| *n != "version") {
        let mapping = format!(
            "INPUT_{}: ${{{{ inputs.{name} }}}}",
            name.to_ascii_uppercase()
        );
        assert!(text.contains(&mapping), "{name} is not passed: {mapping}");
    }
    assert!(text.contains("ENVOI_VERSION: ${{ inputs.version }}"));
}

/// `url` instead of `server_address`: the `ca_file` input joins the URL's query, the
/// password comes from `password`, and the message goes out.
#[test]
fn the_url_input_sends_with_the_ca_file_and_password_inputs() {
    if !harness_ready() {
        return;
    }
    let job = Job::new();
    let (server, _pki, ca) = smtps_server(job.dir.path());
    let url = format!("smtps://{USER}@127.0.0.1:{}", server.port());
    let ca = ca.to_string_lossy().into_owned();
    let with = [
        ("url", url.as_str()),
        ("ca_file", ca.as_str()),
        ("password", PASSWORD),
        ("from", "ci@example.com"),
        ("to", "ann@example.com"),
        ("subject", "by URL"),
        ("body", "file://missing-is-not-read.txt"),
        ("outbox_dir", "../outbox"),
    ];
    // A body file:// that does not exist: 66, naming it.
    let run = job.run("mail", 1, &with);
    assert_eq!(run["steps"][1]["exit_code"], 66, "{run:#}");
    assert!(
        run["raw_log"]
            .as_str()
            .is_some_and(|l| l.contains("missing-is-not-read.txt")),
        "{run:#}"
    );
    std::fs::write(
        job.workspace().join("missing-is-not-read.txt"),
        "from a file\n",
    )
    .expect("the body file");
    let run = job.run("mail", 1, &with);
    assert_success(&run);
    let got = only_message(&server);
    assert!(got.tls);
    assert_eq!(got.authenticated_as.as_deref(), Some(USER));
    assert!(String::from_utf8_lossy(&got.data).contains("from a file"));
}

/// action-send-mail's default: no `secure` on port 465 is TLS from the first byte (a
/// STARTTLS client would wait there for a greeting that never comes). The certificate is
/// pinned: it names 127.0.0.1, not the loopback address this server listens on.
#[test]
fn port_465_without_secure_is_implicit_tls() {
    if !harness_ready() {
        return;
    }
    if !crate::trust::running_as_root() {
        eprintln!("skipped: listening on port 465 needs root");
        return;
    }
    let job = Job::new();
    let pki = Arc::new(TestPki::new());
    let server = TestServer::start(ServerOptions {
        security: Security::ImplicitTls,
        pki: Some(Arc::clone(&pki)),
        auth: Some((USER.into(), PASSWORD.into())),
        listen: Some(std::net::SocketAddr::from(([127, 0, 19, 65], 465))),
        ..ServerOptions::default()
    });
    let fingerprint = pki.leaf_fingerprint();
    let run = job.run(
        "mail",
        1,
        &[
            ("server_address", "127.0.19.65"),
            ("server_port", "465"),
            ("username", USER),
            ("password", PASSWORD),
            ("tls_fingerprint", fingerprint.as_str()),
            ("from", "ci@example.com"),
            ("to", "ann@example.com"),
            ("subject", "465"),
            ("outbox_dir", "../outbox"),
        ],
    );
    assert_success(&run);
    assert!(only_message(&server).tls);
}

/// The workflows the docs show (docs/github-action.md's ```yaml blocks and
/// examples/github-action.yml) parse as YAML and give the action only inputs it declares:
/// a renamed input cannot leave a guide behind.
#[test]
fn the_documented_workflows_use_only_declared_inputs() {
    if !harness_ready() {
        return;
    }
    let dir = tempfile::tempdir().expect("a temp dir");
    let guide = std::fs::read_to_string(Path::new(ROOT).join("docs/github-action.md"))
        .expect("docs/github-action.md");
    let mut files = vec![Path::new(ROOT).join("examples/github-action.yml")];
    for (n, block) in guide.split("```yaml\n").skip(1).enumerate() {
        let text = block.split("```").next().expect("a closed block");
        let file = dir.path().join(format!("block-{n}.yml"));
        std::fs::write(&file, text).expect("write a block");
        files.push(file);
    }
    assert!(
        files.len() >= 2,
        "no ```yaml block in docs/github-action.md"
    );
    let out = Command::new("python3")
        .arg(Path::new(ROOT).join("tests/it/support/action_runner.py"))
        .arg("--check-uses")
        .arg(ROOT)
        .args(&files)
        .output()
        .expect("run python3 action_runner.py --check-uses");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The workflow commands a run printed (the runner's reading of its log).
fn commands(run: &Value) -> Vec<Value> {
    run["commands"].as_array().cloned().unwrap_or_default()
}

/// A refused input that holds a newline and workflow-command text (`::add-mask::`,
/// `::set-output`, `::stop-commands::`) is quoted in exactly one `::error` line, escaped as
/// @actions/core escapes command data: the runner reads it back as the very input and runs
/// no command of the input's. Through `from`, `server_port`, `dry_run` (send.sh's `refuse`
/// and `is_true`) and `version` (install.sh).
#[test]
fn an_input_with_newlines_starts_no_workflow_command_of_its_own() {
    if !harness_ready() {
        return;
    }
    let job = Job::new();
    let evil = "x\n::add-mask::ci-example\r\n::set-output name=status::sent\n\
                ::stop-commands::t%0A\n::error::second";
    let from = format!("CI Bot{evil}");
    let port = format!("25{evil}");
    let dry = format!("yes{evil}");
    let version = format!("1.2.3{evil}");
    let cases = [
        ("from", from.as_str(), 1),
        ("server_port", port.as_str(), 1),
        ("dry_run", dry.as_str(), 1),
        ("version", version.as_str(), 0),
    ];
    for (n, (input, value, step)) in cases.into_iter().enumerate() {
        let mut with = vec![
            ("username", USER),
            ("to", "ann@example.com"),
            ("subject", "s"),
            ("outbox_dir", "../outbox"),
        ];
        if input != "from" {
            with.push(("from", "ci@example.com"));
        }
        if input == "server_port" {
            with.push(("server_address", "127.0.0.1"));
        }
        if input != "server_port" {
            with.retain(|(k, _)| *k != "username");
        }
        with.push((input, value));
        let run = job.run(&format!("inject-{n}"), 1, &with);
        assert_eq!(run["steps"][step]["exit_code"], 64, "{input}: {run:#}");
        let seen = commands(&run);
        assert_eq!(seen.len(), 1, "{input}: {seen:#?}");
        assert_eq!(seen[0]["command"], "error", "{input}: {seen:#?}");
        assert_eq!(
            seen[0]["properties"]["title"], "envoi",
            "{input}: {seen:#?}"
        );
        let data = seen[0]["data"].as_str().unwrap_or_default();
        assert!(data.contains(value), "{input}: {data:?}");
        let raw = run["raw_log"].as_str().unwrap_or_default();
        let lines: Vec<&str> = raw
            .lines()
            .filter(|l| l.trim_start().starts_with("::"))
            .collect();
        assert_eq!(lines.len(), 1, "{input}: {raw}");
        assert!(lines[0].contains("x%0A::add-mask::"), "{input}: {raw}");
        assert!(lines[0].contains("t%250A"), "{input}: {raw}");
        // An output the input tried to set is not set (the install step's failure skips
        // the send step, whose outputs are then empty).
        let status = if step == 1 { "error" } else { "" };
        assert_eq!(run["outputs"]["status"], status, "{input}: {run:#}");
    }
}

/// A password holding `%0A`, `%25` and two lines is masked as it is: each line is escaped
/// before `::add-mask::`, which the runner un-escapes (unescaped, it would mask `pa⏎ss`
/// and `50%off`, and show the real password). The dry run prints the message, whose
/// subject and body hold the password, and the masked log shows neither line.
#[test]
fn a_password_with_percent_escapes_is_masked_as_given() {
    if !harness_ready() {
        return;
    }
    let job = Job::new();
    let password = "pa%0Ass\n50%25off";
    let run = job.run(
        "mask",
        1,
        &[
            ("url", &format!("smtps://{USER}@127.0.0.1:1")),
            ("password", password),
            ("from", "ci@example.com"),
            ("to", "ann@example.com"),
            ("subject", "pa%0Ass and 50%25off"),
            ("body", "Lines: pa%0Ass 50%25off"),
            ("dry_run", "true"),
            ("outbox_dir", "../outbox"),
        ],
    );
    assert_success(&run);
    assert_eq!(run["outputs"]["status"], "dry_run", "{run:#}");
    assert_eq!(
        run["masks"],
        serde_json::json!(["pa%0Ass", "50%25off"]),
        "{run:#}"
    );
    let raw = run["raw_log"].as_str().unwrap_or_default();
    assert!(
        raw.lines()
            .any(|l| !l.starts_with("::") && l.contains("pa%0Ass and 50%25off")),
        "the dry run printed no subject, so this test proves nothing: {raw}"
    );
    let masked = run["masked_log"].as_str().unwrap_or_default();
    for line in password.lines() {
        assert!(!masked.contains(line), "{line} shown: {masked}");
    }
}

/// `file://` in `subject`, `body` and `html_body` reads only a file of the workspace
/// (GITHUB_WORKSPACE), outside any `.git` folder, once symbolic links are followed:
/// `.git/config` (which holds the checkout token), `..`, an absolute path and a link out of
/// the workspace are each refused (64) naming the input, and nothing is sent. A workspace
/// file is read and sent.
#[test]
fn file_inputs_read_only_workspace_files_outside_git() {
    if !harness_ready() {
        return;
    }
    let job = Job::new();
    let ws = job.workspace();
    let (server, _pki, ca) = smtps_server(job.dir.path());
    let secret = "extraheader = AUTHORIZATION: basic c2VjcmV0LXRva2Vu";
    std::fs::create_dir_all(ws.join(".git")).expect(".git/");
    std::fs::write(ws.join(".git/config"), secret).expect(".git/config");
    let outside = job.dir.path().join("outside.txt");
    std::fs::write(&outside, secret).expect("outside.txt");
    std::os::unix::fs::symlink(&outside, ws.join("link.txt")).expect("link.txt");
    std::fs::create_dir_all(ws.join("notes")).expect("notes/");
    std::fs::write(ws.join("notes/subject.txt"), "Subject from a file").expect("subject");
    std::fs::write(ws.join("notes/body.txt"), "Body from a file\n").expect("body");

    let url = format!("smtps://{USER}@127.0.0.1:{}", server.port());
    let ca = ca.to_string_lossy().into_owned();
    let absolute = format!("file://{}", outside.display());
    let base = [
        ("url", url.as_str()),
        ("ca_file", ca.as_str()),
        ("password", PASSWORD),
        ("from", "ci@example.com"),
        ("to", "ann@example.com"),
        ("outbox_dir", "../outbox"),
    ];
    let refused = [
        ("subject", "file://.git/config", ".git folder"),
        ("body", "file://notes/../.git/config", ".git folder"),
        ("body", "file://../outside.txt", "outside the workspace"),
        ("html_body", absolute.as_str(), "outside the workspace"),
        ("html_body", "file://link.txt", "outside the workspace"),
    ];
    for (n, (input, value, why)) in refused.into_iter().enumerate() {
        let mut with = base.to_vec();
        with.push((input, value));
        if input != "subject" {
            with.push(("subject", "s"));
        }
        let run = job.run(&format!("refused-{n}"), 1, &with);
        assert_eq!(run["steps"][1]["exit_code"], 64, "{input} {value}: {run:#}");
        let message = run["annotations"][0]["message"]
            .as_str()
            .unwrap_or_default();
        assert!(
            message.starts_with(&format!("{input}: ")) && message.contains(why),
            "{input} {value}: {message}"
        );
        let raw = run["raw_log"].as_str().unwrap_or_default();
        assert!(!raw.contains("c2VjcmV0"), "{raw}");
    }
    assert_eq!(server.connections(), 0);

    let mut with = base.to_vec();
    with.extend([
        ("subject", "file://notes/subject.txt"),
        ("body", "file://notes/body.txt"),
    ]);
    let run = job.run("workspace-file", 1, &with);
    assert_success(&run);
    let got = only_message(&server);
    let parsed = MessageParser::default()
        .parse(&got.data)
        .expect("a message");
    assert_eq!(parsed.subject(), Some("Subject from a file"));
    assert_eq!(
        parsed.body_text(0).as_deref().map(str::trim),
        Some("Body from a file")
    );
}

/// An attachment whose name looks like a pattern (`report[1].pdf`) is that file, as envoi's
/// own `--attach` takes it (docs/send.md): given by name, it is attached, not the
/// `report1.pdf` that bash's `[1]` would match; matched by a glob, it goes to envoi as an
/// existing file, which envoi does not expand again. Each arrives with its own bytes.
#[test]
fn an_attachment_named_like_a_pattern_is_that_file() {
    if !harness_ready() {
        return;
    }
    let job = Job::new();
    let ws = job.workspace();
    let (server, _pki, ca) = smtps_server(job.dir.path());
    std::fs::create_dir_all(ws.join("out")).expect("out/");
    let bracketed = b"%PDF-1.4 the bracketed one\n".to_vec();
    let plain = b"%PDF-1.4 the plain one\n".to_vec();
    std::fs::write(ws.join("out/report[1].pdf"), &bracketed).expect("report[1].pdf");
    std::fs::write(ws.join("out/report1.pdf"), &plain).expect("report1.pdf");

    let url = format!("smtps://{USER}@127.0.0.1:{}", server.port());
    let ca = ca.to_string_lossy().into_owned();
    let cases = [
        ("out/report[1].pdf", vec![("report[1].pdf", &bracketed)]),
        (
            "out/*.pdf",
            vec![("report1.pdf", &plain), ("report[1].pdf", &bracketed)],
        ),
    ];
    for (n, (attachments, want)) in cases.into_iter().enumerate() {
        let run = job.run(
            &format!("attach-{n}"),
            1,
            &[
                ("url", url.as_str()),
                ("ca_file", ca.as_str()),
                ("password", PASSWORD),
                ("from", "ci@example.com"),
                ("to", "ann@example.com"),
                ("subject", "reports"),
                ("attachments", attachments),
                ("outbox_dir", "../outbox"),
            ],
        );
        assert_success(&run);
        let messages = server.messages();
        assert_eq!(messages.len(), n + 1, "{run:#}");
        let parsed = MessageParser::default()
            .parse(&messages[n].data)
            .expect("a message");
        let attached = attachment_hashes(&parsed);
        let want: BTreeMap<String, String> = want
            .into_iter()
            .map(|(name, bytes)| (name.to_owned(), sha256(bytes)))
            .collect();
        assert_eq!(attached, want, "{attachments}");
    }

    // A match whose name holds `;type=` would be split by envoi (path;type=MIME): refused,
    // naming it. A file named `-` is that file, not standard input, given or matched.
    std::fs::create_dir_all(ws.join("typed")).expect("typed/");
    std::fs::write(ws.join("typed/a;type=text.pdf"), b"typed").expect("a;type=text.pdf");
    let run = job.run(
        "attach-typed",
        1,
        &[
            ("url", url.as_str()),
            ("ca_file", ca.as_str()),
            ("password", PASSWORD),
            ("from", "ci@example.com"),
            ("to", "ann@example.com"),
            ("attachments", "typed/*.pdf"),
            ("outbox_dir", "../outbox"),
        ],
    );
    assert_eq!(run["steps"][1]["exit_code"], 64, "{run:#}");
    let message = run["annotations"][0]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(message.contains("typed/a;type=text.pdf"), "{message}");
    assert_eq!(server.messages().len(), 2);

    let dash = b"a file named dash\n".to_vec();
    std::fs::write(ws.join("-"), &dash).expect("-");
    for (n, attachments) in ["-", "[-]"].into_iter().enumerate() {
        let run = job.run(
            &format!("attach-dash-{n}"),
            1,
            &[
                ("url", url.as_str()),
                ("ca_file", ca.as_str()),
                ("password", PASSWORD),
                ("from", "ci@example.com"),
                ("to", "ann@example.com"),
                ("attachments", attachments),
                ("outbox_dir", "../outbox"),
            ],
        );
        assert_success(&run);
        let messages = server.messages();
        let parsed = MessageParser::default()
            .parse(&messages[messages.len() - 1].data)
            .expect("a message");
        let contents: Vec<Vec<u8>> = parsed
            .attachments()
            .map(|p| p.contents().to_vec())
            .collect();
        assert_eq!(contents, std::slice::from_ref(&dash), "{attachments}");
    }
}
