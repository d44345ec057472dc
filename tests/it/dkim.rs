//! DKIM signing (issue 11) checked by an independent verifier: Python's dkimpy verifies the
//! bytes that reached the in-process server, with the public key handed to it instead of
//! looked up in DNS. Keys are made at run time by openssl; none is committed.

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use tempfile::TempDir;

use crate::support::envoi::{Config, ExpectExit, Route, envoi, send};
use crate::support::external::require_external;
use crate::support::smtp_server::{ServerOptions, TestServer};

/// dkimpy (with dnspython, and PyNaCl for ed25519) as `.ci/run` installs it.
fn dkimpy_present() -> bool {
    Command::new("python3")
        .args(["-c", "import dkim, dns, nacl"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn openssl_present() -> bool {
    Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Whether the external tools are here (a panic under CI when they are not).
pub(crate) fn tools() -> bool {
    require_external("openssl", openssl_present())
        && require_external("dkimpy (pip install dkimpy pynacl)", dkimpy_present())
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum KeyKind {
    /// RSA 2048 in PKCS#8 (`BEGIN PRIVATE KEY`).
    Rsa,
    /// RSA 2048 in PKCS#1 (`BEGIN RSA PRIVATE KEY`).
    RsaPkcs1,
    Ed25519,
}

fn openssl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A new private key in `dir` (mode 600) and the DNS TXT record of its public key, as
/// openssl (not envoi) derives it.
pub(crate) fn make_key(dir: &Path, kind: KeyKind) -> (PathBuf, String) {
    let path = dir.join(format!("{kind:?}.pem").to_lowercase());
    let file = path.to_str().unwrap();
    match kind {
        KeyKind::Rsa => openssl(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            file,
        ]),
        KeyKind::RsaPkcs1 => openssl(&["genrsa", "-traditional", "-out", file, "2048"]),
        KeyKind::Ed25519 => openssl(&["genpkey", "-algorithm", "ed25519", "-out", file]),
    };
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let spki = openssl(&["pkey", "-in", file, "-pubout", "-outform", "DER"]);
    let b64 = base64::engine::general_purpose::STANDARD;
    let record = match kind {
        KeyKind::Rsa | KeyKind::RsaPkcs1 => format!("v=DKIM1; k=rsa; p={}", b64.encode(&spki)),
        // The raw 32-byte key ends the SubjectPublicKeyInfo (RFC 8463 §4.2).
        KeyKind::Ed25519 => format!(
            "v=DKIM1; k=ed25519; p={}",
            b64.encode(&spki[spki.len() - 32..])
        ),
    };
    let pem = std::fs::read_to_string(&path).unwrap();
    match kind {
        KeyKind::RsaPkcs1 => assert!(pem.contains("BEGIN RSA PRIVATE KEY"), "{pem}"),
        _ => assert!(pem.contains("BEGIN PRIVATE KEY"), "{pem}"),
    }
    (path, record)
}

/// dkimpy's verdict on `message`, the TXT record served for exactly
/// `s1._domainkey.example.com` and nothing else: `Ok(())` or the reason it failed.
pub(crate) fn dkimpy_verify(dir: &Path, message: &[u8], record: &str) -> Result<(), String> {
    const SCRIPT: &str = r#"
import sys, dkim
msg = open(sys.argv[1], "rb").read()
record = sys.argv[2].encode()
def dnsfunc(name, timeout=5):
    if name.rstrip(b".") == b"s1._domainkey.example.com":
        return record
    sys.stderr.write("asked for %r\n" % name)
    return None
d = dkim.DKIM(msg)
try:
    ok = d.verify(dnsfunc=dnsfunc)
except Exception as e:
    print("error:", e)
    sys.exit(2)
print("pass" if ok else "fail")
sys.exit(0 if ok else 1)
"#;
    let path = dir.join("verify-me.eml");
    std::fs::write(&path, message).unwrap();
    let out = Command::new("python3")
        .args(["-c", SCRIPT])
        .arg(&path)
        .arg(record)
        .output()
        .expect("python3");
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A server, and a default profile for it that signs with `key` as `s1` for example.com.
struct Signing {
    dir: TempDir,
    server: TestServer,
    config: PathBuf,
}

impl Signing {
    fn new(key: &Path) -> Signing {
        Signing::with_server(key, ServerOptions::default())
    }

    fn with_server(key: &Path, opts: ServerOptions) -> Signing {
        let dir = TempDir::new().unwrap();
        let server = TestServer::start(opts);
        let config = Config::new(server.port(), "none")
            .line(&dkim_lines(key))
            .write(dir.path());
        Signing {
            dir,
            server,
            config,
        }
    }

    fn send(&self) -> assert_cmd::Command {
        let mut cmd = send(self.dir.path(), Route::Config(&self.config));
        cmd.args(["--to", "Ann <ann@example.net>", "--cc", "carl@example.net"]);
        cmd
    }
}

pub(crate) fn dkim_lines(key: &Path) -> String {
    format!(
        "dkim_selector = \"s1\"\ndkim_domain = \"example.com\"\ndkim_key_file = \"{}\"",
        key.display()
    )
}

/// The DKIM-Signature header of `message` (unfolded), which must be its first field.
fn signature_header(message: &[u8]) -> String {
    let text = String::from_utf8_lossy(message);
    assert!(text.starts_with("DKIM-Signature: v=1; "), "{text}");
    let end = text.find("\r\nFrom:").or(text.find("\r\nDate:")).unwrap();
    let header = &text[..end];
    assert!(
        header.split("\r\n").all(|l| l.len() <= 78),
        "a line over 78: {header}"
    );
    header.replace("\r\n", "")
}

/// `message` with one byte of its body changed.
fn altered(message: &[u8]) -> Vec<u8> {
    let mut out = message.to_vec();
    let body = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let at = (body..out.len())
        .find(|&i| out[i].is_ascii_alphanumeric())
        .expect("a letter in the body");
    out[at] = if out[at] == b'x' { b'y' } else { b'x' };
    out
}

/// Plain text, HTML + text + an attachment, and a UTF-8 subject, each signed with an RSA
/// (PKCS#8 and PKCS#1) or Ed25519 key, verify with dkimpy; a copy with one body byte
/// changed after signing does not.
#[test]
fn signed_messages_verify_with_dkimpy_and_an_altered_one_fails() {
    if !tools() {
        return;
    }
    let keys = TempDir::new().unwrap();
    for kind in [KeyKind::Rsa, KeyKind::RsaPkcs1, KeyKind::Ed25519] {
        let (key, record) = make_key(keys.path(), kind);
        // envoi's own reading of the key gives the same public key as openssl.
        let ours = envoi::message::dkim::DkimKey::from_pem(&std::fs::read(&key).unwrap())
            .unwrap()
            .dns_record();
        assert_eq!(ours, record, "{kind:?}");
        let s = Signing::new(&key);
        let attachment = s.dir.path().join("report.csv");
        std::fs::write(&attachment, "id,value\n1,2\n").unwrap();
        s.send()
            .args(["--subject", "Nightly report", "--body", "All green.\n"])
            .expect_exit(0);
        s.send()
            .args([
                "--subject",
                "HTML report",
                "--body",
                "<p>All <b>green</b></p>",
            ])
            .args(["--html", "--text", "All green"])
            .arg("--attach")
            .arg(&attachment)
            .expect_exit(0);
        s.send()
            .args([
                "--subject",
                "Grüße — ünïcödé ✓",
                "--body",
                "Ça marche.  \n\n\n",
            ])
            .expect_exit(0);
        let messages = s.server.messages();
        assert_eq!(messages.len(), 3, "{kind:?}");
        let algorithm = match kind {
            KeyKind::Ed25519 => "a=ed25519-sha256;",
            _ => "a=rsa-sha256;",
        };
        for m in &messages {
            let header = signature_header(&m.data);
            assert!(header.contains(algorithm), "{header}");
            assert!(header.contains("c=relaxed/relaxed;"), "{header}");
            assert!(header.contains("d=example.com;"), "{header}");
            assert!(header.contains(" s=s1;"), "{header}");
            assert!(header.contains(" t="), "{header}");
            let h = header
                .split("h=")
                .nth(1)
                .unwrap()
                .split(';')
                .next()
                .unwrap();
            let names: Vec<&str> = h.split(':').map(str::trim).collect();
            assert_eq!(
                names.iter().filter(|n| **n == "from").count(),
                2,
                "From not oversigned: {h}"
            );
            for name in ["to", "cc", "subject", "date", "message-id", "content-type"] {
                assert!(names.contains(&name), "{name} not signed: {h}");
            }
            dkimpy_verify(keys.path(), &m.data, &record).unwrap_or_else(|e| {
                panic!(
                    "{kind:?}: dkimpy refused: {e}\n{}",
                    String::from_utf8_lossy(&m.data)
                )
            });
            let err = dkimpy_verify(keys.path(), &altered(&m.data), &record)
                .expect_err("an altered body verified");
            assert!(err.contains("fail") || err.contains("body hash"), "{err}");
        }
    }
}

/// A file of several chunks, attached by path, is hashed as it is streamed from the file
/// (its base64 through the relaxed canonicalizer a chunk at a time): dkimpy verifies what
/// arrived, and the attachment decodes to the file.
#[test]
fn a_large_attached_file_is_signed_as_it_is_streamed() {
    if !tools() {
        return;
    }
    let keys = TempDir::new().unwrap();
    for kind in [KeyKind::Rsa, KeyKind::Ed25519] {
        let (key, record) = make_key(keys.path(), kind);
        let s = Signing::new(&key);
        let attachment = s.dir.path().join("data.bin");
        let mut rng = fastrand::Rng::with_seed(6376);
        let data: Vec<u8> = (0..3 * 65550 + 999).map(|_| rng.u8(..)).collect();
        std::fs::write(&attachment, &data).unwrap();
        s.send()
            .args(["--subject", "Big", "--body", "<p>attached</p>", "--html"])
            .arg("--attach")
            .arg(&attachment)
            .expect_exit(0);
        let m = &s.server.messages()[0];
        dkimpy_verify(keys.path(), &m.data, &record)
            .unwrap_or_else(|e| panic!("{kind:?}: dkimpy refused: {e}"));
        let parsed = mail_parser::MessageParser::default()
            .parse(&m.data)
            .unwrap();
        let part = parsed.attachments().next().expect("the attachment");
        assert!(part.contents() == data.as_slice(), "{kind:?}: not the file");
    }
}

/// Sendmail mode signs the message as sent: Date and Message-ID added, Bcc removed.
#[test]
fn sendmail_mode_signs_what_it_sends() {
    if !tools() {
        return;
    }
    let home = TempDir::new().unwrap();
    let (key, record) = make_key(home.path(), KeyKind::Ed25519);
    let server = TestServer::start(ServerOptions::default());
    let dir = home.path().join(".config/envoi");
    std::fs::create_dir_all(&dir).unwrap();
    Config::new(server.port(), "none")
        .line(&dkim_lines(&key))
        .write(&dir);
    envoi(home.path())
        .args(["sendmail", "-t", "-i"])
        .write_stdin(
            &b"From: Cron <cron@example.com>\nTo: ops@example.net\nBcc: audit@example.net\n\
               Subject: cron output\n\nnightly job done\n"[..],
        )
        .expect_exit(0);
    let messages = server.messages();
    assert_eq!(messages.len(), 1);
    let m = &messages[0];
    let text = String::from_utf8_lossy(&m.data);
    assert!(!text.contains("audit@"), "Bcc left in: {text}");
    assert!(
        text.contains("\r\nDate: ") && text.contains("\r\nMessage-ID: "),
        "{text}"
    );
    let header = signature_header(&m.data);
    assert!(
        header.contains("date") && header.contains("message-id"),
        "{header}"
    );
    dkimpy_verify(home.path(), &m.data, &record)
        .unwrap_or_else(|e| panic!("dkimpy refused: {e}\n{text}"));
}

/// `--dry-run` shows the signed message; a message queued after a 451 is flushed later
/// with the signature it was stored with (signed once, not again by the flush).
#[test]
fn dry_run_shows_and_the_outbox_keeps_the_signed_message() {
    if !tools() {
        return;
    }
    let keys = TempDir::new().unwrap();
    let (key, record) = make_key(keys.path(), KeyKind::Rsa);
    let s = Signing::with_server(
        &key,
        ServerOptions {
            tempfail_transactions: 1,
            ..ServerOptions::default()
        },
    );
    let run = s
        .send()
        .args([
            "--subject",
            "dry",
            "--body",
            "not sent",
            "--dry-run",
            "--json",
        ])
        .expect_exit(0);
    let shown = run.json()["message"].as_str().unwrap().to_owned();
    signature_header(shown.as_bytes());
    dkimpy_verify(keys.path(), shown.as_bytes(), &record)
        .unwrap_or_else(|e| panic!("dkimpy refused the dry run: {e}\n{shown}"));
    assert!(s.server.messages().is_empty());

    let outbox = s.dir.path().join("outbox");
    let run = s
        .send()
        .args([
            "--subject",
            "queued",
            "--body",
            "through the outbox",
            "--queue",
        ])
        .arg("--outbox-dir")
        .arg(&outbox)
        .arg("--json")
        .expect_exit(0);
    assert_eq!(run.json()["status"], "queued", "{run}");
    assert!(s.server.messages().is_empty(), "sent although refused");
    let stored: Vec<PathBuf> = walk(&outbox)
        .into_iter()
        .filter(|p| std::fs::read(p).is_ok_and(|b| b.starts_with(b"DKIM-Signature: ")))
        .collect();
    assert_eq!(
        stored.len(),
        1,
        "the outbox does not hold the signed message"
    );

    envoi(s.dir.path())
        .args(["outbox", "flush", "--all", "--json", "--config"])
        .arg(&s.config)
        .arg("--outbox-dir")
        .arg(&outbox)
        .expect_exit(0);
    let messages = s.server.messages();
    assert_eq!(messages.len(), 1);
    let text = String::from_utf8_lossy(&messages[0].data);
    assert_eq!(text.matches("DKIM-Signature:").count(), 1, "{text}");
    dkimpy_verify(keys.path(), &messages[0].data, &record)
        .unwrap_or_else(|e| panic!("dkimpy refused the flushed message: {e}\n{text}"));
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// A key file group or others can read, a profile without dkim_domain, and a file that
/// is not a key: each 78 before anything is sent, naming what to fix.
#[test]
fn a_readable_key_a_missing_key_and_a_bad_key_are_config_errors() {
    let dir = TempDir::new().unwrap();
    let key = dir.path().join("dkim.pem");
    std::fs::write(
        &key,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let server = TestServer::start(ServerOptions::default());
    let with = |lines: &str| {
        let config = Config::new(server.port(), "none")
            .line(lines)
            .write(dir.path());
        send(dir.path(), Route::Config(&config))
            .args(["--to", "a@example.net", "--body", "x"])
            .expect_exit(78)
    };
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let run = with(&dkim_lines(&key));
    assert!(run.stderr.contains("chmod 600"), "{}", run.stderr);
    assert!(run.stderr.contains("dkim.pem"), "{}", run.stderr);

    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let run = with(&dkim_lines(&key));
    assert!(run.stderr.contains("dkim.pem"), "{}", run.stderr);
    assert!(run.stderr.contains("expected"), "{}", run.stderr);

    let run = with(&format!(
        "dkim_selector = \"s1\"\ndkim_key_file = \"{}\"",
        key.display()
    ));
    assert!(
        run.stderr.contains("dkim_domain is missing"),
        "{}",
        run.stderr
    );
    assert!(server.messages().is_empty(), "a message was sent");
}

/// Signing for another domain than From's works but is a lint finding, a warning on
/// stderr (not with --quiet): DMARC would not count the signature. A From under
/// dkim_domain is not a finding.
#[test]
fn an_unaligned_dkim_domain_is_a_warning() {
    if !require_external("openssl", openssl_present()) {
        return;
    }
    let dir = TempDir::new().unwrap();
    let (key, _) = make_key(dir.path(), KeyKind::Ed25519);
    let s = Signing::new(&key);
    let run = s
        .send()
        .args(["--from", "me@other.example", "--body", "x", "--json"])
        .expect_exit(0);
    assert!(
        run.stderr.contains("warning: dkim_domain is example.com"),
        "{run}"
    );
    assert_eq!(run.json()["status"], "sent", "{run}");
    let run = s
        .send()
        .args([
            "--from",
            "me@other.example",
            "--body",
            "x",
            "--lint",
            "--json",
        ])
        .expect_exit(0);
    let findings = run.json()["findings"].to_string();
    assert!(findings.contains("dkim_domain is example.com"), "{run}");
    let run = s
        .send()
        .args([
            "--from",
            "me@other.example",
            "--subject",
            "s",
            "--body",
            "x",
            "--quiet",
        ])
        .expect_exit(0);
    assert!(!run.stderr.contains("warning"), "{run}");
    let run = s
        .send()
        .args([
            "--from",
            "me@mail.example.com",
            "--subject",
            "s",
            "--body",
            "x",
        ])
        .expect_exit(0);
    assert!(!run.stderr.contains("warning"), "{run}");
    assert_eq!(s.server.messages().len(), 3);
}

/// A 1024-bit RSA key is refused (78) naming the file and the sizes envoi signs with:
/// ring signs with 2048 to 8192 bits, RFC 8301 allows 1024 at least.
#[test]
fn a_short_rsa_key_is_a_config_error() {
    if !require_external("openssl", openssl_present()) {
        return;
    }
    let dir = TempDir::new().unwrap();
    let key = dir.path().join("short.pem");
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:1024",
        "-out",
        key.to_str().unwrap(),
    ]);
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let s = Signing::new(&key);
    let run = s.send().args(["--body", "x", "--dry-run"]).expect_exit(78);
    assert!(run.stderr.contains("short.pem"), "{}", run.stderr);
    assert!(run.stderr.contains("2048"), "{}", run.stderr);
}

/// `config show` lists the DKIM keys, the key file by its path and never its content.
#[test]
fn config_show_names_the_key_file_not_its_content() {
    if !require_external("openssl", openssl_present()) {
        return;
    }
    let dir = TempDir::new().unwrap();
    let (key, _) = make_key(dir.path(), KeyKind::Ed25519);
    let pem = std::fs::read_to_string(&key).unwrap();
    let secret_line = pem.lines().nth(1).unwrap();
    let config = Config::new(25, "none")
        .line(&dkim_lines(&key))
        .write(dir.path());
    let run = envoi(dir.path())
        .args(["config", "show", "--config"])
        .arg(&config)
        .arg("--json")
        .expect_exit(0);
    let report = run.json();
    let value = |k: &str| {
        report["settings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["key"] == k)
            .unwrap_or_else(|| panic!("no {k}: {report}"))["value"]
            .clone()
    };
    assert_eq!(value("dkim_selector"), "s1");
    assert_eq!(value("dkim_domain"), "example.com");
    assert_eq!(value("dkim_key_file"), key.display().to_string());
    assert_eq!(report["problems"], serde_json::json!([]));
    assert!(!run.output().contains(secret_line), "{run}");
}

/// `envoi batch` signs each record as `send` does (the key read once for the batch), and
/// every message verifies.
#[test]
fn batch_signs_every_record() {
    if !tools() {
        return;
    }
    let home = TempDir::new().unwrap();
    let (key, record) = make_key(home.path(), KeyKind::Ed25519);
    let s = Signing::new(&key);
    let records = s.dir.path().join("r.jsonl");
    std::fs::write(
        &records,
        "{\"To\":\"a@example.net\",\"Subject\":\"one\",\"Body\":\"first\"}\n\
         {\"To\":\"b@example.net\",\"Subject\":\"two\",\"Body\":\"second\"}\n",
    )
    .unwrap();
    envoi(s.dir.path())
        .arg("batch")
        .arg("--config")
        .arg(&s.config)
        .arg(&records)
        .expect_exit(0);
    let messages = s.server.messages();
    assert_eq!(messages.len(), 2);
    for m in &messages {
        signature_header(&m.data);
        dkimpy_verify(home.path(), &m.data, &record).unwrap_or_else(|e| {
            panic!("dkimpy refused: {e}\n{}", String::from_utf8_lossy(&m.data))
        });
    }
}
