//! Out-of-process SMTP peers for the integration tests: independent server implementations
//! that envoi's bytes are checked against.
//!
//! * [`Aiosmtpd`]: Python's aiosmtpd through `tests/it/support/aiosmtpd_capture.py`: plain,
//!   STARTTLS or implicit TLS, AUTH PLAIN/LOGIN, per-recipient refusals; stores each accepted
//!   message (envelope + exact bytes) and a transcript of the client's command lines.
//! * [`SmtpSink`]: Postfix's `smtp-sink`, with its fault knobs (`-f`, `-r`, `-q`, `-Q`, `-w`, …)
//!   and a dump file per transaction.
//!
//! Both bind 127.0.0.1 only and are stopped (kill + wait) when dropped. When the program is
//! missing, `start` prints a note and returns `None`, unless `CI` or `ENVOI_REQUIRE_EXTERNAL`
//! is set (`.ci/run` installs both), in which case it panics.

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{OnceLock, mpsc};
use std::time::{Duration, Instant};

use base64::Engine as _;
use tempfile::TempDir;

/// Upper bound for a peer to start listening.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);

/// True when a missing external peer must fail the test instead of skipping it.
pub fn external_required() -> bool {
    let on = |name: &str| {
        std::env::var(name)
            .map(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"))
            .unwrap_or(false)
    };
    on("CI") || on("ENVOI_REQUIRE_EXTERNAL")
}

/// Whether an out-of-process caller (git send-email, mail) that `present` says is there
/// can run: false, with a note, when it is missing and not required; a panic when it is
/// missing under CI (.ci/run installs it).
pub fn require_external(what: &str, present: bool) -> bool {
    present || unavailable::<()>(&format!("{what} is not installed")).is_some()
}

pub(super) fn unavailable<T>(why: &str) -> Option<T> {
    if external_required() {
        panic!(
            "{why}; CI/ENVOI_REQUIRE_EXTERNAL is set, so this out-of-process SMTP peer must be \
             installed (.ci/run installs aiosmtpd from PyPI and postfix for smtp-sink)"
        );
    }
    eprintln!("note: skipping an out-of-process SMTP check: {why} (CI=1 makes this a failure)");
    None
}

/// Starts a Python peer (`cmd`, its standard error into `stderr_log`) that prints
/// `READY <port>` once listening: the child, its standard input (closing it stops a peer
/// run with `--exit-on-stdin-eof`) and its port; `None` (skipped, or a failure under CI)
/// when python3 cannot be run.
pub(super) fn start_python_peer(
    mut cmd: Command,
    what: &str,
    stderr_log: &Path,
) -> Option<(Child, Option<ChildStdin>, u16)> {
    let log = fs::File::create(stderr_log).expect("create the peer's stderr log");
    let mut child = match cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
    {
        Ok(child) => child,
        Err(e) => return unavailable(&format!("python3 cannot be run ({e})")),
    };
    let stdin = child.stdin.take();
    let port = ready_port(&mut child, what, stderr_log);
    Some((child, stdin, port))
}

/// The port a python peer announced with its first line, `READY <port>` (at most
/// [`STARTUP_TIMEOUT`]); its stdout is drained after that until it ends. A peer that
/// does not announce one is killed, and the test fails with its stderr.
pub(super) fn ready_port(child: &mut Child, what: &str, stderr_log: &Path) -> u16 {
    let stdout = child.stdout.take().expect("the peer's stdout is piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(first)) = lines.next() {
            let _ = tx.send(first);
        }
        for _ in lines {}
    });
    let ready = rx.recv_timeout(STARTUP_TIMEOUT);
    let port = ready
        .as_deref()
        .ok()
        .and_then(|l| l.strip_prefix("READY "))
        .and_then(|p| p.trim().parse::<u16>().ok());
    match port {
        Some(port) => port,
        None => {
            kill_and_wait(child);
            panic!(
                "{what} did not report `READY <port>` within {STARTUP_TIMEOUT:?} (got \
                 {ready:?}); its stderr:\n{}",
                read_or_empty(stderr_log)
            );
        }
    }
}

pub(super) fn read_or_empty(path: &Path) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

pub(super) fn kill_and_wait(child: &mut Child) {
    // Errors only mean the child is already gone.
    let _ = child.kill();
    let _ = child.wait();
}

// ---------------------------------------------------------------------------------------------
// aiosmtpd
// ---------------------------------------------------------------------------------------------

/// How to run the aiosmtpd capture server.
#[derive(Clone, Debug)]
pub struct AiosmtpdOptions {
    /// "none", "starttls" (offered, and required before MAIL) or "tls" (implicit TLS).
    pub security: &'static str,
    /// Accept AUTH PLAIN and LOGIN with exactly this user and password. AUTH is advertised in
    /// clear with "none", only after STARTTLS with "starttls", and at once with "tls".
    pub auth: Option<(String, String)>,
    /// Answer `RCPT TO:<addr>` with this code (e.g. 550 or 451) instead of accepting it.
    pub refuse_rcpt: Vec<(String, u16)>,
    /// PEM certificate (leaf, optionally followed by its chain) and PEM key; needed for TLS.
    pub cert_key: Option<(PathBuf, PathBuf)>,
    /// Also offer XOAUTH2 and OAUTHBEARER, accepting exactly this user with any of these
    /// bearer tokens; a wrong token gets the providers' `334 <base64 JSON>` challenge, then
    /// 535.
    pub oauth: Option<(String, Vec<String>)>,
    /// Refuse every AUTH PLAIN/LOGIN with exactly this reply (e.g. Microsoft 365's
    /// `535 5.7.139 …`), whatever the login.
    pub auth_reply: Option<String>,
    /// Refuse every MAIL FROM with exactly this reply (e.g. `530 5.7.57 …`).
    pub mail_reply: Option<String>,
}

/// One SASL message the server decoded (`--oauth`), in order of arrival.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct SaslRecord {
    /// `XOAUTH2`, `OAUTHBEARER`, or that with ` error reply` for the client's answer to
    /// the error challenge.
    pub mechanism: String,
    /// The decoded message as received (`None` when the client aborted).
    pub message: Option<String>,
    /// Whether it was what the server expected.
    pub ok: bool,
}

/// One message accepted by [`Aiosmtpd`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapturedMessage {
    pub mail_from: String,
    pub rcpt_tos: Vec<String>,
    /// The message exactly as received (CRLF line ends, dot-unstuffed).
    pub data: Vec<u8>,
    /// The user of a successful AUTH in that session.
    pub auth_user: Option<String>,
    /// Whether the session was under TLS (implicit or after STARTTLS).
    pub tls: bool,
}

#[derive(serde::Deserialize)]
struct CapturedJson {
    mail_from: String,
    rcpt_tos: Vec<String>,
    data_b64: String,
    auth_user: Option<String>,
    tls: bool,
}

/// A running `tests/it/support/aiosmtpd_capture.py`.
pub struct Aiosmtpd {
    child: Child,
    /// Closing it tells the script to exit even if this process dies without dropping us.
    stdin: Option<ChildStdin>,
    out: TempDir,
    port: u16,
}

fn script_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/support/aiosmtpd_capture.py")
}

/// `Ok` when `python3` can import aiosmtpd; checked once per test binary.
fn aiosmtpd_importable() -> &'static Result<(), String> {
    static CHECK: OnceLock<Result<(), String>> = OnceLock::new();
    CHECK.get_or_init(|| {
        match Command::new("python3")
            .args(["-c", "import aiosmtpd.smtp"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
        {
            Ok(s) if s.success() => Ok(()),
            Ok(_) => Err("python3 cannot import aiosmtpd (pip install 'aiosmtpd>=1.4.6')".into()),
            Err(e) => Err(format!("python3 cannot be run ({e})")),
        }
    })
}

impl Aiosmtpd {
    /// Starts the capture server on a free port of 127.0.0.1 and waits (at most 10 s) until it
    /// listens. `None` (with a note on stderr) when python3 or aiosmtpd is missing and neither
    /// `CI` nor `ENVOI_REQUIRE_EXTERNAL` is set; panics then if one is.
    pub fn start(opts: AiosmtpdOptions) -> Option<Aiosmtpd> {
        if let Err(why) = aiosmtpd_importable() {
            return unavailable(why);
        }
        let out = tempfile::Builder::new()
            .prefix("envoi-aiosmtpd-")
            .tempdir()
            .expect("create a temp dir for the aiosmtpd capture");
        let stderr_log = out.path().join("stderr.log");

        let mut cmd = Command::new("python3");
        cmd.arg(script_path())
            .args([
                "--port",
                "0",
                "--security",
                opts.security,
                "--exit-on-stdin-eof",
            ])
            .arg("--out")
            .arg(out.path());
        if let Some((cert, key)) = &opts.cert_key {
            cmd.arg("--cert").arg(cert).arg("--key").arg(key);
        }
        if let Some((user, pass)) = &opts.auth {
            cmd.arg("--auth").arg(format!("{user}:{pass}"));
        }
        if let Some((user, tokens)) = &opts.oauth {
            for token in tokens {
                cmd.arg("--oauth").arg(format!("{user}:{token}"));
            }
        }
        if let Some(reply) = &opts.auth_reply {
            cmd.arg("--auth-reply").arg(reply);
        }
        if let Some(reply) = &opts.mail_reply {
            cmd.arg("--mail-reply").arg(reply);
        }
        if opts.security == "starttls" {
            cmd.arg("--require-starttls");
        }
        for (addr, code) in &opts.refuse_rcpt {
            cmd.arg("--refuse-rcpt").arg(format!("{addr}={code}"));
        }
        let log = fs::File::create(&stderr_log).expect("create the aiosmtpd stderr log");
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn python3 for the aiosmtpd capture server");
        let stdin = child.stdin.take();
        let port = ready_port(&mut child, "aiosmtpd capture server", &stderr_log);
        Some(Aiosmtpd {
            child,
            stdin,
            out,
            port,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Every message accepted so far, in order of acceptance. A message is stored before the
    /// server answers the final `.`, so once the client has its 250 the message is here.
    pub fn messages(&self) -> Vec<CapturedMessage> {
        let mut files: Vec<(u64, PathBuf)> = fs::read_dir(self.out.path())
            .expect("read the aiosmtpd capture dir")
            .map(|e| e.expect("read an entry of the aiosmtpd capture dir").path())
            .filter_map(|p| {
                let n = p
                    .file_name()?
                    .to_str()?
                    .strip_suffix(".json")?
                    .parse()
                    .ok()?;
                Some((n, p))
            })
            .collect();
        files.sort();
        files
            .into_iter()
            .map(|(_, path)| {
                let text = fs::read_to_string(&path).expect("read a captured message file");
                let raw: CapturedJson =
                    serde_json::from_str(&text).expect("parse a captured message file");
                CapturedMessage {
                    mail_from: raw.mail_from,
                    rcpt_tos: raw.rcpt_tos,
                    data: base64::engine::general_purpose::STANDARD
                        .decode(raw.data_b64)
                        .expect("data_b64 of a captured message is base64"),
                    auth_user: raw.auth_user,
                    tls: raw.tls,
                }
            })
            .collect()
    }

    /// The client's command lines, one per line, across all sessions (no DATA content; the
    /// initial response of `AUTH <mech> <resp>` is masked as `********` by aiosmtpd, and AUTH
    /// continuation lines are not recorded).
    pub fn transcript(&self) -> String {
        read_or_empty(&self.out.path().join("transcript.log"))
    }

    /// What the server printed on stderr (tracebacks, warnings).
    pub fn log(&self) -> String {
        read_or_empty(&self.out.path().join("stderr.log"))
    }

    /// Every SASL message decoded by the `--oauth` mechanisms.
    pub fn sasl(&self) -> Vec<SaslRecord> {
        read_or_empty(&self.out.path().join("sasl.log"))
            .lines()
            .map(|line| serde_json::from_str(line).expect("a sasl.log line is JSON"))
            .collect()
    }
}

impl Drop for Aiosmtpd {
    fn drop(&mut self) {
        drop(self.stdin.take());
        kill_and_wait(&mut self.child);
    }
}

// ---------------------------------------------------------------------------------------------
// OAuth2 token endpoint
// ---------------------------------------------------------------------------------------------

/// How to run `tests/it/support/oauth2_endpoint.py`.
#[derive(Clone, Debug)]
pub struct TokenEndpointOptions {
    /// PEM certificate (leaf, then its CA) and key: it serves HTTPS.
    pub cert_key: (PathBuf, PathBuf),
    pub client_id: String,
    pub client_secret: String,
    /// The first valid refresh token (the refresh_token grant).
    pub refresh_token: Option<String>,
    /// Access tokens are this prefix followed by 1, 2, … in the order issued.
    pub token_prefix: String,
    /// `expires_in` of every access token, in seconds.
    pub expires_in: u64,
    /// Answer every request with this HTTP status and a plain-text body (a broken
    /// endpoint).
    pub fail_status: Option<u16>,
}

/// One request the token endpoint received, as it logged it.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct TokenRequest {
    pub grant_type: Option<String>,
    pub client_id: Option<String>,
    /// Whether the client secret was right (`None`: none was needed or sent).
    pub secret_ok: Option<bool>,
    /// The refresh token presented.
    pub refresh_token: Option<String>,
    pub scope: Option<String>,
    pub status: u16,
    /// The OAuth2 error code answered, if any.
    pub error: Option<String>,
    /// The access token issued, if any.
    pub access_token: Option<String>,
    /// The rotated refresh token issued, if any.
    pub new_refresh_token: Option<String>,
    /// `/token` or `/devicecode`.
    pub path: String,
    /// PKCE's verifier (the authorization_code grant).
    pub code_verifier: Option<String>,
    /// The redirect URI presented with an authorization code.
    pub redirect_uri: Option<String>,
}

/// A running loopback HTTPS OAuth2 token endpoint (python3 stdlib only).
pub struct TokenEndpoint {
    child: Child,
    stdin: Option<ChildStdin>,
    out: TempDir,
    port: u16,
}

impl TokenEndpoint {
    /// Starts it on a free port of 127.0.0.1 and waits (at most 10 s) until it listens.
    /// `None` (with a note) when python3 is missing and external peers are not required.
    pub fn start(opts: TokenEndpointOptions) -> Option<TokenEndpoint> {
        let out = tempfile::Builder::new()
            .prefix("envoi-oauth2-endpoint-")
            .tempdir()
            .expect("create a temp dir for the token endpoint");
        let stderr_log = out.path().join("stderr.log");
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/support/oauth2_endpoint.py");
        let mut cmd = Command::new("python3");
        cmd.arg(script)
            .args(["--port", "0", "--exit-on-stdin-eof"])
            .arg("--out")
            .arg(out.path())
            .arg("--cert")
            .arg(&opts.cert_key.0)
            .arg("--key")
            .arg(&opts.cert_key.1)
            .args(["--client-id", &opts.client_id])
            .args(["--client-secret", &opts.client_secret])
            .args(["--token-prefix", &opts.token_prefix])
            .args(["--expires-in", &opts.expires_in.to_string()]);
        if let Some(refresh) = &opts.refresh_token {
            cmd.args(["--refresh-token", refresh]);
        }
        if let Some(status) = opts.fail_status {
            cmd.args(["--fail-status", &status.to_string()]);
        }
        let (child, stdin, port) = start_python_peer(cmd, "the token endpoint", &stderr_log)?;
        Some(TokenEndpoint {
            child,
            stdin,
            out,
            port,
        })
    }

    /// `https://127.0.0.1:<port>/token`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}/token", self.port)
    }

    /// Its device authorization endpoint (RFC 8628).
    pub fn device_code_url(&self) -> String {
        format!("https://127.0.0.1:{}/devicecode", self.port)
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<TokenRequest> {
        read_or_empty(&self.out.path().join("requests.jsonl"))
            .lines()
            .map(|line| serde_json::from_str(line).expect("a requests.jsonl line is JSON"))
            .collect()
    }

    /// What the script printed on stderr (tracebacks).
    pub fn log(&self) -> String {
        read_or_empty(&self.out.path().join("stderr.log"))
    }
}

impl Drop for TokenEndpoint {
    fn drop(&mut self) {
        drop(self.stdin.take());
        kill_and_wait(&mut self.child);
    }
}

// ---------------------------------------------------------------------------------------------
// smtp-sink
// ---------------------------------------------------------------------------------------------

/// A running Postfix `smtp-sink` on 127.0.0.1, dumping every transaction to a file.
///
/// Each dump (`-d`) holds, with LF line ends:
/// ```text
/// X-Client-Addr: 127.0.0.1
/// X-Client-Proto: ESMTP
/// X-Helo-Args: <EHLO argument>            (if the client sent HELO/EHLO)
/// X-Mail-Args: <s@example.test> [params]  (the whole MAIL FROM: argument)
/// X-Rcpt-Args: <r@example.test>           (one per RCPT, in order, as sent)
/// Received: from <helo> ([127.0.0.1])
/// \tby smtp-sink (smtp-sink) with ESMTP id <hex>;
/// \t<date>
/// <the message as received, CRLF turned into LF, dot-unstuffed>
/// <one extra empty line>
/// ```
/// A dump is kept once the data ends with `.`, even if the sink then rejects it (`-f .`,
/// `-r .`, `-q .`), so "nothing delivered" cannot be read from dumps in those modes; a
/// transaction that never reaches the end of data (every RCPT refused, `-A`, `-Q DATA`, RSET,
/// disconnect, …) leaves none. Only accepted RCPTs get an `X-Rcpt-Args` line. A message that
/// ends in CRLF shows as `…\n` followed by the extra empty line. `-S` would break
/// [`SinkDump::parse`]. smtp-sink offers no STARTTLS, and answers any `AUTH` line with 250
/// (so only AUTH with an initial response works); `-v` (always on here) logs every command
/// line, AUTH credentials included, to [`SmtpSink::log`]. `-f`/`-r` imply `-p`, and then the
/// last EHLO line is a bare `250 `.
pub struct SmtpSink {
    child: Child,
    dir: TempDir,
    /// `dir/dumps`, canonical (to compare with the sink's /proc/PID/fd links).
    dumps_dir: PathBuf,
    port: u16,
}

/// One dump of [`SmtpSink`], split into its parts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SinkDump {
    pub helo_args: Option<String>,
    /// The MAIL FROM: argument, e.g. `<s@example.test> BODY=8BITMIME`.
    pub mail_args: String,
    /// The RCPT TO: arguments, e.g. `<r@example.test>`.
    pub rcpt_args: Vec<String>,
    /// The message, LF line ends, without smtp-sink's trailing empty line.
    pub message: Vec<u8>,
}

impl SinkDump {
    /// Splits a dump as described on [`SmtpSink`]; `None` if it does not have that shape.
    pub fn parse(dump: &[u8]) -> Option<SinkDump> {
        fn next_line(rest: &mut &[u8]) -> Option<String> {
            let end = rest.iter().position(|&b| b == b'\n')?;
            let line = String::from_utf8_lossy(&rest[..end]).into_owned();
            *rest = &rest[end + 1..];
            Some(line)
        }
        let mut rest = dump;
        let (mut helo_args, mut mail_args, mut rcpt_args) = (None, None, Vec::new());
        loop {
            let line = next_line(&mut rest)?;
            if let Some(v) = line.strip_prefix("X-Helo-Args: ") {
                helo_args = Some(v.to_string());
            } else if let Some(v) = line.strip_prefix("X-Mail-Args: ") {
                mail_args = Some(v.to_string());
            } else if let Some(v) = line.strip_prefix("X-Rcpt-Args: ") {
                rcpt_args.push(v.to_string());
            } else if line.starts_with("Received: ") {
                break;
            } else if !line.starts_with("X-") {
                return None;
            }
        }
        // The Received: header is three lines long.
        next_line(&mut rest)?;
        next_line(&mut rest)?;
        let message = rest.strip_suffix(b"\n").unwrap_or(rest).to_vec();
        Some(SinkDump {
            helo_args,
            mail_args: mail_args?,
            rcpt_args,
            message,
        })
    }
}

fn find_smtp_sink() -> Option<PathBuf> {
    let in_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("smtp-sink"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    in_path
        .into_iter()
        .chain([PathBuf::from("/usr/sbin/smtp-sink")])
        .find(|p| p.is_file())
}

fn running_as_root() -> bool {
    // /proc/self belongs to the effective user.
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0 to find a free port")
        .port()
}

/// Whether process `pid` listens on 127.0.0.1:port. On Linux this reads /proc (the listening
/// socket's inode among the process's descriptors), which neither connects (a probe would count
/// as an smtp-sink session) nor mistakes another process that took the port for ours.
fn listening(pid: u32, port: u16) -> bool {
    let Ok(table) = fs::read_to_string("/proc/net/tcp") else {
        return TcpStream::connect_timeout(
            &(Ipv4Addr::LOCALHOST, port).into(),
            Duration::from_millis(200),
        )
        .is_ok();
    };
    let local = format!("0100007F:{port:04X}");
    let inodes: Vec<String> = table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() > 9 && f[1] == local && f[3] == "0A")
        .map(|f| format!("socket:[{}]", f[9]))
        .collect();
    if inodes.is_empty() {
        return false;
    }
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.filter_map(Result::ok)
        .filter_map(|fd| fs::read_link(fd.path()).ok())
        .any(|target| inodes.iter().any(|i| target.as_os_str() == i.as_str()))
}

impl SmtpSink {
    /// Starts `smtp-sink -4 -v -t 30 [-u nobody] -d DIR/msg. EXTRA… 127.0.0.1:PORT 64` on a free
    /// port and waits (at most 10 s per try, 5 tries) until it listens. `extra_args` come after
    /// the defaults, so they can also override them (e.g. `&["-f", "RCPT"]`, `&["-q", "DATA"]`).
    /// Same `None`/panic rule as [`Aiosmtpd::start`] when smtp-sink is not installed.
    pub fn start(extra_args: &[&str]) -> Option<SmtpSink> {
        let Some(bin) = find_smtp_sink() else {
            return unavailable(
                "smtp-sink not found in PATH nor /usr/sbin (apt-get install postfix)",
            );
        };
        let dir = tempfile::Builder::new()
            .prefix("envoi-smtp-sink-")
            .tempdir()
            .expect("create a temp dir for smtp-sink");
        let dumps = dir.path().join("dumps");
        fs::create_dir(&dumps).expect("create the smtp-sink dump dir");
        let dumps = dumps
            .canonicalize()
            .expect("canonicalize the smtp-sink dump dir");
        let root = running_as_root();
        if root {
            // As root smtp-sink must drop to `nobody`, which then writes the dumps.
            fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))
                .expect("make the smtp-sink temp dir traversable");
            fs::set_permissions(&dumps, fs::Permissions::from_mode(0o777))
                .expect("make the smtp-sink dump dir writable for nobody");
        }
        // The template goes through strftime(3).
        let template = format!("{}/msg.", dumps.display()).replace('%', "%%");
        let log_path = dir.path().join("smtp-sink.log");

        let mut last_log = String::new();
        for _attempt in 0..5 {
            let port = free_port();
            let mut cmd = Command::new(&bin);
            cmd.args(["-4", "-v", "-t", "30"]);
            if root {
                cmd.args(["-u", "nobody"]);
            }
            cmd.arg("-d").arg(&template).args(extra_args);
            cmd.arg(format!("127.0.0.1:{port}")).arg("64");
            let log = fs::File::create(&log_path).expect("create the smtp-sink log");
            let mut child = cmd
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("spawn smtp-sink");
            let deadline = Instant::now() + STARTUP_TIMEOUT;
            loop {
                if listening(child.id(), port) {
                    return Some(SmtpSink {
                        child,
                        dir,
                        dumps_dir: dumps,
                        port,
                    });
                }
                let exited = child.try_wait().expect("poll the smtp-sink process");
                if exited.is_some() || Instant::now() >= deadline {
                    kill_and_wait(&mut child);
                    last_log = read_or_empty(&log_path);
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            // Lost a race for the port: try another one. Anything else is a real failure.
            if !last_log.contains("in use") {
                break;
            }
        }
        panic!("smtp-sink did not start listening on 127.0.0.1; its stderr:\n{last_log}");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The contents of every completed dump so far, oldest first (by modification time). See
    /// the type's documentation for the format and [`SinkDump::parse`] to split one.
    ///
    /// smtp-sink opens a dump at MAIL FROM, closes it at the final `.` (before its reply) and
    /// deletes it if the transaction is abandoned. So this first waits (at most 10 s) until
    /// the sink holds no dump open, i.e. it has dealt with the disconnect of a client that is
    /// already gone; dumps still open after that are left out.
    pub fn dumps(&self) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let mut open = self.open_dumps();
        while !open.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
            open = self.open_dumps();
        }
        let mut files: Vec<(std::time::SystemTime, PathBuf)> = fs::read_dir(&self.dumps_dir)
            .expect("read the smtp-sink dump dir")
            .map(|e| e.expect("read an entry of the smtp-sink dump dir").path())
            .filter(|p| !open.contains(p))
            .filter_map(|p| Some((fs::metadata(&p).and_then(|m| m.modified()).ok()?, p)))
            .collect();
        files.sort();
        files
            .into_iter()
            .filter_map(|(_, path)| match fs::read(&path) {
                Ok(bytes) => Some(bytes),
                // Deleted meanwhile: an abandoned transaction.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => panic!("read smtp-sink dump {}: {e}", path.display()),
            })
            .collect()
    }

    /// Dump files the sink process has open right now (Linux /proc; empty elsewhere).
    fn open_dumps(&self) -> Vec<PathBuf> {
        let Ok(fds) = fs::read_dir(format!("/proc/{}/fd", self.child.id())) else {
            return Vec::new();
        };
        fds.filter_map(Result::ok)
            .filter_map(|fd| fs::read_link(fd.path()).ok())
            .filter(|target| target.starts_with(&self.dumps_dir))
            .collect()
    }

    /// [`Self::dumps`], each split with [`SinkDump::parse`].
    pub fn parsed_dumps(&self) -> Vec<SinkDump> {
        self.dumps()
            .iter()
            .map(|d| {
                SinkDump::parse(d).unwrap_or_else(|| {
                    panic!(
                        "unexpected smtp-sink dump shape:\n{}",
                        String::from_utf8_lossy(d)
                    )
                })
            })
            .collect()
    }

    /// smtp-sink's `-v` output: connections and each client command line (including AUTH
    /// arguments verbatim), plus any warnings.
    pub fn log(&self) -> String {
        read_or_empty(&self.dir.path().join("smtp-sink.log"))
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        kill_and_wait(&mut self.child);
    }
}
