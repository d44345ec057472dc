//! Issue 21's bulk-sender rules of `envoi batch`, against the in-process server: the
//! one-click unsubscribe headers (RFC 8058) and List-Id on the bytes that arrived, each
//! record's own URL, DKIM-signed (dkimpy verifies, h= names them); the suppression list,
//! filled by a 550 to RCPT and by `envoi suppress`, skipped by every later run.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use mail_parser::MessageParser;
use serde_json::Value;
use tempfile::TempDir;

use crate::dkim::{KeyKind, dkim_lines, dkimpy_verify, make_key, tools};
use crate::support::envoi::{Config, ExpectExit, envoi};
use crate::support::smtp_server::{Received, ServerOptions, TestServer};

/// A home, a server, and a config whose default profile sends to it with `extra` lines.
struct Bulk {
    dir: TempDir,
    server: TestServer,
    config: PathBuf,
}

impl Bulk {
    fn new(opts: ServerOptions, extra: &str) -> Bulk {
        let dir = TempDir::new().unwrap();
        let server = TestServer::start(opts);
        let config = Config::new(server.port(), "none")
            .line(extra)
            .write(dir.path());
        Bulk {
            dir,
            server,
            config,
        }
    }

    fn home(&self) -> &Path {
        self.dir.path()
    }

    /// `envoi batch --config … --report report.jsonl ARGS`.
    fn batch(&self, args: &[&str]) -> Command {
        let _ = std::fs::remove_file(self.report());
        let mut cmd = envoi(self.home());
        cmd.arg("batch")
            .arg("--config")
            .arg(&self.config)
            .arg("--report")
            .arg(self.report())
            .args(args);
        cmd
    }

    /// `envoi suppress ARGS --config …`.
    fn suppress(&self, args: &[&str]) -> Command {
        let mut cmd = envoi(self.home());
        cmd.arg("suppress")
            .args(args)
            .arg("--config")
            .arg(&self.config);
        cmd
    }

    fn report(&self) -> PathBuf {
        self.home().join("report.jsonl")
    }

    fn lines(&self) -> Vec<Value> {
        std::fs::read_to_string(self.report())
            .expect("the report")
            .lines()
            .map(|l| serde_json::from_str(l).expect("JSON"))
            .collect()
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.home().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    }
}

/// The suppression list's line in a config, at `path`.
fn suppress_line(path: &Path) -> String {
    format!("suppress = \"{}\"", path.display())
}

/// A header's raw value, unfolded and trimmed.
fn header(m: &Received, name: &str) -> String {
    let parsed = MessageParser::default().parse(&m.data).expect("a message");
    parsed
        .header_raw(name)
        .unwrap_or_default()
        .replace("\r\n", "")
        .trim()
        .to_owned()
}

/// The `h=` tag of the message's DKIM-Signature, its names lowercased.
fn signed_names(m: &Received) -> Vec<String> {
    let signature = header(m, "DKIM-Signature");
    let h = signature
        .split(';')
        .map(str::trim)
        .find_map(|tag| tag.strip_prefix("h="))
        .expect("an h= tag");
    h.split(':')
        .map(|n| n.trim().to_ascii_lowercase())
        .collect()
}

fn rcpts(server: &TestServer) -> Vec<String> {
    server
        .messages()
        .iter()
        .map(|m| m.rcpt_to.join(","))
        .collect()
}

const MERGE: [&str; 6] = [
    "--to-column",
    "email",
    "--subject",
    "News for {{ name }}",
    "--body",
    "Hello {{ name }}",
];

/// Each CSV row's message arrives with its own List-Unsubscribe URL (and the mailto
/// beside it), List-Unsubscribe-Post and List-Id, all three in the DKIM signature's h=;
/// dkimpy verifies the signature, and fails it once the URL is changed after signing.
#[test]
fn the_unsubscribe_headers_are_per_record_and_signed() {
    if !tools() {
        return;
    }
    let keys = TempDir::new().unwrap();
    let (key, record) = make_key(keys.path(), KeyKind::Rsa);
    let s = Bulk::new(ServerOptions::default(), &dkim_lines(&key));
    let csv = s.write(
        "news.csv",
        "email,name,token\nann@example.net,Ann,tok-1\nbob@example.net,Bob,tok-2\n",
    );
    s.batch(&[&csv])
        .args(MERGE)
        .args([
            "--unsubscribe-url",
            "https://example.com/u?t={{ token }}&n={{ name | urlencode }}",
            "--unsubscribe-mailto",
            "mailto:unsubscribe@example.com?subject={{ token }}",
            "--list-id",
            "Acme News <news.example.com>",
        ])
        .expect_exit(0);
    let messages = s.server.messages();
    assert_eq!(messages.len(), 2);
    for (m, (token, name)) in messages.iter().zip([("tok-1", "Ann"), ("tok-2", "Bob")]) {
        assert_eq!(
            header(m, "List-Unsubscribe"),
            format!(
                "<https://example.com/u?t={token}&n={name}>, \
                 <mailto:unsubscribe@example.com?subject={token}>"
            )
        );
        assert_eq!(
            header(m, "List-Unsubscribe-Post"),
            "List-Unsubscribe=One-Click"
        );
        assert_eq!(header(m, "List-Id"), "Acme News <news.example.com>");
        let names = signed_names(m);
        for wanted in ["list-unsubscribe", "list-unsubscribe-post", "list-id"] {
            assert!(names.iter().any(|n| n == wanted), "{wanted} in {names:?}");
        }
        // Oversigned (one more than the message has), so none can be added on top.
        for oversigned in ["list-unsubscribe", "list-unsubscribe-post"] {
            let count = names.iter().filter(|n| *n == oversigned).count();
            assert_eq!(count, 2, "{oversigned} twice in {names:?}");
        }
        dkimpy_verify(keys.path(), &m.data, &record).expect("dkimpy verifies");
        let forged = String::from_utf8(m.data.clone())
            .unwrap()
            .replace(&format!("t={token}"), "t=someone-else");
        assert!(
            dkimpy_verify(keys.path(), forged.as_bytes(), &record).is_err(),
            "a changed List-Unsubscribe breaks the signature"
        );
    }
}

/// JSON Lines records render the template over their own fields; without an https URL
/// (mailto alone) there is no List-Unsubscribe-Post.
#[test]
fn a_jsonl_record_renders_its_own_fields_and_mailto_alone_has_no_one_click() {
    let s = Bulk::new(ServerOptions::default(), "");
    let file = s.write(
        "news.jsonl",
        r#"{"To":"ann@example.net","Subject":"s","Body":"b"}"#,
    );
    s.batch(&[&file])
        .args([
            "--unsubscribe-mailto",
            "unsubscribe+{{ To | replace('@', '=') }}@example.com",
        ])
        .expect_exit(0);
    let m = &s.server.messages()[0];
    assert_eq!(
        header(m, "List-Unsubscribe"),
        "<mailto:unsubscribe+ann=example.net@example.com>"
    );
    assert_eq!(header(m, "List-Unsubscribe-Post"), "");
    assert_eq!(header(m, "List-Id"), "");
}

/// A row whose rendered URL is not a plain https URL is invalid (65), named; the rows
/// around it go out with their headers.
#[test]
fn an_invalid_rendered_url_makes_only_its_record_invalid() {
    let s = Bulk::new(ServerOptions::default(), "");
    let csv = s.write(
        "news.csv",
        "email,name,token\na@example.net,A,t1\nb@example.net,B,has space\nc@example.net,C,t3\n",
    );
    let run = s
        .batch(&[&csv])
        .args(MERGE)
        .args(["--unsubscribe-url", "https://example.com/u?t={{ token }}"])
        .expect_exit(65);
    assert_eq!(rcpts(&s.server), ["a@example.net", "c@example.net"]);
    let lines = s.lines();
    assert_eq!(lines[1]["status"], "invalid");
    let why = lines[1]["error"].as_str().unwrap();
    assert!(
        why.contains("line 3") && why.contains("--unsubscribe-url") && why.contains("has space"),
        "{why}"
    );
    assert_eq!(lines[0]["status"], "sent");
    assert_eq!(lines[2]["status"], "sent");
    let last = &s.server.messages()[1];
    assert_eq!(
        header(last, "List-Unsubscribe"),
        "<https://example.com/u?t=t3>"
    );
    assert!(run.stderr.contains("invalid 1"), "{}", run.stderr);
    // This profile has no DKIM key: receivers would ignore the one-click link, and the
    // batch says so.
    assert!(run.stderr.contains("without a DKIM key"), "{}", run.stderr);
    // A malformed --list-id is a usage error before anything is sent.
    s.batch(&[&csv])
        .args(MERGE)
        .args(["--list-id", "News <news>"])
        .expect_exit(64);
    assert_eq!(s.server.messages().len(), 2);
}

/// A 550 to RCPT adds the address to the list (with the server's reply), and a later
/// record of the same run to it is skipped already; the next run —
/// a new process, a new server — skips it as `suppressed` (exit 0) and the server gets
/// nothing for it, while the other record goes; the run after that still skips it.
#[test]
fn a_hard_bounce_is_suppressed_by_every_later_run() {
    let lists = TempDir::new().unwrap();
    let list = lists.path().join("suppress.tsv");
    let records = [
        r#"{"To":"ann@example.net","Subject":"one","Body":"b"}"#,
        r#"{"To":"Gone@Example.NET","Subject":"two","Body":"b"}"#,
    ]
    .join("\n");
    let first = Bulk::new(
        ServerOptions {
            refuse_rcpt: vec![("Gone@Example.NET".into(), 550)],
            ..ServerOptions::default()
        },
        &suppress_line(&list),
    );
    let again = r#"{"To":"gone@example.net","Subject":"three","Body":"b"}"#;
    let file = first.write("news.jsonl", &format!("{records}\n{again}"));
    first.batch(&[&file]).expect_exit(67);
    assert_eq!(rcpts(&first.server), ["ann@example.net"]);
    let statuses: Vec<Value> = first.lines().iter().map(|l| l["status"].clone()).collect();
    assert_eq!(statuses, ["sent", "refused", "suppressed"]);
    let text = std::fs::read_to_string(&list).expect("the list was made");
    let entry = text
        .lines()
        .find(|l| l.starts_with("gone@example.net\t"))
        .unwrap_or_else(|| panic!("no entry in {text:?}"));
    assert!(entry.contains("\t550 "), "{entry}");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&list).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);

    for _ in 0..2 {
        let next = Bulk::new(ServerOptions::default(), &suppress_line(&list));
        let file = next.write("news.jsonl", &records);
        let run = next.batch(&[&file]).expect_exit(0);
        assert_eq!(rcpts(&next.server), ["ann@example.net"]);
        let lines = next.lines();
        assert_eq!(lines[0]["status"], "sent");
        assert_eq!(lines[1]["status"], "suppressed");
        assert_eq!(lines[1]["exit_code"], 0);
        assert!(lines[1]["message_id"].is_null());
        let note = lines[1]["note"].as_str().unwrap();
        assert!(
            note.contains("gone@example.net") && note.contains("550"),
            "{note}"
        );
        assert!(run.stderr.contains("suppressed 1"), "{}", run.stderr);
        let transcript = next.server.transcript().join("\n").to_ascii_lowercase();
        assert!(!transcript.contains("gone@"), "{transcript}");
    }
}

/// `envoi suppress add|list|import|remove` keep the list, and a batch honours what they
/// wrote: an address added by hand is skipped, removed it goes again.
#[test]
fn suppress_commands_keep_the_list_a_batch_reads() {
    let lists = TempDir::new().unwrap();
    let list = lists.path().join("suppress.tsv");
    let s = Bulk::new(ServerOptions::default(), &suppress_line(&list));
    s.suppress(&[
        "add",
        "Carl <Carl@Example.net>",
        "--reason",
        "asked by phone",
    ])
    .expect_exit(0);
    let again = s.suppress(&["add", "carl@example.net"]).expect_exit(0);
    assert!(again.stderr.contains("already"), "{}", again.stderr);
    let imported = s.write(
        "unsub.txt",
        "# from the web form\ndora@example.net\n\n  ERIN@example.net  \ncarl@example.net\n",
    );
    let run = s.suppress(&["import", &imported]).expect_exit(0);
    assert!(run.stderr.contains("imported 2 new"), "{}", run.stderr);
    let bad = s.write("bad.txt", "fay@example.net\nnot an address\n");
    let run = s.suppress(&["import", &bad]).expect_exit(65);
    assert!(run.stderr.contains("line 2"), "{}", run.stderr);

    let listed = s.suppress(&["list"]).expect_exit(0);
    let rows: Vec<Vec<&str>> = listed
        .stdout
        .lines()
        .map(|l| l.split('\t').collect())
        .collect();
    let addresses: Vec<&str> = rows.iter().map(|r| r[0]).collect();
    assert_eq!(
        addresses,
        ["carl@example.net", "dora@example.net", "erin@example.net"],
        "fay was not imported: {}",
        listed.stdout
    );
    assert_eq!(rows[0][2], "asked by phone");
    assert_eq!(rows[1][2], "unsubscribed");
    let json = s.suppress(&["list", "--json"]).expect_exit(0).json();
    assert_eq!(json[2]["address"], "erin@example.net");
    assert!(json[2]["added"].as_str().unwrap().ends_with('Z'));

    let records = s.write(
        "news.jsonl",
        &[
            r#"{"To":"carl@example.net","Subject":"one","Body":"b"}"#,
            r#"{"To":"ann@example.net","CC":"erin@example.net","Subject":"two","Body":"b"}"#,
            r#"{"To":"ann@example.net","Subject":"three","Body":"b"}"#,
        ]
        .join("\n"),
    );
    s.batch(&[&records]).expect_exit(0);
    let statuses: Vec<Value> = s.lines().iter().map(|l| l["status"].clone()).collect();
    assert_eq!(statuses, ["suppressed", "suppressed", "sent"]);
    assert_eq!(rcpts(&s.server), ["ann@example.net"]);

    s.suppress(&["remove", "CARL@example.net"]).expect_exit(0);
    s.batch(&[&records]).expect_exit(0);
    let statuses: Vec<Value> = s.lines().iter().map(|l| l["status"].clone()).collect();
    assert_eq!(statuses, ["sent", "suppressed", "sent"]);
    assert_eq!(
        rcpts(&s.server),
        ["ann@example.net", "carl@example.net", "ann@example.net"]
    );
}

/// Without a `suppress` key the commands say what to set (78); a relative path is
/// refused (78); a list that is a symbolic link is never followed (78, nothing sent).
#[test]
fn a_missing_relative_or_linked_list_is_a_config_error() {
    let s = Bulk::new(ServerOptions::default(), "");
    let run = s.suppress(&["list"]).expect_exit(78);
    assert!(run.stderr.contains("suppress ="), "{}", run.stderr);
    let relative = Bulk::new(ServerOptions::default(), "suppress = \"suppress.tsv\"");
    let run = relative.suppress(&["list"]).expect_exit(78);
    assert!(run.stderr.contains("absolute"), "{}", run.stderr);

    let lists = TempDir::new().unwrap();
    let target = lists.path().join("elsewhere.tsv");
    std::fs::write(&target, "").unwrap();
    let link = lists.path().join("suppress.tsv");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let linked = Bulk::new(ServerOptions::default(), &suppress_line(&link));
    let file = linked.write(
        "news.jsonl",
        r#"{"To":"ann@example.net","Subject":"s","Body":"b"}"#,
    );
    let run = linked.batch(&[&file]).expect_exit(78);
    assert!(run.stderr.contains("symbolic link"), "{}", run.stderr);
    assert!(linked.server.messages().is_empty());
    linked.suppress(&["add", "x@example.net"]).expect_exit(78);
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "");
}

/// Under `policy.redirect_all` (staging) the list is about the records' own recipients,
/// not the QA address every message goes to: a listed recipient's record is still
/// skipped, and a refusal of the QA address puts nobody on the list.
#[test]
fn a_redirected_batch_skips_listed_recipients_and_lists_no_qa_bounce() {
    let lists = TempDir::new().unwrap();
    let list = lists.path().join("suppress.tsv");
    let s = Bulk::new(
        ServerOptions {
            refuse_rcpt: vec![("qa@example.com".into(), 550)],
            ..ServerOptions::default()
        },
        &format!(
            "{}\n[profiles.test.policy]\nredirect_all = \"qa@example.com\"",
            suppress_line(&list)
        ),
    );
    s.suppress(&["add", "Ann <Ann@Example.net>"]).expect_exit(0);
    let file = s.write(
        "news.jsonl",
        &[
            r#"{"To":"Ann Lee <ann@example.net>","Subject":"one","Body":"b"}"#,
            r#"{"To":"bob@example.net","Subject":"two","Body":"b"}"#,
        ]
        .join("\n"),
    );
    s.batch(&[&file]).expect_exit(67);
    let statuses: Vec<Value> = s.lines().iter().map(|l| l["status"].clone()).collect();
    assert_eq!(statuses, ["suppressed", "refused"]);
    let text = std::fs::read_to_string(&list).unwrap();
    assert!(!text.contains("qa@example.com"), "{text}");
}
