//! Sendmail mode (`envoi sendmail`, or envoi run as `sendmail`) as its real callers use
//! it: cron's flags and bare names, a `sendmail` link, git send-email, and mail(1) both
//! BSD and GNU, each checked on what the server received.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use tempfile::TempDir;

use crate::support::envoi::{Config, ExpectExit, Run, envoi, hermetic_env};
use crate::support::external::require_external;
use crate::support::smtp_server::{Received, ServerOptions, TestServer};

/// A server, and a default profile for it in the platform config file of a hermetic HOME
/// (where sendmail mode, given no flags, looks), with an alias for `root`.
struct Mta {
    home: TempDir,
    server: TestServer,
}

impl Mta {
    fn new(extra: &str) -> Mta {
        let home = TempDir::new().expect("temp dir");
        let server = TestServer::start(ServerOptions::default());
        let dir = home.path().join(".config/envoi");
        std::fs::create_dir_all(&dir).expect("config dir");
        Config::new(server.port(), "none")
            .line("default_domain = \"box.example.com\"")
            .line(extra)
            .line("[profiles.test.aliases]\nroot = \"ops@example.com\"")
            .write(&dir);
        Mta { home, server }
    }

    /// `envoi sendmail ARGS` with `input` on standard input.
    fn sendmail(&self, args: &[&str], input: &[u8]) -> Run {
        envoi(self.home.path())
            .arg("sendmail")
            .args(args)
            .write_stdin(input.to_vec())
            .expect_exit(0)
    }

    fn only_message(&self) -> (Received, String) {
        let mut messages = self.server.messages();
        assert_eq!(messages.len(), 1, "expected one message");
        let m = messages.remove(0);
        let text = String::from_utf8_lossy(&m.data).into_owned();
        (m, text)
    }

    /// A `sendmail` link to the envoi binary, in a folder of its own.
    fn link(&self) -> PathBuf {
        let bin = self.home.path().join("bin");
        std::fs::create_dir_all(&bin).expect("bin dir");
        let link = bin.join("sendmail");
        std::os::unix::fs::symlink(assert_cmd::cargo::cargo_bin("envoi"), &link).expect("symlink");
        link
    }

    /// A command of another program, with envoi's hermetic environment.
    fn program(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.env_clear()
            .envs(hermetic_env(self.home.path()))
            .current_dir(self.home.path())
            .stdin(Stdio::null());
        cmd
    }
}

/// Runs `cmd` with `input` on its standard input; it must exit 0.
fn feed(mut cmd: Command, input: &[u8]) {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write");
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{:?} failed: {stderr}",
        cmd.get_program()
    );
}

fn header<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    head.split("\r\n")
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
}

/// Cron (cronie) pipes a job's output, LF-ended, From and To bare names, through
/// `sendmail -FCronDaemon -i -odi -oem -oi -t -f root`.
#[test]
fn cron_output_reaches_the_alias_as_written() {
    let mta = Mta::new("");
    let input = b"From: root (Cron Daemon)\nTo: root\nSubject: Cron <root@box> backup.sh\n\
                  Bcc: audit\n\nbackup done\n.\nnext line after a lone dot\n";
    let run = mta.sendmail(
        &[
            "-FCronDaemon",
            "-i",
            "-odi",
            "-oem",
            "-oi",
            "-t",
            "-f",
            "root",
        ],
        input,
    );
    assert_eq!(
        (run.stdout.as_str(), run.stderr.as_str()),
        ("", ""),
        "not silent"
    );
    let (m, text) = mta.only_message();
    assert_eq!(m.mail_from, "ops@example.com");
    assert_eq!(m.rcpt_to, ["ops@example.com", "audit@box.example.com"]);
    assert_eq!(header(&text, "To"), Some("ops@example.com"));
    assert_eq!(
        header(&text, "From"),
        Some("\"Cron Daemon\" <sender@example.com>")
    );
    assert_eq!(header(&text, "Subject"), Some("Cron <root@box> backup.sh"));
    assert!(header(&text, "Bcc").is_none(), "{text}");
    assert!(header(&text, "Date").is_some() && header(&text, "Message-ID").is_some());
    assert!(
        text.ends_with("\r\n\r\nbackup done\r\n.\r\nnext line after a lone dot\r\n"),
        "{text:?}"
    );
}

/// Run as `sendmail` (a link), with recipients as arguments: no -t, so the To field is
/// left alone and not a recipient; bytes of other charsets pass unchanged.
#[test]
fn a_sendmail_link_sends_to_its_arguments() {
    let mta = Mta::new("");
    let link = mta.link();
    let input =
        b"From: Ann <ann@example.com>\r\nTo: list@example.com\r\nSubject: x\r\n\r\ncaf\xe9\r\n";
    let mut cmd = mta.program(&link);
    cmd.args(["-i", "bob@example.com,carl@example.com"]);
    feed(cmd, input);
    let (m, _) = mta.only_message();
    assert_eq!(
        m.mail_from, "ann@example.com",
        "From's address is the sender"
    );
    assert_eq!(m.rcpt_to, ["bob@example.com", "carl@example.com"]);
    assert!(
        m.data.windows(5).any(|w| w == b"caf\xe9\r"),
        "8-bit body changed"
    );
}

/// With `outbox = true` a relay that is down does not lose cron's report: exit 0 and the
/// message waits in the outbox.
#[test]
fn a_dead_relay_queues_the_message() {
    let mta = Mta::new("outbox = true");
    let outbox = mta.home.path().join("outbox");
    drop(mta.server);
    let home = mta.home;
    envoi(home.path())
        .env("ENVOI_OUTBOX_DIR", &outbox)
        .args(["sendmail", "-t", "-N", "failure"])
        .write_stdin(&b"To: root\nSubject: report\n\nbody\n"[..])
        .expect_exit(0);
    let queued: Vec<_> = std::fs::read_dir(outbox.join("queue"))
        .expect("queue")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(queued.len(), 1, "not queued");
    // The DSN request waits with it, for the flush that sends it.
    let state = std::fs::read_to_string(queued[0].join("state.json")).expect("state");
    assert!(state.contains("\"FAILURE\""), "{state}");
}

/// The bug: `To: undisclosed-recipients:;`, the empty group (RFC 5322 §3.4) mailers write
/// when every recipient is a Bcc, was refused with 65 as a bad address. It names no one:
/// the Bcc address is the only recipient, Bcc is removed and To arrives as written.
#[test]
fn undisclosed_recipients_is_an_empty_group_not_a_bad_address() {
    let mta = Mta::new("");
    let input = b"From: Ann <ann@example.com>\nTo: undisclosed-recipients:;\n\
                  Bcc: hidden-bcc@example.com\nSubject: all bcc\n\nbody\n";
    let run = mta.sendmail(&["-t"], input);
    assert_eq!(run.stderr, "", "{run}");
    let (m, text) = mta.only_message();
    assert_eq!(m.mail_from, "ann@example.com");
    assert_eq!(m.rcpt_to, ["hidden-bcc@example.com"]);
    assert_eq!(header(&text, "To"), Some("undisclosed-recipients:;"));
    assert!(header(&text, "Bcc").is_none(), "{text}");
    assert!(
        !text.contains("hidden-bcc@example.com"),
        "the Bcc address leaked: {text}"
    );
    assert_eq!(header(&text, "Subject"), Some("all bcc"));
    assert!(text.ends_with("\r\n\r\nbody\r\n"), "{text:?}");
}

/// What envoi does not do is a usage error (64), and input that is not a message is 65.
#[test]
fn unsupported_modes_and_bad_input() {
    let mta = Mta::new("");
    for args in [&["-bp"][..], &["-bs"], &["-q"]] {
        envoi(mta.home.path())
            .arg("sendmail")
            .args(args)
            .write_stdin("")
            .expect_exit(64);
    }
    envoi(mta.home.path())
        .args(["sendmail", "a@example.com"])
        .write_stdin("just some text\n")
        .expect_exit(65);
    envoi(mta.home.path())
        .args(["sendmail", "-t"])
        .write_stdin("Subject: nobody\n\nhi\n")
        .expect_exit(64);
    assert!(mta.server.messages().is_empty());
}

/// git send-email hands each patch of a series to `--sendmail-cmd` with `-i` and the
/// recipients; every patch arrives, threaded, with its own Message-ID.
#[test]
fn git_send_email_delivers_a_patch_series() {
    let git = Path::new("/usr/bin/git");
    if !require_external("git send-email", git.exists() && has_send_email(git)) {
        return;
    }
    let mta = Mta::new("");
    let link = mta.link();
    let repo = mta.home.path().join("repo");
    let run = |args: &[&str]| {
        let out = mta
            .program(git)
            .args(["-C"])
            .arg(&repo)
            .args(args)
            .env("GIT_AUTHOR_NAME", "Dev")
            .env("GIT_AUTHOR_EMAIL", "dev@example.com")
            .env("GIT_COMMITTER_NAME", "Dev")
            .env("GIT_COMMITTER_EMAIL", "dev@example.com")
            .output()
            .expect("run git");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    std::fs::create_dir_all(&repo).expect("repo dir");
    run(&["init", "-q"]);
    for n in 1..=3 {
        std::fs::write(repo.join("file.txt"), format!("version {n}\n")).expect("write");
        run(&["add", "file.txt"]);
        run(&["commit", "-q", "-m", &format!("change {n}")]);
    }
    run(&["format-patch", "-q", "-2", "-o", "patches"]);
    let mut patches: Vec<OsString> = std::fs::read_dir(repo.join("patches"))
        .expect("patches")
        .map(|e| e.expect("entry").path().into_os_string())
        .collect();
    patches.sort();
    let mut args: Vec<OsString> = vec![
        "send-email".into(),
        format!("--sendmail-cmd={}", link.display()).into(),
        "--to=list@example.com".into(),
        "--from=Dev <dev@example.com>".into(),
        "--confirm=never".into(),
        "--suppress-cc=all".into(),
        "--quiet".into(),
    ];
    args.extend(patches);
    let arg_refs: Vec<&str> = args.iter().map(|a| a.to_str().expect("utf-8")).collect();
    run(&arg_refs);
    let messages = mta.server.messages();
    assert_eq!(messages.len(), 2, "one message per patch");
    for (m, n) in messages.iter().zip(2..=3) {
        assert_eq!(m.rcpt_to, ["list@example.com"]);
        let text = String::from_utf8_lossy(&m.data);
        assert!(text.contains(&format!("change {n}")), "{text}");
        assert!(text.contains(&format!("+version {n}")), "{text}");
    }
}

fn has_send_email(git: &Path) -> bool {
    Command::new(git)
        .args(["send-email", "--help"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.code() != Some(1))
        && Path::new("/usr/lib/git-core/git-send-email").exists()
}

/// mail(1) (bsd-mailx) with envoi as its sendmail: a user's message on the terminal side,
/// envoi's delivery on the other.
#[test]
fn mailx_sends_through_envoi() {
    let mailx = Path::new("/usr/bin/bsd-mailx");
    if !require_external("bsd-mailx", mailx.exists()) {
        return;
    }
    let mta = Mta::new("");
    let link = mta.link();
    let mailrc = mta.home.path().join(".mailrc");
    std::fs::write(&mailrc, format!("set sendmail={}\n", link.display())).expect("mailrc");
    let mut cmd = mta.program(mailx);
    cmd.env("MAILRC", &mailrc)
        .args(["-s", "hello from mailx", "bob@example.com"]);
    feed(cmd, b"sent by mail(1)\n");
    let (m, text) = mta.only_message();
    assert_eq!(m.rcpt_to, ["bob@example.com"]);
    assert_eq!(header(&text, "Subject"), Some("hello from mailx"));
    assert!(text.contains("sent by mail(1)"), "{text}");
}

/// GNU mail (mailutils' mail.mailutils) with envoi as its mailer: it runs
/// `sendmail -oi -f SENDER -t` and writes no From field, so envoi reads the recipients from
/// To, adds From, Message-ID, and takes -f as the envelope sender.
#[test]
fn gnu_mail_sends_through_envoi() {
    let mail = Path::new("/usr/bin/mail.mailutils");
    if !require_external("mailutils (mail.mailutils)", mail.exists()) {
        return;
    }
    let mta = Mta::new("");
    let link = mta.link();
    // ~/.mailrc in the hermetic HOME. The mailer must be a `sendmail://` URL: a plain path
    // is run as a program with no arguments (no -t, so no recipient for a sendmail).
    std::fs::write(
        mta.home.path().join(".mailrc"),
        format!("set sendmail=sendmail://{}\n", link.display()),
    )
    .expect("mailrc");
    let mut cmd = mta.program(mail);
    // -n and --no-site-config: neither /etc/mail.rc nor /etc/mailutils.conf is read.
    cmd.args([
        "-n",
        "--no-site-config",
        "-r",
        "ann@example.com",
        "-s",
        "hello from GNU mail",
        "bob@example.com",
    ]);
    feed(cmd, b"sent by GNU mail\n.\nafter a lone dot\n");
    let (m, text) = mta.only_message();
    assert_eq!(m.mail_from, "ann@example.com", "-f is the envelope sender");
    assert_eq!(m.rcpt_to, ["bob@example.com"]);
    assert_eq!(header(&text, "To"), Some("<bob@example.com>"));
    assert_eq!(header(&text, "Subject"), Some("hello from GNU mail"));
    assert_eq!(
        header(&text, "From"),
        Some("\"Envoi Test\" <sender@example.com>"),
        "no From given: the profile's"
    );
    assert!(header(&text, "Message-ID").is_some(), "{text}");
    assert!(
        text.ends_with("\r\n\r\nsent by GNU mail\r\n.\r\nafter a lone dot\r\n"),
        "{text:?}"
    );
}

/// T54: `"john doe"@example.test` (a quoted local part, RFC 5321 §4.1.2) was refused as
/// not an address. It is taken by `send` and by sendmail mode (argument and To with -t),
/// and stays quoted in RCPT TO and in the To header.
#[test]
fn t54_a_quoted_local_part_stays_quoted_on_the_wire() {
    let mta = Mta::new("");
    let config = mta.home.path().join(".config/envoi/config.toml");
    envoi(mta.home.path())
        .args(["send", "--config"])
        .arg(&config)
        .args([
            "--to",
            "\"john doe\"@example.test",
            "--subject",
            "s",
            "--body",
            "b",
        ])
        .expect_exit(0);
    mta.sendmail(&["\"jane roe\"@example.test"], b"Subject: s\n\nb\n");
    mta.sendmail(
        &["-t"],
        b"To: Ann <\"ann lee\"@example.test>\nSubject: s\n\nb\n",
    );
    let messages = mta.server.messages();
    let rcpts: Vec<&str> = messages.iter().map(|m| m.rcpt_to[0].as_str()).collect();
    assert_eq!(
        rcpts,
        [
            "\"john doe\"@example.test",
            "\"jane roe\"@example.test",
            "\"ann lee\"@example.test"
        ]
    );
    let transcript = mta.server.transcript();
    assert!(
        transcript.contains(&"RCPT TO:<\"john doe\"@example.test>".to_owned()),
        "{transcript:?}"
    );
    let text = String::from_utf8_lossy(&messages[0].data);
    assert_eq!(header(&text, "To"), Some("\"john doe\"@example.test"));
    let text = String::from_utf8_lossy(&messages[2].data);
    assert_eq!(header(&text, "To"), Some("Ann <\"ann lee\"@example.test>"));
}
