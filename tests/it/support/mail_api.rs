//! The loopback Microsoft Graph / Gmail API server, `tests/it/support/mail_api.py`: an HTTPS
//! server on 127.0.0.1 that follows the published sendMail / messages.send contracts (the
//! script's docstring cites each rule's page), records every request and the decoded message,
//! and has fault knobs (a status for the first N requests, an answer that never comes, drips
//! or never ends). Same shape as [`super::external::TokenEndpoint`]: `READY <port>`, stopped
//! when dropped or when this process dies (stdin EOF).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::external::{kill_and_wait, read_or_empty, start_python_peer};

/// The Graph mailbox that exists unless a test says otherwise.
pub const MAILBOX: &str = "reports@example.com";
/// The Gmail account's address (its `me`).
pub const GMAIL: &str = "me@example.com";

/// Answer the first `first` requests (all when `None`) with `status` and the service's error
/// JSON: `code` (Graph's error code, Gmail's reason) and `message`, else the service's usual
/// ones for that status; `Retry-After: retry_after` when given.
#[derive(Clone, Debug, Default)]
pub struct Fault {
    pub status: u16,
    pub first: Option<u32>,
    pub code: Option<String>,
    pub message: Option<String>,
    pub retry_after: Option<String>,
}

/// How the first `first` answers (all when `None`) misbehave.
#[derive(Clone, Copy, Debug)]
pub enum Stall {
    /// Never answer; the connection stays open.
    Hang,
    /// The answer one byte a second.
    Drip,
    /// An error body of this many bytes (Content-Length says so), written until the client
    /// stops reading.
    Huge(u64),
}

/// How to run the server.
#[derive(Clone, Debug)]
pub struct MailApiOptions {
    /// PEM certificate (leaf, then its CA) and key.
    pub cert_key: (PathBuf, PathBuf),
    /// The bearer tokens accepted; any other is 401.
    pub tokens: Vec<String>,
    /// The Graph mailboxes that exist; any other is 404 ErrorInvalidUser.
    pub mailboxes: Vec<String>,
    pub gmail_address: String,
    pub fault: Option<Fault>,
    pub stall: Option<(Stall, Option<u32>)>,
    /// GET mailboxSettings answers 403 ErrorAccessDenied (the app has only Mail.Send).
    pub settings_denied: bool,
    /// GET profile answers 403 insufficientPermissions (a token with only gmail.send).
    pub profile_denied: bool,
    /// Plain HTTP instead of HTTPS (for `api_url=http://127.0.0.1:…`).
    pub plain: bool,
}

impl MailApiOptions {
    /// Accepts `token` only, for [`MAILBOX`] and [`GMAIL`], no faults.
    pub fn new(cert_key: (PathBuf, PathBuf), token: &str) -> MailApiOptions {
        MailApiOptions {
            cert_key,
            tokens: vec![token.to_string()],
            mailboxes: vec![MAILBOX.to_string()],
            gmail_address: GMAIL.to_string(),
            fault: None,
            stall: None,
            settings_denied: false,
            profile_denied: false,
            plain: false,
        }
    }

    pub fn fault(mut self, status: u16, first: Option<u32>) -> MailApiOptions {
        self.fault = Some(Fault {
            status,
            first,
            ..Fault::default()
        });
        self
    }

    /// The fault's error code (Graph) or reason (Gmail), and message.
    pub fn fault_code(mut self, code: &str, message: Option<&str>) -> MailApiOptions {
        let fault = self.fault.as_mut().expect("fault() comes first");
        fault.code = Some(code.to_string());
        fault.message = message.map(str::to_string);
        self
    }

    pub fn retry_after(mut self, secs: &str) -> MailApiOptions {
        self.fault
            .as_mut()
            .expect("fault() comes first")
            .retry_after = Some(secs.to_string());
        self
    }

    pub fn stall(mut self, stall: Stall, first: Option<u32>) -> MailApiOptions {
        self.stall = Some((stall, first));
        self
    }
}

/// One request as the server logged it, before answering it.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct ApiRequest {
    pub seq: u64,
    pub method: String,
    pub path: String,
    pub query: String,
    /// `graph`, `gmail`, or `None` for an unknown path.
    pub api: Option<String>,
    /// `sendMail`, `mailboxSettings`, `send`, `upload` or `profile`.
    pub op: Option<String>,
    /// The mailbox (Graph) or userId (Gmail) of the path, percent-decoded.
    pub user: Option<String>,
    /// The bearer token presented.
    pub token: Option<String>,
    pub content_type: Option<String>,
    pub client_request_id: Option<String>,
    /// `None`: never answered (a hang).
    pub status: Option<u16>,
    /// Graph's error code or Gmail's reason, when refused.
    pub error_code: Option<String>,
    /// `normal`, `hang`, `drip` or `huge`.
    pub answer: String,
    /// Graph's request-id or Gmail's message id, when accepted.
    pub service_id: Option<String>,
    /// The decoded message's file name in the output folder.
    pub message_file: Option<String>,
    /// The To, Cc and Bcc addresses of the decoded message.
    pub recipients: Option<Vec<String>>,
}

impl ApiRequest {
    /// A sendMail / messages.send request (either Gmail form).
    pub fn is_send(&self) -> bool {
        matches!(self.op.as_deref(), Some("sendMail" | "send" | "upload"))
    }
}

/// A running `mail_api.py`.
pub struct MailApi {
    child: Child,
    stdin: Option<ChildStdin>,
    out: TempDir,
    port: u16,
    scheme: &'static str,
}

impl MailApi {
    /// Starts it on a free port of 127.0.0.1 and waits (at most 10 s) until it listens.
    /// `None` (with a note) when python3 is missing and external peers are not required.
    pub fn start(opts: MailApiOptions) -> Option<MailApi> {
        let out = tempfile::Builder::new()
            .prefix("envoi-mail-api-")
            .tempdir()
            .expect("create a temp dir for the mail API server");
        let stderr_log = out.path().join("stderr.log");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/support/mail_api.py");
        let mut cmd = Command::new("python3");
        cmd.arg(script)
            .args(["--port", "0", "--exit-on-stdin-eof"])
            .arg("--cert")
            .arg(&opts.cert_key.0)
            .arg("--key")
            .arg(&opts.cert_key.1)
            .arg("--out")
            .arg(out.path())
            .args(["--gmail-address", &opts.gmail_address]);
        for token in &opts.tokens {
            cmd.args(["--token", token]);
        }
        for mailbox in &opts.mailboxes {
            cmd.args(["--mailbox", mailbox]);
        }
        if let Some(f) = &opts.fault {
            cmd.args(["--fail-status", &f.status.to_string()]);
            if let Some(n) = f.first {
                cmd.args(["--fail-first", &n.to_string()]);
            }
            if let Some(code) = &f.code {
                cmd.args(["--fail-code", code]);
            }
            if let Some(message) = &f.message {
                cmd.args(["--fail-message", message]);
            }
            if let Some(secs) = &f.retry_after {
                cmd.args(["--retry-after", secs]);
            }
        }
        if let Some((stall, first)) = opts.stall {
            let mode = match stall {
                Stall::Hang => "hang",
                Stall::Drip => "drip",
                Stall::Huge(bytes) => {
                    cmd.args(["--huge-bytes", &bytes.to_string()]);
                    "huge"
                }
            };
            cmd.args(["--stall", mode]);
            if let Some(n) = first {
                cmd.args(["--stall-first", &n.to_string()]);
            }
        }
        if opts.settings_denied {
            cmd.arg("--settings-denied");
        }
        if opts.profile_denied {
            cmd.arg("--profile-denied");
        }
        if opts.plain {
            cmd.arg("--plain");
        }
        let (child, stdin, port) = start_python_peer(cmd, "the mail API server", &stderr_log)?;
        Some(MailApi {
            child,
            stdin,
            out,
            port,
            scheme: if opts.plain { "http" } else { "https" },
        })
    }

    /// Graph's `api_url`: `https://127.0.0.1:<port>/v1.0` (`http` when plain).
    pub fn graph_url(&self) -> String {
        format!("{}://127.0.0.1:{}/v1.0", self.scheme, self.port)
    }

    /// Gmail's `api_url`: `https://127.0.0.1:<port>` (`http` when plain).
    pub fn gmail_url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme, self.port)
    }

    /// Every request so far, in order of arrival.
    pub fn requests(&self) -> Vec<ApiRequest> {
        read_or_empty(&self.out.path().join("requests.jsonl"))
            .lines()
            .map(|line| serde_json::from_str(line).expect("a requests.jsonl line is JSON"))
            .collect()
    }

    /// The send requests so far (sendMail, messages.send in either form).
    pub fn sends(&self) -> Vec<ApiRequest> {
        self.requests()
            .into_iter()
            .filter(ApiRequest::is_send)
            .collect()
    }

    /// The decoded message bytes of `request` (`None` when they did not decode).
    pub fn message(&self, request: &ApiRequest) -> Option<Vec<u8>> {
        let name = request.message_file.as_ref()?;
        Some(fs::read(self.out.path().join(name)).expect("read a saved message"))
    }

    /// The one accepted send's message; panics unless exactly one send was accepted.
    pub fn only_accepted(&self) -> (ApiRequest, Vec<u8>) {
        let accepted: Vec<ApiRequest> = self
            .sends()
            .into_iter()
            .filter(|r| matches!(r.status, Some(200 | 202)))
            .collect();
        assert_eq!(
            accepted.len(),
            1,
            "expected one accepted send: {:#?}\n{}",
            self.requests(),
            self.log()
        );
        let request = accepted.into_iter().next().expect("one");
        let bytes = self
            .message(&request)
            .expect("an accepted send has a message");
        (request, bytes)
    }

    /// How many body bytes a [`Stall::Huge`] answer to request `seq` wrote before the client
    /// stopped reading (waits at most 30 s for the server to find out and write it down:
    /// a loaded disk has taken over 10 s).
    pub fn huge_written(&self, seq: u64) -> Option<u64> {
        let path = self.out.path().join(format!("written-{seq}"));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(text) = fs::read_to_string(&path) {
                return text.trim().parse().ok();
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What the script printed on stderr (tracebacks).
    pub fn log(&self) -> String {
        read_or_empty(&self.out.path().join("stderr.log"))
    }
}

impl Drop for MailApi {
    fn drop(&mut self) {
        drop(self.stdin.take());
        kill_and_wait(&mut self.child);
    }
}
