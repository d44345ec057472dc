//! A real Dovecot IMAP server on loopback (Debian's `dovecot-imapd`, `.ci/run` installs it),
//! started with a private config in a temp dir: a passwd-file with one user, maildir storage
//! in the temp dir (`mail_save_crlf = yes`, so a stored message is the bytes APPENDed, CRLF
//! and all), TLS with the test PKI's leaf, IMAP (STARTTLS) and IMAPS on free loopback ports.
//! Stopped (SIGTERM to the master, which stops its children, then waited for) when dropped.
//!
//! Run as root (CI), mail is stored as the `dovecot` user, which Dovecot's own processes
//! already run as; run as another user, everything runs as that user.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::certs::TestPki;
use super::external::unavailable;

const DOVECOT: &str = "/usr/sbin/dovecot";

/// How the server is set up.
pub struct DovecotOptions<'a> {
    /// The user and password the passwd-file holds.
    pub login: (&'a str, &'a str),
    /// Folders created for the user, each with its special-use mark (`"\\Sent"`) or none.
    pub folders: Vec<(&'a str, Option<&'a str>)>,
    /// More lines of dovecot.conf (`imap_capability = …`).
    pub extra: &'a str,
}

/// A running Dovecot.
pub struct Dovecot {
    dir: TempDir,
    child: Child,
    imap_port: u16,
    imaps_port: u16,
    user: String,
}

/// A free loopback port (bound, then let go: Dovecot binds it next).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The uid, gid and name of a user in /etc/passwd, by name or by uid.
fn passwd_entry(matches: impl Fn(&str, u32) -> bool) -> Option<(u32, u32, String)> {
    let text = fs::read_to_string("/etc/passwd").ok()?;
    text.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        let (name, uid, gid) = (fields.first()?, fields.get(2)?, fields.get(3)?);
        let (uid, gid) = (uid.parse().ok()?, gid.parse().ok()?);
        matches(name, uid).then(|| (uid, gid, (*name).to_owned()))
    })
}

impl Dovecot {
    /// Starts Dovecot serving `pki`'s leaf; `None` (a note) when it is not installed and
    /// not required, a panic under CI.
    pub fn start(pki: &TestPki, opts: DovecotOptions) -> Option<Dovecot> {
        if !Path::new(DOVECOT).exists() {
            return unavailable(
                "Dovecot (/usr/sbin/dovecot, Debian's dovecot-imapd) is not installed",
            );
        }
        let dir = TempDir::new().expect("temp dir");
        let d = dir.path();
        // Dovecot's mail processes run as another user when this is root: they must reach
        // the mail directory.
        fs::set_permissions(d, fs::Permissions::from_mode(0o755)).expect("chmod the temp dir");
        let me = fs::metadata(d).expect("stat the temp dir").uid();
        let (uid, gid, name) = if me == 0 {
            passwd_entry(|name, _| name == "dovecot").expect("the dovecot user exists")
        } else {
            passwd_entry(|_, uid| uid == me).expect("this user is in /etc/passwd")
        };
        let (cert, key) = pki.write_leaf(d);
        let mail = d.join("mail");
        fs::create_dir(&mail).expect("mkdir mail");
        std::os::unix::fs::chown(&mail, Some(uid), Some(gid)).expect("chown the mail dir");
        fs::create_dir(d.join("run")).expect("mkdir run");
        let (user, password) = opts.login;
        fs::write(
            d.join("passwd"),
            format!("{user}:{{PLAIN}}{password}::::::\n"),
        )
        .expect("write the passwd-file");
        let (imap_port, imaps_port) = (free_port(), free_port());
        let folders: String = opts
            .folders
            .iter()
            .map(|(folder, mark)| {
                let mark = mark.map_or(String::new(), |m| format!("    special_use = {m}\n"));
                format!("  mailbox \"{folder}\" {{\n    auto = create\n{mark}  }}\n")
            })
            .collect();
        let internal = if me == 0 {
            "default_internal_user = dovecot\ndefault_login_user = dovenull\n".to_owned()
        } else {
            format!("default_internal_user = {name}\ndefault_login_user = {name}\n")
        };
        let d = d.display();
        let config = format!(
            "protocols = imap\nlisten = 127.0.0.1\nbase_dir = {d}/run\nstate_dir = {d}/run\n\
             instance_name = envoi-test-{imaps_port}\nlog_path = {d}/log\n\
             info_log_path = {d}/log\n{internal}\
             ssl = yes\nssl_cert = <{cert}\nssl_key = <{key}\n\
             auth_mechanisms = plain login\ndisable_plaintext_auth = yes\n\
             passdb {{\n  driver = passwd-file\n  args = scheme=PLAIN {d}/passwd\n}}\n\
             userdb {{\n  driver = static\n  args = uid={uid} gid={gid} home={d}/mail/%u\n}}\n\
             mail_location = maildir:{d}/mail/%u/Maildir\nmail_save_crlf = yes\n\
             first_valid_uid = {uid}\n\
             service imap-login {{\n  chroot =\n  inet_listener imap {{\n    port = {imap_port}\n  }}\n\
             \x20 inet_listener imaps {{\n    port = {imaps_port}\n    ssl = yes\n  }}\n}}\n\
             service anvil {{\n  chroot =\n}}\n\
             namespace inbox {{\n  inbox = yes\n  separator = .\n{folders}}}\n{extra}\n",
            extra = opts.extra,
            cert = cert.display(),
            key = key.display(),
        );
        let conf = dir.path().join("dovecot.conf");
        fs::write(&conf, config).expect("write dovecot.conf");
        let child = Command::new(DOVECOT)
            .arg("-F")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.path().join("stderr")).expect("create stderr"))
            .spawn()
            .expect("start dovecot");
        let server = Dovecot {
            dir,
            child,
            imap_port,
            imaps_port,
            user: user.to_owned(),
        };
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", imaps_port)).is_err()
            || TcpStream::connect(("127.0.0.1", imap_port)).is_err()
        {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "Dovecot did not listen within 10 s: {}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(server)
    }

    /// The port of IMAP with STARTTLS.
    pub fn imap_port(&self) -> u16 {
        self.imap_port
    }

    /// The port of IMAP over TLS.
    pub fn imaps_port(&self) -> u16 {
        self.imaps_port
    }

    /// The maildir folder of `folder` (`INBOX`, else `.folder`).
    fn folder_dir(&self, folder: &str) -> PathBuf {
        let maildir = self
            .dir
            .path()
            .join("mail")
            .join(&self.user)
            .join("Maildir");
        if folder == "INBOX" {
            maildir
        } else {
            maildir.join(format!(".{folder}"))
        }
    }

    /// The messages stored in `folder`: each file's name and bytes, by name.
    pub fn messages(&self, folder: &str) -> Vec<(String, Vec<u8>)> {
        let dir = self.folder_dir(folder);
        let mut found = Vec::new();
        for sub in ["new", "cur"] {
            let Ok(entries) = fs::read_dir(dir.join(sub)) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                found.push((name, fs::read(entry.path()).expect("read a stored message")));
            }
        }
        found.sort();
        found
    }

    /// Dovecot's log and standard error.
    pub fn log(&self) -> String {
        let read = |name: &str| fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!("{}{}", read("log"), read("stderr"))
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        // SIGTERM: the master stops its children (a SIGKILL would leave them running).
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let waited = Instant::now();
        while waited.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
