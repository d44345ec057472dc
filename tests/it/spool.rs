//! One sendmail for every user of a machine (issue 19 §2), tested as such a machine uses
//! it: real system users made for the test (`useradd`), a system config owned by root
//! with the relay's password, readable only by the service user's group, and a spool
//! with the modes envoi-mta gives it. A user submits with `sendmail -t` as themself
//! (`setpriv`); the flush runs as the service user and delivers to a loopback SMTP server
//! that requires AUTH. Needs root (as in CI); skipped, with a note, otherwise.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use mail_parser::MessageParser;
use tempfile::TempDir;

use crate::support::external::external_required;
use crate::support::smtp_server::{ServerOptions, TestServer};
use crate::support::{PASSWORD, USER};

/// Whether the test can make users: root, with useradd and setpriv.
fn can_make_users() -> bool {
    let root = std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false);
    let tools = ["/usr/sbin/useradd", "/usr/sbin/userdel", "/usr/bin/setpriv"]
        .iter()
        .all(|t| Path::new(t).exists());
    if !(root && tools) {
        let why = "a multi-user spool test needs root, useradd and setpriv";
        assert!(!external_required(), "{why} (CI runs as root)");
        eprintln!("note: skipping: {why}");
    }
    root && tools
}

/// A system user made for one test, removed (with its group) when dropped.
struct User {
    name: String,
    uid: u32,
    gid: u32,
}

impl User {
    fn new(tag: &str, system: bool) -> User {
        let name = format!(
            "ev{tag}{}{:04x}",
            std::process::id() % 100_000,
            fastrand::u16(..)
        );
        let mut cmd = Command::new("/usr/sbin/useradd");
        cmd.args(["-M", "-U", "-s", "/usr/sbin/nologin"]);
        if system {
            cmd.arg("--system");
        }
        let out = cmd.arg(&name).output().expect("run useradd");
        assert!(out.status.success(), "useradd {name}: {out:?}");
        let id = |flag: &str| -> u32 {
            let out = Command::new("id").args([flag, &name]).output().expect("id");
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .expect("a number")
        };
        User {
            uid: id("-u"),
            gid: id("-g"),
            name,
        }
    }
}

impl Drop for User {
    fn drop(&mut self) {
        let _ = Command::new("/usr/sbin/userdel").arg(&self.name).output();
        let _ = Command::new("/usr/sbin/groupdel").arg(&self.name).output();
    }
}

/// The machine: two users, the service user, the system config, the spool and a server.
struct Machine {
    base: TempDir,
    ann: User,
    bob: User,
    service: User,
    server: TestServer,
}

const DOMAIN: &str = "box.example.com";

impl Machine {
    /// `extra`: more lines of the system profile.
    fn new(extra: &str) -> Machine {
        let base = TempDir::new().expect("temp dir");
        chmod(base.path(), 0o755);
        let (ann, bob, service) = (
            User::new("a", false),
            User::new("b", false),
            User::new("s", true),
        );
        let server = TestServer::start(ServerOptions {
            auth: Some((USER.into(), PASSWORD.into())),
            ..ServerOptions::default()
        });
        let machine = Machine {
            base,
            ann,
            bob,
            service,
            server,
        };
        let etc = machine.path("etc");
        std::fs::create_dir(&etc).expect("etc");
        chmod(&etc, 0o755);
        machine.write_config(machine.server.port(), extra);
        let spool = machine.spool();
        std::fs::create_dir(&spool).expect("spool");
        chown(&spool, machine.service.uid, machine.service.gid);
        chmod(&spool, 0o3733);
        let state = machine.path("state");
        std::fs::create_dir(&state).expect("state");
        chown(&state, machine.service.uid, machine.service.gid);
        chmod(&state, 0o700);
        for user in [&machine.ann, &machine.bob] {
            let home = machine.path(&user.name);
            std::fs::create_dir(&home).expect("home");
            chown(&home, user.uid, user.gid);
            chmod(&home, 0o700);
        }
        machine
    }

    fn path(&self, name: &str) -> PathBuf {
        self.base.path().join(name)
    }

    fn spool(&self) -> PathBuf {
        self.path("spool")
    }

    fn config(&self) -> PathBuf {
        self.path("etc/config.toml")
    }

    /// The system config: root's, 0640, group the service user's; a password inline.
    fn write_config(&self, port: u16, extra: &str) {
        let text = format!(
            "default = \"relay\"\n[profiles.relay]\nhost = \"127.0.0.1\"\nport = {port}\n\
             security = \"none\"\nallow_plaintext_auth = true\ntimeout_secs = 5\n\
             username = \"{USER}\"\npassword = \"{PASSWORD}\"\n\
             default_domain = \"{DOMAIN}\"\n{extra}\n"
        );
        std::fs::write(self.config(), text).expect("write the system config");
        chown(&self.config(), 0, self.service.gid);
        chmod(&self.config(), 0o640);
    }

    /// `program args` run as `user`, in a fixed environment: the user's HOME, and the
    /// system config and spool of this machine.
    fn run_as(&self, user: &User, program: &Path, args: &[&str], input: &[u8]) -> Output {
        let home = if user.uid == self.service.uid {
            self.path("state")
        } else {
            self.path(&user.name)
        };
        let mut child = Command::new("/usr/bin/setpriv")
            .args([
                "--reuid",
                &user.name,
                "--regid",
                &user.name,
                "--init-groups",
                "--",
            ])
            .arg(program)
            .args(args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("HOME", &home)
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env("ENVOI_SYSTEM_CONFIG", self.config())
            .env("ENVOI_SPOOL_DIR", self.spool())
            .current_dir(self.base.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn setpriv");
        let mut stdin = child.stdin.take().expect("stdin");
        let _ = stdin.write_all(input);
        drop(stdin);
        child.wait_with_output().expect("wait")
    }

    /// `envoi sendmail ARGS` as `user`, `input` on standard input.
    fn sendmail(&self, user: &User, args: &[&str], input: &[u8]) -> Output {
        let mut all = vec!["sendmail"];
        all.extend(args);
        self.run_as(user, &envoi_bin(), &all, input)
    }

    /// The flush arguments of envoi-spool.service, for this machine.
    fn flush_args(&self) -> Vec<OsString> {
        vec![
            "outbox".into(),
            "flush".into(),
            "--spool".into(),
            self.spool().into(),
            "--config".into(),
            self.config().into(),
            "--outbox-dir".into(),
            self.path("state/outbox").into(),
        ]
    }

    /// `envoi outbox flush --spool …` as the service user.
    fn flush(&self) -> Output {
        let args = self.flush_args();
        let args: Vec<&str> = args.iter().map(|a| a.to_str().expect("utf-8")).collect();
        self.run_as(&self.service, &envoi_bin(), &args, b"")
    }

    /// The spool's files (root may list it), `bad/` aside.
    fn spooled(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.spool())
            .expect("list the spool")
            .flatten()
            .map(|e| e.path())
            .filter(|p| !p.ends_with("bad"))
            .collect();
        files.sort();
        files
    }

    fn set_aside(&self) -> Vec<String> {
        match std::fs::read_dir(self.spool().join("bad")) {
            Ok(dir) => dir
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

fn envoi_bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("envoi")
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown");
}

fn ok(out: &Output, what: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "{what}: {:?}\nstdout: {}\nstderr: {stderr}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
    stderr
}

fn header(data: &[u8], name: &str) -> String {
    let message = MessageParser::default()
        .parse(data)
        .expect("a MIME message");
    message
        .header_raw(name)
        .map(|v| v.trim().to_owned())
        .unwrap_or_default()
}

/// A user who may not read the system config (its password) submits with `sendmail -t`;
/// the message waits in the spool, where the other user can neither list nor read it,
/// and the flush, as the service user, sends it with the password, from the user's own
/// address.
#[test]
fn a_user_without_the_secret_sends_through_the_spool() {
    if !can_make_users() {
        return;
    }
    let machine = Machine::new("");
    let (ann, bob) = (&machine.ann, &machine.bob);
    for user in [ann, bob] {
        let read = machine.run_as(
            user,
            Path::new("/bin/cat"),
            &[machine.config().to_str().unwrap()],
            b"",
        );
        assert!(!read.status.success(), "{} read the secret", user.name);
    }
    let input = b"To: rcpt@example.net\nSubject: from the spool\n\nhello from ann\n";
    let drop = machine.sendmail(ann, &["-t", "-i"], input);
    let stderr = ok(&drop, "sendmail as ann");
    assert_eq!(stderr, "", "silent like every sendmail");
    let spooled = machine.spooled();
    assert_eq!(spooled.len(), 1, "{spooled:?}");
    let meta = std::fs::metadata(&spooled[0]).expect("stat");
    assert_eq!(meta.uid(), ann.uid, "the kernel says who sent it");
    assert_eq!(meta.gid(), machine.service.gid, "the spool's setgid group");
    assert_eq!(meta.mode() & 0o777, 0o640);
    let name = spooled[0].file_name().unwrap().to_str().unwrap().to_owned();
    assert_eq!(name.len(), 32, "128 random bits");
    assert!(machine.server.messages().is_empty(), "nothing sent yet");
    // Bob can neither read Ann's message nor list the spool.
    let path = spooled[0].to_str().unwrap();
    let read = machine.run_as(bob, Path::new("/bin/cat"), &[path], b"");
    assert!(!read.status.success(), "bob read ann's mail");
    let list = machine.run_as(
        bob,
        Path::new("/bin/ls"),
        &[machine.spool().to_str().unwrap()],
        b"",
    );
    assert!(!list.status.success(), "bob listed the spool");
    let remove = machine.run_as(bob, Path::new("/bin/rm"), &["-f", path], b"");
    assert!(
        !remove.status.success() && spooled[0].exists(),
        "bob removed ann's mail"
    );

    let flushed = machine.flush();
    ok(&flushed, "flush as the service user");
    let messages = machine.server.messages();
    assert_eq!(messages.len(), 1);
    let m = &messages[0];
    let ann_address = format!("{}@{DOMAIN}", ann.name);
    assert_eq!(
        m.authenticated_as.as_deref(),
        Some(USER),
        "the system's password"
    );
    assert_eq!(m.mail_from, ann_address);
    assert_eq!(m.rcpt_to, ["rcpt@example.net"]);
    assert!(
        header(&m.data, "From").contains(&ann_address),
        "{}",
        String::from_utf8_lossy(&m.data)
    );
    assert_eq!(header(&m.data, "Subject"), "from the spool");
    let trace = header(&m.data, "Received");
    assert!(
        trace.contains(&format!(
            "(envoi spool, from userid {}) id {name};",
            ann.uid
        )),
        "who handed it over: {trace}"
    );
    assert!(String::from_utf8_lossy(&m.data).contains("hello from ann\r\n"));
    assert!(machine.spooled().is_empty(), "taken out of the spool");
    assert!(machine.set_aside().is_empty());
}

/// With `allow_from_override = false` every user sends as the relay account's `from`: a
/// user who writes `From: root@…` and `-f root@…` gets them rewritten, not honoured.
#[test]
fn a_forged_sender_is_rewritten_to_the_one_the_policy_allows() {
    if !can_make_users() {
        return;
    }
    let machine = Machine::new("from = \"Relay <relay@example.com>\"\nallow_from_override = false");
    let input =
        b"From: The Admin <root@example.com>\nTo: rcpt@example.net\nSubject: forged\n\nhi\n";
    let stderr = ok(
        &machine.sendmail(&machine.bob, &["-t", "-v", "-f", "root@example.com"], input),
        "sendmail as bob",
    );
    assert!(
        stderr.contains(&format!(
            "the message is in the system spool as {}",
            machine.spool().display()
        )),
        "-v says where it went: {stderr}"
    );
    ok(&machine.flush(), "flush");
    let messages = machine.server.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].mail_from, "relay@example.com");
    let from = header(&messages[0].data, "From");
    assert!(
        from.contains("<relay@example.com>") && !from.contains("root@"),
        "{from}"
    );
}

/// With `set_from_header = "off"` From is never rewritten: a From that is not the user's
/// own address is refused (set aside, never sent); the user's own goes as written.
#[test]
fn with_set_from_header_off_a_forged_from_is_refused() {
    if !can_make_users() {
        return;
    }
    let machine = Machine::new("set_from_header = \"off\"");
    let ann = &machine.ann;
    let own = format!("{}@{DOMAIN}", ann.name);
    let forged = b"From: root@example.com\nTo: rcpt@example.net\nSubject: forged\n\nhi\n";
    let honest = format!("From: Ann <{own}>\nTo: rcpt@example.net\nSubject: honest\n\nhi\n");
    ok(&machine.sendmail(ann, &["-t"], forged), "the forged one");
    ok(
        &machine.sendmail(ann, &["-t"], honest.as_bytes()),
        "the honest one",
    );
    let stderr = ok(&machine.flush(), "flush");
    let messages = machine.server.messages();
    assert_eq!(messages.len(), 1, "{stderr}");
    assert_eq!(header(&messages[0].data, "Subject"), "honest");
    assert_eq!(header(&messages[0].data, "From"), format!("Ann <{own}>"));
    assert_eq!(messages[0].mail_from, own);
    assert_eq!(machine.set_aside().len(), 1);
    assert!(
        stderr.contains(&format!(
            "its From field is not {own}, the only sender {}",
            ann.name
        )),
        "{stderr}"
    );
}

/// Files that are not a user's message are moved to `bad/` with a line each, never sent:
/// junk, and a link to the secret a user hopes the flush will mail out.
#[test]
fn junk_in_the_spool_is_set_aside_never_sent() {
    if !can_make_users() {
        return;
    }
    let machine = Machine::new("");
    let spool = machine.spool();
    let junk = format!("{}/0123456789abcdef0123456789abcdef", spool.display());
    let link = format!("{}/link", spool.display());
    let sh =
        |script: &str| machine.run_as(&machine.ann, Path::new("/bin/sh"), &["-c", script], b"");
    ok(
        &sh(&format!("echo 'To: x@example.net' > {junk}")),
        "write junk",
    );
    ok(
        &sh(&format!("ln -s {} {link}", machine.config().display())),
        "link",
    );
    // A name that would forge a second log line.
    ok(
        &sh(&format!(
            "echo junk > \"{}/$(printf 'x\\nenvoi: spool: forged')\"",
            spool.display()
        )),
        "a name with a line break",
    );
    ok(
        &sh(&format!(
            "echo junk > \"{}/$(printf 'not\\377utf8')\"",
            spool.display()
        )),
        "a name that is not UTF-8",
    );
    let flushed = machine.flush();
    let stderr = ok(&flushed, "flush");
    assert!(machine.server.messages().is_empty(), "nothing sent");
    assert!(machine.server.connections() == 0, "no connection even");
    let mut aside = machine.set_aside();
    aside.sort();
    assert_eq!(
        aside,
        [
            "0123456789abcdef0123456789abcdef",
            "link",
            "not\u{fffd}utf8",
            "x\nenvoi: spool: forged"
        ]
    );
    assert!(
        !stderr
            .lines()
            .any(|l| l.starts_with("envoi: spool: forged")),
        "a name cannot forge a log line: {stderr}"
    );
    assert!(
        stderr.contains("spool: 0123456789abcdef0123456789abcdef set aside in")
            && stderr.contains("it is not a spool file"),
        "{stderr}"
    );
    assert!(stderr.contains("spool: link set aside"), "{stderr}");
    assert!(!stderr.contains(PASSWORD));
    assert!(machine.spooled().is_empty());
}

/// A flush killed after it took the message out of the spool loses nothing: the message
/// waits in the service's outbox, and the next flush sends it once, even when the spool
/// file comes back (the crash fell between queueing and removing it).
#[test]
fn a_crash_between_drop_and_delivery_loses_nothing() {
    if !can_make_users() {
        return;
    }
    let silent = TestServer::start(ServerOptions {
        silent_greeting: true,
        ..ServerOptions::default()
    });
    let machine = Machine::new("");
    machine.write_config(silent.port(), "");
    let input = b"To: rcpt@example.net\nSubject: survives\n\nkept\n";
    ok(&machine.sendmail(&machine.ann, &["-t"], input), "sendmail");
    let file = machine.spooled().remove(0);
    let (copy, later) = (machine.path("copy"), machine.path("later"));
    for to in [&copy, &later] {
        let cp = Command::new("cp")
            .arg("-a")
            .arg(&file)
            .arg(to)
            .output()
            .expect("cp");
        assert!(cp.status.success());
    }

    let args = machine.flush_args();
    let mut child = Command::new("/usr/bin/setpriv")
        .args([
            "--reuid",
            &machine.service.name,
            "--regid",
            &machine.service.name,
            "--init-groups",
            "--",
        ])
        .arg(envoi_bin())
        .args(&args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", machine.path("state"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the flush");
    let started = Instant::now();
    while silent.connections() == 0 && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(silent.connections() > 0, "the flush reached the server");
    child.kill().expect("SIGKILL the flush");
    let _ = child.wait();
    assert!(
        machine.spooled().is_empty(),
        "moved into the outbox before sending"
    );

    // The crash fell before the spool file was removed: it is there again.
    std::fs::rename(&copy, &file).expect("put the spool file back");
    machine.write_config(machine.server.port(), "");
    ok(&machine.flush(), "the next flush");
    let messages = machine.server.messages();
    assert_eq!(messages.len(), 1, "sent once");
    assert_eq!(header(&messages[0].data, "Subject"), "survives");
    assert!(machine.spooled().is_empty());
    assert!(machine.set_aside().is_empty());
    ok(&machine.flush(), "a flush with nothing to do");
    assert_eq!(machine.server.messages().len(), 1, "never twice");
    // The file again, after the message was sent: the ledger knows it.
    std::fs::rename(&later, &file).expect("put the spool file back once more");
    ok(&machine.flush(), "a flush after the send");
    assert_eq!(
        machine.server.messages().len(),
        1,
        "not after it was sent either"
    );
    assert!(machine.spooled().is_empty());
}

/// A user with no config of their own reads the system file; `config path` says why, and
/// with no file anywhere every file looked for is named.
#[test]
fn the_system_config_is_read_when_the_user_has_none() {
    let home = TempDir::new().expect("temp dir");
    let system = home.path().join("system-config.toml");
    let path = crate::support::envoi::envoi(home.path())
        .args(["config", "path"])
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&path.stdout);
    assert!(text.contains(".config/envoi/config.toml"), "{text}");
    let missing = crate::support::envoi::envoi(home.path())
        .args(["sendmail", "--profile", "nope", "rcpt@example.net"])
        .write_stdin(&b"Subject: s\n\nb\n"[..])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        stderr.contains(&format!("nor does {}", system.display())),
        "every file looked for is named: {stderr}"
    );
    std::fs::write(
        &system,
        "default = \"x\"\n[profiles.x]\ntransport = \"file\"\ndir = \"out\"\n",
    )
    .expect("write");
    let path = crate::support::envoi::envoi(home.path())
        .args(["config", "path"])
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&path.stdout);
    assert!(
        text.starts_with(&format!("{} (from the system-wide file", system.display())),
        "{text}"
    );
    let show = crate::support::envoi::envoi(home.path())
        .args(["config", "show"])
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(
        text.contains(&format!("{} (from the system-wide file", system.display())),
        "{text}"
    );
    let out = home.path().join("out");
    std::fs::create_dir(&out).expect("out");
    let sent = crate::support::envoi::envoi(home.path())
        .current_dir(home.path())
        .args(["sendmail", "rcpt@example.net"])
        .write_stdin(&b"From: a@example.com\nSubject: s\n\nb\n"[..])
        .output()
        .expect("run");
    assert!(sent.status.success(), "{sent:?}");
    assert_eq!(
        std::fs::read_dir(&out).expect("out").count(),
        1,
        "saved by the system profile"
    );
}

/// The recipient policy of the flush service's profile holds for what users hand over:
/// a message to a denied recipient is set aside, naming the rule; the others go.
#[test]
fn the_recipient_policy_holds_for_the_spool() {
    if !can_make_users() {
        return;
    }
    let machine = Machine::new("[profiles.relay.policy]\ndeny = [\"*@customer.com\"]");
    let ann = &machine.ann;
    let denied = b"To: bob@customer.com\nSubject: denied\n\nhi\n";
    let allowed = b"To: rcpt@example.net\nSubject: allowed\n\nhi\n";
    ok(&machine.sendmail(ann, &["-t"], denied), "the denied one");
    ok(&machine.sendmail(ann, &["-t"], allowed), "the allowed one");
    let stderr = ok(&machine.flush(), "flush");
    let messages = machine.server.messages();
    assert_eq!(messages.len(), 1, "{stderr}");
    assert_eq!(header(&messages[0].data, "Subject"), "allowed");
    assert_eq!(machine.set_aside().len(), 1);
    assert!(
        stderr
            .contains("policy.deny \"*@customer.com\" refuses bob@customer.com (profile \"relay\""),
        "{stderr}"
    );
}
