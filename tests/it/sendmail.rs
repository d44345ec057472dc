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
        m.mail_from, "sender@example.com",
        "the profile's `from` is the envelope sender, not the From field's"
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
    assert_eq!(m.mail_from, "sender@example.com");
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

impl Mta {
    /// `envoi sendmail ARGS` with `input`, which must exit `code`; its stderr.
    fn refused(&self, args: &[&str], input: &[u8], code: i32) -> String {
        envoi(self.home.path())
            .arg("sendmail")
            .args(args)
            .write_stdin(input.to_vec())
            .expect_exit(code)
            .stderr
    }

    /// Nothing reached the server: not a message, not even a connection.
    fn assert_nothing_sent(&self) {
        assert!(self.server.messages().is_empty(), "a message was sent");
        assert_eq!(self.server.connections(), 0, "envoi connected");
    }
}

/// Every line of `data` (CRLF-separated) holds at most 998 octets.
fn longest_line(data: &[u8]) -> usize {
    data.split(|b| *b == b'\n')
        .map(<[u8]>::len)
        .max()
        .unwrap_or(0)
}

/// A header's value with its folds undone (RFC 5322 §2.2.3).
fn unfolded(text: &str, name: &str) -> Option<String> {
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", "\t");
    unfolded
        .split("\r\n")
        .find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_owned))
}

/// SM06: `-F` with CR, LF or CR LF panicked (exit 70, "a Display implementation returned
/// an error"). It is refused as `--from`'s display name is, 65 naming -F, nothing sent.
#[test]
fn sm06_f_with_a_line_break_is_refused_not_a_panic() {
    let mta = Mta::new("");
    let input = b"To: a@example.com\nSubject: s\n\nbody\n";
    for name in [
        "Ops\r\nBcc: victim@example.com",
        "Ops\nBcc: v@x.com",
        "Ops\rX",
    ] {
        let stderr = mta.refused(&["-F", name, "-t"], input, 65);
        assert!(
            stderr.starts_with("envoi: error: -F: the value contains a"),
            "{stderr}"
        );
        assert!(!stderr.contains("internal error"), "{stderr}");
    }
    mta.assert_nothing_sent();
}

/// SM06/SM07/SM08, one validator: the same display name gets the same answer from `send
/// --from` and `sendmail -F` (line breaks, control characters, a 1200-character word);
/// and a long name with spaces is folded by both, so no From line passes 998 octets.
#[test]
fn sm06_send_and_sendmail_give_the_same_display_name_the_same_answer() {
    let mta = Mta::new("");
    let config = mta.home.path().join(".config/envoi/config.toml");
    let send = |from: &str, code: i32| {
        envoi(mta.home.path())
            .args(["send", "--config"])
            .arg(&config)
            .args([
                "--to",
                "a@example.com",
                "--subject",
                "s",
                "--body",
                "b",
                "--from",
            ])
            .arg(format!("{from} <s@example.com>"))
            .expect_exit(code)
            .stderr
    };
    let input = b"To: a@example.com\nSubject: s\n\nb\n";
    let long_word = "x".repeat(1200);
    for (name, needle) in [
        ("Ops\r\nBcc: v@example.com", "CR"),
        ("Ops\u{1}", "U+0001"),
        ("Ops\u{1b}[2J", "U+001B"),
        (long_word.as_str(), "a word of 1200 characters"),
    ] {
        let by_send = send(name, 65);
        let by_sendmail = mta.refused(&["-F", name, "-t"], input, 65);
        for stderr in [&by_send, &by_sendmail] {
            assert!(stderr.contains(needle), "{name:?}: {stderr}");
        }
    }
    assert!(mta.server.messages().is_empty(), "a message was sent");

    let spaced = "word ".repeat(240);
    send(spaced.trim_end(), 0);
    mta.sendmail(&["-F", spaced.trim_end(), "-t"], input);
    let messages = mta.server.messages();
    assert_eq!(messages.len(), 2);
    for m in &messages {
        let text = String::from_utf8_lossy(&m.data);
        assert!(
            longest_line(&m.data) <= 1000,
            "a line over 998 octets: {text}"
        );
        let from = unfolded(&text, "From").expect("From");
        assert!(from.contains(spaced.trim_end()), "{from}");
    }
}

/// SM07: a 1200-character `-F` went out as a 1223-octet From line. It is refused (65)
/// as `send` refuses a word over 900 characters.
#[test]
fn sm07_a_1200_character_f_is_refused_as_send_refuses_it() {
    let mta = Mta::new("");
    let name = "A".repeat(1200);
    let stderr = mta.refused(&["-F", &name, "-t"], b"To: a@example.com\n\nb\n", 65);
    assert!(
        stderr.starts_with("envoi: error: -F: a word of 1200 characters"),
        "{stderr}"
    );
    mta.assert_nothing_sent();
}

/// SM10: NUL bytes in a header or the body went out raw. Refused as `send` refuses NUL,
/// 65 naming the line of standard input.
#[test]
fn sm10_nul_bytes_are_refused_naming_the_line() {
    let mta = Mta::new("");
    let stderr = mta.refused(
        &["a@example.com"],
        b"To: a@example.com\nSubject: s\0nul\n\nb\n",
        65,
    );
    assert!(
        stderr.starts_with("envoi: error: standard input, line 2 (Subject): the header contains"),
        "{stderr}"
    );
    assert!(stderr.contains("NUL"), "{stderr}");
    let stderr = mta.refused(&["a@example.com"], b"Subject: s\n\nline\nbo\0dy\n", 65);
    assert!(
        stderr.starts_with("envoi: error: standard input, line 4: the body contains a NUL"),
        "{stderr}"
    );
    let stderr = mta.refused(&["a@example.com"], b"Subject: s\x1b[2J\n\nb\n", 65);
    assert!(stderr.contains("U+001B"), "{stderr}");
    mta.assert_nothing_sent();
}

/// SM12: a 3000-octet header and a 5000-octet body line went out raw. The header is
/// folded at its spaces (unfolding gives it back); a header run without a space and a
/// long body line are refused, 65 naming the line.
#[test]
fn sm12_long_header_lines_are_folded_and_long_body_lines_refused() {
    let mta = Mta::new("");
    let words: Vec<String> = (0..600).map(|i| format!("v{i:03}")).collect();
    let value = words.join(" ");
    assert!(value.len() > 2900);
    let input = format!("To: a@example.com\nX-Long: {value}\nSubject: s\n\nbody\n");
    mta.sendmail(&["-t"], input.as_bytes());
    let (m, text) = mta.only_message();
    assert!(longest_line(&m.data) <= 80, "not folded: {text}");
    assert_eq!(unfolded(&text, "X-Long").as_deref(), Some(value.as_str()));
    assert_eq!(header(&text, "Subject"), Some("s"));

    let run = "y".repeat(3000);
    let input = format!("To: a@example.com\nX-Long: a {run}\n\nbody\n");
    let stderr = mta.refused(&["-t"], input.as_bytes(), 65);
    assert!(
        stderr.starts_with("envoi: error: standard input, line 2 (X-Long): a header line"),
        "{stderr}"
    );
    let input = format!("To: a@example.com\n\nfirst\n{}\n", "z".repeat(5000));
    let stderr = mta.refused(&["-t"], input.as_bytes(), 65);
    assert!(
        stderr.starts_with("envoi: error: standard input, line 4: a body line of 5000 octets"),
        "{stderr}"
    );
    assert_eq!(mta.server.messages().len(), 1, "a refused message was sent");
}

/// SM14: the envelope sender followed the From field over the profile's `from`, so a
/// message claiming `chief@victim.example` was sent as it. The README's order holds: -f,
/// else the profile's `from`, else the From field. The From field itself is kept.
#[test]
fn sm14_the_envelope_sender_is_the_profile_s_from_not_the_from_field() {
    let mta = Mta::new("");
    let input = b"From: Chief <chief@victim.example>\nTo: a@example.com\nSubject: s\n\nb\n";
    mta.sendmail(&["-t"], input);
    mta.sendmail(&["-t", "-f", "bounces@example.com"], input);
    let messages = mta.server.messages();
    let senders: Vec<&str> = messages.iter().map(|m| m.mail_from.as_str()).collect();
    assert_eq!(senders, ["sender@example.com", "bounces@example.com"]);
    for m in &messages {
        let text = String::from_utf8_lossy(&m.data);
        assert_eq!(header(&text, "From"), Some("Chief <chief@victim.example>"));
    }
    // No profile `from` (a bare URL): the From field's address.
    let home = TempDir::new().expect("temp dir");
    envoi(home.path())
        .env(
            "ENVOI_SMTP_URL",
            format!("smtp://127.0.0.1:{}?security=none", mta.server.port()),
        )
        .args(["sendmail", "-t"])
        .write_stdin(input.to_vec())
        .expect_exit(0);
    let messages = mta.server.messages();
    assert_eq!(messages[2].mail_from, "chief@victim.example");
}

/// SM15: `Resent-Bcc` stayed in the message, showing the blind address to everyone.
/// It is removed like Bcc, in any case and folded. Without -t neither is a recipient;
/// with -t a message that has Resent- fields goes to Resent-To, -Cc and -Bcc only, as
/// sendmail and Postfix send it.
#[test]
fn sm15_resent_bcc_is_removed_like_bcc() {
    let mta = Mta::new("");
    let input = b"From: Ann <ann@example.com>\nTo: first@example.com\nBcc: blind@example.com\n\
                  Resent-From: Ops <ops@example.com>\nResent-To: again@example.com\n\
                  RESENT-BCC: h4@example.com,\n  h5@example.com\nSubject: s\n\nbody\n";
    mta.sendmail(&["arg@example.com"], input);
    mta.sendmail(&["-t"], input);
    let messages = mta.server.messages();
    assert_eq!(messages[0].rcpt_to, ["arg@example.com"]);
    assert_eq!(
        messages[1].rcpt_to,
        ["again@example.com", "h4@example.com", "h5@example.com"]
    );
    for m in &messages {
        let text = String::from_utf8_lossy(&m.data);
        // Not "b@example.com" nor "Bcc" anywhere: a random Message-ID can hold either.
        let lower = text.to_ascii_lowercase();
        for hidden in ["h4@", "h5@", "blind@", "\nbcc:", "\nresent-bcc:"] {
            assert!(!lower.contains(hidden), "{hidden} shows: {text}");
        }
        assert_eq!(header(&text, "Resent-To"), Some("again@example.com"));
        assert_eq!(header(&text, "Subject"), Some("s"));
    }
    // `send` builds no Resent-Bcc either: the same rule, from the same check.
    let config = mta.home.path().join(".config/envoi/config.toml");
    let stderr = envoi(mta.home.path())
        .args(["send", "--config"])
        .arg(&config)
        .args(["--to", "a@example.com", "--subject", "s", "--body", "b"])
        .args(["--header", "resent-bcc: h4@example.com"])
        .expect_exit(64)
        .stderr;
    assert!(stderr.contains("--bcc"), "{stderr}");
    assert_eq!(mta.server.messages().len(), 2);
}

/// SM17: empty standard input sent an empty message with exit 0 (a failed producer in a
/// pipe lost without a word). Nothing, or only blank lines, is 66; a message with a
/// header and an empty body is still sent, as every sendmail sends it.
#[test]
fn sm17_empty_standard_input_is_66() {
    let mta = Mta::new("");
    for input in [&b""[..], b"\n", b"\r\n\r\n"] {
        let stderr = mta.refused(&["a@example.com"], input, 66);
        assert!(
            stderr.starts_with("envoi: error: standard input is empty: nothing to send"),
            "{stderr}"
        );
    }
    mta.assert_nothing_sent();
    mta.sendmail(&["a@example.com"], b"Subject: s\n\n");
    let (_, text) = mta.only_message();
    assert_eq!(header(&text, "Subject"), Some("s"));
    assert!(text.ends_with("\r\n\r\n"), "{text:?}");
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

/// Issue 18, msmtp's `allow_from_override = false`: cron's `-f root`, a caller's `-f` of
/// its own and the From field all leave the envelope sender at the profile's `from`;
/// the From field stays as written (`set_from_header` is still `auto`).
#[test]
fn allow_from_override_false_keeps_the_profile_s_sender() {
    let mta = Mta::new("allow_from_override = false");
    let input = b"From: Chief <chief@victim.example>\nTo: root\nSubject: s\n\nbody\n";
    mta.sendmail(&["-FCronDaemon", "-i", "-oi", "-t", "-f", "root"], input);
    mta.sendmail(&["-t", "-fbounces@example.com"], input);
    mta.sendmail(&["-t", "-r", "<>"], input);
    let messages = mta.server.messages();
    let senders: Vec<&str> = messages.iter().map(|m| m.mail_from.as_str()).collect();
    assert_eq!(senders, ["sender@example.com"; 3]);
    for m in &messages {
        assert_eq!(m.rcpt_to, ["ops@example.com"]);
        let text = String::from_utf8_lossy(&m.data);
        assert_eq!(header(&text, "From"), Some("Chief <chief@victim.example>"));
    }
    // The default lets -f through, as msmtp does.
    let open = Mta::new("");
    open.sendmail(&["-t", "-fbounces@example.com"], input);
    let (m, _) = open.only_message();
    assert_eq!(m.mail_from, "bounces@example.com");
}

/// Issue 18, msmtp's `set_from_header`: `on` rewrites From to the profile's `from`
/// (keeping the name written), `off` sends the From field untouched and refuses a
/// message it would have to change (65, naming the key), `auto` adds a missing one.
#[test]
fn set_from_header_on_rewrites_off_keeps_auto_adds() {
    let spoof = b"From: Chief <chief@victim.example>\nTo: a@example.com\nSubject: s\n\nb\n";
    let cron = b"From: root (Cron Daemon)\nTo: a@example.com\nSubject: s\n\nb\n";
    let none = b"To: a@example.com\nSubject: s\n\nb\n";

    let on = Mta::new("set_from_header = \"on\"");
    on.sendmail(&["-t", "-f", "bounces@example.com"], spoof);
    on.sendmail(&["-t"], cron);
    on.sendmail(&["-t", "-F", "Nightly Job"], none);
    let messages = on.server.messages();
    let froms: Vec<String> = messages
        .iter()
        .map(|m| unfolded(&String::from_utf8_lossy(&m.data), "From").unwrap_or_default())
        .collect();
    assert_eq!(
        froms,
        [
            "Chief <sender@example.com>",
            "\"Cron Daemon\" <sender@example.com>",
            "\"Nightly Job\" <sender@example.com>"
        ]
    );
    assert_eq!(messages[0].mail_from, "bounces@example.com");
    assert!(
        !String::from_utf8_lossy(&messages[0].data).contains("victim"),
        "the old From is gone"
    );

    let off = Mta::new("set_from_header = \"off\"");
    off.sendmail(&["-t"], spoof);
    let (_, text) = off.only_message();
    assert_eq!(header(&text, "From"), Some("Chief <chief@victim.example>"));
    for input in [&cron[..], none] {
        let run = envoi(off.home.path())
            .args(["sendmail", "-t"])
            .write_stdin(input.to_vec())
            .expect_exit(65);
        assert!(run.stderr.contains("set_from_header = \"auto\""), "{run}");
    }
    assert_eq!(off.server.messages().len(), 1, "a refused message went out");

    let auto = Mta::new("");
    auto.sendmail(&["-t", "-F", "Nightly Job"], none);
    let (_, text) = auto.only_message();
    assert_eq!(
        header(&text, "From"),
        Some("\"Nightly Job\" <sender@example.com>")
    );
}

/// Both keys pin the sender to `from`: a profile that sets either without `from` is a
/// configuration error (78) naming the key, before anything is sent.
#[test]
fn pinning_the_sender_without_from_is_78_naming_the_key() {
    let server = TestServer::start(ServerOptions::default());
    for key in ["allow_from_override = false", "set_from_header = \"on\""] {
        let home = TempDir::new().expect("temp dir");
        let dir = home.path().join(".config/envoi");
        std::fs::create_dir_all(&dir).expect("config dir");
        std::fs::write(
            dir.join("config.toml"),
            format!(
                "default = \"t\"\n[profiles.t]\nhost = \"localhost\"\nport = {}\n\
                 security = \"none\"\n{key}\n",
                server.port()
            ),
        )
        .expect("config");
        let run = envoi(home.path())
            .args(["sendmail", "a@example.com"])
            .write_stdin(&b"From: a@example.com\nSubject: s\n\nb\n"[..])
            .expect_exit(78);
        assert!(run.stderr.contains(key), "{run}");
        assert!(run.stderr.contains("from = "), "{run}");
    }
    assert!(server.messages().is_empty());
}

/// Issue 18: an alias with several targets, as a comma-separated string or a TOML
/// list: each target gets the message, and a bare name in To becomes them all.
#[test]
fn an_alias_with_several_targets_reaches_each() {
    for value in [
        "\"ops@example.com, ann@example.com\"",
        "[\"ops@example.com\", \"ann@example.com\"]",
    ] {
        let home = TempDir::new().expect("temp dir");
        let server = TestServer::start(ServerOptions::default());
        let dir = home.path().join(".config/envoi");
        std::fs::create_dir_all(&dir).expect("config dir");
        Config::new(server.port(), "none")
            .line(&format!("[profiles.test.aliases]\nroot = {value}"))
            .write(&dir);
        envoi(home.path())
            .args(["sendmail", "-t", "-f", "root"])
            .write_stdin(&b"From: root (Cron Daemon)\nTo: root\nSubject: s\n\nbody\n"[..])
            .expect_exit(0);
        let messages = server.messages();
        assert_eq!(messages.len(), 1, "{value}");
        assert_eq!(messages[0].mail_from, "ops@example.com", "the first target");
        assert_eq!(messages[0].rcpt_to, ["ops@example.com", "ann@example.com"]);
        let text = String::from_utf8_lossy(&messages[0].data);
        assert_eq!(
            unfolded(&text, "To").as_deref(),
            Some("ops@example.com, ann@example.com")
        );
    }
}

/// Issue 18: `aliases_file` reads the system aliases file as Postfix writes it — a chain
/// (`mailer-daemon: postmaster: root`), several targets, a continuation line, comments,
/// names in any case — and the profile's own table wins for a name both have.
#[test]
fn aliases_file_is_read_as_the_system_writes_it() {
    let file = TempDir::new().expect("temp dir");
    let aliases = file.path().join("aliases");
    std::fs::write(
        &aliases,
        "# See man 5 aliases\nmailer-daemon: postmaster\npostmaster: root\n\
         root: nobody@example.net\n\
         WebMaster: www@example.com, # the web team:\n  ann@example.com\n\
         backup: \"|/usr/local/bin/store-mail\"\n",
    )
    .expect("aliases");
    let mta = Mta::new(&format!("aliases_file = \"{}\"", aliases.display()));
    let input = b"From: root (Cron Daemon)\nTo: webmaster\nCc: Mailer-Daemon\nSubject: s\n\nb\n";
    mta.sendmail(&["-t", "-f", "postmaster"], input);
    let (m, text) = mta.only_message();
    assert_eq!(m.mail_from, "ops@example.com");
    assert_eq!(
        m.rcpt_to,
        ["www@example.com", "ann@example.com", "ops@example.com"],
        "root is the profile's alias, not the file's"
    );
    assert_eq!(
        unfolded(&text, "To").as_deref(),
        Some("www@example.com, ann@example.com")
    );
    assert_eq!(header(&text, "Cc"), Some("ops@example.com"));

    // A local delivery is refused when a message goes there, naming the file's line.
    let run = envoi(mta.home.path())
        .args(["sendmail", "backup"])
        .write_stdin(&b"Subject: s\n\nb\n"[..])
        .expect_exit(78);
    let line = format!("({} line 7)", aliases.display());
    assert!(run.stderr.contains(&line), "{run}");
    assert!(run.stderr.contains("[profiles.NAME.aliases]"), "{run}");
    assert_eq!(mta.server.messages().len(), 1);
}

/// `aliases_file` must be a regular file that exists, read bounded: a folder, a missing
/// file or a line that is not an alias is 78 naming the key; nothing is sent.
#[test]
fn a_bad_aliases_file_is_78_naming_the_key() {
    let file = TempDir::new().expect("temp dir");
    let broken = file.path().join("broken");
    std::fs::write(&broken, "root: ops@example.com\nthis is not an alias\n").expect("write");
    for (path, says) in [
        (file.path().to_path_buf(), "a directory".to_owned()),
        (file.path().join("missing"), "aliases_file".to_owned()),
        (broken.clone(), format!("{} line 2", broken.display())),
    ] {
        let mta = Mta::new(&format!("aliases_file = \"{}\"", path.display()));
        let run = envoi(mta.home.path())
            .args(["sendmail", "a@example.com"])
            .write_stdin(&b"Subject: s\n\nb\n"[..])
            .expect_exit(78);
        assert!(run.stderr.contains(&says), "{run}");
        assert!(run.stderr.contains("aliases_file"), "{run}");
        assert!(mta.server.messages().is_empty());
    }
}
