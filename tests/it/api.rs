//! Mail over HTTPS (issue 17): `transport = "graph"` (Microsoft Graph `sendMail`, MIME form) and
//! `transport = "gmail"` (Gmail API `messages.send`), driven as a user would, against the
//! loopback server of `tests/it/support/mail_api.py`, which follows the published contracts
//! (path, method, bearer token, content type, base64 / base64url, sizes, the services' error
//! JSON) and records what reached it. Assertions are on those recorded requests and the decoded
//! message bytes, parsed with `mail-parser`.
//!
//! The first tests drive the server with `curl` alone, so that it is proven to follow the
//! contract independently of envoi.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use mail_parser::{MessageParser, MimeHeaders};
use sha2::Digest;
use tempfile::TempDir;

use crate::dkim::{KeyKind, dkim_lines, dkimpy_verify, make_key};
use crate::support::certs::TestPki;
use crate::support::envoi::{ExpectExit, Run, envoi};
use crate::support::external::{TokenEndpoint, TokenEndpointOptions, require_external};
use crate::support::mail_api::{ApiRequest, GMAIL, MAILBOX, MailApi, MailApiOptions, Stall};

/// The bearer token the server accepts (token_env).
const TOKEN: &str = "canary-api-token-7c41";

// ---------------------------------------------------------------------------------------------
// The server itself, driven by curl
// ---------------------------------------------------------------------------------------------

/// What curl got back.
struct Reply {
    status: u16,
    headers: String,
    body: String,
    /// curl's own exit code (28: timed out, 63: over --max-filesize).
    exit: Option<i32>,
}

fn curl_present() -> bool {
    Command::new("curl")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `curl -sS --cacert CA <args>`, headers and body kept apart.
fn curl(dir: &Path, ca: &Path, args: &[&str]) -> Reply {
    let headers = dir.join("curl.headers");
    let body = dir.join("curl.body");
    let _ = std::fs::remove_file(&headers);
    let _ = std::fs::remove_file(&body);
    let out = Command::new("curl")
        .arg("-sS")
        .arg("--cacert")
        .arg(ca)
        .arg("-D")
        .arg(&headers)
        .arg("-o")
        .arg(&body)
        .args(["-w", "%{http_code}"])
        .args(args)
        .output()
        .expect("run curl");
    Reply {
        status: String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0),
        headers: std::fs::read_to_string(&headers).unwrap_or_default(),
        body: std::fs::read_to_string(&body).unwrap_or_default(),
        exit: out.status.code(),
    }
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

const SIMPLE: &[u8] =
    b"From: reports@example.com\r\nTo: ann@example.net\r\nSubject: curl\r\n\r\nHello.\r\n";

/// A temp dir with the test CA, and the server started with `opts` (from [`MailApiOptions::new`]
/// with [`TOKEN`]) changed by `tune`.
fn start(
    tune: impl FnOnce(MailApiOptions) -> MailApiOptions,
) -> Option<(TempDir, PathBuf, MailApi)> {
    let dir = TempDir::new().expect("temp dir");
    let pki = TestPki::new();
    let ca = pki.write_ca(dir.path());
    let leaf = pki.write_leaf(dir.path());
    let server = MailApi::start(tune(MailApiOptions::new(leaf, TOKEN)))?;
    Some((dir, ca, server))
}

#[test]
fn loopback_graph_send_mail_takes_base64_mime_with_a_bearer_token_under_curl() {
    if !require_external("curl", curl_present()) {
        return;
    }
    let Some((dir, ca, server)) = start(|o| o) else {
        return;
    };
    let d = dir.path();
    let b64 = base64::engine::general_purpose::STANDARD.encode(SIMPLE);
    let url = format!(
        "{}/users/reports%40example.com/sendMail",
        server.graph_url()
    );
    let auth = format!("Authorization: Bearer {TOKEN}");
    let post = |auth: &str, ctype: &str, data: &str, url: &str| {
        curl(
            d,
            &ca,
            &[
                "-X",
                "POST",
                "-H",
                auth,
                "-H",
                ctype,
                "--data-binary",
                data,
                url,
            ],
        )
    };

    let ok = post(&auth, "Content-Type: text/plain", &b64, &url);
    assert_eq!(ok.status, 202, "{}{}", ok.headers, ok.body);
    assert!(ok.body.is_empty(), "202 has an empty body: {}", ok.body);
    assert!(ok.headers.contains("request-id: "), "{}", ok.headers);
    assert!(ok.headers.contains("client-request-id: "), "{}", ok.headers);
    let (req, bytes) = server.only_accepted();
    assert_eq!(bytes, SIMPLE, "the decoded message is what was posted");
    assert_eq!(req.user.as_deref(), Some(MAILBOX));
    assert_eq!(req.api.as_deref(), Some("graph"));
    assert_eq!(req.path, "/v1.0/users/reports%40example.com/sendMail");
    assert_eq!(
        req.recipients.as_deref(),
        Some(&["ann@example.net".to_string()][..])
    );
    assert!(ok.headers.contains(req.service_id.as_deref().unwrap()));

    let refusals = [
        (
            post(
                "Authorization: Bearer wrong",
                "Content-Type: text/plain",
                &b64,
                &url,
            ),
            401,
            "InvalidAuthenticationToken",
        ),
        (
            post(&auth, "Content-Type: text/plain", "not base64!", &url),
            400,
            "ErrorMimeContentInvalidBase64String",
        ),
        (
            post(&auth, "Content-Type: application/json", &b64, &url),
            415,
            "UnsupportedMediaType",
        ),
        (
            post(
                &auth,
                "Content-Type: text/plain",
                &b64,
                &url.replace("reports%40", "nobody%40"),
            ),
            404,
            "ErrorInvalidUser",
        ),
        (
            post(
                &auth,
                "Content-Type: text/plain",
                &base64::engine::general_purpose::STANDARD.encode(b"Subject: none\r\n\r\nx\r\n"),
                &url,
            ),
            400,
            "ErrorInvalidRecipients",
        ),
    ];
    for (reply, status, code) in refusals {
        assert_eq!(reply.status, status, "{}{}", reply.headers, reply.body);
        assert_eq!(json(&reply.body)["error"]["code"], code, "{}", reply.body);
    }
    // Too big: over 4 MiB of request body.
    let big = "QUFB".repeat(4 * 1024 * 1024 / 4 + 1);
    let file = d.join("big.b64");
    std::fs::write(&file, &big).unwrap();
    let reply = post(
        &auth,
        "Content-Type: text/plain",
        &format!("@{}", file.display()),
        &url,
    );
    assert_eq!(reply.status, 413, "{}", reply.body);

    let settings = curl(
        d,
        &ca,
        &["-H", &auth, &url.replace("sendMail", "mailboxSettings")],
    );
    assert_eq!(settings.status, 200, "{}", settings.body);
    assert_eq!(json(&settings.body)["timeZone"], "UTC");
    assert_eq!(server.sends().len(), 7, "every request is recorded");
    assert_eq!(server.only_accepted().1, SIMPLE);
}

#[test]
fn loopback_gmail_send_takes_base64url_raw_or_a_media_upload_under_curl() {
    if !require_external("curl", curl_present()) {
        return;
    }
    let Some((dir, ca, server)) = start(|o| o) else {
        return;
    };
    let d = dir.path();
    // Bytes whose base64 has '+' and '/' in the standard alphabet.
    let message = [SIMPLE, b"\xfb\xff\xfe>>>???\r\n"].concat();
    let std64 = base64::engine::general_purpose::STANDARD.encode(&message);
    assert!(std64.contains('+') || std64.contains('/'));
    let url64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&message);
    let send = format!("{}/gmail/v1/users/me/messages/send", server.gmail_url());
    let auth = format!("Authorization: Bearer {TOKEN}");
    let post_json = |raw: &str, auth: &str| {
        let body = serde_json::json!({ "raw": raw }).to_string();
        curl(
            d,
            &ca,
            &[
                "-X",
                "POST",
                "-H",
                auth,
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                &body,
                &send,
            ],
        )
    };

    let ok = post_json(&url64, &auth);
    assert_eq!(ok.status, 200, "{}", ok.body);
    let answer = json(&ok.body);
    assert_eq!(answer["labelIds"], serde_json::json!(["SENT"]));
    let (req, bytes) = server.only_accepted();
    assert_eq!(bytes, message);
    assert_eq!(answer["id"].as_str(), req.service_id.as_deref());

    let bad = post_json(&std64, &auth);
    assert_eq!(
        bad.status, 400,
        "the standard alphabet is not base64url: {}",
        bad.body
    );
    assert_eq!(json(&bad.body)["error"]["status"], "INVALID_ARGUMENT");
    let unauth = post_json(&url64, "Authorization: Bearer wrong");
    assert_eq!(unauth.status, 401);
    assert_eq!(json(&unauth.body)["error"]["status"], "UNAUTHENTICATED");
    assert!(
        unauth.headers.contains("WWW-Authenticate: Bearer"),
        "{}",
        unauth.headers
    );

    let file = d.join("m.eml");
    std::fs::write(&file, &message).unwrap();
    let upload = |query: &str, ctype: &str| {
        let url = format!(
            "{}/upload/gmail/v1/users/me/messages/send?{query}",
            server.gmail_url()
        );
        curl(
            d,
            &ca,
            &[
                "-X",
                "POST",
                "-H",
                &auth,
                "-H",
                ctype,
                "--data-binary",
                &format!("@{}", file.display()),
                &url,
            ],
        )
    };
    let media = upload("uploadType=media", "Content-Type: message/rfc822");
    assert_eq!(media.status, 200, "{}", media.body);
    assert_eq!(
        upload("uploadType=resumable", "Content-Type: message/rfc822").status,
        400
    );
    assert_eq!(
        upload("uploadType=media", "Content-Type: text/plain").status,
        400
    );
    let last = server
        .sends()
        .into_iter()
        .rfind(|r| r.status == Some(200))
        .unwrap();
    assert_eq!(last.op.as_deref(), Some("upload"));
    assert_eq!(server.message(&last).unwrap(), message);

    let profile = curl(
        d,
        &ca,
        &[
            "-H",
            &auth,
            &format!("{}/gmail/v1/users/me/profile", server.gmail_url()),
        ],
    );
    assert_eq!(profile.status, 200);
    assert_eq!(json(&profile.body)["emailAddress"], GMAIL);
}

#[test]
fn loopback_fault_knobs_refuse_then_accept_hang_drip_and_flood_under_curl() {
    if !require_external("curl", curl_present()) {
        return;
    }
    let graph_post = |server: &MailApi, dir: &Path, ca: &Path, extra: &[&str]| {
        let b64 = base64::engine::general_purpose::STANDARD.encode(SIMPLE);
        let url = format!("{}/users/{MAILBOX}/sendMail", server.graph_url());
        let mut args = vec!["-X", "POST", "-H", "Content-Type: text/plain"];
        let auth = format!("Authorization: Bearer {TOKEN}");
        args.extend(["-H", &auth, "--data-binary", &b64]);
        args.extend(extra);
        args.push(&url);
        curl(dir, ca, &args)
    };

    // 429 with Retry-After and the service's error JSON once, then accepted.
    let Some((dir, ca, server)) = start(|o| o.fault(429, Some(1)).retry_after("3")) else {
        return;
    };
    let first = graph_post(&server, dir.path(), &ca, &[]);
    assert_eq!(first.status, 429);
    assert!(
        first.headers.contains("Retry-After: 3"),
        "{}",
        first.headers
    );
    assert_eq!(json(&first.body)["error"]["code"], "ApplicationThrottled");
    assert_eq!(graph_post(&server, dir.path(), &ca, &[]).status, 202);

    // 403 with the code and message asked for.
    let Some((dir, ca, server)) = start(|o| {
        o.fault(403, None)
            .fault_code("MailboxNotEnabledForRESTAPI", None)
    }) else {
        return;
    };
    let denied = graph_post(&server, dir.path(), &ca, &[]);
    assert_eq!(denied.status, 403);
    assert_eq!(
        json(&denied.body)["error"]["code"],
        "MailboxNotEnabledForRESTAPI"
    );
    assert!(denied.body.contains("hosted on-premise"), "{}", denied.body);

    // Never answers: recorded, status none.
    let Some((dir, ca, server)) = start(|o| o.stall(Stall::Hang, None)) else {
        return;
    };
    let hung = graph_post(&server, dir.path(), &ca, &["--max-time", "2"]);
    assert_eq!(hung.exit, Some(28), "curl timed out");
    let reqs = server.requests();
    assert_eq!(
        (reqs.len(), reqs[0].status, reqs[0].answer.as_str()),
        (1, None, "hang")
    );

    // Drips: a byte a second, so two seconds bring a couple of bytes of the status line.
    let Some((dir, ca, server)) = start(|o| o.stall(Stall::Drip, None)) else {
        return;
    };
    let started = Instant::now();
    let drip = graph_post(&server, dir.path(), &ca, &["--max-time", "3"]);
    assert_eq!(drip.exit, Some(28));
    assert!(started.elapsed() >= Duration::from_secs(3));
    assert_eq!(server.requests()[0].answer, "drip");

    // A 1 GiB answer: a client that refuses to read it stops the server writing.
    let Some((dir, ca, server)) = start(|o| o.fault(503, None).stall(Stall::Huge(1 << 30), None))
    else {
        return;
    };
    let huge = graph_post(&server, dir.path(), &ca, &["--max-filesize", "100000"]);
    assert_eq!(
        huge.exit,
        Some(63),
        "curl refused the size: {}",
        huge.headers
    );
    assert!(
        huge.headers.contains("Content-Length: 1073741824"),
        "{}",
        huge.headers
    );
    let written = server.huge_written(1).expect("the server stopped writing");
    assert!(
        written < 64 << 20,
        "wrote {written} bytes to a client that left"
    );
}

// ---------------------------------------------------------------------------------------------
// envoi through the APIs
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq)]
enum Api {
    Graph,
    Gmail,
}

const BOTH: [Api; 2] = [Api::Graph, Api::Gmail];

impl Api {
    fn transport(self) -> &'static str {
        match self {
            Api::Graph => "graph",
            Api::Gmail => "gmail",
        }
    }

    fn from(self) -> &'static str {
        match self {
            Api::Graph => MAILBOX,
            Api::Gmail => GMAIL,
        }
    }

    fn url(self, server: &MailApi) -> String {
        match self {
            Api::Graph => server.graph_url(),
            Api::Gmail => server.gmail_url(),
        }
    }
}

/// A temp HOME with the test CA, a server, and a config whose default profile `api` sends
/// through `api` with `token_env = "API_TOKEN"`, `timeout_secs = 10`, and `extra` lines.
struct Env {
    dir: TempDir,
    ca: PathBuf,
    leaf: (PathBuf, PathBuf),
    server: MailApi,
    api: Api,
    config: PathBuf,
}

impl Env {
    fn new(api: Api, tune: impl FnOnce(MailApiOptions) -> MailApiOptions) -> Option<Env> {
        Env::with(api, tune, &["token_env = \"API_TOKEN\""])
    }

    fn with(
        api: Api,
        tune: impl FnOnce(MailApiOptions) -> MailApiOptions,
        extra: &[&str],
    ) -> Option<Env> {
        Env::in_dir(
            TempDir::new().expect("temp dir"),
            &TestPki::new(),
            api,
            tune,
            extra,
        )
    }

    /// [`Env::with`] in `dir`, serving a leaf of `pki` (which the profile trusts).
    fn in_dir(
        dir: TempDir,
        pki: &TestPki,
        api: Api,
        tune: impl FnOnce(MailApiOptions) -> MailApiOptions,
        extra: &[&str],
    ) -> Option<Env> {
        let ca = pki.write_ca(dir.path());
        let leaf = pki.write_leaf(dir.path());
        let server = MailApi::start(tune(MailApiOptions::new(leaf.clone(), TOKEN)))?;
        let mut env = Env {
            dir,
            ca,
            leaf,
            server,
            api,
            config: PathBuf::new(),
        };
        env.config = env.write_config(extra);
        Some(env)
    }

    /// (Re)writes the config for the current server.
    fn write_config(&self, extra: &[&str]) -> PathBuf {
        let path = self.dir.path().join("config.toml");
        let mut text = format!(
            "default = \"api\"\n[profiles.api]\ntransport = \"{}\"\nfrom = \"Reports <{}>\"\n\
             api_url = \"{}\"\nca_file = \"{}\"\ntimeout_secs = 10\n",
            self.api.transport(),
            self.api.from(),
            self.api.url(&self.server),
            self.ca.display()
        );
        for line in extra {
            text.push_str(line);
            text.push('\n');
        }
        std::fs::write(&path, text).expect("write the config");
        path
    }

    fn home(&self) -> &Path {
        self.dir.path()
    }

    /// `envoi <sub> --config <config>` with `$API_TOKEN` set.
    fn cmd(&self, sub: &str) -> assert_cmd::Command {
        let mut cmd = envoi(self.home());
        cmd.env("API_TOKEN", TOKEN)
            .arg(sub)
            .arg("--config")
            .arg(&self.config);
        cmd
    }

    /// `envoi send` to ann@example.net, Subject "Nightly", plus `extra`.
    fn send(&self, extra: &[&str]) -> assert_cmd::Command {
        let mut cmd = self.cmd("send");
        cmd.args(["--to", "ann@example.net", "--subject", "Nightly"])
            .args(["--body", "All green."])
            .args(extra);
        cmd
    }

    /// The one accepted request and its message, checked against the contract's form for
    /// this API (path, token, content type).
    fn accepted(&self) -> (ApiRequest, Vec<u8>) {
        let (req, bytes) = self.server.only_accepted();
        assert_eq!(req.token.as_deref(), Some(TOKEN));
        assert_eq!(req.method, "POST");
        match self.api {
            Api::Graph => {
                assert_eq!(req.op.as_deref(), Some("sendMail"), "{req:?}");
                assert_eq!(req.user.as_deref(), Some(MAILBOX), "{req:?}");
                let ctype = req.content_type.as_deref().unwrap_or_default();
                assert!(ctype.starts_with("text/plain"), "{req:?}");
                let id = req.client_request_id.as_deref().unwrap_or_default();
                assert_eq!(
                    id.len(),
                    36,
                    "envoi sends a client-request-id UUID: {req:?}"
                );
            }
            Api::Gmail => {
                assert_eq!(req.user.as_deref(), Some("me"), "{req:?}");
                let ctype = req.content_type.as_deref().unwrap_or_default();
                match req.op.as_deref() {
                    Some("send") => assert!(ctype.starts_with("application/json"), "{req:?}"),
                    Some("upload") => {
                        assert!(ctype.starts_with("message/rfc822"), "{req:?}");
                        assert_eq!(req.query, "uploadType=media");
                    }
                    _ => panic!("not a Gmail send: {req:?}"),
                }
            }
        }
        (req, bytes)
    }
}

/// The values of header `name` in the message's header section (unfolded, raw).
fn header_values(message: &[u8], name: &str) -> Vec<String> {
    let text = String::from_utf8_lossy(message);
    let head = text
        .split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .replace("\r\n ", " ");
    let head = head.replace("\r\n\t", " ");
    let prefix = format!("{}:", name.to_ascii_lowercase());
    head.split("\r\n")
        .filter(|l| l.to_ascii_lowercase().starts_with(&prefix))
        .map(|l| l[prefix.len()..].trim().to_string())
        .collect()
}

fn sha256(bytes: &[u8]) -> String {
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn api_send_delivers_the_composed_message_with_attachment_and_inline_image() {
    for api in BOTH {
        let Some(env) = Env::new(api, |o| o) else {
            return;
        };
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7919 % 251) as u8).collect();
        let png: Vec<u8> = (0..3000u32).map(|i| (i % 256) as u8).collect();
        let attach = env.home().join("report.bin");
        let logo = env.home().join("logo.png");
        std::fs::write(&attach, &data).unwrap();
        std::fs::write(&logo, &png).unwrap();
        env.cmd("send")
            .args(["--to", "ann@example.net", "--cc", "bob@example.net"])
            .args(["--subject", "Nightly"])
            .args(["--body", "<p>See <img src=\"cid:logo\"></p>"])
            .args(["--html", "--text", "See the logo"])
            .arg("--attach")
            .arg(&attach)
            .arg("--attach")
            .arg(&logo)
            .args(["--attach-id", "logo"])
            .expect_exit(0);
        let (req, bytes) = env.accepted();
        let parsed = MessageParser::default().parse(&bytes).expect("a message");
        assert_eq!(parsed.subject(), Some("Nightly"), "{api:?}");
        let from = parsed
            .from()
            .and_then(|a| a.first())
            .and_then(|a| a.address());
        assert_eq!(from, Some(api.from()), "{api:?}");
        let mut recipients = req.recipients.clone().unwrap_or_default();
        recipients.sort();
        assert_eq!(
            recipients,
            ["ann@example.net", "bob@example.net"],
            "{api:?}"
        );
        assert!(
            parsed
                .body_text(0)
                .is_some_and(|t| t.contains("See the logo"))
        );
        let parts: Vec<(Option<String>, Option<String>, String)> = parsed
            .attachments()
            .map(|p| {
                (
                    p.attachment_name().map(str::to_owned),
                    p.content_id().map(str::to_owned),
                    sha256(p.contents()),
                )
            })
            .collect();
        assert!(
            parts.contains(&(Some("report.bin".into()), None, sha256(&data))),
            "{api:?}: {parts:?}"
        );
        assert!(
            parts.iter().any(
                |(_, cid, h)| cid.as_deref().is_some_and(|c| c.contains("logo"))
                    && *h == sha256(&png)
            ),
            "{api:?}: the inline image: {parts:?}"
        );
    }
}

#[test]
fn bcc_reaches_the_api_in_the_bytes_and_shows_in_no_to_cc_nor_dry_run() {
    for api in BOTH {
        let Some(env) = Env::new(api, |o| o) else {
            return;
        };
        let args = ["--cc", "bob@example.net", "--bcc", "hidden@example.org"];
        let dry = env.send(&args).arg("--dry-run").expect_exit(0);
        assert!(
            !dry.stdout.contains("hidden@example.org"),
            "{api:?}: dry run shows the Bcc: {dry}"
        );
        let dry_json = env.send(&args).args(["--dry-run", "--json"]).expect_exit(0);
        let shown = dry_json.json()["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(shown.contains("bob@example.net"), "{api:?}: {dry_json}");
        assert!(
            !shown.contains("hidden"),
            "{api:?}: the JSON dry run shows the Bcc: {shown}"
        );
        assert!(env.server.requests().is_empty(), "a dry run made a request");
        env.send(&args).expect_exit(0);
        let (req, bytes) = env.accepted();
        let bcc = header_values(&bytes, "Bcc");
        assert_eq!(
            bcc.len(),
            1,
            "{api:?}: one Bcc header: {}",
            String::from_utf8_lossy(&bytes)
        );
        assert!(bcc[0].contains("hidden@example.org"), "{api:?}: {bcc:?}");
        for visible in ["To", "Cc"] {
            for value in header_values(&bytes, visible) {
                assert!(!value.contains("hidden"), "{api:?}: {visible}: {value}");
            }
        }
        let mut recipients = req.recipients.unwrap_or_default();
        recipients.sort();
        assert_eq!(
            recipients,
            ["ann@example.net", "bob@example.net", "hidden@example.org"],
            "{api:?}"
        );
    }
}

#[test]
fn dkim_signature_verifies_on_the_bytes_the_api_got_and_leaves_bcc_unsigned() {
    if !crate::dkim::tools() {
        return;
    }
    for api in BOTH {
        let keydir = TempDir::new().unwrap();
        let (key, record) = make_key(keydir.path(), KeyKind::Rsa);
        let lines = dkim_lines(&key);
        let Some(env) = Env::with(api, |o| o, &["token_env = \"API_TOKEN\"", &lines]) else {
            return;
        };
        env.send(&["--bcc", "hidden@example.org"]).expect_exit(0);
        let (_, bytes) = env.accepted();
        if let Err(why) = dkimpy_verify(env.home(), &bytes, &record) {
            panic!(
                "{api:?}: dkimpy: {why}\n{}",
                String::from_utf8_lossy(&bytes)
            );
        }
        let signature = header_values(&bytes, "DKIM-Signature").join(" ");
        let signed = signature
            .split(';')
            .find_map(|t| t.trim().strip_prefix("h="))
            .unwrap_or_default()
            .to_ascii_lowercase();
        assert!(
            !signed.split(':').any(|h| h.trim() == "bcc"),
            "{api:?}: Bcc signed: {signature}"
        );
    }
}

#[test]
fn json_output_says_sent_with_the_services_id() {
    for api in BOTH {
        let Some(env) = Env::new(api, |o| o) else {
            return;
        };
        let log = env.dir.path().join("log.txt");
        let run = env
            .send(&["--json", "--log", log.to_str().unwrap()])
            .expect_exit(0);
        let (req, _) = env.accepted();
        assert_eq!(run.json()["status"], "sent", "{run}");
        let id = req.service_id.expect("the server gave an id");
        assert!(
            run.stdout.contains(&id),
            "{api:?}: the JSON lacks the service id {id}: {run}"
        );
        // The delivery log names the API and its id for the request.
        let line = std::fs::read_to_string(&log).unwrap();
        let key = match api {
            Api::Graph => "graph",
            Api::Gmail => "gmail",
        };
        for field in [
            format!(" api={key} "),
            format!(" request_id={id} "),
            " status=sent ".to_owned(),
            " exitcode=0\n".to_owned(),
        ] {
            assert!(line.contains(&field), "{api:?}: no {field:?} in {line}");
        }
        let words = match api {
            Api::Graph => "Microsoft Graph",
            Api::Gmail => "Gmail API",
        };
        let text = Env::new(api, |o| o).map(|e| e.send(&[]).expect_exit(0));
        if let Some(text) = text {
            assert!(text.output().contains(words), "{api:?}: {text}");
        }
    }
}

#[test]
fn throttled_429_then_accepted_is_sent_after_honouring_retry_after() {
    for api in BOTH {
        let Some(env) = Env::new(api, |o| o.fault(429, Some(1)).retry_after("2")) else {
            return;
        };
        let started = Instant::now();
        let run = env.send(&["--json"]).expect_exit(0);
        assert!(
            started.elapsed() >= Duration::from_secs(2),
            "{api:?}: retried before Retry-After: {run}"
        );
        let statuses: Vec<_> = env.server.sends().iter().map(|r| r.status).collect();
        assert_eq!(statuses[0], Some(429), "{api:?}");
        assert_eq!(statuses.len(), 2, "{api:?}: {statuses:?}");
        env.accepted();
    }
}

#[test]
fn unavailable_503_every_time_is_75_after_the_retries() {
    for api in BOTH {
        let Some(env) = Env::new(api, |o| o.fault(503, None).retry_after("1")) else {
            return;
        };
        let run = env
            .send(&["--retries", "1", "--timeout", "30"])
            .expect_exit(75);
        assert_eq!(env.server.sends().len(), 2, "{api:?}: one retry: {run}");
        assert!(!run.output().contains(TOKEN), "{run}");
    }
}

/// A token endpoint issuing at-1, at-2, … by client credentials, and `api` behind an
/// `[oauth2]` profile that fetches from it, accepting only the token `accepted`.
fn native_oauth2(api: Api, accepted: &str) -> Option<(Env, TokenEndpoint)> {
    let dir = TempDir::new().unwrap();
    let pki = TestPki::new();
    let endpoint = TokenEndpoint::start(TokenEndpointOptions {
        cert_key: pki.write_leaf(dir.path()),
        client_id: "envoi-app".into(),
        client_secret: "Canary-Client-Secret-77".into(),
        refresh_token: None,
        token_prefix: "at-".into(),
        expires_in: 3600,
        fail_status: None,
    })?;
    let url = format!("token_url = \"{}\"", endpoint.url());
    let oauth = [
        "[profiles.api.oauth2]",
        "flow = \"client_credentials\"",
        &url,
        "client_id = \"envoi-app\"",
        "client_secret_env = \"APP_SECRET\"",
        "scope = \"https://graph.microsoft.com/.default\"",
    ];
    let tune = |o| MailApiOptions {
        tokens: vec![accepted.to_owned()],
        ..o
    };
    let env = Env::in_dir(dir, &pki, api, tune, &oauth)?;
    Some((env, endpoint))
}

#[test]
fn a_refused_native_oauth2_token_is_fetched_again_once_and_the_send_goes() {
    for api in BOTH {
        // at-1 is refused (revoked), at-2 accepted.
        let Some((env, endpoint)) = native_oauth2(api, "at-2") else {
            return;
        };
        let run = env
            .send(&[])
            .env("APP_SECRET", "Canary-Client-Secret-77")
            .expect_exit(0);
        let tokens: Vec<_> = env
            .server
            .sends()
            .iter()
            .map(|r| (r.token.clone(), r.status))
            .collect();
        assert_eq!(
            tokens,
            [
                (Some("at-1".into()), Some(401)),
                (
                    Some("at-2".into()),
                    Some(if api == Api::Graph { 202 } else { 200 })
                )
            ],
            "{api:?}: {run}"
        );
        assert_eq!(
            endpoint.requests().len(),
            2,
            "{api:?}: a second token was fetched"
        );
        assert!(
            !run.output().contains("at-1") && !run.output().contains("Canary-Client"),
            "{run}"
        );
        drop(env);
    }
}

#[test]
fn a_token_refused_every_time_is_77_without_showing_it() {
    for api in BOTH {
        let Some(env) = Env::new(api, |o| MailApiOptions {
            tokens: vec!["another".into()],
            ..o
        }) else {
            return;
        };
        let run = env.send(&[]).expect_exit(77);
        let sends = env.server.sends();
        assert!((1..=2).contains(&sends.len()), "{api:?}: {sends:?}");
        assert!(sends.iter().all(|r| r.status == Some(401)));
        assert!(
            !run.output().contains(TOKEN),
            "the token was printed: {run}"
        );
    }
}

#[test]
fn forbidden_403_is_77_with_the_services_code_message_and_what_to_grant() {
    let cases = [
        (
            Api::Graph,
            "ErrorAccessDenied",
            "Access is denied. Check credentials and try again.",
            "Mail.Send",
        ),
        (
            Api::Graph,
            "MailboxNotEnabledForRESTAPI",
            "The mailbox is either inactive, soft-deleted, or is hosted on-premise.",
            "MailboxNotEnabledForRESTAPI",
        ),
        (
            Api::Gmail,
            "insufficientPermissions",
            "Request had insufficient authentication scopes.",
            "gmail.send",
        ),
    ];
    for (api, code, message, grant) in cases {
        let Some(env) = Env::new(api, |o| o.fault(403, None).fault_code(code, Some(message)))
        else {
            return;
        };
        let run = env.send(&[]).expect_exit(77);
        assert_eq!(
            env.server.sends().len(),
            1,
            "{api:?}: a 403 is not retried: {run}"
        );
        assert!(
            run.stderr.contains(code) || run.stderr.contains(message),
            "{api:?}: {run}"
        );
        assert!(
            run.stderr.contains(message),
            "{api:?}: the service's message: {run}"
        );
        assert!(
            run.stderr.contains(grant),
            "{api:?}: what to grant ({grant}): {run}"
        );
    }
}

#[test]
fn bad_request_400_is_65_and_not_retried() {
    for api in BOTH {
        let code = if api == Api::Graph {
            "ErrorInvalidRecipients"
        } else {
            "invalidArgument"
        };
        let Some(env) = Env::new(api, |o| {
            o.fault(400, None)
                .fault_code(code, Some("Invalid To header"))
        }) else {
            return;
        };
        let run = env.send(&[]).expect_exit(65);
        assert_eq!(env.server.sends().len(), 1, "{api:?}: {run}");
        assert!(run.stderr.contains("Invalid To header"), "{api:?}: {run}");
    }
}

#[test]
fn an_unknown_graph_mailbox_is_78_naming_it() {
    let Some(env) = Env::with(
        Api::Graph,
        |o| o,
        &[
            "token_env = \"API_TOKEN\"",
            "mailbox = \"nobody@example.com\"",
        ],
    ) else {
        return;
    };
    let run = env.send(&[]).expect_exit(78);
    let sends = env.server.sends();
    assert_eq!(sends.len(), 1, "{run}");
    assert_eq!(sends[0].user.as_deref(), Some("nobody@example.com"));
    assert_eq!(sends[0].error_code.as_deref(), Some("ErrorInvalidUser"));
    assert!(run.stderr.contains("nobody@example.com"), "{run}");
}

#[test]
fn a_message_over_the_graph_limit_is_65_before_any_request() {
    let Some(env) = Env::new(Api::Graph, |o| o) else {
        return;
    };
    let big = env.home().join("big.bin");
    std::fs::write(&big, vec![0x5a_u8; 4 * 1024 * 1024]).unwrap();
    let run = env.send(&[]).arg("--attach").arg(&big).expect_exit(65);
    assert!(
        env.server.requests().is_empty(),
        "a request was made: {run}"
    );
    assert!(
        run.stderr.contains("MB") || run.stderr.contains("bytes"),
        "names the limit: {run}"
    );
}

#[test]
fn a_large_gmail_message_goes_by_media_upload() {
    let Some(env) = Env::new(Api::Gmail, |o| o) else {
        return;
    };
    let big = env.home().join("big.bin");
    let data: Vec<u8> = (0..6 * 1024 * 1024u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(&big, &data).unwrap();
    env.send(&[]).arg("--attach").arg(&big).expect_exit(0);
    let (req, bytes) = env.accepted();
    assert_eq!(req.op.as_deref(), Some("upload"), "{req:?}");
    let parsed = MessageParser::default().parse(&bytes).expect("a message");
    let part = parsed.attachments().next().expect("the attachment");
    assert_eq!(sha256(part.contents()), sha256(&data));
}

/// A send whose answer never comes (or never completes) is `unknown` (75, outcome_unknown)
/// within --timeout and is never retried: exactly one request.
#[test]
fn an_answer_that_never_comes_or_drips_is_unknown_within_the_timeout_and_not_retried() {
    for stall in [Stall::Hang, Stall::Drip] {
        for api in BOTH {
            let Some(env) = Env::new(api, |o| o.stall(stall, None)) else {
                return;
            };
            let started = Instant::now();
            let run = env.send(&["--timeout", "4", "--json"]).expect_exit(75);
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "{api:?} {stall:?}: took {:?}: {run}",
                started.elapsed()
            );
            assert_eq!(
                env.server.sends().len(),
                1,
                "{api:?} {stall:?}: retried: {run}"
            );
            let json = run.json();
            assert_eq!(json["kind"], "outcome_unknown", "{api:?} {stall:?}: {run}");
        }
    }
}

#[test]
fn a_huge_error_body_is_read_only_as_far_as_the_bound() {
    for api in BOTH {
        let Some(env) = Env::new(api, |o| {
            o.fault(400, None).stall(Stall::Huge(1 << 30), None)
        }) else {
            return;
        };
        let started = Instant::now();
        let run = env.send(&["--timeout", "30"]).expect_exit(65);
        assert!(started.elapsed() < Duration::from_secs(20), "{run}");
        let seq = env.server.sends()[0].seq;
        let written = env.server.huge_written(seq).unwrap_or_else(|| {
            panic!(
                "{api:?}: the server never noted where it stopped writing\n{run}\n{}",
                env.server.log()
            )
        });
        assert!(
            written < 32 << 20,
            "{api:?}: envoi read {written} bytes of a 1 GiB answer"
        );
        assert!(
            run.stderr.len() < 10_000,
            "{api:?}: the body was printed: {} bytes",
            run.stderr.len()
        );
    }
}

#[test]
fn batch_sends_each_record_once() {
    for api in BOTH {
        let Some(env) = Env::new(api, |o| o) else {
            return;
        };
        let records = env.home().join("records.jsonl");
        std::fs::write(
            &records,
            "{\"To\":\"a1@example.net\",\"Subject\":\"one\",\"Body\":\"1\"}\n\
             {\"To\":\"a2@example.net\",\"Subject\":\"two\",\"Body\":\"2\"}\n\
             {\"To\":\"a3@example.net\",\"Subject\":\"three\",\"Body\":\"3\"}\n",
        )
        .unwrap();
        let report = env.home().join("report.jsonl");
        let run = env
            .cmd("batch")
            .arg("--report")
            .arg(&report)
            .arg(&records)
            .expect_exit(0);
        let mut got: Vec<(Vec<String>, String)> = env
            .server
            .sends()
            .iter()
            .map(|r| {
                let bytes = env.server.message(r).unwrap();
                let parsed = MessageParser::default().parse(&bytes).unwrap();
                (
                    r.recipients.clone().unwrap(),
                    parsed.subject().unwrap().to_owned(),
                )
            })
            .collect();
        got.sort();
        assert_eq!(
            got,
            [
                (vec!["a1@example.net".to_string()], "one".to_string()),
                (vec!["a2@example.net".to_string()], "two".to_string()),
                (vec!["a3@example.net".to_string()], "three".to_string()),
            ],
            "{api:?}: {run}"
        );
        let lines = std::fs::read_to_string(&report).unwrap();
        assert_eq!(
            lines.lines().filter(|l| l.contains("\"sent\"")).count(),
            3,
            "{lines}"
        );
        // An HTTPS API opens no SMTP session: the summary counts none.
        assert!(
            run.stderr
                .contains("envoi: batch: sent 3, refused 0, invalid 0; in "),
            "{api:?}: {run}"
        );
    }
}

#[test]
fn a_queued_message_is_sent_by_outbox_flush() {
    for api in BOTH {
        // The service is down: the send queues it.
        let Some(mut env) = Env::new(api, |o| o.fault(503, None)) else {
            return;
        };
        let outbox = env.home().join("outbox");
        let outbox_arg = outbox.display().to_string();
        let run = env
            .send(&[
                "--bcc",
                "hidden@example.org",
                "--queue",
                "--retries",
                "0",
                "--json",
                "--outbox-dir",
                &outbox_arg,
            ])
            .expect_exit(0);
        assert_eq!(run.json()["status"], "queued", "{api:?}: {run}");
        // The Bcc header is written only into what the API is handed, never into the
        // queued message.
        let queued = files_named(&outbox, "message.eml");
        assert_eq!(queued.len(), 1, "{api:?}: {queued:?}");
        let text = std::fs::read_to_string(&queued[0]).unwrap();
        assert!(
            !text.contains("hidden"),
            "{api:?}: the outbox file shows the Bcc: {text}"
        );
        // The service is back, on a new port: the config follows it.
        let leaf = env.leaf.clone();
        env.server = MailApi::start(MailApiOptions::new(leaf, TOKEN)).expect("restart");
        env.config = env.write_config(&["token_env = \"API_TOKEN\""]);
        let flush = envoi(env.home())
            .env("API_TOKEN", TOKEN)
            .args([
                "outbox",
                "flush",
                "--all",
                "--json",
                "--outbox-dir",
                &outbox_arg,
                "--config",
            ])
            .arg(&env.config)
            .expect_exit(0);
        let (req, bytes) = env.accepted();
        let parsed = MessageParser::default().parse(&bytes).unwrap();
        assert_eq!(parsed.subject(), Some("Nightly"), "{api:?}: {flush}");
        assert!(
            header_values(&bytes, "Bcc")
                .concat()
                .contains("hidden@example.org")
        );
        assert!(
            req.recipients
                .unwrap_or_default()
                .contains(&"hidden@example.org".into())
        );
    }
}

/// Every file called `name` under `dir`, at any depth.
fn files_named(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
            } else if path.file_name().is_some_and(|n| n == name) {
                found.push(path);
            }
        }
    }
    found
}

fn sendmail(env: &Env, args: &[&str], input: &[u8]) -> assert_cmd::Command {
    let mut cmd = envoi(env.home());
    cmd.env("API_TOKEN", TOKEN)
        .env("ENVOI_CONFIG", &env.config)
        .arg("sendmail")
        .args(args)
        .write_stdin(input.to_vec());
    cmd
}

#[test]
fn sendmail_t_carries_bcc_to_the_api_only_in_the_bcc_header() {
    for api in BOTH {
        let Some(env) = Env::new(api, |o| o) else {
            return;
        };
        let input = format!(
            "From: {}\nTo: ann@example.net\nBcc: hidden@example.org\nSubject: t\n\nbody\n",
            api.from()
        );
        sendmail(&env, &["-t"], input.as_bytes()).expect_exit(0);
        let (req, bytes) = env.accepted();
        let mut recipients = req.recipients.unwrap_or_default();
        recipients.sort();
        assert_eq!(
            recipients,
            ["ann@example.net", "hidden@example.org"],
            "{api:?}"
        );
        assert!(
            header_values(&bytes, "Bcc")
                .concat()
                .contains("hidden@example.org")
        );
        assert!(!header_values(&bytes, "To").concat().contains("hidden"));
    }
}

#[test]
fn sendmail_explicit_recipients_add_bcc_and_refuse_a_to_outside_the_envelope() {
    for api in BOTH {
        let Some(env) = Env::new(api, |o| o) else {
            return;
        };
        // An envelope recipient not in To/Cc goes into Bcc for the API.
        let input = format!(
            "From: {}\nTo: ann@example.net\nSubject: e\n\nbody\n",
            api.from()
        );
        sendmail(
            &env,
            &["ann@example.net", "extra@example.org"],
            input.as_bytes(),
        )
        .expect_exit(0);
        let (req, bytes) = env.accepted();
        let mut recipients = req.recipients.unwrap_or_default();
        recipients.sort();
        assert_eq!(
            recipients,
            ["ann@example.net", "extra@example.org"],
            "{api:?}"
        );
        assert!(
            header_values(&bytes, "Bcc")
                .concat()
                .contains("extra@example.org")
        );

        // A To recipient outside the envelope cannot be left out by an API: 65, no request.
        let input = format!(
            "From: {}\nTo: ann@example.net, bob@example.net\nSubject: e\n\nbody\n",
            api.from()
        );
        let run = sendmail(&env, &["ann@example.net"], input.as_bytes()).expect_exit(65);
        assert!(
            run.stderr.contains("bob@example.net"),
            "{api:?}: names it: {run}"
        );
        assert_eq!(
            env.server.sends().len(),
            1,
            "{api:?}: a request was made: {run}"
        );
    }
}

#[test]
fn check_proves_the_token_and_mailbox_without_sending() {
    // (api, server options, profile extra, expected exit, words expected in the output)
    type Tune = fn(MailApiOptions) -> MailApiOptions;
    let cases: [(Api, Tune, &str, i32, &str); 7] = [
        (Api::Graph, |o| o, "", 0, MAILBOX),
        (
            Api::Graph,
            |o| MailApiOptions {
                settings_denied: true,
                ..o
            },
            "",
            0,
            "Mail.Send",
        ),
        (
            Api::Graph,
            |o| MailApiOptions {
                tokens: vec!["x".into()],
                ..o
            },
            "",
            77,
            "401",
        ),
        (
            Api::Graph,
            |o| o,
            "mailbox = \"nobody@example.com\"",
            78,
            "nobody@example.com",
        ),
        (Api::Gmail, |o| o, "", 0, GMAIL),
        (
            Api::Gmail,
            |o| MailApiOptions {
                profile_denied: true,
                ..o
            },
            "",
            0,
            "gmail.send",
        ),
        (
            Api::Gmail,
            |o| MailApiOptions {
                tokens: vec!["x".into()],
                ..o
            },
            "",
            77,
            "401",
        ),
    ];
    for (api, tune, extra, code, words) in cases {
        let Some(env) = Env::with(api, tune, &["token_env = \"API_TOKEN\"", extra]) else {
            return;
        };
        let run = env.cmd("check").expect_exit(code);
        assert!(run.output().contains(words), "{api:?} {extra}: {run}");
        let requests = env.server.requests();
        assert!(
            !requests.is_empty(),
            "{api:?}: check made no request: {run}"
        );
        assert!(
            requests.iter().all(|r| !r.is_send()),
            "{api:?}: check sent mail: {requests:?}"
        );
        let op = if api == Api::Graph {
            "mailboxSettings"
        } else {
            "profile"
        };
        assert!(
            requests
                .iter()
                .all(|r| r.op.as_deref() == Some(op) && r.method == "GET"),
            "{requests:?}"
        );
    }
}

#[test]
fn a_second_send_with_the_same_idempotency_key_makes_no_second_request() {
    for api in BOTH {
        let Some(env) = Env::new(api, |o| o) else {
            return;
        };
        let outbox = env.home().join("outbox").display().to_string();
        let args = [
            "--idempotency-key",
            "nightly-2026-12-07",
            "--json",
            "--outbox-dir",
            &outbox,
        ];
        let first = env.send(&args).expect_exit(0);
        assert_eq!(first.json()["status"], "sent", "{first}");
        let second = env.send(&args).expect_exit(0);
        assert_eq!(second.json()["status"], "duplicate", "{second}");
        assert_eq!(env.server.sends().len(), 1, "{api:?}");
    }
}

#[test]
fn the_url_form_sends_through_graph_and_gmail_without_a_config_file() {
    for api in BOTH {
        let Some(env) = Env::new(api, |o| MailApiOptions { plain: true, ..o }) else {
            return;
        };
        let url = format!(
            "{}://{}?api_url={}",
            api.transport(),
            api.from(),
            api.url(&env.server)
        );
        let run: Run = envoi(env.home())
            .env("ENVOI_TOKEN", TOKEN)
            .args(["send", "--smtp-url", &url, "--from", api.from()])
            .args([
                "--to",
                "ann@example.net",
                "--subject",
                "Nightly",
                "--body",
                "x",
            ])
            .expect_exit(0);
        env.accepted();
        assert!(!run.output().contains(TOKEN), "{run}");
    }
}

#[test]
fn save_to_sent_false_is_78_before_any_request_as_the_mime_form_always_saves() {
    let Some(env) = Env::with(
        Api::Graph,
        |o| o,
        &["token_env = \"API_TOKEN\"", "save_to_sent = false"],
    ) else {
        return;
    };
    let run = env.send(&[]).expect_exit(78);
    assert!(run.stderr.contains("save_to_sent"), "{run}");
    let url = format!(
        "graph://{MAILBOX}?api_url={}&save_to_sent=false",
        env.server.graph_url()
    );
    let by_url = envoi(env.home())
        .env("ENVOI_TOKEN", TOKEN)
        .args(["send", "--smtp-url", &url, "--to", "ann@example.net"])
        .args(["--subject", "s", "--body", "b"])
        .expect_exit(78);
    assert!(by_url.stderr.contains("save_to_sent"), "{by_url}");
    assert!(env.server.requests().is_empty(), "a request was made");
}

#[test]
fn an_smtp_key_in_an_api_profile_is_78_naming_it() {
    for api in BOTH {
        for line in [
            "host = \"smtp.example.com\"",
            "port = 587",
            "auth = \"xoauth2\"",
        ] {
            let Some(env) = Env::with(api, |o| o, &["token_env = \"API_TOKEN\"", line]) else {
                return;
            };
            let run = env.send(&[]).expect_exit(78);
            let key = line.split(' ').next().unwrap();
            assert!(run.stderr.contains(key), "{api:?} {line}: {run}");
            assert!(env.server.requests().is_empty(), "{api:?} {line}");
        }
    }
}

/// The contract lists tls_fingerprint among the keys that apply "as for SMTP, for the HTTPS
/// connection": a pinned leaf, without ca_file, is trusted.
#[test]
fn tls_fingerprint_pins_the_api_services_certificate() {
    for api in BOTH {
        let dir = TempDir::new().expect("temp dir");
        let pki = TestPki::new();
        let pin = format!("tls_fingerprint = \"{}\"", pki.leaf_fingerprint());
        let Some(env) = Env::in_dir(dir, &pki, api, |o| o, &["token_env = \"API_TOKEN\"", &pin])
        else {
            return;
        };
        // The same profile without ca_file: only the pin can make it trusted.
        let text = std::fs::read_to_string(&env.config).unwrap();
        let text: String = text
            .lines()
            .filter(|l| !l.starts_with("ca_file"))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(&env.config, text).unwrap();
        env.send(&[]).expect_exit(0);
        env.accepted();
    }
}

/// A Retry-After longer than what is left of --timeout is not waited for: 75 at once, the
/// service's wait named, one request.
#[test]
fn a_retry_after_beyond_the_deadline_is_75_without_waiting() {
    for (api, status) in [(Api::Graph, 429), (Api::Gmail, 503)] {
        let Some(env) = Env::new(api, |o| o.fault(status, None).retry_after("100")) else {
            return;
        };
        let started = Instant::now();
        let run = env.send(&["--timeout", "8"]).expect_exit(75);
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "{api:?}: waited: {run}"
        );
        assert_eq!(env.server.sends().len(), 1, "{api:?}: {run}");
        assert!(
            run.stderr.contains("100"),
            "{api:?}: the service's wait: {run}"
        );
    }
}

/// An error answer longer than envoi reads (64 KiB) is not an empty one: the words must not
/// say the service sent nothing.
#[test]
fn an_error_body_over_the_bound_is_not_called_empty() {
    for api in BOTH {
        let Some(env) = Env::new(api, |o| {
            o.fault(400, None).stall(Stall::Huge(1 << 20), None)
        }) else {
            return;
        };
        let run = env.send(&[]).expect_exit(65);
        assert!(!run.stderr.contains("empty body"), "{api:?}: {run}");
    }
}

/// A batch whose first record is throttled twice waits as asked and still sends each record
/// exactly once.
#[test]
fn batch_retries_a_throttled_record_and_sends_each_once() {
    let Some(env) = Env::new(Api::Graph, |o| o.fault(429, Some(2)).retry_after("1")) else {
        return;
    };
    let records = env.home().join("records.jsonl");
    std::fs::write(
        &records,
        "{\"To\":\"a1@example.net\",\"Subject\":\"one\",\"Body\":\"1\"}\n\
         {\"To\":\"a2@example.net\",\"Subject\":\"two\",\"Body\":\"2\"}\n\
         {\"To\":\"a3@example.net\",\"Subject\":\"three\",\"Body\":\"3\"}\n",
    )
    .unwrap();
    let report = env.home().join("report.jsonl");
    let started = Instant::now();
    let run = env
        .cmd("batch")
        .arg("--report")
        .arg(&report)
        .arg(&records)
        .expect_exit(0);
    assert!(started.elapsed() >= Duration::from_secs(2), "{run}");
    let accepted: Vec<Vec<String>> = env
        .server
        .sends()
        .into_iter()
        .filter(|r| r.status == Some(202))
        .map(|r| r.recipients.unwrap_or_default())
        .collect();
    assert_eq!(
        accepted,
        [["a1@example.net"], ["a2@example.net"], ["a3@example.net"]],
        "{run}"
    );
    assert_eq!(env.server.sends().len(), 5, "two 429s, three 202s: {run}");
}

/// A native OAuth2 token refused, and the fresh one refused too: 77 after exactly one new
/// token and one more request.
#[test]
fn a_native_oauth2_token_refused_twice_is_77_after_one_fresh_token() {
    let Some((env, endpoint)) = native_oauth2(Api::Graph, "at-9") else {
        return;
    };
    let run = env
        .send(&[])
        .env("APP_SECRET", "Canary-Client-Secret-77")
        .expect_exit(77);
    let tokens: Vec<_> = env.server.sends().into_iter().map(|r| r.token).collect();
    assert_eq!(tokens, [Some("at-1".into()), Some("at-2".into())], "{run}");
    assert_eq!(endpoint.requests().len(), 2, "{run}");
    assert!(!run.output().contains("at-2"), "a token was printed: {run}");
}

/// `graph://` and `gmail://` take `?ca_file=` for a service behind a private CA; without
/// it the certificate error names that parameter, not a profile key.
#[test]
fn the_url_form_takes_a_private_ca_and_its_certificate_error_says_how() {
    for api in BOTH {
        let Some(env) = Env::new(api, |o| o) else {
            return;
        };
        let url = format!(
            "{}://{}?api_url={}",
            api.transport(),
            api.from(),
            api.url(&env.server)
        );
        let by_url = |url: &str, code: i32| -> Run {
            envoi(env.home())
                .env("ENVOI_TOKEN", TOKEN)
                .args(["send", "--smtp-url", url, "--to", "ann@example.net"])
                .args(["--subject", "s", "--body", "b"])
                .expect_exit(code)
        };
        let refused = by_url(&url, 77);
        assert!(
            refused.stderr.contains("?ca_file=PATH"),
            "{api:?}: {refused}"
        );
        assert_eq!(
            refused.stderr.matches("ca_file").count(),
            refused.stderr.matches("?ca_file=").count(),
            "{api:?}: {refused}"
        );
        assert!(env.server.sends().is_empty(), "{api:?}");
        by_url(&format!("{url}&ca_file={}", env.ca.display()), 0);
        env.accepted();
    }
}

/// A service that cannot be reached (nothing listens on its port) trips `envoi batch`'s
/// stop after three records in a row, as an SMTP server that is down does: a batch of 10
/// ends with 75 and the rest untried, instead of waiting out every record's retries.
#[test]
fn a_batch_stops_when_the_api_cannot_be_reached() {
    for service in ["graph", "gmail"] {
        let home = TempDir::new().unwrap();
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let config = home.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                "default = \"down\"\n[profiles.down]\ntransport = \"{service}\"\nfrom = \"{MAILBOX}\"\n\
                 api_url = \"https://127.0.0.1:{port}/v1.0\"\ntoken_env = \"API_TOKEN\"\n\
                 timeout_secs = 5\n"
            ),
        )
        .unwrap();
        let records = home.path().join("records.jsonl");
        let lines: Vec<String> = (1..=10)
            .map(|i| format!(r#"{{"To":"r{i}@example.net","Subject":"m{i}","Body":"b"}}"#))
            .collect();
        std::fs::write(&records, lines.join("\n")).unwrap();
        let started = Instant::now();
        let run = envoi(home.path())
            .env("API_TOKEN", "tok-down")
            .args(["batch", "--config"])
            .arg(&config)
            .arg(&records)
            .expect_exit(75);
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{service}: took {:?}: {run}",
            started.elapsed()
        );
        assert!(
            run.stderr
                .contains("3 record(s) in a row could not reach the server")
                && run.stderr.contains("7 record(s) after it were not tried"),
            "{service}: {run}"
        );
    }
}
