//! Message data is harmless (issue 16): a template sees only what it is given, rendering
//! is bounded, a path that comes from data cannot reach a file outside its folder, and a
//! piped body is not dropped. Each case is named after the audit's id and checked on what
//! reached the server (or that nothing did).

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use mail_parser::{MessageParser, MimeHeaders};
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
    let named = || {
        let mut cmd = send(&s);
        cmd.args([
            "--to",
            "a@example.com",
            "--template",
            "--var-env",
            "JOB_NAME",
        ])
        .args(["--subject", "Job {{ env.JOB_NAME }}", "--body", "{{ env }}"]);
        cmd
    };
    let run = named().args(["--dry-run", "--json"]).expect_exit(0);
    assert_no_secret(&run.output());
    assert!(!run.output().contains(TOKEN), "{run}");
    assert!(run.output().contains("nightly-42"), "{run}");
    named().expect_exit(0);
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

/// The bytes every planted secret holds: a message carrying them leaked a file.
const SECRET: &[u8] = b"\x89PNG secret-bytes-5e1f";

/// A folder `secret/` beside the data holding `secret.png` and `secret.txt` (both
/// [`SECRET`]); its absolute path.
fn plant_secrets(home: &Path) -> PathBuf {
    let dir = home.join("secret");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("secret.png"), SECRET).unwrap();
    std::fs::write(dir.join("secret.txt"), SECRET).unwrap();
    dir
}

/// Whether `m` carries [`SECRET`] anywhere (as a part, decoded).
fn leaks(m: &Received) -> bool {
    let parsed = MessageParser::default().parse(&m.data).unwrap();
    parsed
        .parts
        .iter()
        .any(|p| p.contents().windows(SECRET.len()).any(|w| w == SECRET))
}

/// `envoi batch --config … --json FILE args…`, run in the setup's home.
fn batch(s: &Setup, file: &Path, args: &[&str]) -> Command {
    let mut cmd = envoi(s.home());
    cmd.current_dir(s.home())
        .arg("batch")
        .arg("--config")
        .arg(&s.config)
        .arg("--json")
        .arg(file)
        .args(args);
    cmd
}

/// The result lines a `--json` batch printed.
fn lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON result line"))
        .collect()
}

/// BA03: a CSV field filling a batch `--attach 'data/{{ f }}'` template cannot leave
/// `data/`: `..`, a path via `..` to /etc, a symbolic link out of it are each refused
/// (that record invalid, 65, naming the rule); a file inside goes out.
#[test]
fn ba03_an_attach_path_from_data_stays_in_its_folder() {
    let s = Setup::plain(ServerOptions::default(), 10);
    let secrets = plant_secrets(s.home());
    let data = s.home().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("invoice.txt"), "invoice 7\n").unwrap();
    std::os::unix::fs::symlink(secrets.join("secret.txt"), data.join("link.txt")).unwrap();
    let rows = s.home().join("rows.csv");
    std::fs::write(
        &rows,
        "to,f\n\
         attacker@evil.example,../secret/secret.txt\n\
         attacker@evil.example,../../../../../../etc/hostname\n\
         attacker@evil.example,link.txt\n\
         ann@example.com,invoice.txt\n",
    )
    .unwrap();
    let run = batch(&s, &rows, &["--subject", "s", "--body", "b"])
        .args(["--attach", "data/{{ f }}"])
        .expect_exit(65);
    let results = lines(&run.stdout);
    for line in &results[..3] {
        assert_eq!(line["status"], "invalid", "{run}");
        assert_eq!(line["exit_code"], 65, "{run}");
        let error = line["error"].as_str().unwrap();
        assert!(error.contains("leads outside \"data/\""), "{error}");
    }
    assert_eq!(results[3]["status"], "sent", "{run}");
    let m = s.only_message();
    assert_eq!(m.rcpt_to, ["ann@example.com"]);
    assert!(text(&m).contains("invoice.txt"));
    assert!(!leaks(&m));
}

/// BA03: an `--attach '{{ f }}'` template with no folder of its own confines what a row
/// names to the input file's folder, not the current one: run from the home folder, a
/// row's `secret/secret.txt` (there from the current folder) is looked for in the input's
/// folder (not found, 66), `../secret/secret.txt` is refused (65), a file beside the
/// input goes out; from standard input such a template is a usage error (64) before
/// anything is sent.
#[test]
fn ba03_an_attach_template_without_a_folder_stays_in_the_inputs_folder() {
    let s = Setup::plain(ServerOptions::default(), 10);
    plant_secrets(s.home());
    let list = s.home().join("list");
    std::fs::create_dir_all(&list).unwrap();
    std::fs::write(list.join("invoice.txt"), "invoice 8\n").unwrap();
    let rows = list.join("rows.csv");
    let csv = "to,f\n\
               attacker@evil.example,secret/secret.txt\n\
               attacker@evil.example,../secret/secret.txt\n\
               ann@example.com,invoice.txt\n";
    std::fs::write(&rows, csv).unwrap();
    let run = batch(&s, &rows, &["--subject", "s", "--body", "b"])
        .args(["--attach", "{{ f }}"])
        .expect_exit(66);
    let results = lines(&run.stdout);
    // Taken in the input's folder, where there is no such file.
    assert_eq!(results[0]["status"], "invalid", "{run}");
    assert!(
        results[0]["error"]
            .as_str()
            .unwrap()
            .contains("cannot read"),
        "{run}"
    );
    assert_eq!(results[1]["status"], "invalid", "{run}");
    let error = results[1]["error"].as_str().unwrap();
    assert!(
        error.contains("leads outside") && error.contains("list\""),
        "{error}"
    );
    assert_eq!(results[2]["status"], "sent", "{run}");
    let m = s.only_message();
    assert_eq!(m.rcpt_to, ["ann@example.com"]);
    assert!(text(&m).contains("invoice.txt"));
    assert!(!leaks(&m));

    let run = batch(
        &s,
        Path::new("-"),
        &["--format", "csv", "--subject", "s", "--body", "b"],
    )
    .args(["--attach", "{{ f }}"])
    .write_stdin(csv)
    .expect_exit(64);
    assert!(run.stderr.contains("standard input has none"), "{run}");
    assert_eq!(s.server.messages().len(), 1);
}

/// BA04: JSON Lines records whose HTML names images outside the input's folder (an
/// absolute path, %-encoded, `../`): without `--embed-images` no local image is
/// embedded at all (the records go out as written); with it those records are invalid
/// (65) and an image beside the input is embedded.
#[test]
fn ba04_jsonl_images_are_not_embedded_unless_asked_and_then_confined() {
    let s = Setup::plain(ServerOptions::default(), 10);
    let secrets = plant_secrets(s.home());
    let input = s.home().join("in");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::write(input.join("logo.png"), b"\x89PNG logo").unwrap();
    let absolute = secrets.join("secret.png").display().to_string();
    let record = |src: &str| {
        serde_json::json!({
            "To": "attacker@evil.example", "Subject": "s", "IsHtml": true,
            "Body": format!("<p>x</p><img src=\"{src}\">"),
        })
        .to_string()
    };
    let file = input.join("r.jsonl");
    let srcs = [
        absolute.clone(),
        absolute.replace('/', "%2F"),
        "../secret/secret.png".to_owned(),
        "logo.png".to_owned(),
    ];
    let records: Vec<String> = srcs.iter().map(|src| record(src)).collect();
    std::fs::write(&file, records.join("\n") + "\n").unwrap();

    batch(&s, &file, &[]).expect_exit(0);
    let messages = s.server.messages();
    assert_eq!(messages.len(), 4);
    for m in &messages {
        assert!(!leaks(m));
        assert!(!text(m).contains("cid:"), "an image was embedded");
    }

    let run = batch(&s, &file, &["--embed-images"]).expect_exit(65);
    let results = lines(&run.stdout);
    for line in &results[..3] {
        assert_eq!(line["exit_code"], 65, "{run}");
        assert!(
            line["error"].as_str().unwrap().contains("leads outside"),
            "{run}"
        );
    }
    let messages = s.server.messages();
    assert_eq!(messages.len(), 5, "{run}");
    let parsed = MessageParser::default().parse(&messages[4].data).unwrap();
    let logo = parsed
        .attachments()
        .find(|a| a.content_id().is_some())
        .expect("the logo inline");
    assert_eq!(logo.contents(), b"\x89PNG logo");
}

/// MD02: an image of a Markdown or HTML body file, or of an `--input` payload, by an
/// absolute, `../` or %-encoded path: refused (65, nothing sent) for a body file unless
/// `--image-root` allows its folder; a payload's images are not embedded unless
/// `--embed-images`, and then confined too. An image beside the body file still works.
#[test]
fn md02_an_image_outside_the_body_folder_is_refused() {
    let s = Setup::plain(ServerOptions::default(), 10);
    let secrets = plant_secrets(s.home());
    let out = s.home().join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("chart.png"), b"\x89PNG chart").unwrap();
    let absolute = secrets.join("secret.png").display().to_string();
    let send = |args: &[&str]| {
        let mut cmd = s.send();
        cmd.current_dir(s.home())
            .args(["--to", "a@example.com", "--subject", "s"])
            .args(args);
        cmd
    };
    for (name, body, flag) in [
        ("a.md", format!("# x\n\n![x]({absolute})\n"), "--markdown"),
        (
            "b.md",
            "<img src=\"../secret/secret.png\">\n".to_owned(),
            "--markdown",
        ),
        (
            "c.html",
            format!("<img src=\"{}\">", absolute.replace('/', "%2F")),
            "--html",
        ),
    ] {
        std::fs::write(out.join(name), body).unwrap();
        let path = format!("out/{name}");
        let run = send(&[flag, "--body-file", &path]).expect_exit(65);
        assert!(run.stderr.contains("leads outside"), "{run}");
        assert!(run.stderr.contains("--image-root"), "{run}");
    }
    s.assert_nothing_delivered();

    std::fs::write(out.join("ok.md"), "![chart](chart.png)\n").unwrap();
    send(&["--markdown", "--body-file", "out/ok.md"]).expect_exit(0);
    let m = s.only_message();
    assert!(text(&m).contains("cid:image1.chart.png@envoi"));
    send(&[
        "--markdown",
        "--body-file",
        "out/a.md",
        "--image-root",
        "secret",
    ])
    .expect_exit(0);
    assert!(
        leaks(&s.server.messages()[1]),
        "--image-root allows that folder"
    );

    let payload = out.join("payload.json");
    let json = serde_json::json!({"To": "a@example.com", "Subject": "p", "IsHtml": true,
        "Body": format!("<img src=\"{absolute}\">")});
    std::fs::write(&payload, json.to_string()).unwrap();
    send(&["--input", "out/payload.json"]).expect_exit(0);
    let messages = s.server.messages();
    assert_eq!(messages.len(), 3);
    assert!(!leaks(&messages[2]));
    let run = send(&["--input", "out/payload.json", "--embed-images"]).expect_exit(65);
    assert!(run.stderr.contains("leads outside"), "{run}");
    assert_eq!(s.server.messages().len(), 3);
}

/// "stdin body": `echo hello | envoi send --to … --subject …` sends "hello", as mail(1)
/// would, instead of an empty message; `--input -` still takes standard input as the
/// payload, `--attach -` as the attachment; standard input from /dev/null still sends a
/// message without a body.
#[test]
fn stdin_body_a_piped_body_is_sent() {
    let s = Setup::plain(ServerOptions::default(), 10);
    s.send()
        .args(["--to", "a@example.com", "--subject", "piped"])
        .write_stdin("hello from a pipe\n")
        .expect_exit(0);
    let m = s.only_message();
    let parsed = MessageParser::default().parse(&m.data).unwrap();
    assert_eq!(parsed.body_text(0).unwrap().trim_end(), "hello from a pipe");

    let payload = serde_json::json!({"To": "b@example.com", "Subject": "p", "Body": "from json"});
    s.send()
        .args(["--input", "-"])
        .write_stdin(payload.to_string())
        .expect_exit(0);
    s.send()
        .args(["--to", "c@example.com", "--subject", "att", "--attach", "-"])
        .args(["--attach-name", "data.txt"])
        .write_stdin("attached bytes")
        .expect_exit(0);
    let messages = s.server.messages();
    let parsed = MessageParser::default().parse(&messages[1].data).unwrap();
    assert_eq!(parsed.body_text(0).unwrap().trim_end(), "from json");
    assert!(
        !text(&messages[1]).contains("\"To\""),
        "the payload is not the body"
    );
    let parsed = MessageParser::default().parse(&messages[2].data).unwrap();
    assert_eq!(parsed.attachment(0).unwrap().contents(), b"attached bytes");
    assert!(parsed.body_text(0).is_none_or(|b| b.trim().is_empty()));

    let status = std::process::Command::new(assert_cmd::cargo::cargo_bin("envoi"))
        .env_clear()
        .envs(crate::support::envoi::hermetic_env(s.home()))
        .arg("send")
        .arg("--config")
        .arg(&s.config)
        .args(["--to", "d@example.com", "--subject", "null"])
        .stdin(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let messages = s.server.messages();
    assert_eq!(messages.len(), 4);
    assert_eq!(messages[3].rcpt_to, ["d@example.com"]);
}

/// The other secrets envoi reads from the environment are refused to `--var-env` too:
/// `$PGPASSWORD` (the shared ledger's), and the variables a profile's
/// `proxy_password_env` and `ledger_password_env` name. Refused before anything is read
/// or sent (64), the value never printed.
#[test]
fn md03_proxy_and_ledger_secrets_are_refused_to_templates() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join(".config/envoi");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        "default = \"relay\"\n[profiles.relay]\nhost = \"127.0.0.1\"\nport = 2525\n\
         security = \"none\"\nfrom = \"ci@example.com\"\n\
         proxy = \"http://bot@127.0.0.1:3128\"\nproxy_password_env = \"PROXY_SECRET\"\n\
         ledger = \"postgres://envoi@db.example.com/mail\"\n\
         ledger_password_env = \"LEDGER_SECRET\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&config, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    for name in ["PGPASSWORD", "PROXY_SECRET", "LEDGER_SECRET"] {
        let run = envoi(home.path())
            .env(name, "Canary-Secret-5e1f")
            .args([
                "send",
                "--to",
                "a@example.com",
                "--template",
                "--var-env",
                name,
            ])
            .args(["--subject", "s", "--body", "{{ env }}", "--dry-run"])
            .expect_exit(64);
        assert!(run.stderr.contains(&format!("--var-env {name}")), "{run}");
        assert!(!run.output().contains("Canary-Secret-5e1f"), "{run}");
    }
}
